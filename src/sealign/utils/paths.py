"""Where sealign keeps assembled models and caches."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """Root of sealign's caches: ``$SEALIGN_CACHE`` or ``~/.cache/sealign``."""
    env = os.environ.get("SEALIGN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sealign"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which must not race with other
# threads creating files later on.
_UMASK = _umask()


def share_file(path: str | Path) -> None:
    """Give ``path`` the permissions a plain ``open()`` would (0666 minus the umask).

    safetensors (0.8) writes its files through a private temporary file, so without this a
    checkpoint or a shipped model folder would be readable by its owner only."""
    os.chmod(path, 0o666 & ~_UMASK)


def replace_dir(new: str | Path, dst: str | Path) -> Path:
    """Put folder ``new`` at ``dst``, replacing what was there with two renames, so a reader or
    a crash sees either the old folder or the new one, never a half-written one."""
    new, dst = Path(new), Path(dst)
    old = dst.with_name(dst.name + ".old")
    if old.exists():  # left by a crash between the two renames below
        shutil.rmtree(old)
    if dst.exists():
        dst.rename(old)
    new.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
    return dst


def folder_fingerprint(folder: str | Path) -> list[Any]:
    """What a model folder's results depend on, cheaply: its resolved path and its files'
    names, sizes and modification times (new weights written over it change it)."""
    folder = Path(folder).resolve()
    files = sorted(
        (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file()
    )
    return [str(folder), files]
