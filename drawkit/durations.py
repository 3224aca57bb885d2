"""Wall-time limits as people write them: 1h30m, 90m, 5400s, 5400 (seconds), 1.5h."""
import math
import re
from typing import Optional

from drawkit.errors import DrawkitError

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
NO_LIMIT = ("none", "off")


def parse_duration(text: Optional[str], option: str = "--time-limit") -> Optional[float]:
    """Seconds in ``text`` ("1h30m", "90m", "5400s", "5400"); None for None, "none" or "off"."""
    if text is None:
        return None
    spoken = str(text).strip().lower().replace(" ", "")
    if spoken in NO_LIMIT:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", spoken):
        seconds = float(spoken)
    elif spoken and re.fullmatch(f"(?:{_PART.pattern})+", spoken):
        seconds = sum(float(number) * UNITS[unit] for number, unit in _PART.findall(spoken))
    else:
        raise DrawkitError(f"{option} expects a duration such as 1h30m, 90m, 5400s or 5400 (seconds), or none; "
                           f"got '{text}'")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise DrawkitError(f"{option} must be longer than zero, got '{text}'")
    return seconds
