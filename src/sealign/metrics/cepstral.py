"""Mel-cepstral distortion (MCD) as the URGENT challenges compute it, with SPTK's mel-cepstral
analysis written in numpy.

Per signal: frames of 1024 samples every 256 (no padding), a unit-power Hamming window, and the
order-23 mel-cepstrum (all-pass constant 0.42 at 16 kHz) of each frame by SPTK's ``mcep``
(Fukada et al. 1992: Newton-Raphson on the mel-warped cepstrum, periodogram floored by 1e-6).
The output is first scaled by its least-squares gain onto the reference (``gain``, see
:func:`sealign.metrics.intrusive.match_gain`: ``rms`` for outputs whose phase is not the
reference's, whose least-squares gain is near 0, which c0 then reports); the two frame sequences
are aligned by FastDTW (radius 1, Euclidean), and

    MCD = mean over aligned frame pairs of 10 / ln(10) * sqrt(2 * sum_d (c_d - c'_d)^2)   [dB]

with every coefficient, c0 included. ``alignment="none"`` pairs frames in order instead (for
outputs known to be sample-aligned with their reference).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from sealign.metrics.base import MetricInfo, MetricUnavailable, Utterance
from sealign.metrics.intrusive import _aligned, _SpectralDistance, match_gain

# SPTK's recommended (order, all-pass constant) per sampling rate, as URGENT uses them
MCEP_PARAMS = {
    8000: (13, 0.31),
    16000: (23, 0.42),
    22050: (34, 0.45),
    24000: (34, 0.46),
    32000: (36, 0.50),
    44100: (39, 0.53),
    48000: (39, 0.55),
}


@lru_cache(maxsize=16)
def _warp_matrix(m1: int, m2: int, alpha: float, first_order: bool) -> np.ndarray:
    """The linear map ``[m2 + 1, m1 + 1]`` of SPTK's all-pass frequency warping recursion:
    ``freqt`` (a cepstrum onto the mel scale, ``first_order=True``) or ``frqtr`` (the
    coefficient warping used for the autocorrelation in ``mcep``), found by running the
    recursion on every unit vector at once."""
    units = np.eye(m1 + 1)
    g = np.zeros((m2 + 1, m1 + 1))
    beta = 1.0 - alpha * alpha
    for i in range(m1, -1, -1):
        old = g.copy()
        g[0] = units[i] + (alpha * old[0] if first_order else 0.0)
        start = 1
        if first_order and m2 >= 1:
            g[1] = beta * old[0] + alpha * old[1]
            start = 2
        for j in range(start, m2 + 1):
            g[j] = old[j - 1] + alpha * (old[j] - g[j - 1])
    return g


def mel_cepstrum(
    frames: np.ndarray,
    order: int,
    alpha: float,
    floor: float = 1e-6,
    min_iter: int = 2,
    max_iter: int = 30,
    threshold: float = 1e-3,
) -> np.ndarray:
    """Mel-cepstra ``[n_frames, order + 1]`` of windowed frames ``[n_frames, n]`` (``n`` even),
    as SPTK's ``mcep`` with ``etype=1`` computes them: the periodogram plus ``floor``, the
    initial estimate from its warped cepstrum, then Newton-Raphson steps until the relative
    change of the residual's energy falls below ``threshold`` (each frame stops on its own)."""
    frames = np.atleast_2d(np.asarray(frames, dtype=np.float64))
    n = frames.shape[1]
    if n % 2 or n < 2 * order + 2:
        raise ValueError(f"frame length {n} must be even and above 2 * order + 1")
    half = n // 2
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + floor  # [F, half + 1]
    cep = np.fft.irfft(np.log(power), n, axis=1)[:, : half + 1]
    cep[:, 0] /= 2
    cep[:, half] /= 2
    mc = cep @ _warp_matrix(half, order, alpha, True).T
    to_linear = _warp_matrix(order, half, -alpha, True).T  # mel cepstrum -> cepstrum
    to_autocorr = _warp_matrix(half, 2 * order, alpha, False).T
    powers = (-alpha) ** np.arange(order + 1)
    idx = np.arange(order + 1)
    toeplitz_idx = np.abs(idx[:, None] - idx[None, :])
    hankel_idx = idx[:, None] + idx[None, :]
    prev = cep[:, 0].copy()
    active = np.ones(len(frames), dtype=bool)
    for it in range(1, max_iter + 1):
        rows = np.flatnonzero(active)
        if not rows.size:
            break
        log_amp = np.fft.rfft(mc[rows] @ to_linear, n, axis=1).real
        residual = np.fft.irfft(power[rows] / np.exp(2 * log_amp), n, axis=1)[:, : half + 1]
        r = residual @ to_autocorr  # [R, 2 * order + 1]
        energy = r[:, 0]
        if it >= min_iter:
            done = np.abs((energy - prev[rows]) / energy) < threshold
            active[rows[done]] = False
            prev[rows] = energy
            keep = ~done
            rows, r = rows[keep], r[keep]
            if not rows.size:
                break
        grad = r[:, : order + 1] - powers
        hankel = r.copy()
        hankel[:, ::2] -= r[:, :1]
        toeplitz = r[:, : order + 1].copy()
        toeplitz[:, 2::2] += r[:, :1]
        toeplitz[:, 0] *= 2
        system = toeplitz[:, toeplitz_idx] + hankel[:, hankel_idx]
        mc[rows] += np.linalg.solve(system, grad[..., None])[..., 0]
    return mc


def mcep_frames(x: np.ndarray, n_fft: int = 1024, shift: int = 256) -> np.ndarray:
    """Frames ``[n, n_fft]`` of ``x`` every ``shift`` samples, without padding, times SPTK's
    unit-power Hamming window."""
    window = np.hamming(n_fft)
    window /= np.sqrt(np.sum(window**2))
    return np.lib.stride_tricks.sliding_window_view(x, n_fft)[::shift] * window


def _mel_cepstra(
    x: np.ndarray, n_fft: int, shift: int, order: int, alpha: float, block: int = 1024
) -> np.ndarray:
    """:func:`mel_cepstrum` of :func:`mcep_frames`, ``block`` frames at a time (bounded memory
    on long recordings)."""
    count = (x.size - n_fft) // shift + 1
    out = []
    for first in range(0, count, block):
        last = min(first + block, count) - 1
        piece = x[first * shift : last * shift + n_fft]
        out.append(mel_cepstrum(mcep_frames(piece, n_fft, shift), order, alpha))
    return np.concatenate(out)


def mel_cepstral_distortion(
    estimate: np.ndarray,
    reference: np.ndarray,
    sample_rate: int,
    n_fft: int = 1024,
    shift: int = 256,
    alignment: str = "fastdtw",
    eps: float = 1e-8,
    gain: str = "least_squares",
) -> float:
    """MCD in dB of ``estimate`` against ``reference`` (see the module doc)."""
    if sample_rate not in MCEP_PARAMS:
        raise ValueError(f"MCD has mel-cepstrum settings for {sorted(MCEP_PARAMS)} Hz only")
    if min(estimate.size, reference.size) < n_fft:
        raise ValueError(f"signals shorter than one {n_fft}-sample frame")
    order, alpha = MCEP_PARAMS[sample_rate]
    est = _mel_cepstra(match_gain(estimate, reference, gain, eps), n_fft, shift, order, alpha)
    ref = _mel_cepstra(reference, n_fft, shift, order, alpha)
    if alignment == "fastdtw":
        from fastdtw import fastdtw
        from scipy.spatial.distance import euclidean

        _, path = fastdtw(est, ref, dist=euclidean)
        pairs = np.asarray(path).T
        est, ref = est[pairs[0]], ref[pairs[1]]
    else:
        k = min(len(est), len(ref))
        est, ref = est[:k], ref[:k]
    per_frame = 10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum((est - ref) ** 2, axis=1))
    return float(np.mean(per_frame))


class MCD(_SpectralDistance):
    """Mel-cepstral distortion to the reference in dB (URGENT challenge definition, see the
    module doc); ``alignment``: ``fastdtw`` (URGENT's) or ``none``; ``gain``: see
    :func:`sealign.metrics.intrusive.match_gain`; ``sample_rate``: 16 kHz, or any rate of
    ``MCEP_PARAMS`` with SPTK's order and all-pass constant for it (URGENT scores each file at
    its own rate; audio at a lower rate is skipped)."""

    info = MetricInfo(
        name="mcd",
        outputs=("mcd",),
        higher_is_better=(False,),
        ranges=((0.0, float("inf")),),
        sample_rate=16000,
        needs_reference=True,
        reward_scale="negated",
        description="mel-cepstral distortion in dB (URGENT definition: SPTK mel-cepstra, "
        "order 23 at 16 kHz, FastDTW)",
    )

    rates = tuple(MCEP_PARAMS)

    def __init__(
        self,
        num_threads: int = 2,
        max_length_mismatch: float = 0.1,
        alignment: str = "fastdtw",
        gain: str = "least_squares",
        sample_rate: int = 16000,
    ) -> None:
        super().__init__(num_threads, max_length_mismatch, gain, sample_rate)
        if alignment not in ("fastdtw", "none"):
            raise ValueError(f"mcd: alignment must be 'fastdtw' or 'none', got {alignment!r}")
        self.alignment = alignment

    def settings(self) -> dict:
        return {**super().settings(), "alignment": self.alignment}

    def load(self) -> None:
        if self.alignment == "fastdtw":
            try:
                import fastdtw  # noqa: F401
            except ImportError as err:
                raise MetricUnavailable(
                    "mcd needs the fastdtw package for its alignment (pip install fastdtw), "
                    "or the metric option alignment=none"
                ) from err

    def missing_requirement(self, utt: Utterance) -> str | None:
        reason = super().missing_requirement(utt)
        sr = self.info.sample_rate
        if reason is None and min(utt.seconds(), utt.seconds("reference")) * sr < 1024:
            return f"shorter than one 1024-sample analysis frame at {sr} Hz"
        return reason

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        self.load()
        return [
            {
                "mcd": mel_cepstral_distortion(
                    *_aligned(u), u.sample_rate, alignment=self.alignment, gain=self.gain
                )
            }
            for u in utts
        ]
