"""Attention traces: a GIF (and a strip) of the read box sweeping the input and the write box drawing.

On a classifier's checkpoint the trace is its glimpses instead: the read box over each input and,
under it, the most likely class and its probability after every glimpse; the held last frames show
the final prediction beside the true label (when the inputs come from the data set) and mark wrong ones.
"""
from dataclasses import replace
from typing import Optional, Sequence

import torch

from drawkit.checkpoint import load_model
from drawkit.devices import resolve_device
from drawkit.errors import DrawkitError
from drawkit.frames import Style, trace_frames, trace_strip
from drawkit.inputs import choose_labelled_inputs
from drawkit.outputs import output_path
from drawkit.registry import get_registry
from drawkit.render import check_gif_options, save_gif, save_png
from drawkit.tasks import task_of
from drawkit.trace import has_windows, trace_classification, trace_generation, trace_reconstruction


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
    model, payload = load_model(checkpoint, registry, resolve_device(device),
                                drawing="visualize-attention --generate" if generate else None)
    kind = task_of(payload.get("model_config"))
    notes = []
    if generate:
        torch.manual_seed(seed)
        trace = trace_generation(model, n)
    else:
        x, labels, no_labels = choose_labelled_inputs(  # x (B, C, H, W); labels only for a classifier
            payload, registry, model.config.image_shape, n=n, split=split, indices=indices, images=images,
            invert=invert, seed=seed, data_dir=data_dir, labels=not kind.generative)
        if no_labels:
            notes.append(no_labels)
        torch.manual_seed(seed)
        if kind.generative:
            trace = trace_reconstruction(model, x)
        else:
            trace = trace_classification(model, x, labels)
    style = Style(scale=scale)
    frames = trace_frames(trace, style, hold_last=hold_last)
    save_gif(frames, out, fps=fps, loop=loop)
    written = {"gif": str(out), "frames": len(frames), "note": None}
    if strip:
        save_png(trace_strip(trace, replace(style, levels=None)), strip)
        written["strip"] = str(strip)
    if not has_windows(model):
        shown = "the canvas only" if kind.generative else "the inputs and predictions only"
        notes.insert(0, f"attention '{model.config.attention}' has no read or write window, so there is "
                        f"nothing to trace; the GIF shows {shown}")
    written["note"] = "; ".join(notes) or None
    return written

