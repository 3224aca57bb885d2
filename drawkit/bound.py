"""Held-out likelihood: the variational bound, and the tighter importance-weighted bound.

The variational bound is E_q[-log D(x|z)] + KL(q || p) with the KL in closed form. The
importance-weighted bound (Burda et al. 2015) is -log (1/K) sum_k p(x, z_k) / q(z_k | x)
over K posterior draws; K = 1 equals the variational bound in expectation, and it tightens
as K grows.
"""
import math
from typing import Callable, Optional

import torch

from drawkit.likelihoods import bits_per_dim


def importance_weighted_nll(model, x: torch.Tensor, samples: int, rows: int) -> torch.Tensor:
    """(B,) -log p(x) estimates from ``samples`` draws each, at most ``rows`` images per forward pass."""
    per_pass = max(1, rows // len(x))
    log_weights = []
    for start in range(0, samples, per_pass):
        reps = min(per_pass, samples - start)
        out = model(x.repeat_interleave(reps, dim=0), log_ratio=True)
        log_weights.append(-(out.reconstruction + out.log_ratio).view(len(x), reps))
    log_weights = torch.cat(log_weights, dim=1)  # (B, K)
    return -(torch.logsumexp(log_weights.double(), dim=1) - math.log(samples))


@torch.no_grad()
def variational_bound(model, images: torch.Tensor, batch_size: int, importance_samples: int = 1,
                      on_batch: Optional[Callable[[int], None]] = None) -> dict:
    """Mean nats/image over ``images`` (already in the model's input form) and bits per dimension."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # reconstruction, kl, importance-weighted
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        out = model(x)
        totals[0] += out.reconstruction.double().sum()
        totals[1] += out.kl.double().sum()
        if importance_samples > 1:
            totals[2] += importance_weighted_nll(model, x, importance_samples, batch_size).sum()
        if on_batch is not None:
            on_batch(len(x))
    model.train(was_training)
    rec, kl, iw = (totals / len(images)).tolist()
    shape = model.config.image_shape
    result = {"nll_bound": rec + kl, "reconstruction": rec, "kl": kl,
              "bits_per_dim": bits_per_dim(rec + kl, shape), "n_images": len(images)}
    if importance_samples > 1:
        result.update(iw_nll=iw, iw_bits_per_dim=bits_per_dim(iw, shape), importance_samples=importance_samples)
    return result
