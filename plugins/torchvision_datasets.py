"""Fashion-MNIST, SVHN and CIFAR-10 in torchvision's on-disk layouts, downloaded by torchvision when allowed.

Splits (valid is always cut from the end of the training set, so test stays the published test set):
- fashion-mnist: 50,000 / 10,000 / 10,000, 1x28x28 (``root/FashionMNIST/raw/``, IDX files).
- svhn: 65,932 / 7,325 / 26,032, 3x32x32 (``root/{train,test}_32x32.mat``; valid = the last
  tenth of train, rounded down); reading the .mat files needs scipy.
- cifar10: 45,000 / 5,000 / 10,000, 3x32x32 (``root/cifar-10-batches-py/``, the python pickle
  batches). The batches are read here rather than by torchvision's class, which insists on the
  published checksums; torchvision only downloads them.
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

    def load(self, split: str, root: Path, download: bool) -> torch.Tensor:
        from torchvision.datasets import FashionMNIST as Torchvision

        data = fetch(root / "FashionMNIST" / "raw", download, "Fashion-MNIST",
                     lambda download: Torchvision(str(root), train=split != "test", download=download))
        images = data.data.unsqueeze(1)  # uint8 (N, 1, 28, 28)
        return images if split == "test" else split_off_valid(images, split, self.valid_size)


class SVHN:
    """Street-view house numbers, colour 8-bit."""

    image_shape = (3, 32, 32)
    default_binarize = "none"
    default_likelihood = "logistic"

    def load(self, split: str, root: Path, download: bool) -> torch.Tensor:
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
        data = fetch(root, download, filename, lambda download: Torchvision(str(root), split=part, download=download))
        images = torch.from_numpy(data.data)  # uint8 (N, 3, 32, 32)
        if split == "test":
            return images
        return split_off_valid(images, split, len(images) // 10)


class CIFAR10:
    """Small colour photos in ten classes, 8-bit."""

    image_shape = (3, 32, 32)
    default_binarize = "none"
    default_likelihood = "logistic"
    valid_size = 5_000
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)

    def load(self, split: str, root: Path, download: bool) -> torch.Tensor:
        files = self.test_files if split == "test" else self.train_files
        where = root / self.folder
        missing = [name for name in files if not (where / name).is_file()]
        if missing:
            self._download(root, where, download, missing)
        images = torch.from_numpy(np.concatenate([read_batch(where / name) for name in files]))  # (N, 3, 32, 32)
        return images if split == "test" else split_off_valid(images, split, self.valid_size)

    def _download(self, root: Path, where: Path, download: bool, missing: list) -> None:
        from torchvision.datasets import CIFAR10 as Torchvision

        what = f"CIFAR-10 ({', '.join(missing)})"
        fetch(where, download, what, lambda download: Torchvision(str(root), train=True, download=download))


def read_batch(path: Path) -> np.ndarray:
    """One CIFAR-10 python batch -> uint8 (N, 3, 32, 32). It is a pickle, as torchvision reads it: trust the folder."""
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"] if "data" in batch else batch[b"data"], dtype=np.uint8)
        return data.reshape(-1, 3, 32, 32)
    except Exception as exc:  # truncated download, wrong file
        raise DrawkitError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}); delete "
                           f"{path.parent} and download it again") from None


@hookimpl
def register_datasets(register):
    register("fashion-mnist", FashionMNIST, description="Fashion-MNIST clothing, 28x28 grey (torchvision)")
    register("svhn", SVHN, description="SVHN house numbers, 32x32 colour (torchvision; needs scipy)")
    register("cifar10", CIFAR10, description="CIFAR-10 photos, 32x32 colour (torchvision layout)")
