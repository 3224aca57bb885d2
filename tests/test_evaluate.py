"""Held-out likelihood: the variational bound, the importance-weighted bound (Burda et al. 2015), and
`drawkit evaluate`."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from torch.distributions import Normal

from drawkit.bound import importance_weighted_nll, variational_bound
from drawkit.cli import app
from drawkit.model import DrawConfig, build_model
from drawkit.registry import get_registry
from conftest import assert_one_error_line

KEYS = {"nll_bound", "reconstruction", "kl", "iw_nll", "bits_per_dim", "n_images", "dataset", "split"}


@pytest.fixture(scope="module")
def trained(mnist_train_file):
    """A tiny DRAW (no attention) trained for 100 steps on 512 MNIST digits, and 100 digits it has not seen."""
    x = (torch.from_numpy(mnist_train_file(count=612).copy()).unsqueeze(1) > 127).float()
    config = DrawConfig(image_shape=(1, 28, 28), glimpses=3, attention="none", hidden=16, z_dim=8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(config, get_registry())
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for step in range(100):
            batch = x[(step % 8) * 64:(step % 8 + 1) * 64]
            loss = model(batch).loss.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return SimpleNamespace(model=model.eval(), held_out=x[512:])


def mean_and_standard_error(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()


# --- log q(z|x) - log p(z) ----------------------------------------------------------------------------


def test_log_ratio_is_log_posterior_minus_log_prior_of_the_z_drawn(trained):
    model, x = trained.model, trained.held_out[:6]
    posterior, drawn = [], []
    hooks = [model.posterior.register_forward_hook(lambda module, args, out: posterior.append(out.chunk(2, dim=1))),
             model.decoder.register_forward_pre_hook(lambda module, args: drawn.append(args[0]))]
    noise = torch.randn(model.config.glimpses, len(x), model.config.z_dim, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = model(x, noise=noise, log_ratio=True)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(posterior) == len(drawn) == model.config.glimpses
    expected = torch.zeros(len(x), dtype=torch.float64)
    for (mu, logvar), z, eps in zip(posterior, drawn, noise):
        mu, sigma, z = mu.double(), logvar.double().mul(0.5).exp(), z.double()
        torch.testing.assert_close(z, mu + sigma * eps.double(), rtol=1e-5, atol=1e-5)   # the noise given was used
        expected += Normal(mu, sigma).log_prob(z).sum(1) - Normal(0.0, 1.0).log_prob(z).sum(1)
    assert out.log_ratio.shape == (len(x),)
    torch.testing.assert_close(out.log_ratio.double(), expected, rtol=1e-5, atol=1e-4)


def test_log_ratio_is_left_out_unless_asked_for(trained):
    assert trained.model(trained.held_out[:2]).log_ratio is None


# --- the importance-weighted bound ---------------------------------------------------------------------


class KnownWeights(nn.Module):
    """Stands in for DRAW: image i (all pixels i) gets log weight -(i + eps), eps a fresh N(0, 1) draw per row.

    Every row it scores is recorded, so the bound can be recomputed from the very weights drawn.
    """

    def __init__(self):
        super().__init__()
        self.rows = []

    def forward(self, x, log_ratio=False):
        image = x.flatten(1)[:, 0]
        eps = torch.randn(len(x))
        self.rows += list(zip(image.tolist(), eps.tolist()))
        return SimpleNamespace(reconstruction=image.clone(), log_ratio=eps)


@pytest.mark.parametrize("rows", (1, 5, 12, 1000))
def test_iw_bound_combines_each_images_own_samples_however_they_are_chunked(rows):
    images, samples = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2), 5
    model = KnownWeights()
    torch.manual_seed(0)
    bound = importance_weighted_nll(model, images, samples, rows)
    assert bound.shape == (4,)
    for i in range(4):
        weights = torch.tensor([-(image + eps) for image, eps in model.rows if image == i], dtype=torch.float64)
        assert len(weights) == samples
        expected = -(torch.logsumexp(weights, 0) - math.log(samples))
        assert bound[i].item() == pytest.approx(expected.item(), rel=1e-6)


def test_iw_bound_with_one_sample_equals_the_variational_bound_in_expectation(trained):
    """Both from the same seed, so the reconstruction terms share their draws and the spread is the KL's alone."""
    model, x = trained.model, trained.held_out[:20].repeat_interleave(50, dim=0)     # 50 draws of 20 digits
    with torch.no_grad():
        torch.manual_seed(1)
        one_sample = importance_weighted_nll(model, x, samples=1, rows=len(x))
        torch.manual_seed(1)
        elbo = model(x).loss
    difference, standard_error = mean_and_standard_error(one_sample - elbo)
    assert standard_error < 0.1, standard_error
    assert abs(difference) < 4 * standard_error, (difference, standard_error)


def test_variational_bound_is_the_mean_negative_elbo_split_into_its_terms(trained):
    model, x = trained.model, trained.held_out
    torch.manual_seed(2)
    result = variational_bound(model, x, batch_size=len(x))
    torch.manual_seed(2)
    with torch.no_grad():
        out = model(x)
    assert result["n_images"] == len(x) and "iw_nll" not in result
    assert result["nll_bound"] == pytest.approx(result["reconstruction"] + result["kl"], rel=1e-12)
    assert result["reconstruction"] == pytest.approx(out.reconstruction.double().mean().item(), rel=1e-6)
    assert result["kl"] == pytest.approx(out.kl.sum(1).double().mean().item(), rel=1e-6)
    assert result["bits_per_dim"] == pytest.approx(result["nll_bound"] / (784 * math.log(2)))


def test_iw_bound_is_below_the_variational_bound_and_tightens_with_more_samples(trained):
    x = trained.held_out.repeat(5, 1, 1, 1)                                          # 5 passes over 100 digits
    torch.manual_seed(3)
    results = {k: variational_bound(trained.model, x, batch_size=500, importance_samples=k) for k in (2, 5, 20)}
    bound = sum(r["nll_bound"] for r in results.values()) / len(results)
    assert results[2]["iw_nll"] < bound
    assert results[20]["iw_nll"] < results[5]["iw_nll"] < results[2]["iw_nll"]
    assert bound - results[20]["iw_nll"] > 1.0                                       # not a rounding difference
    for k, r in results.items():
        assert r["importance_samples"] == k
        assert r["iw_bits_per_dim"] == pytest.approx(r["iw_nll"] / (784 * math.log(2)))


def test_iw_bound_does_not_depend_on_how_the_samples_are_chunked(trained):
    """One pass of all K copies against K passes of one: the draws differ, so the means are compared."""
    model, x = trained.model, trained.held_out.repeat(3, 1, 1, 1)
    torch.manual_seed(4)
    with torch.no_grad():
        one_pass = importance_weighted_nll(model, x, samples=8, rows=8 * len(x))
        eight_passes = importance_weighted_nll(model, x, samples=8, rows=len(x))
    difference, standard_error = mean_and_standard_error(one_pass - eight_passes)
    assert abs(difference) < 4 * standard_error, (difference, standard_error)


def test_variational_bound_leaves_the_model_in_training_mode_if_it_was(trained):
    model = trained.model
    model.train()
    try:
        variational_bound(model, trained.held_out[:4], batch_size=4, importance_samples=2)
        assert model.training
    finally:
        model.eval()


# --- drawkit evaluate ------------------------------------------------------------------------------------


def evaluate(cli_runner, checkpoint, *options):
    return cli_runner.invoke(app, ["evaluate", "--checkpoint", str(checkpoint), *options])


def test_evaluate_json_is_one_object_with_the_documented_keys(mnist_run, cli_runner):
    result = evaluate(cli_runner, mnist_run / "checkpoint.pt", "--split", "test", "--importance-samples", "3",
                      "--max-images", "20", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    report = json.loads(lines[0])
    assert isinstance(report, dict) and KEYS <= set(report)
    assert (report["n_images"], report["dataset"], report["split"]) == (20, "mnist", "test")
    assert report["importance_samples"] == 3
    assert report["nll_bound"] == pytest.approx(report["reconstruction"] + report["kl"], rel=1e-12)
    assert report["bits_per_dim"] == pytest.approx(report["nll_bound"] / (784 * math.log(2)))
    assert 0 < report["iw_nll"] < 784 * math.log(2) * 2 and report["kl"] >= 0


def test_evaluate_with_one_sample_reports_no_importance_weighted_bound(mnist_run, cli_runner):
    result = evaluate(cli_runner, mnist_run, "--max-images", "8", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert KEYS - {"iw_nll"} <= set(report) and "iw_nll" not in report
    assert report["n_images"] == 8


def test_evaluate_is_repeatable(mnist_run, cli_runner):
    options = ("--split", "valid", "--importance-samples", "2", "--max-images", "8", "--json", "--no-progress")
    first, second = (json.loads(evaluate(cli_runner, mnist_run, *options).stdout) for _ in range(2))
    assert first == second


def test_evaluate_prints_a_readable_line_without_json(mnist_run, cli_runner):
    result = evaluate(cli_runner, mnist_run, "--importance-samples", "2", "--max-images", "4", "--no-progress")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("mnist test (4 images): bound ")
    assert "bits/dim" in result.stdout and "importance-weighted (K=2)" in result.stdout


@pytest.mark.parametrize("options, fragments", [
    (("--split", "training"), ("--split", "training", "train, valid, test")),
    (("--importance-samples", "0"), ("--importance-samples", "0")),
    (("--max-images", "0"), ("--max-images", "0")),
    (("--batch-size", "0"), ("--batch-size", "0")),
])
def test_evaluate_bad_option_is_one_line(options, fragments, mnist_run, cli_runner):
    assert_one_error_line(evaluate(cli_runner, mnist_run, "--no-progress", *options), *fragments)


def test_evaluate_missing_checkpoint_is_one_line(tmp_path, cli_runner):
    assert_one_error_line(evaluate(cli_runner, tmp_path / "nowhere.pt", "--json"), "nowhere.pt", "not found")
