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


@dataclass(frozen=True)
class NotLoaded:
    """An entry point that is no plugin now: its name was taken, its module was already registered, or it failed."""

    name: str             # the entry-point name
    source: PluginSource
    missing: str          # for an unknown-name error: that its parts are missing and why ('' if they are not)


#: plugin name -> where it came from; plugins registered in code have no entry here.
sources: dict[str, PluginSource] = {}
#: plugin name -> one line saying why it is broken: it failed to load or its name clashed (recorded here), or
#: its hook raised, registered something invalid or nothing, or is wired wrong (kept up to date by
#: drawkit.registry.get_registry).
broken: dict[str, str] = {}
#: key of `broken` -> the entry point behind it, for the entry points that failed to load or were skipped
not_loaded: dict[str, NotLoaded] = {}
#: warnings about loading as a whole: DRAWKIT_LOAD_PLUGINS naming a plugin that is not installed
warnings: list[str] = []
_loaded = False


def _entry_points():
    """drawkit's own entry points first, then the rest by package, so duplicates resolve the same way every time."""
    def order(ep):
        dist = ep.dist.name if ep.dist else ""
        return (dist != "drawkit", dist, ep.name)
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=order)


def load_plugins() -> None:
    """Import every entry point once; a plugin that fails is recorded, not fatal.

    ``DRAWKIT_LOAD_PLUGINS`` (comma-separated entry point names) limits which load; a name there
    that no installed package provides is warned about.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    entry_points = _entry_points()
    wanted = os.environ.get("DRAWKIT_LOAD_PLUGINS")
    allowed = None if wanted is None else {n.strip() for n in wanted.split(",")} - {""}
    if allowed is not None:
        installed = sorted({ep.name for ep in entry_points})
        unknown = sorted(allowed - set(installed))
        if unknown:
            names = ", ".join(f"'{name}'" for name in unknown)
            warnings.append(f"DRAWKIT_LOAD_PLUGINS names {names}, which {'is' if len(unknown) == 1 else 'are'} "
                            f"not installed, so nothing loads for {'it' if len(unknown) == 1 else 'them'}; "
                            f"installed plugin names: {', '.join(installed) or 'none'}")
    for ep in entry_points:
        if allowed is not None and ep.name not in allowed:
            continue
        source = PluginSource(ep.dist.name, ep.dist.version) if ep.dist else PluginSource("unknown")
        if pm.has_plugin(ep.name):
            taken_by = f"package {sources[ep.name].package}" if ep.name in sources else "a plugin registered in code"
            key = f"{ep.name} ({source.package})"
            broken[key] = (f"plugin '{ep.name}' (package {source.package}) skipped, so its parts are missing: the "
                           f"entry-point name '{ep.name}' is already used by {taken_by} (entry-point names in the "
                           f"'{ENTRY_POINT_GROUP}' group must be unique across installed packages)")
            not_loaded[key] = NotLoaded(ep.name, source, f"plugin '{ep.name}' of package {source.package} was "
                                                         f"skipped, so its parts are missing")
            continue
        try:
            plugin = ep.load()
            if pm.is_registered(plugin):  # pluggy would refuse it with a message listing every plugin
                broken[ep.name] = (f"plugin '{ep.name}' (package {source.package}) skipped: it names the module "
                                   f"of plugin '{pm.get_name(plugin)}' again (give each module one entry point)")
                not_loaded[ep.name] = NotLoaded(ep.name, source, "")
                continue
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # an outside package's failure must not stop drawkit
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            broken[ep.name] = (f"plugin '{ep.name}' (package {source.package}) failed to load: "
                               f"{type(exc).__name__}: {message}")
            not_loaded[ep.name] = NotLoaded(ep.name, source, f"plugin '{ep.name}' of package {source.package} "
                                                             f"failed to load, so its parts are missing")
            continue
        sources[ep.name] = source


def source_of(plugin_name: str) -> PluginSource:
    return sources.get(plugin_name, PluginSource("(registered in code)"))
