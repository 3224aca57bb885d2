"""Collect what plugins register, remembering which plugin supplied each name."""
import inspect
from dataclasses import dataclass, field
from typing import Callable

from drawkit.errors import DrawkitError
from drawkit.plugins import broken, load_plugins, pm, source_of

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


def _make_register(registry: Registry, kind: str, plugin: str):
    source = source_of(plugin)

    def register(name: str, factory: Callable, description: str = "", defaults: dict = None) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{kind} name must be a non-empty string, got {name!r}")
        if not callable(factory):
            raise TypeError(f"{kind} '{name}' factory must be callable, got {factory!r}")
        taken = registry.entries[kind].get(name)
        if taken is not None:
            registry.problems.append(
                f"{kind} '{name}' from plugin '{plugin}' ({source.package}) ignored: "
                f"already registered by plugin '{taken.plugin}' ({taken.package})")
            return
        registry.entries[kind][name] = Registration(
            kind, name, factory, plugin, source.package, source.version, description, dict(defaults or {}))

    return register


def get_registry() -> Registry:
    """Ask every plugin for its registrations; a plugin whose hook raises is reported and skipped."""
    load_plugins()
    registry = Registry(problems=list(broken.values()))
    for kind, hook_name in HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            register = _make_register(registry, kind, impl.plugin_name)
            try:
                impl.function(**({"register": register} if impl.argnames else {}))
            except Exception as exc:  # a broken plugin must not take drawkit down
                registry.problems.append(f"plugin '{impl.plugin_name}' failed in {hook_name}: "
                                         f"{type(exc).__name__}: {exc}")
    return registry
