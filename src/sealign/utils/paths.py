"""Where sealign keeps assembled models and caches."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Root of sealign's caches: ``$SEALIGN_CACHE`` or ``~/.cache/sealign``."""
    env = os.environ.get("SEALIGN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sealign"
