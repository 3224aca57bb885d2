"""The two terms of the bound: closed-form KL against sampling, Bernoulli NLL against its definition."""
import math

import pytest
import torch

from drawkit.losses import bernoulli_nll, gaussian_kl


def log_normal(z, mu, logvar):
    """log N(z; mu, exp(logvar)) summed over the last dimension."""
    return (-0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / logvar.exp())).sum(-1)


def test_kl_matches_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 6, generator=g, dtype=torch.float64)
    logvar = torch.empty(4, 6, dtype=torch.float64).uniform_(-2.0, 1.0, generator=g)
    z = mu + logvar.mul(0.5).exp() * torch.randn(100_000, 4, 6, generator=g, dtype=torch.float64)
    samples = log_normal(z, mu, logvar) - log_normal(z, torch.zeros_like(mu), torch.zeros_like(logvar))  # (S, 4)
    estimate = samples.mean(0)
    standard_error = samples.std(0) / math.sqrt(len(samples))
    kl = gaussian_kl(mu, logvar)
    assert kl.shape == (4,)
    assert ((kl - estimate).abs() < 5 * standard_error).all(), (kl, estimate, standard_error)


def test_kl_is_zero_at_the_prior():
    assert torch.equal(gaussian_kl(torch.zeros(3, 7), torch.zeros(3, 7)), torch.zeros(3))


@pytest.mark.parametrize("dims", [1, 4, 100])
def test_kl_at_the_prior_is_zero_whatever_the_latent_size(dims):
    """Subtracting 0.5 * T (or any count other than one per dimension) leaves a non-zero KL here."""
    assert gaussian_kl(torch.zeros(2, dims), torch.zeros(2, dims)).abs().max().item() < 1e-12


def test_kl_sums_over_latent_dimensions():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    per_dim = torch.stack([gaussian_kl(mu[:, d:d + 1], logvar[:, d:d + 1]) for d in range(8)], dim=1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), per_dim.sum(1))


def test_kl_of_shifted_unit_gaussian_is_half_squared_distance():
    mu = torch.tensor([[3.0, -4.0]])
    assert gaussian_kl(mu, torch.zeros_like(mu)).item() == pytest.approx(0.5 * 25)


def test_kl_is_positive_away_from_the_prior():
    g = torch.Generator().manual_seed(2)
    assert (gaussian_kl(torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g)) > 0).all()


def direct_bernoulli_nll(logits, x):
    p = torch.sigmoid(logits)
    return -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).flatten(1).sum(1)


def test_bernoulli_nll_matches_its_definition_on_binary_images():
    g = torch.Generator().manual_seed(3)
    logits = 4 * torch.randn(3, 1, 6, 5, generator=g, dtype=torch.float64)
    x = torch.bernoulli(torch.full((3, 1, 6, 5), 0.4, dtype=torch.float64), generator=g)
    nll = bernoulli_nll(logits, x)
    assert nll.shape == (3,)
    torch.testing.assert_close(nll, direct_bernoulli_nll(logits, x))


def test_bernoulli_nll_matches_its_definition_on_grey_images():
    g = torch.Generator().manual_seed(4)
    logits = 3 * torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    x = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(bernoulli_nll(logits, x), direct_bernoulli_nll(logits, x))


def test_bernoulli_nll_of_an_even_coin_is_log_two_per_pixel():
    nll = bernoulli_nll(torch.zeros(2, 1, 28, 28), torch.ones(2, 1, 28, 28))
    torch.testing.assert_close(nll, torch.full((2,), 784 * math.log(2)))


def test_bernoulli_nll_stays_finite_for_confident_wrong_logits():
    logits = torch.tensor([[100.0, -100.0]])
    nll = bernoulli_nll(logits, torch.tensor([[0.0, 1.0]]))
    assert nll.item() == pytest.approx(200.0, rel=1e-6)
