"""Checking a torch device string before any work starts; mixed-precision contexts."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

PRECISIONS = ("fp32", "bf16")


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


def check_precision(precision: str, key: str = "precision") -> None:
    """Raise :class:`ValueError` naming ``key`` unless ``precision`` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"{key}: {precision!r} unknown; known: {', '.join(PRECISIONS)}")


def autocast(device: str, precision: str) -> Any:
    """The forward-pass context for ``precision``: nothing for fp32; bfloat16 autocast for
    bf16 (matmuls and convolutions in bfloat16, reductions and losses kept in float32; the
    weights, gradients and optimizer state stay float32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
