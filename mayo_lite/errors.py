"""The errors a user can cause, shared by every room of the package.

The launcher turns a `UserError` into one line on stderr and exit status 2; anything else is a bug or an
environment failure (exit status 1).
"""


def did_you_mean(word, choices, most=1, cutoff=0.6, prefix=""):
    """"did you mean X?" (or "X or Y") for the choices closest to a misspelt `word`, each written after `prefix`;
    None when none is close. The one place the project makes suggestions."""
    import difflib  # only when a suggestion is made

    close = difflib.get_close_matches(str(word), [str(choice) for choice in choices], most, cutoff)
    return f"did you mean {' or '.join(prefix + name for name in close)}?" if close else None


def with_suggestions(unknown, choices):
    """`key (did you mean other?)` for each unknown key, for "unknown key" errors."""
    return [f"{key} ({hint})" if (hint := did_you_mean(key, choices)) else str(key) for key in unknown]


class UserError(Exception):
    """A mistake in what the user asked for: a config, an argument, a checkpoint, missing data."""


class ArgumentError(UserError, ValueError):
    """A bad argument of a layer, a quantizer or a function of the Python API, in Keras' wording: "Invalid value
    received for argument `rate`. Expected a float in [0, 1]. Received: rate=2", after whoever received it
    ("Layer 'conv1': ", "FixedPointQuantizer: ") when given. A `ValueError`, as Keras raises for bad arguments,
    and a `UserError`, so the launcher reports it in one line; `argument`, `expected` and `value` let a caller (the
    YAML model builder) name the key in its own terms. The one class for argument errors of the package."""

    def __init__(self, argument, expected, value, owner=None):
        super().__init__(argument_message(argument, expected, value, owner))
        self.argument = argument
        self.expected = expected
        self.value = value


def argument_message(argument, expected, value, owner=None):
    """Keras' wording for a bad argument, the one formatter of the package (`ArgumentError`'s, and the data
    room's for the arguments of a preprocessing step, which are config errors)."""
    prefix = f"{owner}: " if owner else ""
    return (f"{prefix}Invalid value received for argument `{argument}`. Expected {expected}. "
            f"Received: {argument}={value!r}")


def interval(low, high, low_open=False):
    """`[low, high]` or `(low, high]`: the range an error says a number must lie in."""
    return f"{'(' if low_open else '['}{low}, {high}]"


class ConfigError(UserError):
    """A configuration that cannot be loaded, merged or resolved; the message names the file and key path."""


class DataError(UserError):
    """A dataset that is missing or malformed; the message says where it looked and how to get the data."""


class OutputError(UserError):
    """A log or figure the run must write cannot be written (a full disk, no permission); what it had begun is
    removed."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class Interrupted(Exception):
    """Training was stopped by Ctrl-C or SIGTERM after saving its progress; the launcher exits with status 130."""


def caused_by_interrupt(error):
    """Whether Ctrl-C (or SIGTERM) caused `error`: a C extension interrupted while Python imports it re-raises
    the interrupt as another error (TensorFlow's pybind11 modules: "ImportError: initialization failed")."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
