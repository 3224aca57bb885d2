"""The variational bound on held-out images: what validation and evaluation report."""
import torch


@torch.no_grad()
def variational_bound(model, images: torch.Tensor, batch_size: int) -> dict:
    """Mean -log p(x) bound in nats/image over ``images`` (already in the model's input form), with its terms."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for start in range(0, len(images), batch_size):
        out = model(images[start:start + batch_size].to(device))
        totals += torch.stack([out.reconstruction.sum(), out.kl.sum()]).double()
    model.train(was_training)
    rec, kl = (totals / len(images)).tolist()
    return {"nll_bound": rec + kl, "reconstruction": rec, "kl": kl, "n_images": len(images)}
