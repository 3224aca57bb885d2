"""One LSTM step that keeps its cell state in float32 when autocast runs the gates in bfloat16.

nn.LSTMCell's fused kernel has no bfloat16 autocast rule on the CPU, so under ``--precision bf16``
it would run in float32 and keep all of its cost. ``lstm_cell`` computes the same step from the
same parameters with the products and gates in the autocast format, while the cell state, a sum
carried over all glimpses like the canvas, stays float32. Without autocast it is nn.LSTMCell itself.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def lstm_cell(cell: nn.LSTMCell, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """``cell(x, state)`` -> (h, c); under autocast the gates in its format and c (and so h) in float32."""
    if not torch.is_autocast_enabled(x.device.type):
        return cell(x, state)
    h, c = state
    gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
    in_gate, forget_gate, candidate, out_gate = gates.chunk(4, dim=1)  # nn.LSTMCell's order: i, f, g, o
    c = torch.sigmoid(forget_gate) * c.float() + torch.sigmoid(in_gate) * torch.tanh(candidate)
    return torch.sigmoid(out_gate) * torch.tanh(c), c
