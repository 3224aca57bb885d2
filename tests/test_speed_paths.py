"""The fast paths compute the paper's model: same loss and gradients as a plain, from-the-equations DRAW."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_one_error_line
from drawkit.cli import app
from drawkit.devices import resolve_device
from drawkit.model import DrawConfig, build_model

SMALL = DrawConfig(image_shape=(1, 12, 10), glimpses=4, hidden=24, z_dim=5, read_size=3, write_size=4,
                   likelihood="bernoulli")


def plain_filterbank(params, A, B, N):
    """Eqs. 19-26 written out again, loop by loop, in the paper's 1-based pixel coordinates."""
    gx_, gy_, log_sigma2, log_delta, log_gamma = params.unbind(1)
    gx, gy = (A + 1) / 2 * (gx_ + 1), (B + 1) / 2 * (gy_ + 1)
    delta = (max(A, B) - 1) / (N - 1) * log_delta.exp()
    sigma2 = log_sigma2.exp()
    fx = torch.stack([torch.stack([torch.exp(-(a - (gx + (i - N / 2 - 0.5) * delta)) ** 2 / (2 * sigma2))
                                   for a in range(1, A + 1)], 1) for i in range(1, N + 1)], 1)
    fy = torch.stack([torch.stack([torch.exp(-(b - (gy + (i - N / 2 - 0.5) * delta)) ** 2 / (2 * sigma2))
                                   for b in range(1, B + 1)], 1) for i in range(1, N + 1)], 1)
    fx = fx / (fx.sum(2, keepdim=True) + 1e-8)
    fy = fy / (fy.sum(2, keepdim=True) + 1e-8)
    return fx, fy, log_gamma.exp()


def plain_draw_loss(model, x, noise):
    """DRAW's negative bound from the model's weights, with nothing of drawkit's model code."""
    att, cfg = model.attention, model.config
    _, H, W = cfg.image_shape
    batch = x.shape[0]
    x = x.flatten(1)
    h_dec = c_dec = h_enc = c_enc = x.new_zeros(batch, cfg.hidden)
    canvas = torch.zeros_like(x)
    kl = x.new_zeros(batch)
    for t in range(cfg.glimpses):
        x_hat = x - torch.sigmoid(canvas)
        fx, fy, gamma = plain_filterbank(att.read_params(h_dec), W, H, cfg.read_size)
        read = [gamma[:, None, None] * (fy @ img.view(batch, H, W) @ fx.transpose(1, 2)) for img in (x, x_hat)]
        r = torch.cat([patch.flatten(1) for patch in read], 1)
        h_enc, c_enc = model.encoder.cell(torch.cat([r, h_dec], 1), (h_enc, c_enc))
        mu, logvar = model.posterior(h_enc).chunk(2, 1)
        z = mu + noise[t] * torch.exp(0.5 * logvar)
        kl = kl + 0.5 * (mu ** 2 + logvar.exp() - logvar - 1).sum(1)
        h_dec, c_dec = model.decoder(z, (h_dec, c_dec))
        fx, fy, gamma = plain_filterbank(att.write_params(h_dec), W, H, cfg.write_size)
        w = att.write_content(h_dec).view(batch, cfg.write_size, cfg.write_size)
        canvas = canvas + (fy.transpose(1, 2) @ w @ fx).flatten(1) / gamma[:, None]
    return F.binary_cross_entropy_with_logits(canvas, x, reduction="none").sum(1) + kl


def small_model_and_data(registry, seed=0):
    torch.manual_seed(seed)
    model = build_model(SMALL, registry)
    with torch.no_grad():  # move the windows off their start so the comparison covers general parameters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = (torch.rand(6, *SMALL.image_shape) > 0.5).float()
    noise = torch.randn(SMALL.glimpses, 6, SMALL.z_dim)
    return model, x, noise


def gradients(model, loss):
    model.zero_grad()
    loss.mean().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_eager_model_equals_plain_draw(registry):
    model, x, noise = small_model_and_data(registry)
    ours = model(x, noise=noise).loss
    plain = plain_draw_loss(model, x, noise)
    assert torch.allclose(ours, plain, rtol=1e-5, atol=1e-4), (ours, plain)
    ours_grads, plain_grads = gradients(model, model(x, noise=noise).loss), gradients(model, plain)
    for name in plain_grads:
        assert torch.allclose(ours_grads[name], plain_grads[name], rtol=1e-4, atol=1e-5), name


@pytest.fixture(scope="module", params=["default", "reduce-overhead"])
def compiled_pair(registry, request):
    """An eager model and a compiled copy with the same weights; skips only where no C++ compiler works.

    Runs of 3 glimpses over T=4 cover both compiled graphs: a full run and the shorter last one.
    The CUDA-graph mode must keep the mathematics too (on a CPU it compiles without graphs).
    """
    model, x, noise = small_model_and_data(registry, seed=1)
    compiled, _, _ = small_model_and_data(registry, seed=1)
    compiled.compile_glimpses(mode=request.param, glimpses_per_call=3)
    try:
        compiled(x, noise=noise)
    except Exception as exc:
        if not compiler_missing(exc):
            raise  # anything else is a broken compiled path: fail, never skip
        pytest.skip(f"no working C++ compiler for torch.compile here: {' '.join(str(exc).split())[:200]}")
    return model, compiled, x, noise


def compiler_missing(exc: BaseException) -> bool:
    """Whether torch.compile failed only because this machine cannot build C++ (the one reason to skip)."""
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

    while exc is not None:
        if isinstance(exc, (InvalidCxxCompiler, CppCompileError)):
            return True
        exc = getattr(exc, "inner_exception", None) or exc.__cause__
    return False


def test_only_a_missing_compiler_counts_as_compile_unavailable():
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InvalidCxxCompiler

    assert compiler_missing(BackendCompilerFailed(lambda: None, InvalidCxxCompiler(), None))
    assert not compiler_missing(BackendCompilerFailed(lambda: None, RuntimeError("shape mismatch"), None))
    assert not compiler_missing(TypeError("glimpses() takes 6 positional arguments"))


def test_compiled_glimpses_give_the_same_loss_and_gradients(compiled_pair):
    model, compiled, x, noise = compiled_pair
    eager_loss, compiled_loss = model(x, noise=noise).loss, compiled(x, noise=noise).loss
    assert torch.allclose(eager_loss, compiled_loss, rtol=1e-5, atol=1e-4)
    eager_grads, compiled_grads = gradients(model, eager_loss), gradients(compiled, compiled_loss)
    for name in eager_grads:
        assert torch.allclose(eager_grads[name], compiled_grads[name], rtol=1e-4, atol=1e-5), name


def test_compiled_model_draws_the_same_random_numbers(compiled_pair):
    """Noise is drawn outside the compiled graph: the same seed gives the same z, so runs stay reproducible."""
    model, compiled, x, _ = compiled_pair
    torch.manual_seed(5)
    eager_loss = model(x).loss
    torch.manual_seed(5)
    assert torch.allclose(eager_loss, compiled(x).loss, rtol=1e-5, atol=1e-4)


def test_bench_reports_the_time_its_timed_steps_took_and_its_setup(cli_runner, monkeypatch):
    """On a clock where the warm-up step takes 0.1 s and the two timed ones 0.2 s and 0.3 s, a step takes
    0.25 s and 4 images a step make 16 images/s: what bench reports comes from the time its steps took."""
    import drawkit.bench as bench_module

    now, durations, real_step = [100.0], iter([0.1, 0.2, 0.3]), bench_module.train_step

    def timed_step(*args, **kwargs):
        result = real_step(*args, **kwargs)
        now[0] += next(durations)
        return result

    monkeypatch.setattr(bench_module, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(bench_module, "train_step", timed_step)
    result = cli_runner.invoke(app, ["bench", "--json", "--no-compile", "--steps", "2", "--warmup", "1",
                                 "--glimpses", "3", "--hidden", "16", "--batch-size", "4", "--image-size", "12"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("images_per_s", "s_per_step", "peak_memory_mb", "device", "torch", "batch_size", "glimpses"):
        assert key in report
    assert report["glimpses"] == 3 and report["image_size"] == 12 and report["batch_size"] == 4
    assert next(durations, None) is None                                 # one warm-up and two timed steps ran
    assert report["warmup_s"] == pytest.approx(0.1)
    assert report["s_per_step"] == pytest.approx(0.25) and report["images_per_s"] == pytest.approx(16.0)
    assert report["torch"] == torch.__version__ and report["compile"] is False
    assert report["native_bf16"] in (True, False)
    if report["device"] == "cpu":                                        # AVX2 and AVX512 machines share model names
        assert f"({torch.backends.cpu.get_cpu_capability()})" in report["device_name"]


@pytest.mark.parametrize("args, words", [
    (["--steps", "0"], "--steps"),
    (["--glimpses", "-1"], "--glimpses"),
    (["--preset", "nope"], "paper-mnist"),
    (["--device", "tpu"], "cpu"),
    (["--rounds", "0"], "--rounds"),
    (["--glimpses-per-call", "0"], "--glimpses-per-call"),
    (["--compile-mode", "fast"], "reduce-overhead"),
])
def test_bench_bad_input_is_one_line(cli_runner, args, words):
    assert_one_error_line(cli_runner.invoke(app, ["bench", *args]), words)


def test_a_failed_compile_is_one_line_that_says_to_train_without_it(cli_runner, monkeypatch, tmp_path,
                                                                    tiny_train_args):
    """Where torch.compile cannot build (no C++ compiler, say), --compile ends in one line, exit 2."""
    from torch._dynamo.exc import BackendCompilerFailed

    def cannot_build(*args, **kwargs):
        raise BackendCompilerFailed(lambda: None, RuntimeError("no C++ compiler found"), None)

    monkeypatch.setattr(torch, "compile", lambda function, **options: cannot_build)
    result = cli_runner.invoke(app, ["train", *tiny_train_args, "--compile", "--out", str(tmp_path / "run")])
    assert_one_error_line(result, "torch.compile failed", "--compile")


FAKE_REFERENCE = '''
import json, sys
with open(sys.argv[0] + ".args", "w") as f:
    f.write(" ".join(sys.argv[1:]))
with open(sys.argv[0] + ".calls", "a") as f:
    f.write("called\\n")
print("warming up")
print(json.dumps({"impl": "fake", "images_per_s": 2.0, "s_per_step": 2.0}))
'''


def test_bench_times_a_reference_script_on_the_same_model(cli_runner, tmp_path):
    script = tmp_path / "reference.py"
    script.write_text(FAKE_REFERENCE)
    result = cli_runner.invoke(app, ["bench", "--json", "--no-compile", "--steps", "2", "--warmup", "0",
                                     "--glimpses", "3", "--hidden", "16", "--batch-size", "4",
                                     "--preset", "paper-mnist-noattention", "--reference", str(script)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["reference"]["impl"] == "fake"
    assert math.isclose(report["speedup"], report["images_per_s"] / 2.0)
    args = (tmp_path / "reference.py.args").read_text().split()
    settings = dict(zip(args[1::2], args[2::2]))
    assert args[0] == "bench" and args[-1] == "--no-attention"
    assert settings["--glimpses"] == "3" and settings["--hidden"] == "16" and settings["--z"] == "100"
    assert settings["--batch"] == "4" and settings["--steps"] == "2"
    assert settings["--device"] == str(resolve_device("auto"))  # bench's default --device auto, wherever it runs


def test_bench_rounds_take_turns_with_the_reference_and_report_medians(cli_runner, tmp_path):
    script = tmp_path / "reference.py"
    script.write_text(FAKE_REFERENCE)
    result = cli_runner.invoke(app, ["bench", "--json", "--no-compile", "--steps", "1", "--warmup", "0",
                                     "--glimpses", "2", "--hidden", "8", "--batch-size", "2", "--rounds", "3",
                                     "--reference", str(script)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (tmp_path / "reference.py.calls").read_text().count("called") == 3
    assert len(report["rounds"]) == 3
    speeds = sorted(turn["images_per_s"] for turn in report["rounds"])
    assert report["images_per_s"] == speeds[1]
    assert report["speedup"] == sorted(turn["speedup"] for turn in report["rounds"])[1]
    assert all(math.isclose(turn["speedup"], turn["images_per_s"] / 2.0) for turn in report["rounds"])


@pytest.mark.parametrize("script, words", [
    ("print('no json here')", "failed"),
    ("import sys; sys.exit(3)", "exit 3"),
    ("print('{\"impl\": 1}')", "images_per_s"),
])
def test_bench_reference_that_misbehaves_is_one_line(cli_runner, tmp_path, script, words):
    path = tmp_path / "reference.py"
    path.write_text(script)
    result = cli_runner.invoke(app, ["bench", "--no-compile", "--steps", "1", "--warmup", "0", "--glimpses", "2",
                                     "--hidden", "8", "--batch-size", "2", "--reference", str(path)])
    assert_one_error_line(result, words)


def test_bench_reference_needs_draws_own_model(cli_runner, tmp_path):
    script = tmp_path / "reference.py"
    script.write_text(FAKE_REFERENCE)
    result = cli_runner.invoke(app, ["bench", "--image-size", "16", "--reference", str(script)])
    assert_one_error_line(result, "28 x 28")
    assert not (tmp_path / "reference.py.args").exists()
