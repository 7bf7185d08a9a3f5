"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad input, bad option); never a bug."""


class DataError(UserError):
    """Malformed or unexpected input data; the message names file, line and column."""
