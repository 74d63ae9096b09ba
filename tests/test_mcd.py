"""MCD: sealign's numpy mel-cepstral analysis against SPTK's (pysptk), and the distortion."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import random_phase
from sealign.metrics import Utterance, build_metric
from sealign.metrics.cepstral import mcep_frames, mel_cepstral_distortion, mel_cepstrum

DATA = Path(__file__).parent / "data"


def _reference_signal() -> np.ndarray:
    spec = importlib.util.spec_from_file_location(
        "make_mcep_reference", DATA / "make_mcep_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.signal()


def test_mel_cepstrum_equals_sptk():
    ref = json.loads((DATA / "mcep_reference.json").read_text())
    x = _reference_signal()
    frames = np.stack([x[f["start"] : f["start"] + 1024] for f in ref["frames"]])
    window = np.hamming(1024) / np.sqrt(np.sum(np.hamming(1024) ** 2))
    ours = mel_cepstrum(frames * window, ref["order"], ref["alpha"])
    want = np.array([f["mcep"] for f in ref["frames"]])
    assert ours.shape == want.shape == (3, 24)
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-9)


def test_frames_and_window():
    x = np.arange(1024 + 3 * 256 + 100, dtype=np.float64)
    f = mcep_frames(x)
    assert f.shape == (4, 1024)  # no padding: the last 100 samples start no frame
    w = f[1] / x[256 : 256 + 1024]
    assert np.sum(w**2) == pytest.approx(1.0)


def test_mcd_properties(speech, noisy):
    x = speech(5).astype(np.float64)
    assert mel_cepstral_distortion(x, x, 16000) == pytest.approx(0.0, abs=1e-6)
    assert mel_cepstral_distortion(0.3 * x, x, 16000) == pytest.approx(0.0, abs=1e-6)  # gain
    mild = mel_cepstral_distortion(noisy(x, 20).astype(np.float64), x, 16000)
    bad = mel_cepstral_distortion(noisy(x, 0).astype(np.float64), x, 16000)
    assert 0 < mild < bad
    # without alignment: frames in order, the definition spelled out
    y = noisy(x, 10).astype(np.float64)
    a = mel_cepstrum(mcep_frames(y * np.dot(x, y) / (np.dot(y, y) + 1e-8)), 23, 0.42)
    b = mel_cepstrum(mcep_frames(x), 23, 0.42)
    want = np.mean(10 / np.log(10) * np.sqrt(2 * np.sum((a - b) ** 2, axis=1)))
    assert mel_cepstral_distortion(y, x, 16000, alignment="none") == pytest.approx(want)
    # DTW may only pair frames better than in order
    assert mel_cepstral_distortion(y, x, 16000) <= want + 1e-9
    with pytest.raises(ValueError, match="settings for"):
        mel_cepstral_distortion(y, x, 11025)


def test_mcd_metric(speech, noisy):
    x = speech(6)
    m = build_metric("mcd")
    same, deg, short, none = m.score_batch(
        [
            Utterance("s", x, 16000, reference=x),
            Utterance("d", noisy(x, 5), 16000, reference=x),
            Utterance("t", x[:1000], 16000, reference=x[:1000]),
            Utterance("n", x, 16000),
        ]
    )
    assert same.values["mcd"] == pytest.approx(0.0, abs=1e-6) and deg.values["mcd"] > 1.0
    assert "1024-sample" in short.skipped and none.skipped == "no reference"
    # at 48 kHz the signal is resampled to the metric's 16 kHz first
    from sealign.audio.io import resample

    (hi,) = m.score_batch(
        [
            Utterance(
                "h", resample(noisy(x, 5), 16000, 48000), 48000, reference=resample(x, 16000, 48000)
            )
        ]
    )
    assert hi.values["mcd"] == pytest.approx(deg.values["mcd"], rel=0.05)
    assert build_metric("mcd", alignment="none").settings() == {
        "alignment": "none",
        "gain": "least_squares",
        "max_length_mismatch": 0.1,
        "sample_rate": 16000,
    }
    with pytest.raises(ValueError, match="sample_rate must be one of 8000, 16000"):
        build_metric("mcd", sample_rate=11025)
    with pytest.raises(ValueError, match="alignment"):
        build_metric("mcd", alignment="dtw")


def test_mcd_as_a_reward_prefers_the_closer_output(speech, noisy):
    from sealign.rewards import CompositeReward, RewardConfig

    x = speech(7)
    cfg = RewardConfig(components=[{"metric": "mcd"}], metric_options={}, cache="")
    reward = CompositeReward(cfg, num_threads=1)
    close, far = (
        Utterance(k, noisy(x, snr), 16000, reference=x) for k, snr in (("c", 20), ("f", 0))
    )
    batch = reward([close, far])
    direct = [r.values["mcd"] for r in build_metric("mcd").score_batch([close, far])]
    np.testing.assert_allclose(batch.values[:, 0], [-d for d in direct])
    assert batch.values[0, 0] > batch.values[1, 0]


def test_mcd_gain_matching(speech):
    x = speech(10).astype(np.float64)
    y = random_phase(x)
    ls = mel_cepstral_distortion(y, x, 16000)
    rms = mel_cepstral_distortion(y, x, 16000, gain="rms")
    assert rms < 0.5 * ls
    assert mel_cepstral_distortion(2 * x, x, 16000, gain="none") > 1.0  # c0 sees the level
    assert mel_cepstral_distortion(2 * x, x, 16000, gain="rms") == pytest.approx(0, abs=1e-6)


def test_blocks_of_frames_give_the_same_cepstra(speech):
    from sealign.metrics.cepstral import _mel_cepstra

    x = speech(11).astype(np.float64)
    whole = mel_cepstrum(mcep_frames(x), 23, 0.42)
    got = _mel_cepstra(x, 1024, 256, 23, 0.42, block=5)
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-12)  # batched BLAS rounds apart
