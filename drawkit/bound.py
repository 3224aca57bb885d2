"""Held-out likelihood: the variational bound, and the tighter importance-weighted bound.

The variational bound is E_q[-log D(x|z)] + KL(q || p) with the KL in closed form. The
importance-weighted bound (Burda et al. 2015) is -log (1/K) sum_k p(x, z_k) / q(z_k | x)
over K posterior draws; K = 1 equals the variational bound in expectation, and it tightens
as K grows.
"""
import math
from typing import Callable, Iterator, Optional

import torch

from drawkit.likelihoods import bits_per_dim


def held_out(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` in page-locked memory when it is to be copied to a GPU batch by batch, else as it is.

    Done once per data set: each batch then copies without the host staging it (non_blocking).
    """
    if device.type == "cuda" and tensor.device.type == "cpu" and not tensor.is_pinned():
        return tensor.pin_memory()
    return tensor


def held_out_batches(tensors: tuple, batch_size: int, device: torch.device,
                     pad: bool = False) -> Iterator[tuple[tuple, int]]:
    """(batch of each tensor on ``device``, n real rows), ``batch_size`` rows at a time.

    With ``pad`` the last, partial batch is filled up to ``batch_size`` rows with zeros, so that a
    compiled model (CUDA graphs under --compile-mode reduce-overhead) sees one shape; the caller sums
    the first n rows only.
    """
    total = len(tensors[0])
    for start in range(0, total, batch_size):
        batch = tuple(t[start:start + batch_size].to(device, non_blocking=True) for t in tensors)
        n = len(batch[0])
        if pad and n < batch_size:
            batch = tuple(torch.cat([b, b.new_zeros(batch_size - n, *b.shape[1:])]) for b in batch)
        yield batch, n


def evaluation_batches(model, tensors: tuple, batch_size: int, pad: bool = False) -> Iterator[tuple[tuple, int]]:
    """held_out_batches on the model's device, with the model in eval mode throughout (its mode put back
    after), and a CUDA-graph step mark (--compile-mode reduce-overhead) before each batch."""
    was_training = model.training
    model.eval()
    try:
        for batch, n in held_out_batches(tensors, batch_size, next(model.parameters()).device, pad):
            torch.compiler.cudagraph_mark_step_begin()
            yield batch, n
    finally:
        model.train(was_training)


def importance_weighted_nll(model, x: torch.Tensor, samples: int, rows: int) -> torch.Tensor:
    """(B,) -log p(x) estimates from ``samples`` draws each, at most ``rows`` images per forward pass."""
    per_pass = max(1, rows // len(x))
    log_weights = []
    for start in range(0, samples, per_pass):
        reps = min(per_pass, samples - start)
        torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs: the last pass's outputs are read already
        out = model(x.repeat_interleave(reps, dim=0), log_ratio=True)
        log_weights.append(-(out.reconstruction + out.log_ratio).view(len(x), reps))
    log_weights = torch.cat(log_weights, dim=1)  # (B, K)
    return -(torch.logsumexp(log_weights.double(), dim=1) - math.log(samples))


@torch.no_grad()
def variational_bound(model, images: torch.Tensor, batch_size: int, importance_samples: int = 1,
                      on_batch: Optional[Callable[[int], None]] = None, pad: bool = False) -> dict:
    """Mean nats/image over ``images`` (already in the model's input form) and bits per dimension.

    ``pad``: every batch has ``batch_size`` rows (the last one padded, the padding left out of the
    sums), as validation during training does for a compiled model.
    """
    totals = torch.zeros(3, dtype=torch.float64, device=next(model.parameters()).device)  # rec, kl, iw
    for (x,), n in evaluation_batches(model, (images,), batch_size, pad):
        out = model(x)
        totals[0] += out.reconstruction[:n].double().sum()
        totals[1] += out.kl[:n].double().sum()
        if importance_samples > 1:
            totals[2] += importance_weighted_nll(model, x, importance_samples, batch_size)[:n].sum()
        if on_batch is not None:
            on_batch(n)
    rec, kl, iw = (totals / len(images)).tolist()
    shape = model.config.image_shape
    result = {"nll_bound": rec + kl, "reconstruction": rec, "kl": kl,
              "bits_per_dim": bits_per_dim(rec + kl, shape), "n_images": len(images)}
    if importance_samples > 1:
        result.update(iw_nll=iw, iw_bits_per_dim=bits_per_dim(iw, shape), importance_samples=importance_samples)
    return result
