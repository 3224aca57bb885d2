"""Generating images from a trained model: a PNG grid and, optionally, a GIF of the drawing."""
from typing import Optional

import torch

from drawkit.checkpoint import load_model
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError
from drawkit.frames import Style, trace_frames
from drawkit.outputs import output_path
from drawkit.registry import get_registry
from drawkit.render import check_gif_options, image_grid, save_gif, save_png
from drawkit.trace import trace_generation


def sample(checkpoint, n: int = 64, out="samples.png", gif: Optional[str] = None, seed: int = 0,
           device: str = "auto", scale: int = 2, fps: float = 12, hold_last: int = 12, loop: int = 0) -> dict:
    """Draw ``n`` images from the prior; the GIF shows sigmoid(c_t) for t = 1..T, one frame per glimpse."""
    if n < 1:
        raise DrawkitError(f"--n must be a positive whole number, got {n}")
    check_gif_options(scale, fps, hold_last, loop)
    out = output_path(out, "--out")
    gif = output_path(gif, "--gif") if gif else None
    model, _ = load_model(checkpoint, get_registry(), resolve_device(device), drawing="sample")
    torch.manual_seed(seed)
    if not gif:
        save_png(image_grid(model.generate(n), scale=scale), out)
        return {"png": str(out)}
    trace = trace_generation(model, n)                       # the same draws as generate(n) under this seed
    save_png(image_grid(trace.canvases[-1], scale=scale), out)
    frames = trace_frames(trace, Style(scale=scale, margin=0), hold_last=hold_last, boxes=False)
    save_gif(frames, gif, fps=fps, loop=loop)
    return {"png": str(out), "gif": str(gif)}
