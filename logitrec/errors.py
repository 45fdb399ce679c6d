"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""


class InputError(Exception):
    """Bad input from the user: a missing column, an unreadable file, an impossible option.

    The message must name the file, field or option and say what was expected.
    """

    exit_code = 2
