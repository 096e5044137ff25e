"""The one exception a ``segguided`` sub-command raises for bad input."""


class CommandError(Exception):
    """Bad input to a sub-command: printed as one line naming the file, key or case; exit status 2."""
