"""Collect what plugins register, remembering which plugin supplied each name."""
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

from drawkit.errors import DrawkitError
from drawkit.plugins import broken, load_plugins, pm, source_of, sources

#: kind -> the hook that registers it
HOOKS = {"encoder": "register_encoders", "attention": "register_attention", "dataset": "register_datasets"}


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    factory: Callable
    plugin: str
    package: str
    version: str
    description: str
    defaults: dict  # DrawConfig fields this plugin prefers when the user leaves them unset (e.g. read_size)

    def check_options(self, options: dict, required: tuple = ()) -> None:
        """Refuse, as a one-line user error, an option the factory does not take or one drawkit sets itself."""
        params = inspect.signature(self.factory).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        for key in options or {}:
            if key in required:
                raise DrawkitError(f"{self.kind} option '{key}' is set by drawkit itself; "
                                   f"use the matching 'drawkit train' option instead")
            if key not in params and not takes_any:
                accepted = [n for n, p in params.items()
                            if n not in required and p.kind is not inspect.Parameter.VAR_KEYWORD]
                raise DrawkitError(f"{self.kind} '{self.name}' has no option '{key}'; "
                                   f"its options: {', '.join(accepted) or 'none'}")

    def create(self, options: dict = None, **required):
        """Call the factory with drawkit's arguments and the user's options."""
        self.check_options(options, tuple(required))
        return self.factory(**required, **(options or {}))


@dataclass
class Registry:
    entries: dict[str, dict[str, Registration]] = field(default_factory=lambda: {k: {} for k in HOOKS})
    #: warnings to show the user: duplicates, plugins that failed to load or to register
    problems: list[str] = field(default_factory=list)
    #: plugin name -> why it is broken: its hook raised, or it registered something invalid
    #: (its valid registrations are kept); `drawkit plugins` lists these as `broken` rows
    broken: dict[str, str] = field(default_factory=dict)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Registration:
        try:
            return self.entries[kind][name]
        except KeyError:
            choices = ", ".join(self.names(kind)) or "none installed"
            raise DrawkitError(f"unknown {kind} '{name}'; choose one of: {choices} (see 'drawkit plugins')") from None

    def all(self) -> list[Registration]:
        return [reg for kind in HOOKS for reg in sorted(self.entries[kind].values(), key=lambda r: r.name)]

    def mark_broken(self, plugin: str, why: str) -> None:
        """Warn about a plugin and list it as broken; a plugin with several faults gets them all on one row."""
        line = f"{_who(plugin)} {why}"
        self.problems.append(line)
        self.broken[plugin] = f"{self.broken[plugin]}; {why}" if plugin in self.broken else line


def _who(plugin: str) -> str:
    """"plugin 'x' (package p)", as the load failures name a plugin."""
    where = f"package {sources[plugin].package}" if plugin in sources else "registered in code"
    return f"plugin '{plugin}' ({where})"


def _invalid(kind: str, name, factory, description, defaults) -> str:
    """Why a registration cannot be used, or '' when it can."""
    if not isinstance(name, str) or not name.strip():
        return f"gave {kind} name {name!r}, which is not a non-empty string"
    if not callable(factory):
        return f"registered {kind} '{name}' with a factory that is not callable ({factory!r})"
    if not isinstance(description, str):
        return f"registered {kind} '{name}' with a description that is not a string ({description!r})"
    if defaults is not None and not (isinstance(defaults, Mapping) and all(isinstance(k, str) for k in defaults)):
        return f"registered {kind} '{name}' with defaults that are not a dict of option names ({defaults!r})"
    return ""


def _make_register(registry: Registry, kind: str, plugin: str):
    source = source_of(plugin)

    def register(name: str, factory: Callable, description: str = "", defaults: dict = None) -> None:
        why = _invalid(kind, name, factory, description, defaults)
        if why:  # skipped, not raised: the plugin's other registrations still count
            registry.mark_broken(plugin, f"{why}, skipped")
            return
        taken = registry.entries[kind].get(name)
        if taken is not None:
            registry.problems.append(
                f"{kind} '{name}' from plugin '{plugin}' ({source.package}) ignored: "
                f"already registered by plugin '{taken.plugin}' ({taken.package})")
            return
        registry.entries[kind][name] = Registration(
            kind, name, factory, plugin, source.package, source.version, description, dict(defaults or {}))

    return register


#: keys of drawkit.plugins.broken that the last get_registry() added (plugins whose hooks failed)
_marked: set[str] = set()


def get_registry() -> Registry:
    """Ask every plugin for its registrations; a plugin whose hook raises is reported, listed as broken, skipped.

    Besides the entry points that failed to load, ``drawkit.plugins.broken`` then holds this
    registry's broken plugins, so it always describes the plugins as they are now.
    """
    load_plugins()
    for plugin in _marked:  # from an earlier call: the plugin may since have been fixed or removed
        broken.pop(plugin, None)
    _marked.clear()
    registry = Registry(problems=list(broken.values()))
    for kind, hook_name in HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            register = _make_register(registry, kind, impl.plugin_name)
            try:
                impl.function(**({"register": register} if impl.argnames else {}))
            except Exception as exc:  # a broken plugin must not take drawkit down
                registry.mark_broken(impl.plugin_name, f"failed in {hook_name}: {type(exc).__name__}: {exc}")
    for plugin, why in registry.broken.items():
        if plugin not in broken:  # never hide an entry point's own load failure
            broken[plugin] = why
            _marked.add(plugin)
    return registry
