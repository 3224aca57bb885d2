"""The learning rate at each step: a function of where the run is, so a resumed run gets the same rates.

``decay``: lr * lr_decay ** (epoch - 1), set once per epoch (``--lr-decay 1``, the default, keeps it
constant). ``cosine``: from lr down to 0 along half a cosine over the run's steps (Loshchilov & Hutter
2017): a high rate for most of a fixed budget, annealed by its end, with no decay to tune.

``restarts``: the ends, in steps, of earlier cosines (``--lr-restarts``, given in epochs). Until the first
end the cosine runs over that end; then over the next, and so on: at each end the rate rises at once to
where the longer cosine stands and anneals to 0 again (a warm restart). It is the schedule of a cosine
run resumed with more --epochs, so a recipe found by resuming can be run by one command.
"""
import math
from typing import Optional, Sequence

from drawkit.errors import DrawkitError, check_choice

SCHEDULES = ("decay", "cosine")


def learning_rate(schedule: str, lr: float, lr_decay: float, step: int, epoch: int, total_steps: int,
                  restarts: Sequence[int] = ()) -> float:
    """The rate for the optimizer step that follows ``step`` finished steps, in epoch ``epoch`` (1-based)."""
    if schedule == "cosine":
        end = next((e for e in restarts if step < e < total_steps), total_steps)  # restarts: rising
        done = min(step / max(end, 1), 1.0)
        return lr * 0.5 * (1 + math.cos(math.pi * done))
    return lr * lr_decay ** (epoch - 1)


def check_schedule(schedule: str, lr_decay: float, preset_schedule: Optional[str] = None) -> None:
    """``preset_schedule``: the schedule the run's --preset sets, if any, so the message can say where cosine came from."""
    check_choice("--lr-schedule", schedule, SCHEDULES)
    if schedule == "cosine" and lr_decay != 1:
        where = " (the preset sets it): add --lr-schedule decay to use --lr-decay, or" if preset_schedule == schedule else ""
        raise DrawkitError(f"--lr-decay sets the 'decay' schedule; with --lr-schedule cosine{where} leave it out")


def parse_restarts(text: Optional[str]) -> tuple[int, ...]:
    """``--lr-restarts 180,340`` -> (180, 340): epochs, each a positive whole number, rising; none: ()."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return ()
    try:
        epochs = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise DrawkitError(f"--lr-restarts takes epochs separated by commas, e.g. 180,340; got {text!r}") from None
    if any(e < 1 for e in epochs) or list(epochs) != sorted(set(epochs)):
        raise DrawkitError(f"--lr-restarts takes rising epochs above 0, e.g. 180,340; got {text!r}")
    return epochs


def check_restarts(text: Optional[str], schedule: str, epochs: int, preset_restarts: Optional[str] = None) -> None:
    """Restarts belong to the cosine and must fall inside the run, or they would never happen.

    ``preset_restarts``: what the run's --preset sets. Those belong to the preset's cosine: they may lie past a
    shorter run's --epochs (that run ends before them), and another --lr-schedule leaves them unused.
    """
    restarts = parse_restarts(text)
    if not restarts or text == preset_restarts:
        return
    if schedule != "cosine":
        raise DrawkitError("--lr-restarts restarts the cosine schedule: add --lr-schedule cosine, or leave it out")
    if restarts[-1] >= epochs:
        raise DrawkitError(f"--lr-restarts {text}: every restart must come before the last epoch (--epochs {epochs}); "
                           f"raise --epochs or drop the later restarts")
