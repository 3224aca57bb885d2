"""A GRU encoder for drawkit: DRAW's encoder with a GRU cell in place of the LSTM.

A GRU keeps one state vector instead of the LSTM's two and has three gates instead of four,
so it is a cheaper recurrent encoder to compare against DRAW's.
"""
import math

import torch
import torch.nn as nn

from drawkit import hookimpl


class GRUEncoder(nn.Module):
    def __init__(self, glimpse_shape, decoder_size: int, hidden_size: int):
        super().__init__()
        self.cell = nn.GRUCell(math.prod(glimpse_shape) + decoder_size, hidden_size)
        self.output_size = hidden_size

    def initial_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(batch, self.output_size)                   # (B, hidden)

    def forward(self, glimpse: torch.Tensor, h_dec: torch.Tensor, state: torch.Tensor):
        h = self.cell(torch.cat([glimpse.flatten(1), h_dec], dim=1), state)  # (B, hidden)
        return h, h


@hookimpl
def register_encoders(register):
    register("gru", GRUEncoder, description="GRU over [glimpse, h_dec] (drawkit-gru-encoder)")
