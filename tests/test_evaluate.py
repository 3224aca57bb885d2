"""Held-out likelihood: the variational bound, the importance-weighted bound (Burda et al. 2015), and
`drawkit evaluate`."""
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from torch.distributions import Normal, kl_divergence

from drawkit.bound import importance_weighted_nll, variational_bound
from drawkit.cli import app
from drawkit.model import DrawConfig, build_model
from drawkit.registry import get_registry
from bound_reference import importance_weighted_nll as reference_iw_nll, record_passes
from conftest import assert_one_error_line, read_idx_images

MNIST_TEST_IMAGES = Path(os.environ["DRAWKIT_DATA"]) / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
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


class LinearGaussian(nn.Module):
    """A latent-variable model whose likelihood is known exactly, answering as DRAW does.

    z ~ N(0, I_d) and x | z ~ N(z, s^2 I_d), so p(x) = N(x; 0, (1 + s^2) I_d); q(z | x) = N(a x, v I_d),
    the exact posterior when a = 1 / (1 + s^2) and v = s^2 / (1 + s^2). One "glimpse", float64 throughout.
    """

    def __init__(self, d: int, s: float, a: float, v: float):
        super().__init__()
        self.config = SimpleNamespace(image_shape=(1, 1, d))
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))  # the device variational_bound asks for
        self.s, self.a, self.v = (torch.tensor(value, dtype=torch.float64) for value in (s, a, v))

    def forward(self, x, log_ratio=False):
        x = x.flatten(1)
        q, prior = Normal(self.a * x, self.v.sqrt()), Normal(torch.zeros_like(x), torch.ones_like(x))
        z = q.sample()
        ratio = (q.log_prob(z) - prior.log_prob(z)).sum(1) if log_ratio else None
        return SimpleNamespace(reconstruction=-Normal(z, self.s).log_prob(x).sum(1),
                               kl=kl_divergence(q, prior).sum(1, keepdim=True), log_ratio=ratio)

    def expected_bound(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) E_q[-log p(x | z)] + KL(q || p) in closed form, and (N,) the variance of one draw's estimate.

        x - z ~ N((1 - a) x, v) per dimension; E[(x - z)^2] = m^2 + v and Var[(x - z)^2] = 2 v^2 + 4 v m^2.
        """
        x, a, v, s2 = x.flatten(1), self.a, self.v, self.s ** 2
        m2 = ((1 - a) * x) ** 2
        reconstruction = ((m2 + v) / (2 * s2) + 0.5 * torch.log(2 * math.pi * s2)).sum(1)
        kl = 0.5 * (a ** 2 * x ** 2 + v - torch.log(v) - 1).sum(1)
        return reconstruction + kl, ((2 * v ** 2 + 4 * v * m2) / (4 * s2 ** 2)).sum(1)


def linear_gaussian_data(d=8, s=0.5, n=400):
    """n images from the model itself, and their exact -log p(x)."""
    x = math.sqrt(1 + s * s) * torch.randn(n, 1, 1, d, generator=torch.Generator().manual_seed(123),
                                           dtype=torch.float64)
    scale = torch.tensor(math.sqrt(1 + s * s), dtype=torch.float64)
    return x, -Normal(torch.zeros_like(scale), scale).log_prob(x.flatten(1)).sum(1)


@pytest.mark.parametrize("samples", (2, 7))
def test_with_the_exact_posterior_both_bounds_equal_the_exact_likelihood(samples):
    """Every importance weight is then p(x) itself: the importance-weighted bound is exact for any K, and the
    variational bound is exact up to its one draw per image (its spread known in closed form)."""
    s, (x, exact) = 0.5, linear_gaussian_data()
    model = LinearGaussian(d=8, s=s, a=1 / (1 + s * s), v=s * s / (1 + s * s))
    expected, variance = model.expected_bound(x)
    torch.testing.assert_close(expected, exact, rtol=1e-12, atol=1e-12)               # the test's own algebra
    torch.manual_seed(0)
    result = variational_bound(model, x, batch_size=100, importance_samples=samples)
    assert result["iw_nll"] == pytest.approx(exact.mean().item(), rel=1e-10)
    standard_error = variance.sum().sqrt().item() / len(x)
    assert abs(result["nll_bound"] - exact.mean().item()) < 5 * standard_error, (result, standard_error)


def test_with_a_poor_posterior_the_bounds_are_its_elbo_and_near_the_exact_likelihood_with_many_samples():
    """q too narrow-minded about x and too wide: the variational bound is its closed-form ELBO, KL(q || posterior)
    above the truth; 100 importance samples close at least nine tenths of that gap, and never go below it."""
    s, (x, exact) = 0.5, linear_gaussian_data()
    model = LinearGaussian(d=8, s=s, a=0.6 / (1 + s * s), v=2 * s * s / (1 + s * s))
    expected, variance = model.expected_bound(x)
    gap = (expected - exact).mean().item()
    assert gap > 2.0                                                                  # a gap worth closing
    torch.manual_seed(0)
    result = variational_bound(model, x, batch_size=100, importance_samples=100)
    standard_error = variance.sum().sqrt().item() / len(x)
    assert abs(result["nll_bound"] - expected.mean().item()) < 5 * standard_error, (result, standard_error)
    again = importance_weighted_nll(model, x, samples=100, rows=10_000) - exact      # the spread of its draws
    iw_standard_error = again.std().item() / math.sqrt(len(x))
    excess = result["iw_nll"] - exact.mean().item()
    assert -5 * iw_standard_error < excess < gap / 10, (excess, gap, iw_standard_error)


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


def test_evaluate_json_reports_the_bounds_of_the_passes_it_ran(mnist_run, cli_runner):
    """Every number is recomputed from what the network computed (tests/bound_reference.py): a wrong term,
    sign, mean or log K in the bound code shows up here, whatever the batching and the draws."""
    with record_passes() as passes:
        result = evaluate(cli_runner, mnist_run / "checkpoint.pt", "--split", "test", "--importance-samples", "3",
                          "--max-images", "20", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    report = json.loads(lines[0])
    assert isinstance(report, dict) and KEYS <= set(report)
    assert (report["n_images"], report["dataset"], report["split"]) == (20, "mnist", "test")
    assert report["importance_samples"] == 3

    bound_passes = [p for p in passes if not p.log_ratio_asked]
    images = torch.cat([p.x for p in bound_passes])
    grey = torch.from_numpy(read_idx_images(MNIST_TEST_IMAGES, 20).copy())
    assert images.shape == (20, 1, 28, 28)                   # the first 20 test digits, binarized
    assert ((images == 0) | (images == 1)).all()
    assert (images[grey[:, None] == 0] == 0).all() and (images[grey[:, None] == 255] == 1).all()
    assert len(images.flatten(1).unique(dim=0)) == 20
    reconstruction = torch.cat([p.reconstruction() for p in bound_passes]).mean().item()
    kl = torch.cat([p.kl().sum(1) for p in bound_passes]).mean().item()
    iw_nll = reference_iw_nll(images, [p for p in passes if p.log_ratio_asked], samples=3).mean().item()
    assert report["reconstruction"] == pytest.approx(reconstruction, rel=1e-5)
    assert report["kl"] == pytest.approx(kl, rel=1e-5, abs=1e-5)
    assert report["nll_bound"] == pytest.approx(reconstruction + kl, rel=1e-5)
    assert report["iw_nll"] == pytest.approx(iw_nll, rel=1e-5)
    assert report["bits_per_dim"] == pytest.approx((reconstruction + kl) / (784 * math.log(2)), rel=1e-5)


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
