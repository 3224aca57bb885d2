"""D(x | c_T): how the final canvas scores an image, in nats per image.

The canvas holds logits; sigmoid(canvas) is the mean image in [0, 1] for every likelihood
(it is what x_hat = x - sigmoid(c) and the pictures use).
- bernoulli: for binary images (MNIST and its binarizations).
- logistic: discretized logistic on 256 levels (Salimans et al. 2017), for grey and colour
  images stored as 8-bit; a learned log-scale per pixel and channel. Its NLL is a proper
  discrete NLL, so bits per dimension compare with other models'.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from drawkit.errors import check_choice
from drawkit.losses import bernoulli_nll

LEVELS = 256


class Bernoulli(nn.Module):
    def __init__(self, image_shape):
        super().__init__()

    def nll(self, canvas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return bernoulli_nll(canvas, x)


class DiscretizedLogistic(nn.Module):
    def __init__(self, image_shape):
        super().__init__()
        self.log_scale = nn.Parameter(torch.full(tuple(image_shape), math.log(0.1)))  # (C, H, W)

    def nll(self, canvas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] on the 256-level grid k/255 -> (B,) nats; the end bins take the tails."""
        log_scale = self.log_scale.clamp(min=-7.0)
        inv_scale = torch.exp(-log_scale)
        half_bin = 0.5 / (LEVELS - 1)
        centred = x - torch.sigmoid(canvas)
        upper = inv_scale * (centred + half_bin)
        lower = inv_scale * (centred - half_bin)
        log_cdf_upper = F.logsigmoid(upper)                 # log sigmoid(upper): the bottom bin [0, half_bin]
        log_sf_lower = F.logsigmoid(-lower)                 # log (1 - sigmoid(lower)): the top bin
        # sigmoid(u) - sigmoid(l) = sigmoid(u) sigmoid(-l) (1 - exp(l - u)): no cancellation, exact in the tails
        log_inner = log_cdf_upper + log_sf_lower + _log1mexp(-log_scale - math.log(LEVELS - 1))
        log_p = torch.where(x < half_bin, log_cdf_upper, torch.where(x > 1 - half_bin, log_sf_lower, log_inner))
        return -log_p.flatten(1).sum(1)


def _log1mexp(log_d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d = exp(log_d) > 0, also where d underflows."""
    d = log_d.exp()
    return torch.where(d < 1e-3, log_d - d / 2, torch.log(-torch.expm1(-d.clamp(min=1e-3))))


LIKELIHOODS = {"bernoulli": Bernoulli, "logistic": DiscretizedLogistic}


def make_likelihood(name, image_shape) -> nn.Module:
    name = name or "bernoulli"
    check_choice("likelihood", name, LIKELIHOODS)
    return LIKELIHOODS[name](image_shape)


def bits_per_dim(nats_per_image: float, image_shape) -> float:
    return nats_per_image / (math.prod(image_shape) * math.log(2))
