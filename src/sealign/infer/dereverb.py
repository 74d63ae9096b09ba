"""Weighted prediction error (WPE) dereverberation of a single-channel input.

Late reverberation at frame t of one frequency bin is predicted linearly from the frames
t - delay - k (k = 0 … taps - 1) and subtracted; the predictor minimises the prediction error
weighted by the inverse of the dereverberated signal's power, re-estimated over a few
iterations (Nakatani et al., "Speech dereverberation based on variance-normalized delayed
linear prediction", IEEE TASLP 2010; Yoshioka & Nakatani 2012):

    λ(t) = |X(t)|²,   G = (Σ_t ỹ(t) ỹ(t)ᴴ / λ(t))⁻¹ Σ_t ỹ(t) Y(t)* / λ(t),   X(t) = Y(t) − Gᴴ ỹ(t)

with ỹ(t) the stacked delayed frames. It needs no training and keeps the direct sound and
early reflections (the ``delay`` guard). With one microphone it removes only part of the late
reverberation (about 1 dB on simulated rooms; `docs/demo_checkpoint.md` measures what it does
for the shipped models). ``nara_wpe`` is the reference implementation the tests compare to.
"""

from __future__ import annotations

import threading

import numpy as np
from scipy.signal import istft, stft
from threadpoolctl import ThreadpoolController

DEREVERBS = ("none", "wpe")
WINDOW_SECONDS = 0.032  # 512 samples at 16 kHz, hop a quarter of it


def _delayed_frames(spec: np.ndarray, taps: int, delay: int) -> np.ndarray:
    """[F, T] → [F, T, taps]: entry k at frame t is spec[:, t - delay - k], zero before 0."""
    f, t = spec.shape
    out = np.zeros((f, t, taps), dtype=spec.dtype)
    for k in range(taps):
        shift = delay + k
        if shift < t:
            out[:, shift:, k] = spec[:, : t - shift]
    return out


_BLAS: ThreadpoolController | None = None
_BLAS_LOCK = threading.Lock()


def wpe_stft(spec: np.ndarray, taps: int = 10, delay: int = 3, iterations: int = 3) -> np.ndarray:
    """WPE on a complex STFT ``spec`` of shape [F, T]; returns the dereverberated STFT."""
    if spec.ndim != 2:
        raise ValueError(f"expected an [F, T] spectrogram, got shape {spec.shape}")
    if taps < 1 or delay < 1 or iterations < 1:
        raise ValueError(f"taps, delay and iterations must be >= 1: {taps}, {delay}, {iterations}")
    # one BLAS thread: a threaded product sums in another order, and the models downstream turn
    # that last-bit difference into other samples, so outputs would depend on --threads
    global _BLAS
    with _BLAS_LOCK:  # the limit is process-wide: one WPE at a time sets and restores it
        if _BLAS is None:
            _BLAS = ThreadpoolController()  # scanning the loaded libraries once
        with _BLAS.limit(limits=1, user_api="blas"):
            return _wpe(spec, taps, delay, iterations)


def _wpe(spec: np.ndarray, taps: int, delay: int, iterations: int) -> np.ndarray:
    past = _delayed_frames(spec, taps, delay)  # [F, T, taps]
    past_h = past.conj().transpose(0, 2, 1)  # [F, taps, T]
    out = spec
    for _ in range(iterations):
        power = np.abs(out) ** 2
        floor = 1e-10 * power.max()
        # an all-zero input has no scale; any constant weight gives the same (zero) predictor
        weight = np.ones_like(power) if floor == 0 else 1.0 / np.maximum(power, floor)
        weighted_h = past_h * weight[:, None, :]  # ỹᴴ / λ, batched over frequencies
        corr = (weighted_h @ past).conj()  # Σ_t ỹ ỹᴴ / λ
        cross = (weighted_h @ spec[..., None])[..., 0].conj()  # Σ_t ỹ Y* / λ
        filt = _solve(corr, cross)  # [F, taps]
        out = spec - (past @ filt.conj()[..., None])[..., 0]
    return out


def _solve(corr: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """Batched ``corr⁻¹ cross``, falling back to least squares for a singular bin (silence)."""
    try:
        return np.linalg.solve(corr, cross[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.stack(
            [np.linalg.lstsq(c, p, rcond=None)[0] for c, p in zip(corr, cross, strict=True)]
        )


def wpe_dereverb(
    wav: np.ndarray, sample_rate: int, taps: int = 10, delay: int = 3, iterations: int = 3
) -> np.ndarray:
    """Dereverberate a 1-D waveform with WPE on a 32-ms, quarter-hop STFT; float32 of the same
    length. The defaults (10 taps, 3-frame delay, 3 iterations) are the usual ones at 16 kHz."""
    if wav.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {wav.shape}")
    n = wav.size
    nfft = int(2 ** round(np.log2(WINDOW_SECONDS * sample_rate)))
    kw = {"fs": sample_rate, "nperseg": nfft, "noverlap": nfft - nfft // 4}
    pad = max(0, nfft - n)
    spec = stft(np.pad(wav.astype(np.float64), (0, pad)), **kw)[2]
    out = istft(wpe_stft(spec, taps, delay, iterations), **kw)[1][:n]
    return np.pad(out, (0, n - out.size)).astype(np.float32)


def dereverb_input(wav: np.ndarray, sample_rate: int, method: str) -> np.ndarray:
    """``wav`` pre-processed by ``method`` (one of :data:`DEREVERBS`; ``"none"`` returns it)."""
    if method not in DEREVERBS:
        raise ValueError(f"dereverb must be one of {DEREVERBS}, got {method!r}")
    return wav if method == "none" else wpe_dereverb(wav, sample_rate)
