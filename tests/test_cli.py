"""The drawkit command through Typer's CliRunner: what it writes, and one clean line for every user error."""
import json
import os
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

from drawkit import checkpoint as checkpoint_module
from drawkit.checkpoint import load_model, read_checkpoint, save_checkpoint
from drawkit.cli import app
from drawkit.errors import DrawkitError
from drawkit.model import Draw
from drawkit.registry import get_registry
from bound_reference import record_passes
from conftest import assert_one_error_line, read_idx_images

MNIST_TRAIN_IMAGES = Path(os.environ["DRAWKIT_DATA"]) / "MNIST" / "raw" / "train-images-idx3-ubyte"


def temp_files(folder):
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


def test_train_writes_a_loadable_checkpoint(mnist_run):
    model, payload = load_model(mnist_run / "checkpoint.pt", get_registry())
    assert isinstance(model, Draw)
    config = model.config
    assert (config.glimpses, config.hidden, config.z_dim, config.read_size, config.write_size) == (3, 16, 4, 2, 3)
    assert config.image_shape == (1, 28, 28)
    assert payload["plugins"]["encoder"]["name"] == "lstm" and payload["plugins"]["encoder"]["package"] == "drawkit"
    assert payload["plugins"]["attention"]["name"] == "filterbank"


def test_train_metrics_are_the_bounds_of_the_batches_trained_and_validated_on(cli_runner, tiny_train_args, tmp_path):
    """Each number in metrics.jsonl is recomputed from what the network computed in that step or that validation
    (tests/bound_reference.py): BCE written with log-sigmoids, the KL from torch.distributions."""
    with record_passes() as passes:
        result = cli_runner.invoke(app, ["train", *tiny_train_args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    valid = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5]
    steps = [p for p in passes if p.training]
    assert len(steps) == 5
    for record, step in zip(train, steps):
        assert record["reconstruction"] == pytest.approx(step.reconstruction().mean().item(), rel=1e-5)
        assert record["kl"] == pytest.approx(step.kl().sum(1).mean().item(), rel=1e-5, abs=1e-6)
        assert record["loss"] == pytest.approx(step.bound().mean().item(), rel=1e-5)

    assert len(valid) == 1 and valid[0]["n_images"] == 64
    validation = [p for p in passes if not p.training]
    images = torch.cat([p.x for p in validation])
    grey = torch.from_numpy(read_idx_images(MNIST_TRAIN_IMAGES, 64, start=50_000).copy())  # valid: the last 10,000
    assert images.shape == (64, 1, 28, 28) and ((images == 0) | (images == 1)).all()
    assert (images[grey[:, None] == 0] == 0).all() and (images[grey[:, None] == 255] == 1).all()
    bound = torch.cat([p.bound() for p in validation])
    assert valid[0]["nll_bound"] == pytest.approx(bound.mean().item(), rel=1e-5)
    reconstruction = torch.cat([p.reconstruction() for p in validation]).mean().item()
    assert valid[0]["reconstruction"] == pytest.approx(reconstruction, rel=1e-5)
    kl = torch.cat([p.kl().sum(1) for p in validation]).mean().item()
    assert valid[0]["kl"] == pytest.approx(kl, rel=1e-5, abs=1e-6)


def test_train_leaves_no_temporary_files(mnist_run):
    assert temp_files(mnist_run) == []


def test_failed_checkpoint_write_keeps_the_previous_one(mnist_run, tmp_path, monkeypatch):
    model, _ = load_model(mnist_run / "checkpoint.pt", get_registry())
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, plugins={})
    before = path.read_bytes()

    def half_written(obj, file):
        with open(file, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", half_written)
    with pytest.raises(DrawkitError, match="No space left"):
        save_checkpoint(path, model, plugins={})
    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []


def test_sample_writes_png_grid_and_gif_with_one_frame_per_glimpse(mnist_run, tmp_path, cli_runner):
    png, gif = tmp_path / "x.png", tmp_path / "g.gif"
    result = cli_runner.invoke(app, ["sample", "--checkpoint", str(mnist_run / "checkpoint.pt"), "--n", "9",
                                     "--out", str(png), "--gif", str(gif), "--hold-last", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    side = (2 + 3 * (28 + 2)) * 2                    # 3 x 3 grid, 2-pixel padding, scale 2
    assert iio.imread(png).shape == (side, side, 3)
    frames = iio.imread(gif, index=None)
    assert len(frames) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.gif", "x.png"]


def test_sample_from_the_run_folder_is_repeatable(mnist_run, tmp_path, cli_runner):
    for name in ("a.png", "b.png"):
        result = cli_runner.invoke(app, ["sample", "--checkpoint", str(mnist_run), "--n", "4", "--seed", "5",
                                         "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert (iio.imread(tmp_path / "a.png") == iio.imread(tmp_path / "b.png")).all()


def test_plugins_lists_every_builtin(cli_runner):
    result = cli_runner.invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    for name in ("lstm", "filterbank", "none", "mnist"):
        assert name in result.stdout


@pytest.fixture
def tiny(tmp_path, tiny_train_args):
    """`drawkit train ... ARGS` for a tiny model, so a wrongly accepted input still finishes at once."""
    return lambda *args: ["train", *tiny_train_args, "--max-steps", "1", "--out", str(tmp_path / "run"), *args]


TRAIN_ERRORS = [
    (["--encoder", "transformer"], ["transformer", "lstm"]),
    (["--attention", "spotlight"], ["spotlight", "filterbank", "none"]),
    (["--dataset", "cifar99"], ["cifar99", "mnist"]),
    (["--glimpses", "-1"], ["--glimpses"]),
    (["--hidden", "0"], ["--hidden"]),
    (["--z-dim", "-4"], ["--z-dim"]),
    (["--read-size", "-2"], ["--read-size"]),
    (["--write-size", "0"], ["--write-size"]),
    (["--batch-size", "-8"], ["--batch-size"]),
    (["--glimpses", "three"], ["--glimpses"]),
    (["--device", "tpu"], ["tpu", "cpu", "cuda"]),
]


@pytest.mark.parametrize("args, fragments", TRAIN_ERRORS, ids=[" ".join(args) for args, _ in TRAIN_ERRORS])
def test_train_user_errors_are_one_line(cli_runner, tiny, args, fragments):
    assert_one_error_line(cli_runner.invoke(app, tiny(*args)), *fragments)


def test_train_unknown_encoder_option(cli_runner, tiny):
    assert_one_error_line(cli_runner.invoke(app, tiny("--encoder-opt", "depth=2")), "depth", "lstm")


def test_train_nonexistent_data_dir(cli_runner, tiny, tmp_path):
    missing = tmp_path / "no-data-here"
    assert_one_error_line(cli_runner.invoke(app, tiny("--data-dir", str(missing))), str(missing), "--data-dir")


def test_train_offline_without_data_says_how_to_point_at_it(cli_runner, tiny, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_error_line(cli_runner.invoke(app, tiny("--data-dir", str(empty))), str(empty), "DRAWKIT_DATA")


def test_train_cuda_without_a_gpu(cli_runner, tiny):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert_one_error_line(cli_runner.invoke(app, tiny("--device", "cuda")), "CUDA")


def sample_args(checkpoint, tmp_path, *extra):
    return ["sample", "--checkpoint", str(checkpoint), "--n", "4", "--out", str(tmp_path / "s.png"), *extra]


def test_sample_missing_checkpoint(cli_runner, tmp_path):
    missing = tmp_path / "missing.pt"
    assert_one_error_line(cli_runner.invoke(app, sample_args(missing, tmp_path)), str(missing), "not found")


def test_sample_garbage_file(cli_runner, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 8)
    assert_one_error_line(cli_runner.invoke(app, sample_args(garbage, tmp_path)), str(garbage), "checkpoint")


def test_sample_torch_file_without_drawkit_format(cli_runner, tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"model": {"weight": torch.zeros(2)}, "step": 3}, other)
    assert_one_error_line(cli_runner.invoke(app, sample_args(other, tmp_path)), str(other),
                          "not a drawkit checkpoint")


def test_sample_checkpoint_needing_an_encoder_that_is_not_installed(mnist_run, cli_runner, tmp_path):
    if "gru" in get_registry().names("encoder"):
        pytest.skip("an encoder 'gru' is installed in this environment")
    payload = read_checkpoint(mnist_run / "checkpoint.pt")
    payload["model_config"]["encoder"] = "gru"
    payload["plugins"]["encoder"] = {"name": "gru", "plugin": "gru", "package": "drawkit-gru-encoder", "version": "1.0"}
    edited = tmp_path / "needs-gru.pt"
    torch.save(payload, edited)
    assert_one_error_line(cli_runner.invoke(app, sample_args(edited, tmp_path)), "'gru'", "drawkit-gru-encoder")


@pytest.mark.parametrize("damage", ["no model_config", "weights do not fit the config"])
def test_sample_damaged_drawkit_checkpoint_is_one_line(mnist_run, cli_runner, tmp_path, damage):
    payload = read_checkpoint(mnist_run / "checkpoint.pt")
    if damage == "no model_config":
        del payload["model_config"]
    else:
        payload["model_config"]["hidden"] += 1
    damaged = tmp_path / "damaged.pt"
    torch.save(payload, damaged)
    assert_one_error_line(cli_runner.invoke(app, sample_args(damaged, tmp_path)), str(damaged))


def test_sample_out_is_a_directory(mnist_run, cli_runner, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    result = cli_runner.invoke(app, ["sample", "--checkpoint", str(mnist_run), "--out", str(folder)])
    assert_one_error_line(result, str(folder), "directory")


@pytest.mark.parametrize("extra, fragment", [
    (["--device", "gpu0"], "gpu0"),
    (["--n", "0"], "--n"),
    (["--n", "many"], "--n"),
])
def test_sample_bad_options(mnist_run, cli_runner, tmp_path, extra, fragment):
    assert_one_error_line(cli_runner.invoke(app, sample_args(mnist_run, tmp_path, *extra)), fragment)


def test_sample_cuda_without_a_gpu(mnist_run, cli_runner, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert_one_error_line(cli_runner.invoke(app, sample_args(mnist_run, tmp_path, "--device", "cuda")), "CUDA")


def test_unknown_command_is_one_line(cli_runner):
    assert_one_error_line(cli_runner.invoke(app, ["trian"]), "trian")
