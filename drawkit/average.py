"""`drawkit average RUN --last K`: one model whose weights are the mean of a run's K newest checkpoints.

The end of a learning-rate schedule leaves the weights wandering around a minimum; their mean
(Polyak averaging; stochastic weight averaging, Izmailov et al. 2018) often generalises better
than any one of them. The model stays the same architecture, so every command loads the result.
A run keeps its last K checkpoint-<step>.pt files when trained with ``--keep K``.
"""
from pathlib import Path
from typing import Optional

import torch

from drawkit.checkpoint import FILENAME, FORMAT, VERSION, read_checkpoint
from drawkit.errors import DrawkitError
from drawkit.outputs import atomic_write, output_path

AVERAGE = "average.pt"
#: what a checkpoint holds to resume training; an average has no such state
TRAINING_STATE = ("optimizer", "progress", "rng")


def step_checkpoints(run: Path) -> list[Path]:
    """RUN's checkpoint-<step>.pt files, oldest first (the step is zero-padded, so names sort by step)."""
    return sorted(run.glob("checkpoint-*.pt"))


def choose(run, last: int) -> list[Path]:
    """The ``last`` newest checkpoint-<step>.pt files of the run folder ``run``, or a one-line refusal."""
    run = Path(run).expanduser()
    if not run.is_dir():
        raise DrawkitError(f"{run} is not a run folder; pass the --out folder of 'drawkit train'")
    if last < 1:
        raise DrawkitError(f"--last must be at least 1, got {last}")
    found = step_checkpoints(run)
    if len(found) < last:
        raise DrawkitError(f"{run} holds {len(found)} checkpoint-<step>.pt file(s), fewer than --last {last}; "
                           f"pass --last {max(len(found), 1)} or less, or train with --keep {last} to keep more")
    return found[-last:]


def mean_weights(payloads: list[dict]) -> dict:
    """The element-wise mean of the payloads' floating-point weights (in float64, stored in each weight's
    own type); other tensors (counters) are taken from the newest."""
    newest = payloads[-1]["model"]
    averaged = {}
    for name, value in newest.items():
        if not torch.is_floating_point(value):
            averaged[name] = value.clone()
            continue
        total = torch.zeros_like(value, dtype=torch.float64)
        for payload in payloads:
            total += payload["model"][name].to(torch.float64)
        averaged[name] = (total / len(payloads)).to(value.dtype)
    return averaged


def average_checkpoints(run, last: int, out: Optional[str] = None) -> dict:
    """Write the mean of the ``last`` newest checkpoints of ``run`` to ``out`` (default RUN/average.pt).

    The file is a checkpoint without training state: evaluate, visualize-attention, sample, export and
    report load it; training resumes from the run folder, not from it. Returns {"out", "steps"}.
    """
    paths = choose(run, last)
    payloads = [read_checkpoint(path) for path in paths]
    newest = payloads[-1]
    for path, payload in zip(paths, payloads):
        if payload.get("model_config") != newest.get("model_config") or payload["model"].keys() != newest["model"].keys():
            raise DrawkitError(f"{path} holds another model than {paths[-1]}; average checkpoints of one run only")
    steps = [payload.get("step") for payload in payloads]
    average = {key: value for key, value in newest.items() if key not in TRAINING_STATE}
    average.update(format=FORMAT, version=VERSION, model=mean_weights(payloads), averaged_steps=steps)
    target = output_path(out or Path(run).expanduser() / AVERAGE, "--out")
    if target.name == FILENAME:
        raise DrawkitError(f"--out {target} would replace the run's newest checkpoint; choose another name")
    with atomic_write(target) as tmp:
        torch.save(average, tmp)
    return {"out": target, "steps": steps}
