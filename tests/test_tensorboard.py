"""`drawkit train --tensorboard`: the event files hold the run's metrics records, at their steps, and its pictures."""
import io
import json
import sys
import time

import pytest
import torch
from PIL import Image

pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install 'drawkit[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from conftest import assert_one_error_line  # noqa: E402
from drawkit.checkpoint import read_checkpoint  # noqa: E402
from drawkit.cli import app  # noqa: E402

TINY_CLASSIFIER = ("--task", "classify", "--glimpses", "2", "--hidden", "8", "--read-size", "3", "--batch-size", "16",
                   "--max-steps", "3", "--val-images", "32", "--log-every", "1", "--no-progress")
DRAW_TRAIN_TAGS = {"train/loss", "train/reconstruction", "train/kl", "train/skipped_steps", "train/lr",
                   "train/grad_norm", "train/images_per_s", "kl_per_glimpse/t01", "kl_per_glimpse/t02", "kl_per_glimpse/t03"}
DRAW_VALID_TAGS = {"valid/nll_bound", "valid/reconstruction", "valid/kl", "valid/bits_per_dim"}


def events(run):
    """Everything TensorBoard would show for the run: its scalars and images, as EventAccumulator reads them."""
    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def scalar_series(accumulator, tag) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def metrics(run, split) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def train(cli_runner, *args):
    result = cli_runner.invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def draw_run(cli_runner, tiny_train_args, tmp_path_factory):
    """Five steps of a tiny DRAW, logged every step, validated once at the end, with --tensorboard."""
    out = tmp_path_factory.mktemp("tensorboard-run")
    train(cli_runner, *tiny_train_args, "--tensorboard", "--out", str(out))
    return out


def test_every_training_record_is_a_set_of_scalars_at_its_step(draw_run):
    accumulator = events(draw_run)
    assert DRAW_TRAIN_TAGS | DRAW_VALID_TAGS == set(accumulator.Tags()["scalars"])
    records = metrics(draw_run, "train")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    for name in ("loss", "reconstruction", "kl", "skipped_steps", "grad_norm"):
        assert scalar_series(accumulator, f"train/{name}") == [
            (r["step"], pytest.approx(r[name], rel=1e-6, abs=1e-7)) for r in records], name
    assert scalar_series(accumulator, "train/images_per_s") == [
        (r["step"], pytest.approx(r["steps_per_s"] * 16, rel=1e-6)) for r in records]
    assert scalar_series(accumulator, "train/lr") == [(step, pytest.approx(1e-3)) for step in range(1, 6)]


def test_the_kl_of_each_glimpse_adds_up_to_the_kl_of_the_step(draw_run):
    accumulator = events(draw_run)
    per_glimpse = [scalar_series(accumulator, f"kl_per_glimpse/t{t:02d}") for t in (1, 2, 3)]
    for record, glimpses in zip(metrics(draw_run, "train"), zip(*per_glimpse)):
        assert {step for step, _ in glimpses} == {record["step"]}
        assert all(kl >= 0 for _, kl in glimpses)
        assert sum(kl for _, kl in glimpses) == pytest.approx(record["kl"], rel=1e-5, abs=1e-6)


def test_a_validation_is_its_measures_and_two_pictures_at_its_step(draw_run):
    accumulator = events(draw_run)
    (record,) = metrics(draw_run, "valid")
    for name in ("nll_bound", "reconstruction", "kl", "bits_per_dim"):
        assert scalar_series(accumulator, f"valid/{name}") == [(5, pytest.approx(record[name], rel=1e-6))], name
    assert set(accumulator.Tags()["images"]) == {"valid/samples", "valid/reconstructions"}
    (samples,) = accumulator.Images("valid/samples")
    (reconstructions,) = accumulator.Images("valid/reconstructions")
    assert samples.step == reconstructions.step == 5
    grid = Image.open(io.BytesIO(samples.encoded_image_string))
    # 16 samples of 28 x 28, four to a row, 2 pixels apart, all scaled by 2
    assert grid.size == (samples.width, samples.height) == (2 * (2 + 4 * 30),) * 2
    pairs = Image.open(io.BytesIO(reconstructions.encoded_image_string))
    assert pairs.size[0] > pairs.size[1] > 2 * 28 * 3  # 8 inputs beside their reconstructions: 3 rows, 3 pairs wide


def test_pictures_leave_the_training_stream_as_it_was(draw_run, mnist_run):
    """The same run without --tensorboard (conftest's mnist_run) ends with the same weights and random state."""
    with_pictures, without = read_checkpoint(draw_run), read_checkpoint(mnist_run)
    assert with_pictures["train_config"]["tensorboard"] and not without["train_config"]["tensorboard"]
    assert torch.equal(with_pictures["rng"]["torch"], without["rng"]["torch"])
    for name, weights in without["model"].items():
        assert torch.equal(with_pictures["model"][name], weights), name


def test_resume_with_tensorboard_turns_it_on_from_there(cli_runner, tiny_train_args, tmp_path):
    train(cli_runner, *tiny_train_args, "--max-steps", "3", "--out", str(tmp_path))
    assert not (tmp_path / "tensorboard").exists()
    train(cli_runner, *tiny_train_args, "--resume", str(tmp_path), "--max-steps", "5", "--tensorboard")
    accumulator = events(tmp_path)
    assert [step for step, _ in scalar_series(accumulator, "train/loss")] == [4, 5]
    assert [step for step, _ in scalar_series(accumulator, "valid/nll_bound")] == [5]
    assert read_checkpoint(tmp_path)["train_config"]["tensorboard"] is True


def test_a_resumed_run_replaces_what_an_interrupted_session_wrote_past_its_checkpoint(cli_runner, tiny_train_args,
                                                                                        tmp_path):
    train(cli_runner, *tiny_train_args, "--max-steps", "3", "--tensorboard", "--out", str(tmp_path))
    with SummaryWriter(str(tmp_path / "tensorboard")) as lost:  # a session that died after step 4, unsaved
        lost.add_scalar("train/loss", 999.0, 4)
    time.sleep(1.05 - time.time() % 1)  # event files are read in name order: the resumed one names a later second
    train(cli_runner, *tiny_train_args, "--resume", str(tmp_path), "--max-steps", "5")  # stays on: it is the run's
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 3
    accumulator = events(tmp_path)
    records = metrics(tmp_path, "train")
    assert scalar_series(accumulator, "train/loss") == [(r["step"], pytest.approx(r["loss"], rel=1e-6))
                                                        for r in records]
    assert [step for step, _ in scalar_series(accumulator, "train/loss")] == [1, 2, 3, 4, 5]
    assert [step for step, _ in scalar_series(accumulator, "valid/nll_bound")] == [3, 5]
    assert [image.step for image in accumulator.Images("valid/samples")] == [3, 5]


def test_a_classifier_logs_its_loss_error_rate_and_validation_without_pictures(cli_runner, tmp_path):
    train(cli_runner, *TINY_CLASSIFIER, "--tensorboard", "--out", str(tmp_path))
    accumulator = events(tmp_path)
    assert set(accumulator.Tags()["scalars"]) == {
        "train/loss", "train/error_rate", "train/skipped_steps", "train/lr", "train/grad_norm",
        "train/images_per_s", "valid/error_rate", "valid/accuracy", "valid/nll"}
    assert accumulator.Tags()["images"] == []
    records = metrics(tmp_path, "train")
    assert scalar_series(accumulator, "train/error_rate") == [(r["step"], pytest.approx(r["error_rate"], abs=1e-7))
                                                              for r in records]
    (record,) = metrics(tmp_path, "valid")
    assert scalar_series(accumulator, "valid/accuracy") == [(3, pytest.approx(record["accuracy"], rel=1e-6))]


def test_without_tensorboard_installed_the_run_stops_before_training_naming_the_extra(cli_runner, tiny_train_args,
                                                                                      tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails, as when it is not installed
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    result = cli_runner.invoke(app, ["train", *tiny_train_args, "--tensorboard", "--out", str(tmp_path / "run")])
    assert_one_error_line(result, "--tensorboard", "pip install 'drawkit[tensorboard]'")
    assert not (tmp_path / "run").exists()


def test_without_the_option_nothing_is_written_for_tensorboard(mnist_run):
    assert not (mnist_run / "tensorboard").exists()
