"""drawkit: DRAW and DCRW image generation, assembled from plugins.

From Python (docs/python.md): ``drawkit.load(path)`` and ``drawkit.train(**options)``. They load on
first use, so that ``import drawkit`` (plugins import it for ``hookimpl``) does not import torch.
"""
import importlib

import pluggy

from drawkit.errors import DataNotFound, DrawkitError, NotGenerative

__version__ = "0.1.0"
__all__ = ["DataNotFound", "DrawkitError", "Model", "NotGenerative", "Trained", "hookimpl", "load", "train"]

#: Decorate a plugin's hook functions with this (``@hookimpl``).
hookimpl = pluggy.HookimplMarker("drawkit")

_API = ("load", "Model", "Trained", "train")  # in drawkit/api.py (the training loop is drawkit/training.py)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module("drawkit.api"), name)
    raise AttributeError(f"module 'drawkit' has no attribute '{name}'")
