"""Worker processes that do not outlive the command that started them."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any


def exit_with_parent(poll_seconds: float = 1.0) -> None:
    """End this process soon after its parent dies.

    A process pool's workers keep running (and holding their models in memory) when the command
    that owns the pool is killed, e.g. with SIGTERM or SIGKILL, which skip the pool's shutdown.
    A daemon thread watches the parent's pid and exits when the process is re-parented."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def pool_worker_init(init: Callable[..., None], *args: Any) -> None:
    """``ProcessPoolExecutor`` initializer: :func:`exit_with_parent`, then ``init(*args)``."""
    exit_with_parent()
    init(*args)
