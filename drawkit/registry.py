"""Collect what plugins register, remembering which plugin supplied each name."""
import difflib
import inspect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Callable

from drawkit import hookspecs
from drawkit.errors import DrawkitError
from drawkit.plugins import broken, load_plugins, not_loaded, pm, source_of, sources, warnings

#: kind -> the hook that registers it
HOOKS = {"encoder": "register_encoders", "attention": "register_attention", "dataset": "register_datasets"}
#: every hook a plugin may implement, in hookspecs' order
HOOK_NAMES = tuple(name for name, f in vars(hookspecs).items() if hasattr(f, "drawkit_spec"))
#: what `drawkit plugins` lists per plugin: the three kinds of parts, and commands
KINDS = (*HOOKS, "command")


@dataclass
class PluginInfo:
    """One plugin (an entry point, or an object registered in code): its hooks, what it registered, what is wrong."""

    name: str                                 # the entry-point name (the `plugin` of each part)
    package: str
    version: str
    hooks: list[str] = field(default_factory=list)  # the names of its @hookimpl functions
    registered: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    problems: list[str] = field(default_factory=list)  # its warning lines: broken, or a name of it ignored
    broken: bool = False                      # listed as a `broken` row
    loaded: bool = True                       # False: its entry point failed to load, or was skipped
    missing: str = ""                         # why its parts are missing, for an unknown-name error (not in JSON)

    def as_dict(self) -> dict:
        return {name: value for name, value in asdict(self).items() if name != "missing"}


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
    #: plugin name (for an entry point that did not load, its key in drawkit.plugins.broken) -> what it did
    plugins: dict[str, PluginInfo] = field(default_factory=dict)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Registration:
        try:
            return self.entries[kind][name]
        except KeyError:
            names = self.names(kind)
            choices = f"choose one of: {', '.join(names)}" if names else f"no {kind} is installed"
            note = "; ".join(info.missing for info in self.plugins.values() if info.missing)
            raise DrawkitError(f"unknown {kind} '{name}'; {choices} (see 'drawkit plugins')"
                               + (f"; {note}" if note else "")) from None

    def all(self) -> list[Registration]:
        return [reg for kind in HOOKS for reg in sorted(self.entries[kind].values(), key=lambda r: r.name)]

    def mark_broken(self, plugin: str, why: str) -> None:
        """Warn about a plugin and list it as broken; a plugin with several faults gets them all on one row."""
        line = f"{_who(plugin)} {why}"
        self.problems.append(line)
        self.broken[plugin] = f"{self.broken[plugin]}; {why}" if plugin in self.broken else line
        info = self._info(plugin)
        info.problems.append(line)
        info.broken = True

    def as_dict(self) -> dict:
        """What `drawkit plugins --json` prints (the shape is documented in docs/plugins.md)."""
        return {
            "plugins": [info.as_dict() for info in self.plugins.values()],
            "parts": [{"kind": reg.kind, "name": reg.name, "plugin": reg.plugin, "package": reg.package,
                       "version": reg.version, "description": reg.description, "defaults": reg.defaults}
                      for reg in self.all()],
            "problems": list(self.problems),
        }

    def _info(self, plugin: str) -> PluginInfo:
        if plugin not in self.plugins:
            source = source_of(plugin)
            self.plugins[plugin] = PluginInfo(plugin, source.package, source.version)
        return self.plugins[plugin]


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


def _make_register(registry: Registry, kind: str, plugin: str, calls: set):
    source = source_of(plugin)

    def register(name: str, factory: Callable, description: str = "", defaults: dict = None) -> None:
        calls.add(plugin)
        why = _invalid(kind, name, factory, description, defaults)
        if why:  # skipped, not raised: the plugin's other registrations still count
            registry.mark_broken(plugin, f"{why}, skipped")
            return
        taken = registry.entries[kind].get(name)
        if taken is not None:
            line = (f"{kind} '{name}' from plugin '{plugin}' ({source.package}) ignored: "
                    f"already registered by plugin '{taken.plugin}' ({taken.package})")
            registry.problems.append(line)
            registry._info(plugin).problems.append(line)
            return
        registry.entries[kind][name] = Registration(
            kind, name, factory, plugin, source.package, source.version, description, dict(defaults or {}))
        registry._info(plugin).registered[kind].append(name)

    return register


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, HOOK_NAMES, n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""


def _unknown_hooks(plugin) -> list[str]:
    """Its @hookimpl functions no hookspec matches (what pluggy's check_pending() raises for), optional ones aside."""
    return [caller.name for caller in pm.get_hookcallers(plugin) or ()
            if not caller.has_spec() and any(impl.plugin is plugin and not impl.optionalhook
                                             for impl in caller.get_hookimpls())]


def _unmarked(plugin) -> list[str]:
    """Its functions named like a hook (or nearly) that pluggy ignores because they lack @drawkit.hookimpl."""
    module = plugin.__name__ if inspect.ismodule(plugin) else None
    found = []
    for attr in dir(plugin):
        if attr not in HOOK_NAMES and not _did_you_mean(attr):
            continue
        try:
            function = getattr(plugin, attr)
        except Exception:
            continue
        if not inspect.isroutine(function) or pm.parse_hookimpl_opts(plugin, attr) is not None:
            continue
        if module is not None and getattr(function, "__module__", None) != module:
            continue  # imported from elsewhere: not this module's hook
        found.append(attr)
    return found


def _commands(cli) -> list[tuple[str, Callable]]:
    """(name, function) of each command and command group on a Typer app."""
    found = [(info.name or info.callback.__name__.lower().replace("_", "-"), info.callback)
             for info in cli.registered_commands if info.callback]
    for info in cli.registered_groups:
        sub = info.typer_instance
        callbacks = [info.callback, sub.registered_callback and sub.registered_callback.callback,
                     *(command.callback for command in sub.registered_commands)]
        callback = next((c for c in callbacks if c), None)
        if callback is not None:
            found.append((info.name or sub.info.name or callback.__name__, callback))
    return found


def _defined_by(function: Callable, hook: Callable) -> bool:
    """Whether a command's function comes from the plugin whose hook is `hook`: the same top-level package,
    and, for a plugin object, the same class."""
    module, hook_module = getattr(function, "__module__", "") or "", hook.__module__ or ""
    owner = hook.__qualname__.rpartition(".")[0]  # the class of a plugin object's method; '' for a module's
    return (module.partition(".")[0] == hook_module.partition(".")[0]
            and function.__qualname__.startswith(f"{owner}." if owner else ""))


#: keys of drawkit.plugins.broken that the last get_registry() added (plugins whose hooks failed)
_marked: set[str] = set()


def get_registry(cli=None) -> Registry:
    """Ask every plugin for its registrations; a plugin whose hook raises is reported, listed as broken, skipped.

    Each plugin is checked for wiring mistakes, reported the same way: a hook name that no hookspec
    has, a function named like a hook without ``@drawkit.hookimpl``, and registering nothing at all.
    ``cli``: the Typer app the register_commands hook filled, so the commands count as what their plugin
    registered; without it, a plugin with a register_commands hook is not judged to register nothing.

    Besides the entry points that failed to load, ``drawkit.plugins.broken`` then holds this
    registry's broken plugins, so it always describes the plugins as they are now.
    """
    load_plugins()
    for plugin in _marked:  # from an earlier call: the plugin may since have been fixed or removed
        broken.pop(plugin, None)
    _marked.clear()
    registry = Registry(problems=[*broken.values(), *warnings])
    for name, plugin in pm.list_name_plugin():
        hooks = [caller.name for caller in pm.get_hookcallers(plugin) or ()]
        registry._info(name).hooks = sorted(hooks, key=lambda h: (HOOK_NAMES.index(h) if h in HOOK_NAMES else 99, h))
    for key, entry in not_loaded.items():
        if key in broken and key not in registry.plugins:  # else another package loaded under that name
            registry.plugins[key] = PluginInfo(entry.name, entry.source.package, entry.source.version,
                                               problems=[broken[key]], broken=True, loaded=False,
                                               missing=entry.missing)
    calls = set()  # plugins that called register at least once
    for kind, hook_name in HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            register = _make_register(registry, kind, impl.plugin_name, calls)
            try:
                impl.function(**({"register": register} if impl.argnames else {}))
            except Exception as exc:  # a broken plugin must not take drawkit down
                registry.mark_broken(impl.plugin_name, f"failed in {hook_name}: {type(exc).__name__}: {exc}")
    if cli is not None:
        commands = _commands(cli)
        for impl in pm.hook.register_commands.get_hookimpls():
            registry._info(impl.plugin_name).registered["command"] = sorted(
                name for name, function in commands if _defined_by(function, impl.function))
    for name, plugin in pm.list_name_plugin():
        _check_wiring(registry, name, plugin, calls, commands_known=cli is not None)
    for plugin, why in registry.broken.items():
        if plugin not in broken:  # never hide an entry point's own load failure
            broken[plugin] = why
            _marked.add(plugin)
    return registry


def _check_wiring(registry: Registry, name: str, plugin, calls: set, commands_known: bool) -> None:
    """Report hooks drawkit never calls, and a plugin that registered nothing."""
    for hook in _unknown_hooks(plugin):
        registry.mark_broken(name, f"implements unknown hook {hook}{_did_you_mean(hook)}, so drawkit never calls "
                                   f"it; drawkit's hooks: {', '.join(HOOK_NAMES)}")
    for attr in _unmarked(plugin):
        if attr in HOOK_NAMES:
            registry.mark_broken(name, f"defines {attr} without @drawkit.hookimpl, so drawkit never calls it")
        else:
            registry.mark_broken(name, f"defines {attr}{_did_you_mean(attr)} without @drawkit.hookimpl; "
                                       f"drawkit never calls it")
    info = registry.plugins[name]
    if info.problems or name in calls or any(info.registered.values()):
        return
    hooks = [hook for hook in info.hooks if hook in HOOK_NAMES]
    if "register_commands" in hooks and not commands_known:
        return  # its commands are not known here, so it may well have added some
    if not hooks:
        registry.mark_broken(name, f"registered nothing: it has no function marked @drawkit.hookimpl "
                                   f"(drawkit's hooks: {', '.join(HOOK_NAMES)})")
    else:
        registry.mark_broken(name, f"registered nothing: its hooks ({', '.join(hooks)}) registered no part "
                                   f"and no command")
