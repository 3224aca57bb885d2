"""Turning image tensors into PNG grids and GIFs: the one place frames are made."""
import math
from pathlib import Path
from typing import Optional, Sequence

import imageio.v3 as iio
import numpy as np
import torch

from drawkit.outputs import atomic_write


def image_grid(images: torch.Tensor, nrow: Optional[int] = None, padding: int = 2, scale: int = 1) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> uint8 RGB array (rows, cols, 3), nearest-neighbour upscaled so pixels stay crisp."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    if c == 1:
        images = images.expand(n, 3, h, w)
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.ones(3, padding + ncol * (h + padding), padding + nrow * (w + padding)) * 0.5
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i, :3]
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return array.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else array


def save_png(array: np.ndarray, path: Path) -> Path:
    with atomic_write(Path(path)) as tmp:
        iio.imwrite(tmp, array, extension=".png")
    return Path(path)


def save_gif(frames: Sequence[np.ndarray], path: Path, fps: float = 12, hold_last: int = 0, loop: int = 0) -> Path:
    """Frames shown at ``fps``; the last one lingers ``hold_last`` extra frame times; ``loop`` 0 repeats forever."""
    frame_ms = 1000 / fps
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * (1 + hold_last)]
    with atomic_write(Path(path)) as tmp:
        iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=durations, loop=loop)
    return Path(path)
