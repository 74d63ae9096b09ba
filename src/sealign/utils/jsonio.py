"""Atomic text, JSON and JSONL files: written to a temporary file of this process, then renamed."""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np


def tmp_name(path: Path, suffix: str = ".tmp") -> Path:
    """A temporary file beside ``path`` that no other process, on this machine or another
    sharing the folder (where containers often have equal pids), would pick."""
    return path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` atomically (synced to disk before it replaces ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # else a crash after the rename can leave an empty file
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (numpy's too) as None, so that it is valid JSON
    for readers other than Python's."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any, strict: bool = False) -> None:
    """Write ``obj`` as indented JSON (numpy scalars as floats), atomically; ``strict`` writes
    NaN and infinity as null (files meant for other tools: an evaluation's results)."""
    if strict:
        obj = finite_or_null(obj)
    text = json.dumps(obj, indent=1, default=float, allow_nan=not strict)
    write_text(path, text + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file; a line cut by a kill is left out (its item is redone)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` one per line, atomically."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
