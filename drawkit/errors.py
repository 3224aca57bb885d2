"""Errors that reach the user as one line and exit code 2, never as a traceback."""


class DrawkitError(Exception):
    """A problem the user can fix: bad option, missing file, unknown plugin name."""


class DataNotFound(DrawkitError):
    """A data set is neither on disk nor downloadable."""
