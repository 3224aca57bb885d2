"""Generating images from a trained model: a PNG grid and, optionally, a GIF of the drawing."""
from pathlib import Path
from typing import Optional

import torch

from drawkit.checkpoint import load_model
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError
from drawkit.outputs import output_path
from drawkit.registry import get_registry
from drawkit.render import image_grid, save_gif, save_png


def sample(checkpoint, n: int = 64, out="samples.png", gif: Optional[str] = None, seed: int = 0,
           device: str = "auto", scale: int = 2, fps: float = 12, hold_last: int = 12) -> dict:
    """Draw ``n`` images from the prior; the GIF shows sigmoid(c_t) for t = 1..T, one frame per glimpse."""
    if n < 1:
        raise DrawkitError(f"--n must be a positive whole number, got {n}")
    if scale < 1 or fps <= 0:
        raise DrawkitError("--scale must be at least 1 and --fps above 0")
    out = output_path(out, "--out")
    gif = output_path(gif, "--gif") if gif else None
    model, _ = load_model(checkpoint, get_registry(), resolve_device(device))
    torch.manual_seed(seed)
    frames = []
    images = model.generate(n, observe=(lambda t, h_prev, h, canvas: frames.append(torch.sigmoid(canvas))) if gif else None)
    save_png(image_grid(images, scale=scale), out)
    written = {"png": str(out)}
    if gif:
        save_gif([image_grid(frame, scale=scale) for frame in frames], gif, fps=fps, hold_last=hold_last)
        written["gif"] = str(gif)
    return written
