"""Where data comes from, how it is binarized and batched, and the MNIST plugin's splits."""
import os
from pathlib import Path

import pytest
import torch

from drawkit import data
from drawkit.data import (Batches, binarize, downloads_allowed, fixed_binarization, load_split, resolve_data_root,
                          to_unit_float)
from drawkit.errors import DataNotFound, DrawkitError
from drawkit_plugins.mnist import MNIST


@pytest.fixture
def no_data_env(monkeypatch, tmp_path):
    """Neither $DRAWKIT_DATA nor a real cache: the default cache points into tmp_path."""
    monkeypatch.delenv("DRAWKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "drawkit"


def test_data_dir_option_wins_over_environment(monkeypatch, tmp_path):
    (tmp_path / "option").mkdir()
    (tmp_path / "env").mkdir()
    monkeypatch.setenv("DRAWKIT_DATA", str(tmp_path / "env"))
    root = resolve_data_root(str(tmp_path / "option"))
    assert root.path == tmp_path / "option" and root.source == "--data-dir"


def test_environment_is_used_without_the_option(monkeypatch, tmp_path):
    monkeypatch.setenv("DRAWKIT_DATA", str(tmp_path))
    root = resolve_data_root(None)
    assert root.path == tmp_path and "DRAWKIT_DATA" in root.source


def test_default_cache_under_xdg_cache_home(no_data_env):
    root = resolve_data_root(None)
    assert root.path == no_data_env and root.source == "the default cache"


def test_default_cache_under_home_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("DRAWKIT_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_root(None).path == tmp_path / ".cache" / "drawkit"


def test_tilde_in_data_dir_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mnist-here").mkdir()
    assert resolve_data_root("~/mnist-here").path == tmp_path / "mnist-here"


@pytest.mark.parametrize("source", ["option", "env"])
def test_missing_data_dir_is_a_user_error(monkeypatch, tmp_path, source):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("DRAWKIT_DATA", str(missing))
    with pytest.raises(DrawkitError) as error:
        resolve_data_root(str(missing) if source == "option" else None)
    assert str(missing) in str(error.value)
    assert ("--data-dir" if source == "option" else "DRAWKIT_DATA") in str(error.value)


def test_data_dir_that_is_a_file_is_a_user_error(tmp_path):
    file = tmp_path / "file"
    file.write_text("not a folder")
    with pytest.raises(DrawkitError, match="not a directory"):
        resolve_data_root(str(file))


def test_unreadable_data_dir_is_a_user_error(monkeypatch, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(data.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    with pytest.raises(DrawkitError, match="not readable"):
        resolve_data_root(str(locked))


@pytest.mark.parametrize("value, allowed", [("1", False), ("true", False), ("YES", False), ("", True), ("0", True)])
def test_offline_switch(monkeypatch, value, allowed):
    monkeypatch.setenv("DRAWKIT_OFFLINE", value)
    assert downloads_allowed() is allowed


def test_offline_and_missing_mnist_says_where_it_looked_and_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("DRAWKIT_OFFLINE", "1")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFound) as error:
        load_split(MNIST(), "mnist", "train", str(empty))
    message = str(error.value)
    assert "\n" not in message
    assert str(empty / "MNIST" / "raw") in message
    assert "--data-dir" in message and "DRAWKIT_DATA" in message and "mnist" in message


def test_offline_and_empty_default_cache_names_the_cache(monkeypatch, no_data_env):
    monkeypatch.setenv("DRAWKIT_OFFLINE", "1")
    with pytest.raises(DataNotFound) as error:
        load_split(MNIST(), "mnist", "test")
    assert str(no_data_env) in str(error.value) and "default cache" in str(error.value)


def test_dataset_of_the_wrong_shape_is_refused():
    class Flat:
        image_shape = (1, 4, 4)

        def load(self, split, root, download):
            return torch.zeros(10, 16)

    with pytest.raises(DrawkitError, match="shape"):
        load_split(Flat(), "flat", "train")


def test_uint8_becomes_unit_float():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8)
    torch.testing.assert_close(to_unit_float(images), torch.tensor([0.0, 0.2, 1.0]))


def test_threshold_binarization():
    x = torch.tensor([0.0, 0.3, 0.5, 0.51, 0.9, 1.0])
    assert binarize(x, "threshold").tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


def test_no_binarization_keeps_grey_levels():
    x = torch.rand(2, 1, 5, 5)
    assert torch.equal(binarize(x, "none"), x)


def test_sampled_binarization_is_bernoulli_in_the_pixel_value():
    x = torch.cat([torch.zeros(1000), torch.ones(1000), torch.full((100_000,), 0.3)])
    b = binarize(x, "sample", torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert b[:1000].sum() == 0 and b[1000:2000].sum() == 1000
    assert b[2000:].mean().item() == pytest.approx(0.3, abs=0.005)      # ~3.5 standard errors


def test_sampled_binarization_is_fresh_each_time_but_fixed_with_a_seed():
    x = torch.full((1, 1, 28, 28), 0.5)
    assert not torch.equal(binarize(x, "sample"), binarize(x, "sample"))
    images = torch.full((4, 1, 28, 28), 128, dtype=torch.uint8)
    assert torch.equal(fixed_binarization(images, "sample", seed=3), fixed_binarization(images, "sample", seed=3))
    assert not torch.equal(fixed_binarization(images, "sample", seed=3), fixed_binarization(images, "sample", seed=4))


def test_unknown_binarization_lists_the_modes():
    with pytest.raises(DrawkitError) as error:
        binarize(torch.rand(3), "dither")
    assert all(mode in str(error.value) for mode in ("sample", "threshold", "none"))


def numbered(n):
    """Images whose single pixel is their own index."""
    return torch.arange(n).view(n, 1, 1, 1)


def epoch_indices(batches, epoch, skip=0):
    return [b.flatten().tolist() for b in batches.epoch(epoch, skip=skip)]


def test_each_image_at_most_once_per_epoch_last_partial_batch_dropped():
    batches = Batches(numbered(103), batch_size=10, seed=1)
    assert len(batches) == 10
    seen = [i for batch in epoch_indices(batches, 1) for i in batch]
    assert len(seen) == 100 and len(set(seen)) == 100 and set(seen) <= set(range(103))


def test_order_depends_only_on_seed_and_epoch():
    images = numbered(50)
    first = epoch_indices(Batches(images, 5, seed=7), 2)
    torch.manual_seed(123)
    other = Batches(images, 5, seed=7)
    epoch_indices(other, 1)
    assert epoch_indices(other, 2) == first
    assert epoch_indices(Batches(images, 5, seed=7), 3) != first
    assert epoch_indices(Batches(images, 5, seed=8), 2) != first


def test_skip_resumes_mid_epoch():
    batches = Batches(numbered(40), 4, seed=0)
    assert epoch_indices(batches, 1, skip=3) == epoch_indices(batches, 1)[3:]


def test_batch_larger_than_the_data_is_a_user_error():
    with pytest.raises(DrawkitError, match="batch"):
        Batches(numbered(5), batch_size=6)


@pytest.fixture(scope="module")
def mnist_splits():
    dataset = MNIST()
    return {split: load_split(dataset, "mnist", split) for split in ("train", "valid", "test")}


def test_mnist_splits_are_50000_10000_10000_uint8(mnist_splits):
    for split, count in (("train", 50_000), ("valid", 10_000), ("test", 10_000)):
        images = mnist_splits[split]
        assert images.dtype == torch.uint8 and tuple(images.shape) == (count, 1, 28, 28)


def test_mnist_valid_is_the_end_of_the_training_file(mnist_splits, mnist_train_file):
    train_file = torch.from_numpy(mnist_train_file().copy()).unsqueeze(1)
    assert torch.equal(mnist_splits["train"], train_file[:50_000])
    assert torch.equal(mnist_splits["valid"], train_file[50_000:])
    assert not torch.equal(mnist_splits["test"][:100], train_file[:100])
