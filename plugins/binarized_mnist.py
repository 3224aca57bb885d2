"""Binarized MNIST: the fixed binarization behind the DRAW paper's NLL table, or a stand-in derived from MNIST.

Larochelle & Murray's files, ``binarized_mnist_{train,valid,test}.amat`` (50,000 / 10,000 /
10,000 rows of 784 space-separated 0/1), are read from the data root or ``root/binarized_mnist/``.
Without them a fixed binarization is derived from MNIST in the same root (torchvision layout):
one generator seeded with ``seed`` draws u ~ U[0, 1) per pixel with ``torch.rand``, first for
the 60,000 training images in file order, then for the 10,000 test images; a pixel is 1 when
u < value / 255. Training images 1-50,000 are train, 50,001-60,000 valid, the test images test.
The derived tensors are cached (bit-packed, about 7 MB). ``source`` says which one was loaded:
numbers on the two are not interchangeable.

Labels: the derived set's are MNIST's labels of the same rows (cached too). Larochelle & Murray's
files carry none, and their rows are not assumed to follow MNIST's order, so that source has no
labels: ``num_classes`` and ``load_labels`` refuse it, pointing at source=derived.
"""
from pathlib import Path

import numpy as np
import torch

from drawkit import hookimpl
from drawkit.errors import DataNotFound, DrawkitError, check_whole_number
from drawkit.outputs import atomic_write
from drawkit_plugins.mnist import MNIST
from drawkit_plugins.tensor_cache import cached

DEFAULT_SEED = 1234
SOURCES = ("auto", "larochelle-murray", "derived")
URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{split}.amat"
PIXELS = 28 * 28
SPLITS = ("train", "valid", "test")
NO_LABELS = ("Larochelle & Murray's .amat files carry no labels, and drawkit does not assume their rows follow "
             "MNIST's order; --dataset-opt source=derived gives the binarization derived from MNIST, "
             "with MNIST's labels")


def amat_name(split: str) -> str:
    return f"binarized_mnist_{split}.amat"


def read_amat(path: Path) -> torch.Tensor:
    """One .amat file -> uint8 (N, 1, 28, 28) in {0, 255}; anything but rows of 784 zeros and ones is refused."""
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)               # (bytes,)
    is_bit = (raw == ord("0")) | (raw == ord("1"))
    if not (is_bit | (raw == ord(" ")) | (raw == ord("\t")) | (raw == ord("\n")) | (raw == ord("\r"))).all():
        raise DrawkitError(f"{path} is not a binarized MNIST .amat file: it holds values other than 0 and 1")
    if (is_bit[1:] & is_bit[:-1]).any():
        raise DrawkitError(f"{path} is not a binarized MNIST .amat file: it holds numbers other than 0 and 1")
    starts = np.concatenate([[0], np.flatnonzero(raw == ord("\n")) + 1])
    starts = starts[starts < len(raw)]
    per_line = np.add.reduceat(is_bit, starts, dtype=np.int64) if len(starts) else np.zeros(0, np.int64)
    wrong = np.flatnonzero((per_line != 0) & (per_line != PIXELS))
    if len(wrong):
        raise DrawkitError(f"{path} is not a binarized MNIST .amat file: line {wrong[0] + 1} has "
                           f"{per_line[wrong[0]]} values, expected {PIXELS}")
    bits = raw[is_bit] - ord("0")                                         # (N * 784,)
    if not len(bits):
        raise DrawkitError(f"{path} is empty; it should hold rows of {PIXELS} zeros and ones")
    return torch.from_numpy(bits * np.uint8(255)).view(-1, 1, 28, 28)


def amat_folder(root: Path):
    """The folder holding all three .amat files, None when neither place has any; half a set is an error."""
    for folder in (root, root / "binarized_mnist"):
        present = [s for s in SPLITS if (folder / amat_name(s)).is_file()]
        if len(present) == len(SPLITS):
            return folder
        if present:
            missing = ", ".join(amat_name(s) for s in SPLITS if s not in present)
            raise DrawkitError(f"{folder} holds only part of Larochelle & Murray's binarized MNIST: {missing} "
                               f"missing; add it, or remove the others to use the binarization derived from MNIST")
    return None


def download_amat(root: Path) -> Path:
    from torchvision.datasets.utils import download_url

    folder = root / "binarized_mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        target = folder / amat_name(split)
        if not target.is_file():
            with atomic_write(target) as tmp:
                download_url(URL.format(split=split), str(folder), tmp.name)
    return folder


def derive(root: Path, download: bool, seed: int) -> dict:
    """The fixed binarization of MNIST under ``seed``: {split: uint8 (N, 98)}, 784 bits packed per row."""
    mnist = MNIST()
    train, valid, test = (mnist.load(split, root, download) for split in SPLITS)  # uint8 (N, 1, 28, 28)
    g = torch.Generator().manual_seed(seed)
    packed = []
    for images in (torch.cat([train, valid]), test):  # MNIST's 60,000 training images in file order, then its test
        u = torch.rand(images.shape, generator=g)
        bits = (u * 255 < images.float()).flatten(1).numpy()        # (N, 784) bool: u < value / 255
        packed.append(torch.from_numpy(np.packbits(bits, axis=1)))  # (N, 98)
    return {"train": packed[0][:len(train)], "valid": packed[0][len(train):], "test": packed[1]}


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 98) packed bits -> uint8 (N, 1, 28, 28) in {0, 255}."""
    bits = np.unpackbits(packed.numpy(), axis=1, count=PIXELS)
    return torch.from_numpy(bits * np.uint8(255)).view(-1, 1, 28, 28)


class BinarizedMNIST:
    """Already binary: trained and scored as is, with a Bernoulli likelihood."""

    image_shape = (1, 28, 28)
    default_binarize = "none"
    default_likelihood = "bernoulli"

    def __init__(self, source: str = "auto", seed: int = DEFAULT_SEED):
        if source not in SOURCES:
            raise DrawkitError(f"binarized-mnist option source='{source}' is not one of: {', '.join(SOURCES)}")
        self.wanted, self.seed = source, check_whole_number("binarized-mnist option seed", seed, least=0)
        self.source = None  # set by load: "larochelle-murray" or "derived-from-mnist (seed N)"

    @property
    def num_classes(self):
        """10 (MNIST's digits) for the derived set; None for Larochelle & Murray's, which has no labels.

        With source=auto the source is known once a split is loaded; before that 10 is assumed,
        and load_labels refuses if the .amat files turn out to be there.
        """
        return None if self.no_labels_reason else 10

    @property
    def no_labels_reason(self):
        if self.wanted == "larochelle-murray" or self.source == "larochelle-murray":
            return NO_LABELS
        return None

    def load_labels(self, split: str, root: Path, download: bool) -> torch.Tensor:
        """MNIST's labels of the rows the derived set was made from; refused for the .amat files."""
        if self.wanted == "larochelle-murray" or (self.wanted == "auto" and amat_folder(root) is not None):
            raise DrawkitError(f"binarized-mnist: {NO_LABELS}")
        try:
            labels = cached("binarized-mnist", "derived-labels.pt", {"labels": "mnist"},
                            lambda: {s: MNIST().load_labels(s, root, download).to(torch.uint8) for s in SPLITS})
        except DataNotFound as exc:
            raise DataNotFound(f"MNIST, whose labels the derived set has, {exc}") from None
        return labels[split].long()

    def load(self, split: str, root: Path, download: bool) -> torch.Tensor:
        folder = self._amat(root, download)
        if folder is not None:
            self.source = "larochelle-murray"
            return read_amat(folder / amat_name(split))
        self.source = f"derived-from-mnist (seed {self.seed})"
        try:
            packed = cached("binarized-mnist", f"derived-seed{self.seed}.pt", {"seed": self.seed},
                            lambda: derive(root, download, self.seed))
        except DataNotFound as exc:
            looked = "" if self.wanted == "derived" else (
                f"{amat_name('{train,valid,test}')} not found in {root} or {root / 'binarized_mnist'}, and ")
            raise DataNotFound(f"{looked}MNIST to derive them from {exc}") from None
        return unpack(packed[split])

    def _amat(self, root: Path, download: bool):
        """The folder of the .amat files to read, or None for the derived set."""
        folder = amat_folder(root) if self.wanted != "derived" else None
        if folder is None and self.wanted == "larochelle-murray":
            folder = self._fetch(root, download)
        return folder

    def _fetch(self, root: Path, download: bool) -> Path:
        where = f"{root} or {root / 'binarized_mnist'}"
        if not download:
            raise DataNotFound(f"{amat_name('{train,valid,test}')} not found in {where} and downloads are off")
        try:
            return download_amat(root)
        except Exception as exc:  # offline, moved, disk full: the user fetches them by hand
            raise DataNotFound(f"{amat_name('{train,valid,test}')} not found in {where} and the download "
                               f"failed ({type(exc).__name__})") from None


@hookimpl
def register_datasets(register):
    register("binarized-mnist", BinarizedMNIST,
             description="MNIST binarized once: Larochelle & Murray's files, else derived with a fixed seed")
