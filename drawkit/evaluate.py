"""``drawkit evaluate``: the bound (and importance-weighted bound) of a checkpoint on a data split.

A classifier's checkpoint (``--task classify``) is measured by its error rate, accuracy and mean
cross-entropy instead; the checkpoint's kind (drawkit/tasks.py) picks which.

`drawkit evaluate` on a checkpoint in a run folder also appends its result to RUN/evaluations.jsonl,
so that `drawkit report` can show the latest numbers per split.
"""
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch
from rich.markup import escape

from drawkit.bound import held_out, variational_bound
from drawkit.checkpoint import checkpoint_dataset, load_model, resolve_checkpoint_path
from drawkit.classifier import classification_metrics
from drawkit.curves import METRICS  # a folder holding it is a run folder (written by `drawkit train`)
from drawkit.data import SPLITS, fixed_binarization, load_labelled_split, load_split, trained_data_dir
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError, check_choice, check_positive
from drawkit.precision import autocast, check_native, check_precision, use_tf32
from drawkit.progress import counting_progress, stderr
from drawkit.registry import get_registry
from drawkit.rng import seeded
from drawkit.tasks import task_of

EVAL_SEED = 0  # held-out images of dynamically binarized sets are binarized once, and z drawn, from this seed
EVALUATIONS = "evaluations.jsonl"  # in the run folder: one evaluate result a line, the newest last


def likelihood_misfit(likelihood: Optional[str], x: torch.Tensor) -> str:
    """Why ``likelihood`` is no probability of the pixels ``x`` (in [0, 1]), or '' when it is one.

    A Bernoulli likelihood scores only the values 0 and 1, the discretized logistic only the 256
    levels k/255; on other pixels the bound is still a number, but it bounds no likelihood of them.
    """
    name = likelihood or "bernoulli"
    if name == "bernoulli":
        def off(rows):
            return ((rows != 0) & (rows != 1)).count_nonzero().item()
        scores, what = "pixels of 0 or 1", "are neither"
        fix = "train the model with --likelihood logistic, or with --binarize sample"
    elif name == "logistic":
        def off(rows):
            levels = rows * 255
            return ((levels - levels.round()).abs().gt(1e-3) | (rows < 0) | (rows > 1)).count_nonzero().item()
        scores, what = "the 256 levels k/255", "lie between them"
        fix = "use it with a data set of 8-bit images"
    else:
        return ""
    share = sum(off(rows) for rows in x.split(1024)) / max(x.numel(), 1)  # in slices: a big test set fits
    if not share:
        return ""
    share = f"{share:.1%}" if share >= 0.001 else "under 0.1%"
    return (f"the {name} likelihood scores only {scores}, but {share} of these pixels {what}, so the "
            f"bound is not a bound on a negative log-likelihood of these images (nor comparable with published "
            f"NLLs); {fix}")


def evaluate(checkpoint, split: str = "test", importance_samples: int = 1, batch_size: int = 100,
             max_images: Optional[int] = None, device: str = "auto", data_dir: Optional[str] = None,
             progress: bool = True, precision: str = "fp32", tf32: bool = False) -> dict:
    """Everything a results table needs, as one flat dict."""
    return evaluation(checkpoint, split, importance_samples, batch_size, max_images, device, data_dir, progress,
                      precision, tf32)[0]


def evaluation(checkpoint, split: str = "test", importance_samples: int = 1, batch_size: int = 100,
               max_images: Optional[int] = None, device: str = "auto", data_dir: Optional[str] = None,
               progress: bool = True, precision: str = "fp32", tf32: bool = False) -> tuple[dict, str]:
    """``evaluate``'s dict and the line `drawkit evaluate` prints for it, measured as the checkpoint's kind is.

    Reported figures are float32 unless ``precision`` (bf16) or ``tf32`` (CUDA) says otherwise; the dict says which.
    """
    check_choice("--split", split, SPLITS)
    check_precision(precision)
    check_positive({"--importance-samples": importance_samples, "--batch-size": batch_size,
                    "--max-images": 1 if max_images is None else max_images})
    registry = get_registry()
    device = resolve_device(device)
    check_native(precision, device)
    model, payload = load_model(checkpoint, registry, device)
    train_config = payload.get("train_config", {})
    name, dataset = checkpoint_dataset(payload, registry)
    use_tf32(tf32)
    with autocast(precision, device):
        result, line = task_of(payload["model_config"]).evaluate(
            model, payload, dataset, name, split, checkpoint=checkpoint, importance_samples=importance_samples,
            batch_size=batch_size, max_images=max_images, data_dir=data_dir or trained_data_dir(train_config),
            progress=progress, device=device)
    result.update(precision=precision, tf32=tf32 and device.type == "cuda")
    if payload.get("averaged_steps"):  # written by 'drawkit average': which checkpoints it is the mean of
        result["averaged_steps"] = payload["averaged_steps"]
    return result, line


def evaluate_bound(model, payload: dict, dataset, name: str, split: str, checkpoint, importance_samples: int,
                   batch_size: int, max_images: Optional[int], data_dir: Optional[str], progress: bool,
                   device: torch.device) -> tuple[dict, str]:
    """DRAW: the variational bound (and the importance-weighted bound for K > 1) on the split."""
    train_config = payload.get("train_config", {})
    images = load_split(dataset, name, split, data_dir)[:max_images]
    mode = train_config.get("binarize") or "none"
    x = fixed_binarization(images, mode, seed=EVAL_SEED)
    misfit = likelihood_misfit(model.config.likelihood, x)
    if misfit:  # once per evaluation, before the numbers, on stderr so that --json stays one object on stdout
        stderr.print(f"[yellow]Warning:[/] {escape(misfit)}", highlight=False, soft_wrap=True)
    with counting_progress(f"evaluate {split}", total=len(x), enabled=progress) as advance, \
            seeded(EVAL_SEED, device):  # the same checkpoint and options give the same numbers
        result = variational_bound(model, held_out(x, device), batch_size, importance_samples, on_batch=advance)
    result.update(dataset=name, split=split, binarize=mode, likelihood=model.config.likelihood,
                  step=payload.get("step"), checkpoint=str(checkpoint), likelihood_fits_data=not misfit)
    if misfit:
        result["warning"] = misfit
    if getattr(dataset, "source", None):
        result["dataset_source"] = dataset.source
    line = (f"{name} {split} ({result['n_images']} images): bound {result['nll_bound']:.2f} nats/image "
            f"(reconstruction {result['reconstruction']:.2f}, KL {result['kl']:.2f}), "
            f"{result['bits_per_dim']:.4f} bits/dim")
    if "iw_nll" in result:
        line += f"; importance-weighted (K={importance_samples}) {result['iw_nll']:.2f} nats/image"
    return result, line


def evaluate_classifier(model, payload: dict, dataset, name: str, split: str, checkpoint, importance_samples: int,
                        batch_size: int, max_images: Optional[int], data_dir: Optional[str], progress: bool,
                        device: torch.device) -> tuple[dict, str]:
    """A classifier: error rate, accuracy and mean cross-entropy (nats/image) on the split's labelled images."""
    if importance_samples > 1:
        raise DrawkitError("--importance-samples tightens the bound of a generative checkpoint; this one was "
                           "trained with --task classify: leave it out")
    images, labels = load_labelled_split(dataset, name, split, data_dir)
    mode = payload.get("train_config", {}).get("binarize") or "none"
    x = fixed_binarization(images[:max_images], mode, seed=EVAL_SEED)  # as the classifier saw its images
    with counting_progress(f"evaluate {split}", total=len(x), enabled=progress) as advance:
        result = classification_metrics(model, held_out(x, device), held_out(labels[:max_images], device),
                                        batch_size, on_batch=advance)
    result.update(dataset=name, split=split, step=payload.get("step"), checkpoint=str(checkpoint))
    if getattr(dataset, "source", None):
        result["dataset_source"] = dataset.source
    line = (f"{name} {split} ({result['n_images']} images): error {result['error_rate']:.2%} (accuracy "
            f"{result['accuracy']:.2%}), cross-entropy {result['nll']:.4f} nats/image")
    return result, line


def record_evaluation(checkpoint, result: dict) -> Optional[Path]:
    """Append ``result``, with the time, to RUN/evaluations.jsonl when the checkpoint lies in a run folder.

    Returns the file, or None for a checkpoint outside a run folder. A folder that cannot be written
    costs a warning, never the evaluation the user waited for.
    """
    path = resolve_checkpoint_path(checkpoint)
    run = path if path.is_dir() else path.parent  # a folder: one written by 'drawkit export', not a run
    if not (run / METRICS).is_file():
        return None
    record = {"evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **result}
    try:
        with open(run / EVALUATIONS, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as exc:
        stderr.print(f"[yellow]Warning:[/] could not record the result in {escape(str(run / EVALUATIONS))}: "
                     f"{escape(exc.strerror or str(exc))}", highlight=False, soft_wrap=True)
        return None
    return run / EVALUATIONS


def json_records(path: Path):
    """Each JSON object on a line of ``path``; nothing from a missing file or a line cut short (a full disk)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def read_evaluations(run) -> list[dict]:
    """The results recorded in RUN/evaluations.jsonl, oldest first; lines that are not JSON objects are skipped."""
    return list(json_records(Path(run) / EVALUATIONS))
