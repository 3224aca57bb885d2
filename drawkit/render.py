"""Turning image tensors into PNG grids and GIFs: the one place pixels are made and written.

Everything here works on uint8 RGB arrays (rows, cols, 3). Images are upscaled with
nearest neighbour so digits stay crisp, and grey levels are rounded to a few steps so a
GIF's 256-colour palette holds every colour exactly (small files, no dithering noise).
"""
import math
from pathlib import Path
from typing import Optional, Sequence

import imageio.v3 as iio
import numpy as np
import torch

from drawkit.errors import DrawkitError
from drawkit.outputs import atomic_write

# Grey steps in GIF frames. With the few box and legend colours they fit one palette, and fewer
# steps leave more pixels unchanged from frame to frame (a 16-digit T=64 trace: ~1.2 MB, not 1.6).
GREY_LEVELS = 32


def to_rgb(image: torch.Tensor, scale: int = 1, levels: Optional[int] = None) -> np.ndarray:
    """(C, H, W) in [0, 1] -> uint8 (H * scale, W * scale, 3); one channel becomes grey, extra ones are dropped."""
    image = image.detach().float().clamp(0, 1).cpu()
    if image.shape[0] == 1:
        image = image.expand(3, *image.shape[1:])
    image = image[:3]
    if levels:
        image = (image * (levels - 1)).round() / (levels - 1)
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return upscale(array, scale)


def upscale(array: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour: each pixel becomes a scale x scale block."""
    return array.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else array


def tile(arrays: Sequence[np.ndarray], ncol: int, padding: int = 2, background=(128, 128, 128)) -> np.ndarray:
    """Lay equal-sized (h, w, 3) arrays out row by row, ``ncol`` per row, ``padding`` pixels around each."""
    h, w = arrays[0].shape[:2]
    nrows = math.ceil(len(arrays) / ncol)
    ncol = min(ncol, len(arrays))
    grid = np.empty((padding + nrows * (h + padding), padding + ncol * (w + padding), 3), dtype=np.uint8)
    grid[:] = background
    for i, array in enumerate(arrays):
        r, c = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = array
    return grid


def image_grid(images: torch.Tensor, nrow: Optional[int] = None, padding: int = 2, scale: int = 1) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> uint8 RGB grid, ``nrow`` images per row (default: square); padding is upscaled too."""
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    grid = tile([to_rgb(image) for image in images], ncol=nrow, padding=padding)
    return upscale(grid, scale)


def save_png(array: np.ndarray, path: Path) -> Path:
    with atomic_write(Path(path)) as tmp:
        iio.imwrite(tmp, array, extension=".png")
    return Path(path)


def check_gif_options(scale: int, fps: float, hold_last: int, loop: int) -> None:
    """The options every GIF-writing command shares, refused up front with the option's name."""
    if scale < 1:
        raise DrawkitError(f"--scale must be at least 1, got {scale}")
    if not fps > 0:
        raise DrawkitError(f"--fps must be above 0, got {fps}")
    if hold_last < 0:
        raise DrawkitError(f"--hold-last must be 0 or more frames, got {hold_last}")
    if loop < 0:
        raise DrawkitError(f"--loop must be 0 (forever) or how many times to play, got {loop}")


def gif_loop(plays: int) -> Optional[int]:
    """--loop counts plays (0: forever); GIF's Netscape field counts repeats after the first play (0: forever)."""
    return 0 if plays == 0 else (None if plays == 1 else plays - 1)


def save_gif(frames: Sequence[np.ndarray], path: Path, fps: float = 12, loop: int = 0) -> Path:
    """Every frame shown for 1/fps s; ``loop``: how many plays (0: forever).

    Pillow stores only the part of each frame that changed and merges repeated frames into one
    longer frame, so a held ending or a slowly changing canvas costs little.
    """
    if not frames:
        raise DrawkitError("no frames to write")
    if not fps > 0:
        raise DrawkitError(f"--fps must be above 0, got {fps}")
    options = {"duration": 1000 / fps}
    plays = gif_loop(loop)
    if plays is not None:
        options["loop"] = plays
    with atomic_write(Path(path)) as tmp:
        iio.imwrite(tmp, np.stack(frames), extension=".gif", **options)
    return Path(path)
