"""Device strings checked before any work starts, for torch and for the metrics' other
runtimes (CTranslate2, onnxruntime); mixed-precision contexts. Imports torch only when needed,
so that metric modules can use it."""

from __future__ import annotations

import contextlib
import re
from typing import Any

PRECISIONS = ("fp32", "bf16")
_DEVICE = re.compile(r"(cpu|cuda|mps)(?::(\d+))?")


def check_device(device: str, key: str = "device") -> None:
    """Raise :class:`ValueError` naming ``key`` if ``device`` is not a torch device this
    machine has (a malformed string, CUDA without a GPU build or device, MPS off Apple)."""
    import torch

    dev = torch.device(parse_device(device, key))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{key}: {device!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise ValueError(f"{key}: {device!r} requested but there are {n} CUDA devices")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{key}: {device!r} requested but MPS is not available")


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
    import torch

    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def parse_device(device: str, key: str = "device") -> str:
    """``device`` if it is a well-formed device string (``cpu``, ``cuda``, ``cuda:N``, ``mps``),
    else a :class:`ValueError` naming ``key``. Availability is not checked (:func:`check_device`)."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device.strip()):
        raise ValueError(f"{key}: {device!r} is not a device (cpu, cuda, cuda:N or mps)")
    return device.strip()


def _kind_index(device: str, key: str) -> tuple[str, int]:
    m = _DEVICE.fullmatch(parse_device(device, key))
    assert m is not None
    return m.group(1), int(m.group(2) or 0)


def ct2_device(device: str, key: str = "device") -> tuple[str, int]:
    """CTranslate2's ``(device, device_index)`` for a torch-style string: ``cpu`` or
    ``cuda[:N]`` on a CTranslate2 build that sees that GPU, else a :class:`ValueError`."""
    kind, index = _kind_index(device, key)
    if kind == "cpu":
        return "cpu", 0
    if kind != "cuda":
        raise ValueError(f"{key}: CTranslate2 runs on cpu or cuda, not {device!r}")
    import ctranslate2

    n = ctranslate2.get_cuda_device_count()
    if index >= n:
        raise ValueError(
            f"{key}: {device!r} requested but CTranslate2 sees {n} CUDA device(s) (its GPU "
            "support needs the CUDA 12 and cuDNN 9 libraries; see the CTranslate2 installation guide)"
        )
    return "cuda", index


def onnx_providers(device: str, key: str = "device") -> list[Any]:
    """onnxruntime execution providers for a torch-style device string: the CPU provider, or
    the CUDA provider on GPU ``N`` (falling back to the CPU for operators it lacks)."""
    kind, index = _kind_index(device, key)
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind != "cuda":
        raise ValueError(f"{key}: onnxruntime runs on cpu or cuda here, not {device!r}")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ValueError(
            f"{key}: {device!r} requested but this onnxruntime has no CUDA provider "
            "(pip uninstall onnxruntime && pip install onnxruntime-gpu)"
        )
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
