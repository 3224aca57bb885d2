"""Finding data on disk, binarizing it, and serving shuffled batches from memory.

A dataset plugin's factory returns an object with ``image_shape`` (C, H, W) and
``load(split, root, download) -> uint8 or [0, 1] float tensor (N, C, H, W)``; the
split is one of SPLITS. Whole splits live in memory (on the GPU when training there),
so batches cost an index, not a DataLoader round trip.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

from drawkit.errors import DataNotFound, DrawkitError

SPLITS = ("train", "valid", "test")
BINARIZE_MODES = ("sample", "threshold", "none")
ENV_DATA = "DRAWKIT_DATA"
ENV_OFFLINE = "DRAWKIT_OFFLINE"


@dataclass(frozen=True)
class DataRoot:
    path: Path
    source: str  # how it was chosen, for error messages


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "drawkit"


def resolve_data_root(data_dir: Optional[str] = None) -> DataRoot:
    """--data-dir, else $DRAWKIT_DATA, else the default cache (which may not exist yet)."""
    if data_dir:
        root = DataRoot(Path(data_dir).expanduser(), "--data-dir")
    elif os.environ.get(ENV_DATA):
        root = DataRoot(Path(os.environ[ENV_DATA]).expanduser(), f"${ENV_DATA}")
    else:
        return DataRoot(default_cache(), "the default cache")
    if not root.path.is_dir():
        raise DrawkitError(f"data directory {root.path} (from {root.source}) does not exist or is not a "
                           f"directory; point {root.source} at a folder that holds the data set")
    if not os.access(root.path, os.R_OK | os.X_OK):
        raise DrawkitError(f"data directory {root.path} (from {root.source}) is not readable; "
                           f"fix its permissions or choose another folder")
    return root


def trained_data_dir(train_config: dict) -> Optional[str]:
    """The --data-dir a checkpoint was trained with, when it exists here; else None ($DRAWKIT_DATA, the cache)."""
    path = train_config.get("data_dir")
    return path if path and Path(path).expanduser().is_dir() else None


def downloads_allowed() -> bool:
    return os.environ.get(ENV_OFFLINE, "").lower() not in ("1", "true", "yes")


def load_split(dataset, name: str, split: str, data_dir: Optional[str] = None) -> torch.Tensor:
    """One split of a registered dataset as a tensor (N, C, H, W), with a clear error when it is missing."""
    root = resolve_data_root(data_dir)
    try:
        images = dataset.load(split, root.path, download=downloads_allowed())
    except DataNotFound as exc:
        raise DataNotFound(f"dataset '{name}': {exc} (data root {root.path}, from {root.source}); pass "
                           f"--data-dir DIR or set {ENV_DATA}=DIR to a folder holding it") from None
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(dataset.image_shape):
        raise DrawkitError(f"dataset '{name}' returned images of shape {tuple(images.shape)}, "
                           f"expected (N, {', '.join(map(str, dataset.image_shape))})")
    return images


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float -> float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()


def binarize(x: torch.Tensor, mode: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """'sample': a fresh Bernoulli draw per pixel (dynamic binarization); 'threshold': x > 0.5; 'none': as is."""
    if mode == "sample":
        return torch.bernoulli(x, generator=generator)
    if mode == "threshold":
        return (x > 0.5).to(x.dtype)
    if mode == "none":
        return x
    raise DrawkitError(f"unknown binarization '{mode}'; choose one of: {', '.join(BINARIZE_MODES)}")


class Batches:
    """Shuffled mini-batches of an in-memory tensor; the order depends only on (seed, epoch)."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0):
        if len(images) < batch_size:
            raise DrawkitError(f"batch size {batch_size} is larger than the {len(images)} training images; "
                               f"use a smaller --batch-size")
        self.images, self.batch_size, self.seed = images, batch_size, seed

    def __len__(self) -> int:
        return len(self.images) // self.batch_size  # the last partial batch is dropped

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[torch.Tensor]:
        """The batches of ``epoch`` after the first ``skip`` (a resumed run picks up mid-epoch)."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.images), generator=g).to(self.images.device)
        for i in range(skip, len(self)):
            yield self.images[order[i * self.batch_size:(i + 1) * self.batch_size]]


def fixed_binarization(images: torch.Tensor, mode: str, seed: int = 0) -> torch.Tensor:
    """Held-out images binarized once with a fixed seed, so every evaluation sees the same pixels."""
    return binarize(to_unit_float(images), mode, torch.Generator().manual_seed(seed))
