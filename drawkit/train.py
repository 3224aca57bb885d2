"""Training: a plain function the CLI, tests and notebooks all call."""
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from drawkit.bound import variational_bound
from drawkit.checkpoint import FILENAME, plugin_record, save_checkpoint
from drawkit.data import BINARIZE_MODES, Batches, binarize, fixed_binarization, load_split, to_unit_float
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError
from drawkit.interrupts import stop_requests
from drawkit.model import DrawConfig, build_model, resolve_config
from drawkit.outputs import output_dir
from drawkit.progress import stderr, training_progress
from drawkit.registry import get_registry


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
    log_every: int = 50                 # steps between metrics lines (and host syncs)
    val_images: Optional[int] = None    # validate on the first N images of the valid split (None: all)


class Interrupted(Exception):
    """Ctrl-C during training, after the checkpoint was saved."""

    def __init__(self, checkpoint: Path):
        super().__init__(f"interrupted; checkpoint saved to {checkpoint}")
        self.checkpoint = checkpoint


def check_config(model_config: DrawConfig, config: TrainConfig, registry) -> DrawConfig:
    """Refuse bad values up front, with the option name and what would be accepted; returns the resolved config."""
    for kind in ("encoder", "attention"):
        registry.get(kind, getattr(model_config, kind))
    registry.get("dataset", config.dataset)
    model_config = resolve_config(model_config, registry)
    positive = {"--glimpses": model_config.glimpses, "--hidden": model_config.hidden, "--z-dim": model_config.z_dim,
                "--batch-size": config.batch_size, "--epochs": config.epochs, "--log-every": config.log_every}
    if model_config.attention != "none":
        positive.update({"--read-size": model_config.read_size, "--write-size": model_config.write_size})
    for option, value in positive.items():
        if value < 1:
            raise DrawkitError(f"{option} must be a positive whole number, got {value}")
    for option, value in {"--max-steps": config.max_steps, "--val-images": config.val_images}.items():
        if value is not None and value < 1:
            raise DrawkitError(f"{option} must be at least 1, got {value}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise DrawkitError(f"--lr must be a positive number, got {config.lr}")
    if not config.clip > 0:
        raise DrawkitError(f"--clip must be a positive number, got {config.clip}")
    if config.binarize is not None and config.binarize not in BINARIZE_MODES:
        raise DrawkitError(f"unknown --binarize '{config.binarize}'; choose one of: {', '.join(BINARIZE_MODES)}")
    return model_config


def train(model_config: DrawConfig, config: TrainConfig, progress: bool = True) -> dict:
    """Train DRAW, validating each epoch; returns the last metrics and the checkpoint path."""
    registry = get_registry()
    model_config = check_config(model_config, config, registry)
    device = resolve_device(config.device)
    out = output_dir(config.out, "--out")
    torch.manual_seed(config.seed)

    dataset = registry.get("dataset", config.dataset).create(config.dataset_options)
    mode = config.binarize or getattr(dataset, "default_binarize", "none")
    train_images = load_split(dataset, config.dataset, "train", config.data_dir).to(device)
    valid_images = load_split(dataset, config.dataset, "valid", config.data_dir)[:config.val_images]
    valid_x = fixed_binarization(valid_images, mode, seed=config.seed)
    model_config.image_shape = tuple(dataset.image_shape)

    model = build_model(model_config, registry).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batches = Batches(train_images, config.batch_size, config.seed)
    total_steps = len(batches) * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    plugins = {kind: plugin_record(registry, kind, name) for kind, name in
               (("encoder", model_config.encoder), ("attention", model_config.attention), ("dataset", config.dataset))}
    train_state = {"train_config": {**asdict(config), "binarize": mode}}
    checkpoint = out / FILENAME
    metrics_file = out / "metrics.jsonl"

    def log(record: dict) -> None:
        with metrics_file.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def save(step: int, epoch: int, last: dict) -> None:
        save_checkpoint(checkpoint, model, plugins, optimizer=optimizer.state_dict(), step=step, epoch=epoch,
                        metrics=last, **train_state)

    step, epoch, last = 0, 0, {}
    started = time.perf_counter()
    with training_progress(progress) as bar, stop_requests() as stop:
        task = bar.add_task("train", total=total_steps, loss="")
        while step < total_steps:
            epoch += 1
            bar.update(task, description=f"epoch {epoch}")
            for images in batches.epoch(epoch):
                x = binarize(to_unit_float(images), mode)
                output = model(x)
                loss = output.loss.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                optimizer.step()
                step += 1
                if step % config.log_every == 0 or step == total_steps:
                    rec, kl = output.reconstruction.mean().item(), output.kl.sum(1).mean().item()
                    elapsed = time.perf_counter() - started
                    last = {"split": "train", "step": step, "epoch": epoch, "loss": rec + kl,
                            "reconstruction": rec, "kl": kl, "steps_per_s": step / elapsed, "time_s": elapsed}
                    log(last)
                    bar.update(task, loss=f"{rec + kl:.1f} nats/img (rec {rec:.1f}, kl {kl:.1f})")
                bar.advance(task)
                if stop.requested:  # finished this step: save it, then stop
                    save(step, epoch, last)
                    raise Interrupted(checkpoint)
                if step >= total_steps:
                    break
            bound = variational_bound(model, valid_x, config.batch_size)
            last = {"split": "valid", "step": step, "epoch": epoch, **bound,
                    "time_s": time.perf_counter() - started}
            log(last)
            stderr.print(f"epoch {epoch}: validation bound {bound['nll_bound']:.2f} nats/image "
                         f"(rec {bound['reconstruction']:.2f}, kl {bound['kl']:.2f})")
            save(step, epoch, last)
    from drawkit.curves import curves_after_training  # matplotlib is optional: a hint, not a failure
    curves_after_training(out)
    return {**last, "checkpoint": str(checkpoint), "steps": step, "device": str(device)}
