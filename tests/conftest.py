"""Shared set-up: MNIST from the shared folder beside the project, never a download, plugin registration."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

if not os.environ.get("DRAWKIT_DATA") and SHARED_DATA.is_dir():
    os.environ["DRAWKIT_DATA"] = str(SHARED_DATA)
os.environ["DRAWKIT_OFFLINE"] = "1"
torch.set_num_threads(1)  # tiny models: a second thread only contends for the shared cores

MNIST_TRAIN_IMAGES = Path("MNIST") / "raw" / "train-images-idx3-ubyte"
TINY_TRAIN = ("--glimpses", "3", "--hidden", "16", "--z-dim", "4", "--read-size", "2", "--write-size", "3",
              "--batch-size", "16", "--max-steps", "5", "--val-images", "64", "--log-every", "1", "--no-progress")


@pytest.fixture(scope="session")
def mnist_available() -> Path:
    """The data root holding MNIST/raw; skips the test when it is absent."""
    setting = os.environ.get("DRAWKIT_DATA")
    if not setting or not (Path(setting) / MNIST_TRAIN_IMAGES).is_file():
        pytest.skip(f"MNIST not found: no {MNIST_TRAIN_IMAGES} under $DRAWKIT_DATA ({setting or 'unset'}); "
                    f"set DRAWKIT_DATA to a folder holding it")
    return Path(setting)


def read_idx_images(path: Path, count: int = None, start: int = 0) -> np.ndarray:
    """Images straight from an IDX file (16-byte header, then rows of 28 x 28 bytes) as uint8 (n, 28, 28)."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(16), dtype=">u4")
        assert header[0] == 2051
        total, rows, cols = (int(v) for v in header[1:])
        count = total - start if count is None else count
        f.seek(16 + start * rows * cols)
        return np.frombuffer(f.read(count * rows * cols), dtype=np.uint8).reshape(count, rows, cols)


@pytest.fixture(scope="session")
def mnist_train_file(mnist_available):
    """``read(count=None, start=0)``: images of MNIST's 60,000-image training file, read without torchvision."""
    return lambda count=None, start=0: read_idx_images(mnist_available / MNIST_TRAIN_IMAGES, count, start)


@pytest.fixture(scope="session")
def tiny_train_args() -> tuple:
    """`drawkit train` options for a model that trains in a second."""
    return TINY_TRAIN


@pytest.fixture
def register_plugin():
    """``register(obj, name)`` adds a plugin to drawkit's plugin manager for one test only."""
    from drawkit.plugins import load_plugins, pm

    load_plugins()
    added = []

    def register(obj, name: str):
        pm.register(obj, name=name)
        added.append(obj)
        return obj

    try:
        yield register
    finally:
        for obj in reversed(added):
            pm.unregister(obj)


@pytest.fixture(scope="session")
def cli_runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def picture_folder(tmp_path_factory) -> Path:
    """Forty 8 x 8 grey noise PNGs, for image-folder runs that need no data set."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"p{i:02d}.png")
    return folder


@pytest.fixture(scope="session")
def registry():
    """Every installed plugin's encoders, attention and datasets."""
    from drawkit.registry import get_registry

    return get_registry()


@pytest.fixture(scope="session")
def mnist_run(mnist_available, tmp_path_factory, cli_runner, tiny_train_args) -> Path:
    """A run folder of a tiny model trained for five steps on MNIST through `drawkit train`."""
    from drawkit.cli import app

    out = tmp_path_factory.mktemp("mnist-run")
    result = cli_runner.invoke(app, ["train", *tiny_train_args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def assert_one_error_line(result, *fragments):
    """A user error: exit code 2 and one line on the terminal, starting 'Error:', holding each fragment."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


class NoisePictures:
    """Random 8-bit pictures, the same for a split every time: a data set that needs no files."""

    image_shape = (3, 8, 8)
    default_binarize = "none"
    sizes = {"train": 32, "valid": 16, "test": 16}

    def load(self, split, root, download):
        from drawkit.data import SPLITS

        g = torch.Generator().manual_seed(SPLITS.index(split))
        return torch.randint(0, 256, (self.sizes[split], *self.image_shape), generator=g, dtype=torch.uint8)
