"""The CUDA paths, checked on the CPU with fakes: random streams per GPU, pinned held-out data, fixed-shape validation."""
import pytest
import torch

from drawkit import rng


def cuda_rng_fakes(monkeypatch, visible: int):
    """A machine with ``visible`` GPUs whose set_rng_state records (index, state); get_rng_state reads them back."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)

    def set_rng_state(state, device="cuda"):
        index = torch.device(device).index if not isinstance(device, int) else device
        if index is None or index >= visible:
            raise RuntimeError(f"invalid device ordinal {device}")
        restored.append((index, state))

    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all",
                        lambda states: [set_rng_state(state, i) for i, state in enumerate(states)])
    return restored


def saved_on(gpus: int) -> dict:
    state = rng.rng_state()
    state["cuda"] = [torch.full((4,), i, dtype=torch.uint8) for i in range(gpus)]
    return state


def test_resuming_on_the_same_gpus_restores_every_stream_without_a_warning(monkeypatch, capsys):
    restored = cuda_rng_fakes(monkeypatch, visible=2)
    state = saved_on(2)
    rng.set_rng_state(state)
    assert [index for index, _ in restored] == [0, 1]
    assert all(torch.equal(saved, state["cuda"][index]) for index, saved in restored)
    assert "Warning" not in capsys.readouterr().err


def test_resuming_on_fewer_gpus_restores_those_present_and_says_which_were_not(monkeypatch, capsys):
    restored = cuda_rng_fakes(monkeypatch, visible=1)
    rng.set_rng_state(saved_on(3))
    assert [index for index, _ in restored] == [0]
    err = capsys.readouterr().err
    assert err.count("Warning") == 1 and "1, 2" in err and "3 GPU" in err


# Validation batches of one shape -------------------------------------------------------------------------------

from types import SimpleNamespace  # noqa: E402

import torch.nn as nn  # noqa: E402

from drawkit import bound, tasks  # noqa: E402
from drawkit.bound import held_out, held_out_batches, variational_bound  # noqa: E402
from drawkit.classifier import classification_metrics  # noqa: E402


class RowModel(nn.Module):
    """Each row's terms from that row alone, with a constant so that a zero padding row would add to the sums."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
        self.config = SimpleNamespace(image_shape=(1, 2, 2))
        self.shapes = []

    def forward(self, x, log_ratio=False):
        self.shapes.append(tuple(x.shape))
        flat = x.flatten(1).double()
        return SimpleNamespace(reconstruction=(flat * self.weight).sum(1) + 1.0, kl=flat[:, :2] ** 2 + 1.0,
                               log_ratio=flat.mean(1) + 2.0 if log_ratio else None)


class RowClassifier(nn.Module):
    """Logits from each row alone; a zero image is class 1, so zero padding labelled 0 would count as errors."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.arange(12, dtype=torch.float32).view(4, 3) / 10)
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return x.flatten(1) @ self.weight + torch.tensor([0.0, 5.0, 0.0])


IMAGES = torch.rand(10, 1, 2, 2, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("samples", [1, 3])
def test_a_padded_validation_gives_the_unpadded_bound_in_batches_of_one_shape(samples):
    model = RowModel()
    padded = variational_bound(model, IMAGES, batch_size=4, importance_samples=samples, pad=True)
    assert {shape[0] for shape in model.shapes} == {4}  # 10 images: 4, 4 and 2 padded to 4
    whole = variational_bound(RowModel(), IMAGES, batch_size=len(IMAGES), importance_samples=samples)
    assert padded.keys() == whole.keys()
    for key, value in whole.items():
        assert padded[key] == pytest.approx(value, rel=1e-12), key


def test_validation_marks_a_cuda_graph_step_before_every_forward(monkeypatch):
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    model = RowModel()
    variational_bound(model, IMAGES, batch_size=4, importance_samples=3, pad=True)
    assert len(marks) == len(model.shapes) == 3 * (1 + 3)  # each batch: its forward and 3 importance passes
    marks.clear()
    classifier = RowClassifier()
    classification_metrics(classifier, IMAGES, torch.zeros(10, dtype=torch.long), batch_size=4, pad=True)
    assert len(marks) == len(classifier.shapes) == 3


def test_a_padded_classifier_validation_gives_the_unpadded_measures():
    labels = torch.randint(3, (10,), generator=torch.Generator().manual_seed(2))
    classifier = RowClassifier()
    padded = classification_metrics(classifier, IMAGES, labels, batch_size=4, pad=True)
    assert {shape[0] for shape in classifier.shapes} == {4}
    whole = classification_metrics(RowClassifier(), IMAGES, labels, batch_size=len(IMAGES))
    assert padded["n_images"] == whole["n_images"] == 10
    for key in ("error_rate", "accuracy", "nll"):
        assert padded[key] == pytest.approx(whole[key], rel=1e-12), key


def test_training_validates_in_batches_of_the_training_batch_size():
    model, classifier = RowModel(), RowClassifier()
    tasks.task_named("generate").validate(model, IMAGES, 4)
    tasks.task_named("classify").validate(classifier, (IMAGES, torch.zeros(10, dtype=torch.long)), 4)
    assert {shape[0] for shape in model.shapes + classifier.shapes} == {4}


# Held-out data pinned once for a GPU ---------------------------------------------------------------------------

@pytest.fixture
def pin_calls(monkeypatch):
    """torch.Tensor.pin_memory counted; it returns a marked copy (no GPU needed)."""
    calls = []

    def pin_memory(self):
        calls.append(self)
        copy = self.clone()
        copy.marked_pinned = True
        return copy

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    return calls


def test_held_out_data_is_pinned_for_a_gpu_and_left_alone_for_the_cpu(pin_calls):
    x = torch.zeros(3, 1, 2, 2)
    assert held_out(x, torch.device("cpu")) is x and pin_calls == []
    pinned = held_out(x, torch.device("cuda", 1))
    assert pin_calls == [x] and getattr(pinned, "marked_pinned", False)


def test_held_out_batches_copy_without_blocking(monkeypatch):
    real_to, asked = torch.Tensor.to, []

    def to(self, *args, **kwargs):
        asked.append(kwargs.get("non_blocking", False))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    batches = list(held_out_batches((IMAGES, torch.zeros(10)), 4, torch.device("cpu")))
    assert [n for _, n in batches] == [4, 4, 2] and asked and all(asked)


@pytest.mark.parametrize("kind", ["generate", "classify"])
def test_training_data_loading_pins_nothing_on_the_cpu_and_asks_held_out_for_the_validation_data(
        kind, monkeypatch, pin_calls):
    images, labels = torch.randint(0, 256, (12, 1, 2, 2), dtype=torch.uint8), torch.zeros(12, dtype=torch.long)
    monkeypatch.setattr(tasks, "load_split", lambda *args: images)
    monkeypatch.setattr(tasks, "load_labelled_split", lambda *args: (images, labels))
    monkeypatch.setattr(tasks, "training_split", lambda dataset, name, data_dir, device, labelled:
                        (images.to(device), labels.to(device) if labelled else None, None))
    asked = []
    monkeypatch.setattr(tasks, "held_out", lambda tensor, device: asked.append(device) or bound.held_out(tensor, device))
    config = SimpleNamespace(dataset="fake", data_dir=None, val_images=None, binarize="none", seed=0, batch_size=4)
    tasks.task_named(kind).load_data(None, config, torch.device("cpu"))
    assert asked and set(asked) == {torch.device("cpu")}
    assert pin_calls == []
