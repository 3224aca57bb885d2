"""Training: a plain function the CLI, tests and notebooks all call.

A run lives in one folder: metrics.jsonl (one JSON line per measurement), checkpoint.pt (the
newest save, with everything needed to resume exactly), the last few checkpoint-<step>.pt,
best.pt (best validation score: DRAW's bound, a classifier's error rate) and curves.png.
What differs between the kinds of model (``--task``) is asked of the kind (drawkit/tasks.py).
"""
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

import torch

from drawkit import distributed, tensorboard_log
from drawkit.checkpoint import FILENAME, CheckpointWriter, check_parts, plugin_record, read_checkpoint
from drawkit.data import BINARIZE_MODES, Batches
from drawkit.devices import resolve_device
from drawkit.durations import parse_duration
from drawkit.presets import preset_setting
from drawkit.precision import autocast, check_native, check_precision, use_tf32
from drawkit.errors import DrawkitError, check_choice, check_positive
from drawkit.interrupts import stop_requests
from drawkit.model import ATTENTION_ARGS, COMPILE_MODES, ENCODER_ARGS
from drawkit.outputs import output_dir
from drawkit.progress import stderr, training_progress
from drawkit.registry import get_registry
from drawkit.rng import rng_state, seeded, set_rng_state
from drawkit.schedule import check_restarts, check_schedule, learning_rate, parse_restarts
from drawkit.step_flags import StepFlags
from drawkit.tasks import task_named, task_of

VALIDATION_SEED = 0  # validation draws its own z from this seed, leaving the training stream untouched
TIME_UP = 1  # the agreed stop code of a time limit: below any signal's (130, 143), so a signal wins


@dataclass
class TrainConfig:
    task: str = "generate"              # the kind of model: generate (DRAW) or classify (section 4.1), see tasks.py
    dataset: str = "mnist"
    dataset_options: dict = field(default_factory=dict)  # keywords for the dataset factory (--dataset-opt)
    binarize: Optional[str] = None      # None: the task's default (generate: the dataset's; classify: none)
    data_dir: Optional[str] = None
    batch_size: int = 100
    epochs: int = 10
    max_steps: Optional[int] = None     # stop early after this many optimizer steps
    lr: float = 1e-3
    lr_decay: float = 1.0               # learning rate of epoch e: lr * lr_decay ** (e - 1); 1: constant
    lr_schedule: str = "decay"          # decay (by lr_decay per epoch) | cosine (to 0 over the run): schedule.py
    lr_restarts: Optional[str] = None   # cosine: "180,340", the epochs where earlier cosines end (warm restarts)
    clip: float = 10.0                  # gradient norm clipping
    adam_beta1: float = 0.9             # Adam's first-moment decay (one public DRAW port trained with 0.5)
    kl_warmup: int = 0                  # DRAW: the KL's weight in the training objective rises 0 -> 1 over these steps
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
    time_limit: Optional[str] = None    # stop cleanly after this wall time ("1h30m"), counted from each start
    precision: str = "fp32"             # fp32 | bf16: the matrix products' number format (precision.py)
    tf32: bool = True                   # CUDA: TF32 for float32 matrix products
    tensorboard: bool = False           # also write OUT/tensorboard/ for TensorBoard (tensorboard_log.py)


@dataclass
class RunState:
    """Where a run is; saved in every checkpoint so a resumed run continues from the same place."""

    step: int = 0
    epoch: int = 1               # the epoch being trained
    epoch_step: int = 0          # batches of it already done
    best_bound: float = math.inf  # the lowest validation score so far: the task's ``score`` (bound, error rate)
    skipped_steps: int = 0       # steps skipped for a non-finite loss or gradient


class Step(NamedTuple):
    """What one training step gives back; the tensors stay on the device until someone reads them."""

    output: object            # the model's output for the batch (its ``loss`` per image)
    finite: torch.Tensor      # 0-dim bool: the loss and gradient were finite, so the update was taken
    grad_norm: torch.Tensor   # 0-dim: the gradient's norm before clipping (at the clip or above: clipped)


class Interrupted(Exception):
    """A stop signal arrived; the finished step was saved, or (``saved`` False) none had finished yet."""

    def __init__(self, checkpoint: Path, exit_code: int, saved: bool = True):
        self.checkpoint, self.exit_code, self.saved = checkpoint, exit_code, saved
        #: what happened to the run folder, for the command line's and the Python API's messages
        self.what = (f"checkpoint saved to {checkpoint}" if saved else "stopped before the first step finished, "
                     + ("nothing new to save" if self.resumable else "nothing saved"))
        super().__init__(f"interrupted; {self.what}")

    @property
    def resumable(self) -> bool:
        """A checkpoint is there to resume from (none when a new run stopped before its first step)."""
        return self.checkpoint.is_file()


def check_config(model_config, config: TrainConfig, kind) -> None:
    """Refuse bad values up front, with the option name and what would be accepted."""
    kind.check(model_config)
    check_positive({"--batch-size": config.batch_size, "--epochs": config.epochs, "--log-every": config.log_every,
                    "--keep": config.keep})
    for option, value in {"--max-steps": config.max_steps, "--val-images": config.val_images}.items():
        if value is not None and value < 1:
            raise DrawkitError(f"{option} must be at least 1, got {value}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise DrawkitError(f"--lr must be a positive number, got {config.lr}")
    if not 0 < config.lr_decay <= 1:
        raise DrawkitError(f"--lr-decay must be above 0 and at most 1 (1: a constant rate), got {config.lr_decay}")
    check_schedule(config.lr_schedule, config.lr_decay, preset_setting(config.preset, "lr_schedule"))
    check_restarts(config.lr_restarts, config.lr_schedule, config.epochs, preset_setting(config.preset, "lr_restarts"))
    if config.kl_warmup < 0:
        raise DrawkitError(f"--kl-warmup must be 0 (off) or a number of steps, got {config.kl_warmup}")
    if config.kl_warmup and not kind.generative:
        raise DrawkitError("--kl-warmup weighs DRAW's KL term; a classifier (--task classify) has none: leave it out")
    if not 0 <= config.adam_beta1 < 1:
        raise DrawkitError(f"--adam-beta1 must be at least 0 and below 1 (Adam's default: 0.9), got {config.adam_beta1}")
    if not (config.clip > 0 and math.isfinite(config.clip)):
        raise DrawkitError(f"--clip must be a positive number, got {config.clip}")
    if config.binarize is not None:
        check_choice("--binarize", config.binarize, BINARIZE_MODES)
    check_choice("--compile-mode", config.compile_mode, COMPILE_MODES)
    parse_duration(config.time_limit)
    check_precision(config.precision)


def prepare(model_config, config: TrainConfig, registry, kind):
    """Resolve every default (dataset's, plugins', paper's) and check the result; returns (model config, dataset).

    ``model_config`` is `drawkit train`'s model options (a DrawConfig) or a resumed run's model config;
    the kind turns it into its own config.
    """
    registry.get("attention", model_config.attention).check_options(model_config.attention_options, ATTENTION_ARGS)
    registry.get("encoder", model_config.encoder).check_options(model_config.encoder_options, ENCODER_ARGS)
    dataset = registry.get("dataset", config.dataset).create(config.dataset_options)
    model_config = kind.configure(model_config, dataset, config.dataset, registry)
    check_config(model_config, config, kind)
    return model_config, dataset


def resume_configs(run_dir) -> tuple[object, TrainConfig, dict]:
    """The configs (the model's of its kind) and state stored in a run folder's newest checkpoint.

    Its encoder, attention and data set must come from the packages that supplied them (check_parts):
    a missing or swapped one is refused in one line, another version of the same package warned about.
    """
    payload = read_checkpoint(run_dir)
    if payload.get("exported"):
        raise DrawkitError(f"{run_dir} was written by 'drawkit export' and holds only the model, no training state; "
                           f"it cannot be resumed: resume the run folder it was exported from")
    if "optimizer" not in payload or "progress" not in payload:
        raise DrawkitError(f"{run_dir} holds a checkpoint without training state; it cannot be resumed")
    kind = task_of(payload["model_config"])
    known = TrainConfig.__dataclass_fields__
    config = TrainConfig(**{k: v for k, v in payload["train_config"].items() if k in known})
    model_config = kind.config_from_dict(payload["model_config"])
    check_parts(payload, get_registry(), {"encoder": model_config.encoder, "attention": model_config.attention,
                                          "dataset": config.dataset})
    return model_config, replace(config, task=kind.name), payload


def train(model_config, config: TrainConfig, progress: bool = True, resume: Optional[dict] = None) -> dict:
    """Train the kind of model ``config.task`` names, validating each epoch; ``resume`` is a checkpoint payload.

    ``model_config``: a DrawConfig of `drawkit train`'s model options, or the model config of the
    run being resumed (``resume_configs``).
    """
    if config.tensorboard:
        tensorboard_log.check_installed()  # before anything is loaded or written
    started = time.perf_counter()  # a --time-limit counts from here: loading data and compiling take job time too
    registry = get_registry()
    kind = task_named(config.task)
    model_config, dataset = prepare(model_config, config, registry, kind)
    device = distributed.local_device(resolve_device(config.device))
    check_native(config.precision, device)
    use_tf32(config.tf32)
    distributed.check_batch_size(config.batch_size)
    torch.manual_seed(config.seed)
    model = kind.build(model_config, registry).to(device)  # a plugin may still refuse its options here
    config = replace(config, binarize=config.binarize or kind.default_binarize(dataset))
    batches, valid = kind.load_data(dataset, config, device)
    if resume is None:
        kind.start(model, batches, config)  # e.g. a learned c_0 at the data's mean image
    out = output_dir(config.out, "--out")  # only once the model and the data are there: no empty run folders
    plugins = {part: plugin_record(registry, part, name) for part, name in
               (("encoder", model_config.encoder), ("attention", model_config.attention), ("dataset", config.dataset))}
    run = Run(model, kind, config, dataset, batches, valid, out, device, plugins, resume, started)
    with tensorboard_log.for_run(config.tensorboard, run.main, out, kind, config.batch_size, run.state.step) as log:
        run.tensorboard = log
        return run.run(progress)


class Run:
    """One training run: the model, its optimizer, where the run is (``state``) and the folder it writes.

    ``model`` is what is validated and saved; ``ddp_model`` (the same model as the kind trains it,
    ``kind.trainable(model)``, wrapped in DDP when training joined a process group) takes the training steps. Only the main process writes files and
    prints, but every process goes through every step, log and validation: they hold collectives
    that all processes must join.
    """

    def __init__(self, model, kind, config: TrainConfig, dataset, batches: Batches, valid, out: Path,
                 device: torch.device, plugins: dict, resume: Optional[dict] = None,
                 started: Optional[float] = None):
        self.model, self.kind, self.config, self.dataset = model, kind, config, dataset
        self.batches, self.valid = batches, valid  # valid: what kind.validate measures (images, or images and labels)
        self.out, self.device, self.plugins = out, device, plugins
        self.total_steps = len(batches) * config.epochs
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.restart_steps = tuple(epoch * len(batches) for epoch in parse_restarts(config.lr_restarts))
        if config.compile:
            model.compile_glimpses(mode=config.compile_mode)
        self.optimizer = make_optimizer(model, config.lr, config.adam_beta1)
        self.state = RunState()
        if resume is not None:
            self.restore(resume)
        distributed.own_random_stream(config.seed, self.state.step)
        self.ddp_model = distributed.wrap(kind.trainable(model), device)
        self.main = distributed.is_main()  # the one process that writes the run folder and prints
        self.writer = CheckpointWriter(out, config.keep)
        self.metrics_file = out / "metrics.jsonl"
        self.started = time.perf_counter()  # for time_s and steps_per_s, with first_step
        self.first_step = self.state.step
        self.flags = StepFlags(device)
        self.agreed_stop = distributed.StopAgreement()  # a stop signal on any process, agreed on by all
        self.non_finite = NonFiniteSteps(config.max_bad_steps, out / FILENAME)
        limit = parse_duration(config.time_limit)
        self.deadline = None if limit is None else (started or self.started) + limit
        self.time_up = False  # the time limit was reached and the run saved: stop without validating
        self.last = {}  # the newest metrics record, returned at the end
        self.tensorboard = tensorboard_log.NoLog()  # train() sets TensorBoard's with --tensorboard

    def restore(self, payload: dict) -> None:
        """Pick up from a checkpoint: the model, the optimizer, where the run was, and the random streams."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = RunState(**payload["progress"])
        set_rng_state(payload["rng"])

    def run(self, progress: bool) -> dict:
        """Epoch by epoch until ``total_steps``, validating and saving after each; returns the summary."""
        with training_progress(progress and self.main) as bar, stop_requests() as stop:
            self.bar = bar  # train_epoch and log_training move it on
            self.task = bar.add_task(f"epoch {self.state.epoch}", total=self.total_steps, completed=self.state.step,
                                     loss="")
            stop.at_once = True  # until this process's first step is done, the checkpoint on disk is the run
            try:
                while self.state.step < self.total_steps and not self.time_up:
                    self.bar.update(self.task, description=f"epoch {self.state.epoch}")
                    self.train_epoch(stop)
                    if not self.time_up:
                        self.end_epoch()
            except KeyboardInterrupt:
                if not (stop.at_once and stop.requested):
                    raise
                raise Interrupted(self.out / FILENAME, stop.exit_code, saved=False) from None
        if self.main:
            from drawkit.curves import curves_after_training  # matplotlib is optional: a hint, not a failure
            curves_after_training(self.out)
        return {**self.last, "checkpoint": str(self.out / FILENAME), "steps": self.state.step,
                "device": str(self.device), "skipped_steps": self.state.skipped_steps, "time_up": self.time_up}

    def train_epoch(self, stop) -> None:
        """The rest of the current epoch (a resumed run starts mid-epoch), or less if the run ends first."""
        for batch in self.batches.epoch(self.state.epoch, skip=self.state.epoch_step):
            step = self.step(batch)
            stop.at_once = False  # a finished step: from now on a stop signal saves it first
            log_now = self.state.step % self.config.log_every == 0 or self.state.step == self.total_steps
            self.count_non_finite(everything=log_now)  # a log waits for the step anyway: read every flag then
            if log_now:
                self.log_training(step)
            self.bar.advance(self.task)
            self.stop_if_requested(stop)
            if self.state.step >= self.total_steps or self.time_up:
                break
        self.count_non_finite(everything=True)

    def step(self, batch):
        """One optimizer step on this process's share of a batch; its finite flag is queued, not waited for."""
        x = self.kind.batch(batch, self.config.binarize)
        c = self.config
        rate = learning_rate(c.lr_schedule, c.lr, c.lr_decay, self.state.step, self.state.epoch, self.total_steps,
                             self.restart_steps)
        for group in self.optimizer.param_groups:  # a function of where the run is: a resumed run gets the same
            group["lr"] = rate
        step = train_step(self.ddp_model, self.optimizer, x, self.config.clip, self.config.precision,
                          kl_weight(self.state.step + 1, self.config.kl_warmup))
        self.state.step += 1
        self.state.epoch_step += 1
        self.flags.push(self.state.step, step.finite)
        return step

    def count_non_finite(self, everything: bool) -> None:
        """Add the skipped steps among the flags read so far (``everything``: wait for all of them)."""
        self.state.skipped_steps += self.non_finite.count(self.flags.read(everything=everything))

    def stop_if_requested(self, stop) -> None:
        """After a stop signal on any process: save the finished step, then raise Interrupted everywhere.

        Past the time limit on any process: save the finished step and set ``time_up``, a clean end.
        """
        exit_code = self.agreed_stop(stop if stop.requested or not self.past_deadline() else TimeUp)
        if exit_code:
            self.count_non_finite(everything=True)
            self.save()
            distributed.barrier()  # torchrun stops every process once one exits: not before the save
            if exit_code == TIME_UP:
                self.time_up = True
                return
            raise Interrupted(self.out / FILENAME, exit_code)

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def end_epoch(self) -> None:
        """Validate, note the best score, move on if the epoch is complete (not if max_steps cut it), save."""
        score = self.validate()[self.kind.score]
        improved = score < self.state.best_bound
        self.state.best_bound = min(self.state.best_bound, score)
        if self.state.epoch_step == len(self.batches):
            self.state.epoch, self.state.epoch_step = self.state.epoch + 1, 0
        self.save(best=improved)

    def validate(self) -> dict:
        """The kind's measures on the validation data (the bound; a classifier's error rate), logged and printed.

        Every process validates on all of it, with the same model and seed: the same numbers as one
        process, and no process idles in a collective that could time out.
        """
        with seeded(VALIDATION_SEED, self.device):
            measures = self.kind.validate(self.model, self.valid, self.config.batch_size)
        record = self.log({"split": "valid", **measures})
        self.tensorboard.validation(record, self.model, self.valid)
        if self.main:
            stderr.print(f"epoch {self.state.epoch}: {self.kind.validation_text(measures)}", soft_wrap=True)
        return measures

    def log_training(self, step: Step) -> None:
        """Log the training loss of this step's batch (averaged over processes) and show it on the bar.

        grad_norm is the step's gradient norm before clipping: it shows whether --clip binds, and the
        spikes that can throw a run back (docs/results.md, the 8-glimpse classifier's collapses).
        """
        record = self.log({**train_metrics(step.output, self.kind, self.state, self.first_step, self.started),
                           "precision": self.config.precision,
                           "lr": self.optimizer.param_groups[0]["lr"],  # this step's rate, for runs with a schedule
                           "grad_norm": step.grad_norm.item()})
        self.tensorboard.training(record, step.output)
        self.bar.update(self.task, loss=self.kind.progress_text(record))

    def log(self, record: dict) -> dict:
        """Add the step, epoch and time to ``record``, append it to metrics.jsonl and keep it as ``last``.

        time_s counts from this process's start, and start_step is the step it started from, which
        tells a resumed run's records from the ones before them (curves.training_time).
        """
        record = {**record, "step": self.state.step, "epoch": self.state.epoch,
                  "time_s": time.perf_counter() - self.started, "start_step": self.first_step}
        if self.main:
            with self.metrics_file.open("a") as f:
                f.write(json.dumps(record) + "\n")
        self.last = record
        return record

    def save(self, best: bool = False) -> None:
        """A checkpoint with everything needed to resume exactly: optimizer, progress, random streams."""
        if self.main:
            self.writer.save(self.model, self.plugins, self.state.step, best=best,
                             optimizer=self.optimizer.state_dict(), progress=asdict(self.state), rng=rng_state(),
                             train_config=asdict(self.config), dataset_source=getattr(self.dataset, "source", None))


class TimeUp:
    """What the stop agreement reads when this process is past the time limit (a StopFlag's two fields)."""

    requested = True
    exit_code = TIME_UP


class NonFiniteSteps:
    """Counts steps with a non-finite loss or gradient, and stops a run that has diverged.

    train_step skips such a step, so a few are harmless; ``limit`` of them in a row means the run
    has diverged. It stops then, pointing at the last good checkpoint (the skipped steps were
    never saved over it).
    """

    def __init__(self, limit: int, last_good: Path):
        self.limit, self.last_good = limit, last_good
        self.in_a_row = 0

    def count(self, flags: Iterable[tuple[int, bool]]) -> int:
        """How many of these (step, finite) flags were non-finite; DrawkitError at ``limit`` in a row."""
        skipped = 0
        for step, finite in flags:
            if finite:
                self.in_a_row = 0
                continue
            skipped += 1
            self.in_a_row += 1
            if self.in_a_row >= self.limit:
                raise DrawkitError(f"training diverged: {self.in_a_row} non-finite losses in a row at step "
                                   f"{step}; the last good checkpoint is {self.last_good}; "
                                   f"try a lower --lr or --clip")
        return skipped


def make_optimizer(model, lr: float, beta1: float = 0.9) -> torch.optim.Adam:
    """Adam, fused where the device has the kernel: it can then skip a non-finite step on the device."""
    betas = (beta1, 0.999)
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, betas=betas, fused=True)
    except RuntimeError:  # no fused kernel for this device or dtype
        return torch.optim.Adam(model.parameters(), lr=lr, betas=betas)


def kl_weight(step: int, warmup: int) -> float:
    """The KL's weight in the objective of training step ``step`` (1-based): step / warmup, then 1.

    A weight below 1 lets the encoder send information before the KL's full price is due, the usual
    way out of the first plateau where the posterior carries almost nothing. Only the gradient's
    objective changes: metrics, validation and evaluate always report the full bound.
    """
    return 1.0 if warmup <= 0 else min(1.0, step / warmup)


def train_step(model, optimizer, x, clip: float, precision: str = "fp32", kl_weight: float = 1.0) -> Step:
    """One Adam step on the mean of ``model(x).loss``; a non-finite loss or gradient skips the update.

    ``precision`` bf16 runs the forward pass under bfloat16 autocast (precision.py); the loss, and so
    the backward pass's starting point, the gradients and the update, stay float32.

    ``model(x).loss`` is the negative bound per image for DRAW, the cross-entropy per image for a
    classifier (``kind.trainable(model)``, with x = (images, labels)).

    Returns a Step: the output, and as 0-dim tensors on the device whether the step was finite and the
    gradient norm before clipping. With fused Adam the skip happens on the device too (its
    ``found_inf``), so nothing here waits for the step.
    Under DDP ``model`` is the wrapper: backward averages the gradients over ranks, so every rank
    sees the same norm (a NaN on one rank reaches all) and all skip or step together.
    """
    optimizer.zero_grad(set_to_none=True)  # before the forward: the last step's gradients are freed for it
    torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs (--compile-mode reduce-overhead): a new step
    with autocast(precision, next(model.parameters()).device):
        output = model(x)
    loss = output.loss.mean() if kl_weight == 1.0 else (output.reconstruction + kl_weight * output.kl.sum(1)).mean()
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    finite = torch.isfinite(grad_norm)  # NaN or inf in the loss shows up here too
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = (~finite).float()  # fused Adam leaves parameters and state as they were
        optimizer.step()
    elif finite:  # any other optimizer: the host waits for the step to decide
        optimizer.step()
    return Step(output, finite, grad_norm)


def train_metrics(output, kind, state: RunState, first_step: int, started: float) -> dict:
    return {"split": "train", **kind.train_metrics(output),
            "steps_per_s": (state.step - first_step) / max(time.perf_counter() - started, 1e-9),
            "skipped_steps": state.skipped_steps}

