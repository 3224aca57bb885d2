"""Random number generator states, saved in checkpoints so a resumed run draws the same numbers."""
import random
from contextlib import contextmanager

import numpy as np
import torch

from drawkit.progress import stderr


def rng_state() -> dict:
    """torch (CPU and CUDA), Python and NumPy states, as types torch.load(weights_only=True) accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` saved; each GPU's stream goes back to the GPU of the same index.

    A run resumed on the same GPUs draws exactly what it would have. On fewer GPUs the streams of
    the missing ones are left out, and one warning line says so (resuming still works).
    """
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda") or []
    present = torch.cuda.device_count() if saved and torch.cuda.is_available() else 0
    for index, cuda_state in enumerate(saved[:present]):
        torch.cuda.set_rng_state(cuda_state, index)
    if len(saved) > present:
        _warn(f"the checkpoint holds the random streams of {len(saved)} GPU(s), but {present} are visible; "
              f"the streams of GPU(s) {', '.join(str(i) for i in range(present, len(saved)))} were not restored, "
              f"so their random draws differ from the uninterrupted run's")
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _warn(line: str) -> None:
    stderr.print(f"[yellow]Warning:[/] {line}", highlight=False, soft_wrap=True)


@contextmanager
def seeded(seed: int, device: torch.device):
    """Draw from ``seed`` inside, leaving the caller's torch stream (CPU, and the device's) as it was outside.

    Validation and evaluation use it: their numbers repeat, and training's stream is untouched.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
