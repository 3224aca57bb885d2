"""Number formats of the matrix products: float32, or bfloat16 through autocast.

``bf16`` runs the matrix products and LSTM gates in bfloat16 (autocast, CPU and CUDA); what must
stay exact stays float32 because the model casts it back (drawkit/model.py, classifier.py):
parameters and Adam's state (autocast never touches them), the canvas sum over glimpses, the
posterior's mean and log-variance, the likelihood, the KL terms and the loss. On a CPU with
AVX512-BF16 (or AMX) bfloat16 products run about three times as fast as float32 ones; on one
without (AVX2 only) they are emulated and run tens of times slower, so bf16 is refused there
(``check_native``) unless $DRAWKIT_SLOW_BF16=1 asks for it anyway (tests of the arithmetic).

``tf32`` is CUDA's TensorFloat-32 for float32 matrix products: on by default there, as in most
PyTorch trainers; ``--no-tf32`` asks for full float32 products.
"""
import os
from contextlib import contextmanager

import torch

from drawkit.errors import DrawkitError, check_choice

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, option: str = "--precision") -> str:
    check_choice(option, precision, PRECISIONS)
    return precision


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` does bfloat16 arithmetic in hardware (CPU: AVX512-BF16 or AMX; CUDA: Ampere and later)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN cannot tell: let bf16 run
            return True
    return True


def check_native(precision: str, device: torch.device) -> None:
    """Refuse bf16 where it would be emulated: minutes per step instead of a fraction of a second."""
    if precision == "bf16" and not native_bf16(device) and os.environ.get("DRAWKIT_SLOW_BF16") != "1":
        what = "this CPU has no AVX512-BF16 or AMX" if device.type == "cpu" else f"{device} has no native bfloat16"
        raise DrawkitError(f"--precision bf16: {what}, so bfloat16 products would be emulated, tens of times "
                           f"slower than float32; use --precision fp32 (or set DRAWKIT_SLOW_BF16=1 to run it anyway)")


@contextmanager
def autocast(precision: str, device: torch.device):
    """Run the enclosed forward pass in ``precision`` on ``device``'s kind of processor."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def use_tf32(enabled: bool) -> None:
    """TF32 for float32 matrix products and convolutions on CUDA (no effect elsewhere)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
