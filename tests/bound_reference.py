"""DRAW's bound recomputed from what the network computed, with none of drawkit's loss or bound code.

``record_passes()`` watches every forward pass of every DRAW model (global module hooks, so it also sees
a model that a command loads for itself) and keeps, for each pass, what the network produced: the input
x, the posterior's (mu, log sigma^2) and the z fed to the decoder at each glimpse, the final canvas
c_T, and the likelihood's log-scale at that moment. The terms of the bound then follow from their
definitions, in float64:

- -log D(x | c_T): Bernoulli on sigmoid(c_T) written with log-sigmoids; discretized logistic as the
  logistic CDF's mass on x's bin (the end bins reaching to -inf and +inf), a plain CDF difference;
- KL(N(mu_t, sigma_t) || N(0, I)) per glimpse, from torch.distributions;
- the importance weight log D(x | c_T) + log N(z; 0, I) - log N(z; mu, sigma), from torch.distributions.
"""
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from drawkit.model import Draw

LEVELS = 256
LOG_SCALE_FLOOR = -7.0  # the discretized logistic's documented floor on its log-scale


@dataclass
class DrawPass:
    """One forward pass of a DRAW model, as the network computed it."""

    model: Draw
    training: bool
    x: torch.Tensor
    likelihood: str
    log_scale: Optional[torch.Tensor]
    posteriors: list = field(default_factory=list)  # (mu, logvar) per glimpse
    z: list = field(default_factory=list)           # the decoder's input per glimpse
    canvas: Optional[torch.Tensor] = None
    log_ratio_asked: bool = False

    def reconstruction(self) -> torch.Tensor:
        """(B,) -log D(x | c_T), nats."""
        return -log_likelihood(self.canvas, self.x, self.likelihood, self.log_scale)

    def kl(self) -> torch.Tensor:
        """(B, T) KL(N(mu_t, sigma_t) || N(0, I)) per glimpse, nats."""
        return torch.stack([kl_divergence(posterior(mu, logvar), Normal(0.0, 1.0)).sum(1)
                            for mu, logvar in self.posteriors], dim=1)

    def bound(self) -> torch.Tensor:
        """(B,) the negative variational bound of each image, nats."""
        return self.reconstruction() + self.kl().sum(1)

    def log_weight(self) -> torch.Tensor:
        """(B,) log D(x | c_T) + log p(z) - log q(z | x) of the z this pass drew."""
        prior = sum(Normal(0.0, 1.0).log_prob(z).sum(1) for z in self.z)
        q = sum(posterior(mu, logvar).log_prob(z).sum(1) for (mu, logvar), z in zip(self.posteriors, self.z))
        return -self.reconstruction() + prior - q


def posterior(mu: torch.Tensor, logvar: torch.Tensor) -> Normal:
    return Normal(mu, torch.exp(0.5 * logvar))


def log_likelihood(canvas, x, likelihood: str, log_scale=None) -> torch.Tensor:
    """(B,) log D(x | canvas) in float64, summed over pixels."""
    canvas, x = canvas.double(), x.double()
    if likelihood == "bernoulli":
        log_p = x * F.logsigmoid(canvas) + (1 - x) * F.logsigmoid(-canvas)
    elif likelihood == "logistic":
        log_p = logistic_level_log_probability(x, torch.sigmoid(canvas),
                                               log_scale.double().clamp(min=LOG_SCALE_FLOOR).exp())
    else:
        raise ValueError(likelihood)
    return log_p.flatten(1).sum(1)


def logistic_level_log_probability(x, mean, scale) -> torch.Tensor:
    """log of the logistic(mean, scale) mass on the bin of level x = k/255: CDF(x + 1/510) - CDF(x - 1/510),
    the bottom bin from -inf, the top bin to +inf (above the mean, the same difference of survival functions)."""
    half_bin = 0.5 / (LEVELS - 1)
    upper, lower = (x + half_bin - mean) / scale, (x - half_bin - mean) / scale
    bottom, top = x < half_bin, x > 1 - half_bin
    cdf_upper = torch.where(top, torch.ones_like(upper), torch.sigmoid(upper))
    cdf_lower = torch.where(bottom, torch.zeros_like(lower), torch.sigmoid(lower))
    sf_upper = torch.where(top, torch.zeros_like(upper), torch.sigmoid(-upper))
    sf_lower = torch.where(bottom, torch.ones_like(lower), torch.sigmoid(-lower))
    return torch.log(torch.where(lower > 0, sf_lower - sf_upper, cdf_upper - cdf_lower))


@contextmanager
def record_passes():
    """Yields a list that fills with a DrawPass per finished forward pass of any DRAW model."""
    passes, running = [], []

    def before(module, args):
        if isinstance(module, Draw):
            likelihood = module.config.likelihood or "bernoulli"
            log_scale = module.likelihood.log_scale.detach().clone() if likelihood == "logistic" else None
            running.append(DrawPass(module, module.training, args[0].detach().double(), likelihood, log_scale))
        elif running and module is running[-1].model.decoder:
            running[-1].z.append(args[0].detach().double())

    def after(module, args, output):
        if running and module is running[-1].model.posterior:
            running[-1].posteriors.append(tuple(output.detach().double().chunk(2, dim=1)))
        elif running and module is running[-1].model:
            done = running.pop()
            done.canvas, done.log_ratio_asked = output.canvas.detach().double(), output.log_ratio is not None
            passes.append(done)

    hooks = [register_module_forward_pre_hook(before), register_module_forward_hook(after)]
    try:
        yield passes
    finally:
        for hook in hooks:
            hook.remove()


def importance_weighted_nll(images: torch.Tensor, passes: list, samples: int) -> torch.Tensor:
    """(N,) -log (1/K) sum_k w_k for each image, from every row of ``passes`` that scored that image.

    Rows are matched to images by their pixels, so how the draws were batched or ordered does not matter;
    each image must have been scored exactly ``samples`` times.
    """
    rows = torch.cat([p.x.flatten(1) for p in passes])
    log_weights = torch.cat([p.log_weight() for p in passes])
    images = images.double().flatten(1)
    owner = (rows[:, None, :] == images[None, :, :]).all(2)  # (rows, N)
    assert (owner.sum(1) == 1).all(), "a scored row matches no image, or several"
    assert (owner.sum(0) == samples).all(), owner.sum(0)
    per_image = torch.stack([log_weights[owner[:, i]] for i in range(len(images))])  # (N, K)
    return -(torch.logsumexp(per_image, dim=1) - math.log(samples))
