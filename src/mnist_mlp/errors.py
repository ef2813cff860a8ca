"""The one exception a user can fix: the CLI prints its message on one line and exits with code 2."""


class UserError(Exception):
    """Bad input, missing files or a missing package: what is wrong and what to do, in one line."""
