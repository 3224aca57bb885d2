"""The plugin manager: built-in and outside plugins both arrive through entry points."""
import importlib.metadata
import os
from dataclasses import dataclass

import pluggy

from drawkit import hookspecs

ENTRY_POINT_GROUP = "drawkit"

pm = pluggy.PluginManager("drawkit")
pm.add_hookspecs(hookspecs)


@dataclass(frozen=True)
class PluginSource:
    """Which installed distribution a plugin came from."""

    package: str
    version: str = ""


#: plugin name -> where it came from; plugins registered in code have no entry here.
sources: dict[str, PluginSource] = {}
#: plugin name -> one line saying why it is broken: it failed to load or its name clashed (recorded here), or
#: its hook raised or registered something invalid (kept up to date by drawkit.registry.get_registry).
broken: dict[str, str] = {}
_loaded = False


def _entry_points():
    """drawkit's own entry points first, then the rest by package, so duplicates resolve the same way every time."""
    def order(ep):
        dist = ep.dist.name if ep.dist else ""
        return (dist != "drawkit", dist, ep.name)
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=order)


def load_plugins() -> None:
    """Import every entry point once; a plugin that fails is recorded, not fatal.

    ``DRAWKIT_LOAD_PLUGINS`` (comma-separated entry point names) limits which load.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    wanted = os.environ.get("DRAWKIT_LOAD_PLUGINS")
    allowed = None if wanted is None else {n.strip() for n in wanted.split(",")}
    for ep in _entry_points():
        if allowed is not None and ep.name not in allowed:
            continue
        source = PluginSource(ep.dist.name, ep.dist.version) if ep.dist else PluginSource("unknown")
        if pm.has_plugin(ep.name):
            taken_by = sources.get(ep.name, PluginSource("(registered in code)")).package
            broken[f"{ep.name} ({source.package})"] = (f"plugin name '{ep.name}' of package {source.package} is "
                                                       f"already used by package {taken_by}; skipped")
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # an outside package's failure must not stop drawkit
            broken[ep.name] = (f"plugin '{ep.name}' (package {source.package}) failed to load: "
                               f"{type(exc).__name__}: {exc}")
            continue
        sources[ep.name] = source


def source_of(plugin_name: str) -> PluginSource:
    return sources.get(plugin_name, PluginSource("(registered in code)"))
