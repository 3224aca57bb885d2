"""A classifier's pictures: visualize-attention draws its glimpses, plot draws its error rate.

A tiny classifier is trained here through `drawkit train --task classify` on the generated MNIST
(labels 0 or 1: the number of strokes less two). For the pixel checks a copy of it gets a read
window that moves well inside the image and a head that leans to class 0, so boxes, predictions and
wrong answers are known in advance. Sizes follow the layout frames.py documents: each image on a
margin of 3 image pixels, under it a caption of 12-row lines (+ 2 rows), cells 4 screen pixels apart
in a square-ish grid, a 16-row legend on top.
"""
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import GENERATED_DATA, assert_one_error_line, read_idx_images
from picture_layout import LEGEND, MARGIN, cell_at, grid, has_colour
from drawkit.checkpoint import load_model, read_checkpoint
from drawkit.cli import app
from drawkit.frames import (PANEL_BACKGROUND, READ_COLOUR, TEXT_COLOUR, WRONG_COLOUR, Style, caption, legend_width,
                            trace_frames)
from drawkit.registry import get_registry
from drawkit.trace import Trace

GLIMPSES, SCALE = 3, 2
SIDE, LINE = 28, 12
PANEL = (SIDE + 2 * MARGIN) * SCALE          # one image with its margin, screen pixels a side
TWO_LINES = 2 * LINE + 2                     # caption: the guess, then the label (known labels)
ONE_LINE = LINE + 2                          # caption of an --image file: the guess alone
RAW = GENERATED_DATA / "MNIST" / "raw"
TRAIN_BLUE, VALID_ORANGE = (0x00, 0x72, 0xB2), (0xD5, 0x5E, 0x00)
INDICES = [0, 1, 2, 3]
runner = CliRunner()


def labels_of(indices) -> np.ndarray:
    """Straight from the IDX labels file: 8-byte header, one byte per image."""
    data = (RAW / "t10k-labels-idx1-ubyte").read_bytes()[8:]
    return np.array([data[i] for i in indices])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cli_runner) -> Path:
    out = tmp_path_factory.mktemp("classifier")
    result = cli_runner.invoke(app, ["train", "--task", "classify", "--dataset", "mnist", "--glimpses", str(GLIMPSES),
                                     "--hidden", "16", "--read-size", "5", "--batch-size", "16", "--max-steps", "3",
                                     "--val-images", "32", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def placed(trained, tmp_path_factory) -> Path:
    """The trained classifier with a 5 x 2-pixel read grid steered by h (well inside the image), leaning to class 0."""
    payload = read_checkpoint(trained)
    weights = payload["model"]
    weights["attention.read_params.weight"] = torch.zeros(5, 16)
    weights["attention.read_params.weight"][:2] = torch.linspace(-1, 1, 32).view(2, 16)  # centre moves with h
    weights["attention.read_params.bias"] = torch.tensor([0.0, 0.0, 0.0, math.log(2 * 4 / 27), 0.0])  # stride 2 px
    weights["head.bias"] = weights["head.bias"].clone()
    weights["head.bias"][0] += 4.0
    path = tmp_path_factory.mktemp("placed") / "checkpoint.pt"
    torch.save(payload, path)
    return path


def visualize(checkpoint: Path, *args: str):
    return runner.invoke(app, ["visualize-attention", "--checkpoint", str(checkpoint), "--scale", str(SCALE), *args])








def glimpses_of(checkpoint: Path, x: torch.Tensor) -> tuple[list, list]:
    """The read windows (placed by h_prev) and the softmax after each glimpse, from the model itself."""
    model, _ = load_model(checkpoint, get_registry())
    windows, probabilities = [], []

    def observe(t, h_prev, h, logits):
        windows.append(model.attention.window(h_prev, "read"))
        probabilities.append(torch.softmax(logits, 1))

    with torch.no_grad():
        model(x, observe=observe)
    return windows, probabilities


def inputs(indices) -> torch.Tensor:
    """The test images as the classifier reads them (binarize none): bytes / 255."""
    images = np.stack([read_idx_images(RAW / "t10k-images-idx3-ubyte", 1, i)[0] for i in indices])
    return torch.from_numpy(images).float().div(255)[:, None]


def legends(labels: bool) -> tuple:
    final = ([(None, "final: class  probability, label"), (WRONG_COLOUR, "wrong")] if labels
             else [(None, "final: class  probability")])
    return max(legend_width([(READ_COLOUR, "read")], f"t {GLIMPSES}/{GLIMPSES}"),
               legend_width(final, f"t {GLIMPSES}/{GLIMPSES}"))


def test_gif_frames_boxes_and_captions(placed, tmp_path):
    out = tmp_path / "glimpses.gif"
    hold = 4
    result = visualize(placed, "--indices", ",".join(map(str, INDICES)), "--hold-last", str(hold), "--fps", "10",
                       "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"({GLIMPSES + hold} frames)" in result.stdout
    with Image.open(out) as gif:
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert sum(durations) == pytest.approx(100 * (GLIMPSES + hold), abs=len(durations))  # T + hold_last frames
    frames = iio.imread(out, index=None)[..., :3]
    n = len(INDICES)
    cell = (PANEL + TWO_LINES, PANEL)
    body = grid(n, cell)
    assert frames.shape[1:] == (LEGEND + body[0], max(body[1], legends(labels=True)), 3)

    windows, probabilities = glimpses_of(placed, inputs(INDICES))
    labels = labels_of(INDICES)
    assert len(set(labels)) == 2                               # right (0) and wrong (1) answers both shown
    shown = [frames[0]] + [frames[j] for j in range(1, len(frames)) if not np.array_equal(frames[j], frames[j - 1])]
    assert len(shown) == GLIMPSES + 1                          # the held frames are one picture
    for t in range(GLIMPSES):
        w = windows[t]
        for i in range(n):
            c = cell_at(shown[t], body, cell, i, n)
            image, text = c[:PANEL], c[PANEL:]
            # the box's outer edges where the window says: coordinate u at screen (u - 0.5) * scale + margin
            rows, cols = np.nonzero((image == READ_COLOUR).all(axis=-1))
            half = w.size * w.delta[i].item() / 2
            for g in (w.gx[i].item(), w.gy[i].item()):         # the placed box lies within the panel, not past it
                assert 0.5 - MARGIN < g - half and g + half < SIDE + 0.5 + MARGIN
            to_screen = lambda u: (u - 0.5) * SCALE + MARGIN * SCALE  # noqa: E731
            assert abs(cols.min() - to_screen(w.gx[i].item() - half)) <= 1
            assert abs(cols.max() + 1 - to_screen(w.gx[i].item() + half)) <= 1
            assert abs(rows.min() - to_screen(w.gy[i].item() - half)) <= 1
            assert abs(rows.max() + 1 - to_screen(w.gy[i].item() + half)) <= 1
            # the caption: this glimpse's most likely class and its probability, then a blank line
            p = probabilities[t][i]
            k = int(p.argmax())
            assert np.array_equal(text, caption(PANEL, [f"{k}  {p[k].item():.2f}", ""])), (t, i)
            assert has_colour(text[:LINE], TEXT_COLOUR) and not has_colour(text[LINE:], TEXT_COLOUR)
    # the window moves: the test above tells one glimpse's box from another's
    assert abs(windows[1].gx - windows[2].gx).max() > 2 or abs(windows[1].gy - windows[2].gy).max() > 2

    final = shown[-1]
    assert not has_colour(final, READ_COLOUR)
    p = probabilities[-1]
    for i in range(n):
        c = cell_at(final, body, cell, i, n)
        k = int(p[i].argmax())
        assert k == 0                                          # the head leans to class 0
        wrong = k != labels[i]
        background = WRONG_COLOUR if wrong else PANEL_BACKGROUND
        assert np.array_equal(c[PANEL:], caption(PANEL, [f"{k}  {p[i, k].item():.2f}", f"label {labels[i]}"],
                                                 background))
        assert has_colour(c[PANEL + LINE:], TEXT_COLOUR)       # the label line is written
        assert has_colour(c, WRONG_COLOUR) == wrong


def test_each_caption_names_its_own_glimpse_and_input():
    """A hand-made trace whose most likely class differs by input and glimpse, none of them class 0."""
    probabilities = torch.full((2, 2, 10), 0.01)
    for t, i, k, p in ((0, 0, 3, 0.5), (0, 1, 8, 0.62), (1, 0, 7, 0.93), (1, 1, 5, 0.71)):
        probabilities[t, i, k] = p
    trace = Trace(None, torch.zeros(2, 1, SIDE, SIDE), probabilities=probabilities, labels=torch.tensor([7, 4]))
    frames = trace_frames(trace, Style(scale=SCALE), hold_last=1, ncol=2)
    cell = (PANEL + TWO_LINES, PANEL)
    body = grid(2, cell)
    expected = {0: ["3  0.50", "8  0.62"], 1: ["7  0.93", "5  0.71"]}
    for t in (0, 1):
        for i in (0, 1):
            text = cell_at(frames[t], body, cell, i, 2)[PANEL:]
            assert np.array_equal(text, caption(PANEL, [expected[t][i], ""])), (t, i)
    for i, (label, background) in enumerate(((7, PANEL_BACKGROUND), (4, WRONG_COLOUR))):  # 7 right, 5 wrong
        text = cell_at(frames[2], body, cell, i, 2)[PANEL:]
        assert np.array_equal(text, caption(PANEL, [expected[1][i], f"label {label}"], background)), i


def test_strip_has_a_column_per_glimpse(placed, tmp_path):
    strip = tmp_path / "strip.png"
    result = visualize(placed, "--indices", "0,1", "--out", str(tmp_path / "t.gif"), "--strip", str(strip))
    assert result.exit_code == 0, result.output
    picture = iio.imread(strip)[..., :3]
    cell = (PANEL + TWO_LINES, PANEL)
    body = grid(2 * GLIMPSES, cell, ncol=GLIMPSES)             # a row of T cells per input
    items = [(READ_COLOUR, "read"), (WRONG_COLOUR, "wrong")]
    assert picture.shape == (LEGEND + body[0], max(body[1], legend_width(items, f"t = 1..{GLIMPSES}, left to right")), 3)
    labels = labels_of([0, 1])
    for i in range(2):
        for t in range(GLIMPSES):
            c = cell_at(picture, body, cell, i * GLIMPSES + t, 2 * GLIMPSES, ncol=GLIMPSES)
            assert has_colour(c[:PANEL], READ_COLOUR), (i, t)
            assert has_colour(c[PANEL:PANEL + LINE], TEXT_COLOUR)           # the guess
            assert has_colour(c[PANEL + LINE:], TEXT_COLOUR) == (t == GLIMPSES - 1)  # the label, last column
            assert has_colour(c, WRONG_COLOUR) == (t == GLIMPSES - 1 and labels[i] != 0)


def test_image_file_has_no_label(placed, tmp_path):
    picture = tmp_path / "digit.png"
    Image.new("L", (40, 40), 0).save(picture)
    out = tmp_path / "t.gif"
    result = visualize(placed, "--image", str(picture), "--hold-last", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    frames = iio.imread(out, index=None)[..., :3]
    body = grid(1, (PANEL + ONE_LINE, PANEL))                  # the guess alone under the image
    assert frames.shape == (GLIMPSES + 1, LEGEND + body[0], max(body[1], legends(labels=False)), 3)
    assert not has_colour(frames[-1], WRONG_COLOUR)


def test_generate_needs_a_generative_checkpoint(trained, tmp_path):
    out = tmp_path / "g.gif"
    result = visualize(trained, "--generate", "--out", str(out))
    assert_one_error_line(result, "visualize-attention --generate needs a generative checkpoint",
                          "--task classify")
    assert not out.exists()


def test_training_drew_the_classifier_curves(trained):
    pytest.importorskip("matplotlib")
    picture = iio.imread(trained / "curves.png")
    assert picture.shape[:2] == (432, 720)
    assert has_colour(picture, TRAIN_BLUE) and has_colour(picture, VALID_ORANGE)


def test_plot_of_a_classifier_run(tmp_path, cli_runner):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    records = []                                               # as training writes them: in step order
    for s in range(10, 210, 10):
        records.append({"split": "train", "step": s, "epoch": 1, "loss": 2.3 * 0.97 ** s, "error_rate": 0.9 * 0.98 ** s})
        if s % 100 == 0:
            records.append({"split": "valid", "step": s, "epoch": 1, "error_rate": 0.8 * 0.98 ** s,
                            "accuracy": 1 - 0.8 * 0.98 ** s, "nll": 2.0 * 0.97 ** s, "n_images": 100})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = cli_runner.invoke(app, ["plot", "--run", str(run)])
    assert result.exit_code == 0, result.output
    picture = iio.imread(run / "curves.png")
    assert picture.shape[:2] == (432, 720)                     # 6 x 3.6 inches at 120 dpi
    left, right = picture[:, :360], picture[:, 360:]           # cross-entropy left, error rates right
    assert has_colour(left, TRAIN_BLUE) and not has_colour(left, VALID_ORANGE)
    assert has_colour(right, VALID_ORANGE)
    assert len(np.unique(picture[..., :3].reshape(-1, 3), axis=0)) > 10


@pytest.mark.parametrize("values, scale", [([2.3, 0.9, 0.05], "log"),      # more than tenfold: log
                                           ([2.3, 1.1, 0.4], "linear"),     # less: linear
                                           ([40.0, 3.0, 0.0], "linear")])   # a zero error rate: linear
def test_axis_is_log_only_when_the_values_span_tenfold(values, scale):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from drawkit.curves import _fitting_scale

    ax = Figure().add_subplot()
    _fitting_scale(ax, values)
    assert ax.get_yscale() == scale
