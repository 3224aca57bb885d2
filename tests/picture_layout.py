"""Where things sit in drawkit's pictures, worked out from the layout rules, not from drawkit's code.

A picture is a legend bar (LEGEND pixels high) over a body; the body is a grid of cells with GAP
pixels round each, centred under the legend when the legend is wider; a panel is an image with
MARGIN image pixels round it.
"""
import math

import numpy as np

from drawkit.frames import legend_width

MARGIN, GAP, LEGEND = 3, 4, 16  # image pixels round each panel; screen pixels between cells; legend bar height


def has_colour(picture: np.ndarray, colour) -> bool:
    return bool((picture[..., :3] == colour).all(axis=-1).any())


def grid(n: int, cell: tuple, ncol: int = 0) -> tuple[int, int]:
    """(height, width) of n cells of (h, w) laid out ncol a row (default: ceil(sqrt(n))), GAP round each."""
    ncol = min(ncol or math.ceil(math.sqrt(n)), n)
    return GAP + math.ceil(n / ncol) * (cell[0] + GAP), GAP + ncol * (cell[1] + GAP)


def frame_shape(body: tuple, *legends) -> tuple[int, int, int]:
    """The legend bar above the body; as wide as the body or the widest legend, whichever is wider."""
    return LEGEND + body[0], max(body[1], *(legend_width(items, right) for items, right in legends)), 3


def cell_at(frame: np.ndarray, body: tuple, cell: tuple, i: int, n: int, ncol: int = 0) -> np.ndarray:
    """Cell i of a frame whose body (centred under the legend) is a grid of n cells."""
    ncol = min(ncol or math.ceil(math.sqrt(n)), n)
    row, col = divmod(i, ncol)
    top = LEGEND + GAP + row * (cell[0] + GAP)
    left = (frame.shape[1] - body[1]) // 2 + GAP + col * (cell[1] + GAP)
    return frame[top:top + cell[0], left:left + cell[1], :3]
