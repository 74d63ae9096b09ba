"""DNSMOS P.835 (SIG/BAK/OVRL) and DNSMOS P.808 with the ONNX models shipped in ``speechmos``.

"exact" mode reproduces Microsoft's DNSMOS script as ``speechmos.dnsmos.run`` implements it:

* a clip shorter than 9.01 s is doubled (appended to itself) until it is at least 9.01 s long;
* windows of 9.01 s (144160 samples) start every second; their number is
  ``int(floor(n / 16000) - 9.01) + 1``, and a window whose float-computed end makes it one
  sample short is dropped (this happens for the 8th to 24th window and a few later ones);
* P.835: the raw window goes through ``sig_bak_ovr.onnx`` and each of the three raw outputs
  through a fixed polynomial (a personalized model and polynomials exist);
* P.808: ``model_v8.onnx`` sees a 120-band log-mel spectrogram of the window minus its last 160
  samples (librosa defaults: centred 321-point periodic-Hann STFT with zero padding, hop 160,
  Slaney mel, ``power_to_db(ref=max, top_db=80)``, then ``(x + 40) / 40``);
* each output is the mean over windows of the mapped per-window values.

Speed comes from scoring each distinct window once (windows of a doubled clip that start at the
same offset modulo the clip length are identical), running each ONNX model once per chunk of
windows from all clips of a batch, and computing the mel features of all windows of a clip from
one shared STFT (only the two zero-padded edge frames of each window are computed separately).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sealign.metrics.base import Metric, MetricInfo, MetricUnavailable, Utterance
from sealign.utils.threads import ort_session_options

SR = 16000
WINDOW_SECONDS = 9.01
WINDOW = int(WINDOW_SECONDS * SR)  # 144160 samples
P808_TRIM = 160  # P.808 sees the window minus its last 160 samples
P808_LEN = WINDOW - P808_TRIM
N_FFT = 321
MEL_HOP = 160
N_MELS = 120
P808_FRAMES = 1 + (P808_LEN + 2 * (N_FFT // 2) - N_FFT) // MEL_HOP  # 900 (centred STFT)
_AMIN = 1e-10
_TOP_DB = 80.0

# Cubic/quadratic maps from raw model outputs to MOS, highest power first (Microsoft's values).
_POLYS: dict[bool, dict[str, tuple[float, ...]]] = {
    False: {
        "sig": (-0.08397278, 1.22083953, 0.0052439),
        "bak": (-0.13166888, 1.60915514, -0.39604546),
        "ovrl": (-0.06766283, 1.11546468, 0.04602535),
    },
    True: {
        "sig": (-0.01019296, 0.02751166, 1.19576786, -0.24348726),
        "bak": (-0.04976499, 0.44276479, -0.1644611, 0.96883132),
        "ovrl": (-0.00533021, 0.005101, 1.18058466, -0.11236046),
    },
}
_INSTALL_HINT = "pip install speechmos==0.0.1.1"


def window_starts(n: int) -> tuple[int, list[int]]:
    """Length of the (doubled) clip and the start sample of every window DNSMOS scores.

    Uses the same float expressions as the reference script so that its dropped windows (end
    computed one sample short) are dropped here too.
    """
    if n <= 0:
        raise ValueError("empty audio")
    total = n
    while total < WINDOW:
        total *= 2
    num_hops = int(np.floor(total / SR) - WINDOW_SECONDS) + 1
    starts = []
    for idx in range(num_hops):
        start = int(idx * SR)
        end = int((idx + WINDOW_SECONDS) * SR)
        if min(end, total) - start >= WINDOW:
            starts.append(start)
    return total, starts


def pick_evenly(count: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(count)`` (each at the centre of its share)."""
    if k >= count:
        return list(range(count))
    return [int((j + 0.5) * count / k) for j in range(k)]


@dataclass
class _ClipPlan:
    """Distinct windows of one clip: ``audio[key:key + WINDOW]`` for each key, and for every
    window the reference averages over, the index of its key (repeats allowed)."""

    audio: np.ndarray
    keys: list[int]
    members: np.ndarray


def plan_clip(audio: np.ndarray, max_windows: int | None = None) -> _ClipPlan:
    """Windows to score for one clip; ``max_windows`` keeps that many, spread evenly."""
    x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    n = x.size
    _, starts = window_starts(n)
    if max_windows is not None:
        starts = [starts[i] for i in pick_evenly(len(starts), max_windows)]
    # A doubled clip is periodic with period n: windows at equal offsets modulo n are identical.
    offsets = [s % n for s in starts] if n < WINDOW else starts
    keys = sorted(set(offsets))
    index = {k: i for i, k in enumerate(keys)}
    members = np.array([index[o] for o in offsets], dtype=np.int64)
    need = keys[-1] + WINDOW
    if need > n:
        x = np.resize(x, need)  # cyclic repetition, as the doubling produces
    return _ClipPlan(x, keys, members)


class _MelFrontEnd:
    """P.808 input features, computed as librosa's melspectrogram + power_to_db would."""

    def __init__(self) -> None:
        import librosa
        from scipy.signal import get_window

        self.window = get_window("hann", N_FFT, fftbins=True)  # float64, as librosa uses it
        basis = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS)
        self.basis_t = np.ascontiguousarray(basis.T, dtype=np.float32)  # (161, 120)

    def _log_mel(self, frames: np.ndarray) -> np.ndarray:
        """``10 log10(max(amin, mel power))`` of (F, 321) frames → (F, 120) float32."""
        spec = np.fft.rfft(frames * self.window, axis=-1).astype(np.complex64)
        power = np.abs(spec) ** 2
        mel = power @ self.basis_t
        return 10.0 * np.log10(np.maximum(np.float32(_AMIN), mel))

    def features(self, audio: np.ndarray, starts: list[int]) -> np.ndarray:
        """(len(starts), 900, 120) float32 features of the windows ``audio[s:s + 144000]``."""
        out = np.empty((len(starts), P808_FRAMES, N_MELS), dtype=np.float32)
        groups: dict[int, list[int]] = {}
        for w, s in enumerate(starts):
            groups.setdefault(s % MEL_HOP, []).append(w)
        for members in groups.values():
            out[members] = self._aligned_features(audio, [starts[w] for w in members])
        return out

    def _aligned_features(self, audio: np.ndarray, starts: list[int]) -> np.ndarray:
        """:meth:`features` for starts that differ by multiples of the STFT hop.

        Interior frames of such windows coincide, so one STFT over the span of all windows
        serves them all; each window's first and last frame reach into its zero padding and are
        computed separately.
        """
        half = N_FFT // 2
        base, last = min(starts), max(starts)
        span = audio[base : last + P808_LEN]
        padded = np.pad(span, (half, half + 1))
        shared = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::MEL_HOP]
        n_shared = (last - base) // MEL_HOP + P808_FRAMES
        edges = np.zeros((len(starts), 2, N_FFT), dtype=np.float32)
        for w, s in enumerate(starts):
            edges[w, 0, half:] = audio[s : s + half + 1]
            tail = s + (P808_FRAMES - 1) * MEL_HOP - half
            edges[w, 1, :-1] = audio[tail : s + P808_LEN]
        logs = self._log_mel(np.concatenate([shared[:n_shared], edges.reshape(-1, N_FFT)]))
        shared_log, edge_log = logs[:n_shared], logs[n_shared:].reshape(len(starts), 2, N_MELS)
        out = np.empty((len(starts), P808_FRAMES, N_MELS), dtype=np.float32)
        for w, s in enumerate(starts):
            first = (s - base) // MEL_HOP
            out[w] = shared_log[first : first + P808_FRAMES]
            out[w, 0] = edge_log[w, 0]
            out[w, -1] = edge_log[w, 1]
        out -= out.max(axis=(1, 2), keepdims=True)  # ref = max of each window
        np.maximum(out, np.float32(-_TOP_DB), out=out)
        out += np.float32(40.0)
        out /= np.float32(40.0)
        return out


def _model_dir() -> Path:
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable(f"dnsmos needs the speechmos wheel's ONNX models: {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


class DNSMOS(Metric):
    """DNSMOS P.835 SIG/BAK/OVRL and P.808 MOS (1–5, no reference) on 16 kHz audio.

    ``personalized`` selects the personalized P.835 model and polynomials (P.808 is the same
    model either way). ``batch_size`` is the number of windows per ONNX call (peak memory about
    0.2 GB per window); it does not change the numbers. Unlike speechmos, samples outside
    [-1, 1] are scored rather than rejected.

    ``mode="exact"`` equals ``speechmos.dnsmos.run`` to float precision (≤ 1e-6 measured).

    ``mode="fast"`` scores only ``fast_windows`` (default 1) windows per clip, spread evenly over
    the windows exact mode averages (1–7 for clips under 33 s; the reference drops the 8th to
    24th), so by default one window per clip is scored. Clips with a single window (9.01–11 s) are
    exact. Measured deviation from exact on ~120 eSpeak clips of 2–30 s, clean and with white
    noise at 0–20 dB SNR: max abs SIG 0.24, BAK 0.23, OVRL 0.21, P.808 0.19; mean abs 0.04–0.05.
    With ``fast_windows=2``: max 0.26, 0.20, 0.13, 0.11; mean abs 0.03.
    """

    info = MetricInfo(
        name="dnsmos",
        outputs=("sig", "bak", "ovrl", "p808"),
        higher_is_better=(True, True, True, True),
        ranges=((1.0, 5.0), (1.0, 5.0), (1.0, 5.0), (1.0, 5.0)),
        sample_rate=SR,
        version="1",
        description="DNSMOS P.835 SIG/BAK/OVRL + P.808 (Microsoft ONNX models from speechmos)",
    )

    def __init__(
        self,
        num_threads: int = 2,
        personalized: bool = False,
        mode: str = "exact",
        fast_windows: int = 1,
        batch_size: int = 8,
    ) -> None:
        super().__init__(num_threads)
        if mode not in ("exact", "fast"):
            raise ValueError(f"dnsmos: mode must be 'exact' or 'fast', not {mode!r}")
        if fast_windows < 1 or batch_size < 1:
            raise ValueError("dnsmos: fast_windows and batch_size must be >= 1")
        self.personalized = bool(personalized)
        self.mode = mode
        self.fast_windows = int(fast_windows)
        self.batch_size = int(batch_size)
        self._primary = None
        self._p808 = None
        self._mel: _MelFrontEnd | None = None

    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {"personalized": self.personalized, "mode": self.mode}
        if self.mode == "fast":
            s["fast_windows"] = self.fast_windows
        return s

    def load(self) -> None:
        if self._primary is not None:
            return
        root = _model_dir()
        primary = root / ("pdnsmos_models" if self.personalized else "dnsmos_models")
        paths = (primary / "sig_bak_ovr.onnx", root / "dnsmos_models" / "model_v8.onnx")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise MetricUnavailable(f"dnsmos: missing {', '.join(missing)}: {_INSTALL_HINT}")
        import onnxruntime as ort

        opts = ort_session_options(self.num_threads)
        providers = ["CPUExecutionProvider"]
        self._mel = _MelFrontEnd()
        self._p808 = ort.InferenceSession(str(paths[1]), opts, providers=providers)
        self._primary = ort.InferenceSession(str(paths[0]), opts, providers=providers)

    @staticmethod
    def _run(session: Any, x: np.ndarray) -> np.ndarray:
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        self.load()
        limit = self.fast_windows if self.mode == "fast" else None
        plans = [plan_clip(u.audio, limit) for u in utts]
        jobs = [(c, k) for c, plan in enumerate(plans) for k in plan.keys]
        raw = np.empty((len(jobs), 3), dtype=np.float64)
        p808 = np.empty(len(jobs), dtype=np.float64)
        for lo in range(0, len(jobs), self.batch_size):
            chunk = jobs[lo : lo + self.batch_size]
            wav = np.stack([plans[c].audio[k : k + WINDOW] for c, k in chunk])
            raw[lo : lo + len(chunk)] = self._run(self._primary, wav)
            feats = []
            for c in dict.fromkeys(c for c, _ in chunk):
                starts = [k for cc, k in chunk if cc == c]
                feats.append(self._mel.features(plans[c].audio, starts))
            p808[lo : lo + len(chunk)] = self._run(self._p808, np.concatenate(feats))[:, 0]
        polys = _POLYS[self.personalized]
        per_window = {
            "sig": np.polyval(polys["sig"], raw[:, 0]),
            "bak": np.polyval(polys["bak"], raw[:, 1]),
            "ovrl": np.polyval(polys["ovrl"], raw[:, 2]),
            "p808": p808,
        }
        out: list[dict[str, float]] = []
        first = 0
        for plan in plans:
            rows = first + plan.members
            out.append({name: float(v[rows].mean()) for name, v in per_window.items()})
            first += len(plan.keys)
        return out
