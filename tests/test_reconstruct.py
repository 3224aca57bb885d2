"""reconstruct through the CLI, and turning user picture files into the model's input.

The PNG's layout, worked out here: pairs (input | reconstruction, no margin, --scale screen pixels
per image pixel) in a square-ish grid, 4 screen pixels round each pair, a 16-pixel legend on top.
"""
import math
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import GENERATED_DATA, read_idx_images
from drawkit.cli import app
from drawkit.errors import DrawkitError
from drawkit.images import load_image
from drawkit.inputs import choose_inputs, parse_indices

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny checkpoint trained here."""
    out = tmp_path_factory.mktemp("run")
    result = runner.invoke(app, ["train", "--glimpses", "2", "--hidden", "8", "--z-dim", "2", "--max-steps", "1",
                                 "--batch-size", "8", "--val-images", "8", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def reconstruct(run: Path, tmp_path: Path, *args: str):
    return runner.invoke(app, ["reconstruct", "--checkpoint", str(run), "--out", str(tmp_path / "r.png"), *args])


SIDE, GAP, LEGEND = 28, 4, 16
RAW = GENERATED_DATA / "MNIST" / "raw"


def split_images(split: str, indices) -> np.ndarray:
    """Images straight from the generated MNIST files: test is t10k, valid the last 10,000 of train."""
    if split == "test":
        return np.stack([read_idx_images(RAW / "t10k-images-idx3-ubyte", 1, i)[0] for i in indices])
    return np.stack([read_idx_images(RAW / "train-images-idx3-ubyte", 1, 50_000 + i)[0] for i in indices])


def pairs_of(picture: np.ndarray, n: int, scale: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input, reconstruction) of each of n pairs, one value per image pixel; checks the picture's size first."""
    ncol = math.ceil(math.sqrt(n))
    rows = math.ceil(n / ncol)
    side = SIDE * scale
    assert picture.shape == (LEGEND + GAP + rows * (side + GAP), GAP + ncol * (2 * side + GAP), 3)
    found = []
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = LEGEND + GAP + r * (side + GAP), GAP + c * (2 * side + GAP)
        pair = picture[top:top + side, left:left + 2 * side]
        assert np.array_equal(pair, pair[::scale, ::scale].repeat(scale, 0).repeat(scale, 1))   # crisp upscale
        assert (picture[top - GAP:top, left:left + 2 * side] == 96).all()                      # the gap above it
        found.append((pair[::scale, :side:scale, 0], pair[::scale, side::scale, 0]))
    return found


def assert_binarized(shown: np.ndarray, digit: np.ndarray) -> None:
    """A digit binarized as training was: 0 and 255 only, black where it has no ink, white where it is full."""
    assert set(np.unique(shown).tolist()) <= {0, 255}
    assert (shown[digit == 0] == 0).all() and (shown[digit == 255] == 255).all() and (digit == 255).sum() >= 10


def assert_reconstruction(recon: np.ndarray) -> None:
    """sigmoid(c_T) of a model trained one step, in full 8-bit grey: many levels, not one flat value
    and not a copy of the binary input."""
    assert len(np.unique(recon)) > 2


def mean_bound(stdout: str) -> float:
    return float(re.search(r"mean bound ([0-9.]+) nats/image", stdout).group(1))


def test_grid_of_inputs_beside_reconstructions(run, tmp_path):
    result = reconstruct(run, tmp_path, "--n", "4", "--scale", "3")
    assert result.exit_code == 0, result.output
    assert "4 images" in result.stdout and 0 < mean_bound(result.stdout) < 784 * 2
    picture = iio.imread(tmp_path / "r.png")
    pair = 2 * 28 * 3                                          # input and reconstruction, no margin
    assert picture.shape == (16 + 4 + 2 * (84 + 4), 4 + 2 * (pair + 4), 3)
    for (shown, recon), digit in zip(pairs_of(picture, 4, scale=3), split_images("test", range(4))):
        assert_binarized(shown, digit)                         # the first four test images, in order
        assert_reconstruction(recon)


def test_indices_and_splits(run, tmp_path):
    result = reconstruct(run, tmp_path, "--indices", "3,17,42", "--split", "valid", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert "3 images" in result.stdout
    found = pairs_of(iio.imread(tmp_path / "r.png"), 3, scale=2)          # 2 pairs a row, 2 rows
    for (shown, recon), digit in zip(found, split_images("valid", [3, 17, 42])):
        assert_binarized(shown, digit)
        assert_reconstruction(recon)


def test_picture_files_of_any_size_and_colour(run, tmp_path):
    colour, grey = tmp_path / "colour.png", tmp_path / "grey.jpg"
    Image.new("RGBA", (120, 45), (10, 200, 30, 128)).save(colour)
    Image.new("L", (9, 9), 200).save(grey)
    result = reconstruct(run, tmp_path, "--image", str(colour), "--image", str(grey), "--invert")
    assert result.exit_code == 0, result.output
    assert "2 images" in result.stdout
    (colour_shown, _), (grey_shown, _) = pairs_of(iio.imread(tmp_path / "r.png"), 2, scale=3)
    # half-transparent green on black is grey 62, inverted 193: about three pixels in four white;
    # grey 200 inverted is 55: about one in five; both binarized as training was
    for shown, low, high in ((colour_shown, 0.65, 0.87), (grey_shown, 0.12, 0.32)):
        assert set(np.unique(shown).tolist()) == {0, 255}
        assert low < (shown == 255).mean() < high, (shown == 255).mean()


@pytest.mark.parametrize("args, expect", [
    (["--image", "MISSING"], "--image {MISSING} not found"),
    (["--image", "TEXT"], "--image {TEXT} could not be read as a picture"),
    (["--image", "DIR"], "--image {DIR} is not a file"),
    (["--indices", "3,x"], "--indices expects whole numbers separated by commas"),
    (["--indices", "99999999"], "--indices 99999999 is out of range: the test split"),
    (["--image", "TEXT", "--indices", "1"], "give either --image or --indices, not both"),
    (["--split", "nope"], "unknown --split 'nope'"),
    (["--n", "0"], "--n must be a positive whole number, got 0"),
])
def test_user_errors_are_one_line(run, tmp_path, args, expect):
    text = tmp_path / "x.png"
    text.write_text("not a picture")
    places = {"MISSING": str(tmp_path / "missing.png"), "TEXT": str(text), "DIR": str(tmp_path)}
    result = reconstruct(run, tmp_path, *[places.get(a, a) for a in args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "Traceback" not in result.output
    assert expect.format(**places) in lines[0], (expect, lines[0])
    assert not (tmp_path / "r.png").exists()


def test_load_image_converts_size_and_channels(tmp_path):
    path = tmp_path / "p.png"
    Image.new("RGB", (50, 40), (255, 255, 255)).save(path)
    grey = load_image(path, (1, 28, 28))
    assert grey.shape == (1, 28, 28) and torch.allclose(grey, torch.ones_like(grey))
    assert torch.allclose(load_image(path, (1, 28, 28), invert=True), torch.zeros(1, 28, 28))
    assert load_image(path, (3, 32, 32)).shape == (3, 32, 32)
    with pytest.raises(DrawkitError, match="2-channel"):
        load_image(path, (2, 28, 28))


def test_picture_is_binarized_as_training_was_with_a_fixed_seed(tmp_path):
    path = tmp_path / "half.png"
    Image.new("L", (28, 28), 128).save(path)
    payload = {"train_config": {"binarize": "sample"}}
    a, b, c = (choose_inputs(payload, None, (1, 28, 28), images=[path], seed=s) for s in (0, 0, 1))
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a, b) and not torch.equal(a, c)
    kept = choose_inputs({"train_config": {"binarize": "none"}}, None, (1, 28, 28), images=[path])
    assert torch.allclose(kept, torch.full_like(kept, 128 / 255))


def test_parse_indices():
    assert parse_indices("3, 17,42") == [3, 17, 42]
    assert parse_indices(None) is None
    with pytest.raises(DrawkitError, match="--indices is empty"):
        parse_indices(",")
