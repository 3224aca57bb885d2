"""A disk cache for data sets that drawkit makes itself (derived or generated), so the second load is fast.

Files live under ``drawkit.data.default_cache()/<dataset>/`` ($XDG_CACHE_HOME/drawkit or
~/.cache/drawkit), never beside the user's data: a shared data folder stays untouched.
Each file is written atomically and records the key it was made for; a file that cannot
be read or was made for another key is made again. Delete the folder to start afresh.
"""
from pathlib import Path
from typing import Callable

import torch

from drawkit.data import default_cache
from drawkit.outputs import atomic_write
from drawkit.progress import stderr

FORMAT = 1  # bump when what is stored changes, so old files are not mistaken for new ones


def cache_dir(dataset: str) -> Path:
    return default_cache() / dataset


def cached(dataset: str, filename: str, key: dict, make: Callable[[], dict]) -> dict:
    """``make()`` -> dict of tensors, stored in ``cache_dir(dataset)/filename`` and read back next time."""
    path = cache_dir(dataset) / filename
    key = {"format": FORMAT, **key}
    if path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored.get("key") == key:
                return stored["tensors"]
        except Exception:  # truncated by a full disk, written by another version: make it again
            pass
    tensors = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            torch.save({"key": key, "tensors": tensors}, tmp)
    except OSError as exc:
        stderr.print(f"[yellow]Note:[/] could not cache {dataset} in {path.parent} "
                     f"({exc.strerror or exc}); it will be made again next time", highlight=False,
                     soft_wrap=True)
    return tensors
