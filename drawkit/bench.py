"""``drawkit bench``: how fast full training steps run (forward, backward, Adam) on this machine.

It times the very ``train_step`` that ``drawkit train`` runs, on synthetic binary images held
on the device (with random labels for ``--task classify``), so the figure is the model's cost and
not the data pipeline's.
"""
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Optional

import torch

from drawkit import training
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError, check_choice, check_positive
from drawkit.flops import matmul_shapes, peak_gflops, utilisation as product_utilisation
from drawkit.model import COMPILE_MODES, GLIMPSES_PER_CALL, DrawConfig
from drawkit.options import dataset_options
from drawkit.precision import check_native, check_precision, native_bf16, use_tf32
from drawkit.presets import preset_options
from drawkit.registry import get_registry
from drawkit.tasks import task_named
from drawkit.training import make_optimizer, train_step

MODEL_FIELDS = {f.name for f in fields(DrawConfig)}
#: the preset timed when none is named: the paper's MNIST model, or its cluttered-MNIST classifier
DEFAULT_PRESETS = {"generate": "paper-mnist", "classify": "paper-cluttered"}
BENCH_CLASSES = 10  # a classifier's classes on bench's random labels


def bench_config(preset: str, glimpses: Optional[int] = None, hidden: Optional[int] = None,
                 image_size: Optional[int] = None) -> DrawConfig:
    """The preset's model (the paper's MNIST model by default), with the sizes asked for.

    The images are the preset's data set's (100 x 100 for the cluttered-MNIST classifier), or
    ``image_size`` square ones when given.
    """
    sizes = {"glimpses": glimpses, "hidden": hidden, "image_size": image_size}
    check_positive({f"--{k.replace('_', '-')}": v for k, v in sizes.items() if v is not None})
    options = {k: v for k, v in preset_options(preset).items() if k in MODEL_FIELDS}
    options.update({k: v for k, v in sizes.items() if k in MODEL_FIELDS and v is not None})
    shape = (1, image_size, image_size) if image_size else preset_image_shape(preset)
    return DrawConfig(image_shape=shape, **options)


def preset_image_shape(preset: str) -> tuple:
    """(C, H, W) of the images the preset trains on, from its data set's factory (which loads nothing)."""
    options = preset_options(preset)
    if "dataset" not in options:
        return (1, 28, 28)
    factory = get_registry().get("dataset", options["dataset"])
    dataset = factory.create(dataset_options(options.get("dataset_opt"), options.get("image_size"),
                                             options.get("grayscale")))
    return tuple(dataset.image_shape)


def device_name(device: torch.device) -> str:
    """The processor, and on a CPU the vector instructions torch uses (AVX2, AVX512): one model name can be either."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads"


def _peak_memory_mb(device: torch.device) -> float:
    """CUDA: the most memory tensors held; CPU: the process's peak resident size (all of it)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_reference(script: str, config: DrawConfig, kind) -> None:
    if not kind.generative:
        raise DrawkitError(f"--reference times a plain DRAW script, which draws; leave it out with --task {kind.name}")
    if not Path(script).is_file():
        raise DrawkitError(f"--reference {script}: no such file; give the path of a script such as refdraw.py")
    if config.encoder != "lstm" or config.attention not in ("filterbank", "none") or config.image_shape != (1, 28, 28):
        raise DrawkitError("--reference compares DRAW's own model only: lstm encoder, filterbank or none "
                           "attention, 28 x 28 images")


def run_reference(script: str, result: dict) -> dict:
    """Time a plain DRAW script (``refdraw.py bench`` style) on the same model, batch and device.

    The script is run as ``python SCRIPT bench --glimpses T --hidden H --z Z --read R --write W
    --batch B --steps S --device D [--no-attention]`` and must print one JSON line with ``images_per_s``.
    """
    command = [sys.executable, script, "bench", "--glimpses", result["glimpses"], "--hidden", result["hidden"],
               "--z", result["z_dim"], "--read", result["read_size"], "--write", result["write_size"],
               "--batch", result["batch_size"], "--steps", result["steps"], "--device", result["device"]]
    if result["attention"] == "none":
        command.append("--no-attention")
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DrawkitError(f"--reference {script} failed (exit {done.returncode}): {last}")
    reference = json.loads(lines[-1])
    if "images_per_s" not in reference:
        raise DrawkitError(f"--reference {script} printed no images_per_s; it must print one JSON line with it")
    return reference


def _time_steps(model, optimizer, x, steps: int, device: torch.device, precision: str = "fp32") -> float:
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, x, clip=10.0, precision=precision)
    _synchronize(device)
    return time.perf_counter() - started


def step_utilisation(kind, config, x, precision: str, seconds_per_step: float, device: torch.device) -> dict:
    """How near the timed step's matrix products came to their own peak on this device (drawkit/flops.py).

    The products are counted on a fresh eager model of the same config, on the same batch: compiled
    code hides them from the counter, and the mathematics is the same. One extra step, then each
    distinct product timed alone for a few tens of milliseconds.
    """
    eager = kind.build(config, get_registry()).to(device)
    optimizer = make_optimizer(eager, lr=1e-3)
    trainable = kind.trainable(eager)
    # through drawkit.training: this step is counted, not timed, so a stand-in for the timed step leaves it alone
    products = matmul_shapes(lambda: training.train_step(trainable, optimizer, x, clip=10.0, precision=precision))
    return product_utilisation(sum(p.flops for p in products), seconds_per_step, peak_gflops(products, device))


def bench(preset: Optional[str] = None, device: str = "auto", steps: int = 10, warmup: int = 3,
          batch_size: Optional[int] = None, glimpses: Optional[int] = None, hidden: Optional[int] = None,
          image_size: Optional[int] = None, compile: bool = True, seed: int = 0,
          reference: Optional[str] = None, glimpses_per_call: int = GLIMPSES_PER_CALL, rounds: int = 1,
          compile_mode: str = "default", task: Optional[str] = None, precision: str = "fp32",
          tf32: bool = True, utilisation: bool = True) -> dict:
    """Time ``steps`` training steps after ``warmup`` untimed ones (which also pay for compiling).

    ``task``: the kind of model (default: the preset's, else generate); ``preset`` defaults to the
    kind's paper model (DEFAULT_PRESETS).

    With ``reference`` (a script like refdraw.py) it is timed next, on the same model, batch and
    device, and ``speedup`` is drawkit's images/s over the reference's. With ``rounds`` > 1 the two
    take turns that many times and the medians are reported: on a shared machine whose speed drifts,
    each ratio then compares runs seconds apart. ``precision`` bf16 times bfloat16 autocast steps (the
    reference always runs float32, so ``speedup`` then includes what bf16 gains). ``utilisation`` adds
    the step's matrix-product GFLOP and their achieved rate as a share of their peak (step_utilisation).
    """
    check_positive({"--steps": steps, "--batch-size": 1 if batch_size is None else batch_size,
                    "--glimpses-per-call": glimpses_per_call, "--rounds": rounds})
    if warmup < 0:
        raise DrawkitError(f"--warmup must be 0 or more, got {warmup}")
    check_choice("--compile-mode", compile_mode, COMPILE_MODES)
    check_precision(precision)
    use_tf32(tf32)
    kind = task_named(task or (preset_options(preset).get("task", "generate") if preset else "generate"))
    preset = preset or DEFAULT_PRESETS[kind.name]
    config = kind.from_options(bench_config(preset, glimpses, hidden, image_size), BENCH_CLASSES)
    if reference is not None:  # said before minutes of timing, not after
        check_reference(reference, config, kind)
    batch_size = batch_size or preset_options(preset).get("batch_size", 100)
    device = resolve_device(device)
    check_native(precision, device)
    torch.manual_seed(seed)
    model = kind.build(config, get_registry()).to(device)
    if compile:
        model.compile_glimpses(mode=compile_mode, glimpses_per_call=glimpses_per_call)
    optimizer = make_optimizer(model, lr=1e-3)
    x = kind.synthetic_batch(config, batch_size, device)
    trainable = kind.trainable(model)  # what train_step calls, as in training
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    warmup_s = _time_steps(trainable, optimizer, x, warmup, device, precision)
    config = model.config
    result = {
        "impl": "drawkit",
        "memory": "CUDA tensors, peak" if device.type == "cuda" else "process resident size, peak",
        "device": str(device), "device_name": device_name(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "precision": precision, "native_bf16": native_bf16(device),
        "tf32": tf32 and device.type == "cuda", "compile": compile, "compile_mode": compile_mode, "preset": preset, "batch_size": batch_size,
        "task": kind.name, "glimpses": config.glimpses, "hidden": config.hidden, "z_dim": getattr(config, "z_dim", None),
        "read_size": config.read_size, "write_size": getattr(config, "write_size", None), "attention": config.attention,
        "encoder": config.encoder, "image_size": config.image_shape[-1], "steps": steps,
        "glimpses_per_call": model.glimpses_per_call, "warmup_s": warmup_s, "rounds": [],
    }
    for _ in range(rounds):
        elapsed = _time_steps(trainable, optimizer, x, steps, device, precision)
        turn = {"images_per_s": batch_size * steps / elapsed, "s_per_step": elapsed / steps}
        if reference is not None:
            turn["reference"] = run_reference(reference, result)
            turn["speedup"] = turn["images_per_s"] / turn["reference"]["images_per_s"]
        result["rounds"].append(turn)
    turns = result["rounds"]
    result.update(_medians(turns), peak_memory_mb=_peak_memory_mb(device))
    if utilisation:  # drawkit's step only: the reference is another process
        result.update(step_utilisation(kind, config, x, precision, result["s_per_step"], device))
    if reference is not None:
        result["reference"] = {**turns[-1]["reference"], **_medians([turn["reference"] for turn in turns])}
        result["speedup"] = statistics.median([turn["speedup"] for turn in turns])
    return result


def _medians(turns: list) -> dict:
    """The median over rounds of images/s and of s/step (where a round reports it)."""
    keys = [key for key in ("images_per_s", "s_per_step") if all(key in turn for turn in turns)]
    return {key: statistics.median([turn[key] for turn in turns]) for key in keys}
