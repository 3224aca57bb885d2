"""MNIST through torchvision: 50,000 train / 10,000 valid (the end of torchvision's train set) / 10,000 test."""
from pathlib import Path

import torch

from drawkit import hookimpl
from drawkit.errors import DataNotFound

VALID_SIZE = 10_000


class MNIST:
    image_shape = (1, 28, 28)
    default_binarize = "sample"  # dynamic binarization, a fresh draw each time an image is used

    def load(self, split: str, root: Path, download: bool) -> torch.Tensor:
        from torchvision.datasets import MNIST as TorchvisionMNIST

        try:
            data = TorchvisionMNIST(str(root), train=split != "test", download=False)
        except RuntimeError:
            if not download:
                raise DataNotFound(f"not found in {root / 'MNIST' / 'raw'} and downloads are off") from None
            try:
                data = TorchvisionMNIST(str(root), train=split != "test", download=True)
            except Exception as exc:  # offline, proxy, disk: all end the same way for the user
                raise DataNotFound(f"not found in {root / 'MNIST' / 'raw'} and the download failed "
                                   f"({type(exc).__name__})") from None
        images = data.data.unsqueeze(1)  # uint8 (N, 1, 28, 28)
        if split == "train":
            return images[:-VALID_SIZE]
        if split == "valid":
            return images[-VALID_SIZE:]
        return images


@hookimpl
def register_datasets(register):
    register("mnist", MNIST, description="MNIST digits, 28x28 grey (torchvision), binarized when loaded")
