"""DRAW without attention: read the whole image (and error image), write the whole canvas."""
import torch
import torch.nn as nn

from drawkit import hookimpl


class NoAttention(nn.Module):
    def __init__(self, image_shape, hidden_size: int, read_size: int = 0, write_size: int = 0):
        super().__init__()
        self.image_shape = tuple(image_shape)
        channels, height, width = self.image_shape
        self.write_content = nn.Linear(hidden_size, channels * height * width)
        self.glimpse_shape = (2 * channels, height, width)
        self.image_glimpse_shape = self.image_shape  # read_image: the image alone

    def read(self, x: torch.Tensor, x_hat: torch.Tensor, h_dec: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x_hat], dim=1)                          # (B, 2C, H, W)

    def read_image(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return x                                                     # (B, C, H, W)

    def write(self, h_dec: torch.Tensor) -> torch.Tensor:
        return self.write_content(h_dec).view(-1, *self.image_shape)  # (B, C, H, W)


@hookimpl
def register_attention(register):
    register("none", NoAttention, description="read [x, x_hat] whole; write the canvas through a linear map")
