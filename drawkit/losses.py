"""The two terms of DRAW's variational bound, in nats per image."""
import torch
import torch.nn.functional as F


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log D(x | c_T) with D Bernoulli on sigmoid(logits); summed over pixels -> (B,)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 * sum(mu^2 + sigma^2 - log sigma^2 - 1) -> (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(1)
