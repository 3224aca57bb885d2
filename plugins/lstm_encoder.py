"""DRAW's encoder: an LSTM fed the flattened glimpse and the previous decoder state."""
import math

import torch
import torch.nn as nn

from drawkit import hookimpl
from drawkit.lstm import lstm_cell


class LSTMEncoder(nn.Module):
    def __init__(self, glimpse_shape, decoder_size: int, hidden_size: int):
        super().__init__()
        self.cell = nn.LSTMCell(math.prod(glimpse_shape) + decoder_size, hidden_size)
        self.output_size = hidden_size

    def initial_state(self, batch: int, like: torch.Tensor):
        h = like.new_zeros(batch, self.output_size)
        return h, torch.zeros_like(h)

    def forward(self, glimpse: torch.Tensor, h_dec: torch.Tensor, state):
        h, c = lstm_cell(self.cell, torch.cat([glimpse.flatten(1), h_dec], dim=1), state)  # bf16 gates under autocast
        return h, (h, c)


@hookimpl
def register_encoders(register):
    register("lstm", LSTMEncoder, description="LSTM over [glimpse, h_dec] (DRAW)")
