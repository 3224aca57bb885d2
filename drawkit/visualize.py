"""Attention traces: a GIF (and a strip) of the read box sweeping the input and the write box drawing."""
from dataclasses import replace
from typing import Optional, Sequence

import torch

from drawkit.checkpoint import load_model
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError
from drawkit.frames import Style, trace_frames, trace_strip
from drawkit.inputs import choose_inputs
from drawkit.outputs import output_path
from drawkit.registry import get_registry
from drawkit.render import check_gif_options, save_gif, save_png
from drawkit.trace import has_windows, trace_generation, trace_reconstruction


def visualize_attention(checkpoint, out="attention.gif", n: int = 16, split: str = "test",
                        indices: Optional[str] = None, images: Sequence[str] = (), invert: bool = False,
                        generate: bool = False, seed: int = 0, device: str = "auto", scale: int = 3,
                        fps: float = 12, loop: int = 0, hold_last: int = 12, strip: Optional[str] = None,
                        data_dir: Optional[str] = None) -> dict:
    """Write the trace GIF (T + hold_last frames) and optionally the strip; ``note`` says when there are no boxes."""
    check_gif_options(scale, fps, hold_last, loop)
    if generate and (images or indices is not None):
        raise DrawkitError("--generate draws from the prior; leave out --image and --indices")
    if generate and n < 1:
        raise DrawkitError(f"--n must be a positive whole number, got {n}")
    out = output_path(out, "--out")
    strip = output_path(strip, "--strip") if strip else None
    registry = get_registry()
    model, payload = load_model(checkpoint, registry, resolve_device(device))
    if generate:
        torch.manual_seed(seed)
        trace = trace_generation(model, n)
    else:
        x = choose_inputs(payload, registry, model.config.image_shape, n=n, split=split, indices=indices,
                          images=images, invert=invert, seed=seed, data_dir=data_dir)  # (B, C, H, W)
        torch.manual_seed(seed)
        trace = trace_reconstruction(model, x)
    style = Style(scale=scale)
    frames = trace_frames(trace, style, hold_last=hold_last)
    save_gif(frames, out, fps=fps, loop=loop)
    written = {"gif": str(out), "frames": len(frames), "note": None}
    if strip:
        save_png(trace_strip(trace, replace(style, levels=None)), strip)
        written["strip"] = str(strip)
    if not has_windows(model):
        written["note"] = (f"attention '{model.config.attention}' has no read or write window, so there is "
                           f"nothing to trace; the GIF shows the canvas only")
    return written
