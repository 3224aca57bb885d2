"""Reconstructions: each input beside sigmoid(c_T), the model's final canvas for it."""
from typing import Optional, Sequence

import torch

from drawkit.checkpoint import load_model
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError
from drawkit.frames import Style, pairs
from drawkit.inputs import choose_inputs
from drawkit.outputs import output_path
from drawkit.registry import get_registry
from drawkit.render import save_png


@torch.no_grad()
def reconstruct(checkpoint, n: int = 16, out="reconstructions.png", split: str = "test",
                indices: Optional[str] = None, images: Sequence[str] = (), invert: bool = False, seed: int = 0,
                device: str = "auto", scale: int = 3, data_dir: Optional[str] = None) -> dict:
    """Write a PNG grid of (input, reconstruction) pairs; returns the path and the inputs' mean bound (nats)."""
    if scale < 1:
        raise DrawkitError(f"--scale must be at least 1, got {scale}")
    out = output_path(out, "--out")
    registry = get_registry()
    model, payload = load_model(checkpoint, registry, resolve_device(device), drawing="reconstruct")
    x = choose_inputs(payload, registry, model.config.image_shape, n=n, split=split, indices=indices,
                      images=images, invert=invert, seed=seed, data_dir=data_dir)      # (B, C, H, W)
    torch.manual_seed(seed)                                                            # z ~ Q(z | x)
    output = model(x.to(next(model.parameters()).device))
    recon = torch.sigmoid(output.canvas).cpu()                                         # (B, C, H, W)
    style = Style(scale=scale, margin=0, levels=None)                                  # PNG: full grey range
    save_png(pairs(x, recon, style, labels="input | reconstruction sigmoid(c_T)"), out)
    return {"png": str(out), "images": len(x), "bound": output.loss.mean().item()}
