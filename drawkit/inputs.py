"""Choosing the images a picture command feeds the model: from the checkpoint's data set, or files.

Inputs are binarized the way the checkpoint's training was (its ``train_config.binarize``),
with a fixed seed, so the same command shows the same pixels every time.
"""
from typing import Optional, Sequence

import torch

from drawkit.checkpoint import checkpoint_dataset
from drawkit.data import SPLITS, fixed_binarization, load_labels, load_split, trained_data_dir
from drawkit.errors import DrawkitError, check_choice
from drawkit.images import load_image


def parse_indices(text: Optional[str]) -> Optional[list[int]]:
    """'3,17,42' -> [3, 17, 42]."""
    if text is None:
        return None
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DrawkitError(f"--indices expects whole numbers separated by commas, such as 3,17,42; "
                           f"got '{text}'") from None
    if not indices:
        raise DrawkitError("--indices is empty; give whole numbers separated by commas, such as 3,17,42")
    return indices


def choose_inputs(payload: dict, registry, image_shape: tuple, n: int = 16, split: str = "test",
                  indices: Optional[str] = None, images: Sequence[str] = (), invert: bool = False,
                  seed: int = 0, data_dir: Optional[str] = None) -> torch.Tensor:
    """(B, C, H, W) in the model's input form: ``images`` files, else ``indices`` of ``split``, else its first n."""
    return choose_labelled_inputs(payload, registry, image_shape, n, split, indices, images, invert, seed,
                                  data_dir, labels=False)[0]


def choose_labelled_inputs(payload: dict, registry, image_shape: tuple, n: int = 16, split: str = "test",
                           indices: Optional[str] = None, images: Sequence[str] = (), invert: bool = False,
                           seed: int = 0, data_dir: Optional[str] = None,
                           labels: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[str]]:
    """choose_inputs, and with ``labels`` the true classes (B,) of images taken from the data set.

    Returns (inputs, labels or None, why there are no labels or None): files carry no labels, and a
    data set that cannot give them still gives its images.
    """
    train_config = payload.get("train_config", {})
    mode = train_config.get("binarize") or "none"
    if images:
        if indices is not None:
            raise DrawkitError("give either --image or --indices, not both")
        x = torch.stack([load_image(path, image_shape, invert) for path in images])
        return fixed_binarization(x, mode, seed), None, None
    if invert:
        raise DrawkitError("--invert applies to --image files only")
    check_choice("--split", split, SPLITS)
    chosen = parse_indices(indices)
    if chosen is None and n < 1:
        raise DrawkitError(f"--n must be a positive whole number, got {n}")
    name, dataset = checkpoint_dataset(payload, registry, hint="; pass --image FILE")
    root = data_dir or trained_data_dir(train_config)
    data = load_split(dataset, name, split, root)
    if tuple(data.shape[1:]) != tuple(image_shape):
        raise DrawkitError(f"data set '{name}' has images of shape {tuple(data.shape[1:])} but the model takes "
                           f"{tuple(image_shape)}; pass --image FILE")
    if chosen is None:
        chosen = list(range(min(n, len(data))))
    bad = [i for i in chosen if not 0 <= i < len(data)]
    if bad:
        raise DrawkitError(f"--indices {bad[0]} is out of range: the {split} split of '{name}' has "
                           f"{len(data)} images (0..{len(data) - 1})")
    chosen = torch.tensor(chosen)
    x = fixed_binarization(data[chosen], mode, seed)
    if not labels:
        return x, None, None
    try:
        return x, load_labels(dataset, name, split, root, count=len(data))[chosen], None
    except DrawkitError as exc:
        return x, None, f"no true labels shown: {exc}"
