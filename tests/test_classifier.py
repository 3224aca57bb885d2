"""The classifier of DRAW's section 4.1 (`drawkit train --task classify`): what it reads, that it learns, and
that training, resuming, evaluating, compiling and the commands treat it as its own kind of model."""
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import drawkit
from drawkit.checkpoint import load_model, read_checkpoint
from drawkit.classifier import Classifier, ClassifierConfig, build_classifier
from drawkit.cli import app
from drawkit.data import SPLITS
from drawkit.evaluate import evaluate
from drawkit.model import DrawConfig
from drawkit.registry import get_registry
from drawkit.training import TrainConfig, make_optimizer, train, train_step
from conftest import NoisePictures, assert_one_error_line
from test_speed_paths import compiler_missing

SIDE, SQUARE = 16, 4


class Quadrants:
    """16 x 16 grey noise with a bright 4 x 4 square inside one of the four quadrants; the label is the quadrant.

    ``num_classes`` is a class attribute so a test can change it between a run and its resume.
    """

    image_shape = (1, SIDE, SIDE)
    num_classes = 4
    sizes = {"train": 1024, "valid": 128, "test": 256}

    def draw(self, split):
        g = torch.Generator().manual_seed(10 + SPLITS.index(split))
        n = self.sizes[split]
        labels = torch.randint(0, 4, (n,), generator=g)                        # 0 1 / 2 3: row-major quadrants
        images = torch.rand(n, *self.image_shape, generator=g) * 0.5
        top = (labels // 2) * (SIDE // 2) + torch.randint(0, SIDE // 2 - SQUARE + 1, (n,), generator=g)
        left = (labels % 2) * (SIDE // 2) + torch.randint(0, SIDE // 2 - SQUARE + 1, (n,), generator=g)
        for i in range(n):
            images[i, 0, top[i]:top[i] + SQUARE, left[i]:left[i] + SQUARE] = 1.0
        return images, labels

    def load(self, split, root, download):
        return self.draw(split)[0]

    def load_labels(self, split, root, download):
        return self.draw(split)[1]


class UnlabelledNoise(NoisePictures):
    pass


class CoarseRead(nn.Module):
    """An attention written for generation only: read/glimpse_shape, no read_image. Its read is a pooled
    [x, x_hat] moved by h (so gradients reach it); it records what it was given."""

    def __init__(self, image_shape, hidden_size, read_size, write_size):
        super().__init__()
        channels, _, _ = image_shape
        self.read_size = read_size
        self.glimpse_shape = (2 * channels, read_size, read_size)
        self.gain = nn.Linear(hidden_size, 1)
        self.write_content = nn.Linear(hidden_size, channels * SIDE * SIDE)
        self.calls = []

    def read(self, x, x_hat, h_dec):
        self.calls.append((x.detach().clone(), x_hat.detach().clone()))
        both = torch.cat([x, x_hat], dim=1)
        return F.adaptive_avg_pool2d(both, self.read_size) * torch.exp(self.gain(h_dec))[:, :, None, None]

    def write(self, h_dec):
        return self.write_content(h_dec).view(-1, 1, SIDE, SIDE)


class WideGRU(nn.Module):
    """A recurrent core whose output is wider than --hidden: the classifier maps it back for the attention."""

    def __init__(self, glimpse_shape, decoder_size, hidden_size):
        super().__init__()
        self.cell = nn.GRUCell(int(torch.tensor(glimpse_shape).prod()) + decoder_size, 2 * hidden_size)
        self.output_size = 2 * hidden_size

    def initial_state(self, batch, like):
        return like.new_zeros(batch, self.output_size)

    def forward(self, glimpse, h_dec, state):
        h = self.cell(torch.cat([glimpse.flatten(1), h_dec], dim=1), state)
        return h, h


class TestParts:
    @drawkit.hookimpl
    def register_datasets(self, register):
        register("quadrants", Quadrants, description="a bright square in one of four quadrants, labelled")
        register("unlabelled-noise", UnlabelledNoise, description="noise pictures without labels")

    @drawkit.hookimpl
    def register_attention(self, register):
        register("coarse-read", CoarseRead, description="generation-only attention (no read_image)")

    @drawkit.hookimpl
    def register_encoders(self, register):
        register("wide-gru", WideGRU, description="a GRU twice as wide as --hidden")


@pytest.fixture
def parts(register_plugin):
    register_plugin(TestParts(), "test-classifier-parts")
    return get_registry()


TINY = ["--task", "classify", "--dataset", "quadrants", "--glimpses", "2", "--hidden", "8", "--read-size", "3",
        "--batch-size", "16", "--val-images", "32", "--log-every", "1", "--device", "cpu", "--seed", "3",
        "--no-progress"]


def small(registry, **changes) -> Classifier:
    torch.manual_seed(0)
    config = ClassifierConfig(image_shape=(1, SIDE, SIDE), glimpses=3, hidden=8, read_size=3, num_classes=4)
    return build_classifier(replace(config, **changes), registry)


def quadrants(split="test", n=None):
    images, labels = Quadrants().draw(split)
    return images[:n], labels[:n]


def train_records(run: Path, split="train"):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


# The model

def test_logits_per_class_and_what_observe_sees(parts):
    model = small(parts)
    seen = []
    logits = model(quadrants(n=5)[0], observe=lambda t, h_prev, h, logits_t: seen.append((t, h_prev, h, logits_t)))
    assert logits.shape == (5, 4)
    assert [t for t, *_ in seen] == [0, 1, 2]
    assert all(h_prev.shape == h.shape == (5, 8) and step.shape == (5, 4) for _, h_prev, h, step in seen)
    torch.testing.assert_close(seen[-1][3], logits, rtol=0, atol=0)  # the last belief is the answer
    for (_, _, h, _), (_, h_prev, _, _) in zip(seen, seen[1:]):
        torch.testing.assert_close(h_prev, h, rtol=0, atol=0)


def test_the_read_is_placed_by_the_previous_state_starting_from_zero(parts):
    model = small(parts)
    attention, states, observed = model.attention, [], []

    def read_image(x, h):
        states.append(h.clone())
        return type(attention).read_image(attention, x, h)

    attention.read_image = read_image
    model(quadrants(n=2)[0], observe=lambda t, h_prev, h, logits_t: observed.append((h_prev, h)))
    assert len(states) == 3
    assert torch.equal(states[0], torch.zeros(2, 8))                      # h_0 = 0 places the first read
    for t, (h_prev, h) in enumerate(observed):
        torch.testing.assert_close(states[t], h_prev, rtol=0, atol=0)
        if t > 0:
            torch.testing.assert_close(states[t], observed[t - 1][1], rtol=0, atol=0)
            assert not torch.equal(states[t], states[0])


def test_the_filterbank_reads_the_image_alone_at_the_read_size(parts):
    model = small(parts, read_size=5)
    assert model.reads_image and model.attention.image_glimpse_shape == (1, 5, 5)
    assert model.encoder.cell.input_size == 5 * 5 + 8                     # the patch (1 x 5 x 5) and h_{t-1}


def test_gradients_reach_the_read_window_and_the_write_is_frozen(parts):
    model = small(parts)
    images, labels = quadrants(n=8)
    F.cross_entropy(model(images), labels).backward()
    assert model.attention.read_params.weight.grad.abs().sum() > 0     # the window's linear map learns
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())
    write = [p for n, p in model.named_parameters() if n.startswith("attention.write")]
    assert write and all(not p.requires_grad and p.grad is None for p in write)  # unused: DDP needs them frozen
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("attention.write"))


def test_an_attention_without_read_image_reads_x_and_the_error_image_of_an_empty_canvas(parts):
    model = small(parts, attention="coarse-read", read_size=4)
    assert not model.reads_image
    assert model.encoder.cell.input_size == 2 * 4 * 4 + 8                 # glimpse_shape: x and x_hat stacked
    images, labels = quadrants(n=3)
    model.attention.calls.clear()                                         # building ran one blank image through
    F.cross_entropy(model(images), labels).backward()
    assert len(model.attention.calls) == 3
    for x, x_hat in model.attention.calls:
        torch.testing.assert_close(x_hat, x - 0.5, rtol=0, atol=0)        # sigmoid(c_0) = sigmoid(0) = 0.5
    assert model.attention.gain.weight.grad.abs().sum() > 0


def test_cnn_encoder_and_an_encoder_wider_than_hidden(parts):
    cnn = small(parts, encoder="cnn", encoder_options={"channels": 4})
    assert cnn(quadrants(n=2)[0]).shape == (2, 4) and isinstance(cnn.to_hidden, nn.Identity)
    wide = small(parts, encoder="wide-gru")
    states = []
    read_image = wide.attention.read_image
    wide.attention.read_image = lambda x, h: states.append(h) or read_image(x, h)
    assert wide(quadrants(n=2)[0]).shape == (2, 4)
    assert isinstance(wide.to_hidden, nn.Linear) and wide.head.in_features == 16
    assert all(h.shape == (2, 8) for h in states)                         # mapped back to --hidden for the read


def test_config_round_trips_and_names_its_task():
    config = ClassifierConfig(image_shape=(3, 20, 20), glimpses=4, read_size=6, num_classes=7,
                              encoder_options={"channels": 4})
    d = config.to_dict()
    assert d["task"] == "classify" and d["image_shape"] == [3, 20, 20]
    assert ClassifierConfig.from_dict(d) == config


# Training

def test_learns_which_quadrant_holds_the_square(parts, tmp_path, test_device):
    """Chance is 75% error; after 300 steps the held-out error is far below it."""
    config = TrainConfig(task="classify", dataset="quadrants", batch_size=32, epochs=100, max_steps=300,
                         out=str(tmp_path), val_images=128, log_every=50, device=str(test_device), seed=0, lr=3e-3)
    result = train(DrawConfig(glimpses=2, hidden=32, read_size=4), config, progress=False)
    assert result["steps"] == 300 and {"error_rate", "accuracy", "nll"} <= set(result)
    held_out = evaluate(tmp_path, split="test", device=str(test_device), progress=False)
    assert held_out["error_rate"] < 0.15, held_out
    losses = [r["loss"] for r in train_records(tmp_path)]
    assert losses[-1] < 0.5 * losses[0]
    valid = train_records(tmp_path, "valid")
    assert valid and set(valid[-1]) == {"split", "error_rate", "accuracy", "nll", "n_images", "step", "epoch",
                                         "time_s", "start_step"}
    assert set(train_records(tmp_path)[0]) == {"split", "loss", "error_rate", "steps_per_s", "skipped_steps",
                                                "precision", "lr", "grad_norm", "step", "epoch", "time_s", "start_step"}


def test_train_step_minimises_the_mean_cross_entropy(parts, test_device):
    from drawkit.tasks import TASKS

    model = small(parts).to(test_device)
    images, labels = (t.to(test_device) for t in quadrants(n=6))
    expected = F.cross_entropy(model(images), labels)
    output, finite, _ = train_step(TASKS["classify"].trainable(model), make_optimizer(model, 1e-3), (images, labels),
                                   clip=10.0)
    assert bool(finite)
    torch.testing.assert_close(output.loss.mean(), expected)


def test_checkpoint_round_trips_and_resume_repeats_the_same_losses(parts, cli_runner, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    for out, steps in ((straight, "10"), (split, "4")):
        result = cli_runner.invoke(app, ["train", *TINY, "--max-steps", steps, "--out", str(out)])
        assert result.exit_code == 0, result.output
    assert "validation error" in result.output
    result = cli_runner.invoke(app, ["train", "--resume", str(split), "--max-steps", "10", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [r["loss"] for r in train_records(split)] == [r["loss"] for r in train_records(straight)]
    a, b = read_checkpoint(straight), read_checkpoint(split)
    assert a["model_config"] == b["model_config"] and a["model_config"]["task"] == "classify"
    assert a["model_config"]["num_classes"] == 4 and a["train_config"]["task"] == "classify"
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    model, _ = load_model(split, parts)
    assert isinstance(model, Classifier) and model.config == ClassifierConfig.from_dict(b["model_config"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, b["model"][name]), name


@pytest.fixture
def classifier_run(parts, cli_runner, tmp_path):
    out = tmp_path / "run"
    result = cli_runner.invoke(app, ["train", *TINY, "--max-steps", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_evaluate_equals_an_independent_computation(classifier_run, cli_runner):
    model, _ = load_model(classifier_run, get_registry())
    images, labels = quadrants("test")
    with torch.no_grad():
        log_p = torch.log_softmax(model(images).double(), dim=1)          # (N, K)
    nll = -log_p[torch.arange(len(labels)), labels].mean().item()
    error = (log_p.argmax(1) != labels).double().mean().item()
    result = cli_runner.invoke(app, ["evaluate", "--checkpoint", str(classifier_run), "--json", "--no-progress",
                                     "--device", "cpu", "--batch-size", "50"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"error_rate", "accuracy", "nll", "n_images", "dataset", "split", "step", "checkpoint",
                           "precision", "tf32"}
    assert report["n_images"] == 256 and (report["dataset"], report["split"], report["step"]) == ("quadrants", "test",
                                                                                                   3)
    assert report["nll"] == pytest.approx(nll, rel=1e-6)
    assert report["error_rate"] == pytest.approx(error) and report["accuracy"] == pytest.approx(1 - error)
    line = cli_runner.invoke(app, ["evaluate", "--checkpoint", str(classifier_run), "--no-progress",
                                   "--device", "cpu", "--max-images", "100"])
    assert line.exit_code == 0, line.output
    assert line.stdout.startswith("quadrants test (100 images): error ") and "accuracy" in line.stdout


def test_bench_times_classifier_training_steps(cli_runner):
    result = cli_runner.invoke(app, ["bench", "--task", "classify", "--json", "--no-compile", "--steps", "1",
                                     "--warmup", "1", "--glimpses", "2", "--hidden", "8", "--batch-size", "4",
                                     "--image-size", "20"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["task"], report["preset"], report["image_size"], report["glimpses"]) == ("classify",
                                                                                           "paper-cluttered", 20, 2)
    assert report["z_dim"] is None and report["images_per_s"] > 0


def test_bench_times_the_images_of_its_preset():
    """The cluttered preset trains on 100 x 100 canvases; timing 28 x 28 ones would flatter it sevenfold."""
    from drawkit.bench import bench_config

    assert bench_config("paper-cluttered").image_shape == (1, 100, 100)
    assert bench_config("paper-mnist").image_shape == (1, 28, 28)
    assert bench_config("paper-cluttered", image_size=20).image_shape == (1, 20, 20)


# Compiled glimpses

def test_compiled_glimpses_give_the_same_logits_and_gradients(parts):
    images, labels = quadrants(n=4)
    eager, compiled = small(parts, glimpses=4), small(parts, glimpses=4)
    compiled.compile_glimpses(glimpses_per_call=3)                         # a run of 3 and a last run of 1
    try:
        compiled_logits = compiled(images)
    except Exception as exc:
        if not compiler_missing(exc):
            raise
        pytest.skip(f"no working C++ compiler for torch.compile here: {' '.join(str(exc).split())[:200]}")
    eager_logits = eager(images)
    torch.testing.assert_close(compiled_logits, eager_logits, rtol=1e-5, atol=1e-5)
    F.cross_entropy(eager_logits, labels).backward()
    F.cross_entropy(compiled(images), labels).backward()
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)


# One-line errors

def test_commands_that_draw_refuse_a_classifier(classifier_run, cli_runner, tmp_path):
    expect = "needs a generative checkpoint (this one was trained with --task classify)"
    for command in (["sample", "--n", "2", "--out", str(tmp_path / "s.png")],
                    ["reconstruct", "--out", str(tmp_path / "r.png")]):
        result = cli_runner.invoke(app, [*command, "--checkpoint", str(classifier_run), "--device", "cpu"])
        assert_one_error_line(result, f"drawkit {command[0]} {expect}")
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "r.png").exists()


def test_a_data_set_without_labels_is_refused(parts, cli_runner, tmp_path):
    result = cli_runner.invoke(app, ["train", *TINY, "--dataset", "unlabelled-noise", "--out", str(tmp_path / "r")])
    assert_one_error_line(result, "dataset 'unlabelled-noise' has no labels", "--task classify")
    assert not (tmp_path / "r").exists()


def test_resume_refuses_a_data_set_whose_classes_changed(classifier_run, cli_runner, monkeypatch):
    monkeypatch.setattr(Quadrants, "num_classes", 5)
    result = cli_runner.invoke(app, ["train", "--resume", str(classifier_run), "--max-steps", "5", "--no-progress"])
    assert_one_error_line(result, "now has 5 classes", "trained on 4 classes")
    assert read_checkpoint(classifier_run)["step"] == 3


@pytest.mark.parametrize("args, expect", [
    (["--task", "generate"], "--task cannot change when resuming"),
    (["--importance-samples", "2"], "--importance-samples"),
], ids=["task-on-resume", "importance-samples"])
def test_options_that_do_not_apply_are_refused(classifier_run, cli_runner, args, expect):
    command = (["train", "--resume", str(classifier_run), "--no-progress"] if args[0] == "--task" else
               ["evaluate", "--checkpoint", str(classifier_run), "--no-progress", "--device", "cpu"])
    assert_one_error_line(cli_runner.invoke(app, [*command, *args]), expect)


def test_generation_options_with_classify_and_an_unknown_task_are_refused(parts, cli_runner, tmp_path):
    out = str(tmp_path / "r")
    assert_one_error_line(cli_runner.invoke(app, ["train", *TINY, "--z-dim", "3", "--out", out]),
                          "--z-dim is for --task generate")
    assert_one_error_line(cli_runner.invoke(app, ["train", *TINY, "--task", "clasify", "--out", out]),
                          "unknown --task 'clasify'; choose one of: generate, classify")
    assert not (tmp_path / "r").exists()


# Several processes

LAUNCHER = '''
import runpy, sys
sys.path.insert(0, sys.argv.pop(1))
from drawkit.plugins import load_plugins, pm
from test_classifier import TestParts
load_plugins()
pm.register(TestParts(), name="test-classifier-parts")
runpy.run_module("drawkit", run_name="__main__", alter_sys=True)
'''


def test_two_processes_train_a_classifier(tmp_path):
    """Every trainable parameter gets a gradient (the unused write is frozen), as DDP requires."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("this PyTorch build has no torch.distributed with the gloo backend")
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={port}", str(launcher), str(Path(__file__).parent), "train", *TINY,
               "--max-steps", "3", "--out", str(out)]
    env = {**os.environ, "DRAWKIT_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 3 steps") == 1, done.stdout
    assert read_checkpoint(out)["step"] == 3
    assert [r["step"] for r in train_records(out)] == [1, 2, 3]
