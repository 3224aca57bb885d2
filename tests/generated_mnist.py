"""A stand-in for MNIST made of pen strokes, in torchvision's file layout, so no test needs the real files.

The images have MNIST's sizes (60,000 training and 10,000 test images of 28 x 28 uint8) and look
like handwriting to a small model: two or three thick strokes on black, anti-aliased like scanned
digits. Labels are the number of strokes. The same seed always gives the same bytes.
"""
from pathlib import Path

import numpy as np

from fake_files import write_idx

SIDE = 28
TRAIN, TEST = 60_000, 10_000
POINTS = 24  # pen positions along each stroke
#: the pen's footprint: (row shift, column shift, ink)
PEN = [(dy, dx, 1.0 if dy == dx == 0 else 0.6 if dy * dx == 0 else 0.3) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def stroke_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, 28, 28) uint8 pictures of 2 or 3 strokes, and (count,) uint8 labels (strokes - 2)."""
    rng = np.random.default_rng(seed)
    strokes = rng.integers(2, 4, count)                                        # 2 or 3 strokes
    ends = rng.uniform(5, SIDE - 6, (count, 3, 2, 2)).astype(np.float32)       # (n, stroke, end, xy)
    along = np.linspace(0, 1, POINTS, dtype=np.float32)[None, None, :, None]
    points = ends[:, :, :1] + along * (ends[:, :, 1:] - ends[:, :, :1])        # (n, 3, POINTS, xy)
    drawn = np.arange(3)[None, :, None] < strokes[:, None, None]               # unused third stroke
    xy = points.round().astype(np.int64)
    pen = np.zeros(count * SIDE * SIDE, dtype=np.float32)
    which = np.broadcast_to(drawn, xy.shape[:3])
    pen[(np.nonzero(which)[0] * SIDE + xy[..., 1][which]) * SIDE + xy[..., 0][which]] = 1.0
    pen = pen.reshape(count, SIDE, SIDE)
    ink = np.zeros_like(pen)                                                   # a 3 x 3 pen: anti-aliased edges
    padded = np.pad(pen, ((0, 0), (1, 1), (1, 1)))
    for dy, dx, weight in PEN:
        ink += weight * padded[:, 1 + dy:SIDE + 1 + dy, 1 + dx:SIDE + 1 + dx]
    return (np.clip(ink, 0, 1) * 255).round().astype(np.uint8), (strokes - 2).astype(np.uint8)




def write_mnist_folder(root: Path, seed: int = 0) -> Path:
    """root/MNIST/raw/ with the four uncompressed files torchvision's MNIST reads; returns root."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count, split_seed in (("train", TRAIN, seed), ("t10k", TEST, seed + 1)):
        images, labels = stroke_images(count, split_seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return Path(root)
