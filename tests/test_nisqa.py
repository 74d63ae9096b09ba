"""NISQA v2 / NISQA-TTS: loader on random checkpoints, and the official weights when present.

Reference values (``OFFICIAL``) were produced by the official, unmodified NISQA code: the PyPI
wheel ``nisqa==2.0.post2`` (gabrielmittag/NISQA), run with torch 2.13 CPU, librosa 0.11 and the
checkpoints in shared/weights/nisqa, through the same path as its CLI
``python run_predict.py --mode predict_file --pretrained_model <nisqa.tar|nisqa_tts.tar>
--deg <clip>.wav``, i.e. ``nisqaModel({... "mode": "predict_file", "bs": 1, ...}).predict()``.
The clips were made exactly as ``_clips`` below (deterministic ``synthetic_speech``, mixed with
``conftest.add_noise``), then resampled with ``sealign.audio.io.resample`` to 48 kHz (and also kept at
16 kHz) and written as float32 WAV with soundfile. Values are the raw (unclipped) ``*_pred``
columns; the official CLI computes the mel spectrogram at the file's own rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from conftest import add_noise
from sealign.audio.io import resample
from sealign.metrics.base import MetricUnavailable, Utterance
from sealign.metrics.nisqa import NISQA, NISQATTS, NisqaNet

WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared/weights/nisqa"

# Fingerprints of the 16 kHz clips the references were computed on: (samples, RMS).
CLIP_FINGERPRINT = {
    "clean0": (40000, 0.095221),
    "noisy0_0db": (40000, 0.134719),
    "noisy1_10db": (40000, 0.081484),
}
# Official outputs (mos, noi, dis, col, loud) for nisqa.tar and (naturalness,) for nisqa_tts.tar.
OFFICIAL = {
    ("nisqa", 48000): {
        "clean0": [1.459517, 3.130492, 1.693634, 1.791615, 2.741011],
        "noisy0_0db": [0.536483, 1.294736, 1.994943, 0.996827, 1.375104],
        "noisy1_10db": [0.800553, 1.498564, 2.723755, 1.405250, 1.499774],
    },
    ("nisqa", 16000): {
        "clean0": [1.455543, 2.986619, 1.659552, 1.834771, 2.795858],
        "noisy0_0db": [0.812595, 1.789419, 2.420537, 1.118098, 1.616861],
        "noisy1_10db": [1.007946, 1.740144, 2.844890, 1.345158, 1.681395],
    },
    ("nisqa_tts", 48000): {
        "clean0": [2.613640],
        "noisy0_0db": [1.825831],
        "noisy1_10db": [1.685224],
    },
    ("nisqa_tts", 16000): {
        "clean0": [2.623519],
        "noisy0_0db": [1.862803],
        "noisy1_10db": [1.710714],
    },
}
TOL = 1e-3

# Hyper-parameters (no weights) of the two official checkpoints, as stored in their ``args``.
DIM_ARGS = {
    "model": "NISQA_DIM",
    "ms_sr": None,
    "ms_fmax": 20000,
    "ms_n_fft": 4096,
    "ms_hop_length": 0.01,
    "ms_win_length": 0.02,
    "ms_n_mels": 48,
    "ms_seg_length": 15,
    "ms_seg_hop_length": 4,
    "ms_max_segments": 1300,
    "cnn_model": "adapt",
    "cnn_c_out_1": 16,
    "cnn_c_out_2": 32,
    "cnn_c_out_3": 64,
    "cnn_kernel_size": (3, 3),
    "cnn_dropout": 0.2,
    "cnn_fc_out_h": None,
    "cnn_pool_1": [24, 7],
    "cnn_pool_2": [12, 5],
    "cnn_pool_3": [6, 3],
    "td": "self_att",
    "td_sa_d_model": 64,
    "td_sa_nhead": 1,
    "td_sa_pos_enc": False,
    "td_sa_num_layers": 2,
    "td_sa_h": 64,
    "td_sa_dropout": 0.1,
    "td_2": "skip",
    "pool": "att",
    "pool_att_h": 128,
    "pool_att_dropout": 0,
}
TTS_ARGS = {
    **DIM_ARGS,
    "model": "NISQA",
    "ms_fmax": 8000,
    "ms_seg_hop_length": 1,
    "ms_max_segments": 6000,
    "cnn_model": "standard",
    "cnn_fc_out_h": 20,
    "cnn_pool_1": None,
    "cnn_pool_2": None,
    "cnn_pool_3": None,
    "td": "lstm",
    "td_lstm_h": 128,
    "td_lstm_num_layers": 1,
    "td_lstm_dropout": 0,
    "td_lstm_bidirectional": True,
    "pool": "last_step_bi",
    "pool_att_h": None,
}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


_VOWEL_FORMANTS = [
    (730, 1090, 2440),
    (270, 2290, 3010),
    (300, 870, 2240),
    (530, 1840, 2480),
    (640, 1190, 2390),
    (490, 1350, 1690),
]


def synthetic_speech(seed: int, seconds: float = 2.5, sr: int = 16000) -> np.ndarray:
    """Deterministic speech-like signal: formant-filtered pulse-train syllables with a wobbling
    pitch, separated by noise bursts or pauses. (eSpeak NG output varies slightly from call to call
    within a process, so fixed reference values need this instead.)"""
    rng = np.random.default_rng(seed)
    f0_base = rng.uniform(95, 180)
    total = int(seconds * sr)
    parts: list[np.ndarray] = []
    n = 0
    while n < total:
        dur = int(rng.uniform(0.12, 0.26) * sr)
        t = np.arange(dur) / sr
        f0 = f0_base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6)))
        cycles = np.floor(np.cumsum(f0) / sr)
        pulses = (np.diff(cycles, prepend=0) > 0).astype(np.float64)
        y = lfilter([1.0], [1.0, -0.97], pulses) + 0.02 * rng.standard_normal(dur)
        for fc in _VOWEL_FORMANTS[rng.integers(len(_VOWEL_FORMANTS))]:
            r = np.exp(-np.pi * (60 + 0.05 * fc) / sr)
            y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / sr), r * r], y)
        y *= np.hanning(dur)
        parts.append(y / (np.abs(y).max() + 1e-9) * rng.uniform(0.3, 0.6))
        gap = int(rng.uniform(0.04, 0.12) * sr)
        g = rng.standard_normal(gap) * (0.05 if rng.random() < 0.5 else 0.002)
        parts.append(lfilter([1, -0.9], [1.0], g) * np.hanning(gap))
        n += dur + gap
    return np.concatenate(parts)[:total].astype(np.float32)


def _clips() -> dict[str, np.ndarray]:
    clean0 = synthetic_speech(0)
    return {
        "clean0": clean0,
        "noisy0_0db": add_noise(clean0, 0.0, 0),
        "noisy1_10db": add_noise(synthetic_speech(1), 10.0, 1),
    }


def _random_checkpoint(tmp_path: Path, args: dict, name: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = NisqaNet(args)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.1)
    path = tmp_path / name
    torch.save({"args": dict(args), "model_state_dict": net.state_dict()}, path)
    return path


# ---------------------------------------------------------------- random checkpoints (always run)


@pytest.mark.parametrize(("cls", "args"), [(NISQA, DIM_ARGS), (NISQATTS, TTS_ARGS)])
def test_random_checkpoint_loads_and_scores(tmp_path, speech, noisy, cls, args):
    path = _random_checkpoint(tmp_path, args, "rand.tar")
    m = cls(num_threads=1, weights=str(path), batch_size=3)
    clean = speech(0)
    utts = [
        Utterance("a", clean, 16000),
        Utterance("b", noisy(clean, 5.0, 0), 16000),
        Utterance("c", clean[:8000], 16000),
        Utterance("d", resample(clean[:20000], 16000, 22050), 22050),
    ]
    res = m.score_batch(utts)
    assert all(r.ok for r in res), [r.to_json() for r in res]
    for r in res:
        assert set(r.values) == set(cls.info.outputs)
        assert all(1.0 <= v <= 5.0 for v in r.values.values())
    # Padding in a batch does not change a prediction.
    wavs = [resample(u.audio, u.sample_rate, 48000) for u in utts]
    batched = m.predict(wavs)
    single = np.concatenate([m.predict([w]) for w in wavs])
    assert np.isfinite(batched).all()
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert m.settings()["sha256"] and m.settings()["weights"] == "rand.tar"


def test_checkpoint_must_match_its_args(tmp_path):
    path = _random_checkpoint(tmp_path, DIM_ARGS, "rand.tar")
    ckpt = torch.load(path, weights_only=True)
    sd = ckpt["model_state_dict"]
    sd["pool_layers.0.model.linear9.weight"] = sd.pop("pool_layers.0.model.linear3.weight")
    torch.save(ckpt, tmp_path / "renamed.tar")
    with pytest.raises(MetricUnavailable, match="linear3"):
        NISQA(num_threads=1, weights=str(tmp_path / "renamed.tar")).load()
    # A single-output checkpoint is not the 5-output quality model, and vice versa.
    tts = _random_checkpoint(tmp_path, TTS_ARGS, "tts.tar")
    with pytest.raises(MetricUnavailable, match="nisqa.tar"):
        NISQA(num_threads=1, weights=str(tts)).load()
    with pytest.raises(MetricUnavailable, match="nisqa_tts.tar"):
        NISQATTS(num_threads=1, weights=str(path)).load()


def test_too_short_or_too_long_is_an_error_not_a_crash(tmp_path):
    args = {**DIM_ARGS, "ms_max_segments": 20}
    m = NISQA(num_threads=1, weights=str(_random_checkpoint(tmp_path, args, "short.tar")))
    rng = np.random.default_rng(0)
    utts = [
        Utterance("ok", rng.standard_normal(8000).astype(np.float32) * 0.1, 16000),
        Utterance("tiny", np.full(1000, 0.1, np.float32), 16000),
        Utterance("long", rng.standard_normal(32000).astype(np.float32) * 0.1, 16000),
    ]
    res = m.score_batch(utts)
    assert res[0].ok
    assert "too short" in res[1].error
    assert "too long" in res[2].error


def test_missing_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("SEALIGN_NISQA_WEIGHTS", raising=False)
    with pytest.raises(MetricUnavailable, match=r"nisqa\.tar.*CC BY-NC-SA"):
        NISQA().load()
    with pytest.raises(MetricUnavailable, match=r"not found.*nisqa_tts\.tar.*CC BY-NC-SA"):
        NISQATTS(num_threads=1, weights=str(tmp_path / "nope.tar")).load()
    # The environment variable is the default location.
    monkeypatch.setenv("SEALIGN_NISQA_WEIGHTS", str(tmp_path / "x.tar"))
    with pytest.raises(MetricUnavailable, match=r"x\.tar"):
        NISQA().load()
    assert NISQA().settings()["sha256"] is None


# ---------------------------------------------------------------- official weights (if present)


def _official(name: str) -> Path:
    path = WEIGHTS / f"{name}.tar"
    if not path.is_file():
        pytest.skip(f"official NISQA weights not available at {path} (CC BY-NC-SA, not shipped)")
    return path


@pytest.mark.parametrize(("cls", "name"), [(NISQA, "nisqa"), (NISQATTS, "nisqa_tts")])
def test_reproduces_official_predictions(cls, name):
    path = _official(name)
    clips = _clips()
    for k, w in clips.items():
        n, rms = CLIP_FINGERPRINT[k]
        assert (w.size, round(float(np.sqrt(np.mean(w.astype(np.float64) ** 2))), 6)) == (n, rms), (
            f"test clip {k} changed; regenerate OFFICIAL as described above"
        )
    keys = list(clips)
    for sr in (48000, 16000):
        m = cls(num_threads=1, weights=str(path), sample_rate=sr, batch_size=2)
        ref = np.array([OFFICIAL[(name, sr)][k] for k in keys])
        raw = m.predict([resample(clips[k], 16000, sr) for k in keys])
        np.testing.assert_allclose(raw, ref, atol=TOL, err_msg=f"{name} at {sr} Hz")
        # Through the metric contract: 16 kHz input, resampled by the base class, clipped.
        res = m.score_batch([Utterance(k, clips[k], 16000) for k in keys])
        got = np.array([[r.values[o] for o in cls.info.outputs] for r in res])
        np.testing.assert_allclose(got, np.clip(ref, 1.0, 5.0), atol=TOL)


def test_clean_scores_higher_than_noisy(speech, noisy):
    m = NISQA(num_threads=1, weights=str(_official("nisqa")))
    clean = speech(2)
    res = m.score_batch([Utterance("c", clean, 16000), Utterance("n", noisy(clean, 0.0, 3), 16000)])
    assert res[0].values["nisqa_mos"] > res[1].values["nisqa_mos"]
    assert res[0].values["nisqa_noi"] > res[1].values["nisqa_noi"] + 0.5
    raw = m.predict([resample(w, 16000, 48000) for w in (clean, noisy(clean, 0.0, 3))])
    assert raw[0, 0] > raw[1, 0] + 0.3


def test_runs_on_its_device(tmp_path, speech, on_meta):
    # the self-attention model (NISQA_DIM's layout); the LSTM one's packing has no meta kernels
    m = NISQA(num_threads=1, weights=str(_random_checkpoint(tmp_path, DIM_ARGS, "rand.tar")))
    x = resample(speech(0), 16000, 48000)
    on_meta(m, lambda m: m.predict([x, x[: x.size // 2]]))
