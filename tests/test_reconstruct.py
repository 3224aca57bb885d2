"""reconstruct through the CLI, and turning user picture files into the model's input."""
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from drawkit.cli import app
from drawkit.errors import DrawkitError
from drawkit.images import load_image
from drawkit.inputs import choose_inputs, parse_indices

runner = CliRunner()


@pytest.fixture(scope="module")
def run(mnist_available, tmp_path_factory) -> Path:
    """A tiny checkpoint trained here."""
    out = tmp_path_factory.mktemp("run")
    result = runner.invoke(app, ["train", "--glimpses", "2", "--hidden", "8", "--z-dim", "2", "--max-steps", "1",
                                 "--batch-size", "8", "--val-images", "8", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def reconstruct(run: Path, tmp_path: Path, *args: str):
    return runner.invoke(app, ["reconstruct", "--checkpoint", str(run), "--out", str(tmp_path / "r.png"), *args])


def test_grid_of_inputs_beside_reconstructions(run, tmp_path):
    result = reconstruct(run, tmp_path, "--n", "4", "--scale", "3")
    assert result.exit_code == 0, result.output
    assert "4 images" in result.stdout
    picture = iio.imread(tmp_path / "r.png")
    pair = 2 * 28 * 3                                          # input and reconstruction, no margin
    assert picture.shape == (16 + 4 + 2 * (84 + 4), 4 + 2 * (pair + 4), 3)


def test_indices_and_splits(run, tmp_path):
    result = reconstruct(run, tmp_path, "--indices", "3,17,42", "--split", "valid")
    assert result.exit_code == 0, result.output
    assert "3 images" in result.stdout


def test_picture_files_of_any_size_and_colour(run, tmp_path):
    colour, grey = tmp_path / "colour.png", tmp_path / "grey.jpg"
    Image.new("RGBA", (120, 45), (10, 200, 30, 128)).save(colour)
    Image.new("L", (9, 9), 200).save(grey)
    result = reconstruct(run, tmp_path, "--image", str(colour), "--image", str(grey), "--invert")
    assert result.exit_code == 0, result.output
    assert "2 images" in result.stdout


@pytest.mark.parametrize("args", [
    ["--image", "MISSING"],
    ["--image", "TEXT"],
    ["--image", "DIR"],
    ["--indices", "3,x"],
    ["--indices", "99999999"],
    ["--image", "TEXT", "--indices", "1"],
    ["--split", "nope"],
    ["--n", "0"],
])
def test_user_errors_are_one_line(run, tmp_path, args):
    text = tmp_path / "x.png"
    text.write_text("not a picture")
    places = {"MISSING": str(tmp_path / "missing.png"), "TEXT": str(text), "DIR": str(tmp_path)}
    result = reconstruct(run, tmp_path, *[places.get(a, a) for a in args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "Traceback" not in result.output


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
    with pytest.raises(DrawkitError):
        parse_indices(",")
