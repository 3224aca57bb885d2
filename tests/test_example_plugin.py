"""The outside package in examples/ plugs in through its entry point alone: declared, installed, found, trained."""
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from drawkit import plugins
from drawkit.checkpoint import read_checkpoint
from drawkit.cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "drawkit-gru-encoder"


def test_pyproject_declares_the_entry_point():
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert project["project"]["name"] == "drawkit-gru-encoder"
    assert project["project"]["entry-points"]["drawkit"] == {"gru": "drawkit_gru_encoder"}
    assert project["tool"]["setuptools"]["py-modules"] == ["drawkit_gru_encoder"]
    assert (EXAMPLE / "drawkit_gru_encoder.py").is_file() and (EXAMPLE / "README.md").is_file()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example pip-installed (offline, no dependencies) into a throwaway folder, never into the venv."""
    # asked of the installed metadata, not the import system: a find_spec("pip") in this process
    # switches off setuptools' distutils shim, and torch.compile later trips over the stdlib copy
    try:
        importlib.metadata.distribution("pip"), importlib.metadata.distribution("setuptools")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pip and setuptools are needed to build the example package")
    work = tmp_path_factory.mktemp("example")
    source, target = work / "source", work / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(source)], check=True)
    return target


@pytest.fixture
def gru_plugin(installed, register_plugin, monkeypatch):
    """What load_plugins does for an installed package: find the entry point, import it, register it."""
    (dist,) = importlib.metadata.distributions(path=[str(installed)])
    (ep,) = [ep for ep in dist.entry_points if ep.group == plugins.ENTRY_POINT_GROUP]
    monkeypatch.syspath_prepend(str(installed))
    monkeypatch.delitem(sys.modules, "drawkit_gru_encoder", raising=False)
    assert (ep.name, ep.value, ep.dist.name) == ("gru", "drawkit_gru_encoder", "drawkit-gru-encoder")
    if plugins.pm.has_plugin(ep.name):
        pytest.skip("drawkit-gru-encoder is installed in this environment; uninstall it to run this test")
    monkeypatch.setitem(plugins.sources, ep.name, plugins.PluginSource(ep.dist.name, ep.dist.version))
    register_plugin(ep.load(), name=ep.name)
    return ep


def test_installed_example_is_listed(gru_plugin, cli_runner):
    result = cli_runner.invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if " gru " in line)
    assert "encoder" in line and "drawkit-gru-encoder 0.1.0" in line


def test_installed_example_trains_and_samples(gru_plugin, cli_runner, tiny_train_args, tmp_path):
    run = tmp_path / "run"
    result = cli_runner.invoke(app, ["train", "--encoder", "gru", *tiny_train_args, "--out", str(run)])
    assert result.exit_code == 0, result.output
    payload = read_checkpoint(run / "checkpoint.pt")
    record = payload["plugins"]["encoder"]
    assert record == {"name": "gru", "plugin": "gru", "package": "drawkit-gru-encoder", "version": "0.1.0"}
    config = payload["model_config"]
    assert (config["encoder"], config["glimpses"], config["hidden"], config["z_dim"]) == ("gru", 3, 16, 4)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in records] == [("train", s) for s in range(1, 6)] + [("valid", 5)]
    assert records[-1]["n_images"] == 64 and np.isfinite(records[-1]["nll_bound"])
    result = cli_runner.invoke(app, ["sample", "--checkpoint", str(run), "--n", "9", "--scale", "1",
                                     "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    png = iio.imread(tmp_path / "s.png")
    assert png.shape == (2 + 3 * (28 + 2), 2 + 3 * (28 + 2), 3)   # 9 images of 28 x 28, 3 a row, 2 pixels apart
    for i in range(9):
        r, c = divmod(i, 3)
        image = png[2 + 30 * r:30 + 30 * r, 2 + 30 * c:30 + 30 * c]
        assert image.std() > 0, i                                   # drawn, not a blank square
        assert (png[30 * r:2 + 30 * r, 2 + 30 * c:30 + 30 * c] == 128).all()   # grey padding above it
