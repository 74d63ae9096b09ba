"""Noise for training mixtures: procedural generators (no download) and user noise folders.

Every generator is a seeded function ``gen(n, rng, sr=16000, ...) -> (noise, info)`` returning a
float32 array of exactly ``n`` samples, scaled to an RMS of :data:`NOISE_RMS` (the mixer rescales
it to the requested SNR anyway), and a JSON-serialisable dict of the parameters it drew.

Generators:

* :func:`colored_noise` - stationary white/pink/brown/blue/violet noise (spectral shaping, 1/f^a).
* :func:`modulated_noise` - non-stationary: two colours cross-faded and a slow random gain (dB).
* :func:`babble_noise` - sum of several other clean utterances (arrays given by the caller).
* :func:`hum_noise` - mains hum (50 or 60 Hz families) or a random fundamental, with harmonics.
* :func:`impulsive_noise` - clicks and knocks (damped resonances) at random times.
* :func:`machine_noise` - band-limited noise plus rotating tonal components (speed wobble, AM).

:class:`NoiseBank` draws from weighted sources: procedural kinds, babble from other speakers of
the corpus, and files from DNS (``noise_fullband/``), MUSAN (``noise/free-sound``,
``noise/sound-bible``, optionally ``music/`` and ``speech/``), DEMAND (``<ENV>/ch01.wav``) or any
folder of audio. File sources read a random segment of the needed length, concatenating further
random files (with short fades at the joins) when a file is too short.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy import signal as sps

from sealign.audio.io import AUDIO_EXTENSIONS, AudioError, load_audio, resample

log = logging.getLogger(__name__)

SR = 16000
NOISE_RMS = 0.05  # about -26 dBFS
COLORS = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0, "violet": 2.0}
PROCEDURAL_KINDS = ("colored", "modulated", "hum", "impulsive", "machine")
DEMAND_ENVIRONMENTS = (
    "DKITCHEN", "DLIVING", "DWASHING", "NFIELD", "NPARK", "NRIVER", "OHALLWAY", "OMEETING",
    "OOFFICE", "PCAFETER", "PRESTO", "PSTATION", "SCAFE", "SPSQUARE", "STRAFFIC", "TBUS", "TCAR",
    "TMETRO",
)  # fmt: skip
_FADE_S = 0.005


class NoiseError(ValueError):
    """A noise source cannot be built or sampled; the message names the folder or source."""


def _to_rms(x: np.ndarray, rms: float = NOISE_RMS) -> np.ndarray:
    cur = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if cur <= 0 or not np.isfinite(cur):
        raise NoiseError("generated noise is silent or non-finite")
    return (x * (rms / cur)).astype(np.float32)


def _spectral_shape(n: int, rng: np.random.Generator, exponent: float, sr: int) -> np.ndarray:
    """White Gaussian noise shaped to a power spectrum proportional to f**exponent."""
    white = rng.standard_normal(n)
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1.0 / sr)
    f[0] = f[1] if n > 1 else 1.0
    f = np.maximum(f, 20.0)  # keep brown noise from being dominated by sub-audio drift
    spec *= f ** (exponent / 2.0)
    spec[0] = 0.0
    return np.fft.irfft(spec, n)


def colored_noise(
    n: int, rng: np.random.Generator, sr: int = SR, color: str | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stationary coloured noise; ``color`` in :data:`COLORS` (random when None)."""
    color = color or str(rng.choice(list(COLORS)))
    if color not in COLORS:
        raise NoiseError(f"unknown noise colour {color!r}; choose from {', '.join(COLORS)}")
    x = _spectral_shape(n, rng, COLORS[color], sr)
    return _to_rms(x), {"kind": "colored", "color": color}


def _slow_curve(n: int, rng: np.random.Generator, rate_hz: float, sr: int) -> np.ndarray:
    """Smooth random curve in [0, 1] with about ``rate_hz`` independent points per second."""
    from scipy.interpolate import PchipInterpolator

    n_pts = max(2, int(np.ceil(n / sr * rate_hz)) + 2)
    pts = rng.uniform(0.0, 1.0, n_pts)
    t = np.linspace(0, n_pts - 1, n)
    return np.clip(PchipInterpolator(np.arange(n_pts), pts)(t), 0.0, 1.0)


def modulated_noise(
    n: int, rng: np.random.Generator, sr: int = SR
) -> tuple[np.ndarray, dict[str, Any]]:
    """Non-stationary noise: two colours cross-faded slowly, under a random dB gain envelope."""
    c1, c2 = (str(c) for c in rng.choice(list(COLORS), size=2, replace=False))
    a = _spectral_shape(n, rng, COLORS[c1], sr)
    b = _spectral_shape(n, rng, COLORS[c2], sr)
    a /= np.sqrt(np.mean(a**2))
    b /= np.sqrt(np.mean(b**2))
    mix_rate = float(rng.uniform(0.1, 1.0))
    w = _slow_curve(n, rng, mix_rate, sr)
    x = np.sqrt(w) * a + np.sqrt(1 - w) * b
    gain_rate = float(rng.uniform(0.5, 4.0))
    depth_db = float(rng.uniform(6.0, 30.0))
    env_db = -depth_db * _slow_curve(n, rng, gain_rate, sr)
    x *= 10 ** (env_db / 20)
    info = {
        "kind": "modulated",
        "colors": [c1, c2],
        "crossfade_rate_hz": mix_rate,
        "gain_rate_hz": gain_rate,
        "depth_db": depth_db,
    }
    return _to_rms(x), info


def _active_rms(x: np.ndarray, sr: int) -> float:
    frame = max(1, int(0.02 * sr))
    m = x.size // frame * frame
    if m == 0:
        return float(np.sqrt(np.mean(x**2)))
    e = np.mean(x[:m].reshape(-1, frame) ** 2, axis=1)
    act = e >= e.max() * 1e-4
    return float(np.sqrt(np.mean(e[act])))


def babble_noise(
    n: int,
    rng: np.random.Generator,
    utterances: Sequence[np.ndarray],
    sr: int = SR,
    n_talkers: tuple[int, int] = (3, 7),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Babble: the sum of several other clean utterances, each looped from a random offset.

    ``utterances`` are 1-D arrays at ``sr`` from speakers other than the target's; when fewer
    than the drawn talker count are given, utterances are reused with different offsets.
    """
    usable = [(i, np.asarray(u, dtype=np.float64)) for i, u in enumerate(utterances)]
    usable = [(i, u) for i, u in usable if np.any(u) and np.isfinite(u).all()]
    if not usable:
        raise NoiseError(
            "babble needs at least one non-silent, finite utterance from another speaker"
        )
    k = int(rng.integers(n_talkers[0], n_talkers[1] + 1))
    order = rng.permutation(len(usable))
    picks = [usable[int(order[i % len(usable)])] for i in range(k)]
    out = np.zeros(n)
    gains = []
    for _, u in picks:
        u = u / max(_active_rms(u, sr), 1e-9)
        reps = int(np.ceil((n + u.size) / u.size))
        off = int(rng.integers(0, u.size))
        seg = np.tile(u, reps)[off : off + n]
        g = float(rng.uniform(-3.0, 3.0))
        gains.append(g)
        out += seg * 10 ** (g / 20)
    sources = [i for i, _ in picks]
    return _to_rms(out), {"kind": "babble", "n_talkers": k, "sources": sources, "gains_db": gains}


def hum_noise(
    n: int, rng: np.random.Generator, sr: int = SR, fundamental: float | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Tonal hum: 50/60 Hz mains families (40 % each) or a random 25-500 Hz fundamental."""
    if fundamental is None:
        family = str(rng.choice(["50", "60", "random"], p=[0.4, 0.4, 0.2]))
        fundamental = float(family) if family != "random" else float(rng.uniform(25.0, 500.0))
    f0 = float(fundamental) * float(rng.uniform(0.995, 1.005))  # mains frequency tolerance
    max_h = max(1, int((0.45 * sr) // f0))
    n_harm = int(rng.integers(1, min(max_h, 40) + 1))
    slope = float(rng.uniform(0.5, 2.0))  # amplitude ~ 1/k**slope
    odd_boost = float(rng.uniform(0.0, 1.0))  # transformer/rectifier buzz favours odd harmonics
    drift = 1 + 0.002 * (2 * _slow_curve(n, rng, 0.3, sr) - 1)
    phase0 = 2 * np.pi * np.cumsum(np.full(n, f0) * drift) / sr
    x = np.zeros(n)
    for k in range(1, n_harm + 1):
        amp = k**-slope * (1 + odd_boost * (k % 2))
        x += amp * np.sin(k * phase0 + rng.uniform(0, 2 * np.pi))
    floor_db = float(rng.uniform(-50.0, -30.0))
    x /= np.sqrt(np.mean(x**2))
    x += 10 ** (floor_db / 20) * rng.standard_normal(n)
    info = {
        "kind": "hum",
        "fundamental_hz": f0,
        "n_harmonics": n_harm,
        "slope": slope,
        "odd_boost": odd_boost,
        "floor_db": floor_db,
    }
    return _to_rms(x), info


def impulsive_noise(
    n: int, rng: np.random.Generator, sr: int = SR, rate_hz: float | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Impulsive transients at Poisson times: clicks (broadband, ~1 ms) and knocks (damped modes).

    At least one event is placed, so the result is never silent.
    """
    rate = float(rate_hz if rate_hz is not None else rng.uniform(0.5, 6.0))
    n_ev = max(1, int(rng.poisson(rate * n / sr)))
    x = np.zeros(n)
    n_click = n_knock = 0
    for _ in range(n_ev):
        pos = int(rng.integers(0, n))
        amp = 10 ** (rng.uniform(-20.0, 0.0) / 20)
        if rng.random() < 0.5:  # click: short broadband burst with a ~0.2-2 ms decay
            tau = rng.uniform(0.0002, 0.002) * sr
            length = int(min(n - pos, max(2, 6 * tau)))
            ev = rng.standard_normal(length) * np.exp(-np.arange(length) / tau)
            n_click += 1
        else:  # knock: 1-3 damped resonances (80-1500 Hz, 10-80 ms) plus a noise thump
            tau = rng.uniform(0.01, 0.08) * sr
            length = int(min(n - pos, max(2, 5 * tau)))
            tt = np.arange(length)
            ev = np.zeros(length)
            for _m in range(int(rng.integers(1, 4))):
                f = rng.uniform(80.0, 1500.0)
                ev += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * tt / sr + rng.uniform(0, 6.3))
            ev *= np.exp(-tt / tau)
            thump = rng.standard_normal(length) * np.exp(-tt / (0.003 * sr))
            ev += 0.5 * thump
            n_knock += 1
        x[pos : pos + ev.size] += amp * ev / max(np.abs(ev).max(), 1e-9)
    info = {"kind": "impulsive", "rate_hz": rate, "n_clicks": n_click, "n_knocks": n_knock}
    return _to_rms(x), info


def machine_noise(
    n: int, rng: np.random.Generator, sr: int = SR
) -> tuple[np.ndarray, dict[str, Any]]:
    """Machine-like noise: band-pass filtered noise plus rotating tonal components.

    A shaft turning at 15-120 rev/s gives harmonics of the rotation rate and a blade-pass tone
    (rotation rate x 2-8 blades), with a slow speed wobble and amplitude modulation at the
    rotation rate.
    """
    nyq = sr / 2
    lo = float(rng.uniform(50.0, 1000.0))
    hi = float(min(lo * rng.uniform(2.0, 8.0), 0.9 * nyq))
    sos = sps.butter(4, [lo, hi], btype="bandpass", fs=sr, output="sos")
    band = sps.sosfilt(sos, rng.standard_normal(n))
    band /= np.sqrt(np.mean(band**2)) + 1e-12
    f_rot = float(rng.uniform(15.0, 120.0))
    blades = int(rng.integers(2, 9))
    wobble = float(rng.uniform(0.005, 0.03))
    speed = 1 + wobble * (2 * _slow_curve(n, rng, 0.5, sr) - 1)
    phase = 2 * np.pi * np.cumsum(f_rot * speed) / sr
    tone = np.zeros(n)
    n_harm = int(rng.integers(2, 8))
    for k in range(1, n_harm + 1):
        if k * f_rot * 1.05 < nyq:
            tone += k**-1.0 * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    if blades * f_rot * 1.05 < nyq:
        tone += rng.uniform(1.0, 3.0) * np.sin(blades * phase + rng.uniform(0, 2 * np.pi))
    am_depth = float(rng.uniform(0.0, 0.5))
    tone *= 1 + am_depth * np.sin(phase)
    tone /= np.sqrt(np.mean(tone**2)) + 1e-12
    tnr = float(rng.uniform(-10.0, 10.0))  # tone-to-noise ratio, dB
    x = band + 10 ** (tnr / 20) * tone
    info = {
        "kind": "machine",
        "band_hz": [lo, hi],
        "rotation_hz": f_rot,
        "blades": blades,
        "wobble": wobble,
        "am_depth": am_depth,
        "tone_to_noise_db": tnr,
    }
    return _to_rms(x), info


GENERATORS: dict[str, Callable[..., tuple[np.ndarray, dict[str, Any]]]] = {
    "colored": colored_noise,
    "modulated": modulated_noise,
    "hum": hum_noise,
    "impulsive": impulsive_noise,
    "machine": machine_noise,
}


# ---------------------------------------------------------------------------- sources and bank


@dataclass(frozen=True)
class SampleContext:
    """What the bank knows about the utterance being degraded (for babble exclusion)."""

    utt_id: str | None = None
    speaker: str | None = None


class NoiseSource:
    """A named way to draw ``n`` samples of noise."""

    name: str

    def available(self, ctx: SampleContext) -> bool:
        return True

    def sample(
        self, n: int, rng: np.random.Generator, sr: int, ctx: SampleContext
    ) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError


@dataclass
class ProceduralSource(NoiseSource):
    """One of :data:`GENERATORS`."""

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in GENERATORS:
            raise NoiseError(
                f"unknown procedural noise {self.kind!r}; choose from {list(GENERATORS)}"
            )
        self.name = self.kind

    def sample(
        self, n: int, rng: np.random.Generator, sr: int, ctx: SampleContext
    ) -> tuple[np.ndarray, dict[str, Any]]:
        return GENERATORS[self.kind](n, rng, sr=sr)


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str, load: Callable[[], np.ndarray]) -> np.ndarray:
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        val = load()
        self.data[key] = val
        if len(self.data) > self.size:
            self.data.popitem(last=False)
        return val


@dataclass
class BabbleItem:
    """One corpus utterance usable as a babble talker: an array or a file path."""

    utt_id: str
    speaker: str | None
    audio: np.ndarray | str


@dataclass
class BabbleSource(NoiseSource):
    """Babble from other speakers of the corpus; the target's speaker (or id) is excluded."""

    items: list[BabbleItem]
    n_talkers: tuple[int, int] = (3, 7)
    name: str = "babble"
    _cache: _LRU = field(default_factory=lambda: _LRU(64), repr=False)

    _index: tuple[int, dict[str | None, list[int]], dict[str, list[int]]] | None = field(
        default=None, repr=False
    )

    def _excluded(self, ctx: SampleContext) -> list[int]:
        """The sorted positions in ``items`` of the target's own speaker and id: the talkers
        are the others. Looked up in an index, since scanning a large corpus for every
        degraded example would make a pass over it quadratic."""
        if self._index is None or self._index[0] != len(self.items):
            by_speaker: dict[str | None, list[int]] = {}
            by_id: dict[str, list[int]] = {}
            for k, it in enumerate(self.items):
                by_speaker.setdefault(it.speaker, []).append(k)
                by_id.setdefault(it.utt_id, []).append(k)
            self._index = (len(self.items), by_speaker, by_id)
        _, by_speaker, by_id = self._index
        same = by_speaker.get(ctx.speaker, []) if ctx.speaker is not None else []
        return sorted({*same, *by_id.get(ctx.utt_id, [])})

    @staticmethod
    def _position(i: int, excluded: list[int]) -> int:
        """The position in ``items`` of the ``i``-th item not ``excluded``."""
        p = i
        for e in excluded:  # sorted: each one at or before the position shifts it on
            if e > p:
                break
            p += 1
        return p

    def available(self, ctx: SampleContext) -> bool:
        return len(self.items) > len(self._excluded(ctx))

    def _load(self, it: BabbleItem, sr: int) -> np.ndarray:
        if isinstance(it.audio, np.ndarray):
            return it.audio
        path = str(it.audio)
        return self._cache.get(f"{path}@{sr}", lambda: load_audio(path, sr, limits=None)[0])

    def sample(
        self, n: int, rng: np.random.Generator, sr: int, ctx: SampleContext
    ) -> tuple[np.ndarray, dict[str, Any]]:
        excluded = self._excluded(ctx)
        n_others = len(self.items) - len(excluded)
        if not n_others:
            raise NoiseError("babble: no utterance from another speaker is available")
        k_max = min(self.n_talkers[1], n_others)
        pick = rng.choice(n_others, size=k_max, replace=False)
        chosen, audio = [], []
        for i in pick:
            it = self.items[self._position(int(i), excluded)]
            try:
                x = self._load(it, sr)
                if not np.isfinite(x).all() or not np.any(x):
                    raise AudioError("silent or non-finite samples")
                audio.append(x)
                chosen.append(it)
            except AudioError as err:  # same outcome in every process: stays deterministic
                log.warning("babble: skipping talker %s (%s)", it.utt_id, err)
        if not chosen:
            raise NoiseError("babble: none of the drawn talkers could be loaded")
        noise, info = babble_noise(n, rng, audio, sr=sr, n_talkers=self.n_talkers)
        info["sources"] = [chosen[i].utt_id for i in info["sources"]]
        return noise, info


def _audio_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )


@dataclass
class FileSource(NoiseSource):
    """Random segments of noise files, concatenating random files when one is too short.

    ``n_mix`` > 1 sums that many independent segments (e.g. MUSAN speech as babble).
    """

    name: str
    files: list[Path]
    n_mix: tuple[int, int] = (1, 1)
    max_tries: int = 8

    def __post_init__(self) -> None:
        if not self.files:
            raise NoiseError(f"noise source {self.name!r} has no audio files")
        # files that cannot be opened at all are left out once, here (doing it when a draw
        # hits them would make the draws depend on which worker saw a file fail before)
        bad: list[str] = []
        kept = []
        for path in self.files:
            try:
                ok = sf.info(str(path)).frames > 0
            except Exception as err:  # noqa: BLE001 - any unreadable file
                ok, why = False, str(err)
            else:
                why = "no samples"
            if ok:
                kept.append(path)
            else:
                bad.append(f"{path} ({why})")
        if bad:
            log.warning("noise %s: leaving out %d unreadable files: %s", self.name, len(bad),
                        "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else ""))  # fmt: skip
        if not kept:
            raise NoiseError(f"noise source {self.name!r}: no readable audio file")
        self.files = kept
        self._warned: set[Path] = set()

    def _read(self, path: Path, rng: np.random.Generator, need: int, sr: int) -> np.ndarray:
        info = sf.info(str(path))
        f_sr = int(info.samplerate)
        want = int(np.ceil(need * f_sr / sr)) + 64
        start = int(rng.integers(0, info.frames - want + 1)) if info.frames > want else 0
        data, _ = sf.read(str(path), start=start, frames=want, dtype="float32", always_2d=True)
        x = data.mean(axis=1)
        if not np.isfinite(x).all():
            raise ValueError("non-finite samples")
        if not np.any(x):
            raise ValueError("a silent segment")
        if f_sr != sr:
            x = resample(x, f_sr, sr)
        return x[:need]

    def _segment(self, n: int, rng: np.random.Generator, sr: int) -> tuple[np.ndarray, list[str]]:
        parts: list[np.ndarray] = []
        used: list[str] = []
        have = 0
        fade = max(1, int(_FADE_S * sr))
        failures = 0
        while have < n:
            path = self.files[int(rng.integers(0, len(self.files)))]
            try:
                x = self._read(path, rng, n - have, sr)
            except Exception as err:  # noqa: BLE001 - unreadable noise files are skipped
                failures += 1
                if path not in self._warned:  # once per file, not at every draw
                    self._warned.add(path)
                    log.warning("noise %s: skipping a segment of %s (%s)", self.name, path, err)
                if failures >= self.max_tries:
                    raise NoiseError(
                        f"noise source {self.name!r}: too many unreadable files"
                    ) from err
                continue
            if x.size == 0 or not np.any(x):
                failures += 1
                if failures >= self.max_tries:
                    raise NoiseError(f"noise source {self.name!r}: only silent segments found")
                continue
            if parts:  # short linear cross-over at the join avoids a click
                x = x.copy()
                f = min(fade, x.size // 2, parts[-1].size // 2)
                if f > 0:
                    ramp = np.linspace(0.0, 1.0, f)
                    x[:f] *= ramp
                    parts[-1] = parts[-1].copy()
                    parts[-1][-f:] *= ramp[::-1]
            parts.append(x)
            used.append(str(path))
            have += x.size
        return np.concatenate(parts)[:n], used

    def sample(
        self, n: int, rng: np.random.Generator, sr: int, ctx: SampleContext
    ) -> tuple[np.ndarray, dict[str, Any]]:
        k = int(rng.integers(self.n_mix[0], self.n_mix[1] + 1))
        total = np.zeros(n)
        files: list[str] = []
        for _ in range(k):
            seg, used = self._segment(n, rng, sr)
            total += seg / (np.sqrt(np.mean(seg**2)) + 1e-12)
            files.extend(used)
        return _to_rms(total), {"kind": "file", "source": self.name, "files": files}


class NoiseBank:
    """Weighted noise sources; :meth:`sample` draws a source, then a segment of ``n`` samples."""

    def __init__(
        self,
        sources: Sequence[NoiseSource],
        weights: Sequence[float] | None = None,
        sample_rate: int = SR,
    ) -> None:
        if not sources:
            raise NoiseError("a noise bank needs at least one source")
        self.sources = list(sources)
        w = np.ones(len(self.sources)) if weights is None else np.asarray(weights, dtype=float)
        if w.shape != (len(self.sources),) or np.any(w < 0) or not np.any(w > 0):
            raise NoiseError("noise bank weights must be non-negative, one per source, not all 0")
        self.weights = w
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.sources)

    def describe(self) -> dict[str, float]:
        """Source name → normalized weight."""
        w = self.weights / self.weights.sum()
        return {s.name: float(x) for s, x in zip(self.sources, w, strict=True)}

    def __add__(self, other: NoiseBank) -> NoiseBank:
        if other.sample_rate != self.sample_rate:
            raise NoiseError("cannot merge noise banks with different sample rates")
        return NoiseBank(
            self.sources + other.sources,
            np.concatenate([self.weights, other.weights]),
            self.sample_rate,
        )

    @classmethod
    def procedural(
        cls,
        kinds: Sequence[str] = PROCEDURAL_KINDS,
        weights: Sequence[float] | None = None,
        sample_rate: int = SR,
    ) -> NoiseBank:
        """Built-in generators only (babble needs a corpus: see :meth:`with_babble`)."""
        return cls([ProceduralSource(k) for k in kinds], weights, sample_rate)

    def with_babble(
        self, items: Sequence[BabbleItem], weight: float = 1.0, n_talkers: tuple[int, int] = (3, 7)
    ) -> NoiseBank:
        """A new bank with a babble source made of ``items`` (other corpus utterances)."""
        if not items:
            return self
        babble = BabbleSource(list(items), n_talkers=n_talkers)
        return NoiseBank([*self.sources, babble], [*self.weights, weight], self.sample_rate)

    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        layout: str = "auto",
        sample_rate: int = SR,
        include_music: bool = False,
        include_speech: bool = False,
        demand_channels: Sequence[int] = (1,),
    ) -> NoiseBank:
        """Noise files in a DNS, MUSAN, DEMAND or flat folder (``layout`` ``auto`` detects it)."""
        root = Path(root)
        if not root.is_dir():
            raise NoiseError(f"{root}: noise folder not found")
        if layout == "auto":
            layout = detect_layout(root)
        if layout == "dns":
            sources = _dns_sources(root)
        elif layout == "musan":
            sources = _musan_sources(root, include_music, include_speech)
        elif layout == "demand":
            sources = _demand_sources(root, demand_channels)
        elif layout == "flat":
            files = _audio_files(root)
            if not files:
                raise NoiseError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
            sources = [FileSource(root.name or "noise", files)]
        else:
            raise NoiseError(f"unknown noise layout {layout!r}: auto, dns, musan, demand or flat")
        log.info(
            "noise bank from %s (%s): %s",
            root,
            layout,
            ", ".join(f"{s.name}={len(s.files)} files" for s in sources),
        )
        return cls(sources, None, sample_rate)

    def sample(
        self,
        n: int,
        rng: np.random.Generator,
        ctx: SampleContext | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw ``n`` samples from a random available source; info names source and params."""
        ctx = ctx or SampleContext()
        ok = np.array([s.available(ctx) for s in self.sources], dtype=float)
        w = self.weights * ok
        if not np.any(w > 0):
            raise NoiseError("no noise source is available for this utterance")
        idx = int(rng.choice(len(self.sources), p=w / w.sum()))
        noise, info = self.sources[idx].sample(n, rng, self.sample_rate, ctx)
        if noise.shape != (n,) or not np.all(np.isfinite(noise)):
            raise NoiseError(f"noise source {self.sources[idx].name!r} returned a bad segment")
        return noise.astype(np.float32), {"source": self.sources[idx].name, **info}


# ------------------------------------------------------------------------------ folder layouts


def detect_layout(root: Path) -> str:
    """Guess a noise folder's layout: ``dns``, ``musan``, ``demand`` or ``flat``."""
    if _find_dir(root, "noise_fullband") is not None:
        return "dns"
    if _musan_root(root) is not None:
        return "musan"
    if _dns2020_noise(root) is not None:
        return "dns"
    if any(root.rglob("ch01.wav")):
        return "demand"
    return "flat"


def _find_dir(root: Path, name: str) -> Path | None:
    if root.name == name:
        return root
    hits = sorted(p for p in root.rglob(name) if p.is_dir())
    return hits[0] if hits else None


def _dns2020_noise(root: Path) -> Path | None:
    """DNS 2020 (wideband) keeps noise in ``datasets/noise`` beside ``datasets/clean``."""
    if root.name == "noise" and (root.parent / "clean").is_dir():
        return root
    hits = sorted(p for p in root.rglob("noise") if p.is_dir() and (p.parent / "clean").is_dir())
    return hits[0] if hits else None


def _dns_sources(root: Path) -> list[FileSource]:
    folder = _find_dir(root, "noise_fullband") or _dns2020_noise(root)
    if folder is None:
        raise NoiseError(f"{root}: no DNS noise folder (noise_fullband/ or datasets/noise/)")
    files = _audio_files(folder)
    if not files:
        raise NoiseError(f"{folder}: DNS noise folder has no audio files")
    return [FileSource("dns", files)]


def _musan_root(root: Path) -> Path | None:
    for cand in (root, root / "musan"):
        if (cand / "noise" / "free-sound").is_dir() or (cand / "noise" / "sound-bible").is_dir():
            return cand
    return None


def _musan_sources(root: Path, include_music: bool, include_speech: bool) -> list[FileSource]:
    base = _musan_root(root)
    if base is None:
        raise NoiseError(
            f"{root}: not a MUSAN folder (expected noise/free-sound, noise/sound-bible)"
        )
    sources: list[FileSource] = []
    for sub in ("free-sound", "sound-bible"):
        files = _audio_files(base / "noise" / sub) if (base / "noise" / sub).is_dir() else []
        if files:
            sources.append(FileSource(f"musan/{sub}", files))
    for flag, sub, n_mix in ((include_music, "music", (1, 1)), (include_speech, "speech", (3, 7))):
        if not flag:
            continue
        files = _audio_files(base / sub) if (base / sub).is_dir() else []
        if not files:
            raise NoiseError(f"{base / sub}: MUSAN {sub} requested but no audio files found")
        sources.append(FileSource(f"musan/{sub}", files, n_mix=n_mix))
    if not sources:
        raise NoiseError(f"{base}/noise: MUSAN noise folders have no audio files")
    return sources


def _demand_sources(root: Path, channels: Sequence[int]) -> list[FileSource]:
    envs: dict[str, list[Path]] = {}
    names = [f"ch{int(c):02d}.wav" for c in channels]
    for ch01 in sorted(root.rglob("ch01.wav")):
        env = ch01.parent.name
        env = re.sub(r"_(8|16|48)k$", "", env)
        files = [ch01.parent / nm for nm in names if (ch01.parent / nm).is_file()]
        if files:
            envs.setdefault(env, []).extend(files)
    if not envs:
        raise NoiseError(f"{root}: no DEMAND environments (<ENV>/ch01.wav) found")
    unknown = sorted(set(envs) - set(DEMAND_ENVIRONMENTS))
    if unknown:
        log.info("DEMAND: non-standard environment folders %s used as well", unknown)
    return [FileSource(f"demand/{env}", files) for env, files in sorted(envs.items())]
