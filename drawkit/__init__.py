"""drawkit: DRAW and DCRW image generation, assembled from plugins."""
import pluggy

__version__ = "0.1.0"

#: Decorate a plugin's hook functions with this (``@hookimpl``).
hookimpl = pluggy.HookimplMarker("drawkit")
