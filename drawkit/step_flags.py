"""Whether each training step was finite, read on the host one step late on a GPU.

Reading a step's flag as soon as the step is queued makes the host wait for the GPU to finish it,
and the GPU then idles while the host queues the next step. Read one step late (through pinned
memory and an event), the GPU always has a step queued. On the CPU there is nothing to overlap,
so flags are read at once.
"""
from collections import deque
from typing import Iterator, Optional

import torch


class StepFlags:
    def __init__(self, device: torch.device, lag: Optional[int] = None):
        self.lag = (1 if device.type == "cuda" else 0) if lag is None else lag
        self.pending = deque()

    def push(self, step: int, finite: torch.Tensor) -> None:
        """Queue step ``step``'s flag (a 0-dim tensor on the device) without waiting for it."""
        done = None
        if finite.device.type == "cuda":
            host = torch.empty((), dtype=finite.dtype, pin_memory=True)
            host.copy_(finite, non_blocking=True)  # queued on the current stream of the flag's device
            done = torch.cuda.Event()
            # that stream, not the current device's: with --device cuda:1 the current device may be cuda:0
            done.record(torch.cuda.current_stream(finite.device))
            finite = host
        self.pending.append((step, finite, done))

    def read(self, everything: bool = False) -> Iterator[tuple[int, bool]]:
        """(step, value) for each flag older than the newest ``lag`` ones, or for every flag.

        The value is a bool for a bool flag (a step's finiteness), an int for an integer one.
        """
        while len(self.pending) > (0 if everything else self.lag):
            step, finite, done = self.pending.popleft()
            if done is not None:
                done.synchronize()  # waits for that step only; later ones stay queued
            yield step, finite.item()
