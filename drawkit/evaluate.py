"""``drawkit evaluate``: the bound (and importance-weighted bound) of a checkpoint on a data split.

A classifier's checkpoint (``--task classify``) is measured by its error rate, accuracy and mean
cross-entropy instead; the checkpoint's kind (drawkit/tasks.py) picks which.
"""
from typing import Optional

import torch
from rich.markup import escape

from drawkit.bound import held_out, variational_bound
from drawkit.checkpoint import checkpoint_dataset, load_model
from drawkit.classifier import classification_metrics
from drawkit.data import SPLITS, fixed_binarization, load_labelled_split, load_split, trained_data_dir
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError, check_choice, check_positive
from drawkit.progress import counting_progress, stderr
from drawkit.registry import get_registry
from drawkit.rng import seeded
from drawkit.tasks import task_of

EVAL_SEED = 0  # held-out images of dynamically binarized sets are binarized once, and z drawn, from this seed


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
             progress: bool = True) -> dict:
    """Everything a results table needs, as one flat dict."""
    return evaluation(checkpoint, split, importance_samples, batch_size, max_images, device, data_dir, progress)[0]


def evaluation(checkpoint, split: str = "test", importance_samples: int = 1, batch_size: int = 100,
               max_images: Optional[int] = None, device: str = "auto", data_dir: Optional[str] = None,
               progress: bool = True) -> tuple[dict, str]:
    """``evaluate``'s dict and the line `drawkit evaluate` prints for it, measured as the checkpoint's kind is."""
    check_choice("--split", split, SPLITS)
    check_positive({"--importance-samples": importance_samples, "--batch-size": batch_size,
                    "--max-images": 1 if max_images is None else max_images})
    registry = get_registry()
    device = resolve_device(device)
    model, payload = load_model(checkpoint, registry, device)
    train_config = payload.get("train_config", {})
    name, dataset = checkpoint_dataset(payload, registry)
    return task_of(payload["model_config"]).evaluate(
        model, payload, dataset, name, split, checkpoint=checkpoint, importance_samples=importance_samples,
        batch_size=batch_size, max_images=max_images, data_dir=data_dir or trained_data_dir(train_config),
        progress=progress, device=device)


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
