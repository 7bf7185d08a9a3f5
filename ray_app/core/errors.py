"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad input, bad option); never a bug."""


class DataError(UserError):
    """Malformed or unexpected input data; the message names file, line and column."""


class BundleError(UserError):
    """A model bundle that cannot be loaded safely or at all: the message names the file, the
    field, its value and what was expected."""
