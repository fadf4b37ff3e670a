"""Errors a user can act on: the CLI prints their message on one line, no traceback."""


class UserError(Exception):
    """A problem the user can fix; `exit_code` is what the CLI exits with."""

    exit_code = 2


class SettingsError(UserError):
    """A setting is missing or malformed; the message names the variable."""


class SchemaError(UserError):
    """The database schema does not match this release; the message says what to run."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (drivers write several), or its type when it has none."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
