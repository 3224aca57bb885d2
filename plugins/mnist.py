"""MNIST through torchvision: 50,000 train / 10,000 valid (the end of torchvision's train set) / 10,000 test.

Labels are the digits 0..9 from the same files, split exactly as the images.
"""
from pathlib import Path

import torch

from drawkit import hookimpl
from drawkit.errors import DataNotFound

VALID_SIZE = 10_000


class MNIST:
    image_shape = (1, 28, 28)
    default_binarize = "sample"  # dynamic binarization, a fresh draw each time an image is used
    num_classes = 10             # the digit drawn

    def load(self, split: str, root: Path, download: bool) -> torch.Tensor:
        return self.split(self.read(split, root, download).data.unsqueeze(1), split)  # uint8 (N, 1, 28, 28)

    def load_labels(self, split: str, root: Path, download: bool) -> torch.Tensor:
        return self.split(self.read(split, root, download).targets.long(), split)   # long (N,), 0..9

    @staticmethod
    def split(rows: torch.Tensor, split: str) -> torch.Tensor:
        """Train: the first 50,000 rows of torchvision's train set; valid: the last 10,000; test: its test set."""
        if split == "train":
            return rows[:-VALID_SIZE]
        if split == "valid":
            return rows[-VALID_SIZE:]
        return rows

    @staticmethod
    def read(split: str, root: Path, download: bool):
        """torchvision's MNIST (train or test part), downloaded when missing and allowed."""
        from torchvision.datasets import MNIST as TorchvisionMNIST

        try:
            return TorchvisionMNIST(str(root), train=split != "test", download=False)
        except RuntimeError:
            if not download:
                raise DataNotFound(f"not found in {root / 'MNIST' / 'raw'} and downloads are off") from None
            try:
                return TorchvisionMNIST(str(root), train=split != "test", download=True)
            except Exception as exc:  # offline, proxy, disk: all end the same way for the user
                raise DataNotFound(f"not found in {root / 'MNIST' / 'raw'} and the download failed "
                                   f"({type(exc).__name__})") from None


@hookimpl
def register_datasets(register):
    register("mnist", MNIST, description="MNIST digits, 28x28 grey (torchvision), binarized when loaded")
