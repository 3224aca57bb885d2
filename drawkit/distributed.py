"""Training in several processes with DistributedDataParallel, launched by torchrun.

torchrun starts one process per GPU (or several on a CPU) and tells each its RANK, LOCAL_RANK
and WORLD_SIZE; `drawkit train` joins them into one process group. Every rank holds the whole
data set and walks the same shuffled order; each global batch of --batch-size images is split
evenly, every rank trains on its own slice and DDP averages the gradients, so a step means what
it means in one process and a run can resume with another number of processes. Rank 0 alone
writes the run folder and prints. Outside torchrun these functions leave training as it was.
"""
import os
from contextlib import contextmanager
from typing import Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError
from drawkit.step_flags import StepFlags

LAUNCH = "torchrun --nproc_per_node=N -m drawkit train ..."
TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """torchrun with more than one process: training joins the group even without --distributed."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """The one process that writes files and prints."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """cuda:LOCAL_RANK for each torchrun process on a GPU machine; ``device`` itself otherwise."""
    if device.type != "cuda" or "LOCAL_RANK" not in os.environ:
        return device
    local = int(os.environ["LOCAL_RANK"])
    if local >= torch.cuda.device_count():
        raise DrawkitError(f"torchrun started process {local} on a machine with {torch.cuda.device_count()} "
                           f"GPU(s); use --nproc_per_node={torch.cuda.device_count()} or fewer")
    return torch.device("cuda", local)


def _backend(device: torch.device) -> str:
    backend, available = ("nccl", dist.is_nccl_available) if device.type == "cuda" else ("gloo", dist.is_gloo_available)
    if not available():
        raise DrawkitError(f"this PyTorch build has no {backend} backend for training on {device.type} "
                           f"in several processes; run one process, or install a PyTorch build with {backend}")
    return backend


@contextmanager
def session(requested: bool, device_name: str):
    """Join torchrun's process group when asked to (or launched by torchrun) and leave it afterwards."""
    if not (requested or launched_by_torchrun()) or (dist.is_available() and dist.is_initialized()):
        yield  # one process, or the caller set up the group itself
        return
    if not dist.is_available():
        raise DrawkitError("this PyTorch build has no torch.distributed; train in one process, or install "
                           "a PyTorch build with it")
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise DrawkitError(f"--distributed needs the environment torchrun sets ({', '.join(missing)} missing); "
                           f"launch with '{LAUNCH}'")
    device = resolve_device(device_name)
    backend = _backend(device)
    if backend == "nccl":
        device = local_device(device)
        torch.cuda.set_device(device)
    dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def check_batch_size(batch_size: int) -> None:
    if batch_size % world_size():
        raise DrawkitError(f"--batch-size {batch_size} does not split evenly across {world_size()} processes; "
                           f"use a multiple of {world_size()}")


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a global batch: disjoint, equal-sized, so DDP's gradient mean is the batch mean."""
    size = len(batch) // world_size()
    return batch[rank() * size:(rank() + 1) * size]


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around ``model`` for training steps; it broadcasts rank 0's parameters, then averages gradients.

    Whenever a process group is there, even of one process (``torchrun --nproc_per_node=1`` with
    --distributed): a run of one process then trains as the ranks of a larger one do, DDP (and DDP
    with --compile) included.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def own_random_stream(seed: int, step: int) -> None:
    """Ranks other than 0 reseed, so their binarization and z draws differ from rank 0's.

    Rank 0 keeps its stream, the one checkpoints record; ``step`` makes a resumed run draw anew.
    """
    if rank() > 0:
        torch.manual_seed(seed + 1_000_003 * rank() + step)


def barrier() -> None:
    if active():
        dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def mean_over_ranks(*values: torch.Tensor) -> list[float]:
    """Per-rank scalars averaged over ranks: over equal shards, the value for the global batch."""
    stacked = torch.stack([value.detach().float() for value in values])
    if active():
        stacked = stacked.to(_collective_device())
        dist.all_reduce(stacked)
        stacked /= world_size()
    return stacked.tolist()


class StopAgreement:
    """The exit code of a stop signal any rank received (0: none), so every rank stops after the same step.

    Called once per step. Each call queues one all-reduce (the max of the ranks' codes). On a GPU
    (nccl) its result is read one step late, as the step flags are: the host never waits for the step
    it has just queued, and since every rank reads the same step's result at the same step, all stop
    after the same step, one step after the signal. On the CPU (gloo) the all-reduce waits anyway and
    there is nothing to overlap: the result is read at once.
    """

    def __init__(self, lag: Optional[int] = None):
        self.lag = lag  # None: 1 with nccl, 0 otherwise
        self.results = None  # StepFlags of the all-reduced codes, made at the first call inside a group
        self.calls = 0

    def __call__(self, flag) -> int:
        code = flag.exit_code if flag.requested else 0
        if not active():
            return code
        device = _collective_device()
        if self.results is None:
            lag = self.lag if self.lag is not None else (1 if dist.get_backend() == "nccl" else 0)
            self.results = StepFlags(device, lag=lag)
        agreed = torch.full((1,), code, dtype=torch.int64, device=device)  # a fill: no copy the host waits for
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        self.calls += 1
        self.results.push(self.calls, agreed[0])
        return max((value for _, value in self.results.read()), default=0)
