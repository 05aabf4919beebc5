"""The errors a user can cause, shared by every room of the package.

The launcher turns a `UserError` into one line on stderr and exit status 2; anything else is a bug or an
environment failure (exit status 1).
"""


class UserError(Exception):
    """A mistake in what the user asked for: a config, an argument, a checkpoint, missing data."""


class ConfigError(UserError):
    """A configuration that cannot be loaded, merged or resolved; the message names the file and key path."""


class DataError(UserError):
    """A dataset that is missing or malformed; the message says where it looked and how to get the data."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class Interrupted(Exception):
    """Training was stopped by Ctrl-C or SIGTERM after saving its progress; the launcher exits with status 130."""
