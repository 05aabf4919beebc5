"""Keras-style errors for the arguments of the pruning API: which argument, what was expected, what was received."""

import numbers

from mayo_lite.errors import UserError


class PruneArgumentError(UserError, ValueError):
    """A bad argument to a pruning function. A `ValueError`, as Keras raises for bad arguments, and a `UserError`,
    so the launcher reports it in one line."""

    def __init__(self, argument, expected, value):
        super().__init__(f"Invalid value received for argument `{argument}`. Expected {expected}. "
                         f"Received: {argument}={value!r}")
        self.argument = argument


def choice(argument, value, table):
    """`value` when it names an entry of `table`, else a `PruneArgumentError` listing the entries."""
    if not isinstance(value, str) or value not in table:
        raise PruneArgumentError(argument, "one of " + ", ".join(repr(name) for name in table), value)
    return value


def fraction(argument, value):
    """`value` as a float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise PruneArgumentError(argument, "a float in [0, 1)", value)
    return float(value)
