"""The learning rate at each step: a function of where the run is, so a resumed run gets the same rates.

``decay``: lr * lr_decay ** (epoch - 1), set once per epoch (``--lr-decay 1``, the default, keeps it
constant). ``cosine``: from lr down to 0 along half a cosine over the run's steps (Loshchilov & Hutter
2017, without restarts): a high rate for most of a fixed budget, annealed by its end, with no decay
to tune.
"""
import math
from typing import Optional

from drawkit.errors import DrawkitError, check_choice

SCHEDULES = ("decay", "cosine")


def learning_rate(schedule: str, lr: float, lr_decay: float, step: int, epoch: int, total_steps: int) -> float:
    """The rate for the optimizer step that follows ``step`` finished steps, in epoch ``epoch`` (1-based)."""
    if schedule == "cosine":
        done = min(step / max(total_steps, 1), 1.0)
        return lr * 0.5 * (1 + math.cos(math.pi * done))
    return lr * lr_decay ** (epoch - 1)


def check_schedule(schedule: str, lr_decay: float, preset_schedule: Optional[str] = None) -> None:
    """``preset_schedule``: the schedule the run's --preset sets, if any, so the message can say where cosine came from."""
    check_choice("--lr-schedule", schedule, SCHEDULES)
    if schedule == "cosine" and lr_decay != 1:
        where = " (the preset sets it): add --lr-schedule decay to use --lr-decay, or" if preset_schedule == schedule else ""
        raise DrawkitError(f"--lr-decay sets the 'decay' schedule; with --lr-schedule cosine{where} leave it out")
