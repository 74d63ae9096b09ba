"""Where sealign keeps assembled models and caches."""

from __future__ import annotations

import os
from pathlib import Path


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
