"""The dataset plugins: shapes, splits, determinism, caching, offline errors, odd picture files.

Nothing here downloads: torchvision layouts are written as tiny fake files in tmp_path, and the
sets made from MNIST are made from the generated stand-in ($DRAWKIT_DATA, set by conftest); the
checks that need the real MNIST files (the derived binarization's checksums) skip without them.
Every cache goes to tmp_path through $XDG_CACHE_HOME.
"""
import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fake_files import fake_scipy, numbered, write_idx
from drawkit.checkpoint import read_checkpoint
from drawkit.cli import app
from drawkit.data import load_split
from drawkit.errors import DataNotFound, DrawkitError
from drawkit.registry import get_registry
from drawkit_plugins.binarized_mnist import BinarizedMNIST, read_amat
from drawkit_plugins.mnist import MNIST
from drawkit_plugins.image_folder import ImageFolder, read_picture, split_of
from drawkit_plugins.synthetic_mnist import CROPS, ClutteredMNIST, MultiMNIST, cluttered, two_digits
from drawkit_plugins.torchvision_datasets import CIFAR10, SVHN, FashionMNIST

NEW = ("binarized-mnist", "fashion-mnist", "svhn", "cifar10", "multi-mnist", "cluttered-mnist", "image-folder")
SPLITS = ("train", "valid", "test")
#: sha256 of the derived binarization (seed 1234) of the canonical MNIST files, as uint8 {0, 255} bytes
DERIVED_SHA256 = {"train": "9648629da13f95a3", "valid": "d8ada5c824ce83eb", "test": "405465383ca0353a"}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Never download; never touch the user's cache."""
    monkeypatch.setenv("DRAWKIT_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def mnist_root() -> Path:
    """The generated stand-in MNIST (conftest), in torchvision's layout."""
    return Path(os.environ["DRAWKIT_DATA"])


def use_cache(monkeypatch, folder: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))


def ink(images: torch.Tensor) -> torch.Tensor:
    """Total brightness per image, in 'pixels at full white'."""
    return images.float().flatten(1).sum(1) / 255


# --- multi-mnist and cluttered-mnist -------------------------------------------------------------


def test_two_digits_stay_on_the_canvas_and_combine_by_max():
    blocks = torch.full((5, 28, 28), 255, dtype=torch.uint8)     # a "digit" that fills its whole square
    out = two_digits(blocks, 300, 60, torch.Generator().manual_seed(0))
    assert out.shape == (300, 60, 60) and out.dtype == torch.uint8
    lit = (out > 0).flatten(1).sum(1)
    assert lit.min() >= 784 and lit.max() <= 2 * 784            # both squares wholly inside, overlap by max
    assert set(out.unique().tolist()) == {0, 255}                # max, not sum: no wrap-around
    same = two_digits(blocks, 300, 60, torch.Generator().manual_seed(0))
    other = two_digits(blocks, 300, 60, torch.Generator().manual_seed(1))
    assert torch.equal(out, same) and not torch.equal(out, other)


def test_clutter_fragments_come_from_other_digits():
    digits = torch.zeros(3, 28, 28, dtype=torch.uint8)
    digits[:, 4:24, 4:24] = torch.tensor([50, 100, 150], dtype=torch.uint8)[:, None, None]  # three flat "digits"
    out = cluttered(digits, 200, 100, 8, 8, torch.Generator().manual_seed(0), crops="strokes")
    assert out.shape == (200, 100, 100)
    shades = [set(image.unique().tolist()) - {0} for image in out]
    assert all(len(s) >= 2 for s in shades)                      # the digit and fragments of another one
    assert ((out > 0).flatten(1).sum(1) > 400).all()             # more than one digit's strokes
    for crops in CROPS:
        alone = cluttered(digits, 200, 100, 0, 8, torch.Generator().manual_seed(0), crops=crops)
        assert ((alone > 0).flatten(1).sum(1) == 400).all()      # no clutter: exactly one digit's strokes


def test_clutter_as_mnih_et_al_crops_anywhere_and_adds_strokes():
    """crops=anywhere (the default) follows DeepMind's mnist-cluttered generator; crops=strokes is denser."""
    ring = torch.zeros(4, 28, 28, dtype=torch.uint8)
    ring[:, :2, :] = 200                                         # ink only in the top two rows, outside the stroke box
    lit = {crops: (cluttered(ring, 300, 100, 8, 8, torch.Generator().manual_seed(0), crops=crops) > 0)
           .flatten(1).sum(1) for crops in CROPS}
    assert (lit["strokes"] == 56).all()                          # crops from the stroke box are blank here
    assert (lit["anywhere"] > 56).float().mean() > 0.5           # crops from the whole digit reach its top rows
    full = torch.full((4, 28, 28), 200, dtype=torch.uint8)
    added = cluttered(full, 300, 100, 8, 8, torch.Generator().manual_seed(0))
    assert set(added.unique().tolist()) == {0, 200, 255}         # overlaps add up and saturate, never wrap
    maxed = cluttered(full, 300, 100, 8, 8, torch.Generator().manual_seed(0), crops="strokes")
    assert set(maxed.unique().tolist()) == {0, 200}              # combined by maximum


@pytest.mark.parametrize("cls, canvas", [(MultiMNIST, 60), (ClutteredMNIST, 100)])
def test_generated_sets_are_deterministic_and_cached(cls, canvas, mnist_root, tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "a")
    first = {split: cls(size=100).load(split, mnist_root, download=False) for split in SPLITS}
    assert {s: tuple(x.shape) for s, x in first.items()} == {
        "train": (100, 1, canvas, canvas), "valid": (20, 1, canvas, canvas), "test": (20, 1, canvas, canvas)}
    assert cls(size=100).image_shape == (1, canvas, canvas)
    assert list((tmp_path / "a" / "drawkit" / cls.name).glob("*.pt"))
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    cached = cls(size=100).load("test", empty, download=False)   # from the cache: MNIST is not needed
    assert torch.equal(cached, first["test"])
    use_cache(monkeypatch, tmp_path / "b")                       # made afresh: the same tensors
    assert torch.equal(cls(size=100).load("valid", mnist_root, download=False), first["valid"])
    assert not torch.equal(cls(size=100, seed=1).load("valid", mnist_root, download=False), first["valid"])
    assert not torch.equal(first["valid"], first["test"])


def test_multi_mnist_holds_two_digits_worth_of_ink(mnist_root):
    digits = MNIST().load("test", mnist_root, download=False)
    pairs = MultiMNIST(size=500).load("test", mnist_root, download=False)   # 100 images from MNIST's test digits
    ratio = ink(pairs).mean() / ink(digits).mean()
    assert 1.7 < ratio <= 2.0, ratio                              # two digits, a little lost where they overlap


def test_cluttered_mnist_has_clutter(mnist_root):
    clean = ClutteredMNIST(size=100, clutter=0).load("test", mnist_root, download=False)
    busy = ClutteredMNIST(size=100).load("test", mnist_root, download=False)
    assert ink(busy).mean() > 1.5 * ink(clean).mean()
    assert ClutteredMNIST(canvas=40, size=5).image_shape == (1, 40, 40)


def test_generated_set_options_are_checked():
    with pytest.raises(DrawkitError, match="multi-mnist option size must be a whole number of at least 1, got 0"):
        MultiMNIST(size=0)
    with pytest.raises(DrawkitError, match="multi-mnist option canvas must be .* at least 28, got 20"):
        MultiMNIST(canvas=20)
    with pytest.raises(DrawkitError, match=r"cluttered-mnist option fragment must be at most 28 .*got 30"):
        ClutteredMNIST(fragment=30)
    with pytest.raises(DrawkitError, match=r"fragment must be at most 20 with crops=strokes, got 21"):
        ClutteredMNIST(fragment=21, crops="strokes")
    with pytest.raises(DrawkitError, match="unknown cluttered-mnist option crops 'middle'; choose one of: anywhere"):
        ClutteredMNIST(crops="middle")
    with pytest.raises(DrawkitError, match="its options: seed, size, canvas"):
        get_registry().get("dataset", "multi-mnist").create({"n_train": 5})


# --- binarized-mnist ---------------------------------------------------------------------------------


def write_amat(path: Path, bits: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(map(str, row)) + " \n" for row in bits))   # trailing space as in the originals


@pytest.mark.parametrize("sub", ["", "binarized_mnist"])
def test_amat_files_are_read_split_by_split(tmp_path, sub):
    rng = np.random.default_rng(0)
    written = {split: rng.integers(0, 2, (rows, 784)) for split, rows in zip(SPLITS, (5, 3, 2))}
    for split, bits in written.items():
        write_amat(tmp_path / sub / f"binarized_mnist_{split}.amat", bits)
    dataset = BinarizedMNIST()
    for split, bits in written.items():
        images = dataset.load(split, tmp_path, download=False)
        assert images.shape == (len(bits), 1, 28, 28) and images.dtype == torch.uint8
        assert torch.equal(images.flatten(1), torch.from_numpy(bits.astype(np.uint8) * 255))
    assert dataset.source == "larochelle-murray"
    assert (dataset.default_binarize, dataset.default_likelihood) == ("none", "bernoulli")


def test_malformed_or_partial_amat_sets_are_refused(tmp_path):
    bad = tmp_path / "bad.amat"
    bad.write_text(" ".join(["0"] * 783) + "\n")
    with pytest.raises(DrawkitError, match="line 1 has 783 values, expected 784"):
        read_amat(bad)
    bad.write_text(" ".join(["0"] * 783 + ["2"]) + "\n")
    with pytest.raises(DrawkitError, match="other than 0 and 1"):
        read_amat(bad)
    bad.write_text("\n")
    with pytest.raises(DrawkitError, match="is empty"):
        read_amat(bad)
    write_amat(tmp_path / "binarized_mnist_train.amat", np.zeros((2, 784), dtype=int))
    with pytest.raises(DrawkitError, match="binarized_mnist_valid.amat, binarized_mnist_test.amat missing"):
        BinarizedMNIST().load("train", tmp_path, download=False)


def test_derived_binarization_counts_and_fixed_values(mnist_root, tmp_path):
    dataset = BinarizedMNIST()
    images = {split: dataset.load(split, mnist_root, download=False) for split in SPLITS}
    assert dataset.source == "derived-from-mnist (seed 1234)"
    assert {s: len(x) for s, x in images.items()} == {"train": 50_000, "valid": 10_000, "test": 10_000}
    for split, x in images.items():
        assert set(x.unique().tolist()) == {0, 255}               # exactly 0 and 1 once scaled
    grey = torch.cat([MNIST().load(split, mnist_root, download=False) for split in ("train", "valid")])
    brightness = grey.float().mean() / 255                        # one Bernoulli draw per pixel keeps the mean
    assert abs(images["train"].float().mean() / 255 - brightness) < 0.002
    again = BinarizedMNIST(source="derived").load("test", mnist_root, download=False)  # from the cache
    assert torch.equal(again, images["test"])


def test_derived_binarization_of_the_real_files_is_the_documented_one(mnist_available, tmp_path):
    images = {split: BinarizedMNIST().load(split, mnist_available, download=False) for split in SPLITS}
    for split, x in images.items():
        assert hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16] == DERIVED_SHA256[split], split
    assert 0.125 < images["train"].float().mean() / 255 < 0.137  # MNIST's mean brightness, 0.1307


def test_binarized_mnist_offline_error_names_both_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("DRAWKIT_DATA", str(tmp_path))
    with pytest.raises(DataNotFound) as caught:
        load_split(BinarizedMNIST(), "binarized-mnist", "test")
    message = str(caught.value)
    assert "binarized_mnist_{train,valid,test}.amat not found" in message
    assert "MNIST to derive them from not found" in message and "downloads are off" in message
    assert str(tmp_path) in message
    with pytest.raises(DataNotFound, match="downloads are off"):
        BinarizedMNIST(source="larochelle-murray").load("test", tmp_path, download=False)
    with pytest.raises(DrawkitError, match="option source='dynamic' is not one of: auto, larochelle-murray, derived"):
        BinarizedMNIST(source="dynamic")


# --- fashion-mnist, cifar10, svhn ---------------------------------------------------------------------






def test_fashion_mnist_from_idx_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    train, test = numbered(10_004, (28, 28)), numbered(3, (28, 28))
    write_idx(raw / "train-images-idx3-ubyte", train)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(10_004))
    write_idx(raw / "t10k-images-idx3-ubyte", test)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(3))
    dataset = FashionMNIST()
    loaded = {split: load_split(dataset, "fashion-mnist", split, str(tmp_path)) for split in SPLITS}
    assert torch.equal(loaded["train"][:, 0], torch.from_numpy(train[:4]))
    assert torch.equal(loaded["valid"][:, 0], torch.from_numpy(train[4:]))   # the last 10,000
    assert torch.equal(loaded["test"][:, 0], torch.from_numpy(test))


def test_cifar10_from_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = numbered(5 * 1_001, (3, 32, 32))
    images[:, 1, 5, 5], images[:, 2, 5, 5] = 20, 30                         # green and blue planes
    for i in range(5):
        rows = images[i * 1_001:(i + 1) * 1_001].reshape(1_001, 3072)
        with (folder / f"data_batch_{i + 1}").open("wb") as f:
            pickle.dump({"data": rows, "labels": [0] * 1_001, "batch_label": "fake"}, f, protocol=2)
    with (folder / "test_batch").open("wb") as f:
        pickle.dump({"data": images[:7].reshape(7, 3072), "labels": [0] * 7}, f, protocol=2)
    dataset = CIFAR10()
    train = load_split(dataset, "cifar10", "train", str(tmp_path))
    valid = load_split(dataset, "cifar10", "valid", str(tmp_path))
    test = load_split(dataset, "cifar10", "test", str(tmp_path))
    assert (train.shape, valid.shape, test.shape) == ((5, 3, 32, 32), (5_000, 3, 32, 32), (7, 3, 32, 32))
    assert torch.equal(torch.cat([train, valid]), torch.from_numpy(images))  # channels first, in order
    assert (train[:, 1, 5, 5] == 20).all() and (train[:, 2, 5, 5] == 30).all()
    (folder / "test_batch").write_bytes(b"truncated")
    with pytest.raises(DrawkitError, match="not a CIFAR-10 python batch"):
        dataset.load("test", tmp_path, download=False)


@pytest.mark.parametrize("name, cls, where", [("fashion-mnist", FashionMNIST, "FashionMNIST/raw"),
                                              ("cifar10", CIFAR10, "cifar-10-batches-py"),
                                              ("multi-mnist", MultiMNIST, "MNIST/raw"),
                                              ("cluttered-mnist", ClutteredMNIST, "MNIST/raw")])
def test_missing_torchvision_data_is_a_clear_offline_error(name, cls, where, tmp_path, monkeypatch):
    monkeypatch.setenv("DRAWKIT_DATA", str(tmp_path))
    with pytest.raises(DataNotFound) as caught:
        load_split(cls(), name, "train")
    message = str(caught.value)
    assert f"dataset '{name}'" in message and str(tmp_path / where) in message
    assert "downloads are off" in message and "DRAWKIT_DATA" in message


def test_svhn_says_to_install_scipy(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)                # as if scipy were not installed
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(DataNotFound, match="train_32x32.mat not found .* pip install scipy"):
        SVHN().load("train", tmp_path, download=False)
    (tmp_path / "train_32x32.mat").write_bytes(b"")
    with pytest.raises(DrawkitError, match="pip install scipy"):
        SVHN().load("train", tmp_path, download=False)


def test_svhn_splits(tmp_path, monkeypatch):
    """torchvision's reader stands in (it needs scipy and the real files); the split is drawkit's."""
    fake_scipy(monkeypatch)

    class FakeSVHN:
        def __init__(self, root, split, download):
            self.data = numbered(50 if split == "train" else 4, (3, 32, 32))

    monkeypatch.setattr("torchvision.datasets.SVHN", FakeSVHN)
    for part in ("train", "test"):
        (tmp_path / f"{part}_32x32.mat").write_bytes(b"")
    sizes = {split: tuple(SVHN().load(split, tmp_path, download=False).shape) for split in SPLITS}
    assert sizes == {"train": (45, 3, 32, 32), "valid": (5, 3, 32, 32), "test": (4, 3, 32, 32)}


# --- image-folder --------------------------------------------------------------------------------------


def picture_folder(folder: Path) -> Path:
    """Seven readable pictures of assorted sizes and modes, one broken file, one hidden picture."""
    (folder / "sub" / "deeper").mkdir(parents=True)
    wide = np.zeros((10, 30, 3), dtype=np.uint8)
    wide[:, 10:20] = 255                                           # white middle third: all that a centre crop keeps
    Image.fromarray(wide).save(folder / "wide.png")
    Image.new("RGB", (40, 25), (255, 0, 0)).save(folder / "red.jpg", quality=95)
    Image.new("L", (20, 50), 128).save(folder / "sub" / "grey.png")
    Image.new("RGBA", (33, 33), (0, 255, 0, 0)).save(folder / "sub" / "clear.png")      # fully transparent
    palette = Image.new("P", (17, 9), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(folder / "sub" / "deeper" / "blue.gif")
    Image.fromarray(np.full((12, 12), 65535, dtype=np.uint16)).save(folder / "sixteen.png")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(folder / "sub" / "photo.BMP")
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    Image.new("RGB", (8, 8)).save(folder / ".hidden.png")
    (folder / "notes.txt").write_text("not a picture")
    return folder


def all_splits(dataset) -> dict:
    return {split: dataset.load(split, Path("/nonexistent"), download=False) for split in SPLITS}


def test_image_folder_reads_mixed_pictures(tmp_path, capsys):
    dataset = ImageFolder(path=str(picture_folder(tmp_path / "pics")), image_size=8)
    assert dataset.image_shape == (3, 8, 8)
    splits = all_splits(dataset)
    assert capsys.readouterr().err.count("skipped 1 of 8 files") == 1  # the broken file, reported once
    assert all(len(x) >= 1 for x in splits.values())
    images = torch.cat(list(splits.values()))
    assert images.shape == (7, 3, 8, 8) and images.dtype == torch.uint8
    colours = {tuple(int(v) for v in image[:, 4, 4]) for image in images}
    assert {(255, 255, 255), (0, 0, 0), (128, 128, 128), (0, 0, 255), (1, 2, 3)} <= colours
    assert any(abs(c[0] - 255) <= 2 and c[1] <= 2 for c in colours)   # the JPEG's red, near enough
    assert all(torch.equal(a, b) for a, b in zip(all_splits(dataset).values(), splits.values()))


def test_pictures_are_centre_cropped_and_kept_in_range(tmp_path):
    folder = picture_folder(tmp_path / "pics")
    assert (read_picture(folder / "wide.png", 6, False) == 255).all()          # the black sides were cropped off
    Image.fromarray(np.full((6, 6), 32896, dtype=np.uint16)).save(tmp_path / "mid.png")
    assert (read_picture(tmp_path / "mid.png", 3, True) == 128).all()          # 16-bit grey scaled, not clipped
    assert read_picture(folder / "sub" / "clear.png", 4, False).max() == 0      # transparent is black


def test_image_folder_grayscale_and_relative_path(tmp_path, monkeypatch):
    picture_folder(tmp_path / "pics")
    monkeypatch.chdir(tmp_path)
    dataset = ImageFolder(path="pics", image_size=5, grayscale=True)
    assert dataset.path == tmp_path / "pics"
    assert dataset.image_shape == (1, 5, 5)
    assert sum(len(x) for x in all_splits(dataset).values()) == 7


def test_image_folder_errors_say_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures")
    with pytest.raises(DrawkitError, match="no pictures in .*empty"):
        ImageFolder(path=str(tmp_path / "empty")).load("train", tmp_path, download=False)
    with pytest.raises(DrawkitError, match="does not exist; pass --dataset-opt path=DIR"):
        ImageFolder(path=str(tmp_path / "missing"))
    with pytest.raises(DrawkitError, match="needs a folder of pictures"):
        ImageFolder()
    with pytest.raises(DrawkitError, match="grayscale must be true or false"):
        ImageFolder(path=str(tmp_path), grayscale="maybe")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"nope")
    with pytest.raises(DrawkitError, match="could read none of the 1 files"):
        ImageFolder(path=str(tmp_path / "junk")).load("train", tmp_path, download=False)


def test_image_folder_with_two_pictures_uses_them_for_every_split(tmp_path, capsys):
    for i in range(2):
        Image.new("RGB", (9, 9), (i, i, i)).save(tmp_path / f"{i}.png")
    splits = all_splits(ImageFolder(path=str(tmp_path), image_size=4))
    assert all(len(x) == 2 for x in splits.values())
    assert "train, valid and test all use them" in capsys.readouterr().err


def test_image_folder_splits_are_fixed_and_never_empty():
    for n in (3, 4, 10, 40, 1000):
        names = [f"photo_{i}.jpg" for i in range(n)]
        splits = split_of(names)
        assert sorted(sum(splits.values(), [])) == list(range(n))
        assert all(splits.values()), n
    big = split_of(names)
    assert 850 < len(big["train"]) < 950 and 20 < len(big["valid"]) < 80
    grown = split_of(names + [f"new_{i}.jpg" for i in range(50)])   # old pictures keep their split
    assert all(set(big[s]) <= set(grown[s]) for s in SPLITS)


def test_colour_folder_trains_a_few_steps(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(12):
        size = tuple(int(v) for v in rng.integers(10, 40, 2))
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    result = CliRunner().invoke(app, [
        "train", "--dataset", "image-folder", "--dataset-opt", f"path={tmp_path}", "--dataset-opt", "image_size=12",
        "--glimpses", "2", "--hidden", "8", "--z-dim", "2", "--max-steps", "2", "--batch-size", "4",
        "--no-progress", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    payload = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    config, train_config = payload["model_config"], payload["train_config"]
    assert config["image_shape"] == [3, 12, 12] and config["glimpses"] == 2     # colour, image_size=12
    assert config["likelihood"] == "logistic" and train_config["binarize"] == "none"   # 8-bit pictures
    assert train_config["dataset"] == "image-folder" and payload["plugins"]["dataset"]["name"] == "image-folder"
    splits = split_of([f"{i}.png" for i in range(12)])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in records] == [("train", 2), ("valid", 2)]
    assert records[1]["n_images"] == len(splits["valid"]) and np.isfinite(records[1]["nll_bound"])
    result = CliRunner().invoke(app, ["sample", "--checkpoint", str(tmp_path / "run"), "--n", "4", "--scale", "1",
                                      "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    png = iio.imread(tmp_path / "s.png")
    assert png.shape == (2 + 2 * (12 + 2), 2 + 2 * (12 + 2), 3)                 # 4 images of 12 x 12, 2 a row
    for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)):
        image = png[2 + 14 * r:14 + 14 * r, 2 + 14 * c:14 + 14 * c]
        assert image.std() > 0 and not (image[..., 0] == image[..., 1]).all()  # drawn, and in colour


# --- registration --------------------------------------------------------------------------------------


def test_every_new_dataset_is_listed():
    assert set(NEW) <= set(get_registry().names("dataset"))
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.stdout.splitlines() if "│" in line]
    listed = {row[1]: row for row in rows if row[0]}
    for name in NEW:
        assert listed[name][0] == "dataset" and listed[name][2].startswith("drawkit"), listed.get(name)
