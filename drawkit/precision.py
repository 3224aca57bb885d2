"""Number formats of the matrix products: float32, or bfloat16 through autocast.

``bf16`` runs the matrix products and LSTM gates in bfloat16 (autocast, CPU and CUDA); what must
stay exact stays float32 because the model casts it back (drawkit/model.py, classifier.py):
parameters and Adam's state (autocast never touches them), the canvas sum over glimpses, the
posterior's mean and log-variance, the likelihood, the KL terms and the loss. On this kind of CPU
(AVX512-BF16) bfloat16 products run about three times as fast as float32 ones.

``tf32`` is CUDA's TensorFloat-32 for float32 matrix products: on by default there, as in most
PyTorch trainers; ``--no-tf32`` asks for full float32 products.
"""
from contextlib import contextmanager

import torch

from drawkit.errors import check_choice

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, option: str = "--precision") -> str:
    check_choice(option, precision, PRECISIONS)
    return precision


@contextmanager
def autocast(precision: str, device: torch.device):
    """Run the enclosed forward pass in ``precision`` on ``device``'s kind of processor."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def use_tf32(enabled: bool) -> None:
    """TF32 for float32 matrix products and convolutions on CUDA (no effect elsewhere)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
