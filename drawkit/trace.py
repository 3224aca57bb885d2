"""Recording a model at work, glimpse by glimpse: DRAW's canvas and boxes, or the classifier's belief.

DRAW calls ``observe(t, h_prev, h, canvas)`` after glimpse t; h_prev is the decoder state the read
used and h the one the write used. The classifier calls ``observe(t, h_prev, h, logits_t)``: h_prev
placed glimpse t's read and logits_t is its class scores after that glimpse. An attention module that can say where it looks
has ``window(h_dec, "read" | "write")`` returning centre (gx, gy), sigma2, stride delta and N in
1-based pixel coordinates; one without it (e.g. no attention) has no boxes to draw.
"""
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch


class Boxes(NamedTuple):
    """Attention footprints over the glimpses; each field (T, B), pixel coordinates 1..W and 1..H."""

    gx: torch.Tensor     # centre, across
    gy: torch.Tensor     # centre, down
    side: torch.Tensor   # N * delta: the width of the grid of filters
    sigma: torch.Tensor  # filter standard deviation, pixels (small: sharp focus)


@dataclass
class Trace:
    """One run of the model, glimpse by glimpse, on the CPU."""

    canvases: Optional[torch.Tensor]  # (T, B, C, H, W) sigmoid(c_t); None for a classifier
    inputs: Optional[torch.Tensor]    # (B, C, H, W) what was read; None when generating
    read: Optional[Boxes] = None      # None when generating or when the attention has no window
    write: Optional[Boxes] = None     # None when the attention has no window, or for a classifier
    probabilities: Optional[torch.Tensor] = None  # (T, B, K) a classifier's softmax after each glimpse
    labels: Optional[torch.Tensor] = None         # (B,) the true classes, when known (classifier)

    @property
    def glimpses(self) -> int:
        return (self.canvases if self.canvases is not None else self.probabilities).shape[0]

    @property
    def images(self) -> int:
        """B: how many images were traced."""
        return (self.canvases if self.canvases is not None else self.probabilities).shape[1]


def has_windows(model) -> bool:
    """Whether the model's attention can say where it reads and writes."""
    return callable(getattr(model.attention, "window", None))


def _boxes(windows: list) -> Boxes:
    """A list over t of windows with (B,) fields -> Boxes with (T, B) fields."""
    stack = lambda name: torch.stack([getattr(w, name).detach().float().cpu() for w in windows])  # noqa: E731
    side = torch.stack([w.size * w.delta.detach().float().cpu() for w in windows])
    return Boxes(stack("gx"), stack("gy"), side, stack("sigma2").sqrt())


class _Recorder:
    """The ``observe`` callback: keeps sigmoid(c_t) and, when it can, the read and write windows."""

    def __init__(self, model, reads: bool):
        self.attention = model.attention if has_windows(model) else None
        self.reads = reads
        self.canvases, self.read, self.write = [], [], []

    def __call__(self, t: int, h_prev: torch.Tensor, h: torch.Tensor, canvas: torch.Tensor) -> None:
        self.canvases.append(torch.sigmoid(canvas).detach().float().cpu())  # (B, C, H, W)
        if self.attention is not None:
            if self.reads:
                self.read.append(self.attention.window(h_prev, "read"))
            self.write.append(self.attention.window(h, "write"))

    def trace(self, inputs: Optional[torch.Tensor]) -> Trace:
        return Trace(torch.stack(self.canvases), inputs,
                     _boxes(self.read) if self.read else None, _boxes(self.write) if self.write else None)


@torch.no_grad()
def trace_reconstruction(model, x: torch.Tensor) -> Trace:
    """Run the model on x (B, C, H, W), z drawn from the posterior with torch's current seed."""
    device = next(model.parameters()).device
    recorder = _Recorder(model, reads=True)
    model(x.to(device), observe=recorder)
    return recorder.trace(x.detach().float().cpu())


@torch.no_grad()
def trace_generation(model, n: int) -> Trace:
    """Generate n images from the prior with torch's current seed; only write boxes exist."""
    recorder = _Recorder(model, reads=False)
    model.generate(n, observe=recorder)
    return recorder.trace(None)


class _GlimpseRecorder:
    """The classifier's ``observe`` callback: softmax(logits_t) and, when it can, the read window."""

    def __init__(self, model):
        self.attention = model.attention if has_windows(model) else None
        self.probabilities, self.read = [], []

    def __call__(self, t: int, h_prev: torch.Tensor, h: torch.Tensor, logits: torch.Tensor) -> None:
        self.probabilities.append(torch.softmax(logits.detach().float(), dim=1).cpu())  # (B, K)
        if self.attention is not None:
            self.read.append(self.attention.window(h_prev, "read"))


@torch.no_grad()
def trace_classification(model, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Trace:
    """Run the classifier on x (B, C, H, W): its read box and class probabilities after every glimpse.

    No canvas or write box: a classifier only reads. ``labels`` (B,), when known, are kept for the pictures.
    """
    device = next(model.parameters()).device
    recorder = _GlimpseRecorder(model)
    model(x.to(device), observe=recorder)
    return Trace(None, x.detach().float().cpu(), _boxes(recorder.read) if recorder.read else None,
                 probabilities=torch.stack(recorder.probabilities),
                 labels=None if labels is None else labels.detach().long().cpu())
