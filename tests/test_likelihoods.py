"""Likelihoods: Bernoulli for binary images; the discretized logistic is a proper distribution over 256 levels;
--likelihood and each dataset's default reach the model and its checkpoint."""
import json
import math

import pytest
import torch

import drawkit
from drawkit.checkpoint import read_checkpoint
from drawkit.cli import app
from drawkit.errors import DrawkitError
from drawkit.likelihoods import LEVELS, LIKELIHOODS, Bernoulli, DiscretizedLogistic, bits_per_dim, make_likelihood
from bound_reference import record_passes
from conftest import NoisePictures, assert_one_error_line

GRID = torch.arange(LEVELS, dtype=torch.float64) / (LEVELS - 1)   # the 256 levels k/255
MEANS = (1e-4, 0.02, 0.5, 0.98, 1 - 1e-4)
LOG_SCALES = (-12.0, -7.0, -4.0, -1.0, 2.0, 6.0)


def logistic(log_scale, shape=(1, 1, 1)) -> DiscretizedLogistic:
    likelihood = DiscretizedLogistic(shape)
    with torch.no_grad():
        likelihood.log_scale.copy_(torch.as_tensor(log_scale, dtype=torch.float32).expand(shape))
    return likelihood


def canvas_for(mean) -> torch.Tensor:
    """Canvas logits whose sigmoid is ``mean``."""
    return torch.logit(torch.as_tensor(mean, dtype=torch.float64)).float()


def level_log_probabilities(mean: float, log_scale: float) -> torch.Tensor:
    """log P(x = k/255), k = 0..255, for one pixel, read off the module's NLL."""
    canvas = canvas_for(mean).expand(LEVELS, 1, 1, 1)
    return -logistic(log_scale).nll(canvas, GRID.float().view(LEVELS, 1, 1, 1)).double()


def cdf_log_probabilities(mean, scale) -> torch.Tensor:
    """log of CDF(k/255 + 1/510) - CDF(k/255 - 1/510), the bottom bin down to -inf, the top bin up to +inf.

    Above the mean the same difference is taken between survival functions, 1 - CDF, which keeps float64
    exact there too. Broadcasts over mean and scale with the levels in the last dimension.
    """
    mean, scale = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(scale, dtype=torch.float64)
    upper = (GRID + 0.5 / (LEVELS - 1) - mean[..., None]) / scale[..., None]
    lower = (GRID - 0.5 / (LEVELS - 1) - mean[..., None]) / scale[..., None]
    upper[..., -1], lower[..., 0] = math.inf, -math.inf
    below = torch.sigmoid(upper) - torch.sigmoid(lower)
    above = torch.sigmoid(-lower) - torch.sigmoid(-upper)
    return torch.log(torch.where(lower > 0, above, below))


def integrated_log_probabilities(mean: float, scale: float, points: int = 20_001) -> torch.Tensor:
    """log P(x = k/255) as the logistic density integrated over each level's bin, in log space and float64.

    No CDF and no sigmoid, so nothing of the module's algebra: in units of the scale, y = (x - mean) / scale
    has density e^-|y| / (1 + e^-|y|)^2, summed by the trapezoid rule on ``points`` points per bin (relative
    error about h^2 / 12, h <= 0.003 here). The end bins are cut 60 scales past the nearer of their edge and
    the mean, which leaves out less than e^-60 of their mass.
    """
    half_bin = 0.5 / (LEVELS - 1)
    low, high = (GRID - half_bin - mean) / scale, (GRID + half_bin - mean) / scale
    low[0], high[-1] = min(high[0].item(), 0.0) - 60, max(low[-1].item(), 0.0) + 60
    y = low[:, None] + (high - low)[:, None] * torch.linspace(0, 1, points, dtype=torch.float64)
    log_density = -y.abs() - 2 * torch.log1p(torch.exp(-y.abs()))
    log_step = torch.log((high - low) / (points - 1))[:, None]
    log_weight = torch.zeros(points, dtype=torch.float64)
    log_weight[[0, -1]] = math.log(0.5)
    return torch.logsumexp(log_density + log_step + log_weight, dim=1)


# --- Bernoulli ------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", (1, 3))
def test_bernoulli_likelihood_is_minus_the_summed_log_probability_of_each_pixel(channels):
    """-sum x log p + (1 - x) log (1 - p), p = sigmoid(canvas), written out in float64 (grey x: the same formula)."""
    g = torch.Generator().manual_seed(0)
    canvas = 3 * torch.randn(4, channels, 6, 6, generator=g)
    x = torch.rand(4, channels, 6, 6, generator=g)
    x[:2] = torch.bernoulli(x[:2], generator=g)
    p, xd = torch.sigmoid(canvas.double()), x.double()
    expected = -(xd * torch.log(p) + (1 - xd) * torch.log(1 - p)).flatten(1).sum(1)
    nll = Bernoulli((channels, 6, 6)).nll(canvas, x)
    assert nll.shape == (4,)
    torch.testing.assert_close(nll.double(), expected, rtol=1e-5, atol=1e-5)


def test_no_likelihood_named_means_bernoulli():
    assert isinstance(make_likelihood(None, (1, 28, 28)), Bernoulli)


def test_bernoulli_has_no_parameters_and_logistic_one_log_scale_per_pixel_and_channel():
    assert list(make_likelihood("bernoulli", (3, 8, 8)).parameters()) == []
    assert [p.shape for p in make_likelihood("logistic", (3, 8, 8)).parameters()] == [(3, 8, 8)]


def test_unknown_likelihood_is_refused_listing_the_choices():
    with pytest.raises(DrawkitError, match="unknown likelihood 'gaussian'; choose one of: bernoulli, logistic"):
        make_likelihood("gaussian", (1, 28, 28))


# --- discretized logistic: a proper distribution over the 256 levels ----------------------------------


@pytest.mark.parametrize("log_scale", LOG_SCALES)
@pytest.mark.parametrize("mean", MEANS)
def test_logistic_probabilities_over_the_levels_sum_to_one(mean, log_scale):
    p = level_log_probabilities(mean, log_scale).exp()
    assert torch.isfinite(p).all() and (p >= 0).all()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("mean", (0.1, 0.37, 0.5, 0.9))
@pytest.mark.parametrize("scale", (0.01, 0.05, 0.2, 1.0))
def test_logistic_level_probabilities_match_the_logistic_cdf(mean, scale):
    torch.testing.assert_close(level_log_probabilities(mean, math.log(scale)), cdf_log_probabilities(mean, scale),
                               rtol=1e-4, atol=1e-4)


def test_logistic_nll_of_colour_images_matches_the_cdf_pixel_by_pixel():
    g = torch.Generator().manual_seed(1)
    shape = (3, 5, 4)
    mean = torch.empty(6, *shape, dtype=torch.float64).uniform_(0.05, 0.95, generator=g)
    log_scale = torch.empty(shape).uniform_(-4.0, -1.0, generator=g)
    levels = torch.randint(0, LEVELS, (6, *shape), generator=g)
    levels[0, 0, 0, 0], levels[0, 0, 0, 1] = 0, LEVELS - 1                      # both end bins appear
    nll = logistic(log_scale, shape).nll(canvas_for(mean), GRID[levels].float())
    reference = cdf_log_probabilities(mean, log_scale.double().exp().expand_as(mean))   # (6, 3, 5, 4, 256)
    expected = -reference.gather(-1, levels[..., None]).squeeze(-1).flatten(1).sum(1)
    assert nll.shape == (6,)
    torch.testing.assert_close(nll.double(), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("mean", (0.02, 0.3, 0.98))
@pytest.mark.parametrize("log_scale", (-7.0, -5.0, 3.0))
def test_logistic_log_probabilities_stay_exact_far_in_the_tails(mean, log_scale):
    """Nats are nats: a level the model finds unlikely still costs what the CDF says, not an approximation."""
    got = level_log_probabilities(mean, log_scale)
    expected = integrated_log_probabilities(mean, math.exp(log_scale))
    assert ((got - expected).abs() <= 1e-3 + 1e-5 * expected.abs()).all(), (got - expected).abs().max()


def test_logistic_end_bins_take_the_tails():
    mean, scale = 0.5, 0.3
    log_p = level_log_probabilities(mean, math.log(scale))
    below = torch.sigmoid(torch.tensor((0.5 / 255 - mean) / scale, dtype=torch.float64))
    assert log_p[0].exp().item() == pytest.approx(below.item(), rel=1e-5)
    assert log_p[-1].exp().item() == pytest.approx(below.item(), rel=1e-5)        # symmetric about 0.5
    assert log_p[0] > log_p[1] and log_p[-1] > log_p[-2]                          # a tail outweighs one bin


def test_logistic_scale_below_the_floor_acts_as_the_floor():
    torch.testing.assert_close(level_log_probabilities(0.4, -30.0), level_log_probabilities(0.4, -7.0))


@pytest.mark.parametrize("log_scale", (-100.0, -7.0, 0.0, 10.0, 50.0, 100.0))
def test_logistic_nll_and_gradients_are_finite_at_extreme_parameters(log_scale):
    shape = (1, 5, 5)
    likelihood = logistic(log_scale, shape)
    canvas = torch.tensor([-100.0, -20.0, 0.0, 20.0, 100.0]).view(1, 1, 5, 1).expand(2, *shape).clone()
    canvas.requires_grad_()
    x = torch.tensor([0.0, 1 / 255, 0.5, 254 / 255, 1.0]).view(1, 1, 1, 5).expand(2, *shape)
    nll = likelihood.nll(canvas, x)
    nll.sum().backward()
    assert torch.isfinite(nll).all() and (nll > 0).all()
    assert torch.isfinite(canvas.grad).all() and torch.isfinite(likelihood.log_scale.grad).all()


def test_logistic_nll_is_finite_when_the_mean_sits_on_an_end_bin():
    likelihood = logistic(-7.0, (1, 1, 2))
    canvas = torch.tensor([[[[-100.0, 100.0]]]], requires_grad=True)
    nll = likelihood.nll(canvas, torch.tensor([[[[0.0, 1.0]]]]))
    nll.sum().backward()
    end_bin = torch.sigmoid(torch.tensor(0.5 / 255 / math.exp(-7.0), dtype=torch.float64))
    assert nll.item() == pytest.approx(-2 * math.log(end_bin), rel=1e-5)          # the scale's floor, not certainty
    assert torch.isfinite(canvas.grad).all() and torch.isfinite(likelihood.log_scale.grad).all()


# --- bits per dimension -----------------------------------------------------------------------------


def test_bits_per_dim_divides_nats_by_dimensions_and_log_two():
    assert bits_per_dim(784 * math.log(2), (1, 28, 28)) == pytest.approx(1.0)
    assert bits_per_dim(3 * 32 * 32 * 8 * math.log(2), (3, 32, 32)) == pytest.approx(8.0)
    assert bits_per_dim(100.0, [3, 8, 8]) == pytest.approx(100.0 / (192 * math.log(2)))


def test_uniform_over_the_levels_is_eight_bits_per_dim():
    shape = (3, 4, 4)
    assert bits_per_dim(math.prod(shape) * math.log(LEVELS), shape) == pytest.approx(8.0)


# --- through `drawkit train` -------------------------------------------------------------------------


class ColourNoise(NoisePictures):
    """Random 8-bit colour pictures, scored by default with the discretized logistic."""

    default_likelihood = "logistic"


class GreyNoise(NoisePictures):
    """Random 8-bit grey pictures from a dataset that names no likelihood of its own."""

    image_shape = (1, 8, 8)
    sizes = {"train": 16, "valid": 16, "test": 16}


class NoiseDatasets:
    @drawkit.hookimpl
    def register_datasets(self, register):
        register("colour-noise", ColourNoise, description="random 3x8x8 uint8")
        register("grey-noise", GreyNoise, description="random 1x8x8 uint8, no default likelihood")


@pytest.fixture
def noise_datasets(register_plugin):
    register_plugin(NoiseDatasets(), name="noise_datasets")


def train_noise(cli_runner, tiny_train_args, out, *options):
    result = cli_runner.invoke(app, ["train", *tiny_train_args, "--max-steps", "2", "--val-images", "16",
                                     "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return read_checkpoint(out)


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
def test_colour_images_train_with_each_likelihood_and_log_its_bound(likelihood, noise_datasets, cli_runner,
                                                                  tiny_train_args, tmp_path):
    """The loss logged at each step is that step's bound under the likelihood asked for, recomputed from what the
    network computed (tests/bound_reference.py: the logistic as a CDF difference on each pixel's bin)."""
    with record_passes() as passes:
        payload = train_noise(cli_runner, tiny_train_args, tmp_path, "--dataset", "colour-noise",
                              "--likelihood", likelihood)
    assert payload["model_config"]["likelihood"] == likelihood
    assert payload["model_config"]["image_shape"] == [3, 8, 8]
    has_scale = "likelihood.log_scale" in payload["model"]
    assert has_scale == (likelihood == "logistic")
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    steps = [p for p in passes if p.training]
    assert [r["step"] for r in train] == [1, 2] and len(steps) == 2
    assert all(step.likelihood == likelihood for step in steps)
    for record, step in zip(train, steps):
        assert record["loss"] == pytest.approx(step.bound().mean().item(), rel=1e-5)


@pytest.mark.parametrize("dataset, expected", [("colour-noise", "logistic"), ("grey-noise", "bernoulli")])
def test_dataset_default_likelihood_applies_without_the_flag(dataset, expected, noise_datasets, cli_runner,
                                                             tiny_train_args, tmp_path):
    payload = train_noise(cli_runner, tiny_train_args, tmp_path, "--dataset", dataset)
    assert payload["model_config"]["likelihood"] == expected


def test_likelihood_flag_overrides_the_dataset_default(noise_datasets, cli_runner, tiny_train_args, tmp_path):
    payload = train_noise(cli_runner, tiny_train_args, tmp_path, "--dataset", "grey-noise",
                          "--likelihood", "logistic")
    assert payload["model_config"]["likelihood"] == "logistic"
    assert payload["model"]["likelihood.log_scale"].shape == (1, 8, 8)


def test_unknown_likelihood_flag_is_one_line_listing_the_choices(noise_datasets, cli_runner, tiny_train_args,
                                                                  tmp_path):
    result = cli_runner.invoke(app, ["train", *tiny_train_args, "--dataset", "colour-noise",
                                     "--likelihood", "gaussian", "--out", str(tmp_path / "run")])
    assert_one_error_line(result, "gaussian", "bernoulli, logistic")
    assert not (tmp_path / "run").exists()


def test_evaluate_reports_the_discretized_logistic_bound_of_a_logistic_model(noise_datasets, cli_runner,
                                                                            tiny_train_args, tmp_path):
    """The numbers are the bound of the passes evaluate ran, with the discretized logistic of tests/bound_reference.py
    (the logistic CDF's mass on each pixel's bin) and its learned log-scale."""
    train_noise(cli_runner, tiny_train_args, tmp_path, "--dataset", "colour-noise")
    with record_passes() as passes:
        result = cli_runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path), "--json", "--no-progress",
                                         "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["likelihood"] == "logistic" and report["n_images"] == 16
    assert [p.likelihood for p in passes] == ["logistic"] and len(passes[0].x) == 16
    reconstruction, kl = passes[0].reconstruction().mean().item(), passes[0].kl().sum(1).mean().item()
    assert report["reconstruction"] == pytest.approx(reconstruction, rel=1e-5)
    assert report["kl"] == pytest.approx(kl, rel=1e-5, abs=1e-6)
    assert report["nll_bound"] == pytest.approx(reconstruction + kl, rel=1e-5)
    assert report["bits_per_dim"] == pytest.approx((reconstruction + kl) / (192 * math.log(2)), rel=1e-5)
