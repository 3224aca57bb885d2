"""The paper's two made-up MNIST sets: two digits on a 60x60 canvas, and one digit in 100x100 clutter.

Both are built from MNIST in the data root (torchvision layout) and split as MNIST is: train
from MNIST's first 50,000 training digits, valid from its last 10,000, test from its test
digits, so no test digit is ever seen in training. Each split is drawn from its own generator,
seeded from (data set, seed, split), and cached; the same options give the same tensors.
multi-mnist's overlapping strokes combine by maximum; cluttered-mnist follows Mnih et al. 2014's
generator (``cluttered``). Sizes: ``size`` training images, and size // 5 each
for valid and test (50,000 / 10,000 / 10,000 by default).

With ``fresh=true`` the training images are drawn anew for every epoch (``load_epoch``; from the
same 50,000 training digits, by a generator of that epoch's own), so a model never sees the same
composition twice: the unlimited training data of on-the-fly generation, which a fixed set of
clutter cannot give. Valid and test stay fixed and cached.

cluttered-mnist is labelled: an image's label is MNIST's label of its one whole digit (the
clutter fragments do not count), taken from the digit index drawn for the image itself, so the
images are the same as without labels; images and labels are cached together. multi-mnist has
no labels: two digits per image, which one label cannot name.
"""
import hashlib
from pathlib import Path

import torch

from drawkit import hookimpl
from drawkit.errors import DataNotFound, DrawkitError, check_choice, check_flag, check_whole_number
from drawkit_plugins.mnist import MNIST
from drawkit_plugins.tensor_cache import cached

DEFAULT_SEED = 0
DEFAULT_SIZE = 50_000
DIGIT = 28
CROPS = ("anywhere", "strokes")  # where clutter crops come from: see ``cluttered``
CHUNK = 5_000  # images placed per step: the (chunk, 784) index tensors stay ~30 MB


def split_generator(dataset: str, seed: int, split: str) -> torch.Generator:
    """A generator of its own per (data set, seed, split): making one split never shifts another."""
    digest = hashlib.sha256(f"{dataset}:{seed}:{split}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def paste(canvas: torch.Tensor, patches: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
          reduce: str = "amax") -> None:
    """canvas (N, H, W), patches (N, h, w) placed with their corner at (top, left) (N,), combined with what is
    there by ``reduce``: "amax" (the brighter pixel) or "sum" (strokes add up; the caller clips)."""
    n, height, width = canvas.shape
    h, w = patches.shape[1:]
    rows = top[:, None] + torch.arange(h)                                 # (N, h)
    cols = left[:, None] + torch.arange(w)                                # (N, w)
    flat = (rows[:, :, None] * width + cols[:, None, :]).view(n, -1)      # (N, h * w) indices into H * W
    canvas.view(n, -1).scatter_reduce_(1, flat, patches.reshape(n, -1), reduce=reduce)


def crop(digits: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """digits (N, 28, 28) -> (N, size, size) windows whose corners are at (top, left) (N,)."""
    span = torch.arange(size)
    rows = (top[:, None] + span)[:, :, None]                              # (N, size, 1)
    cols = (left[:, None] + span)[:, None, :]                             # (N, 1, size)
    return digits[torch.arange(len(digits))[:, None, None], rows, cols]


def two_digits(source: torch.Tensor, n: int, canvas: int, g: torch.Generator) -> torch.Tensor:
    """source (M, 28, 28) uint8 -> (n, canvas, canvas): two random digits, each wholly inside, at random places."""
    picks = torch.randint(len(source), (n, 2), generator=g)
    corners = torch.randint(canvas - DIGIT + 1, (n, 2, 2), generator=g)   # (n, digit, (top, left))
    out = torch.zeros(n, canvas, canvas, dtype=torch.uint8)
    for start in range(0, n, CHUNK):
        part = slice(start, start + CHUNK)
        for k in range(2):
            paste(out[part], source[picks[part, k]], corners[part, k, 0], corners[part, k, 1])
    return out


def cluttered(source: torch.Tensor, n: int, canvas: int, clutter: int, fragment: int,
              g: torch.Generator, crops: str = "anywhere") -> torch.Tensor:
    """source (M, 28, 28) uint8 -> (n, canvas, canvas): one digit and ``clutter`` fragment x fragment crops of others.

    crops="anywhere" is the protocol of Mnih et al. 2014 as DeepMind's mnist-cluttered generator
    has it: each crop from anywhere in its 28x28 digit (so some are nearly blank), strokes added
    and clipped at full intensity. crops="strokes" (a denser clutter, drawkit's default before): crops
    from inside the 20x20 box where MNIST's strokes lie, strokes combined by maximum. Every crop
    lands wholly inside the canvas.
    """
    return cluttered_with_picks(source, n, canvas, clutter, fragment, g, crops)[0]


def cluttered_with_picks(source: torch.Tensor, n: int, canvas: int, clutter: int, fragment: int,
                         g: torch.Generator, crops: str = "anywhere") -> tuple[torch.Tensor, torch.Tensor]:
    """``cluttered``'s images and, for each, the index into ``source`` of its whole digit: long (n,)."""
    picks = torch.randint(len(source), (n,), generator=g)
    corners = torch.randint(canvas - DIGIT + 1, (n, 2), generator=g)
    others = (picks[:, None] + torch.randint(1, len(source), (n, clutter), generator=g)) % len(source)
    lo, hi = (0, DIGIT - fragment) if crops == "anywhere" else (4, max(4, 24 - fragment))
    crop_corners = torch.randint(lo, hi + 1, (n, clutter, 2), generator=g)
    places = torch.randint(canvas - fragment + 1, (n, clutter, 2), generator=g)
    # adding: each chunk is summed in int32 (no count of pieces can wrap it) and clipped once, which gives
    # what clipping after the clutter and again after the digit gives; the images stay uint8
    reduce, work_dtype = ("sum", torch.int32) if crops == "anywhere" else ("amax", torch.uint8)
    out = torch.empty(n, canvas, canvas, dtype=torch.uint8)
    for start in range(0, n, CHUNK):
        part = slice(start, start + CHUNK)
        work = torch.zeros(len(picks[part]), canvas, canvas, dtype=work_dtype)
        for k in range(clutter):
            pieces = crop(source[others[part, k]], crop_corners[part, k, 0], crop_corners[part, k, 1], fragment)
            paste(work, pieces.to(work_dtype), places[part, k, 0], places[part, k, 1], reduce)
        paste(work, source[picks[part]].to(work_dtype), corners[part, 0], corners[part, 1], reduce)
        out[part] = work.clamp_(max=255)
    return out, picks


class SyntheticMNIST:
    """Shared by both sets: option checks, split sizes, the cache; subclasses say how one split is drawn."""

    name = ""
    default_binarize = "sample"  # grey strokes as in MNIST: a fresh binarization each time an image is used
    default_likelihood = "bernoulli"
    labelled = False  # True: each image is labelled by the digit draw() picked for it, cached with the images

    def __init__(self, seed: int = DEFAULT_SEED, size: int = DEFAULT_SIZE, canvas: int = None, fresh: bool = False):
        self.seed = check_whole_number(f"{self.name} option seed", seed, least=0)
        self.size = check_whole_number(f"{self.name} option size", size, least=1)
        self.redraws_training = check_flag(f"{self.name} option fresh", fresh)
        self.canvas = check_whole_number(f"{self.name} option canvas",
                                         self.default_canvas if canvas is None else canvas, least=DIGIT)
        self.image_shape = (1, self.canvas, self.canvas)
        self.source = f"generated from MNIST (seed {self.seed})"

    def split_size(self, split: str) -> int:
        return self.size if split == "train" else max(1, self.size // 5)

    def load(self, split: str, root: Path, download: bool) -> torch.Tensor:
        return self.made(split, root, download)["images"].unsqueeze(1)  # (N, 1, canvas, canvas)

    def made(self, split: str, root: Path, download: bool) -> dict:
        """The cached tensors of a split ("images", and "labels" for a labelled set), made when missing."""
        key = {"seed": self.seed, "split": split, "n": self.split_size(split), **self.key()}
        filename = "-".join(f"{k}{v}" for k, v in key.items()) + ".pt"

        def make() -> dict:
            return self.drawn(split, split_generator(self.name, self.seed, split), root, download)

        # a labelled set's files also hold labels: its key says so, so files made without them are made again
        return cached(self.name, filename, {**key, **({"labels": "digit"} if self.labelled else {})}, make)

    def load_epoch(self, epoch: int, root: Path, download: bool) -> dict:
        """With fresh=true, the training images of ``epoch`` (and their labels): drawn now, never cached."""
        drawn = self.drawn("train", split_generator(self.name, self.seed, f"train-epoch-{epoch}"), root, download)
        return {"images": drawn["images"].unsqueeze(1), **({"labels": drawn["labels"].long()} if self.labelled else {})}

    def drawn(self, split: str, g: torch.Generator, root: Path, download: bool) -> dict:
        """A split's ``split_size`` images from MNIST's digits of that split, drawn with ``g`` (and their labels)."""
        try:
            mnist = MNIST()
            digits = mnist.load(split, root, download)[:, 0]       # (M, 28, 28) uint8
            labels = mnist.load_labels(split, root, download) if self.labelled else None  # (M,)
        except DataNotFound as exc:
            raise DataNotFound(f"MNIST, which it is made from, {exc}") from None
        images, picks = self.draw(digits, self.split_size(split), g)
        return {"images": images, **({"labels": labels[picks].to(torch.uint8)} if self.labelled else {})}

    def key(self) -> dict:
        return {"canvas": self.canvas}

    def draw(self, digits: torch.Tensor, n: int, g: torch.Generator) -> tuple:
        """(images uint8 (n, canvas, canvas), the index into ``digits`` that labels each image, or None)."""
        raise NotImplementedError


class MultiMNIST(SyntheticMNIST):
    """Two digits at random places on a 60x60 canvas (the paper's two-digit experiment)."""

    name = "multi-mnist"
    default_canvas = 60
    no_labels_reason = "each image holds two digits, which one label per image cannot name"

    def draw(self, digits, n, g):
        return two_digits(digits, n, self.canvas, g), None


class ClutteredMNIST(SyntheticMNIST):
    """One digit at a random place on a 100x100 canvas among 8x8 fragments of others (the paper's cluttered set)."""

    name = "cluttered-mnist"
    default_canvas = 100
    labelled = True
    num_classes = 10  # the digit placed whole; the clutter fragments do not count

    def __init__(self, seed: int = DEFAULT_SEED, size: int = DEFAULT_SIZE, canvas: int = None,
                 clutter: int = 8, fragment: int = 8, fresh: bool = False, crops: str = "anywhere"):
        super().__init__(seed, size, canvas, fresh)
        check_choice(f"{self.name} option crops", crops, CROPS)
        self.crops = crops
        self.clutter = check_whole_number(f"{self.name} option clutter", clutter, least=0)
        self.fragment = check_whole_number(f"{self.name} option fragment", fragment, least=1)
        largest = DIGIT if crops == "anywhere" else 20  # a digit, or the stroke box inside it
        if self.fragment > largest:
            raise DrawkitError(f"{self.name} option fragment must be at most {largest} with crops={crops}, "
                               f"got {fragment}")

    def key(self):
        return {"canvas": self.canvas, "clutter": self.clutter, "fragment": self.fragment, "crops": self.crops}

    def draw(self, digits, n, g):
        return cluttered_with_picks(digits, n, self.canvas, self.clutter, self.fragment, g, self.crops)

    def load_labels(self, split: str, root: Path, download: bool) -> torch.Tensor:
        """MNIST's label of each image's whole digit: long (N,), made and cached with the images."""
        return self.made(split, root, download)["labels"].long()


@hookimpl
def register_datasets(register):
    register("multi-mnist", MultiMNIST,
             description="two MNIST digits on a 60x60 canvas, generated from a seed and cached")
    register("cluttered-mnist", ClutteredMNIST,
             description="one MNIST digit in 100x100 among 8x8 clutter fragments, generated and cached")
