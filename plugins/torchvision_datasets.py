"""Fashion-MNIST, SVHN and CIFAR-10 in torchvision's on-disk layouts, downloaded by torchvision when allowed.

Splits (valid is always cut from the end of the training set, so test stays the published test set):
- fashion-mnist: 50,000 / 10,000 / 10,000, 1x28x28 (``root/FashionMNIST/raw/``, IDX files).
- svhn: 65,932 / 7,325 / 26,032, 3x32x32 (``root/{train,test}_32x32.mat``; valid = the last
  tenth of train, rounded down); reading the .mat files needs scipy.
- cifar10: 45,000 / 5,000 / 10,000, 3x32x32 (``root/cifar-10-batches-py/``, the python pickle
  batches). The batches are read here rather than by torchvision's class, which insists on the
  published checksums; torchvision only downloads them.

All three are labelled with 10 classes, split exactly as their images: fashion-mnist's clothing
kinds, svhn's digits (torchvision gives the digit 0 the label 0, where the .mat files say 10),
cifar10's object classes.
"""
import importlib
import pickle
from pathlib import Path

import numpy as np
import torch

from drawkit import hookimpl
from drawkit.errors import DataNotFound, DrawkitError

SCIPY_HINT = "svhn reads its .mat files with scipy, which is not installed: pip install scipy"


def split_off_valid(train: torch.Tensor, split: str, valid_size: int) -> torch.Tensor:
    """The training set minus its last ``valid_size`` images, or those images."""
    return train[:-valid_size] if split == "train" else train[-valid_size:]


def fetch(where: Path, download: bool, what: str, make):
    """``make(download=False)``, and when that finds nothing ``make(download=True)`` if downloads are on."""
    try:
        return make(download=False)
    except RuntimeError:
        if not download:
            raise DataNotFound(f"{what} not found in {where} and downloads are off") from None
    try:
        return make(download=True)
    except Exception as exc:  # offline, proxy, disk: all end the same way for the user
        raise DataNotFound(f"{what} not found in {where} and the download failed ({type(exc).__name__})") from None


class FashionMNIST:
    """Grey 8-bit clothing pictures, not binary: scored with the discretized logistic by default."""

    image_shape = (1, 28, 28)
    default_binarize = "none"
    default_likelihood = "logistic"
    valid_size = 10_000
    num_classes = 10  # T-shirt/top, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot

    def load(self, split: str, root: Path, download: bool) -> torch.Tensor:
        images = self.read(split, root, download).data.unsqueeze(1)  # uint8 (N, 1, 28, 28)
        return images if split == "test" else split_off_valid(images, split, self.valid_size)

    def load_labels(self, split: str, root: Path, download: bool) -> torch.Tensor:
        labels = self.read(split, root, download).targets.long()    # (N,) 0..9
        return labels if split == "test" else split_off_valid(labels, split, self.valid_size)

    @staticmethod
    def read(split: str, root: Path, download: bool):
        from torchvision.datasets import FashionMNIST as Torchvision

        return fetch(root / "FashionMNIST" / "raw", download, "Fashion-MNIST",
                     lambda download: Torchvision(str(root), train=split != "test", download=download))


class SVHN:
    """Street-view house numbers, colour 8-bit."""

    image_shape = (3, 32, 32)
    default_binarize = "none"
    default_likelihood = "logistic"
    num_classes = 10  # the digit, 0..9

    def load(self, split: str, root: Path, download: bool) -> torch.Tensor:
        images = torch.from_numpy(self.read(split, root, download).data)  # uint8 (N, 3, 32, 32)
        return images if split == "test" else split_off_valid(images, split, len(images) // 10)

    def load_labels(self, split: str, root: Path, download: bool) -> torch.Tensor:
        labels = torch.as_tensor(np.asarray(self.read(split, root, download).labels), dtype=torch.long).view(-1)
        labels = torch.where(labels == 10, 0, labels)  # the .mat files' 10 is the digit 0 (torchvision maps it too)
        return labels if split == "test" else split_off_valid(labels, split, len(labels) // 10)

    @staticmethod
    def read(split: str, root: Path, download: bool):
        """torchvision's SVHN for the train or test file; scipy is asked for before anything is fetched."""
        from torchvision.datasets import SVHN as Torchvision

        part = "test" if split == "test" else "train"
        filename = f"{part}_32x32.mat"
        try:
            importlib.import_module("scipy.io")  # torchvision reads the .mat files with it
            have_scipy = True
        except ImportError:
            have_scipy = False
        if not have_scipy:  # said before any download: no point fetching 180 MB that cannot be read
            if (root / filename).is_file() or download:
                raise DrawkitError(SCIPY_HINT)
            raise DataNotFound(f"{filename} not found in {root} and downloads are off; also, {SCIPY_HINT}")
        return fetch(root, download, filename, lambda download: Torchvision(str(root), split=part, download=download))


class CIFAR10:
    """Small colour photos in ten classes, 8-bit."""

    image_shape = (3, 32, 32)
    default_binarize = "none"
    default_likelihood = "logistic"
    valid_size = 5_000
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    num_classes = 10  # airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck

    def load(self, split: str, root: Path, download: bool) -> torch.Tensor:
        images = torch.from_numpy(np.concatenate([read_batch(path) for path in self.files(split, root, download)]))
        return images if split == "test" else split_off_valid(images, split, self.valid_size)  # (N, 3, 32, 32)

    def load_labels(self, split: str, root: Path, download: bool) -> torch.Tensor:
        labels = torch.from_numpy(np.concatenate([read_batch_labels(path)
                                                  for path in self.files(split, root, download)]))
        return labels if split == "test" else split_off_valid(labels, split, self.valid_size)  # long (N,)

    def files(self, split: str, root: Path, download: bool) -> list:
        """The batch files of a split, in order, downloaded first when missing and allowed."""
        names = self.test_files if split == "test" else self.train_files
        where = root / self.folder
        missing = [name for name in names if not (where / name).is_file()]
        if missing:
            self._download(root, where, download, missing)
        return [where / name for name in names]

    def _download(self, root: Path, where: Path, download: bool, missing: list) -> None:
        from torchvision.datasets import CIFAR10 as Torchvision

        what = f"CIFAR-10 ({', '.join(missing)})"
        fetch(where, download, what, lambda download: Torchvision(str(root), train=True, download=download))


def read_batch(path: Path) -> np.ndarray:
    """One CIFAR-10 python batch -> uint8 (N, 3, 32, 32). It is a pickle, as torchvision reads it: trust the folder."""
    return batch_entry(path, "data", lambda data: np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))


def read_batch_labels(path: Path) -> np.ndarray:
    """The labels of one CIFAR-10 python batch -> int64 (N,), 0..9, in the order of its images."""
    return batch_entry(path, "labels", lambda labels: np.asarray(labels, dtype=np.int64).reshape(-1))


def batch_entry(path: Path, key: str, convert):
    """``convert(batch[key])`` of a CIFAR-10 pickle (keys are text or bytes); a broken file is one line."""
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="latin1")
        return convert(batch[key] if key in batch else batch[key.encode()])
    except Exception as exc:  # truncated download, wrong file
        raise DrawkitError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}); delete "
                           f"{path.parent} and download it again") from None


@hookimpl
def register_datasets(register):
    register("fashion-mnist", FashionMNIST, description="Fashion-MNIST clothing, 28x28 grey (torchvision)")
    register("svhn", SVHN, description="SVHN house numbers, 32x32 colour (torchvision; needs scipy)")
    register("cifar10", CIFAR10, description="CIFAR-10 photos, 32x32 colour (torchvision layout)")
