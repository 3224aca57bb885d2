"""Pixels: boxes land where the filterbank formula says, frames count glimpses, GIFs are small and repeatable."""
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from drawkit.frames import (READ_COLOUR, WRITE_COLOUR, Style, box_rect, draw_box, line_width, pairs, panel,
                            trace_frames, trace_strip)
from drawkit.render import image_grid, save_gif, tile, to_rgb
from drawkit.trace import Boxes, Trace


def expected_border(gx, gy, delta, n, scale, shape):
    """Independently: screen pixel k covers image coordinates [k/s + 0.5, (k+1)/s + 0.5] (pixel a spans
    a - 0.5 .. a + 0.5); the box holds the screen pixels wholly inside g -+ N*delta/2; its border is the outer ring."""
    half = n * delta / 2
    def inside(k, g):
        return k / scale + 0.5 >= g - half - 1e-9 and (k + 1) / scale + 0.5 <= g + half + 1e-9
    cols = [k for k in range(shape[1]) if inside(k, gx)]
    rows = [k for k in range(shape[0]) if inside(k, gy)]
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0], cols[0]:cols[-1] + 1] = mask[rows[-1], cols[0]:cols[-1] + 1] = True
    mask[rows[0]:rows[-1] + 1, cols[0]] = mask[rows[0]:rows[-1] + 1, cols[-1]] = True
    return mask


@pytest.mark.parametrize("gx, gy, delta, n, scale", [
    (14.5, 10.5, 2.0, 5, 1),    # x 9.5..19.5 -> pixels 10..19 (1-based), y 5.5..15.5 -> pixels 6..15
    (14.5, 10.5, 2.0, 5, 3),
    (8.0, 20.0, 3.0, 3, 2),     # x 3.5..12.5, y 15.5..24.5
    (5.5, 5.5, 4.0, 2, 4),      # N = 2
])
def test_box_lands_on_the_expected_pixels(gx, gy, delta, n, scale):
    blank = torch.zeros(1, 28, 28)
    frame = panel(blank, Style(scale=scale, margin=0), [((gx, gy, n * delta, 10.0), READ_COLOUR)])  # wide sigma: 1 px
    drawn = (frame != 0).any(axis=2)
    assert np.array_equal(drawn, expected_border(gx, gy, delta, n, scale, drawn.shape))
    assert (frame[drawn] == READ_COLOUR).all()


def test_box_rect_with_margin_offset():
    assert box_rect(14.5, 10.5, 10.0, scale=1) == (5, 9, 14, 18)
    assert box_rect(14.5, 10.5, 10.0, scale=1, offset=3) == (8, 12, 17, 21)


def test_sharper_filters_draw_thicker_borders():
    widths = [line_width(sigma, scale=3) for sigma in (0.3, 1.0, 1.6, 3.0, 10.0)]
    assert widths == sorted(widths, reverse=True) and widths[0] == 3 and widths[-1] == 1
    assert line_width(0.1, scale=1) == 1


def test_box_past_the_edge_is_dashed_along_it():
    array = np.zeros((20, 20, 3), dtype=np.uint8)
    draw_box(array, (-5, 4, 10, 30), WRITE_COLOUR)      # top and right beyond the array
    assert (array[10, 4:20] == WRITE_COLOUR).all()        # bottom: solid
    assert (array[0:11, 4] == WRITE_COLOUR).all()         # left: solid
    top = (array[0, 4:20] == WRITE_COLOUR).all(axis=1)
    assert top.any() and not top.all()                     # top: dashed along the edge
    beyond = draw_box(np.zeros((20, 20, 3), dtype=np.uint8), (2, 30, 12, 40), WRITE_COLOUR)  # wholly to the right
    marked = (beyond == WRITE_COLOUR).all(axis=2)
    assert marked[:, :19].sum() == 0                       # only a mark on the right edge,
    assert 0 < marked[2:13, 19].sum() < 11                 # dashed: the box is not there


def test_image_grid_shape_and_crisp_upscale():
    images = torch.rand(5, 1, 28, 28)
    grid = image_grid(images, scale=2)
    assert grid.shape == (2 * (2 + 2 * 30), 2 * (2 + 3 * 30), 3)
    assert np.array_equal(to_rgb(images[0], scale=2)[::2, ::2], to_rgb(images[0]))
    assert tile([np.zeros((4, 4, 3), np.uint8)] * 3, ncol=2, padding=1).shape == (11, 11, 3)


def fake_trace(t=6, b=3, reads=True, writes=True) -> Trace:
    g = torch.Generator().manual_seed(0)
    boxes = lambda: Boxes(torch.full((t, b), 14.5), torch.full((t, b), 14.5),  # noqa: E731
                          torch.full((t, b), 10.0), torch.full((t, b), 0.5))
    canvases = torch.rand(t, b, 1, 28, 28, generator=g)
    inputs = (torch.rand(b, 1, 28, 28, generator=g) > 0.5).float() if reads else None
    return Trace(canvases, inputs, boxes() if reads and writes else None, boxes() if writes else None)


def colours(frame: np.ndarray) -> set:
    return set(map(tuple, frame.reshape(-1, 3).tolist()))


@pytest.mark.parametrize("hold", [0, 5])
def test_one_frame_per_glimpse_plus_held_frames(hold):
    trace = fake_trace(t=6)
    frames = trace_frames(trace, Style(scale=2), hold_last=hold)
    assert len(frames) == 6 + hold
    assert len({f.shape for f in frames}) == 1
    assert READ_COLOUR in colours(frames[0]) and WRITE_COLOUR in colours(frames[0])
    for held in frames[6:]:                                    # the final canvas, without boxes
        assert READ_COLOUR not in colours(held) and WRITE_COLOUR not in colours(held)
        assert np.array_equal(held, frames[-1])


def test_generation_frames_have_only_the_write_box():
    frame = trace_frames(fake_trace(reads=False), Style(scale=2))[0]
    assert WRITE_COLOUR in colours(frame) and READ_COLOUR not in colours(frame)


def test_no_windows_draws_the_canvas_only():
    frame = trace_frames(fake_trace(writes=False), Style(scale=2))[0]
    assert READ_COLOUR not in colours(frame) and WRITE_COLOUR not in colours(frame)


def test_frames_fit_one_gif_palette():
    frame = trace_frames(fake_trace(b=16), Style(scale=3))[0]
    assert len(colours(frame)) <= 256


def test_strip_holds_every_glimpse_in_a_row():
    one = trace_strip(fake_trace(t=5, b=1), Style(scale=1, margin=1, gap=2))
    cell_width = 2 * (28 + 2)                                  # input panel + canvas panel
    assert one.shape[1] == 2 + 5 * (cell_width + 2)
    several = trace_strip(fake_trace(t=5, b=3), Style(scale=1, margin=1, gap=2))
    assert several.shape[1] == one.shape[1] and several.shape[0] > one.shape[0]


def test_pairs_put_each_input_beside_its_output():
    inputs, outputs = torch.zeros(4, 1, 28, 28), torch.ones(4, 1, 28, 28)
    picture = pairs(inputs, outputs, Style(scale=3, margin=0, gap=2))
    assert picture.shape[1] == 2 + 2 * (2 * 84 + 2)             # two pairs per row
    row = picture[-2 - 84 + 40]                                 # through the second row of pairs
    assert (row[2:2 + 84] == 0).all() and (row[2 + 84:2 + 168] == 255).all()


def test_gif_frames_timing_and_repeatable_bytes(tmp_path):
    frames = trace_frames(fake_trace(t=4), Style(scale=2), hold_last=3)
    save_gif(frames, tmp_path / "a.gif", fps=10, loop=0)
    save_gif(frames, tmp_path / "b.gif", fps=10, loop=0)
    assert (tmp_path / "a.gif").read_bytes() == (tmp_path / "b.gif").read_bytes()
    with Image.open(tmp_path / "a.gif") as gif:
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
        assert gif.info["loop"] == 0
    assert gif.n_frames == 4 + 1                               # the held frames merge into one long frame
    assert sum(durations) == pytest.approx(100 * (4 + 3), abs=len(durations))
    first = iio.imread(tmp_path / "a.gif", index=0)[..., :3]
    assert np.array_equal(first, frames[0])                    # exact colours: nothing lost to the palette


def test_gif_plays_once(tmp_path):
    save_gif([np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)], tmp_path / "once.gif", loop=1)
    with Image.open(tmp_path / "once.gif") as gif:
        assert "loop" not in gif.info
