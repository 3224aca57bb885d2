"""Exact resume, stop signals, safe checkpoints, numerical faults and the filterbank at extreme parameters."""
import errno
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

import drawkit
from drawkit import checkpoint as checkpoint_module
from drawkit import training as train_module
from drawkit.checkpoint import FORMAT, VERSION, load_model, read_checkpoint, save_checkpoint
from drawkit.cli import app
from drawkit.data import SPLITS
from drawkit.durations import parse_duration
from drawkit.errors import DrawkitError
from drawkit.likelihoods import Bernoulli
from drawkit.model import DrawConfig, build_model
from drawkit.registry import get_registry
from drawkit.tasks import Generate
from drawkit.training import Interrupted, TrainConfig, resume_configs, train, train_step
from drawkit_plugins.filterbank import filterbank, read_patch, window_from_params, write_patch

DATASET = "random-grey-8x8"
STEPS_PER_EPOCH = 6  # 96 training images, batches of 16
MODEL = DrawConfig(glimpses=2, hidden=8, z_dim=2, read_size=2, write_size=2)
TINY = ("--dataset", DATASET, "--glimpses", "2", "--hidden", "8", "--z-dim", "2", "--read-size", "2",
        "--write-size", "2", "--batch-size", "16", "--val-images", "8", "--log-every", "1", "--device", "cpu",
        "--seed", "3", "--no-progress")


class RandomGrey:
    """Grey 8 x 8 noise, binarized afresh each step: an epoch is six steps and uses the global RNG."""

    image_shape = (1, 8, 8)
    default_binarize = "sample"
    sizes = {"train": 96, "valid": 16, "test": 16}

    def load(self, split, root, download):
        g = torch.Generator().manual_seed(SPLITS.index(split))
        return torch.rand((self.sizes[split], *self.image_shape), generator=g)


class RandomGreyPlugin:
    @drawkit.hookimpl
    def register_datasets(self, register):
        register(DATASET, RandomGrey, description="random grey 8x8 images for tests")


class RunsCode:
    """Unpickling this runs a shell command: what a checkpoint must never be able to do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def data(register_plugin):
    register_plugin(RandomGreyPlugin(), "test-random-grey")
    return DATASET


def tiny_config(out, steps=None, **changes) -> TrainConfig:
    return TrainConfig(dataset=DATASET, batch_size=16, epochs=changes.pop("epochs", 100), max_steps=steps,
                       out=str(out), val_images=8, log_every=1, device="cpu", seed=3, **changes)


def run(out, steps=None, **changes) -> dict:
    return train(MODEL, tiny_config(out, steps, **changes), progress=False)


def resume(out, steps, **changes) -> dict:
    """Resume the run in ``out`` up to ``steps`` (None: its epochs), with options a resume may change."""
    model_config, config, payload = resume_configs(out)
    return train(model_config, replace(config, max_steps=steps, **changes), progress=False, resume=payload)


def assert_same_training_state(path_a, path_b):
    a, b = read_checkpoint(path_a), read_checkpoint(path_b)
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key]), (index, key)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def last_line_error(result) -> str:
    """A failure after training began: progress lines, then one error line, and no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("Error:")] == lines[-1:], result.output
    assert "Traceback" not in result.output
    return lines[-1]


def temp_files(folder):
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


def records(run_dir, split="train"):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


# Exact resume

@pytest.mark.parametrize("total, first", [(10, 4), (12, STEPS_PER_EPOCH)], ids=["mid-epoch", "epoch-boundary"])
def test_resumed_run_equals_uninterrupted_run(data, tmp_path, total, first):
    run(tmp_path / "straight", total)
    run(tmp_path / "split", first)
    assert read_checkpoint(tmp_path / "split")["step"] == first
    resume(tmp_path / "split", total)
    assert_same_training_state(tmp_path / "straight", tmp_path / "split")


def optimizer_setting_per_step(monkeypatch, key: str) -> list:
    """The optimizer's ``key`` ("lr", "betas") at each training step from now on, as train_step saw it."""
    seen = []

    def step_recording(model, optimizer, *args):
        seen.append(optimizer.param_groups[0][key])
        return train_step(model, optimizer, *args)

    monkeypatch.setattr(train_module, "train_step", step_recording)
    return seen


def interrupt_during_step(monkeypatch, n: int) -> None:
    """A SIGINT arrives during training step n, which finishes and is saved; wraps whatever train_step is now."""
    calls, step = [], train_module.train_step

    def step_then_signal(*args):
        calls.append(1)
        if len(calls) == n:
            signal.raise_signal(signal.SIGINT)
        return step(*args)

    monkeypatch.setattr(train_module, "train_step", step_then_signal)


def test_learning_rate_decays_once_per_epoch(data, tmp_path, monkeypatch):
    rates = optimizer_setting_per_step(monkeypatch, "lr")
    run(tmp_path, 3 * STEPS_PER_EPOCH, lr=1e-3, lr_decay=0.5)
    assert rates == [1e-3] * STEPS_PER_EPOCH + [5e-4] * STEPS_PER_EPOCH + [2.5e-4] * STEPS_PER_EPOCH


def test_cosine_schedule_falls_from_lr_to_zero_over_the_run_and_resumes_exactly(data, tmp_path, monkeypatch):
    total = 2 * STEPS_PER_EPOCH  # two epochs: the schedule spans the run's length, not the process's
    cosine = [1e-3 * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)]
    rates = optimizer_setting_per_step(monkeypatch, "lr")
    run(tmp_path / "straight", lr=1e-3, lr_schedule="cosine", epochs=2)
    assert rates == pytest.approx(cosine) and rates[0] == 1e-3 and rates[-1] < 1e-3 * 0.02
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["lr"] for r in records if r["split"] == "train"}  # each step's record: its rate
    assert logged == pytest.approx({s + 1: rate for s, rate in enumerate(cosine)})
    rates.clear()
    interrupt_during_step(monkeypatch, 5)  # stopped mid-epoch by a signal, then resumed
    with pytest.raises(Interrupted):
        run(tmp_path / "split", lr=1e-3, lr_schedule="cosine", epochs=2)
    resume(tmp_path / "split", None)
    assert rates == pytest.approx(cosine)
    assert_same_training_state(tmp_path / "straight", tmp_path / "split")


def test_cosine_restarts_give_the_rates_and_training_of_a_run_resumed_with_more_epochs(data, tmp_path, monkeypatch):
    rates = optimizer_setting_per_step(monkeypatch, "lr")
    run(tmp_path / "resumed", lr=1e-3, lr_schedule="cosine", epochs=1)  # a recipe found by resuming twice
    resume(tmp_path / "resumed", None, epochs=2)  # as `drawkit train --resume OUT --epochs 2` does
    resume(tmp_path / "resumed", None, epochs=4)
    by_resuming = list(rates)
    rates.clear()
    run(tmp_path / "restarts", lr=1e-3, lr_schedule="cosine", epochs=4, lr_restarts="1,2")  # the same in one run
    assert rates == by_resuming
    ends = [STEPS_PER_EPOCH] * STEPS_PER_EPOCH + [2 * STEPS_PER_EPOCH] * STEPS_PER_EPOCH + [4 * STEPS_PER_EPOCH] * (
        2 * STEPS_PER_EPOCH)  # the cosine each step follows: over epoch 1, over epochs 1-2, over the run
    assert rates == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * s / end)) for s, end in enumerate(ends)])
    assert rates[STEPS_PER_EPOCH] == pytest.approx(5e-4)  # the first restart rises to half the peak: cos(pi/2)
    assert_same_training_state(tmp_path / "resumed", tmp_path / "restarts")


def test_adam_beta1_reaches_the_optimizer_and_stays_on_resume(data, tmp_path, monkeypatch):
    betas = optimizer_setting_per_step(monkeypatch, "betas")
    run(tmp_path, 2, adam_beta1=0.5)
    assert read_checkpoint(tmp_path)["train_config"]["adam_beta1"] == 0.5
    resume(tmp_path, 4)
    assert betas == [(0.5, 0.999)] * 4


def test_decaying_run_resumed_mid_epoch_equals_uninterrupted_run(data, tmp_path):
    run(tmp_path / "straight", 2 * STEPS_PER_EPOCH + 2, lr_decay=0.5)
    run(tmp_path / "split", STEPS_PER_EPOCH + 2, lr_decay=0.5)
    resume(tmp_path / "split", 2 * STEPS_PER_EPOCH + 2)
    assert_same_training_state(tmp_path / "straight", tmp_path / "split")


def test_learned_canvas_starts_at_the_mean_once_and_resumes_exactly(data, tmp_path):
    learned = replace(MODEL, canvas_start="learned")
    train(learned, tiny_config(tmp_path / "straight", 8), progress=False)
    train(learned, tiny_config(tmp_path / "split", 3), progress=False)
    resume(tmp_path / "split", 8)  # a resumed run keeps its c_0: it is not set from the data again
    assert_same_training_state(tmp_path / "straight", tmp_path / "split")
    start = read_checkpoint(tmp_path / "straight")["model"]["canvas_0"]
    mean = RandomGrey().load("train", None, False).mean(0)
    assert (torch.sigmoid(start) - mean).abs().max() < 0.05  # near the mean image it started at, after 8 steps


def test_run_stopped_by_a_signal_mid_epoch_resumes_exactly(data, tmp_path, monkeypatch):
    run(tmp_path / "straight", 8)
    interrupt_during_step(monkeypatch, 3)
    with pytest.raises(Interrupted) as stopped:
        run(tmp_path / "split", 8)
    assert stopped.value.exit_code == 130
    assert read_checkpoint(tmp_path / "split")["progress"]["epoch_step"] == 3
    monkeypatch.undo()
    resume(tmp_path / "split", 8)
    assert_same_training_state(tmp_path / "straight", tmp_path / "split")


def first_step_signalled_then_slow(monkeypatch):
    """The first training step receives a SIGTERM, then takes 30 s more (as compiling can): the run must not wait."""
    calls = []

    def step(*args):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGTERM)
            time.sleep(30)
        return train_step(*args)

    monkeypatch.setattr(train_module, "train_step", step)


def test_a_stop_signal_before_the_first_step_ends_the_run_at_once(data, tmp_path, monkeypatch):
    first_step_signalled_then_slow(monkeypatch)
    started = time.perf_counter()
    with pytest.raises(Interrupted) as stopped:
        run(tmp_path, 8)
    assert time.perf_counter() - started < 20
    assert (stopped.value.exit_code, stopped.value.saved) == (143, False)
    assert not (tmp_path / "checkpoint.pt").exists() and temp_files(tmp_path) == []


def test_a_resumed_run_stopped_before_its_first_step_keeps_its_checkpoint(data, tmp_path, cli_runner, monkeypatch):
    run(tmp_path, 2)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    first_step_signalled_then_slow(monkeypatch)
    result = cli_runner.invoke(app, ["train", "--resume", str(tmp_path), "--max-steps", "8", "--no-progress"])
    assert result.exit_code == 143, result.output
    assert "stopped before the first step finished, nothing new to save; continue with " \
           f"'drawkit train --resume {tmp_path}'" in result.stderr
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_cli_resume_continues_to_the_same_parameters(data, tmp_path, cli_runner):
    straight, split = tmp_path / "straight", tmp_path / "split"
    for out, steps in ((straight, "9"), (split, "4")):
        result = cli_runner.invoke(app, ["train", *TINY, "--max-steps", steps, "--out", str(out)])
        assert result.exit_code == 0, result.output
    result = cli_runner.invoke(app, ["train", "--resume", str(split), "--max-steps", "9", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "trained 9 steps" in result.output
    assert_same_training_state(straight, split)
    assert [r["step"] for r in records(split)] == list(range(1, 10))


# --time-limit: a clean stop that a scheduler can requeue

@pytest.mark.parametrize("text, seconds", [("1h30m", 5400), ("90m", 5400), ("5400s", 5400), ("5400", 5400),
                                           ("1.5h", 5400), ("2d", 172800), ("1m 30s", 90), ("none", None)])
def test_time_limit_reads_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "0", "0s", "h", "", "-5m", "1h-30m"])
def test_time_limit_refuses_what_is_not_a_duration(text):
    with pytest.raises(DrawkitError, match="--time-limit (expects a duration|must be longer than zero)"):
        parse_duration(text)


def slow_steps(monkeypatch, seconds):
    """Each training step takes ``seconds`` longer: a time limit then falls a few steps into the run."""
    def slow(*args):
        time.sleep(seconds)
        return train_step(*args)

    monkeypatch.setattr(train_module, "train_step", slow)


def test_time_limit_stops_cleanly_saves_and_resumes_exactly(data, tmp_path, cli_runner, monkeypatch):
    straight, split = tmp_path / "straight", tmp_path / "split"
    result = cli_runner.invoke(app, ["train", *TINY, "--max-steps", "14", "--out", str(straight)])
    assert result.exit_code == 0, result.output
    slow_steps(monkeypatch, 0.3)
    result = cli_runner.invoke(app, ["train", *TINY, "--max-steps", "14", "--time-limit", "1s", "--out", str(split)])
    assert result.exit_code == 0, result.output
    saved = read_checkpoint(split)
    assert 1 <= saved["step"] < 14
    assert f"time limit 1s reached after step {saved['step']}: checkpoint saved to {split / 'checkpoint.pt'}; " \
           f"continue with: drawkit train --resume {split}" in result.output
    assert saved["train_config"]["time_limit"] == "1s"
    assert not records(split, "valid") or records(split, "valid")[-1]["step"] % STEPS_PER_EPOCH == 0  # no extra
    result = cli_runner.invoke(app, ["train", "--resume", str(split), "--no-progress"])   # the same limit again
    assert result.exit_code == 0 and "time limit 1s reached" in result.output, result.output
    assert saved["step"] < read_checkpoint(split)["step"] < 14
    monkeypatch.undo()
    result = cli_runner.invoke(app, ["train", "--resume", str(split), "--time-limit", "none", "--no-progress"])
    assert result.exit_code == 0 and "trained 14 steps" in result.output, result.output
    assert_same_training_state(straight, split)


def test_a_stop_signal_wins_over_the_time_limit(data, tmp_path, monkeypatch):
    def signal_then_step(*args):
        signal.raise_signal(signal.SIGINT)
        return train_step(*args)

    monkeypatch.setattr(train_module, "train_step", signal_then_step)
    monkeypatch.setattr(train_module.Run, "past_deadline", lambda self: True)
    with pytest.raises(Interrupted) as stopped:
        run(tmp_path / "run", 8, time_limit="1s")
    assert stopped.value.exit_code == 130


@pytest.mark.parametrize("option", [["--hidden", "16"], ["--lr", "0.01"], ["--dataset", "mnist"]])
def test_resume_refuses_changed_options(data, tmp_path, cli_runner, option):
    run(tmp_path / "run", 2)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    line = one_error_line(cli_runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), *option]))
    assert option[0] in line and "cannot change when resuming" in line
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


# Stop signals: a real `drawkit train` process

def start_training(picture_folder, out):
    command = [sys.executable, "-m", "drawkit", "train", "--dataset", "image-folder",
               "--dataset-opt", f"path={picture_folder}", "--dataset-opt", "image_size=8",
               "--dataset-opt", "grayscale=true", "--glimpses", "2", "--hidden", "8", "--z-dim", "2",
               "--read-size", "2", "--write-size", "2", "--batch-size", "4", "--epochs", "100000",
               "--val-images", "2", "--log-every", "1", "--device", "cpu", "--no-progress", "--out", str(out)]
    env = {**os.environ, "DRAWKIT_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(condition, process, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended early ({process.returncode}): {process.communicate()[1]}")
        if time.monotonic() > deadline:
            pytest.fail(f"training did not get going within {seconds:.0f} s")
        time.sleep(0.05)


def is_training(out):
    metrics = out / "metrics.jsonl"
    return metrics.is_file() and '"split": "train"' in metrics.read_text()


@pytest.fixture
def training(picture_folder, tmp_path):
    """``start() -> (process, out)``: a tiny `drawkit train` subprocess, killed if a test leaves it running."""
    processes = []

    def start():
        out = tmp_path / "run"
        processes.append(start_training(picture_folder, out))
        return processes[-1], out

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_stop_signal_saves_the_finished_step_and_says_how_to_resume(training, sig, code):
    process, out = training()
    wait_for(lambda: is_training(out), process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "Traceback" not in err
    assert f"drawkit train --resume {out}" in err
    model, payload = load_model(out / "checkpoint.pt", get_registry())
    assert payload["step"] == records(out)[-1]["step"] >= 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert temp_files(out) == []


def test_second_sigint_exits_at_once_and_keeps_the_last_checkpoint(training):
    process, out = training()
    wait_for(lambda: (out / "checkpoint.pt").is_file() and is_training(out), process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err
    _, payload = load_model(out / "checkpoint.pt", get_registry())
    assert payload["step"] >= 1


def break_second_save(monkeypatch, failure) -> None:
    """The second checkpoint save writes half a file, then ``failure()`` strikes (a signal, a full disk)."""
    real_save = torch.save
    saves = []

    def save(obj, file):
        saves.append(file)
        if len(saves) == 2:
            with open(file, "wb") as f:
                f.write(b"half a checkpoint")
            failure()
        return real_save(obj, file)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)


def test_second_sigint_during_a_save_leaves_the_previous_checkpoint(data, tmp_path, monkeypatch):
    def two_ctrl_c():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)

    break_second_save(monkeypatch, two_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, epochs=3)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["step"] == STEPS_PER_EPOCH
    assert temp_files(tmp_path) == []


# Checkpoints

@pytest.fixture
def good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model(replace(MODEL, image_shape=(1, 8, 8)), get_registry())
    (tmp_path / "good").mkdir()
    return save_checkpoint(tmp_path / "good" / "checkpoint.pt", model, plugins={}, step=1,
                           train_config={"dataset": DATASET})


def truncated(good, path):
    data = good.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def random_bytes(good, path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def foreign(good, path):
    torch.save({"state_dict": {"weight": torch.zeros(3)}, "epoch": 4}, path)


def future_version(good, path):
    payload = read_checkpoint(good)
    payload["version"] = VERSION + 1
    torch.save(payload, path)


def pickled_object(good, path):
    torch.save({"format": FORMAT, "version": VERSION, "model": RunsCode(path.parent / "code-ran")}, path)


DAMAGE = {truncated: "not a readable drawkit checkpoint", random_bytes: "not a readable drawkit checkpoint",
          foreign: "not a drawkit checkpoint", future_version: "newer drawkit",
          pickled_object: "not a readable drawkit checkpoint"}


@pytest.mark.parametrize("command", ["sample", "evaluate", "resume"])
@pytest.mark.parametrize("damage", list(DAMAGE), ids=[d.__name__ for d in DAMAGE])
def test_bad_checkpoint_is_refused_in_one_line(cli_runner, good_checkpoint, tmp_path, damage, command):
    bad = tmp_path / "bad" / "checkpoint.pt"
    bad.parent.mkdir()
    damage(good_checkpoint, bad)
    args = {"sample": ["sample", "--checkpoint", str(bad), "--out", str(tmp_path / "s.png")],
            "evaluate": ["evaluate", "--checkpoint", str(bad)],
            "resume": ["train", "--resume", str(bad.parent)]}[command]
    line = one_error_line(cli_runner.invoke(app, args))
    assert DAMAGE[damage] in line and str(bad) in line
    assert not (bad.parent / "code-ran").exists()


def test_keep_two_leaves_two_numbered_checkpoints_beside_newest_and_best(data, tmp_path):
    run(tmp_path, epochs=4, keep=2)
    names = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert names == ["best.pt", "checkpoint-00000018.pt", "checkpoint-00000024.pt", "checkpoint.pt"]
    assert read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 24
    assert temp_files(tmp_path) == []


def test_best_holds_the_lowest_validation_bound(data, tmp_path, monkeypatch):
    bounds = iter([5.0, 3.0, 4.0, 6.0])

    def scripted_bound(kind, model, x, batch_size):
        value = next(bounds)
        return {"nll_bound": value, "reconstruction": value, "kl": 0.0, "bits_per_dim": 0.0, "n_images": len(x)}

    monkeypatch.setattr(Generate, "validate", scripted_bound)  # what training validates a DRAW model with
    run(tmp_path, epochs=4)
    best = read_checkpoint(tmp_path / "best.pt")
    assert best["step"] == 2 * STEPS_PER_EPOCH
    assert best["progress"]["best_bound"] == 3.0
    assert read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4 * STEPS_PER_EPOCH
    assert [r["nll_bound"] for r in records(tmp_path, "valid")] == [5.0, 3.0, 4.0, 6.0]


def test_disk_full_while_training_keeps_the_previous_checkpoint(data, tmp_path, cli_runner, monkeypatch):
    def disk_fills_up():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    break_second_save(monkeypatch, disk_fills_up)
    result = cli_runner.invoke(app, ["train", *TINY, "--epochs", "3", "--out", str(tmp_path)])
    line = last_line_error(result)
    assert os.strerror(errno.ENOSPC) in line and "previous checkpoint" in line
    _, payload = load_model(tmp_path / "checkpoint.pt", get_registry())
    assert payload["step"] == STEPS_PER_EPOCH
    assert temp_files(tmp_path) == []


def permissions_as_for_a_user(monkeypatch):
    """Root may write anywhere: make os.access answer from the mode bits, as it does for everyone else."""
    real_access = os.access

    def access(path, mode, **options):
        if mode & os.W_OK and not os.stat(path).st_mode & stat.S_IWUSR:
            return False
        return real_access(path, mode, **options)

    monkeypatch.setattr(os, "access", access)


def test_read_only_run_folder_is_refused_and_keeps_its_checkpoint(data, tmp_path, cli_runner, monkeypatch):
    run(tmp_path, epochs=1)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    tmp_path.chmod(0o555)
    try:
        if os.access(tmp_path, os.W_OK):  # root: the refusal is simulated through the check drawkit makes
            permissions_as_for_a_user(monkeypatch)
        result = cli_runner.invoke(app, ["train", "--resume", str(tmp_path), "--epochs", "2", "--no-progress"])
    finally:
        tmp_path.chmod(0o755)
    assert "writ" in one_error_line(result)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


# Numerical faults

def nan_on_training_calls(monkeypatch, bad_calls):
    """Make Bernoulli.nll return NaN on the chosen training forward passes (1-based); validation is untouched."""
    real_nll = Bernoulli.nll
    calls = []

    def nll(self, canvas, x):
        value = real_nll(self, canvas, x)
        if torch.is_grad_enabled():
            calls.append(1)
            if bad_calls(len(calls)):
                return value * math.nan
        return value

    monkeypatch.setattr(Bernoulli, "nll", nll)


def snapshot(model, optimizer):
    params = [p.detach().clone() for p in model.parameters()]
    state = {i: {k: v.clone() for k, v in s.items()} for i, s in optimizer.state_dict()["state"].items()}
    return params, state


def assert_unchanged(model, optimizer, before):
    params, state = snapshot(model, optimizer)
    assert all(torch.equal(a, b) for a, b in zip(params, before[0]))
    assert state.keys() == before[1].keys()
    assert all(torch.equal(state[i][k], before[1][i][k]) for i in state for k in state[i])


@pytest.fixture(params=[False, True], ids=["adam", "fused adam"])
def model_and_optimizer(request):
    """The fused Adam of 'drawkit train' skips on the device; another optimizer's step is skipped by the host."""
    torch.manual_seed(0)
    model = build_model(replace(MODEL, image_shape=(1, 8, 8), likelihood="bernoulli"), get_registry())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=request.param)
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))
    assert train_step(model, optimizer, x, clip=10.0).finite
    return model, optimizer, x


def test_nan_loss_step_leaves_parameters_and_adam_state_unchanged(model_and_optimizer, monkeypatch):
    model, optimizer, x = model_and_optimizer
    before = snapshot(model, optimizer)
    monkeypatch.setattr(model.likelihood, "nll", lambda canvas, x: canvas.sum((1, 2, 3)) * math.nan)
    finite = train_step(model, optimizer, x, clip=10.0).finite
    assert not finite
    assert_unchanged(model, optimizer, before)


def test_infinite_gradient_with_finite_loss_is_skipped(model_and_optimizer):
    model, optimizer, x = model_and_optimizer
    before = snapshot(model, optimizer)
    model.decoder.weight_hh.register_hook(lambda grad: grad * math.inf)
    output, finite, _ = train_step(model, optimizer, x, clip=10.0)
    assert torch.isfinite(output.loss).all() and not finite
    assert_unchanged(model, optimizer, before)


def test_nan_losses_are_skipped_and_counted(data, tmp_path, monkeypatch):
    nan_on_training_calls(monkeypatch, lambda call: call in (3, 5))
    result = run(tmp_path, 8)
    assert result["steps"] == 8 and result["skipped_steps"] == 2
    assert [r["skipped_steps"] for r in records(tmp_path)] == [0, 0, 1, 1, 2, 2, 2, 2]
    assert read_checkpoint(tmp_path / "checkpoint.pt")["progress"]["skipped_steps"] == 2
    assert math.isfinite(records(tmp_path, "valid")[-1]["nll_bound"])


def test_cli_reports_skipped_steps(data, tmp_path, cli_runner, monkeypatch):
    nan_on_training_calls(monkeypatch, lambda call: call == 2)
    result = cli_runner.invoke(app, ["train", *TINY, "--max-steps", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "skipped 1 non-finite steps" in result.output


def test_bad_steps_in_a_row_stop_with_one_line_and_the_last_good_checkpoint(data, tmp_path, cli_runner,
                                                                           monkeypatch):
    nan_on_training_calls(monkeypatch, lambda call: call > STEPS_PER_EPOCH)
    result = cli_runner.invoke(app, ["train", *TINY, "--epochs", "5", "--out", str(tmp_path)])
    line = last_line_error(result)
    assert "10 non-finite losses in a row at step 16" in line and "--lr" in line
    model, payload = load_model(tmp_path / "checkpoint.pt", get_registry())
    assert payload["step"] == 2 * STEPS_PER_EPOCH and payload["progress"]["skipped_steps"] == STEPS_PER_EPOCH
    good = read_checkpoint(tmp_path / "best.pt")
    assert good["step"] == STEPS_PER_EPOCH
    assert all(torch.equal(value, good["model"][name]) for name, value in payload["model"].items())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_steps_below_the_limit_do_not_stop_training(data, tmp_path, monkeypatch):
    nan_on_training_calls(monkeypatch, lambda call: call in (2, 3, 5, 6))
    assert run(tmp_path, 8, max_bad_steps=3)["skipped_steps"] == 4


def test_max_bad_steps_in_a_row_stops_training(data, tmp_path, monkeypatch):
    nan_on_training_calls(monkeypatch, lambda call: call in (2, 3, 4))
    with pytest.raises(DrawkitError, match="3 non-finite losses in a row at step 4"):
        run(tmp_path, 8, max_bad_steps=3)


# The filterbank at extreme parameters

WIDTH, HEIGHT = 28, 20
EXTREMES = {  # (column of (g~x, g~y, log sigma^2, log delta~, log gamma), value) pairs
    "sigma->0": [(2, -50.0)], "sigma huge": [(2, 50.0)], "delta->0": [(3, -50.0)], "delta huge": [(3, 50.0)],
    "centre far left": [(0, -1e3)], "centre far right": [(0, 1e3)], "centre far above": [(1, -1e3)],
    "centre far below": [(1, 1e3)], "gamma tiny": [(4, -30.0)], "gamma huge": [(4, 30.0)],
    "sigma overflows exp": [(2, 100.0)], "gamma overflows exp": [(4, 100.0)],
    "all at once": [(0, 1e3), (1, -1e3), (2, -50.0), (3, 50.0), (4, 30.0)],
}


@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.parametrize("case", list(EXTREMES))
def test_filterbank_read_and_write_stay_finite_with_finite_gradients(case, size):
    params = torch.tensor([[0.1, -0.2, math.log(2.0), 0.0, 0.0]] * 2)
    for column, value in EXTREMES[case]:
        params[1, column] = value
    params.requires_grad_(True)
    window = window_from_params(params, WIDTH, HEIGHT, size)
    fx, fy = filterbank(window, WIDTH, HEIGHT)
    g = torch.Generator().manual_seed(size)
    glimpse = read_patch(torch.rand(2, 2, HEIGHT, WIDTH, generator=g), fx, fy, window.gamma)
    canvas = write_patch(torch.randn(2, 2, size, size, generator=g), fx, fy, window.gamma)
    assert torch.isfinite(glimpse).all() and torch.isfinite(canvas).all()
    (glimpse.sum() + canvas.sum()).backward()
    assert torch.isfinite(params.grad).all()


def test_model_with_extreme_windows_keeps_a_finite_loss_and_gradients(model_and_optimizer):
    model, _, x = model_and_optimizer
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        model.attention.read_params.bias.copy_(torch.tensor([1e3, -1e3, -60.0, 60.0, 40.0]))
        model.attention.write_params.bias.copy_(torch.tensor([-1e3, 1e3, 60.0, -60.0, -40.0]))
    loss = model(x).loss.mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
