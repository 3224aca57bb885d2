"""Checkpoints: a plain dict (nanoGPT style) with the model config and the plugins that built it.

``model_config["task"]`` names the kind of model (drawkit/tasks.py); DRAW's config leaves it out.
"""
import os
import shutil
from pathlib import Path
from typing import Optional

import torch

from drawkit.errors import DrawkitError
from drawkit.model import Draw
from drawkit.outputs import atomic_write
from drawkit.tasks import require_generative, task_of

FORMAT = "drawkit-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"
BEST = "best.pt"


def plugin_record(registry, kind: str, name: str) -> dict:
    reg = registry.get(kind, name)
    return {"name": name, "plugin": reg.plugin, "package": reg.package, "version": reg.version}


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
    """Accept the checkpoint file or the run folder that holds it."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise DrawkitError(f"checkpoint {path} not found; train one with 'drawkit train --out DIR' "
                           f"and pass --checkpoint DIR/{FILENAME}")
    return path


def read_checkpoint(path) -> dict:
    path = resolve_checkpoint_path(path)
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


def load_model(path, registry, device: Optional[torch.device] = None,
               drawing: Optional[str] = None) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of the checkpoint's kind from the checkpoint alone; a missing plugin names the package.

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
    for kind in ("encoder", "attention"):
        record = payload.get("plugins", {}).get(kind, {"name": getattr(config, kind), "package": "unknown"})
        if record["name"] not in registry.names(kind):
            raise DrawkitError(f"this checkpoint needs {kind} '{record['name']}' from package "
                               f"'{record['package']}', which is not installed; pip install {record['package']}")
    model = task.build(config, registry)
    try:
        model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DrawkitError(f"{path}: its weights do not fit its model config ({first}); "
                           f"the file is damaged or was edited") from None
    return model.to(device or "cpu").eval(), payload
