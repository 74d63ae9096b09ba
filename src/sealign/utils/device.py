"""Checking a torch device string before any work starts."""

from __future__ import annotations

import torch


def check_device(device: str, key: str = "device") -> None:
    """Raise :class:`ValueError` naming ``key`` if ``device`` is not a torch device this
    machine has (a malformed string, CUDA without a GPU build or device, MPS off Apple)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{key}: {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{key}: {device!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise ValueError(f"{key}: {device!r} requested but there are {n} CUDA devices")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{key}: {device!r} requested but MPS is not available")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{key}: device type {dev.type!r} is not supported (cpu, cuda, mps)")
