"""The user's own pictures: every image file under a folder, centre-cropped to a square and resized.

Options: ``path`` (the folder; relative to the current directory; the data root is not used),
``image_size`` (side in pixels, default 64), ``grayscale`` (default false: 3 channels).
Subfolders are searched; hidden files and folders are skipped. Transparent parts become
black, as for ``--image`` files; EXIF rotation is applied. Files that cannot be read are
skipped and counted once. Splits are fixed by a hash of each file's path under the folder
(about 90 / 5 / 5), so adding pictures never moves the others between splits; valid and test
get at least one picture each when there are three or more, and fewer than three are used for
every split.

Labels: when every picture lies in a sub-folder of the folder (at any depth below it), the
sub-folders directly under the folder are the classes, numbered in sorted order of their names;
a picture's label is the class of the sub-folder it lies under. Only sub-folders holding at least
one picture file count. Pictures directly in the folder, or a single sub-folder, mean no labels.
"""
import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from drawkit import hookimpl
from drawkit.errors import DrawkitError, check_flag, check_whole_number
from drawkit.progress import stderr

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
TRAIN_SHARE, VALID_SHARE = 0.90, 0.05  # test takes the rest
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
SPLITS = ("train", "valid", "test")


def find_pictures(folder: Path) -> list[Path]:
    """Image files under ``folder`` by extension, in a fixed order, without hidden files or folders."""
    found = (p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def to_8bit(picture: Image.Image) -> Image.Image:
    """16-bit and float greys scaled to 0..255 (Pillow's own conversion would clip them to white)."""
    if picture.mode in SIXTEEN_BIT:
        values = np.asarray(picture, dtype=np.float64) / 257
    elif picture.mode == "F":
        values = np.asarray(picture, dtype=np.float64)
        values = values * 255 if values.max(initial=0) <= 1 else values
    else:
        return picture
    return Image.fromarray(np.clip(values.round(), 0, 255).astype(np.uint8), mode="L")


def read_picture(path: Path, size: int, grayscale: bool) -> np.ndarray:
    """A picture file -> uint8 (C, size, size): first frame, upright, on black, centre square, resized."""
    with Image.open(path) as opened:
        opened.seek(0)
        opened.draft(None, (size, size))  # JPEG: decode at the smallest scale still at least size x size
        picture = to_8bit(ImageOps.exif_transpose(opened)).convert("RGBA")
    black = Image.new("RGBA", picture.size, (0, 0, 0, 255))
    picture = Image.alpha_composite(black, picture).convert("L" if grayscale else "RGB")
    side = min(picture.size)
    left, top = (picture.width - side) // 2, (picture.height - side) // 2
    picture = picture.crop((left, top, left + side, top + side))  # cropped first, so no edge bleeds in
    picture = picture.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(picture, dtype=np.uint8).reshape(size, size, -1).transpose(2, 0, 1)


def split_of(names: list[str]) -> dict[str, list[int]]:
    """Indices of ``names`` per split, by hash: ranges of the hash order, none empty when there are 3 or more."""
    def position(name: str) -> float:  # in [0, 1), the same on every machine
        return int(hashlib.sha256(name.encode()).hexdigest()[:15], 16) / 16 ** 15

    order = sorted(range(len(names)), key=lambda i: (position(names[i]), names[i]))
    spots = [position(names[i]) for i in order]
    n = len(order)
    a = sum(s < TRAIN_SHARE for s in spots)
    b = sum(s < TRAIN_SHARE + VALID_SHARE for s in spots)
    b = min(b, n - 1)
    a = max(min(a, b - 1), 1)
    b = max(b, a + 1)
    return {"train": order[:a], "valid": order[a:b], "test": order[b:]}


class ImageFolder:
    """8-bit pictures: scored with the discretized logistic and never binarized, unless asked."""

    default_binarize = "none"
    default_likelihood = "logistic"

    def __init__(self, path: str = None, image_size: int = 64, grayscale: bool = False):
        if path is None:
            raise DrawkitError("image-folder needs a folder of pictures: --dataset-opt path=DIR")
        check_whole_number("image-folder option image_size (pixels)", image_size)
        self.path = Path(str(path)).expanduser().resolve()
        if not self.path.is_dir():
            what = "is not a folder" if self.path.exists() else "does not exist"
            raise DrawkitError(f"image-folder path {self.path} {what}; pass --dataset-opt path=DIR, "
                               f"a folder holding your pictures")
        self.size, self.grayscale = image_size, check_flag("image-folder option grayscale", grayscale)
        self.image_shape = (1 if self.grayscale else 3, image_size, image_size)
        self.source = f"image folder {self.path}"
        self._files = None   # the picture files found, listed once so images, labels and classes agree
        self._splits = None  # split -> uint8 (N, C, size, size), read once for all splits
        self._labels = None  # split -> long (N,), or None without classes

    @property
    def classes(self) -> list[str]:
        """The class names (sub-folders holding pictures, sorted); empty when the folder has no labels."""
        return [] if self._why_no_labels() else sorted({self._class_of(f) for f in self._pictures()})

    @property
    def num_classes(self):
        return len(self.classes) or None

    @property
    def no_labels_reason(self):
        return self._why_no_labels()

    def load(self, split: str, root: Path, download: bool) -> torch.Tensor:
        if self._splits is None:
            self._splits, self._labels = self._read()
        return self._splits[split]

    def load_labels(self, split: str, root: Path, download: bool) -> torch.Tensor:
        reason = self._why_no_labels()
        if reason:
            raise DrawkitError(f"image-folder has no labels: {reason}")
        self.load(split, root, download)
        return self._labels[split]

    def _pictures(self) -> list[Path]:
        if self._files is None:
            self._files = find_pictures(self.path)
        return self._files

    def _class_of(self, file: Path) -> str:
        return file.relative_to(self.path).parts[0]

    def _why_no_labels(self):
        """Why the pictures have no classes, or None when they have."""
        files = self._pictures()
        if not files:
            return f"it found no pictures in {self.path}"
        loose = [f for f in files if len(f.relative_to(self.path).parts) == 1]
        if loose:
            return (f"{len(loose)} of its {len(files)} pictures lie directly in {self.path} (first: "
                    f"{loose[0].name}); put each class's pictures in a sub-folder named after it")
        classes = {self._class_of(f) for f in files}
        if len(classes) == 1:
            return (f"all its pictures lie in one sub-folder of {self.path} ({classes.pop()}), so there is one "
                    f"class; put each class's pictures in a sub-folder named after it")
        return None

    def _read(self) -> tuple:
        files = self._pictures()
        if not files:
            raise DrawkitError(f"image-folder found no pictures in {self.path} or its subfolders; put "
                               f"{', '.join(e[1:].upper() for e in EXTENSIONS[:4])}... files there or pass "
                               f"another --dataset-opt path=DIR")
        names, arrays, skipped = [], [], []
        classes = {name: i for i, name in enumerate(self.classes)}
        for file in files:
            try:
                arrays.append(read_picture(file, self.size, self.grayscale))
            except Exception:  # not a picture after all, truncated, too large: skip it, say so once
                skipped.append(file)
                continue
            names.append(file.relative_to(self.path).as_posix())
        first = skipped[0].relative_to(self.path) if skipped else None
        if not arrays:
            raise DrawkitError(f"image-folder could read none of the {len(files)} files in {self.path} (first: "
                               f"{first}); check that they are pictures (PNG, JPEG, ...)")
        if skipped:
            stderr.print(f"image-folder: skipped {len(skipped)} of {len(files)} files in {self.path} that could not "
                         f"be read as pictures (first: {first})", highlight=False, soft_wrap=True)
        images = torch.from_numpy(np.stack(arrays))  # (N, C, size, size)
        labels = torch.tensor([classes[name.split("/")[0]] for name in names]) if classes else None  # long (N,)
        if len(arrays) < 3:
            stderr.print(f"image-folder: only {len(arrays)} picture(s) in {self.path}: train, valid and test "
                         f"all use them", highlight=False, soft_wrap=True)
            return dict.fromkeys(SPLITS, images), dict.fromkeys(SPLITS, labels)
        splits = {split: torch.tensor(indices) for split, indices in split_of(names).items()}
        return ({split: images[index] for split, index in splits.items()},
                {split: None if labels is None else labels[index] for split, index in splits.items()})


@hookimpl
def register_datasets(register):
    register("image-folder", ImageFolder,
             description="your own pictures: --dataset-opt path=DIR [image_size=64] [grayscale=true]")
