"""Shared set-up: generated stand-in MNIST for every run, the real files only where a test needs them.

Training, evaluation and picture tests read $DRAWKIT_DATA, which points at a generated folder in
MNIST's layout (tests/generated_mnist.py), so they run the same on every machine, data or not.
Tests of facts about the real MNIST files ask for ``mnist_available`` and skip, saying so, where
those files are absent ($DRAWKIT_DATA as given to pytest, else ../shared/data).
"""
import atexit
import copy
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from generated_mnist import write_mnist_folder

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_DATA = os.environ.get("DRAWKIT_DATA") or (str(SHARED_DATA) if SHARED_DATA.is_dir() else "")
GENERATED_DATA = write_mnist_folder(Path(tempfile.mkdtemp(prefix="drawkit-test-data-")))
atexit.register(shutil.rmtree, GENERATED_DATA, ignore_errors=True)
os.environ["DRAWKIT_DATA"] = str(GENERATED_DATA)
os.environ["DRAWKIT_OFFLINE"] = "1"
os.environ["DRAWKIT_SLOW_BF16"] = "1"  # bf16's arithmetic is tested on every CPU, emulated where it must be
torch.set_num_threads(1)  # tiny models: a second thread only contends for the shared cores

MNIST_TRAIN_IMAGES = Path("MNIST") / "raw" / "train-images-idx3-ubyte"
TINY_TRAIN = ("--glimpses", "3", "--hidden", "16", "--z-dim", "4", "--read-size", "2", "--write-size", "3",
              "--batch-size", "16", "--max-steps", "5", "--val-images", "64", "--log-every", "1", "--no-progress")


@pytest.fixture(scope="session")
def test_device() -> torch.device:
    """The device the device-agnostic tests run on: $DRAWKIT_TEST_DEVICE (cpu, cuda, cuda:N), default cpu.

    ``DRAWKIT_TEST_DEVICE=cuda make test`` runs them on the GPU; without one, every test using this skips.
    """
    name = os.environ.get("DRAWKIT_TEST_DEVICE", "cpu").strip() or "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        pytest.fail(f"DRAWKIT_TEST_DEVICE={name!r} is not a torch device; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"DRAWKIT_TEST_DEVICE={name} but no CUDA GPU is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        pytest.skip(f"DRAWKIT_TEST_DEVICE={name} but this machine has {torch.cuda.device_count()} GPU(s)")
    return device


@pytest.fixture(scope="session")
def mnist_available() -> Path:
    """The data root holding the real MNIST/raw, for tests of the real files; skips where they are absent."""
    if not REAL_DATA or not (Path(REAL_DATA) / MNIST_TRAIN_IMAGES).is_file():
        pytest.skip(f"needs the real MNIST files: no {MNIST_TRAIN_IMAGES} under $DRAWKIT_DATA or ../shared/data "
                    f"({REAL_DATA or 'neither set'})")
    return Path(REAL_DATA)


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
def mnist_train_file():
    """``read(count=None, start=0)``: images of the (generated) 60,000-image training file, without torchvision."""
    return lambda count=None, start=0: read_idx_images(GENERATED_DATA / MNIST_TRAIN_IMAGES, count, start)


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
def mnist_run(tmp_path_factory, cli_runner, tiny_train_args) -> Path:
    """A run folder of a tiny model trained for five steps on (generated) MNIST through `drawkit train`."""
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


class FakeEntryPoint:
    """One line of a package's [project.entry-points.drawkit], as importlib.metadata gives it."""

    def __init__(self, name: str, package: str, version: str = "0.0.1", plugin=None, error: Exception = None):
        self.name, self.dist = name, SimpleNamespace(name=package, version=version)
        self.plugin, self.error = plugin, error

    def load(self):
        if self.error is not None:
            raise self.error
        return self.plugin


@pytest.fixture
def load_again(monkeypatch):
    """``load(*entry_points)``: drawkit's entry-point loading run again over these alone, in this order;
    drawkit's plugin state is put back afterwards."""
    import drawkit.registry as registry_module
    from drawkit import plugins

    plugins.load_plugins()
    state = {name: getattr(plugins, name) for name in ("broken", "sources", "not_loaded", "warnings")}
    state["marked"] = registry_module._marked  # which of `broken` the registry added, and takes back
    saved = {name: copy.copy(value) for name, value in state.items()}
    before = {name for name, _ in plugins.pm.list_name_plugin()}
    monkeypatch.delenv("DRAWKIT_LOAD_PLUGINS", raising=False)

    def load(*entry_points):
        monkeypatch.setattr(plugins, "_entry_points", lambda: list(entry_points))
        monkeypatch.setattr(plugins, "_loaded", False)
        plugins.load_plugins()

    try:
        yield load
    finally:
        for name, _ in list(plugins.pm.list_name_plugin()):
            if name not in before:
                plugins.pm.unregister(name=name)
        for name, value in saved.items():
            state[name].clear()
            state[name].extend(value) if isinstance(value, list) else state[name].update(value)
