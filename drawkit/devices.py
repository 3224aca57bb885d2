"""Turning --device into a torch.device."""
import torch

from drawkit.errors import DrawkitError

CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is a user error, not a crash."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise DrawkitError(f"unknown device '{name}'; choose one of: {', '.join(CHOICES)} (or cuda:N)")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DrawkitError(f"unknown device '{name}'; choose one of: {', '.join(CHOICES)} (or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DrawkitError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    return device
