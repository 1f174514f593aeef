"""The one error type the library raises for anything a user should read."""


class RelaunchError(Exception):
    """A failure with a message meant for the user (the task layer prints it and exits non-zero)."""
