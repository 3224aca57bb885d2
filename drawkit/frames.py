"""Frames of DRAW at work: images with the read and write boxes, laid out with a small legend.

Every picture command draws through here (sample --gif, visualize-attention, its strip and
reconstruct), so boxes, colours and layout look the same everywhere. A classifier's trace (one
with ``probabilities``) is drawn as its input with the read box and, under it, a caption: the most
likely class and its probability after that glimpse; the held last frames add the true label and
mark a wrong final prediction.

A box is the filterbank's footprint: centre (gx, gy) and side N * delta, in the paper's
1-based pixel coordinates (pixel a is centred on a and spans a - 0.5 .. a + 0.5). Its border
is thicker the sharper the filters are (small sigma), as in the paper's figures.
"""
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from drawkit.render import GREY_LEVELS, tile, to_rgb
from drawkit.trace import Boxes, Trace

# Okabe-Ito orange and sky blue: tell apart with colour blindness, and from white strokes on black.
READ_COLOUR = (230, 159, 0)
WRITE_COLOUR = (86, 180, 233)
PANEL_BACKGROUND = (40, 40, 40)   # the room around each image, so boxes reaching past its edge still show
GAP_BACKGROUND = (96, 96, 96)     # between inputs
TEXT_COLOUR = (235, 235, 235)
WRONG_COLOUR = (213, 94, 0)       # Okabe-Ito vermillion: the caption of a wrong final prediction
LEGEND_HEIGHT = 16
CAPTION_LINE = 12                 # screen rows per line of a classifier's caption
MAX_LINE = 3                      # thickest border, screen pixels (sharpest focus)


@dataclass(frozen=True)
class Style:
    scale: int = 3    # screen pixels per image pixel (nearest neighbour)
    margin: int = 3   # image pixels of room around each image
    gap: int = 4      # screen pixels between inputs
    levels: Optional[int] = GREY_LEVELS  # grey steps (GIFs); None: full 8-bit (PNGs)


# ---- boxes -------------------------------------------------------------------------------------

def box_rect(gx: float, gy: float, side: float, scale: int, offset: int = 0) -> tuple[int, int, int, int]:
    """Inclusive screen rows/columns (top, left, bottom, right) covering [g - side/2, g + side/2] on each axis.

    Image pixel a (1-based) covers screen pixels (a - 1) * scale .. a * scale - 1, so a coordinate u
    sits at screen position (u - 0.5) * scale; ``offset`` is where the image starts on the screen.
    """
    def span(g: float) -> tuple[int, int]:
        lo = math.floor((g - side / 2 - 0.5) * scale + 0.5) + offset
        hi = math.floor((g + side / 2 - 0.5) * scale + 0.5) - 1 + offset
        return lo, max(hi, lo)
    left, right = span(gx)
    top, bottom = span(gy)
    return top, left, bottom, right


def line_width(sigma: float, scale: int) -> int:
    """Border width showing focus: MAX_LINE (or scale, when smaller) at sigma <= 1 pixel, thinner as sigma grows."""
    widest = max(1, min(MAX_LINE, scale))
    return int(min(widest, max(1, round(widest / max(sigma, 1e-6)))))


def draw_box(array: np.ndarray, rect: tuple[int, int, int, int], colour, width: int = 1) -> np.ndarray:
    """Draw the rectangle's border, ``width`` pixels inward from its edges; in place.

    A side beyond the array is drawn dashed along the array's edge instead, so a box that
    reaches past the image (common early in training) still shows where it is.
    """
    top, left, bottom, right = rect
    h, w = array.shape[:2]
    width = max(1, min(width, bottom - top + 1, right - left + 1))
    t, b = min(max(top, 0), h - 1), min(max(bottom, 0), h - 1)      # clamped into the array: the visible part,
    l, r = min(max(left, 0), w - 1), min(max(right, 0), w - 1)      # or an edge when the box is wholly outside
    sides = (  # (rows, columns, whether the true side is visible)
        (slice(t, min(t + width, b + 1)), slice(l, r + 1), 0 <= top < h),
        (slice(max(b - width + 1, t), b + 1), slice(l, r + 1), 0 <= bottom < h),
        (slice(t, b + 1), slice(l, min(l + width, r + 1)), 0 <= left < w),
        (slice(t, b + 1), slice(max(r - width + 1, l), r + 1), 0 <= right < w),
    )
    dash = 4
    for rows, cols, visible in sides:
        if visible:
            array[rows, cols] = colour
            continue
        target = array[rows, cols]                                  # a view: dashes along its long axis
        along = np.arange(max(target.shape[:2]))
        on = (along // dash) % 2 == 0
        if target.shape[0] >= target.shape[1]:
            target[on[:target.shape[0]]] = colour
        else:
            target[:, on[:target.shape[1]]] = colour
    return array


def panel(image: torch.Tensor, style: Style, boxes=()) -> np.ndarray:
    """One image (C, H, W) in [0, 1] upscaled, on a margin, with boxes [(Boxes at (t, i) as floats, colour)]."""
    core = to_rgb(image, style.scale, style.levels)                       # (H * s, W * s, 3)
    m = style.margin * style.scale
    out = np.empty((core.shape[0] + 2 * m, core.shape[1] + 2 * m, 3), dtype=np.uint8)
    out[:] = PANEL_BACKGROUND
    out[m:m + core.shape[0], m:m + core.shape[1]] = core
    for (gx, gy, side, sigma), colour in boxes:
        draw_box(out, box_rect(gx, gy, side, style.scale, m), colour, line_width(sigma, style.scale))
    return out


def _box_at(boxes: Optional[Boxes], t: int, i: int, colour) -> list:
    if boxes is None:
        return []
    return [((boxes.gx[t, i].item(), boxes.gy[t, i].item(), boxes.side[t, i].item(), boxes.sigma[t, i].item()),
             colour)]


# ---- legend ------------------------------------------------------------------------------------

def _font():
    try:
        return ImageFont.load_default(size=11)
    except (TypeError, OSError):  # old Pillow or no FreeType: the built-in bitmap font
        return ImageFont.load_default()


def legend(width: int, items: list, right: str = "", optional: str = "") -> np.ndarray:
    """A bar (LEGEND_HEIGHT, width, 3): colour swatches with labels [(colour or None, text)], ``right`` text
    right-aligned, ``optional`` text only when it fits. Drawn without anti-aliasing: few colours, crisp."""
    image = Image.new("RGB", (width, LEGEND_HEIGHT), GAP_BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"
    font = _font()
    x, y = 4, 2
    for colour, text in items:
        if colour is not None:
            draw.rectangle((x, 4, x + 8, 12), fill=colour)
            x += 12
        draw.text((x, y), text, fill=TEXT_COLOUR, font=font)
        x += int(draw.textlength(text, font=font)) + 10
    right_x = width - 4 - int(draw.textlength(right, font=font))
    if optional and x + draw.textlength(optional, font=font) + 10 <= right_x:
        draw.text((x, y), optional, fill=TEXT_COLOUR, font=font)
    if right:
        draw.text((right_x, y), right, fill=TEXT_COLOUR, font=font)
    return np.asarray(image)


def legend_width(items: list, right: str = "") -> int:
    """The narrowest bar that shows ``items`` and ``right`` in full."""
    font = _font()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = 8 + sum((12 if c is not None else 0) + int(draw.textlength(t, font=font)) + 10 for c, t in items)
    return width + int(draw.textlength(right, font=font)) + 4


def with_legend(body: np.ndarray, items: list, right: str = "", optional: str = "", width: int = 0) -> np.ndarray:
    """Put a legend above ``body``, widening (centring) the body if the legend needs more room.

    ``width``: at least this wide, so every frame of a GIF has the same size whatever its legend says.
    """
    width = max(body.shape[1], legend_width(items, right), width)
    return np.concatenate([legend(width, items, right, optional), centred(body, width, GAP_BACKGROUND)], axis=0)


def centred(picture: np.ndarray, width: int, background) -> np.ndarray:
    """``picture`` in the middle of a strip ``width`` wide (at least its own width) of ``background``."""
    if width <= picture.shape[1]:
        return picture
    wide = np.empty((picture.shape[0], width, 3), dtype=np.uint8)
    wide[:] = background
    left = (width - picture.shape[1]) // 2
    wide[:, left:left + picture.shape[1]] = picture
    return wide


# ---- frames ------------------------------------------------------------------------------------

def _cell(trace: Trace, i: int, t: int, style: Style, boxes: bool) -> np.ndarray:
    """Input i at glimpse t: [input + read box | canvas + write box], or just the canvas when generating."""
    canvas = panel(trace.canvases[t, i], style, _box_at(trace.write, t, i, WRITE_COLOUR) if boxes else ())
    if trace.inputs is None:
        return canvas
    read = panel(trace.inputs[i], style, _box_at(trace.read, t, i, READ_COLOUR) if boxes else ())
    return np.concatenate([read, canvas], axis=1)


def _items(trace: Trace, boxes: bool) -> list:
    """Legend entries: what each colour is, or which panel is which when there are no boxes."""
    items = [(colour, name) for colour, name, found in ((READ_COLOUR, "read", trace.read),
                                                         (WRITE_COLOUR, "write", trace.write))
             if boxes and found is not None]
    return items or [(None, "input | canvas" if trace.inputs is not None else "canvas")]


def _counter(t: int, total: int) -> str:
    return f"t {t + 1}/{total}"


def frame(trace: Trace, t: int, style: Style = Style(), ncol: Optional[int] = None, boxes: bool = True,
          width: int = 0) -> np.ndarray:
    """All inputs at glimpse t (0-based) in a grid of ``ncol`` cells per row, with the legend and t/T."""
    n = trace.canvases.shape[1]
    ncol = ncol or math.ceil(math.sqrt(n))
    body = tile([_cell(trace, i, t, style, boxes) for i in range(n)], ncol, style.gap, GAP_BACKGROUND)
    return with_legend(body, _items(trace, boxes), right=_counter(t, trace.glimpses),
                       optional="thick border: sharp focus" if boxes and trace.write is not None else "",
                       width=width)


def trace_frames(trace: Trace, style: Style = Style(), hold_last: int = 0, ncol: Optional[int] = None,
                 boxes: bool = True) -> list[np.ndarray]:
    """One frame per glimpse, then ``hold_last`` copies of the final canvas without boxes (T + hold_last frames)."""
    if trace.probabilities is not None:
        return classification_frames(trace, style, hold_last, ncol, boxes)
    last = trace.glimpses - 1
    width = max(legend_width(_items(trace, b), _counter(last, trace.glimpses)) for b in (boxes, False))
    frames = [frame(trace, t, style, ncol, boxes, width) for t in range(trace.glimpses)]
    if hold_last > 0:
        frames += [frame(trace, last, style, ncol, False, width)] * hold_last
    return frames


def trace_strip(trace: Trace, style: Style = Style(), boxes: bool = True) -> np.ndarray:
    """Every glimpse in one row, left to right (t = 1..T); one row per input, as in the paper's figures."""
    if trace.probabilities is not None:
        return classification_strip(trace, style, boxes)
    n = trace.canvases.shape[1]
    cells = [_cell(trace, i, t, style, boxes) for i in range(n) for t in range(trace.glimpses)]
    body = tile(cells, trace.glimpses, style.gap, GAP_BACKGROUND)
    return with_legend(body, _items(trace, boxes), right=f"t = 1..{trace.glimpses}, left to right")


def pairs(inputs: torch.Tensor, outputs: torch.Tensor, style: Style = Style(margin=0, levels=None),
          ncol: Optional[int] = None, labels: str = "input | reconstruction") -> np.ndarray:
    """Each input (B, C, H, W) beside its output (B, C, H, W), in a grid with a one-line legend."""
    trace = Trace(outputs[None], inputs)                                   # a trace of one glimpse, no boxes
    ncol = ncol or math.ceil(math.sqrt(len(inputs)))
    body = tile([_cell(trace, i, 0, style, boxes=False) for i in range(len(inputs))], ncol, style.gap, GAP_BACKGROUND)
    return with_legend(body, [(None, labels)])


# ---- a classifier's glimpses -------------------------------------------------------------------

def caption(width: int, lines: list[str], background=PANEL_BACKGROUND) -> np.ndarray:
    """A bar (CAPTION_LINE * lines + 2, width, 3) of centred text lines, drawn as the legend is (crisp)."""
    image = Image.new("RGB", (width, CAPTION_LINE * len(lines) + 2), background)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"
    font = _font()
    for row, text in enumerate(lines):
        draw.text(((width - int(draw.textlength(text, font=font))) // 2, row * CAPTION_LINE - 1), text,
                  fill=TEXT_COLOUR, font=font)
    return np.asarray(image)


def _guess(trace: Trace, i: int, t: int) -> str:
    """The most likely class of input i after glimpse t and its probability, e.g. '7  0.93'."""
    p = trace.probabilities[t, i]
    k = int(p.argmax())
    return f"{k}  {p[k].item():.2f}"


def _caption_lines(trace: Trace, i: int, t: int, final: bool) -> list[str]:
    """The guess; with known labels a second line, 'label k' in the final frames, blank before."""
    if trace.labels is None:
        return [_guess(trace, i, t)]
    return [_guess(trace, i, t), f"label {int(trace.labels[i])}" if final else ""]


def is_wrong(trace: Trace, i: int) -> bool:
    """Whether the final prediction for input i is not its (known) label."""
    return trace.labels is not None and int(trace.probabilities[-1, i].argmax()) != int(trace.labels[i])


def _classified_width(trace: Trace, style: Style) -> int:
    """One width for every cell: the panel's, or the widest caption's when that is wider."""
    font = _font()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [line for i in range(trace.images) for t in range(trace.glimpses)
             for final in (False, True) for line in _caption_lines(trace, i, t, final)]
    panel_width = (trace.inputs.shape[-1] + 2 * style.margin) * style.scale
    return max(panel_width, 4 + max(int(draw.textlength(text, font=font)) for text in texts))


def _classified_cell(trace: Trace, i: int, t: int, style: Style, width: int, boxes: bool,
                     final: bool) -> np.ndarray:
    """Input i with the read box of glimpse t, over its caption (on WRONG_COLOUR when final and wrong)."""
    image = centred(panel(trace.inputs[i], style, _box_at(trace.read, t, i, READ_COLOUR) if boxes else ()),
                    width, PANEL_BACKGROUND)
    background = WRONG_COLOUR if final and is_wrong(trace, i) else PANEL_BACKGROUND
    return np.concatenate([image, caption(width, _caption_lines(trace, i, t, final), background)], axis=0)


def _classified_items(trace: Trace, boxes: bool, final: bool) -> list:
    """Legend entries: the read box while glimpsing; what the final caption holds and the wrong mark after."""
    if final:
        if trace.labels is None:
            return [(None, "final: class  probability")]
        return [(None, "final: class  probability, label"), (WRONG_COLOUR, "wrong")]
    if boxes and trace.read is not None:
        return [(READ_COLOUR, "read")]
    return [(None, "input")]


def classification_frames(trace: Trace, style: Style = Style(), hold_last: int = 0, ncol: Optional[int] = None,
                          boxes: bool = True) -> list[np.ndarray]:
    """One frame per glimpse (read box, caption 'class  probability'), then ``hold_last`` frames of the
    final prediction without boxes, with the label when known and wrong ones marked (T + hold_last frames)."""
    last, n = trace.glimpses - 1, trace.images
    ncol = ncol or math.ceil(math.sqrt(n))
    width = max(legend_width(_classified_items(trace, boxes, final), _counter(last, trace.glimpses))
                for final in (False, True))
    cell_width = _classified_width(trace, style)

    def frame_at(t: int, final: bool) -> np.ndarray:
        cells = [_classified_cell(trace, i, t, style, cell_width, boxes and not final, final) for i in range(n)]
        body = tile(cells, ncol, style.gap, GAP_BACKGROUND)
        return with_legend(body, _classified_items(trace, boxes, final), right=_counter(t, trace.glimpses),
                           optional="under each: class  probability" if not final else "", width=width)

    frames = [frame_at(t, final=False) for t in range(trace.glimpses)]
    if hold_last > 0:
        frames += [frame_at(last, final=True)] * hold_last
    return frames


def classification_strip(trace: Trace, style: Style = Style(), boxes: bool = True) -> np.ndarray:
    """Every glimpse in one row (t = 1..T), a row per input; the last column's caption is the final one."""
    last, cell_width = trace.glimpses - 1, _classified_width(trace, style)
    cells = [_classified_cell(trace, i, t, style, cell_width, boxes, final=t == last)
             for i in range(trace.images) for t in range(trace.glimpses)]
    body = tile(cells, trace.glimpses, style.gap, GAP_BACKGROUND)
    items = _classified_items(trace, boxes, final=False)
    if trace.labels is not None:
        items = items + [(WRONG_COLOUR, "wrong")]
    return with_legend(body, items, right=f"t = 1..{trace.glimpses}, left to right")
