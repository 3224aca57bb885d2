"""Training in two processes on the CPU (gloo), launched by torchrun as a user would."""
import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from drawkit import distributed
from drawkit.checkpoint import read_checkpoint
from drawkit.cli import app
from drawkit.errors import DrawkitError

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this PyTorch build has no torch.distributed with the gloo backend")

STEPS = 5
# Runs `python -m drawkit` in each torchrun process, the way torchrun's own `-m drawkit` does, after
# wrapping train_step: it keeps this rank's parameters at the start and the end, makes rank 1's
# second step NaN, and can send rank 1 alone a SIGTERM after a chosen step.
LAUNCHER = '''
import os, runpy, signal, sys
import torch
import drawkit.training
from torch.nn.parallel import DistributedDataParallel

rank, folder = int(os.environ["RANK"]), sys.argv.pop(1)
stop_after = int(os.environ.get("TEST_STOP_AFTER", 0))
train_step, models = drawkit.training.train_step, []

def recording_step(model, optimizer, x, *rest):
    assert isinstance(model, DistributedDataParallel), type(model)
    models.append(model.module)
    if len(models) == 1:
        torch.save(model.module.state_dict(), f"{folder}/init-{rank}.pt")
    if rank == 1 and len(models) == 2:
        x = torch.full_like(x, float("nan"))
    result = train_step(model, optimizer, x, *rest)
    if rank == 1 and len(models) == stop_after:
        os.kill(os.getpid(), signal.SIGTERM)
    return result

drawkit.training.train_step = recording_step
try:
    runpy.run_module("drawkit", run_name="__main__", alter_sys=True)
finally:
    torch.save(models[-1].state_dict(), f"{folder}/final-{rank}.pt")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(picture_folder, folder, **env):
    """Two `drawkit train` processes of a tiny model; returns (completed process, run folder)."""
    launcher = folder / "launcher.py"
    launcher.write_text(LAUNCHER)
    out = folder / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(launcher), str(folder), "train",
               "--dataset", "image-folder", "--dataset-opt", f"path={picture_folder}", "--dataset-opt", "image_size=8",
               "--dataset-opt", "grayscale=true", "--glimpses", "2", "--hidden", "8", "--z-dim", "2",
               "--read-size", "2", "--write-size", "2", "--batch-size", "8", "--max-steps", str(STEPS),
               "--val-images", "2", "--log-every", "1", "--device", "cpu", "--no-progress", "--out", str(out)]
    env = {**os.environ, "DRAWKIT_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120), out


def rank_parameters(folder, stage):
    return [torch.load(folder / f"{stage}-{rank}.pt", weights_only=True) for rank in (0, 1)]


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_two_processes_train_one_model_and_write_one_run(picture_folder, tmp_path):
    result, out = torchrun(picture_folder, tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["run"]
    assert result.stdout.count("trained 5 steps") == 1, result.stdout  # rank 0 alone reports

    (init0, init1), (final0, final1) = rank_parameters(tmp_path, "init"), rank_parameters(tmp_path, "final")
    assert_same(init0, init1)  # same seed, and DDP broadcast rank 0's anyway
    assert_same(final0, final1)
    assert any(not torch.equal(init0[name], final0[name]) for name in init0), "training changed nothing"
    checkpoint = read_checkpoint(out)
    assert checkpoint["step"] == STEPS
    assert_same(checkpoint["model"], final0)

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))  # written once, by rank 0
    # rank 1's NaN reached rank 0 through the averaged gradients: both skipped step 2, and stayed equal
    assert [r["skipped_steps"] for r in train] == [0, 1, 1, 1, 1]
    assert "skipped 1 non-finite steps" in result.stdout


def test_a_stop_signal_on_one_rank_stops_every_rank_after_the_same_step(picture_folder, tmp_path):
    result, out = torchrun(picture_folder, tmp_path, TEST_STOP_AFTER="3")
    assert result.returncode != 0
    assert result.stderr.count("Interrupted: checkpoint saved to") == 1, result.stderr
    assert read_checkpoint(out)["step"] == 3
    final0, final1 = rank_parameters(tmp_path, "final")
    assert_same(final0, final1)


def test_distributed_flag_without_torchrun_says_how_to_launch(cli_runner, tmp_path, monkeypatch):
    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    result = cli_runner.invoke(app, ["train", "--distributed", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "torchrun --nproc_per_node" in lines[0], result.output
    assert not (tmp_path / "run").exists()


def test_batches_split_into_disjoint_equal_slices(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    batch = torch.arange(12)
    slices = []
    for rank in range(4):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        slices.append(distributed.shard(batch))
    assert torch.equal(torch.cat(slices), batch) and {len(s) for s in slices} == {3}
    with pytest.raises(DrawkitError, match="--batch-size 10 does not split evenly across 4 processes"):
        distributed.check_batch_size(10)


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo process group of this process alone, left again afterwards."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


class Signal:
    def __init__(self):
        self.requested, self.exit_code = False, 143


def agreement_events(monkeypatch, agreement, steps: int, signal_after: int):
    """Run ``agreement`` once per step (as if in a group of several), with a stop signal after ``signal_after``
    steps; returns what it answered per step and the order of its all-reduces and host reads."""
    monkeypatch.setattr(distributed, "active", lambda: True)
    events, keep = [], []
    real_all_reduce, real_item = dist.all_reduce, torch.Tensor.item

    def all_reduce(tensor, *args, **kwargs):
        keep.append(tensor)
        events.append(("reduce", tensor.data_ptr()))
        return real_all_reduce(tensor, *args, **kwargs)

    def item(tensor):
        events.append(("read", tensor.data_ptr()))
        return real_item(tensor)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(torch.Tensor, "item", item)
    flag, answers = Signal(), []
    for step in range(1, steps + 1):
        answers.append(agreement(flag))
        flag.requested = step >= signal_after
    monkeypatch.undo()
    return answers, events


def test_a_gpu_run_reads_the_stop_agreement_one_step_late(monkeypatch, one_process_group):
    answers, events = agreement_events(monkeypatch, distributed.StopAgreement(lag=1), steps=5, signal_after=2)
    reduced = [ptr for what, ptr in events if what == "reduce"]
    assert len(reduced) == 5 and len(set(reduced)) == 5
    # the host reads step s's result only after step s + 1's all-reduce is queued: never the one just queued
    assert events == [("reduce", reduced[0])] + [event for s in range(1, 5)
                                                 for event in (("reduce", reduced[s]), ("read", reduced[s - 1]))]
    assert answers == [0, 0, 0, 143, 143]  # the signal after step 2 is in step 3's all-reduce, read at step 4


def test_the_stop_agreement_is_read_late_with_nccl_and_at_once_with_gloo(monkeypatch, one_process_group):
    answers, _ = agreement_events(monkeypatch, distributed.StopAgreement(), steps=3, signal_after=1)
    assert answers == [0, 143, 143]  # gloo, on the CPU: at once, as before
    monkeypatch.setattr(dist, "get_backend", lambda *args: "nccl")
    monkeypatch.setattr(distributed, "_collective_device", lambda: torch.device("cpu"))
    agreement = distributed.StopAgreement()
    monkeypatch.setattr(distributed, "active", lambda: True)
    agreement(Signal())
    assert agreement.results.lag == 1


def test_one_process_in_a_group_trains_through_ddp(one_process_group):
    from torch.nn.parallel import DistributedDataParallel

    model = torch.nn.Linear(2, 1)
    assert isinstance(distributed.wrap(model, torch.device("cpu")), DistributedDataParallel)


def test_without_a_group_the_model_is_not_wrapped():
    model = torch.nn.Linear(2, 1)
    assert distributed.wrap(model, torch.device("cpu")) is model


def test_one_process_trains_a_compiled_model_through_ddp(picture_folder, tmp_path, monkeypatch, one_process_group):
    """DDP around compiled glimpse runs (what `torchrun --nproc_per_node=1 ... --distributed --compile` does)."""
    from torch.nn.parallel import DistributedDataParallel

    import drawkit.training as train_module
    from drawkit.model import DrawConfig

    real_step, wrappers = train_module.train_step, []

    def recording_step(model, *args):
        wrappers.append(type(model))
        return real_step(model, *args)

    monkeypatch.setattr(train_module, "train_step", recording_step)
    config = train_module.TrainConfig(
        dataset="image-folder", dataset_options={"path": str(picture_folder), "image_size": 8, "grayscale": True},
        batch_size=8, max_steps=2, val_images=4, log_every=1, device="cpu", out=str(tmp_path / "run"),
        compile=True)
    try:
        result = train_module.train(DrawConfig(glimpses=2, hidden=8, z_dim=2, read_size=2, write_size=2), config,
                                    progress=False)
    except Exception as exc:
        from test_speed_paths import compiler_missing

        if not compiler_missing(exc):
            raise
        pytest.skip(f"no working C++ compiler for torch.compile here: {' '.join(str(exc).split())[:200]}")
    assert wrappers == [DistributedDataParallel] * 2
    assert result["steps"] == 2 and math.isfinite(result["nll_bound"])
