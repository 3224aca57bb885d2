"""Checks on files the user asks drawkit to write, and writing them without leaving half a file."""
import os
from contextlib import contextmanager
from pathlib import Path

from drawkit.errors import DrawkitError


def output_path(path, option: str) -> Path:
    """Create the parent folder; refuse a directory or an unwritable place with a one-line error."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DrawkitError(f"{option} {path} is a directory; give a file name such as {path / 'out.png'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DrawkitError(f"cannot create folder {path.parent} for {option}: {exc.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise DrawkitError(f"cannot write {option} {path}: folder {path.parent} is not writable")
    return path


def output_dir(path, option: str) -> Path:
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise DrawkitError(f"{option} {path} is a file; give a folder for the run")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DrawkitError(f"cannot create {option} folder {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise DrawkitError(f"cannot write to {option} folder {path}; choose a writable folder")
    return path


@contextmanager
def atomic_write(path: Path):
    """Yield a temporary path beside ``path``; rename it over ``path`` only once writing succeeded."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
