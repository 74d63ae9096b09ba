"""The composite measures CSIG, CBAK and COVL (Hu & Loizou 2008) and segmental SNR, the
VoiceBank-DEMAND table's columns besides PESQ.

Both signals (trimmed to a common length, 16 kHz) are cut into 30-ms frames every 7.5 ms under a
Hann window, as in Loizou's ``composite.m``; per frame

- **LLR**: log-likelihood ratio of the output's order-16 LPC model against the reference's
  (both on the reference's autocorrelation); the mean of the lowest 95 % of frames;
- **WSS**: Klatt's weighted spectral slope distance over 25 critical bands; lowest 95 %;
- **segSNR**: frame SNR clipped to [-10, 35] dB; the mean over all frames;

and with PESQ,

    CSIG = 3.093 - 1.029 LLR + 0.603 PESQ - 0.009 WSS
    CBAK = 1.634 + 0.478 PESQ - 0.007 WSS + 0.063 segSNR
    COVL = 1.594 + 0.805 PESQ - 0.512 LLR - 0.007 WSS,   each clipped to [1, 5].

LLR, WSS and segSNR follow ``composite.m`` step by step (its frame count, window, critical-band
filters and peak search included); they are checked against it run in GNU Octave. The PESQ term is
wideband PESQ (P.862.2, the ``pesq`` package), as in the Python ports SE papers report
(facebookresearch/denoiser, SpeechBrain); ``composite.m`` itself used the raw P.862 score of
Loizou's own PESQ code, so its CSIG / CBAK / COVL are not comparable digit for digit.
"""

from __future__ import annotations

import numpy as np

from sealign.metrics.base import MetricInfo, Utterance, below_rate
from sealign.metrics.intrusive import _aligned, _Intrusive

_EPS = np.finfo(np.float64).eps
# critical bands of the WSS measure: centre frequencies and bandwidths in Hz
_BAND_CENTRES = (
    50.0, 120.0, 190.0, 260.0, 330.0, 400.0, 470.0, 540.0, 617.372, 703.378, 798.717, 904.128,
    1020.38, 1148.30, 1288.72, 1442.54, 1610.70, 1794.16, 1993.93, 2211.08, 2446.71, 2701.97,
    2978.04, 3276.17, 3597.63,
)  # fmt: skip
_BAND_WIDTHS = (
    70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 77.3724, 86.0056, 95.3398, 105.411, 116.256,
    127.914, 140.423, 153.823, 168.154, 183.457, 199.776, 217.153, 235.631, 255.255, 276.072,
    298.126, 321.465, 346.136,
)  # fmt: skip


_BLOCK = 4096  # frames analysed at once: bounds memory on long recordings


def _frame_blocks(x: np.ndarray, sample_rate: int):
    """Hann-windowed 30-ms frames every quarter frame, as many as ``composite.m`` takes, in
    blocks of at most ``_BLOCK`` frames."""
    win = round(0.03 * sample_rate)
    skip = win // 4
    count = int(np.floor(x.size / skip - win / skip))
    if count < 1:
        raise ValueError(f"signals shorter than one {win}-sample frame")
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, win + 1) / (win + 1)))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::skip][:count]
    for start in range(0, count, _BLOCK):
        yield frames[start : start + _BLOCK] * window


def segmental_snr(ref_frames: np.ndarray, out_frames: np.ndarray) -> np.ndarray:
    """Per-frame SNR in dB, clipped to [-10, 35]."""
    signal = np.sum(ref_frames**2, axis=1)
    noise = np.sum((ref_frames - out_frames) ** 2, axis=1)
    return np.clip(10 * np.log10(signal / (noise + _EPS) + _EPS), -10.0, 35.0)


def _lpc(frames: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation lags ``[F, order + 1]`` and prediction polynomials ``[F, order + 1]``
    (``[1, -a1, ..., -ap]``) by the Levinson-Durbin recursion, for all frames at once."""
    n = frames.shape[1]
    r = np.stack([np.sum(frames[:, : n - k] * frames[:, k:], axis=1) for k in range(order + 1)], 1)
    a = np.zeros((len(frames), order))
    err = r[:, 0].copy()
    for i in range(order):
        k = (r[:, i + 1] - np.sum(a[:, :i] * r[:, i:0:-1], axis=1)) / err
        if i:
            a[:, :i] = a[:, :i] - k[:, None] * a[:, i - 1 :: -1]
        a[:, i] = k
        err = (1 - k * k) * err
    return r, np.concatenate([np.ones((len(frames), 1)), -a], axis=1)


def log_likelihood_ratio(ref_frames: np.ndarray, out_frames: np.ndarray, order: int) -> np.ndarray:
    """Per-frame LLR of the output's LPC model against the reference's."""
    r_ref, a_ref = _lpc(ref_frames, order)
    _, a_out = _lpc(out_frames, order)
    idx = np.arange(order + 1)
    toeplitz = r_ref[:, np.abs(idx[:, None] - idx[None, :])]  # [F, p + 1, p + 1]
    num = np.einsum("fi,fij,fj->f", a_out, toeplitz, a_out)
    den = np.einsum("fi,fij,fj->f", a_ref, toeplitz, a_ref)
    return np.log(num / den)


def _band_filters(sample_rate: int, half: int) -> np.ndarray:
    """The 25 Gaussian critical-band weightings ``[25, half]`` of ``composite.m`` (values under
    its -30-dB threshold set to 0)."""
    nyquist = sample_rate / 2
    floor_value = np.exp(-30.0 / (2.0 * 2.303))
    bins = np.arange(half)
    rows = []
    for centre, width in zip(_BAND_CENTRES, _BAND_WIDTHS, strict=True):
        f0 = np.floor(centre / nyquist * half)
        bw = width / nyquist * half
        row = np.exp(-11 * ((bins - f0) / bw) ** 2 + np.log(_BAND_WIDTHS[0]) - np.log(width))
        rows.append(row * (row > floor_value))
    return np.array(rows)


def _nearest_peaks(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """For each band but the last, the energy at the spectral peak its slope points to, found
    as ``composite.m`` walks (1-based indices below, as there)."""
    bands = energy.size
    peaks = np.empty(bands - 1)
    for i in range(1, bands):
        n = i
        if slope[i - 1] > 0:
            while n < bands and slope[n - 1] > 0:
                n += 1
            peaks[i - 1] = energy[n - 2]
        else:
            while n > 0 and slope[n - 1] <= 0:
                n -= 1
            peaks[i - 1] = energy[n]
    return peaks


def weighted_spectral_slope(
    ref_frames: np.ndarray, out_frames: np.ndarray, sample_rate: int
) -> np.ndarray:
    """Per-frame WSS distance (Klatt 1982, normalized by the sum of weights)."""
    n_fft = 1 << int(np.ceil(np.log2(2 * ref_frames.shape[1])))
    half = n_fft // 2
    filters = _band_filters(sample_rate, half)
    out = np.empty(len(ref_frames))
    energies = []
    for frames in (ref_frames, out_frames):
        spec = np.abs(np.fft.fft(frames, n_fft, axis=1)[:, :half]) ** 2
        energies.append(10 * np.log10(np.maximum(spec @ filters.T, 1e-10)))
    k_max, k_locmax = 20.0, 1.0
    for f in range(len(ref_frames)):
        weights, slopes = [], []
        for energy in (energies[0][f], energies[1][f]):
            slope = np.diff(energy)
            peaks = _nearest_peaks(energy, slope)
            w_max = k_max / (k_max + energy.max() - energy[:-1])
            w_locmax = k_locmax / (k_locmax + peaks - energy[:-1])
            weights.append(w_max * w_locmax)
            slopes.append(slope)
        w = (weights[0] + weights[1]) / 2
        out[f] = np.sum(w * (slopes[0] - slopes[1]) ** 2) / np.sum(w)
    return out


def _lowest_mean(values: np.ndarray, share: float = 0.95) -> float:
    """Mean of the lowest ``round(share * n)`` values (NaNs sort last, as in MATLAB)."""
    return float(np.mean(np.sort(values)[: int(np.floor(len(values) * share + 0.5))]))


def composite_components(
    reference: np.ndarray, output: np.ndarray, sample_rate: int = 16000
) -> dict[str, float]:
    """``llr``, ``wss`` and ``segsnr`` of ``composite.m`` for two equally long signals."""
    n = min(reference.size, output.size)
    ref = np.asarray(reference[:n], dtype=np.float64) + _EPS
    out = np.asarray(output[:n], dtype=np.float64) + _EPS
    order = 10 if sample_rate < 10000 else 16
    llr, wss, seg = [], [], []
    blocks = zip(_frame_blocks(ref, sample_rate), _frame_blocks(out, sample_rate), strict=True)
    for ref_frames, out_frames in blocks:
        llr.append(log_likelihood_ratio(ref_frames, out_frames, order))
        wss.append(weighted_spectral_slope(ref_frames, out_frames, sample_rate))
        seg.append(segmental_snr(ref_frames, out_frames))
    return {
        "llr": _lowest_mean(np.concatenate(llr)),
        "wss": _lowest_mean(np.concatenate(wss)),
        "segsnr": float(np.mean(np.concatenate(seg))),
    }


def composite_scores(parts: dict[str, float], pesq: float) -> dict[str, float]:
    """CSIG, CBAK and COVL from LLR, WSS, segSNR and a PESQ score, each clipped to [1, 5]."""
    llr, wss, seg = parts["llr"], parts["wss"], parts["segsnr"]
    raw = {
        "csig": 3.093 - 1.029 * llr + 0.603 * pesq - 0.009 * wss,
        "cbak": 1.634 + 0.478 * pesq - 0.007 * wss + 0.063 * seg,
        "covl": 1.594 + 0.805 * pesq - 0.512 * llr - 0.007 * wss,
    }
    return {k: float(np.clip(v, 1.0, 5.0)) for k, v in raw.items()}


class CompositeMeasures(_Intrusive):
    """CSIG, CBAK, COVL and segmental SNR against the reference (see the module doc)."""

    info = MetricInfo(
        name="composite",
        outputs=("csig", "cbak", "covl", "ssnr"),
        higher_is_better=(True, True, True, True),
        ranges=((1.0, 5.0), (1.0, 5.0), (1.0, 5.0), (-10.0, 35.0)),
        sample_rate=16000,
        needs_reference=True,
        description="composite measures CSIG / CBAK / COVL (Hu & Loizou 2008; PESQ term: "
        "wideband PESQ) and segmental SNR",
    )

    def missing_requirement(self, utt: Utterance) -> str | None:
        reason = super().missing_requirement(utt)
        if reason is None and min(utt.seconds(), utt.seconds("reference")) < 0.03:
            return "shorter than one 30-ms analysis frame"
        # upsampled narrowband audio has an empty top band, which breaks the order-16 LPC
        # of the wideband measures (composite.m scores 8 kHz audio with its own settings)
        return reason or below_rate(utt, self.info.sample_rate)

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        from pesq import pesq

        out = []
        for u in utts:
            deg, ref = _aligned(u)
            parts = composite_components(ref, deg, 16000)
            scores = composite_scores(parts, float(pesq(16000, ref, deg, "wb")))
            out.append({**scores, "ssnr": parts["segsnr"]})
        return out
