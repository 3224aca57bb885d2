"""Small data files in the layouts torchvision reads, for tests that need no real data set."""
import struct
import sys
import types
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """torchvision's uncompressed IDX layout: magic (0x08 = uint8, then the number of dimensions), sizes, bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def numbered(n: int, shape: tuple) -> np.ndarray:
    """n images whose first two pixels spell their index, so each can be told from its pixels."""
    images = np.zeros((n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0], flat[:, 1] = np.arange(n) % 256, np.arange(n) // 256
    return images


def fake_scipy(monkeypatch, loadmat=None) -> None:
    """An importable scipy.io (torchvision's SVHN reader imports it), with ``loadmat`` when given."""
    scipy = types.ModuleType("scipy")
    scipy.io = types.ModuleType("scipy.io")
    if loadmat is not None:
        scipy.io.loadmat = loadmat
    monkeypatch.setitem(sys.modules, "scipy", scipy)
    monkeypatch.setitem(sys.modules, "scipy.io", scipy.io)
