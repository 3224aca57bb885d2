"""visualize-attention and sample --gif through the CLI, on tiny checkpoints trained here."""
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from drawkit.cli import app
from drawkit.frames import READ_COLOUR, WRITE_COLOUR

GLIMPSES = 3
runner = CliRunner()


def train_tiny(out: Path, attention: str = "filterbank") -> Path:
    result = runner.invoke(app, ["train", "--attention", attention, "--glimpses", str(GLIMPSES), "--hidden", "8",
                                 "--z-dim", "2", "--max-steps", "2", "--batch-size", "8", "--val-images", "16",
                                 "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_available) -> Path:
    return train_tiny(tmp_path_factory.mktemp("filterbank"))


@pytest.fixture(scope="module")
def run_none(tmp_path_factory, mnist_available) -> Path:
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


def has_colour(frame: np.ndarray, colour) -> bool:
    return bool((frame[..., :3] == colour).all(axis=-1).any())


def test_training_drew_the_loss_curves(run):
    pytest.importorskip("matplotlib")
    assert (run / "curves.png").is_file()


def test_one_frame_per_glimpse_plus_held_frames(run, tmp_path):
    out = tmp_path / "trace.gif"
    result = visualize(run, "--n", "2", "--hold-last", "4", "--fps", "10", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"{GLIMPSES + 4} frames" in result.stdout
    stored, durations, info = gif_frames(out)
    assert stored == GLIMPSES + 1                              # the held copies merge into one long frame
    assert sum(durations) == pytest.approx(100 * (GLIMPSES + 4), abs=stored)
    assert info["loop"] == 0
    first = iio.imread(out, index=0)
    assert has_colour(first, READ_COLOUR) and has_colour(first, WRITE_COLOUR)


def test_same_seed_same_gif(run, tmp_path):
    for name in ("a.gif", "b.gif"):
        assert visualize(run, "--n", "3", "--seed", "7", "--out", str(tmp_path / name)).exit_code == 0
    assert (tmp_path / "a.gif").read_bytes() == (tmp_path / "b.gif").read_bytes()


def test_generate_shows_only_the_write_box(run, tmp_path):
    out = tmp_path / "gen.gif"
    result = visualize(run, "--generate", "--n", "4", "--hold-last", "0", "--loop", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    frames = iio.imread(out, index=None)
    assert len(frames) == GLIMPSES
    assert has_colour(frames[0], WRITE_COLOUR)
    assert not any(has_colour(frame, READ_COLOUR) for frame in frames)
    assert gif_frames(out)[2]["loop"] == 1                     # plays twice: one repeat


def test_strip_has_every_glimpse_in_a_row(run, tmp_path):
    strip = tmp_path / "strip.png"
    result = visualize(run, "--indices", "5", "--out", str(tmp_path / "t.gif"), "--strip", str(strip))
    assert result.exit_code == 0, result.output
    picture = iio.imread(strip)
    cell = 2 * (28 + 2 * 3)                                    # input and canvas panels with their margins
    assert picture.shape[1] == 4 + GLIMPSES * (cell + 4)


def test_image_file_is_traced(run, tmp_path):
    picture = tmp_path / "digit.jpg"
    Image.new("RGB", (90, 60), (200, 30, 30)).save(picture)
    result = visualize(run, "--image", str(picture), "--out", str(tmp_path / "t.gif"))
    assert result.exit_code == 0, result.output


def test_no_attention_has_nothing_to_trace_but_still_draws(run_none, tmp_path):
    out = tmp_path / "none.gif"
    result = visualize(run_none, "--n", "2", "--hold-last", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "nothing to trace" in result.stderr
    frames = iio.imread(out, index=None)
    assert len(frames) == GLIMPSES
    assert not any(has_colour(f, READ_COLOUR) or has_colour(f, WRITE_COLOUR) for f in frames)


@pytest.mark.parametrize("args", [
    ["--image", "missing.png"],
    ["--image", "TEXT"],                                       # a text file named x.png
    ["--generate", "--image", "TEXT"],
    ["--fps", "0"],
    ["--hold-last", "-1"],
    ["--split", "nope"],
])
def test_user_errors_are_one_line(run, tmp_path, args):
    text = tmp_path / "x.png"
    text.write_text("not a picture")
    args = [str(text) if a == "TEXT" else str(tmp_path / a) if a.endswith(".png") else a for a in args]
    result = visualize(run, *args, "--out", str(tmp_path / "t.gif"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "Traceback" not in result.output


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
    final = iio.imread(gif, index=None)[-1]
    assert not has_colour(final, WRITE_COLOUR)
