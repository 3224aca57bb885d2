"""visualize-attention and sample --gif through the CLI, on tiny checkpoints trained here.

Sizes are worked out here from the options and the layout frames.py documents: each image on a
margin of 3 image pixels, cells 4 screen pixels apart in a square-ish grid, a 16-pixel legend on top.
Inputs are the generated MNIST's digits binarized (pixels of 0 stay black, of 255 stay white).
"""
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import GENERATED_DATA, read_idx_images
from picture_layout import MARGIN, cell_at, frame_shape, grid, has_colour
from drawkit.checkpoint import read_checkpoint
from drawkit.cli import app
from drawkit.frames import READ_COLOUR, WRITE_COLOUR

GLIMPSES = 3
SIDE = 28                         # MNIST's images, pixels a side
PANEL = SIDE + 2 * MARGIN         # one panel at --scale 1
TEST_IMAGES = GENERATED_DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
runner = CliRunner()


def train_tiny(out: Path, attention: str = "filterbank") -> Path:
    result = runner.invoke(app, ["train", "--attention", attention, "--glimpses", str(GLIMPSES), "--hidden", "8",
                                 "--z-dim", "2", "--max-steps", "2", "--batch-size", "8", "--val-images", "16",
                                 "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("filterbank"))


@pytest.fixture(scope="module")
def run_none(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("none"), attention="none")


def visualize(run: Path, *args: str):
    return runner.invoke(app, ["visualize-attention", "--checkpoint", str(run), "--scale", "1", *args])


def gif_frames(path: Path) -> tuple[int, list[int], dict]:
    """(frames stored, duration of each in ms, info of the first)."""
    with Image.open(path) as gif:
        info = dict(gif.info)
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
        return gif.n_frames, durations, info










def image_in(panel: np.ndarray, scale: int = 1) -> np.ndarray:
    """The image of a panel, without its margin, one value per image pixel."""
    m = MARGIN * scale
    return panel[m:panel.shape[0] - m:scale, m:panel.shape[1] - m:scale]


def digits_of_test_split(indices) -> np.ndarray:
    return np.stack([read_idx_images(TEST_IMAGES, 1, i)[0] for i in indices])


def shows_digit(image: np.ndarray, digit: np.ndarray) -> None:
    """A binarized input: black where the digit has no ink, white where it is full; boxes may cover some."""
    assert image.shape[:2] == digit.shape
    grey = (image[..., 0] == image[..., 1]) & (image[..., 1] == image[..., 2])   # not a box border
    values = image[..., 0]
    assert set(np.unique(values[grey]).tolist()) <= {0, 255}
    assert (values[grey & (digit == 0)] == 0).all()
    assert (values[grey & (digit == 255)] == 255).all() and (grey & (digit == 255)).sum() >= 10


def test_training_drew_the_loss_curves(run):
    pytest.importorskip("matplotlib")
    picture = iio.imread(run / "curves.png")
    assert picture.shape[:2] == (432, 720)                     # 6 x 3.6 inches at 120 dpi
    assert len(np.unique(picture.reshape(-1, picture.shape[-1]), axis=0)) > 10
    assert has_colour(picture, (0xD5, 0x5E, 0x00))             # the validation point's marker


def test_training_recorded_its_config_and_metrics(run):
    payload = read_checkpoint(run / "checkpoint.pt")
    config = payload["model_config"]
    assert (config["glimpses"], config["attention"], config["encoder"]) == (GLIMPSES, "filterbank", "lstm")
    assert (config["hidden"], config["z_dim"], config["image_shape"]) == (8, 2, [1, SIDE, SIDE])
    assert payload["train_config"]["max_steps"] == 2 and payload["train_config"]["dataset"] == "mnist"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in records] == [("train", 2), ("valid", 2)]   # logged at the last step
    assert records[1]["n_images"] == 16 and 0 < records[1]["nll_bound"] < float("inf")


def test_one_frame_per_glimpse_plus_held_frames(run, tmp_path):
    out = tmp_path / "trace.gif"
    result = visualize(run, "--n", "2", "--hold-last", "4", "--fps", "10", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"{GLIMPSES + 4} frames" in result.stdout
    stored, durations, info = gif_frames(out)
    assert stored == GLIMPSES + 1                              # the held copies merge into one long frame
    assert sum(durations) == pytest.approx(100 * (GLIMPSES + 4), abs=stored)
    assert info["loop"] == 0
    frames = iio.imread(out, index=None)[..., :3]
    cell = (PANEL, 2 * PANEL)                                  # input panel | canvas panel
    body = grid(2, cell)
    assert frames.shape[1:] == frame_shape(body, ([(READ_COLOUR, "read"), (WRITE_COLOUR, "write")], "t 3/3"),
                                           ([(None, "input | canvas")], "t 3/3"))
    assert has_colour(frames[0], READ_COLOUR) and has_colour(frames[0], WRITE_COLOUR)
    assert not has_colour(frames[-1], READ_COLOUR) and not has_colour(frames[-1], WRITE_COLOUR)
    for i, digit in enumerate(digits_of_test_split(range(2))):         # the first two test images, in order
        shows_digit(image_in(cell_at(frames[-1], body, cell, i, 2)[:, :PANEL]), digit)


def test_same_seed_same_gif(run, tmp_path):
    for name in ("a.gif", "b.gif"):
        assert visualize(run, "--n", "3", "--seed", "7", "--out", str(tmp_path / name)).exit_code == 0
    assert (tmp_path / "a.gif").read_bytes() == (tmp_path / "b.gif").read_bytes()


def test_generate_shows_only_the_write_box(run, tmp_path):
    out = tmp_path / "gen.gif"
    result = visualize(run, "--generate", "--n", "4", "--hold-last", "0", "--loop", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    frames = iio.imread(out, index=None)[..., :3]
    assert len(frames) == GLIMPSES
    body = grid(4, (PANEL, PANEL))                             # the canvas only, no input beside it
    assert frames.shape[1:] == frame_shape(body, ([(WRITE_COLOUR, "write")], "t 3/3"), ([(None, "canvas")], "t 3/3"))
    assert all(has_colour(cell_at(frames[0], body, (PANEL, PANEL), i, 4), WRITE_COLOUR) for i in range(4))
    assert not any(has_colour(frame, READ_COLOUR) for frame in frames)
    assert gif_frames(out)[2]["loop"] == 1                     # plays twice: one repeat


def test_strip_has_every_glimpse_in_a_row(run, tmp_path):
    strip = tmp_path / "strip.png"
    result = visualize(run, "--indices", "5", "--out", str(tmp_path / "t.gif"), "--strip", str(strip))
    assert result.exit_code == 0, result.output
    picture = iio.imread(strip)
    cell = (PANEL, 2 * PANEL)                                  # input and canvas panels with their margins
    body = grid(GLIMPSES, cell, ncol=GLIMPSES)                 # one input: one row of T cells
    assert body[1] == 4 + GLIMPSES * (2 * (28 + 2 * 3) + 4)
    assert picture.shape == frame_shape(body, ([(READ_COLOUR, "read"), (WRITE_COLOUR, "write")],
                                               f"t = 1..{GLIMPSES}, left to right"))
    (digit,) = digits_of_test_split([5])
    for t in range(GLIMPSES):                                  # test image 5 at every glimpse, boxes on it
        shown = cell_at(picture, body, cell, t, GLIMPSES, ncol=GLIMPSES)
        shows_digit(image_in(shown[:, :PANEL]), digit)
        assert has_colour(shown[:, :PANEL], READ_COLOUR) and has_colour(shown[:, PANEL:], WRITE_COLOUR)


def test_image_file_is_traced(run, tmp_path):
    picture = tmp_path / "digit.jpg"
    Image.new("RGB", (90, 60), (200, 30, 30)).save(picture)
    result = visualize(run, "--image", str(picture), "--out", str(tmp_path / "t.gif"))
    assert result.exit_code == 0, result.output
    assert f"{GLIMPSES + 12} frames" in result.stdout          # --hold-last defaults to 12
    frames = iio.imread(tmp_path / "t.gif", index=None)[..., :3]
    cell = (PANEL, 2 * PANEL)
    body = grid(1, cell)
    assert frames.shape[1:] == frame_shape(body, ([(READ_COLOUR, "read"), (WRITE_COLOUR, "write")], "t 3/3"),
                                           ([(None, "input | canvas")], "t 3/3"))
    shown = image_in(cell_at(frames[-1], body, cell, 0, 1)[:, :PANEL])
    # the red becomes grey 81 of 255 and is binarized as training was: about a third of the pixels
    # white, and everywhere, unlike a digit's strokes
    assert set(np.unique(shown).tolist()) == {0, 255}
    white = shown[..., 0] == 255
    assert 0.2 < white.mean() < 0.45
    assert all(white[r:r + 7, c:c + 7].any() for r in range(0, SIDE, 7) for c in range(0, SIDE, 7))


def test_no_attention_has_nothing_to_trace_but_still_draws(run_none, tmp_path):
    out = tmp_path / "none.gif"
    result = visualize(run_none, "--n", "2", "--hold-last", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "nothing to trace" in result.stderr
    frames = iio.imread(out, index=None)[..., :3]
    assert len(frames) == GLIMPSES
    assert not any(has_colour(f, READ_COLOUR) or has_colour(f, WRITE_COLOUR) for f in frames)
    cell = (PANEL, 2 * PANEL)
    body = grid(2, cell)
    assert frames.shape[1:] == frame_shape(body, ([(None, "input | canvas")], "t 3/3"))
    for frame in frames:
        for i, digit in enumerate(digits_of_test_split(range(2))):
            shows_digit(image_in(cell_at(frame, body, cell, i, 2)[:, :PANEL]), digit)


@pytest.mark.parametrize("args, expect", [
    (["--image", "missing.png"], "--image {tmp}/missing.png not found"),
    (["--image", "TEXT"], "--image {tmp}/x.png could not be read as a picture"),     # a text file named x.png
    (["--generate", "--image", "TEXT"], "--generate draws from the prior; leave out --image"),
    (["--fps", "0"], "--fps must be above 0"),
    (["--hold-last", "-1"], "--hold-last must be 0 or more frames, got -1"),
    (["--split", "nope"], "unknown --split 'nope'"),
])
def test_user_errors_are_one_line(run, tmp_path, args, expect):
    text = tmp_path / "x.png"
    text.write_text("not a picture")
    args = [str(text) if a == "TEXT" else str(tmp_path / a) if a.endswith(".png") else a for a in args]
    result = visualize(run, *args, "--out", str(tmp_path / "t.gif"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "Traceback" not in result.output
    assert expect.format(tmp=tmp_path) in lines[0], (expect, lines[0])
    assert not (tmp_path / "t.gif").exists()


def test_sample_gif_uses_the_shared_frame_renderer(run, tmp_path, monkeypatch):
    import drawkit.sample

    calls = []
    real = drawkit.sample.trace_frames
    monkeypatch.setattr(drawkit.sample, "trace_frames", lambda *a, **k: calls.append(k) or real(*a, **k))
    out, gif = tmp_path / "s.png", tmp_path / "s.gif"
    result = runner.invoke(app, ["sample", "--checkpoint", str(run), "--n", "4", "--out", str(out), "--gif", str(gif),
                                 "--hold-last", "2", "--loop", "1", "--fps", "10"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    stored, durations, info = gif_frames(gif)
    assert stored == GLIMPSES and "loop" not in info          # held copies of the last frame merge into it
    assert sum(durations) == pytest.approx(100 * (GLIMPSES + 2), abs=stored)
    final = iio.imread(gif, index=None)[-1][..., :3]
    assert not has_colour(final, WRITE_COLOUR)

    png = iio.imread(out)
    padding, scale = 2, 2                                      # image_grid's padding, sample's default --scale
    side = padding + 2 * (SIDE + padding)                      # 4 images: 2 a row, 2 rows
    assert png.shape == (scale * side, scale * side, 3)
    shown = scale * SIDE
    for i in range(4):
        r, c = divmod(i, 2)
        top, left = scale * (padding + r * (SIDE + padding)), scale * (padding + c * (SIDE + padding))
        image = png[top:top + shown, left:left + shown]
        assert (png[top - scale:top, left:left + shown] == 128).all()               # grey padding above it
        assert np.array_equal(image, image[::scale, ::scale].repeat(scale, 0).repeat(scale, 1))  # crisp
        assert image.std() > 0                                 # not a blank square
        # the GIF ends on the same images: sample --gif writes the final canvas of the same draws,
        # in a grid of scale-2 panels without margin, its grey rounded to 32 levels
        body = grid(4, (shown, shown))
        assert final.shape == frame_shape(body, ([(None, "canvas")], "t 3/3"))
        in_gif = cell_at(final, body, (shown, shown), i, 4).astype(int)
        assert np.abs(in_gif - image).max() <= 255 / 31 / 2 + 1
