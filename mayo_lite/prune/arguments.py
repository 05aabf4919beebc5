"""Checks of the pruning API's arguments, raising the package's one argument error (`mayo_lite.errors.ArgumentError`,
Keras' wording: which argument, what was expected, what was received)."""

import numbers

from mayo_lite.errors import ArgumentError

# The name this API's error had before the package had one argument error; kept so that code catching it still does.
PruneArgumentError = ArgumentError


def choice(argument, value, table):
    """`value` when it names an entry of `table`, else an `ArgumentError` listing the entries."""
    if not isinstance(value, str) or value not in table:
        raise ArgumentError(argument, "one of " + ", ".join(repr(name) for name in table), value)
    return value


def fraction(argument, value):
    """`value` as a float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ArgumentError(argument, "a float in [0, 1)", value)
    return float(value)
