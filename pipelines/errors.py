"""Errors that mean "the input is wrong": they name the input, and retrying cannot help."""


class InputError(ValueError):
    """Bad input (a file, a field, a tensor): the message names it and says what is wrong."""
