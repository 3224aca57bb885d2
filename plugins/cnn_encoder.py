"""DCRW's encoder (Gulshad & Kim 2017): a CNN over each glimpse in place of DRAW's encoder RNN.

The CNN sees what the attention read (x and x_hat stacked as channels: the N x N filterbank
read, or the whole image with no attention). h_dec_{t-1} joins the flattened conv features
rather than entering as extra input channels: it summarises the whole canvas and has no
spatial layout for filters to use (docs/dcrw.md). The encoder keeps no state of its own;
memory across glimpses is the decoder LSTM's, which places the read and reaches every glimpse.
"""
import math
from typing import Optional, Union

import torch
import torch.nn as nn

from drawkit import hookimpl
from drawkit.errors import check_whole_number, is_whole_number

IntOrList = Union[int, list]


def _per_layer(name: str, value: IntOrList, depth: int) -> list[int]:
    """An int (every layer) or a list (one per layer) -> depth positive ints; anything else is a user error."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * depth
    if len(values) != depth or not all(is_whole_number(v) for v in values):
        check_whole_number(f"encoder 'cnn' option {name}", value,  # refuses it: a list is never a whole number
                           also=f" or a list of {depth} of them (one per layer, depth={depth})")
    return values


def _depth(depth: Optional[int], channels: IntOrList, kernel_size: IntOrList) -> int:
    """depth as given, else the length of a list option, else 2."""
    if depth is None:
        lengths = {len(v) for v in (channels, kernel_size) if isinstance(v, (list, tuple))}
        depth = lengths.pop() if len(lengths) == 1 else 2
    return check_whole_number("encoder 'cnn' option depth", depth)


class CNNEncoder(nn.Module):
    """depth x [conv ('same' padding) -> ReLU -> max-pool], flatten, concat h_dec, linear -> ReLU.

    'same' padding keeps every map at least as large as the glimpse, so any read size works,
    even 1 x 1 or 2 x 2; a pool is left out where the map is already smaller than its window.
    """

    def __init__(self, glimpse_shape, decoder_size: int, hidden_size: int, channels: IntOrList = 32,
                 kernel_size: IntOrList = 3, depth: Optional[int] = None, pool: int = 2):
        super().__init__()
        depth = _depth(depth, channels, kernel_size)
        widths = _per_layer("channels", channels, depth)
        kernels = _per_layer("kernel_size", kernel_size, depth)
        check_whole_number("encoder 'cnn' option pool", pool, also=" (1: no pooling)")
        c, h, w = glimpse_shape
        layers = []
        for width, kernel in zip(widths, kernels):
            layers += [nn.Conv2d(c, width, kernel, padding="same"), nn.ReLU()]
            if pool > 1 and min(h, w) >= pool:
                layers.append(nn.MaxPool2d(pool, ceil_mode=True))     # keeps the border of odd sizes
                h, w = math.ceil(h / pool), math.ceil(w / pool)
            c = width
        self.features = nn.Sequential(*layers)                        # (B, C_g, H_g, W_g) -> (B, c, h, w)
        self.feature_shape = (c, h, w)
        self.combine = nn.Linear(c * h * w + decoder_size, hidden_size)
        self.output_size = hidden_size

    def initial_state(self, batch: int, like: torch.Tensor):
        return None

    def forward(self, glimpse: torch.Tensor, h_dec: torch.Tensor, state=None):
        f = self.features(glimpse).flatten(1)                          # (B, c * h * w)
        h = torch.relu(self.combine(torch.cat([f, h_dec], dim=1)))    # (B, hidden)
        return h, None


@hookimpl
def register_encoders(register):
    register("cnn", CNNEncoder, description="CNN over each glimpse, then [features, h_dec] -> hidden (DCRW)",
             defaults={"read_size": 12})
