"""Finding data on disk, binarizing it, and serving shuffled batches from memory.

A dataset plugin's factory returns an object with ``image_shape`` (C, H, W) and
``load(split, root, download) -> uint8 or [0, 1] float tensor (N, C, H, W)``; the
split is one of SPLITS. Whole splits live in memory (on the GPU when training there),
so batches cost an index, not a DataLoader round trip.

A labelled dataset also has ``num_classes`` and ``load_labels(split, root, download) -> long (N,)``,
one label per image of ``load`` in the same order; one without labels may say why in
``no_labels_reason``. ``num_classes`` and ``load_labels`` below check what a plugin returns.

A dataset that draws its training images anew for every epoch (generated data) sets
``redraws_training = True`` and has ``load_epoch(epoch, root, download) -> {"images": (N, C, H, W),
"labels": long (N,) when labelled}``, the same N every epoch; ``training_split`` serves it.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from drawkit.errors import DataNotFound, DrawkitError, is_whole_number

SPLITS = ("train", "valid", "test")
BINARIZE_MODES = ("sample", "threshold", "none")
ENV_DATA = "DRAWKIT_DATA"
ENV_OFFLINE = "DRAWKIT_OFFLINE"


@dataclass(frozen=True)
class DataRoot:
    path: Path
    source: str  # how it was chosen, for error messages


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "drawkit"


def resolve_data_root(data_dir: Optional[str] = None) -> DataRoot:
    """--data-dir, else $DRAWKIT_DATA, else the default cache (which may not exist yet)."""
    if data_dir:
        root = DataRoot(Path(data_dir).expanduser(), "--data-dir")
    elif os.environ.get(ENV_DATA):
        root = DataRoot(Path(os.environ[ENV_DATA]).expanduser(), f"${ENV_DATA}")
    else:
        return DataRoot(default_cache(), "the default cache")
    if not root.path.is_dir():
        raise DrawkitError(f"data directory {root.path} (from {root.source}) does not exist or is not a "
                           f"directory; point {root.source} at a folder that holds the data set")
    if not os.access(root.path, os.R_OK | os.X_OK):
        raise DrawkitError(f"data directory {root.path} (from {root.source}) is not readable; "
                           f"fix its permissions or choose another folder")
    return root


def trained_data_dir(train_config: dict) -> Optional[str]:
    """The --data-dir a checkpoint was trained with, when it exists here; else None ($DRAWKIT_DATA, the cache)."""
    path = train_config.get("data_dir")
    return path if path and Path(path).expanduser().is_dir() else None


def downloads_allowed() -> bool:
    return os.environ.get(ENV_OFFLINE, "").lower() not in ("1", "true", "yes")


def _read_from_plugin(read, name: str, split: str, data_dir: Optional[str], what: str = ""):
    """``read(split, root, download)`` of a dataset plugin, its DataNotFound told with where drawkit looked."""
    root = resolve_data_root(data_dir)
    try:
        return read(split, root.path, download=downloads_allowed())
    except DataNotFound as exc:
        raise DataNotFound(f"dataset '{name}': {what}{exc} (data root {root.path}, from {root.source}); pass "
                           f"--data-dir DIR or set {ENV_DATA}=DIR to a folder holding it") from None


def load_split(dataset, name: str, split: str, data_dir: Optional[str] = None) -> torch.Tensor:
    """One split of a registered dataset as a tensor (N, C, H, W), with a clear error when it is missing."""
    images = _read_from_plugin(dataset.load, name, split, data_dir)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(dataset.image_shape):
        raise DrawkitError(f"dataset '{name}' returned images of shape {tuple(images.shape)}, "
                           f"expected (N, {', '.join(map(str, dataset.image_shape))})")
    return images


#: what a user asked for a classifier is told to choose instead of a dataset without labels
LABELLED_DATASETS = ("mnist, fashion-mnist, svhn, cifar10, cluttered-mnist, binarized-mnist (derived), "
                     "or image-folder with one sub-folder per class")


def num_classes(dataset, name: str) -> int:
    """How many classes a dataset's labels have; one line saying what to do when it has no labels."""
    classes = getattr(dataset, "num_classes", None)
    reader = getattr(dataset, "load_labels", None)
    if classes is None:
        reason = getattr(dataset, "no_labels_reason", None)
        why = f" ({reason})" if isinstance(reason, str) and reason else ""
        raise DrawkitError(f"dataset '{name}' has no labels{why}, so --task classify cannot use it; "
                           f"choose a labelled data set ({LABELLED_DATASETS})")
    if not callable(reader):
        raise DrawkitError(f"dataset '{name}' has num_classes but no load_labels(split, root, download) method; "
                           f"its plugin must provide both, or neither")
    if not is_whole_number(classes, least=2):
        raise DrawkitError(f"dataset '{name}' gave num_classes={classes!r}; its plugin must give a whole number "
                           f"of at least 2")
    return classes


def load_labels(dataset, name: str, split: str, data_dir: Optional[str] = None,
                count: Optional[int] = None) -> torch.Tensor:
    """The class of each image of ``load_split(dataset, name, split, data_dir)``, in its order: long (N,).

    The labels must be as many as the images: pass ``count=len(images)`` (the whole split, before
    any cut) when the images are already loaded; without it the split is loaded to count them.
    Use ``load_labelled_split`` to get both at once.
    """
    classes = num_classes(dataset, name)
    labels = _read_from_plugin(dataset.load_labels, name, split, data_dir, what="labels ")
    if not isinstance(labels, torch.Tensor):
        raise DrawkitError(f"dataset '{name}' returned {split} labels as {type(labels).__name__}; its plugin's "
                           f"load_labels must return a torch.long tensor (N,)")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise DrawkitError(f"dataset '{name}' returned {split} labels of dtype {labels.dtype}; its plugin's "
                           f"load_labels must return whole numbers (torch.long)")
    if labels.ndim != 1:
        raise DrawkitError(f"dataset '{name}' returned {split} labels of shape {tuple(labels.shape)}; its "
                           f"plugin's load_labels must return one label per image, shape (N,)")
    if count is None:
        count = len(load_split(dataset, name, split, data_dir))
    if len(labels) != count:
        raise DrawkitError(f"dataset '{name}' returned {len(labels)} {split} labels for {count} images; its "
                           f"plugin's load_labels must give one label per image, in the order of load")
    labels = labels.long()
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        bad = labels[(labels < 0) | (labels >= classes)][0].item()
        raise DrawkitError(f"dataset '{name}' returned a {split} label {bad} outside 0..{classes - 1} "
                           f"(num_classes={classes}); its plugin's labels and num_classes disagree")
    return labels


def load_labelled_split(dataset, name: str, split: str,
                        data_dir: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W), labels long (N,)) of one split; refuses a dataset without labels before loading."""
    num_classes(dataset, name)
    images = load_split(dataset, name, split, data_dir)
    return images, load_labels(dataset, name, split, data_dir, count=len(images))


def training_split(dataset, name: str, data_dir: Optional[str], device: torch.device, labelled: bool):
    """(images, labels or None, redraw or None) for training: the fixed train split, or epoch 1's fresh draw.

    ``redraw(epoch) -> (images, labels)`` is given to Batches when the dataset draws each epoch anew.
    """
    if not getattr(dataset, "redraws_training", False):
        if labelled:
            images, labels = load_labelled_split(dataset, name, "train", data_dir)
            return images.to(device), labels.to(device), None
        return load_split(dataset, name, "train", data_dir).to(device), None, None

    def redraw(epoch: int):
        drawn = _read_from_plugin(lambda split, root, download: dataset.load_epoch(epoch, root, download),
                                  name, "train", data_dir)
        images = drawn["images"]
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(dataset.image_shape):
            raise DrawkitError(f"dataset '{name}' drew epoch {epoch}'s images of shape {tuple(images.shape)}, "
                               f"expected (N, {', '.join(map(str, dataset.image_shape))})")
        labels = drawn["labels"].long() if labelled else None
        if labelled and labels.shape != (len(images),):
            raise DrawkitError(f"dataset '{name}' drew {tuple(labels.shape)} labels for epoch {epoch}'s "
                               f"{len(images)} images; its plugin's load_epoch must give one label per image")
        return images.to(device), labels.to(device) if labelled else None

    if labelled:
        num_classes(dataset, name)
    return (*redraw(1), redraw)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float -> float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()


def binarize(x: torch.Tensor, mode: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """'sample': a fresh Bernoulli draw per pixel (dynamic binarization); 'threshold': x > 0.5; 'none': as is."""
    if mode == "sample":
        return torch.bernoulli(x, generator=generator)
    if mode == "threshold":
        return (x > 0.5).to(x.dtype)
    if mode == "none":
        return x
    raise DrawkitError(f"unknown binarization '{mode}'; choose one of: {', '.join(BINARIZE_MODES)}")


class Batches:
    """Shuffled mini-batches of an in-memory tensor; the order depends only on (seed, epoch).

    With ``labels`` (N,) each batch is (images, labels) of the same images, in the same order. With
    ``redraw`` (epoch -> (images, labels)) every epoch has images of its own, ``images`` being epoch 1's.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0, labels: Optional[torch.Tensor] = None,
                 redraw: Optional[Callable] = None):
        if len(images) < batch_size:
            raise DrawkitError(f"batch size {batch_size} is larger than the {len(images)} training images; "
                               f"use a smaller --batch-size")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images, self.batch_size, self.seed, self.labels = images, batch_size, seed, labels
        self.redraw, self.drawn_epoch = redraw, 1

    def __len__(self) -> int:
        return len(self.images) // self.batch_size  # the last partial batch is dropped

    def epoch(self, epoch: int, skip: int = 0) -> Iterator:
        """The batches of ``epoch`` after the first ``skip`` (a resumed run picks up mid-epoch)."""
        if self.redraw is not None and epoch != self.drawn_epoch:
            self.images, self.labels = self.redraw(epoch)
            self.drawn_epoch = epoch
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.images), generator=g).to(self.images.device)
        for i in range(skip, len(self)):
            chosen = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.labels is None:
                yield self.images[chosen]
            else:
                yield self.images[chosen], self.labels[chosen.to(self.labels.device)]


def fixed_binarization(images: torch.Tensor, mode: str, seed: int = 0) -> torch.Tensor:
    """Held-out images binarized once with a fixed seed, so every evaluation sees the same pixels."""
    return binarize(to_unit_float(images), mode, torch.Generator().manual_seed(seed))
