"""Errors that reach the user as one line and exit code 2, never as a traceback."""


class DrawkitError(Exception):
    """A problem the user can fix: bad option, missing file, unknown plugin name."""


class DataNotFound(DrawkitError):
    """A data set is neither on disk nor downloadable."""


class NotGenerative(DrawkitError):
    """Drawing (sample, reconstruct) was asked of a model that cannot draw: a classifier."""


def check_choice(option: str, value, choices) -> None:
    """``value`` must be one of ``choices``; otherwise one line naming the option and the choices."""
    if value not in choices:
        raise DrawkitError(f"unknown {option} '{value}'; choose one of: {', '.join(choices)}")


def check_positive(values: dict) -> None:
    """Each option's value (option name -> number) must be 1 or more; the first that is not is refused."""
    for option, value in values.items():
        if value < 1:
            raise DrawkitError(f"{option} must be a positive whole number, got {value}")


def is_whole_number(value, least: int = 1) -> bool:
    """An int of at least ``least``; True and False are refused although bool is a kind of int."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_whole_number(what: str, value, least: int = 1, also: str = "") -> int:
    """A plugin option that must be a whole number of at least ``least``: ``value`` itself, else one line.

    ``what`` names the option as the user would look for it ("image-folder option image_size");
    ``also`` adds to what is accepted (" or a list of 3 of them").
    """
    if not is_whole_number(value, least):
        raise DrawkitError(f"{what} must be a whole number of at least {least}{also}, got {value!r}")
    return value


def check_flag(what: str, value) -> bool:
    """A plugin option that is true or false (also given as the words true/false/yes/no), else one line."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    raise DrawkitError(f"{what} must be true or false, got {value!r}")
