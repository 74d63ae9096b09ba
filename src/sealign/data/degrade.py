"""Degradations that turn clean speech into training pairs for generative speech restoration.

Each op is a pure function of ``(signal, rng, parameters)`` returning the degraded signal and a
JSON-serialisable dict of the parameters actually used (the reverb op also returns the new
target). :func:`degrade` composes them in a fixed order

    reverb -> noise (or level normalisation) -> band limit -> clipping -> codec -> packet loss

and covers denoising, dereverberation, bandwidth extension, declipping, codec-artifact removal
and packet-loss concealment, alone or mixed. :func:`degrade_manifest` applies it to a clean
manifest, in parallel, deterministically per utterance, and resumably.

Definitions (used consistently everywhere in this module):

* **Power / level.** ``snr_mode="active"`` (the default) measures a signal's power over its own
  active frames: 20 ms frames whose energy is within 40 dB of the loudest frame (scale-invariant).
  ``snr_mode="full"`` averages over the whole signal. Speech level (dBFS) is the RMS of the same
  power; a full-scale sine has 0 dBFS peak and -3 dBFS RMS.
* **SNR** = 10 log10(P(speech) / P(noise)), each power measured as above on the speech as it
  enters the mixer (reverberant when reverb was applied) and on the added noise.
* **Level normalisation (DNS style).** Speech is scaled to a random level (default -35...-15
  dBFS, i.e. -25 +/- 10 dB), the noise is scaled for the drawn SNR, and if the mixture peak
  exceeds 0.99 both are scaled down together (the SNR is unchanged).
* **Dereverberation target.** The RIR is normalised to a unit direct-path peak (the sample of
  largest magnitude). The target is the clean speech convolved with the RIR truncated 50 ms after
  that peak (direct path + early reflections, hard cut); the reverberant input uses the full RIR.
  Both are cut to the clean length starting at the peak, so they stay time-aligned with the clean
  utterance. Every later gain applied to the speech is applied to the target too.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy import signal as sps

from sealign.audio.io import AUDIO_EXTENSIONS, AudioError, load_audio, resample, write_audio
from sealign.data.manifest import Entry, ManifestError, read_manifest, write_manifest
from sealign.data.noise import (
    BabbleItem,
    BabbleSource,
    NoiseBank,
    NoiseError,
    NoiseSource,
    SampleContext,
)
from sealign.utils.jsonio import read_jsonl, write_json
from sealign.utils.procs import pool_worker_init
from sealign.utils.shard import Shard, remove_shard_files

log = logging.getLogger(__name__)

SR = 16000
Range = tuple[float, float]
OP_ORDER = ("reverb", "noise", "band_limit", "clip", "codec", "packet_loss")
TASKS = {
    "reverb": "dereverberation",
    "noise": "denoising",
    "band_limit": "bandwidth_extension",
    "clip": "declipping",
    "codec": "codec_artifact_removal",
    "packet_loss": "packet_loss_concealment",
}
MIX_PEAK = 0.99
FINAL_PEAK = 0.999


def _draw(rng: np.random.Generator, r: float | Sequence[float]) -> float:
    """A value from a ``(lo, hi)`` range (uniform) or a fixed number."""
    if isinstance(r, int | float):
        return float(r)
    lo, hi = float(r[0]), float(r[1])
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


# --------------------------------------------------------------------------- level and SNR


def active_power(
    x: np.ndarray, sr: int = SR, mode: str = "active", floor_db: float = 40.0
) -> float:
    """Mean power of ``x``: over all samples (``full``) or over its active 20 ms frames."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return 0.0
    if mode == "full":
        return float(np.mean(x**2))
    if mode != "active":
        raise ValueError(f"snr_mode must be 'active' or 'full', got {mode!r}")
    frame = max(1, int(round(0.02 * sr)))
    n_full = x.size // frame
    sq = x**2
    sums = list(sq[: n_full * frame].reshape(n_full, frame).sum(axis=1)) if n_full else []
    lens = [frame] * n_full
    if x.size > n_full * frame:
        sums.append(float(sq[n_full * frame :].sum()))
        lens.append(x.size - n_full * frame)
    s = np.asarray(sums)
    ln = np.asarray(lens, dtype=np.float64)
    e = s / ln
    if e.max() <= 0:
        return 0.0
    act = e >= e.max() * 10 ** (-floor_db / 10)
    return float(s[act].sum() / ln[act].sum())


def snr_db(speech: np.ndarray, noise: np.ndarray, sr: int = SR, mode: str = "active") -> float:
    """SNR in dB with the module's power definition (see the module docstring)."""
    ps, pn = active_power(speech, sr, mode), active_power(noise, sr, mode)
    return float(10 * np.log10(ps / pn)) if pn > 0 and ps > 0 else float("inf")


def level_dbfs(x: np.ndarray, sr: int = SR, mode: str = "active") -> float:
    """RMS level in dBFS with the module's power definition."""
    p = active_power(x, sr, mode)
    return float(10 * np.log10(p)) if p > 0 else float("-inf")


# ------------------------------------------------------------------------------------ ops


def normalize_level(
    signal: np.ndarray,
    rng: np.random.Generator,
    *,
    sr: int = SR,
    level_db: float | Range = (-35.0, -15.0),
    snr_mode: str = "active",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Scale to a random RMS level (dBFS), lowered if needed to keep the peak at 0.99."""
    x = np.asarray(signal, dtype=np.float64)
    target = _draw(rng, level_db)
    p = active_power(x, sr, snr_mode)
    if p <= 0:
        raise AudioError("cannot normalise the level of silent audio")
    gain = 10 ** (target / 20) / np.sqrt(p)
    peak = np.abs(x).max() * gain
    if peak > MIX_PEAK:
        gain *= MIX_PEAK / peak
    out = x * gain
    return out, {"level_dbfs": level_dbfs(out, sr, snr_mode), "speech_gain": float(gain)}


def add_noise(
    signal: np.ndarray,
    rng: np.random.Generator,
    noise: np.ndarray,
    *,
    sr: int = SR,
    snr: float | Range = (-5.0, 20.0),
    level_db: float | Range = (-35.0, -15.0),
    snr_mode: str = "active",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Mix ``noise`` (same length) at a random SNR with DNS-style level normalisation.

    ``params['speech_gain']`` is the total gain applied to ``signal`` (apply it to the target).
    """
    x = np.asarray(signal, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)
    if n.shape != x.shape:
        raise ValueError(f"noise shape {n.shape} != signal shape {x.shape}")
    snr_req = _draw(rng, snr)
    level_req = _draw(rng, level_db)
    ps, pn = active_power(x, sr, snr_mode), active_power(n, sr, snr_mode)
    if ps <= 0:
        raise AudioError("cannot mix noise into silent speech")
    if pn <= 0:
        raise NoiseError("noise segment is silent")
    g_s = 10 ** (level_req / 20) / np.sqrt(ps)
    g_n = np.sqrt(ps * g_s**2 / (pn * 10 ** (snr_req / 10)))
    mix = g_s * x + g_n * n
    peak = float(np.abs(mix).max())
    rescale = 1.0
    if peak > MIX_PEAK:
        rescale = MIX_PEAK / peak
        g_s, g_n, mix = g_s * rescale, g_n * rescale, mix * rescale
    params = {
        "snr_db": snr_req,
        "snr_mode": snr_mode,
        "level_dbfs_requested": level_req,
        "level_dbfs": level_dbfs(g_s * x, sr, snr_mode),
        "peak_rescale": rescale,
        "speech_gain": float(g_s),
        "noise_gain": float(g_n),
    }
    return mix, params


def measure_rt60(rir: np.ndarray, sr: int = SR, decay_db: float = 30.0) -> float:
    """RT60 (s) from Schroeder backward integration: line fit from -5 dB to -(5+decay_db) dB.

    ``decay_db=30`` gives T30, ``20`` gives T20. Returns NaN when the decay is too short.
    """
    h = np.asarray(rir, dtype=np.float64)
    if h.size == 0 or not np.any(h):
        return float("nan")
    h = h[int(np.argmax(np.abs(h))) :]
    edc = np.cumsum((h**2)[::-1])[::-1]
    edc_db = 10 * np.log10(np.maximum(edc / edc[0], 1e-30))
    below0 = np.nonzero(edc_db <= -5.0)[0]
    below1 = np.nonzero(edc_db <= -5.0 - decay_db)[0]
    if below0.size == 0 or below1.size == 0 or below1[0] - below0[0] < 3:
        return float("nan")
    i0, i1 = int(below0[0]), int(below1[0])
    t = np.arange(i0, i1 + 1) / sr
    slope, _ = np.polyfit(t, edc_db[i0 : i1 + 1], 1)
    return float(-60.0 / slope) if slope < 0 else float("nan")


def rt60_of(rir: np.ndarray, sr: int = SR) -> float:
    """T30, or T20 when the decay is too short for T30."""
    t30 = measure_rt60(rir, sr, 30.0)
    return t30 if np.isfinite(t30) else measure_rt60(rir, sr, 20.0)


@dataclass(frozen=True)
class RoomConfig:
    """Random shoebox rooms for :func:`simulate_rir` (metres)."""

    length: Range = (3.0, 10.0)
    width: Range = (3.0, 10.0)
    height: Range = (2.5, 4.0)
    wall_margin: float = 0.5
    min_distance: float = 0.5
    source_height: Range = (1.2, 2.0)
    mic_height: Range = (0.7, 1.8)
    scattering: Range = (0.1, 0.3)
    max_order: int = 3  # image-source order; the late tail comes from ray tracing
    n_rays: int = 4000
    correction_tolerance: float = 0.1  # re-simulate once when |T/T_req - 1| exceeds this

    def check(self) -> None:
        """Values a room simulation can use (named ``room.<key>`` in errors)."""
        for name in ("length", "width", "height", "source_height", "mic_height", "scattering"):
            lo, hi = _range(f"room.{name}", getattr(self, name))
            if not lo > 0:
                raise ValueError(f"room.{name} must be > 0, got {[lo, hi]}")
        if self.scattering[1] > 1:
            raise ValueError(f"room.scattering must be at most 1, got {list(self.scattering)}")
        if self.n_rays < 1 or self.max_order < 0:
            raise ValueError(f"room.n_rays must be >= 1 and room.max_order >= 0, got "
                             f"{self.n_rays}, {self.max_order}")  # fmt: skip
        for name in ("wall_margin", "min_distance", "correction_tolerance"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"room.{name} must be a finite number >= 0")


def _range(name: str, value: Any) -> tuple[float, float]:
    """``value`` as a ``(low, high)`` pair of finite numbers, or a ValueError naming ``name``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected two numbers [low, high], got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}: expected finite numbers, got {[lo, hi]}")
    if lo > hi:
        raise ValueError(f"{name}: low {lo} > high {hi}")
    return lo, hi


def simulate_rir(
    rng: np.random.Generator,
    rt60: float,
    sr: int = SR,
    room: RoomConfig = RoomConfig(),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Simulate a random shoebox RIR with ``pyroomacoustics`` for a target RT60 (s).

    Absorption comes from ``pra.inverse_sabine``; the RIR is a hybrid of image sources (low
    order) and ray tracing (late tail), with a random scattering coefficient. Sabine's formula is
    only approximate, so the RT60 is measured (T30) and, when off by more than
    ``room.correction_tolerance``, the room is simulated once more with the request corrected by
    the measured ratio; the closer result is kept. Seeds pyroomacoustics from ``rng``.
    """
    try:
        import pyroomacoustics as pra
    except ImportError as err:  # pragma: no cover - listed dependency
        raise RuntimeError(
            "RIR simulation needs pyroomacoustics: pip install pyroomacoustics"
        ) from err

    dims: list[float] = []
    for _ in range(50):
        dims = [_draw(rng, room.length), _draw(rng, room.width), _draw(rng, room.height)]
        try:
            pra.inverse_sabine(rt60, dims)
            break
        except ValueError:  # room too large for this RT60 (absorption > 1): draw another
            continue
    else:
        raise ValueError(f"no room in the configured size range can reach RT60 {rt60:.2f} s")
    m = room.wall_margin
    src = mic = np.zeros(3)
    for _ in range(100):
        src = np.array(
            [rng.uniform(m, dims[0] - m), rng.uniform(m, dims[1] - m), 0.0], dtype=np.float64
        )
        mic = np.array(
            [rng.uniform(m, dims[0] - m), rng.uniform(m, dims[1] - m), 0.0], dtype=np.float64
        )
        src[2] = min(_draw(rng, room.source_height), dims[2] - m)
        mic[2] = min(_draw(rng, room.mic_height), dims[2] - m)
        if np.linalg.norm(src - mic) >= room.min_distance:
            break
    scattering = _draw(rng, room.scattering)
    seeds = rng.integers(0, 2**63 - 1, size=2)

    def run(rt60_req: float) -> tuple[np.ndarray, float]:
        absorption, _ = pra.inverse_sabine(rt60_req, dims)
        pra.random.seed(numpy=int(seeds[0]), libroom=int(seeds[1]))
        r = pra.ShoeBox(
            dims,
            fs=sr,
            materials=pra.Material(absorption, scattering),
            max_order=room.max_order,
            ray_tracing=True,
            air_absorption=False,
        )
        r.set_ray_tracing(receiver_radius=0.5, n_rays=room.n_rays, energy_thres=1e-7)
        r.add_source(src.tolist())
        r.add_microphone(mic.tolist())
        r.compute_rir()
        return np.asarray(r.rir[0][0], dtype=np.float64), float(absorption)

    h, absorption = run(rt60)
    measured = rt60_of(h, sr)
    corrected = False
    if np.isfinite(measured) and abs(measured / rt60 - 1) > room.correction_tolerance:
        req = float(np.clip(rt60 * rt60 / measured, 0.05, 5.0))
        try:
            h2, a2 = run(req)
            m2 = rt60_of(h2, sr)
            if np.isfinite(m2) and abs(m2 - rt60) < abs(measured - rt60):
                h, absorption, measured, corrected = h2, a2, m2, True
        except ValueError:
            pass
    info = {
        "kind": "simulated",
        "rt60_requested": float(rt60),
        "rt60_measured": float(measured),
        "room_dims": [float(d) for d in dims],
        "source": src.tolist(),
        "mic": mic.tolist(),
        "absorption": absorption,
        "scattering": scattering,
        "corrected": corrected,
    }
    return h, info


def reverberate(
    signal: np.ndarray,
    rng: np.random.Generator,
    rir: np.ndarray | None = None,
    *,
    sr: int = SR,
    rt60: float | Range = (0.2, 1.0),
    early_ms: float = 50.0,
    room: RoomConfig = RoomConfig(),
    rir_info: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Convolve with ``rir`` (or a freshly simulated one); return ``(reverberant, target, params)``.

    ``target`` is the dereverberation target: clean convolved with the RIR up to ``early_ms``
    after the direct-path peak. Both outputs are aligned to the clean signal and as long.
    """
    x = np.asarray(signal, dtype=np.float64)
    if rir is None:
        rir, info = simulate_rir(rng, _draw(rng, rt60), sr, room)
    else:
        info = dict(rir_info or {"kind": "given"})
        info.setdefault("rt60_measured", rt60_of(rir, sr))
    h = np.asarray(rir, dtype=np.float64)
    peak = int(np.argmax(np.abs(h)))
    h = h / np.abs(h[peak])
    early_end = peak + int(round(early_ms * sr / 1000)) + 1
    early = h[:early_end]
    n = x.size
    rev = sps.fftconvolve(x, h)[peak : peak + n]
    tgt = sps.fftconvolve(x, early)[peak : peak + n]
    e_direct = float(np.sum(h[max(0, peak - int(0.0025 * sr)) : peak + int(0.0025 * sr) + 1] ** 2))
    e_early = float(np.sum(early**2))
    e_total = float(np.sum(h**2))
    info.update(
        {
            "early_ms": early_ms,
            "direct_peak_sample": peak,
            "rir_length": int(h.size),
            "drr_db": float(10 * np.log10(e_direct / max(e_total - e_direct, 1e-20))),
            "c50_db": float(10 * np.log10(e_early / max(e_total - e_early, 1e-20))),
        }
    )
    return rev, tgt, info


def band_limit(
    signal: np.ndarray,
    rng: np.random.Generator,
    *,
    sr: int = SR,
    cutoff_hz: float | Range = (2000.0, 7500.0),
    methods: Sequence[str] = ("resample", "iir"),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Remove content above a random cutoff (the stop-band edge, >= 60 dB down above it).

    ``resample``: soxr down to ``2 * cutoff`` Hz and back. ``iir``: zero-phase Butterworth,
    Chebyshev I/II or elliptic low-pass with its pass-band edge at 75-95 % of the cutoff.
    """
    x = np.asarray(signal, dtype=np.float64)
    cutoff = _draw(rng, cutoff_hz)
    if cutoff >= 0.98 * sr / 2:
        return x, {"skipped": f"cutoff {cutoff:.0f} Hz >= Nyquist", "cutoff_hz": cutoff}
    method = str(rng.choice(list(methods)))
    params: dict[str, Any] = {"cutoff_hz": cutoff, "method": method}
    if method == "resample":
        low_sr = int(np.floor(2 * cutoff))
        y = resample(resample(x.astype(np.float32), sr, low_sr), low_sr, sr).astype(np.float64)
        y = np.pad(y, (0, max(0, x.size - y.size)))[: x.size]
        params["low_rate"] = low_sr
    elif method == "iir":
        family = str(rng.choice(["butter", "cheby1", "cheby2", "ellip"]))
        wp = cutoff * float(rng.uniform(0.75, 0.95))
        # Attenuation doubles under filtfilt: 35 dB per pass gives >= 70 dB above the cutoff.
        sos = sps.iirdesign(wp, cutoff, gpass=0.5, gstop=35.0, ftype=family, fs=sr, output="sos")
        y = sps.sosfiltfilt(sos, x)
        params.update({"family": family, "passband_hz": wp, "order": int(2 * sos.shape[0])})
    else:
        raise ValueError(f"unknown band-limit method {method!r}: resample or iir")
    return y, params


def clip(
    signal: np.ndarray,
    rng: np.random.Generator,
    *,
    fraction: float | Range = (0.1, 0.6),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Hard-clip at a random fraction of the peak; records the clipped-sample ratio."""
    x = np.asarray(signal, dtype=np.float64)
    frac = _draw(rng, fraction)
    thr = frac * float(np.abs(x).max())
    clipped = np.abs(x) > thr
    y = np.clip(x, -thr, thr)
    return y, {"threshold_fraction": frac, "threshold": thr, "clipped_ratio": float(clipped.mean())}


CODECS: dict[str, tuple[str, str, Range]] = {
    # name: (soundfile format, subtype, compression_level range); higher level = lower bitrate
    # (16 kHz speech: Vorbis ~32-41 kbps, Opus ~7-33 kbps, MP3 ~8-41 kbps)
    "vorbis": ("OGG", "VORBIS", (0.8, 1.0)),
    "opus": ("OGG", "OPUS", (0.9, 1.0)),
    "mp3": ("MP3", "MPEG_LAYER_III", (0.8, 0.99)),
}


_CODEC_WARNED: set[str] = set()


def _encode_decode(
    x: np.ndarray, sr: int, name: str, level: float, bitrate_mode: str | None = None
) -> tuple[np.ndarray, int]:
    fmt, subtype, _ = CODECS[name]
    buf = io.BytesIO()
    kw: dict[str, Any] = {"compression_level": level}
    if bitrate_mode:
        kw["bitrate_mode"] = bitrate_mode
    sf.write(buf, np.clip(x, -1, 1).astype(np.float32), sr, format=fmt, subtype=subtype, **kw)
    nbytes = buf.tell()
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float64", always_2d=True)
    return y[:, 0], nbytes


@lru_cache(maxsize=8)
def available_codecs(sr: int = SR) -> dict[str, str | None]:
    """Codec name → None when it round-trips through soundfile at ``sr``, else the reason."""
    probe = 0.1 * np.sin(2 * np.pi * 440 * np.arange(sr // 4) / sr)
    out: dict[str, str | None] = {}
    for name in CODECS:
        try:
            y, _ = _encode_decode(probe, sr, name, 0.8)
            out[name] = None if y.size else "decoder returned no samples"
        except Exception as err:  # noqa: BLE001 - any libsndfile failure means unavailable
            out[name] = f"{type(err).__name__}: {err}"
    return out


def _align(y: np.ndarray, x: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
    """Shift decoded ``y`` to best match ``x`` (codec delay), then cut/pad to ``x``'s length."""
    n = x.size + y.size
    nfft = 1 << int(np.ceil(np.log2(max(n, 2))))
    cc = np.fft.irfft(np.fft.rfft(y, nfft) * np.conj(np.fft.rfft(x, nfft)), nfft)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    vals = np.concatenate([cc[: max_lag + 1], cc[nfft - max_lag :]])
    lag = int(lags[int(np.argmax(vals))])
    if lag > 0:
        y = y[lag:]
    elif lag < 0:
        y = np.concatenate([np.zeros(-lag), y])
    return np.pad(y, (0, max(0, x.size - y.size)))[: x.size], lag


def codec(
    signal: np.ndarray,
    rng: np.random.Generator,
    *,
    sr: int = SR,
    codecs: Sequence[str] = ("vorbis", "opus", "mp3"),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Lossy round trip through libsndfile (Vorbis, Opus or MP3) at a low bitrate.

    Codecs unavailable in this libsndfile build are skipped; when none is left the signal is
    returned unchanged and ``params['skipped']`` gives the reason (also logged).
    """
    x = np.asarray(signal, dtype=np.float64)
    avail = available_codecs(sr)
    usable = [c for c in codecs if c in avail and avail[c] is None]
    if not usable:
        reason = "; ".join(f"{c}: {avail.get(c, 'unknown codec')}" for c in codecs) or "none"
        if reason not in _CODEC_WARNED:
            _CODEC_WARNED.add(reason)
            log.warning("codec degradation skipped: no usable codec (%s)", reason)
        return x, {"skipped": f"no usable codec ({reason})"}
    name = str(rng.choice(usable))
    level = _draw(rng, CODECS[name][2])
    mode = str(rng.choice(["CONSTANT", "VARIABLE"])) if name == "mp3" else None
    y, nbytes = _encode_decode(x, sr, name, level, mode)
    y, lag = _align(y, x, max_lag=int(0.2 * sr))
    params: dict[str, Any] = {
        "codec": name,
        "compression_level": level,
        "kbps": nbytes * 8 / (x.size / sr) / 1000,
        "delay_samples": lag,
    }
    if mode:
        params["bitrate_mode"] = mode.lower()
    return y, params


def packet_loss(
    signal: np.ndarray,
    rng: np.random.Generator,
    *,
    sr: int = SR,
    loss_rate: float | Range = (0.02, 0.25),
    frame_ms: float = 20.0,
    model: str = "gilbert",
    burst_frames: float | Range = (1.0, 4.0),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Zero whole frames (default 20 ms) lost under a Bernoulli or Gilbert-Elliott model.

    Gilbert-Elliott here has a loss-free good state and an always-lossy bad state; the bad
    state's mean sojourn is ``burst_frames`` and the transition rates are set so the stationary
    loss probability equals the drawn rate. ``params['lost_frames']`` lists the lost frames.
    """
    x = np.asarray(signal, dtype=np.float64)
    rate = float(np.clip(_draw(rng, loss_rate), 0.0, 0.95))
    frame = max(1, int(round(frame_ms * sr / 1000)))
    n_frames = int(np.ceil(x.size / frame))
    params: dict[str, Any] = {"model": model, "loss_rate_requested": rate, "frame_ms": frame_ms}
    if model == "bernoulli":
        lost = rng.random(n_frames) < rate
    elif model == "gilbert":
        burst = max(1.0, _draw(rng, burst_frames))
        r = 1.0 / burst  # P(bad -> good)
        p = min(1.0, rate * r / max(1e-9, 1 - rate))  # P(good -> bad)
        u = rng.random(n_frames)
        lost = np.zeros(n_frames, dtype=bool)
        bad = bool(rng.random() < rate)
        for i in range(n_frames):
            lost[i] = bad
            bad = (u[i] >= r) if bad else (u[i] < p)
        params["mean_burst_frames"] = burst
    else:
        raise ValueError(f"unknown packet-loss model {model!r}: gilbert or bernoulli")
    y = x.copy()
    idx = np.nonzero(lost)[0]
    for i in idx:
        y[i * frame : (i + 1) * frame] = 0.0
    params["loss_rate"] = float(lost.mean()) if n_frames else 0.0
    params["lost_frames"] = [int(i) for i in idx]
    return y, params


# ---------------------------------------------------------------------------------- RIR bank


class RirBank:
    """RIRs from files or pre-simulated; :meth:`sample` returns ``(rir, info)``."""

    def __init__(
        self,
        rirs: Sequence[np.ndarray | str | Path],
        infos: Sequence[dict[str, Any]] | None = None,
        sample_rate: int = SR,
    ) -> None:
        if not rirs:
            raise ValueError("an RIR bank needs at least one RIR")
        self.rirs = list(rirs)
        self.infos = list(infos) if infos is not None else [{} for _ in self.rirs]
        self.sample_rate = sample_rate
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rirs)

    @classmethod
    def from_folder(cls, root: str | Path, sample_rate: int = SR) -> RirBank:
        """Every audio file under ``root`` (recursively); multichannel files use channel 1."""
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"{root}: RIR folder not found")
        files = sorted(
            p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
        )
        if not files:
            raise ValueError(f"{root}: no RIR audio files ({', '.join(AUDIO_EXTENSIONS)})")
        infos = [{"kind": "file", "path": str(p)} for p in files]
        return cls(files, infos, sample_rate)

    @classmethod
    def simulate(
        cls,
        n: int,
        seed: int,
        sample_rate: int = SR,
        rt60: float | Range = (0.2, 1.0),
        room: RoomConfig = RoomConfig(),
    ) -> RirBank:
        """A pool of ``n`` simulated RIRs (deterministic in ``seed``)."""
        rirs, infos = [], []
        for i in range(n):
            rng = np.random.default_rng(np.random.SeedSequence([seed, i, 0x52]))
            h, info = simulate_rir(rng, _draw(rng, rt60), sample_rate, room)
            rirs.append(h)
            infos.append({**info, "pool_index": i})
        return cls(rirs, infos, sample_rate)

    def _load(self, i: int) -> np.ndarray:
        item = self.rirs[i]
        if isinstance(item, np.ndarray):
            return item
        if i not in self._cache:
            try:
                data, f_sr = sf.read(str(item), dtype="float32", always_2d=True)
            except Exception as err:  # noqa: BLE001
                raise AudioError(f"{item}: unreadable RIR ({err})") from err
            h = data[:, 0]
            if not np.any(h):
                raise AudioError(f"{item}: RIR is all zeros")
            if f_sr != self.sample_rate:
                h = resample(h, int(f_sr), self.sample_rate)
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[i] = h.astype(np.float64)
        return self._cache[i]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        i = int(rng.integers(0, len(self.rirs)))
        return self._load(i), dict(self.infos[i])


# ------------------------------------------------------------------------------ composition


@dataclass
class DegradationConfig:
    """Per-op probabilities and parameter ranges; ranges are ``(low, high)``, drawn uniformly."""

    sample_rate: int = SR
    p_reverb: float = 0.3
    p_noise: float = 0.8
    p_band_limit: float = 0.25
    p_clip: float = 0.2
    p_codec: float = 0.2
    p_packet_loss: float = 0.15
    at_least_one: bool = True  # if no op is drawn, apply one chosen by the probabilities
    # noise
    snr_db: Range = (-5.0, 20.0)
    snr_mode: str = "active"
    level_dbfs: Range = (-35.0, -15.0)
    noise_dirs: list[str] = field(default_factory=list)  # used by build_noise_bank
    noise_layout: str = "auto"
    procedural_kinds: list[str] = field(
        default_factory=lambda: ["colored", "modulated", "hum", "impulsive", "machine"]
    )
    procedural_weight: float = 1.0  # group weights; split evenly within a group
    files_weight: float = 1.0
    babble_weight: float = 0.2
    # reverb
    rt60: Range = (0.2, 1.0)
    early_ms: float = 50.0
    rir_dir: str | None = None  # degrade_manifest: RIR files instead of simulation
    rir_pool: int = 0  # degrade_manifest: > 0 pre-simulates this many RIRs (faster, less varied)
    room: RoomConfig = field(default_factory=RoomConfig)
    # band limit, clipping, codec, packet loss
    cutoff_hz: Range = (2000.0, 7500.0)
    band_limit_methods: list[str] = field(default_factory=lambda: ["resample", "iir"])
    clip_fraction: Range = (0.1, 0.6)
    codecs: list[str] = field(default_factory=lambda: ["vorbis", "opus", "mp3"])
    loss_rate: Range = (0.02, 0.25)
    loss_model: str = "gilbert"
    burst_frames: Range = (1.0, 4.0)
    frame_ms: float = 20.0

    def __post_init__(self) -> None:
        if self.sample_rate < 8000:
            raise ValueError(f"sample_rate must be ≥ 8000 Hz, got {self.sample_rate}")
        if self.frame_ms <= 0:
            raise ValueError(f"frame_ms must be > 0, got {self.frame_ms}")
        for op in OP_ORDER:
            p = getattr(self, f"p_{op}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"p_{op} must be in [0, 1], got {p}")
        ranges = ("snr_db", "level_dbfs", "rt60", "cutoff_hz", "clip_fraction", "loss_rate",
                  "burst_frames")  # fmt: skip
        for name in ranges:
            setattr(self, name, _range(name, getattr(self, name)))
        nyquist = self.sample_rate / 2
        limits = {  # name: (lowest allowed low, highest allowed high, why)
            "rt60": (1e-3, 10.0, "seconds"),
            "cutoff_hz": (100.0, nyquist - 1, f"Hz, below the Nyquist frequency {nyquist:g}"),
            "clip_fraction": (1e-3, 1.0, "of the peak"),
            "loss_rate": (0.0, 0.95, "of the frames"),
            "burst_frames": (1.0, 1000.0, "frames"),
            "level_dbfs": (-80.0, 0.0, "dBFS"),
        }
        for name, (low, high, unit) in limits.items():
            lo, hi = getattr(self, name)
            if lo < low or hi > high:
                raise ValueError(f"{name} must lie in [{low:g}, {high:g}] ({unit}), got {[lo, hi]}")
        if not 0 < self.frame_ms <= 1000:
            raise ValueError(f"frame_ms must be in (0, 1000], got {self.frame_ms}")
        if not 0 <= self.early_ms <= 500:
            raise ValueError(f"early_ms must be in [0, 500], got {self.early_ms}")
        for name in ("procedural_weight", "files_weight", "babble_weight"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.p_band_limit > 0 and not self.band_limit_methods:
            raise ValueError("band_limit_methods is empty but p_band_limit > 0")
        if self.p_codec > 0 and not self.codecs:
            raise ValueError("codecs is empty but p_codec > 0")
        if self.snr_mode not in ("active", "full"):
            raise ValueError(f"snr_mode must be 'active' or 'full', got {self.snr_mode!r}")
        if self.loss_model not in ("gilbert", "bernoulli"):
            raise ValueError(
                f"loss_model must be 'gilbert' or 'bernoulli', got {self.loss_model!r}"
            )
        unknown = set(self.codecs) - set(CODECS)
        if unknown:
            raise ValueError(f"unknown codecs {sorted(unknown)}; known: {sorted(CODECS)}")
        unknown = set(self.band_limit_methods) - {"resample", "iir"}
        if unknown:
            raise ValueError(f"unknown band-limit methods {sorted(unknown)}; known: iir, resample")
        if isinstance(self.room, dict):
            self.room = RoomConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in self.room.items()}
            )
        self.room.check()

    def probabilities(self) -> dict[str, float]:
        return {op: float(getattr(self, f"p_{op}")) for op in OP_ORDER}

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DegradationConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown degradation settings: {sorted(unknown)}")
        return cls(**d)


@lru_cache(maxsize=4)
def _default_noise_bank(sr: int) -> NoiseBank:
    return NoiseBank.procedural(sample_rate=sr)


def _choose_ops(rng: np.random.Generator, cfg: DegradationConfig) -> list[str]:
    probs = cfg.probabilities()
    u = rng.random(len(OP_ORDER))
    ops = [op for op, ui in zip(OP_ORDER, u, strict=True) if ui < probs[op]]
    if not ops and cfg.at_least_one:
        p = np.array([probs[op] for op in OP_ORDER])
        if p.sum() > 0:
            ops = [OP_ORDER[int(rng.choice(len(OP_ORDER), p=p / p.sum()))]]
    return ops


def degrade(
    clean: np.ndarray,
    rng: np.random.Generator,
    cfg: DegradationConfig | None = None,
    noise_bank: NoiseBank | None = None,
    rir_bank: RirBank | None = None,
    ctx: SampleContext | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Degrade ``clean`` (1-D, ``cfg.sample_rate``); returns ``(noisy, target_clean, params)``.

    ``target_clean`` is the level-matched clean speech, or the dereverberation target (direct
    path + early reflections) when reverb was applied. ``params['ops']`` lists the applied ops in
    order, ``params['tasks']`` the restoration tasks they pose, and one sub-dict per op.
    ``ctx`` (utterance id and speaker) keeps babble from using the target's own speaker.
    """
    cfg = cfg or DegradationConfig()
    sr = cfg.sample_rate
    x = np.asarray(clean, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)) or not np.any(x):
        raise AudioError("degrade needs non-empty, finite, non-silent mono audio")
    ops = _choose_ops(rng, cfg)
    params: dict[str, Any] = {"ops": [], "sample_rate": sr}
    target = x.copy()

    if "reverb" in ops:
        if rir_bank is not None:
            rir, info = rir_bank.sample(rng)
            x, target, p = reverberate(x, rng, rir, sr=sr, early_ms=cfg.early_ms, rir_info=info)
        else:
            x, target, p = reverberate(
                x, rng, sr=sr, rt60=cfg.rt60, early_ms=cfg.early_ms, room=cfg.room
            )
        params["reverb"] = p
        params["ops"].append("reverb")

    noise_p: dict[str, Any] | None = None
    if "noise" in ops:
        bank = noise_bank or _default_noise_bank(sr)
        for _ in range(3):
            noise, n_info = bank.sample(x.size, rng, ctx)
            if active_power(noise, sr, cfg.snr_mode) > 0:
                x, noise_p = add_noise(
                    x, rng, noise, sr=sr, snr=cfg.snr_db, level_db=cfg.level_dbfs,
                    snr_mode=cfg.snr_mode,
                )  # fmt: skip
                noise_p["noise"] = n_info
                params["noise"] = noise_p
                params["ops"].append("noise")
                break
        else:
            params["noise"] = {"skipped": "noise bank returned only silent segments"}
    if noise_p is None:
        x, noise_p = normalize_level(x, rng, sr=sr, level_db=cfg.level_dbfs, snr_mode=cfg.snr_mode)
        params["level"] = noise_p
    target = target * noise_p["speech_gain"]

    if "band_limit" in ops:
        x, p = band_limit(x, rng, sr=sr, cutoff_hz=cfg.cutoff_hz, methods=cfg.band_limit_methods)
        params["band_limit"] = p
        if "skipped" not in p:
            params["ops"].append("band_limit")
    if "clip" in ops:
        x, params["clip"] = clip(x, rng, fraction=cfg.clip_fraction)
        params["ops"].append("clip")
    if "codec" in ops:
        x, p = codec(x, rng, sr=sr, codecs=cfg.codecs)
        params["codec"] = p
        if "skipped" not in p:
            params["ops"].append("codec")
    if "packet_loss" in ops:
        x, params["packet_loss"] = packet_loss(
            x, rng, sr=sr, loss_rate=cfg.loss_rate, frame_ms=cfg.frame_ms,
            model=cfg.loss_model, burst_frames=cfg.burst_frames,
        )  # fmt: skip
        params["ops"].append("packet_loss")

    peak = max(float(np.abs(x).max()), float(np.abs(target).max()))
    gain = FINAL_PEAK / peak if peak > FINAL_PEAK else 1.0
    params["output_gain"] = gain
    params["tasks"] = [TASKS[op] for op in params["ops"]]
    return (x * gain).astype(np.float32), (target * gain).astype(np.float32), _jsonable(params)


# --------------------------------------------------------------------------------- manifests


def utterance_seed(seed: int, utt_id: str) -> np.random.SeedSequence:
    """Seed for one utterance from the global seed and its id (independent of processing order)."""
    digest = hashlib.sha256(utt_id.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32, *words])


def _safe_name(utt_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", utt_id.replace("/", "__")).strip("._") or "utt"
    if safe != utt_id:
        safe += "-" + hashlib.sha1(utt_id.encode("utf-8")).hexdigest()[:8]
    return safe


def build_noise_bank(cfg: DegradationConfig, entries: Sequence[Entry] = ()) -> NoiseBank:
    """Procedural kinds + noise folders + babble from ``entries``, with the config's weights."""
    groups: list[tuple[NoiseBank, float]] = []
    if cfg.procedural_kinds and cfg.procedural_weight > 0:
        groups.append(
            (
                NoiseBank.procedural(cfg.procedural_kinds, sample_rate=cfg.sample_rate),
                cfg.procedural_weight,
            )
        )
    if cfg.noise_dirs and cfg.files_weight > 0:
        banks = [
            NoiseBank.from_folder(d, cfg.noise_layout, sample_rate=cfg.sample_rate)
            for d in cfg.noise_dirs
        ]
        for b in banks:
            groups.append((b, cfg.files_weight / len(banks)))
    sources: list[NoiseSource] = []
    weights: list[float] = []
    for bank, w in groups:
        sources.extend(bank.sources)
        weights.extend([w / len(bank.sources)] * len(bank.sources))
    items = [BabbleItem(e.id, _speaker(e), clean_source(e)) for e in entries]
    if cfg.babble_weight > 0 and len(items) > 1:
        sources.append(BabbleSource(items))
        weights.append(cfg.babble_weight)
    if not sources:
        raise NoiseError("no noise source configured (procedural kinds, noise_dirs or babble)")
    return NoiseBank(sources, weights, cfg.sample_rate)


def _speaker(e: Entry) -> str | None:
    spk = e.extra.get("speaker")
    return None if spk is None else str(spk)


@dataclass
class DegradeReport:
    """What :func:`degrade_manifest` did."""

    manifest: Path
    entries: list[Entry]
    computed: int
    reused: int
    failed: list[str]


_WORKER: dict[str, Any] = {}


def _init_worker(
    cfg: DegradationConfig, seed: int, out_dir: str, noise_bank: NoiseBank, rir_bank: RirBank | None
) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER.update(cfg=cfg, seed=seed, out=Path(out_dir), noise=noise_bank, rir=rir_bank)


def _paths(out: Path, utt_id: str) -> tuple[Path, Path, Path]:
    name = _safe_name(utt_id)
    return (
        out / "noisy" / f"{name}.wav",
        out / "clean" / f"{name}.wav",
        out / "params" / f"{name}.json",
    )


def _process(job: tuple[str, str, str | None]) -> tuple[str, dict[str, Any] | None, str | None]:
    """Degrade one utterance (in a worker); returns ``(id, params, error)``."""
    utt_id, audio, speaker = job
    cfg: DegradationConfig = _WORKER["cfg"]
    noisy_p, clean_p, params_p = _paths(_WORKER["out"], utt_id)
    try:
        wav, _ = load_audio(audio, cfg.sample_rate)
        rng = np.random.default_rng(utterance_seed(_WORKER["seed"], utt_id))
        ctx = SampleContext(utt_id, speaker)
        noisy, target, params = degrade(wav, rng, cfg, _WORKER["noise"], _WORKER["rir"], ctx)
    except (AudioError, NoiseError, ValueError) as err:
        return utt_id, None, f"{utt_id}: {err}"
    write_audio(noisy_p, noisy, cfg.sample_rate)
    write_audio(clean_p, target, cfg.sample_rate)
    params_p.parent.mkdir(parents=True, exist_ok=True)
    tmp = params_p.with_name(params_p.name + ".tmp")
    tmp.write_text(json.dumps(params), encoding="utf-8")
    tmp.replace(params_p)  # written last: its presence marks the utterance as done
    return utt_id, params, None


def _done(out: Path, utt_id: str) -> dict[str, Any] | None:
    noisy_p, clean_p, params_p = _paths(out, utt_id)
    if params_p.is_file() and noisy_p.is_file() and clean_p.is_file():
        try:
            return json.loads(params_p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None
    return None


def clean_source(e: Entry) -> str:
    """The clean speech an entry stands for: its reference when it has one (a noisy/clean
    pair), else its audio (a clean corpus)."""
    return e.reference or e.audio


def _check_sources_outside(entries: Sequence[Entry], out: Path, manifest: Any) -> None:
    """Refuse an output folder that would overwrite the inputs (their audio or manifest)."""
    root = out.resolve()
    mine = [root / d for d in ("noisy", "clean", "params")]
    if isinstance(manifest, str | Path) and Path(manifest).resolve() == root / "manifest.jsonl":
        raise ManifestError(f"{out}: the output folder holds the input manifest; use another")
    for e in entries:
        src = Path(clean_source(e)).resolve()
        if any(src.is_relative_to(d) for d in mine):
            raise ManifestError(f"{out}: would overwrite the input audio {src}; use another "
                                "output folder")  # fmt: skip


def _previous_sources(out: Path, shard: Shard) -> dict[str, str]:
    """Utterance id → resolved source audio, as a previous run of this folder listed them."""
    path = shard.path(out / "manifest.jsonl")
    if not path.is_file():
        path = out / "manifest.jsonl"
    found = {}
    for rec in read_jsonl(path) if path.is_file() else []:
        if isinstance(rec, dict) and isinstance(rec.get("source_audio"), str):
            found[str(rec.get("id"))] = str(Path(rec["source_audio"]).resolve())
    return found


def degrade_manifest(
    clean_manifest: str | Path | Sequence[Entry],
    out_dir: str | Path,
    cfg: DegradationConfig | None = None,
    seed: int = 0,
    workers: int = 1,
    noise_bank: NoiseBank | None = None,
    rir_bank: RirBank | None = None,
    progress: bool = True,
    shard: Shard | None = None,
) -> DegradeReport:
    """Degrade every utterance of a clean manifest into ``out_dir``; writes ``manifest.jsonl``.
    An entry with a ``reference`` (a noisy/clean pair) is degraded from its reference.

    With ``shard`` only that shard's utterances (see :class:`~sealign.utils.shard.Shard`) are
    degraded and listed, in ``manifest.shard-K-of-N.jsonl``; the noise bank (babble from the
    corpus) is still built from every utterance, so each comes out as it would unsharded, and
    a later run without ``shard`` reuses them all.

    Output entries: ``id``, ``audio`` (noisy wav), ``reference`` (target clean wav: the
    dereverberation target when reverb was applied), ``text``, ``speaker``, ``degradation``
    (params) and ``source_audio``. Each utterance's randomness comes from ``seed`` and its id
    only, so results do not depend on ``workers``. Finished utterances (their params json,
    written last) are reused on a re-run with the same settings; other settings are an error.
    Unreadable utterances are reported in ``failed`` and logged, not written.
    """
    from tqdm import tqdm

    cfg = cfg or DegradationConfig()
    shard = shard or Shard()
    out = Path(out_dir)
    entries = (
        read_manifest(clean_manifest)
        if isinstance(clean_manifest, str | Path)
        else list(clean_manifest)
    )
    if not entries:
        raise ManifestError("degrade_manifest: no entries")
    _check_sources_outside(entries, out, clean_manifest)
    paired = sum(bool(e.reference) and e.reference != e.audio for e in entries)
    if paired:
        log.info("degrade: %d of %d entries have a reference: degrading the reference (clean) "
                 "audio, not their noisy audio", paired, len(entries))  # fmt: skip
    if noise_bank is None:
        noise_bank = build_noise_bank(cfg, entries)
    if rir_bank is None and cfg.rir_dir:
        rir_bank = RirBank.from_folder(cfg.rir_dir, cfg.sample_rate)
    elif rir_bank is None and cfg.rir_pool > 0 and cfg.p_reverb > 0:
        rir_bank = RirBank.simulate(cfg.rir_pool, seed, cfg.sample_rate, cfg.rt60, cfg.room)
    settings = {
        "seed": int(seed),
        "config": cfg.to_dict(),
        "noise_sources": noise_bank.describe(),
        "rir_bank": None if rir_bank is None else len(rir_bank),
    }
    out.mkdir(parents=True, exist_ok=True)
    settings_p = out / "degrade_settings.json"
    if settings_p.is_file():
        old = json.loads(settings_p.read_text(encoding="utf-8"))
        if old != _jsonable(settings):
            raise ManifestError(
                f"{out}: holds outputs made with other settings ({settings_p}); "
                "use a new output folder"
            )
    else:  # atomically: the shards of one job may all write it
        write_json(settings_p, _jsonable(settings))

    entries = shard.take(entries)
    results: dict[str, dict[str, Any]] = {}
    todo = []
    sources = _previous_sources(out, shard)
    for e in entries:
        prev = _done(out, e.id)
        if e.id in sources and sources[e.id] != str(Path(clean_source(e)).resolve()):
            prev = None  # the same id now names other source audio: degrade it again
        if prev is not None:
            results[e.id] = prev
        else:
            todo.append((e.id, clean_source(e), _speaker(e)))
    reused = len(results)
    if reused:
        log.info("degrade: reusing %d finished utterances in %s", reused, out)
    failed: list[str] = []
    bar = tqdm(total=len(todo), desc="degrade", unit="utt", disable=not progress)
    init_args = (cfg, int(seed), str(out), noise_bank, rir_bank)
    if workers <= 1:
        _init_worker(*init_args)
        outcomes = map(_process, todo)
        pool = None
    else:
        pool = ProcessPoolExecutor(
            max_workers=workers, initializer=pool_worker_init, initargs=(_init_worker, *init_args)
        )
        outcomes = pool.map(_process, todo, chunksize=max(1, min(16, len(todo) // (4 * workers))))
    try:
        for utt_id, params, err in outcomes:
            if err is not None:
                log.warning("degrade: skipped %s", err)
                failed.append(err)
            else:
                results[utt_id] = params
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()

    out_entries = []
    for e in entries:
        if e.id not in results:
            continue
        noisy_p, clean_p, _ = _paths(out, e.id)
        extra: dict[str, Any] = {"speaker": _speaker(e), "degradation": results[e.id]}
        extra["source_audio"] = str(Path(clean_source(e)).resolve())
        out_entries.append(
            Entry(
                id=e.id,
                audio=str(noisy_p.relative_to(out)),
                reference=str(clean_p.relative_to(out)),
                text=e.text,
                extra=extra,
            )
        )
    manifest = write_manifest(shard.path(out / "manifest.jsonl"), out_entries)
    if not shard.sharded:  # the whole manifest supersedes the shards' parts
        remove_shard_files(out / "manifest.jsonl")
    log.info(
        "degrade: %d utterances (%d computed, %d reused, %d failed) -> %s",
        len(out_entries),
        len(results) - reused,
        reused,
        len(failed),
        manifest,
    )
    return DegradeReport(manifest, out_entries, len(results) - reused, reused, failed)
