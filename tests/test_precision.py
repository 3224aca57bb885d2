"""bf16: the matrix products in bfloat16, what must stay exact in float32, and the same training within tolerance."""
import json

import pytest
import torch

from drawkit.checkpoint import read_checkpoint
from drawkit.classifier import Classifier
from drawkit.cli import app
from drawkit.errors import DrawkitError
from drawkit.lstm import lstm_cell
from drawkit.model import DrawConfig, build_model
from drawkit.precision import autocast, check_native, native_bf16
from drawkit.tasks import task_named
from drawkit.training import make_optimizer, train_step

from conftest import assert_one_error_line

#: a mid-size DRAW: 8 glimpses of 28 x 28 with 64 units, the shapes where bf16's rounding shows
CONFIG = DrawConfig(image_shape=(1, 28, 28), glimpses=8, hidden=64, z_dim=10, read_size=2, write_size=5)
CPU = torch.device("cpu")


def mnist_batch(mnist_train_file, n=32) -> torch.Tensor:
    images = torch.from_numpy(mnist_train_file(n).copy()).float().div(255).unsqueeze(1)
    return torch.bernoulli(images, generator=torch.Generator().manual_seed(0))


def loss_and_gradients(model, x, noise, precision):
    model.zero_grad(set_to_none=True)
    with autocast(precision, CPU):
        output = model(x, noise=noise)
    output.loss.mean().backward()
    return output, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_bf16_loss_and_gradients_are_within_tolerance_of_fp32(registry, mnist_train_file):
    torch.manual_seed(0)
    model = build_model(CONFIG, registry)
    x = mnist_batch(mnist_train_file)
    noise = torch.randn(CONFIG.glimpses, len(x), CONFIG.z_dim, generator=torch.Generator().manual_seed(1))
    exact, exact_grads = loss_and_gradients(model, x, noise, "fp32")
    half, half_grads = loss_and_gradients(model, x, noise, "bf16")
    # stated tolerance: the mean bound within 0.5 %, each image's within 1 %, the KL within 2 %
    assert abs(half.loss.mean() - exact.loss.mean()) < 5e-3 * exact.loss.mean()
    assert ((half.loss - exact.loss).abs() < 1e-2 * exact.loss).all()
    assert abs(half.kl.sum(1).mean() - exact.kl.sum(1).mean()) < 2e-2 * exact.kl.sum(1).mean() + 1e-3
    # every parameter's gradient points the same way (cosine > 0.99) with a norm within 5 %
    for name, g in exact_grads.items():
        h = half_grads[name]
        cosine = torch.nn.functional.cosine_similarity(g.flatten(), h.flatten(), dim=0)
        assert cosine > 0.99, (name, cosine.item())
        assert abs(h.norm() - g.norm()) < 0.05 * g.norm(), name


def test_bf16_runs_products_in_bfloat16_and_keeps_the_exact_parts_float32(registry, mnist_train_file):
    torch.manual_seed(0)
    model = build_model(CONFIG, registry)
    seen = {}

    def note(name):
        def hook(module, inputs, out):
            seen.setdefault(name, out.dtype)
        return hook

    model.posterior.register_forward_hook(note("posterior"))
    model.attention.write_content.register_forward_hook(note("write"))
    x = mnist_batch(mnist_train_file, 4)
    with autocast("bf16", CPU):
        output = model(x)
    assert seen == {"posterior": torch.bfloat16, "write": torch.bfloat16}  # autocast is on for the products
    for part in ("reconstruction", "kl", "canvas"):                         # the exact parts are float32
        assert getattr(output, part).dtype == torch.float32, part
    output.loss.mean().backward()
    assert all(p.dtype == p.grad.dtype == torch.float32 for p in model.parameters())


def test_lstm_step_is_lstmcell_in_fp32_and_bf16_gates_with_a_float32_cell_state_under_autocast():
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(24, 32)
    x, h, c = torch.randn(16, 24), torch.randn(16, 32), torch.randn(16, 32)
    exact_h, exact_c = cell(x, (h, c))
    same_h, same_c = lstm_cell(cell, x, (h, c))
    assert torch.equal(same_h, exact_h) and torch.equal(same_c, exact_c)   # without autocast: the cell itself
    with autocast("bf16", CPU):
        half_h, half_c = lstm_cell(cell, x, (h, c))
        gates = torch.nn.functional.linear(x, cell.weight_ih, cell.bias_ih)
    assert gates.dtype == torch.bfloat16 and half_c.dtype == half_h.dtype == torch.float32
    assert 0 < (half_c - exact_c).abs().max() < 0.05                      # bf16 rounding, nothing more
    assert (half_h - exact_h).abs().max() < 0.05


def test_bf16_classifier_gives_float32_logits(registry):
    kind = task_named("classify")
    config = kind.from_options(DrawConfig(image_shape=(1, 20, 20), glimpses=2, hidden=16, read_size=4), 10)
    model = kind.build(config, registry)
    assert isinstance(model, Classifier)
    images, labels = torch.rand(8, 1, 20, 20), torch.randint(10, (8,))
    optimizer = make_optimizer(model, 1e-3)
    output, finite, _ = train_step(kind.trainable(model), optimizer, (images, labels), clip=10.0, precision="bf16")
    assert output.logits.dtype == torch.float32 and output.loss.dtype == torch.float32 and bool(finite)


def test_precision_is_recorded_may_change_on_resume_and_evaluate_says_which(cli_runner, tiny_train_args, tmp_path):
    run = tmp_path / "run"
    result = cli_runner.invoke(app, ["train", *tiny_train_args, "--precision", "bf16", "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert read_checkpoint(run)["train_config"]["precision"] == "bf16"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["precision"] for r in lines if r["split"] == "train"} == {"bf16"}
    result = cli_runner.invoke(app, ["train", "--resume", str(run), "--max-steps", "7", "--precision", "fp32",
                                     "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["precision"] for r in lines if r["split"] == "train"] == ["bf16"] * 5 + ["fp32"] * 2
    figures = {}
    for precision in ("fp32", "bf16"):
        result = cli_runner.invoke(app, ["evaluate", "--checkpoint", str(run), "--json", "--no-progress",
                                         "--max-images", "64", *(["--precision", precision] if precision == "bf16"
                                                                 else [])])
        assert result.exit_code == 0, result.output
        figures[precision] = json.loads(result.output.strip().splitlines()[-1])
        assert figures[precision]["precision"] == precision and figures[precision]["tf32"] is False
    exact, half = figures["fp32"]["nll_bound"], figures["bf16"]["nll_bound"]
    assert exact != half and abs(exact - half) < 0.01 * exact  # a different format, the same model


def test_bench_times_the_precision_it_is_asked_for(cli_runner):
    result = cli_runner.invoke(app, ["bench", "--precision", "bf16", "--no-compile", "--steps", "1", "--warmup", "0",
                                     "--glimpses", "2", "--hidden", "16", "--batch-size", "4", "--json",
                                     "--device", "cpu"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["precision"] == "bf16" and figures["tf32"] is False and figures["images_per_s"] > 0


@pytest.mark.parametrize("command", ["train", "bench", "evaluate"])
def test_bf16_is_refused_in_one_line_where_the_cpu_would_emulate_it(command, cli_runner, tiny_train_args, mnist_run,
                                                                     tmp_path, monkeypatch):
    monkeypatch.delenv("DRAWKIT_SLOW_BF16")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    args = {"train": ["train", *tiny_train_args, "--out", str(tmp_path / "run")],
            "bench": ["bench", "--no-compile", "--steps", "1", "--device", "cpu"],
            "evaluate": ["evaluate", "--checkpoint", str(mnist_run), "--device", "cpu"]}[command]
    result = cli_runner.invoke(app, [*args, "--precision", "bf16"])
    assert_one_error_line(result, "--precision bf16: this CPU has no AVX512-BF16 or AMX", "use --precision fp32")
    assert not (tmp_path / "run").exists()                        # refused before anything is written


def test_native_bf16_follows_the_cpu_and_slow_bf16_can_be_asked_for(monkeypatch):
    monkeypatch.delenv("DRAWKIT_SLOW_BF16")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert native_bf16(CPU)
    check_native("bf16", CPU)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert not native_bf16(CPU)
    check_native("fp32", CPU)                                     # float32 is never refused
    with pytest.raises(DrawkitError, match="DRAWKIT_SLOW_BF16=1"):
        check_native("bf16", CPU)
    monkeypatch.setenv("DRAWKIT_SLOW_BF16", "1")
    check_native("bf16", CPU)                                     # asked for anyway
