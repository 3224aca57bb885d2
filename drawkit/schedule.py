"""The learning rate at each step: a function of where the run is, so a resumed run gets the same rates.

``decay``: lr * lr_decay ** (epoch - 1), set once per epoch (``--lr-decay 1``, the default, keeps it
constant). ``cosine``: from lr down to 0 along half a cosine over the run's steps (Loshchilov & Hutter
2017, without restarts): a high rate for most of a fixed budget, annealed by its end, with no decay
to tune.
"""
import math

from drawkit.errors import DrawkitError, check_choice

SCHEDULES = ("decay", "cosine")


def learning_rate(schedule: str, lr: float, lr_decay: float, step: int, epoch: int, total_steps: int) -> float:
    """The rate for the optimizer step that follows ``step`` finished steps, in epoch ``epoch`` (1-based)."""
    if schedule == "cosine":
        done = min(step / max(total_steps, 1), 1.0)
        return lr * 0.5 * (1 + math.cos(math.pi * done))
    return lr * lr_decay ** (epoch - 1)


def check_schedule(schedule: str, lr_decay: float) -> None:
    check_choice("--lr-schedule", schedule, SCHEDULES)
    if schedule == "cosine" and lr_decay != 1:
        raise DrawkitError("--lr-decay sets the 'decay' schedule; with --lr-schedule cosine leave it out")
