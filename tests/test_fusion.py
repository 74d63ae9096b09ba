"""Mask fusion: the enhanced output as a time-frequency mask on the noisy input."""

import numpy as np
import pytest
from scipy.signal import butter, sosfilt, welch

from sealign.infer.fusion import mask_fusion

SR = 16000


def band_power(x: np.ndarray, lo: float, hi: float) -> float:
    f, p = welch(x, SR, nperseg=1024)
    return float(p[(f >= lo) & (f < hi)].sum())


def test_a_scaled_copy_gives_the_input_times_the_clipped_gain():
    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    np.testing.assert_allclose(mask_fusion(x, x, SR), x, atol=1e-5)
    np.testing.assert_allclose(mask_fusion(0.5 * x, x, SR), 0.5 * x, atol=1e-5)
    np.testing.assert_allclose(mask_fusion(2.0 * x, x, SR), x, atol=1e-5)  # never amplifies
    assert not mask_fusion(np.zeros_like(x), x, SR).any()


def test_keeps_the_speech_band_and_removes_the_noise_band():
    rng = np.random.default_rng(1)
    t = np.arange(2 * SR) / SR
    tone = 0.3 * np.sin(2 * np.pi * 300 * t)
    noise = sosfilt(butter(8, [3000, 5000], "bandpass", fs=SR, output="sos"),
                    rng.standard_normal(t.size))  # fmt: skip
    noise *= 0.3 / noise.std()
    noisy = (tone + noise).astype(np.float32)
    # the "enhanced" tone has its own phase: the mask reads only smoothed power
    enhanced = (0.3 * np.cos(2 * np.pi * 300 * t + 1.0)).astype(np.float32)
    out = mask_fusion(enhanced, noisy, SR)
    assert out.shape == noisy.shape and out.dtype == np.float32
    kept = band_power(out, 200, 400) / band_power(tone, 200, 400)
    removed = band_power(out, 3000, 5000) / band_power(noise, 3000, 5000)
    assert 0.8 < kept <= 1.05
    assert removed < 0.01  # more than 20 dB down


def test_bad_input_is_refused_and_short_chunks_work():
    x = np.ones(100, np.float32) * 0.1
    assert mask_fusion(x, x, SR).shape == (100,)
    with pytest.raises(ValueError, match="one length"):
        mask_fusion(x, x[:50], SR)
    with pytest.raises(ValueError, match="smoothing"):
        mask_fusion(x, x, SR, smooth_hz=-1)


def test_a_loud_burst_beside_silence_gives_a_finite_output():
    # the smoothing's running sums leave tiny negative powers next to a loud burst; unclamped,
    # their square root was NaN
    rng = np.random.default_rng(0)
    noisy = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    enhanced = np.zeros(SR, np.float32)
    enhanced[4000:6000] = 10 * rng.standard_normal(2000)
    out = mask_fusion(enhanced, noisy, SR)
    assert np.isfinite(out).all()
    assert np.abs(out[9000:]).max() < 1e-6  # silent output: nothing of the input kept
