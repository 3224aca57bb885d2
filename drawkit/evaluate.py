"""``drawkit evaluate``: the bound (and importance-weighted bound) of a checkpoint on a data split."""
from typing import Optional

from drawkit.bound import variational_bound
from drawkit.checkpoint import load_model
from drawkit.data import SPLITS, fixed_binarization, load_split, trained_data_dir
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError, check_choice, check_positive
from drawkit.progress import counting_progress
from drawkit.registry import get_registry
from drawkit.rng import seeded

EVAL_SEED = 0  # held-out images of dynamically binarized sets are binarized once, and z drawn, from this seed


def evaluate(checkpoint, split: str = "test", importance_samples: int = 1, batch_size: int = 100,
             max_images: Optional[int] = None, device: str = "auto", data_dir: Optional[str] = None,
             progress: bool = True) -> dict:
    """Everything a results table needs, as one flat dict."""
    check_choice("--split", split, SPLITS)
    check_positive({"--importance-samples": importance_samples, "--batch-size": batch_size,
                    "--max-images": 1 if max_images is None else max_images})
    registry = get_registry()
    device = resolve_device(device)
    model, payload = load_model(checkpoint, registry, device)
    train_config = payload.get("train_config", {})
    name = train_config.get("dataset")
    if not name:
        raise DrawkitError("this checkpoint does not name the data set it was trained on")
    dataset = registry.get("dataset", name).create(train_config.get("dataset_options"))
    images = load_split(dataset, name, split, data_dir or trained_data_dir(train_config))[:max_images]
    mode = train_config.get("binarize") or "none"
    x = fixed_binarization(images, mode, seed=EVAL_SEED)
    with counting_progress(f"evaluate {split}", total=len(x), enabled=progress) as advance, \
            seeded(EVAL_SEED, device):  # the same checkpoint and options give the same numbers
        result = variational_bound(model, x, batch_size, importance_samples, on_batch=advance)
    result.update(dataset=name, split=split, binarize=mode, likelihood=model.config.likelihood,
                  step=payload.get("step"), checkpoint=str(checkpoint))
    if getattr(dataset, "source", None):
        result["dataset_source"] = dataset.source
    return result
