"""Mask fusion: the generative output used as a time-frequency mask on the noisy input.

A generative enhancer renders speech it has inferred, and where it infers the wrong phone the
output is clean-sounding but wrong; a recognizer then does worse than on the noisy input. Mask
fusion keeps the input's own speech and uses the output only to decide, per time-frequency
cell, how much of the input is speech:

    M(f, t) = min(1, sqrt(S̄_enh(f, t) / S̄_noisy(f, t))),   out = ISTFT(M · STFT(noisy))

where S̄ is the power spectrogram smoothed over ``smooth_hz`` × ``smooth_ms`` (a box), which
makes the mask insensitive to the output's harmonics not lining up with the input's (its pitch
and phase are its own). It is a magnitude ratio mask with the generative output as the speech
estimate (hybrids such as StoRM pair the two kinds of model the other way round). It
removes stationary and non-stationary noise but, being a mask on the input, cannot undo
reverberation, fill packet losses or extend bandwidth; `docs/demo_checkpoint.md` measures it.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.signal import istft, stft

from sealign.models.persist import fit_length

FUSIONS = ("none", "mask")
WINDOW_SECONDS = 0.032  # 512 samples at 16 kHz; hop a quarter of it


def mask_fusion(
    enhanced: np.ndarray,
    noisy: np.ndarray,
    sample_rate: int,
    smooth_hz: float = 280.0,
    smooth_ms: float = 24.0,
) -> np.ndarray:
    """The noisy input masked by the enhanced output's smoothed share of its power (see the
    module docstring). Both are 1-D at ``sample_rate`` and of the same length; returns float32
    of that length."""
    if enhanced.shape != noisy.shape or enhanced.ndim != 1:
        raise ValueError(f"expected two 1-D signals of one length: {enhanced.shape}, {noisy.shape}")
    if smooth_hz < 0 or smooth_ms < 0:
        raise ValueError(f"smoothing must be >= 0, got {smooth_hz} Hz, {smooth_ms} ms")
    n = noisy.size
    nfft = int(2 ** round(np.log2(WINDOW_SECONDS * sample_rate)))
    hop = nfft // 4
    pad = max(0, nfft - n)  # a chunk shorter than one window is padded, then cut back
    kw = {"fs": sample_rate, "nperseg": nfft, "noverlap": nfft - hop}
    y = stft(np.pad(noisy.astype(np.float64), (0, pad)), **kw)[2]
    e = stft(np.pad(enhanced.astype(np.float64), (0, pad)), **kw)[2]
    # odd box sizes keep the smoothing centred on each cell
    size = (
        int(round(smooth_hz * nfft / sample_rate)) | 1,
        int(round(smooth_ms * 1e-3 * sample_rate / hop)) | 1,
    )
    # the box filter's running sums can leave tiny negative powers beside loud cells
    power_e = np.maximum(uniform_filter(np.abs(e) ** 2, size=size), 0.0)
    power_y = np.maximum(uniform_filter(np.abs(y) ** 2, size=size), 0.0)
    tiny = np.finfo(np.float64).tiny
    mask = np.sqrt(np.minimum(1.0, power_e / np.maximum(power_y, tiny)))
    out = istft(mask * y, **kw)[1][:n]
    return np.pad(out, (0, n - out.size)).astype(np.float32)


def fuse_outputs(
    outputs: list[np.ndarray],
    noisy: list[np.ndarray],
    sample_rate: int,
    method: str,
    smooth: tuple[float, float] = (280.0, 24.0),
) -> list[np.ndarray]:
    """``outputs`` post-processed by ``method`` (one of :data:`FUSIONS`) against their inputs
    ``noisy``; each output is first cut or zero-padded to its input's length."""
    if method not in FUSIONS:
        raise ValueError(f"fuse must be one of {FUSIONS}, got {method!r}")
    if method == "none":
        return outputs
    out = []
    for y, x in zip(outputs, noisy, strict=True):
        out.append(mask_fusion(fit_length(y, x.size), x, sample_rate, *smooth))
    return out
