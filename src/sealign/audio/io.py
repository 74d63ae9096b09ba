"""Load audio files as mono float32 at a target rate, and validate them with errors that name the file."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")


class AudioError(ValueError):
    """Raised for audio that cannot be used; the message names the file and the problem."""


SILENCE_PEAK = 1e-7  # below a 24-bit file's smallest step: nothing but rounding noise


@dataclass(frozen=True)
class AudioLimits:
    """Bounds a signal must satisfy. Durations in seconds."""

    min_duration: float = 0.1
    max_duration: float = 600.0
    clip_threshold: float = 0.999
    max_clip_fraction: float = 0.01  # above this, a warning (not an error)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono signal with soxr (high quality)."""
    if orig_sr == target_sr:
        return np.asarray(wav, dtype=np.float32)
    return soxr.resample(
        np.asarray(wav, dtype=np.float32), orig_sr, target_sr, quality="HQ"
    ).astype(np.float32)


def _read_any(path: Path) -> tuple[np.ndarray, int]:
    # libsndfile >= 1.1 (bundled with soundfile) reads wav, flac, ogg/vorbis/opus and mp3.
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
        raise AudioError(f"{path}: unreadable audio ({err})") from err
    return data, int(sr)


def _header(path: str | Path) -> Any | None:
    try:
        return sf.info(str(path))
    except Exception:  # noqa: BLE001 - load_audio names an unreadable file
        return None


_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


_WARNED_TRUNCATED: set[str] = set()


def truncated(info: Any) -> str | None:
    """Why a file whose header ``info`` describes holds less audio than the header announces
    (a copy or download cut short), or None. libsndfile reads what is there without an error;
    only WAV-family headers carry the size to compare with."""
    m = _DATA_SIZE.search(info.extra_info or "")
    if not m or int(m.group(2)) >= int(m.group(1)):
        return None  # larger than announced: a streamed WAV whose header was never patched
    announced = int(m.group(1)) * info.frames / max(1, int(m.group(2)))
    return (
        f"truncated: its header announces {announced / info.samplerate:.2f} s, the file holds "
        f"{info.frames / info.samplerate:.2f} s (an interrupted copy or download?)"
    )


def too_long(path: str | Path, max_duration: float) -> str | None:
    """Why the file at ``path`` is longer than ``max_duration`` seconds by its header, or None
    (also when the header cannot be read: reading the file says why)."""
    info = _header(path)
    return None if info is None else _longer_than(info, max_duration)


def _longer_than(info: Any, max_duration: float) -> str | None:
    if info.samplerate > 0 and info.frames > 0:
        dur = info.frames / info.samplerate
        if dur > 1.01 * max_duration:  # headers of compressed files may round
            return f"too long ({dur:.1f} s > max_duration {max_duration} s)"
    return None


def load_audio(
    path: str | Path,
    sample_rate: int | None = 16000,
    limits: AudioLimits | None = AudioLimits(),
) -> tuple[np.ndarray, int]:
    """Read a file, mix down to mono, resample to ``sample_rate`` (None keeps the file's rate).

    Returns ``(wav, sr)`` with ``wav`` float32 in [-1, 1]. Validates with ``limits`` unless None.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.is_dir():
        raise AudioError(f"{path}: a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    info = _header(path)
    if info is not None and limits is not None and (why := _longer_than(info, limits.max_duration)):
        raise AudioError(f"{path}: {why}")  # refused before it is decoded into memory
    if info is not None and (why := truncated(info)) and str(path) not in _WARNED_TRUNCATED:
        _WARNED_TRUNCATED.add(str(path))  # once per file, not once per epoch
        log.warning("%s: %s", path, why)
    data, sr = _read_any(path)
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if limits is not None:
        if data.shape[1] > 1 and np.max(np.abs(wav), initial=0.0) < SILENCE_PEAK <= np.max(
            np.abs(data), initial=0.0
        ):
            raise AudioError(
                f"{path}: its {data.shape[1]} channels cancel out when averaged to mono (one is "
                "the other inverted); give one channel, or the channels in phase"
            )
        validate_audio(wav, sr, name=str(path), limits=limits)
    if sample_rate is not None and sr != sample_rate:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return np.clip(wav, -1.0, 1.0).astype(np.float32), sr


def validate_audio(
    wav: np.ndarray, sr: int, name: str = "<array>", limits: AudioLimits = AudioLimits()
) -> None:
    """Raise :class:`AudioError` for empty, non-finite, all-zero, too short or too long audio.

    Heavy clipping is logged as a warning only.
    """
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise AudioError(f"{name}: expected mono 1-D audio, got shape {wav.shape}")
    if wav.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{name}: audio contains NaN or inf samples")
    if not np.any(wav):
        raise AudioError(f"{name}: audio is all zeros (silent)")
    if np.max(np.abs(wav)) < SILENCE_PEAK:
        raise AudioError(f"{name}: audio is silent (peak below {SILENCE_PEAK:g}, -140 dBFS)")
    dur = wav.size / sr
    if dur < limits.min_duration:
        raise AudioError(f"{name}: too short ({dur:.3f} s < min_duration {limits.min_duration} s)")
    if dur > limits.max_duration:
        raise AudioError(f"{name}: too long ({dur:.1f} s > max_duration {limits.max_duration} s)")
    clip_frac = float(np.mean(np.abs(wav) >= limits.clip_threshold))
    if clip_frac > limits.max_clip_fraction:
        log.warning("%s: heavy clipping (%.1f%% of samples at full scale)", name, 100 * clip_frac)


def mono_float(x: Any, what: str) -> np.ndarray | None:
    """``x`` (a numpy array, torch tensor or list; None stays None) as a 1-D float numpy array;
    TypeError or ValueError, starting with ``what``, for integer samples and for more than one
    channel: a caller's mistake that would otherwise be scored (int16 read as floats, one
    channel of two)."""
    if x is None:
        return None
    if hasattr(x, "detach"):  # a torch tensor; numpy has no bfloat16
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() and x.dtype.itemsize < 4 else x
        x = x.numpy()
    x = np.asarray(x)
    if x.dtype.kind in "iu":
        raise TypeError(
            f"{what} holds integer samples ({x.dtype}); pass float audio in [-1, 1] "
            "(e.g. x / 32768 for int16)"
        )
    if x.dtype.kind != "f":
        raise TypeError(f"{what} must hold float samples, not {x.dtype}")
    if x.ndim != 1:
        raise ValueError(
            f"{what} must be mono and 1-D, got shape {x.shape} (x.reshape(-1) for one "
            "channel of shape (1, n); x.mean(axis=...) to mix channels down)"
        )
    return x


def within_full_scale(wav: np.ndarray, name: str | None = None) -> np.ndarray:
    """``wav`` scaled down to a peak of 0.99 if it overshoots full scale (generated audio can),
    instead of being clipped when written; logged under ``name`` when given."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak <= 1.0:
        return wav
    if name is not None:
        log.info("%s: output peak %.2f scaled to 0.99", name, peak)
    return wav * np.float32(0.99 / peak)


def as_written(wav: np.ndarray, name: str | None = None) -> np.ndarray:
    """``wav`` as ``sealign enhance`` writes it and every table then reads it: within full
    scale and rounded to 16-bit PCM. A reward computed on this judges what is evaluated
    (DistillMOS moves by 0.02 on average with the rounding, on the shipped AR's outputs).
    Audio holding NaN or inf is returned as it is, for the metrics to refuse."""
    wav = np.asarray(wav, np.float32)
    if not np.all(np.isfinite(wav)):
        return wav
    buf = io.BytesIO()
    sf.write(buf, np.clip(within_full_scale(np.asarray(wav, np.float32), name), -1, 1), 16000,
             subtype="PCM_16", format="WAV")  # fmt: skip
    buf.seek(0)
    return sf.read(buf, dtype="float32")[0]


def write_audio(path: str | Path, wav: np.ndarray, sr: int) -> None:
    """Write a 16-bit PCM wav atomically (temp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sf.write(
        str(tmp),
        np.clip(np.asarray(wav, dtype=np.float32), -1, 1),
        sr,
        subtype="PCM_16",
        format="WAV",
    )
    tmp.replace(path)
