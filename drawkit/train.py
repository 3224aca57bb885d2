"""Training: a plain function the CLI, tests and notebooks all call.

A run lives in one folder: metrics.jsonl (one JSON line per measurement), checkpoint.pt (the
newest save, with everything needed to resume exactly), the last few checkpoint-<step>.pt,
best.pt (best validation bound) and curves.png.
"""
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch

from drawkit import distributed
from drawkit.bound import variational_bound
from drawkit.checkpoint import FILENAME, CheckpointWriter, plugin_record, read_checkpoint
from drawkit.data import BINARIZE_MODES, Batches, binarize, fixed_binarization, load_split, to_unit_float
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError, check_choice, check_positive
from drawkit.interrupts import stop_requests
from drawkit.likelihoods import LIKELIHOODS
from drawkit.model import ATTENTION_ARGS, COMPILE_MODES, ENCODER_ARGS, DrawConfig, build_model, resolve_config
from drawkit.outputs import output_dir
from drawkit.progress import stderr, training_progress
from drawkit.registry import get_registry
from drawkit.rng import rng_state, seeded, set_rng_state
from drawkit.step_flags import StepFlags

VALIDATION_SEED = 0  # validation draws its own z from this seed, leaving the training stream untouched


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    dataset_options: dict = field(default_factory=dict)  # keywords for the dataset factory (--dataset-opt)
    binarize: Optional[str] = None      # None: the dataset's default (dynamic 'sample' for MNIST)
    data_dir: Optional[str] = None
    batch_size: int = 100
    epochs: int = 10
    max_steps: Optional[int] = None     # stop early after this many optimizer steps
    lr: float = 1e-3
    clip: float = 10.0                  # gradient norm clipping
    seed: int = 0
    device: str = "auto"
    out: str = "runs/draw"
    log_every: int = 50                 # steps between metrics lines (and host syncs for them)
    val_images: Optional[int] = None    # validate on the first N images of the valid split (None: all)
    keep: int = 3                       # checkpoint-<step>.pt files kept besides checkpoint.pt and best.pt
    max_bad_steps: int = 10             # non-finite losses in a row before training stops
    preset: Optional[str] = None        # the --preset the options came from, for the record
    compile: bool = False               # torch.compile runs of glimpses (speed only: the same mathematics)
    compile_mode: str = "default"       # torch.compile mode, one of COMPILE_MODES


@dataclass
class RunState:
    """Where a run is; saved in every checkpoint so a resumed run continues from the same place."""

    step: int = 0
    epoch: int = 1               # the epoch being trained
    epoch_step: int = 0          # batches of it already done
    best_bound: float = math.inf
    skipped_steps: int = 0       # steps skipped for a non-finite loss or gradient


class Interrupted(Exception):
    """A stop signal arrived; the finished step was saved."""

    def __init__(self, checkpoint: Path, exit_code: int):
        super().__init__(f"interrupted; checkpoint saved to {checkpoint}")
        self.checkpoint, self.exit_code = checkpoint, exit_code


def check_config(model_config: DrawConfig, config: TrainConfig) -> None:
    """Refuse bad values up front, with the option name and what would be accepted."""
    positive = {"--glimpses": model_config.glimpses, "--hidden": model_config.hidden, "--z-dim": model_config.z_dim,
                "--batch-size": config.batch_size, "--epochs": config.epochs, "--log-every": config.log_every,
                "--keep": config.keep, "--read-size": model_config.read_size,
                "--write-size": model_config.write_size}
    check_positive(positive)
    for option, value in {"--max-steps": config.max_steps, "--val-images": config.val_images}.items():
        if value is not None and value < 1:
            raise DrawkitError(f"{option} must be at least 1, got {value}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise DrawkitError(f"--lr must be a positive number, got {config.lr}")
    if not (config.clip > 0 and math.isfinite(config.clip)):
        raise DrawkitError(f"--clip must be a positive number, got {config.clip}")
    check_choice("--likelihood", model_config.likelihood, LIKELIHOODS)
    if config.binarize is not None:
        check_choice("--binarize", config.binarize, BINARIZE_MODES)
    check_choice("--compile-mode", config.compile_mode, COMPILE_MODES)


def prepare(model_config: DrawConfig, config: TrainConfig, registry):
    """Resolve every default (dataset's, plugins', paper's) and check the result; returns (model config, dataset)."""
    registry.get("attention", model_config.attention).check_options(model_config.attention_options, ATTENTION_ARGS)
    registry.get("encoder", model_config.encoder).check_options(model_config.encoder_options, ENCODER_ARGS)
    dataset = registry.get("dataset", config.dataset).create(config.dataset_options)
    model_config = replace(model_config, image_shape=tuple(dataset.image_shape),
                           likelihood=model_config.likelihood or getattr(dataset, "default_likelihood", "bernoulli"))
    model_config = resolve_config(model_config, registry)
    check_config(model_config, config)
    return model_config, dataset


def resume_configs(run_dir) -> tuple[DrawConfig, TrainConfig, dict]:
    """The configs and state stored in a run folder's newest checkpoint."""
    payload = read_checkpoint(run_dir)
    if "optimizer" not in payload or "progress" not in payload:
        raise DrawkitError(f"{run_dir} holds a checkpoint without training state; it cannot be resumed")
    known = TrainConfig.__dataclass_fields__
    config = TrainConfig(**{k: v for k, v in payload["train_config"].items() if k in known})
    return DrawConfig.from_dict(payload["model_config"]), config, payload


def train(model_config: DrawConfig, config: TrainConfig, progress: bool = True,
          resume: Optional[dict] = None) -> dict:
    """Train DRAW, validating each epoch; ``resume`` is a checkpoint payload to continue from."""
    registry = get_registry()
    model_config, dataset = prepare(model_config, config, registry)
    device = distributed.local_device(resolve_device(config.device))
    distributed.check_batch_size(config.batch_size)
    torch.manual_seed(config.seed)
    model = build_model(model_config, registry).to(device)  # a plugin may still refuse its options here
    mode = config.binarize or getattr(dataset, "default_binarize", "none")
    config = replace(config, binarize=mode)
    train_images = load_split(dataset, config.dataset, "train", config.data_dir).to(device)
    valid_x = fixed_binarization(load_split(dataset, config.dataset, "valid", config.data_dir)[:config.val_images],
                                 mode, seed=config.seed)
    batches = Batches(train_images, config.batch_size, config.seed)
    out = output_dir(config.out, "--out")  # only once the model and the data are there: no empty run folders
    total_steps = len(batches) * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    if config.compile:
        model.compile_glimpses(mode=config.compile_mode)
    optimizer = make_optimizer(model, config.lr)
    state = RunState()
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        state = RunState(**resume["progress"])
        set_rng_state(resume["rng"])
    distributed.own_random_stream(config.seed, state.step)
    ddp_model = distributed.wrap(model, device)  # trains; ``model`` is what is validated and saved
    main = distributed.is_main()  # the one process that writes the run folder and prints
    plugins = {kind: plugin_record(registry, kind, name) for kind, name in
               (("encoder", model_config.encoder), ("attention", model_config.attention), ("dataset", config.dataset))}
    writer = CheckpointWriter(out, config.keep)
    metrics_file = out / "metrics.jsonl"
    started = time.perf_counter()

    def log(record: dict) -> dict:
        record = {**record, "step": state.step, "epoch": state.epoch, "time_s": time.perf_counter() - started}
        if main:
            with metrics_file.open("a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    def save(best: bool = False) -> None:
        if main:
            writer.save(model, plugins, state.step, best=best, optimizer=optimizer.state_dict(),
                        progress=asdict(state), rng=rng_state(), train_config=asdict(config),
                        dataset_source=getattr(dataset, "source", None))

    last = {}
    bad_in_a_row, first_step = 0, state.step
    flags = StepFlags(device)

    def count(read_flags) -> None:
        """Count skipped steps; stop after max_bad_steps in a row (the last good checkpoint stays)."""
        nonlocal bad_in_a_row
        for step, finite in read_flags:
            if finite:
                bad_in_a_row = 0
                continue
            state.skipped_steps += 1
            bad_in_a_row += 1
            if bad_in_a_row >= config.max_bad_steps:
                raise DrawkitError(f"training diverged: {bad_in_a_row} non-finite losses in a row at step "
                                   f"{step}; the last good checkpoint is {out / FILENAME}; "
                                   f"try a lower --lr or --clip")

    with training_progress(progress and main) as bar, stop_requests() as stop:
        task = bar.add_task(f"epoch {state.epoch}", total=total_steps, completed=state.step, loss="")
        while state.step < total_steps:
            bar.update(task, description=f"epoch {state.epoch}")
            for images in batches.epoch(state.epoch, skip=state.epoch_step):
                x = binarize(to_unit_float(distributed.shard(images)), mode)
                output, finite = train_step(ddp_model, optimizer, x, config.clip)
                state.step += 1
                state.epoch_step += 1
                flags.push(state.step, finite)
                log_now = state.step % config.log_every == 0 or state.step == total_steps
                count(flags.read(everything=log_now))
                if log_now:
                    last = log(train_metrics(output, state, first_step, started))
                    bar.update(task, loss=f"{last['loss']:.1f} nats/img (rec {last['reconstruction']:.1f}, "
                                          f"kl {last['kl']:.1f})")
                bar.advance(task)
                exit_code = distributed.agreed_stop(stop)
                if exit_code:  # the step is finished: save it, then stop
                    count(flags.read(everything=True))
                    save()
                    distributed.barrier()  # torchrun stops every process once one exits: not before the save
                    raise Interrupted(out / FILENAME, exit_code)
                if state.step >= total_steps:
                    break
            count(flags.read(everything=True))
            # every rank validates on all of it, with the same model and seed: the same numbers as one
            # process, and no rank idles in a collective that could time out
            with seeded(VALIDATION_SEED, device):
                bound = variational_bound(model, valid_x, config.batch_size)
            last = log({"split": "valid", **bound})
            if main:
                stderr.print(f"epoch {state.epoch}: validation bound {bound['nll_bound']:.2f} nats/image "
                             f"(rec {bound['reconstruction']:.2f}, kl {bound['kl']:.2f})")
            improved = bound["nll_bound"] < state.best_bound
            state.best_bound = min(state.best_bound, bound["nll_bound"])
            if state.epoch_step == len(batches):
                state.epoch, state.epoch_step = state.epoch + 1, 0
            save(best=improved)
    if main:
        from drawkit.curves import curves_after_training  # matplotlib is optional: a hint, not a failure
        curves_after_training(out)
    return {**last, "checkpoint": str(out / FILENAME), "steps": state.step, "device": str(device),
            "skipped_steps": state.skipped_steps}


def make_optimizer(model, lr: float) -> torch.optim.Adam:
    """Adam, fused where the device has the kernel: it can then skip a non-finite step on the device."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except RuntimeError:  # no fused kernel for this device or dtype
        return torch.optim.Adam(model.parameters(), lr=lr)


def train_step(model, optimizer, x: torch.Tensor, clip: float):
    """One Adam step on the mean negative bound; a non-finite loss or gradient skips the update.

    Returns the output and whether the step was finite, as a 0-dim tensor on the device. With fused
    Adam the skip happens on the device too (its ``found_inf``), so nothing here waits for the step.
    Under DDP ``model`` is the wrapper: backward averages the gradients over ranks, so every rank
    sees the same norm (a NaN on one rank reaches all) and all skip or step together.
    """
    torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs (--compile-mode reduce-overhead): a new step
    output = model(x)
    loss = output.loss.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    finite = torch.isfinite(grad_norm)  # NaN or inf in the loss shows up here too
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = (~finite).float()  # fused Adam leaves parameters and state as they were
        optimizer.step()
    elif finite:  # any other optimizer: the host waits for the step to decide
        optimizer.step()
    return output, finite


def train_metrics(output, state: RunState, first_step: int, started: float) -> dict:
    rec, kl = distributed.mean_over_ranks(output.reconstruction.mean(), output.kl.sum(1).mean())
    return {"split": "train", "loss": rec + kl, "reconstruction": rec, "kl": kl,
            "steps_per_s": (state.step - first_step) / max(time.perf_counter() - started, 1e-9),
            "skipped_steps": state.skipped_steps}
