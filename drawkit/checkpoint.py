"""Checkpoints: a plain dict (nanoGPT style) with the model config and the plugins that built it.

``model_config["task"]`` names the kind of model (drawkit/tasks.py); DRAW's config leaves it out.
"""
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
from rich.markup import escape

from drawkit.errors import DrawkitError
from drawkit.model import Draw
from drawkit.outputs import atomic_write
from drawkit.progress import stderr
from drawkit.tasks import require_generative, task_of

FORMAT = "drawkit-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"
BEST = "best.pt"

#: a folder written by `drawkit export` (drawkit/export.py): the weights in safetensors, the rest in JSON
EXPORT_FORMAT = "drawkit-export"
EXPORT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
#: what an exported folder's config.json gives a payload, beside the weights
EXPORTED_KEYS = ("model_config", "plugins", "train_config", "step", "dataset_source")


#: the package a registry records for a part that a plugin registered in code (pm.register), not through an
#: installed package's entry point (drawkit.plugins.source_of)
IN_CODE = "(registered in code)"
#: a package nobody can name: an entry point without distribution metadata, a checkpoint without a plugins record
UNKNOWN = "unknown"
#: the payload key (never saved) that remembers the warnings a command has shown about a checkpoint's parts
_SHOWN = "_plugin_warnings_shown"


def plugin_record(registry, kind: str, name: str) -> dict:
    reg = registry.get(kind, name)
    return {"name": name, "plugin": reg.plugin, "package": reg.package, "version": reg.version}


def _recorded(payload: dict, kind: str, name: str) -> dict:
    """The checkpoint's record of the plugin that supplied ``kind`` ``name``; an unknown one when it has none."""
    record = (payload.get("plugins") or {}).get(kind)
    if not isinstance(record, dict) or record.get("name") != name:
        return {"name": name, "plugin": "", "package": UNKNOWN, "version": ""}
    return {"plugin": "", "package": UNKNOWN, "version": "", **record}


def _not_loaded(registry, package: str, plugin: str) -> str:
    """Why ``package``'s plugins are not there although it is installed: one of its entry points was
    skipped (a name clash) or failed to load, the checkpoint's ``plugin`` first; '' when none was."""
    infos = sorted((info for info in registry.plugins.values()
                    if not info.loaded and info.missing and info.package == package),
                   key=lambda info: info.name != plugin)
    if not infos:
        return ""
    info = infos[0]
    winner = registry.plugins.get(info.name)  # a skipped entry point's name is held by the plugin that took it
    if winner is None or winner is info or not winner.loaded:
        reason = info.problems[0] if info.problems else ""
        reason = reason.partition("failed to load: ")[2] or "see 'drawkit plugins'"
        return (f"package {package} is installed but its plugin '{info.name}' failed to load ({reason}); "
                f"fix what that names, or reinstall {package}")
    if winner.package == IN_CODE:
        by, fix = "a plugin registered in code", "register that plugin under another name"
    elif winner.package == "drawkit":  # drawkit's own entry points load first
        by, fix = "package drawkit", f"{package} must rename its entry point '{info.name}'"
    else:
        by, fix = f"package {winner.package}", f"pip uninstall {winner.package}, or rename one of the two entry points"
    return (f"package {package} is installed but its plugin '{info.name}' was skipped: the entry-point name "
            f"'{info.name}' is already used by {by} (entry-point names must be unique; see docs/plugins.md); {fix}")


def _missing(kind: str, name: str, record: dict, registry) -> str:
    """Why a checkpoint cannot be loaded when nothing supplies its ``kind`` ``name`` now, and what to do."""
    package = record["package"]
    if package == IN_CODE:
        return (f"this checkpoint needs {kind} '{name}', registered in code by plugin '{record['plugin']}', "
                f"which is not registered now; register that plugin again (drawkit.plugins.pm.register) "
                f"before loading the checkpoint")
    if package == UNKNOWN:
        return (f"this checkpoint needs {kind} '{name}', which is not installed, and does not record which "
                f"package supplied it; install the package that provides {kind} '{name}'")
    why = _not_loaded(registry, package, record["plugin"])
    if why:
        return f"this checkpoint needs {kind} '{name}' from package '{package}'; {why}"
    return (f"this checkpoint needs {kind} '{name}' from package '{package}', which is not installed; "
            f"pip install {package}")


def _swapped(kind: str, name: str, record: dict, reg) -> str:
    """Why a checkpoint is refused when another package supplies its ``kind`` ``name`` now, and what to do."""
    if record["package"] == IN_CODE:
        came = f"was registered in code by plugin '{record['plugin']}'"
        fix = f"register plugin '{record['plugin']}' again in code (drawkit.plugins.pm.register)"
    else:
        came = f"came from package {record['package']} {record['version']}".rstrip()
        fix = f"pip install {record['package']}"
    if reg.package == IN_CODE:
        now = f"registered in code by plugin '{reg.plugin}'"
        fix += f" and unregister plugin '{reg.plugin}' (drawkit.plugins.pm.unregister)"
    else:
        now = f"supplied by package {reg.package} {reg.version}".rstrip()
        if reg.package == "drawkit":  # drawkit's own plugins load first
            fix += f" and leave drawkit's plugin '{reg.plugin}' out of DRAWKIT_LOAD_PLUGINS"
        else:
            fix += f" (and uninstall {reg.package}, or leave its plugin '{reg.plugin}' out of DRAWKIT_LOAD_PLUGINS)"
    return f"this checkpoint's {kind} '{name}' {came}, but '{name}' is now {now}; {fix}"


def check_parts(payload: dict, registry, names: dict) -> None:
    """Each part (kind -> name) must come from the package that supplied it when the checkpoint was written.

    Nothing supplies it now, or another package does: refused in one line naming the package (or the
    plugin registered in code) and the fix; when the package is installed but its plugin was skipped (an
    entry-point name clash) or failed to load, the line says so instead of asking to install it. Another
    version of the same package: one warning per package, once per command (per payload), and loading goes on.
    """
    changed = {}  # (package, then, now) -> the parts
    for kind, name in names.items():
        record = _recorded(payload, kind, name)
        if name not in registry.names(kind):
            raise DrawkitError(_missing(kind, name, record, registry))
        reg = registry.get(kind, name)
        if UNKNOWN in (record["package"], reg.package):
            continue  # nothing to compare with
        if record["package"] != reg.package:
            raise DrawkitError(_swapped(kind, name, record, reg))
        if reg.package != IN_CODE and record["version"] != reg.version:
            changed.setdefault((reg.package, record["version"] or "?", reg.version or "?"), []).append(
                f"{kind} '{name}'")
    shown = payload.setdefault(_SHOWN, set())
    for (package, then, now), parts in changed.items():
        line = (f"this checkpoint's {' and '.join(parts)} came from {package} {then}; {package} {now} is installed "
                f"now; loading anyway (if it fails or behaves differently: pip install '{package}=={then}')")
        if line not in shown:
            shown.add(line)
            stderr.print(f"[yellow]Warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


def checkpoint_dataset(payload: dict, registry, hint: str = "") -> tuple[str, object]:
    """The data set a checkpoint was trained on, checked as ``check_parts`` does and created with its options.

    Returns (its name, the data set); ``hint`` ends the line that refuses a checkpoint naming none.
    """
    train_config = payload.get("train_config") or {}
    name = train_config.get("dataset")
    if not name:
        raise DrawkitError(f"this checkpoint does not name the data set it was trained on{hint}")
    check_parts(payload, registry, {"dataset": name})
    return name, registry.get("dataset", name).create(train_config.get("dataset_options"))


def save_checkpoint(path: Path, model: Draw, plugins: dict, **state) -> Path:
    """Write atomically: a crash or Ctrl-C mid-write leaves the previous checkpoint intact."""
    payload = {"format": FORMAT, "version": VERSION, "model_config": model.config.to_dict(),
               "plugins": plugins, "model": model.state_dict(), **state}
    try:
        with atomic_write(Path(path)) as tmp:
            torch.save(payload, tmp)
    except OSError as exc:
        raise DrawkitError(f"could not write checkpoint {path}: {exc.strerror or exc}; "
                           f"the previous checkpoint is untouched") from None
    return Path(path)


def _point(name: Path, target: Path) -> None:
    """Make ``name`` the same file as ``target`` (a hard link, else a copy), replacing it atomically."""
    tmp = name.with_name(f".{name.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(target, tmp)
    except OSError:
        shutil.copyfile(target, tmp)
    os.replace(tmp, name)


class CheckpointWriter:
    """OUT/checkpoint-<step>.pt for the last ``keep`` saves; checkpoint.pt is the newest, best.pt the best."""

    def __init__(self, out: Path, keep: int = 3):
        self.out, self.keep = Path(out), max(1, keep)

    def save(self, model: Draw, plugins: dict, step: int, best: bool = False, **state) -> Path:
        path = save_checkpoint(self.out / f"checkpoint-{step:08d}.pt", model, plugins, step=step, **state)
        try:
            _point(self.out / FILENAME, path)
            if best:
                _point(self.out / BEST, path)
        except OSError as exc:
            raise DrawkitError(f"could not update {self.out / FILENAME}: {exc.strerror or exc}; "
                               f"the newest checkpoint is {path}") from None
        for old in sorted(self.out.glob("checkpoint-*.pt"))[:-self.keep]:
            old.unlink(missing_ok=True)
        return path


def resolve_checkpoint_path(path) -> Path:
    """Accept the checkpoint file, the run folder that holds it, or a folder written by 'drawkit export'.

    A run folder that also holds an export is read as the run: its checkpoint.pt can resume.
    """
    path = Path(path).expanduser()
    if path.is_dir() and not (path / FILENAME).is_file() and (path / WEIGHTS).is_file():
        return path
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise DrawkitError(f"checkpoint {path} not found; train one with 'drawkit train --out DIR' "
                           f"and pass --checkpoint DIR/{FILENAME} (or a folder written by 'drawkit export')")
    return path


def read_checkpoint(path) -> dict:
    """The checkpoint's payload; an exported folder gives the same keys, less the training state."""
    path = resolve_checkpoint_path(path)
    if path.is_dir():  # resolve_checkpoint_path gives a folder only for an export
        return read_exported(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, pickled code: all refused the same way
        raise DrawkitError(f"{path} is not a readable drawkit checkpoint ({type(exc).__name__}); "
                           f"pass a checkpoint.pt written by 'drawkit train'") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DrawkitError(f"{path} is not a drawkit checkpoint; pass a checkpoint.pt written by 'drawkit train'")
    if payload.get("version", 0) > VERSION:
        raise DrawkitError(f"{path} was written by a newer drawkit (format {payload['version']}); upgrade drawkit")
    return payload


def safetensors_torch():
    """safetensors' torch functions, imported only when an export is written or read (one line if missing)."""
    try:
        import safetensors.torch
    except ImportError:
        raise DrawkitError("exported models are stored with the package safetensors, which is not installed; "
                           "pip install safetensors") from None
    return safetensors.torch


def read_exported(folder: Path) -> dict:
    """An exported folder as a checkpoint payload: config.json's records and the weights, read without pickle.

    It holds no optimizer, progress or random streams, so it cannot resume training.
    """
    config = read_export_config(folder)
    try:
        weights = safetensors_torch().load_file(str(folder / WEIGHTS), device="cpu")
    except DrawkitError:
        raise
    except Exception as exc:  # truncated or not safetensors at all
        raise DrawkitError(f"{folder / WEIGHTS} is not readable safetensors ({type(exc).__name__}); "
                           f"export the run again with 'drawkit export'") from None
    payload = {key: config[key] for key in EXPORTED_KEYS if key in config}
    return {"format": FORMAT, "version": VERSION, **payload, "model": weights, "exported": True}


def read_export_config(folder: Path) -> dict:
    """config.json of an exported folder, checked to be one that this drawkit can read."""
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise DrawkitError(f"{folder} holds {WEIGHTS} but no {CONFIG}; export the run again with "
                           f"'drawkit export'") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DrawkitError(f"{path} is not readable JSON ({type(exc).__name__}); export the run again "
                           f"with 'drawkit export'") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise DrawkitError(f"{path} is not the config of a drawkit export (no \"format\": \"{EXPORT_FORMAT}\")")
    if not isinstance(config.get("format_version"), int) or config["format_version"] > EXPORT_VERSION:
        raise DrawkitError(f"{folder} was exported by a newer drawkit (format {config.get('format_version')}); "
                           f"upgrade drawkit")
    return config


def load_model(path, registry, device: Optional[torch.device] = None,
               drawing: Optional[str] = None) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of the checkpoint's kind from the checkpoint alone.

    Its encoder and attention are checked first (``check_parts``): one missing, or now supplied by
    another package, is refused in one line naming the package; another version is warned about.

    ``drawing``: the command, when it draws with the model (sample, reconstruct): a checkpoint of a
    kind that cannot draw (a classifier) is refused in one line.
    """
    payload = read_checkpoint(path)
    task = task_of(payload.get("model_config"))
    if drawing:
        require_generative(task, drawing)
    try:
        config = task.config_from_dict(payload["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DrawkitError(f"{path}: its model config is missing or damaged ({type(exc).__name__}: {exc}); "
                           f"pass a checkpoint.pt written by 'drawkit train'") from None
    check_parts(payload, registry, {"encoder": config.encoder, "attention": config.attention})
    model = task.build(config, registry)
    try:
        model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DrawkitError(f"{path}: its weights do not fit its model config ({first}); "
                           f"the file is damaged or was edited") from None
    return model.to(device or "cpu").eval(), payload
