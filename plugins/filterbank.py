"""The paper's attention: an N x N grid of Gaussian filters (DRAW section 3.2).

Coordinates are the paper's: pixels are numbered 1..A across and 1..B down, and the
centre g~ = 0 lands on the middle of the image. Read uses the previous decoder state,
write the current one; each has its own linear map to (g~x, g~y, log sigma^2, log delta~, log gamma).
"""
import math
from typing import NamedTuple

import torch
import torch.nn as nn

from drawkit import hookimpl
from drawkit.errors import check_choice

EPS = 1e-8  # keeps row normalisation finite when a window falls off the image or sigma is tiny
STARTS = ("blurred", "sharp")  # the first windows: sigma = stride / 2 (drawkit's), or about 1 pixel (a near-zero bias)


class Window(NamedTuple):
    """Where a filterbank looks, in pixel coordinates (1..A, 1..B); each field is (B,)."""

    gx: torch.Tensor
    gy: torch.Tensor
    sigma2: torch.Tensor
    delta: torch.Tensor
    gamma: torch.Tensor
    size: int  # N


#: Safe ranges for the log-parameters, far outside anything a working model uses. In float32, sigma^2 near
#: e^-50 makes the backward pass of exp(-(a - mu)^2 / 2 sigma^2) compute 0 * inf = NaN, a stride near e^50
#: overflows (a - mu)^2, and e^89 and above overflow to inf. Inside the ranges the paper's formulas apply
#: unchanged; outside, the value is held at the bound (and its gradient is zero).
LOG_SIGMA2_RANGE = (-10.0, 30.0)   # sigma from 0.007 pixels to 3e6 pixels
LOG_DELTA_RANGE = (-30.0, 10.0)    # stride from 1e-13 to 2e4 times the whole-image stride
LOG_GAMMA_RANGE = (-30.0, 30.0)    # intensity 1e-13 to 1e13


def window_from_params(params: torch.Tensor, width: int, height: int, size: int) -> Window:
    """params (B, 5) = (g~x, g~y, log sigma^2, log delta~, log gamma) -> Window (eqs. 21-24).

    log sigma^2, log delta~ and log gamma are clamped to LOG_SIGMA2_RANGE, LOG_DELTA_RANGE and
    LOG_GAMMA_RANGE, so outputs and gradients stay finite in float32 for any value of them.
    """
    gx_, gy_, log_sigma2, log_delta, log_gamma = params.unbind(dim=1)
    log_sigma2 = log_sigma2.clamp(*LOG_SIGMA2_RANGE)
    log_delta = log_delta.clamp(*LOG_DELTA_RANGE)
    log_gamma = log_gamma.clamp(*LOG_GAMMA_RANGE)
    gx = (width + 1) / 2 * (gx_ + 1)
    gy = (height + 1) / 2 * (gy_ + 1)
    # With one filter the stride is unused (its centre is g); max(N-1, 1) keeps it defined.
    delta = (max(width, height) - 1) / max(size - 1, 1) * torch.exp(log_delta)
    return Window(gx, gy, torch.exp(log_sigma2), delta, torch.exp(log_gamma), size)


def filters(centre: torch.Tensor, delta: torch.Tensor, sigma2: torch.Tensor, size: int, length: int) -> torch.Tensor:
    """One axis of the filterbank (eqs. 19-20, 25-26): (B,) params -> (B, N, length), rows summing to 1."""
    i = torch.arange(1, size + 1, dtype=centre.dtype, device=centre.device)      # filter index 1..N
    mu = centre[:, None] + (i - size / 2 - 0.5) * delta[:, None]                  # (B, N) filter centres
    a = torch.arange(1, length + 1, dtype=centre.dtype, device=centre.device)    # pixel coordinate 1..A
    f = torch.exp(-(a - mu[:, :, None]).pow(2) / (2 * sigma2[:, None, None]))     # (B, N, A)
    return f / (f.sum(dim=2, keepdim=True) + EPS)


def filterbank(window: Window, width: int, height: int):
    """Fx (B, N, A) and Fy (B, N, B) for a window."""
    fx = filters(window.gx, window.delta, window.sigma2, window.size, width)
    fy = filters(window.gy, window.delta, window.sigma2, window.size, height)
    return fx, fy


def read_patch(images: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """gamma * Fy x Fx^T for each channel: (B, C, H, W) -> (B, C, N, N)."""
    return gamma[:, None, None, None] * (fy[:, None] @ images @ fx[:, None].transpose(2, 3))


def write_patch(patch: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """(1 / gamma) * Fy^T w Fx for each channel: (B, C, N, N) -> (B, C, H, W)."""
    return (fy[:, None].transpose(2, 3) @ patch @ fx[:, None]) / gamma[:, None, None, None]


class FilterbankAttention(nn.Module):
    def __init__(self, image_shape, hidden_size: int, read_size: int = 2, write_size: int = 5,
                 start: str = "blurred"):
        super().__init__()
        check_choice("filterbank option start", start, STARTS)
        self.channels, self.height, self.width = image_shape
        self.read_size, self.write_size = read_size, write_size
        self.read_params = nn.Linear(hidden_size, 5)
        self.write_params = nn.Linear(hidden_size, 5)
        self.write_content = nn.Linear(hidden_size, self.channels * write_size * write_size)
        self.glimpse_shape = (2 * self.channels, read_size, read_size)  # x and x_hat, stacked
        self.image_glimpse_shape = (self.channels, read_size, read_size)  # x alone (read_image)
        if start == "blurred":  # "sharp": nn.Linear's own near-zero bias, as most DRAW ports start
            for linear, size in ((self.read_params, read_size), (self.write_params, write_size)):
                self._start_blurred(linear, size)

    def _start_blurred(self, linear: nn.Linear, size: int) -> None:
        """Start each window over the whole image with sigma = stride / 2, so neighbouring filters meet.

        The paper leaves initialisation open. With sigma = 1 pixel, as a zero bias gives, the first
        windows see and paint isolated pixels, and small-read models (2 x 2) sit at the mean image
        for thousands of steps; tiled filters give the encoder a blurred view from the first step.
        """
        stride = (max(self.width, self.height) - 1) / max(size - 1, 1)
        with torch.no_grad():
            linear.bias[2] = 2 * math.log(stride / 2)  # log sigma^2; centre and log delta~ stay 0

    def window(self, h_dec: torch.Tensor, which: str) -> Window:
        """The read window (from h_dec_{t-1}) or write window (from h_dec_t), for drawing boxes."""
        linear, size = (self.read_params, self.read_size) if which == "read" else (self.write_params, self.write_size)
        return window_from_params(linear(h_dec), self.width, self.height, size)

    def read(self, x: torch.Tensor, x_hat: torch.Tensor, h_dec: torch.Tensor) -> torch.Tensor:
        w = self.window(h_dec, "read")
        fx, fy = filterbank(w, self.width, self.height)
        return read_patch(torch.cat([x, x_hat], dim=1), fx, fy, w.gamma)          # (B, 2C, N, N)

    def read_image(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The read of the image alone, for a classifier (no canvas, so no error image)."""
        w = self.window(h, "read")
        fx, fy = filterbank(w, self.width, self.height)
        return read_patch(x, fx, fy, w.gamma)                                       # (B, C, N, N)

    def write(self, h_dec: torch.Tensor) -> torch.Tensor:
        w = self.window(h_dec, "write")
        fx, fy = filterbank(w, self.width, self.height)
        patch = self.write_content(h_dec).view(-1, self.channels, self.write_size, self.write_size)
        return write_patch(patch, fx, fy, w.gamma)                                  # (B, C, H, W)


@hookimpl
def register_attention(register):
    register("filterbank", FilterbankAttention,
             description="N x N Gaussian filterbank read and write (DRAW, section 3.2)")
