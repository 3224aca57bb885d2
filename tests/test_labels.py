"""Labels from dataset plugins: num_classes, load_labels, and that each label belongs to its image.

Nothing downloads: the sets made from MNIST read the generated stand-in ($DRAWKIT_DATA, set by
conftest; its labels are the number of strokes minus 2, so 0 or 1), torchvision layouts are
written as tiny fake files in tmp_path, and every cache goes to tmp_path through $XDG_CACHE_HOME.
"""
import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import NoisePictures
from fake_files import fake_scipy, numbered, write_idx
from drawkit.data import load_labelled_split, load_labels, load_split, num_classes
from drawkit.errors import DataNotFound, DrawkitError
from drawkit.registry import get_registry
from drawkit_plugins.binarized_mnist import BinarizedMNIST
from drawkit_plugins.image_folder import ImageFolder
from drawkit_plugins.mnist import MNIST
from drawkit_plugins.synthetic_mnist import ClutteredMNIST, MultiMNIST
from drawkit_plugins.tensor_cache import cached
from drawkit_plugins.torchvision_datasets import CIFAR10, SVHN, FashionMNIST

SPLITS = ("train", "valid", "test")
#: sha256 of cluttered-mnist (size=300) test images on the generated stand-in: crops=strokes as drawn before
#: labels existed, and the default crops=anywhere as first drawn
CLUTTERED_TEST_SHA256 = {"strokes": "88b0589b31ad1d6e", "anywhere": "174e9aace573616a"}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Never download; never touch the user's cache."""
    monkeypatch.setenv("DRAWKIT_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mnist_files() -> dict:
    """The generated stand-in's four files read directly: {"train"/"test": (images (N, 28, 28), labels (N,))}."""
    raw = Path(os.environ["DRAWKIT_DATA"]) / "MNIST" / "raw"
    out = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images = (raw / f"{prefix}-images-idx3-ubyte").read_bytes()
        labels = (raw / f"{prefix}-labels-idx1-ubyte").read_bytes()
        assert struct.unpack(">II", labels[:8]) == (2049, len(labels) - 8)
        out[part] = (torch.from_numpy(np.frombuffer(images[16:], np.uint8).reshape(-1, 28, 28).copy()),
                     torch.from_numpy(np.frombuffer(labels[8:], np.uint8).astype(np.int64)))
    return out


def split_rows(rows: dict, split: str) -> torch.Tensor:
    """MNIST's split of the file rows: train the first 50,000, valid the last 10,000 training rows."""
    return {"train": rows["train"][:50_000], "valid": rows["train"][50_000:], "test": rows["test"]}[split]


def one_line_error(caught) -> str:
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# --- the contract, in drawkit.data ------------------------------------------------------------------------


class Labelled:
    """Four images and what the test gives as their labels and number of classes."""

    image_shape = (1, 2, 2)

    def __init__(self, labels, classes=3):
        self.labels, self.num_classes = labels, classes

    def load(self, split, root, download):
        return torch.zeros(4, 1, 2, 2, dtype=torch.uint8)

    def load_labels(self, split, root, download):
        return self.labels


def test_a_well_formed_plugin_gives_long_labels():
    dataset = Labelled(torch.tensor([0, 2, 1, 2], dtype=torch.int32))
    assert num_classes(dataset, "toy") == 3
    labels = load_labels(dataset, "toy", "train")
    assert labels.dtype == torch.long and labels.tolist() == [0, 2, 1, 2]
    images, labels = load_labelled_split(dataset, "toy", "valid")
    assert images.shape == (4, 1, 2, 2) and labels.tolist() == [0, 2, 1, 2]


@pytest.mark.parametrize("labels, classes, says", [
    (torch.tensor([0, 1, 2]), 3, "returned 3 train labels for 4 images"),
    (torch.tensor([0, 1, 2, 3]), 3, "label 3 outside 0..2"),
    (torch.tensor([0, -1, 2, 2]), 3, "label -1 outside 0..2"),
    (torch.tensor([0.0, 1.0, 2.0, 1.0]), 3, "dtype torch.float32"),
    (torch.zeros(4, 1, dtype=torch.long), 3, "shape (4, 1)"),
    ([0, 1, 2, 1], 3, "as list"),
    (torch.tensor([0, 0, 0, 0]), 1, "num_classes=1"),
    (torch.tensor([0, 0, 0, 0]), "10", "num_classes='10'"),
])
def test_malformed_labels_are_refused_naming_the_dataset(labels, classes, says):
    with pytest.raises(DrawkitError) as caught:
        load_labels(Labelled(labels, classes), "toy", "train")
    message = one_line_error(caught)
    assert "dataset 'toy'" in message and says in message, message


def test_the_length_is_checked_against_the_count_given():
    dataset = Labelled(torch.tensor([0, 1, 2, 1]))
    assert load_labels(dataset, "toy", "test", count=4).tolist() == [0, 1, 2, 1]
    with pytest.raises(DrawkitError, match="dataset 'toy' returned 4 test labels for 3 images"):
        load_labels(dataset, "toy", "test", count=3)


def test_a_dataset_without_labels_is_one_line_saying_what_to_do():
    with pytest.raises(DrawkitError) as caught:
        num_classes(NoisePictures(), "noise")
    message = one_line_error(caught)
    assert message.startswith("dataset 'noise' has no labels, so --task classify cannot use it; "
                              "choose a labelled data set (mnist, "), message
    with pytest.raises(DrawkitError, match="dataset 'noise' has no labels"):
        load_labels(NoisePictures(), "noise", "train")
    with pytest.raises(DrawkitError, match="dataset 'noise' has no labels"):
        load_labelled_split(NoisePictures(), "noise", "train")
    assert load_split(NoisePictures(), "noise", "train").shape == (32, 3, 8, 8)   # still fine for generation

    class Said(NoisePictures):
        no_labels_reason = "noise has no classes"

    with pytest.raises(DrawkitError, match=r"dataset 'said' has no labels \(noise has no classes\), so "):
        num_classes(Said(), "said")

    class Half(NoisePictures):
        num_classes = 4

    with pytest.raises(DrawkitError, match="dataset 'half' has num_classes but no load_labels"):
        num_classes(Half(), "half")


def test_missing_label_files_say_where_they_were_looked_for(tmp_path):
    with pytest.raises(DataNotFound) as caught:
        load_labels(MNIST(), "mnist", "test", str(tmp_path), count=10)
    message = one_line_error(caught)
    assert message.startswith("dataset 'mnist': labels not found in ") and str(tmp_path) in message
    assert "--data-dir" in message


def test_every_labelled_built_in_has_ten_classes(tmp_path):
    registry = get_registry()
    for name in ("mnist", "binarized-mnist", "fashion-mnist", "svhn", "cifar10", "cluttered-mnist"):
        assert num_classes(registry.get("dataset", name).create({}), name) == 10, name
    with pytest.raises(DrawkitError, match="dataset 'multi-mnist' has no labels"):
        num_classes(registry.get("dataset", "multi-mnist").create({}), "multi-mnist")
    (tmp_path / "a").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "a" / "x.png")
    (tmp_path / "b").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "b" / "x.png")
    assert num_classes(registry.get("dataset", "image-folder").create({"path": str(tmp_path)}), "image-folder") == 2


# --- mnist and binarized-mnist ----------------------------------------------------------------------------


def test_mnist_labels_are_the_label_files_split_as_the_images(mnist_files):
    dataset = MNIST()
    for split in SPLITS:
        images, labels = load_labelled_split(dataset, "mnist", split)
        assert labels.dtype == torch.long and len(labels) == len(images)
        assert torch.equal(images[:, 0], split_rows({p: f[0] for p, f in mnist_files.items()}, split))
        assert torch.equal(labels, split_rows({p: f[1] for p, f in mnist_files.items()}, split))
    assert set(labels.tolist()) == {0, 1}                           # the stand-in's two classes


def test_derived_binarized_mnist_has_mnists_labels_for_the_same_rows(mnist_files, tmp_path):
    dataset = BinarizedMNIST()
    for split in SPLITS:
        images, labels = load_labelled_split(dataset, "binarized-mnist", split)
        grey = split_rows({p: f[0] for p, f in mnist_files.items()}, split)
        assert torch.equal(labels, split_rows({p: f[1] for p, f in mnist_files.items()}, split))
        assert len(images) == len(grey)
        assert ((images[:, 0] > 0) <= (grey > 0)).all()             # ink only where that very digit has ink
    assert num_classes(dataset, "binarized-mnist") == 10
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    again = BinarizedMNIST(source="derived").load_labels("valid", empty, download=False)   # from the cache
    assert torch.equal(again, mnist_files["train"][1][50_000:])


def write_amat_set(folder: Path, rows: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (folder / f"binarized_mnist_{split}.amat").write_text("".join(" ".join(["0"] * 784) + " \n"
                                                                      for _ in range(rows)))


def test_larochelle_murray_files_have_no_labels_and_say_use_derived(tmp_path):
    write_amat_set(tmp_path)
    dataset = BinarizedMNIST()                                      # auto: the .amat files are there
    with pytest.raises(DrawkitError) as caught:
        load_labels(dataset, "binarized-mnist", "train", str(tmp_path))
    message = one_line_error(caught)
    assert "carry no labels" in message and "source=derived" in message
    load_split(dataset, "binarized-mnist", "train", str(tmp_path))  # once loaded, the source is known
    with pytest.raises(DrawkitError) as caught:
        num_classes(dataset, "binarized-mnist")
    message = one_line_error(caught)
    assert message.startswith("dataset 'binarized-mnist' has no labels (Larochelle & Murray's") and \
        "source=derived" in message and "--task classify" in message
    with pytest.raises(DrawkitError, match="has no labels .*source=derived"):
        num_classes(BinarizedMNIST(source="larochelle-murray"), "binarized-mnist")
    assert num_classes(BinarizedMNIST(source="derived"), "binarized-mnist") == 10


# --- fashion-mnist, cifar10, svhn --------------------------------------------------------------------------






def index_of(images: torch.Tensor) -> torch.Tensor:
    """The index each ``numbered`` image spells."""
    flat = images.flatten(1).long()
    return flat[:, 0] + 256 * flat[:, 1]


def label_of_index(index, offset: int = 0):
    """The label the fake files give image ``index``: a pattern no split boundary can keep by accident."""
    return (index * 7 + offset) % 10


def check_pairs(dataset, name: str, data_dir: Path, sizes: dict, offset: dict = None) -> None:
    for split, size in sizes.items():
        images, labels = load_labelled_split(dataset, name, split, str(data_dir))
        assert len(labels) == size and labels.dtype == torch.long, split
        assert torch.equal(labels, label_of_index(index_of(images), (offset or {}).get(split, 0))), split


def test_fashion_mnist_labels_follow_their_images(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", numbered(10_004, (28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte", label_of_index(np.arange(10_004)))
    write_idx(raw / "t10k-images-idx3-ubyte", numbered(3, (28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte", label_of_index(np.arange(3), 5))
    check_pairs(FashionMNIST(), "fashion-mnist", tmp_path, {"train": 4, "valid": 10_000, "test": 3}, {"test": 5})


def test_cifar10_labels_follow_their_images(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = numbered(5 * 1_001, (3, 32, 32))
    for i in range(5):
        rows = slice(i * 1_001, (i + 1) * 1_001)
        with (folder / f"data_batch_{i + 1}").open("wb") as f:
            pickle.dump({"data": images[rows].reshape(1_001, 3072),
                         "labels": label_of_index(np.arange(5 * 1_001)[rows]).tolist()}, f, protocol=2)
    with (folder / "test_batch").open("wb") as f:
        pickle.dump({b"data": images[:7].reshape(7, 3072), b"labels": label_of_index(np.arange(7), 3).tolist()},
                    f, protocol=2)                                  # bytes keys, as Python 2 wrote them
    check_pairs(CIFAR10(), "cifar10", tmp_path, {"train": 5, "valid": 5_000, "test": 7}, {"test": 3})
    with (folder / "data_batch_2").open("wb") as f:
        pickle.dump({"data": images[:1_001].reshape(1_001, 3072)}, f, protocol=2)   # no labels in it
    with pytest.raises(DrawkitError, match="data_batch_2 is not a CIFAR-10 python batch"):
        load_labels(CIFAR10(), "cifar10", "train", str(tmp_path), count=5)


def test_svhn_labels_follow_their_images_and_ten_is_the_digit_zero(tmp_path, monkeypatch):
    """torchvision's own SVHN reader, given what scipy would read from the .mat files (digit 0 stored as 10)."""
    import torchvision.datasets

    def loadmat(path):
        n = 50 if Path(path).name.startswith("train") else 4
        digits = label_of_index(np.arange(n))
        return {"X": numbered(n, (3, 32, 32)).transpose(2, 3, 1, 0),          # the .mat layout (H, W, C, N)
                "y": np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]}

    fake_scipy(monkeypatch, loadmat)
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    for part in ("train", "test"):
        (tmp_path / f"{part}_32x32.mat").write_bytes(b"")
    check_pairs(SVHN(), "svhn", tmp_path, {"train": 45, "valid": 5, "test": 4})
    assert 0 in load_labels(SVHN(), "svhn", "train", str(tmp_path), count=45).tolist()


def test_svhn_maps_ten_to_zero_itself(tmp_path, monkeypatch):
    """A reader that leaves the .mat files' 10 as it is still gives labels 0..9."""
    fake_scipy(monkeypatch)

    class RawSVHN:
        def __init__(self, root, split, download):
            self.data = numbered(20, (3, 32, 32))
            self.labels = np.arange(20) % 10 + 1                    # 1..10: 10 is the digit 0

    monkeypatch.setattr("torchvision.datasets.SVHN", RawSVHN)
    (tmp_path / "test_32x32.mat").write_bytes(b"")
    labels = load_labels(SVHN(), "svhn", "test", str(tmp_path), count=20)
    assert labels.tolist() == [(i + 1) % 10 for i in range(20)]


# --- multi-mnist and cluttered-mnist -----------------------------------------------------------------------


def test_multi_mnist_refuses_labels_saying_why():
    with pytest.raises(DrawkitError) as caught:
        load_labels(MultiMNIST(size=10), "multi-mnist", "train")
    message = one_line_error(caught)
    assert message.startswith("dataset 'multi-mnist' has no labels (each image holds two digits") and \
        "--task classify" in message


def ink_key(values: torch.Tensor) -> bytes:
    """The sorted non-zero pixel values: the same for a digit and for a canvas holding only that digit."""
    return values[values > 0].sort().values.numpy().tobytes()


def test_cluttered_label_is_the_one_whole_digit(mnist_files):
    digits, digit_labels = mnist_files["test"]                      # test images come from MNIST's test digits
    labels_of = {}
    for digit, label in zip(digits, digit_labels.tolist()):
        labels_of.setdefault(ink_key(digit), set()).add(label)
    clean = ClutteredMNIST(size=100, clutter=0)
    images, labels = load_labelled_split(clean, "cluttered-mnist", "test")
    assert len(labels) == len(images) == 20 and labels.dtype == torch.long
    for image, label in zip(images[:, 0], labels.tolist()):
        assert labels_of[ink_key(image)] == {label}                 # the digit whose ink this is has this label
    busy = ClutteredMNIST(size=100)
    busy_images, busy_labels = load_labelled_split(busy, "cluttered-mnist", "test")
    assert torch.equal(busy_labels, labels)                         # the clutter does not change the label
    assert (busy_images >= images).all()                            # and the labelled digit is there, whole
    assert (busy_images > images).any()


def test_fresh_cluttered_epochs_differ_and_keep_their_labels(mnist_files):
    digits, digit_labels = mnist_files["train"]
    labels_of = {}
    for digit, label in zip(digits[:50_000], digit_labels[:50_000].tolist()):  # training draws from these only
        labels_of.setdefault(ink_key(digit), set()).add(label)
    fresh = ClutteredMNIST(size=100, clutter=0, fresh=True)
    assert fresh.redraws_training
    root = Path(os.environ["DRAWKIT_DATA"])
    first, second = fresh.load_epoch(1, root, download=False), fresh.load_epoch(2, root, download=False)
    assert first["images"].shape == (100, 1, 100, 100) and first["labels"].dtype == torch.long
    assert not torch.equal(first["images"], second["images"])               # a new draw every epoch
    assert torch.equal(first["images"], fresh.load_epoch(1, root, download=False)["images"])  # the same one again
    for drawn in (first, second):
        for image, label in zip(drawn["images"][:, 0], drawn["labels"].tolist()):
            assert label in labels_of[ink_key(image)]
    fixed = ClutteredMNIST(size=100, clutter=0)
    assert torch.equal(fresh.load("valid", root, download=False), fixed.load("valid", root, download=False))
    with pytest.raises(DrawkitError, match="cluttered-mnist option fresh must be true or false, got 'maybe'"):
        ClutteredMNIST(fresh="maybe")


def test_batches_serve_each_epoch_its_own_draw():
    from drawkit.data import Batches, training_split

    fresh = ClutteredMNIST(size=40, canvas=32, clutter=1, fresh=True)
    images, labels, redraw = training_split(fresh, "cluttered-mnist", None, torch.device("cpu"), labelled=True)
    batches = Batches(images, 8, labels=labels, redraw=redraw)
    epoch = {e: list(batches.epoch(e)) for e in (1, 2)}
    again = {e: list(Batches(images, 8, labels=labels, redraw=redraw).epoch(e, skip=2)) for e in (2, 1)}
    for e in (1, 2):
        drawn_images, drawn_labels = redraw(e)
        served = torch.cat([x for x, _ in epoch[e]])
        assert sorted(map(bytes, served.flatten(1).numpy())) == \
            sorted(map(bytes, drawn_images.flatten(1).numpy()))                # epoch e is redraw(e), shuffled
        for (x, y), (x2, y2) in zip(epoch[e][2:], again[e]):
            assert torch.equal(x, x2) and torch.equal(y, y2)                     # a resumed epoch: the same batches
    assert not torch.equal(torch.cat([x for x, _ in epoch[1]]), torch.cat([x for x, _ in epoch[2]]))


@pytest.mark.parametrize("crops", sorted(CLUTTERED_TEST_SHA256))
def test_cluttered_images_never_change(crops):
    images = ClutteredMNIST(size=300, crops=crops).load("test", Path(os.environ["DRAWKIT_DATA"]), download=False)
    assert hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16] == CLUTTERED_TEST_SHA256[crops]


def test_cluttered_labels_are_cached_with_the_images(tmp_path, monkeypatch):
    mnist_root = Path(os.environ["DRAWKIT_DATA"])
    labels = ClutteredMNIST(size=100).load_labels("valid", mnist_root, download=False)   # labels first
    images = ClutteredMNIST(size=100).load("valid", mnist_root, download=False)
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    assert torch.equal(ClutteredMNIST(size=100).load_labels("valid", empty, download=False), labels)
    assert torch.equal(ClutteredMNIST(size=100).load("valid", empty, download=False), images)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh"))   # made afresh: the same labels
    assert torch.equal(ClutteredMNIST(size=100).load_labels("valid", mnist_root, download=False), labels)
    assert not torch.equal(ClutteredMNIST(size=100, seed=1).load_labels("valid", mnist_root, download=False),
                           labels)


def test_a_cache_file_made_without_labels_is_made_again(tmp_path):
    mnist_root = Path(os.environ["DRAWKIT_DATA"])
    key = {"seed": 0, "split": "test", "n": 20, "canvas": 100, "clutter": 8, "fragment": 8, "crops": "anywhere"}
    stale = torch.zeros(20, 100, 100, dtype=torch.uint8)
    cached("cluttered-mnist", "seed0-splittest-n20-canvas100-clutter8-fragment8-cropsanywhere.pt", key,
           lambda: {"images": stale})                               # what an older drawkit cached
    labels = ClutteredMNIST(size=100).load_labels("test", mnist_root, download=False)
    assert labels.shape == (20,)
    assert ClutteredMNIST(size=100).load("test", mnist_root, download=False).sum() > 0


# --- image-folder -------------------------------------------------------------------------------------------


def class_folder(root: Path, layout: dict) -> Path:
    """``layout``: relative path -> grey level of an 6 x 6 picture written there."""
    for relative, grey in layout.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (6, 6), grey).save(root / relative)
    return root


def test_image_folder_classes_are_its_sorted_sub_folders(tmp_path):
    shade = {"cat": 40, "dog": 120, "emu": 200}
    layout = {f"{name}/{i}.png": grey for name, grey in shade.items() for i in range(6)}
    layout["dog/deeper/still/7.png"] = shade["dog"]                 # a picture below a class folder is that class
    layout[".hidden/0.png"] = 250                                   # hidden: no class, no picture
    root = class_folder(tmp_path / "pics", layout)
    (root / "empty").mkdir()                                        # no pictures: no class
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not a picture")
    dataset = ImageFolder(path=str(root), image_size=4, grayscale=True)
    assert dataset.classes == ["cat", "dog", "emu"] and num_classes(dataset, "image-folder") == 3
    grey_of_class = torch.tensor(list(shade.values()))
    seen = 0
    for split in SPLITS:
        images, labels = load_labelled_split(dataset, "image-folder", split)
        assert torch.equal(images[:, 0, 2, 2].long(), grey_of_class[labels]), split
        seen += len(labels)
    assert seen == 19


def test_image_folder_labels_with_fewer_than_three_pictures(tmp_path):
    dataset = ImageFolder(path=str(class_folder(tmp_path, {"b/1.png": 9, "a/1.png": 3})), image_size=4)
    for split in SPLITS:
        images, labels = load_labelled_split(dataset, "image-folder", split)
        assert labels.tolist() == [0, 1] and images[:, 0, 2, 2].tolist() == [3, 9]


@pytest.mark.parametrize("layout, says", [
    ({"1.png": 0, "2.png": 0, "3.png": 0}, "3 of its 3 pictures lie directly in"),
    ({"a/1.png": 0, "b/2.png": 0, "3.png": 0}, "1 of its 3 pictures lie directly in"),
    ({"only/1.png": 0, "only/2.png": 0}, "all its pictures lie in one sub-folder"),
])
def test_image_folder_without_classes_says_why(tmp_path, layout, says):
    dataset = ImageFolder(path=str(class_folder(tmp_path / "pics", layout)), image_size=4)
    with pytest.raises(DrawkitError) as caught:
        num_classes(dataset, "image-folder")
    message = one_line_error(caught)
    assert message.startswith("dataset 'image-folder' has no labels (") and says in message
    assert "sub-folder named after it" in message and "--task classify" in message
    with pytest.raises(DrawkitError, match=says):
        dataset.load_labels("train", tmp_path, download=False)
    assert sum(len(dataset.load(split, tmp_path, download=False)) for split in SPLITS) >= len(layout)
