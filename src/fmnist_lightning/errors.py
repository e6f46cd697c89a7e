"""The one exception type the CLI turns into a single-line message instead of a traceback."""


class UserInputError(Exception):
    """Bad input from the user (files, paths, options): the message says what is wrong and how to fix it."""
