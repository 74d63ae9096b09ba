import numpy as np
import pytest

from conftest import random_phase
from sealign.metrics import MetricUnavailable, Utterance, build_metric
from sealign.metrics.intrusive import si_sdr


def test_pesq_identity_and_noise(speech, noisy):
    x = speech(0)
    m = build_metric("pesq_wb")
    same, deg = m.score_batch(
        [Utterance("a", x, 16000, reference=x), Utterance("b", noisy(x, 0), 16000, reference=x)]
    )
    assert same.values["pesq_wb"] == pytest.approx(4.64, abs=0.01)
    assert deg.values["pesq_wb"] < 2.0


def test_si_sdr_and_estoi(speech, noisy):
    x = speech(1)
    assert si_sdr(x.astype(np.float64), x.astype(np.float64)) > 100
    assert si_sdr(2 * x.astype(np.float64), x.astype(np.float64)) > 100  # scale invariant
    assert si_sdr(noisy(x, 5).astype(np.float64), x.astype(np.float64)) == pytest.approx(5, abs=0.6)
    r = build_metric("estoi").score_batch([Utterance("a", x, 16000, reference=x)])[0]
    assert r.values["estoi"] == pytest.approx(1.0, abs=1e-6)
    # pystoi dithers with numpy's global stream: the score does not depend on its state, and
    # the caller's stream is left where it was
    u = Utterance("b", noisy(x, 0), 16000, reference=x)
    values = []
    for seed in (1, 2):
        np.random.seed(seed)
        values.append(build_metric("estoi").score_batch([u])[0].values["estoi"])
        after = np.random.random()
        np.random.seed(seed)
        assert after == np.random.random()
    assert values[0] == values[1]


def test_missing_reference_is_skipped(speech):
    for name in ("pesq_wb", "estoi", "si_sdr"):
        (r,) = build_metric(name).score_batch([Utterance("a", speech(0), 16000)])
        assert r.skipped == "no reference"


def test_spk_sim_same_voice_beats_other_voice(speech):
    m = build_metric("spk_sim", num_threads=1)
    ref = speech(0, "en-us+m3")
    same = speech(1, "en-us+m3")
    other = speech(1, "en-gb-x-rp+f4")
    a, b = m.score_batch(
        [
            Utterance("s", same, 16000, speaker_ref=ref),
            Utterance("o", other, 16000, speaker_ref=ref),
        ]
    )
    assert a.values["spk_sim"] > b.values["spk_sim"]
    # falls back to the clean reference; skipped without either
    (c,) = m.score_batch([Utterance("r", same, 16000, reference=ref)])
    assert c.values["spk_sim"] == pytest.approx(a.values["spk_sim"], abs=1e-5)
    (d,) = m.score_batch([Utterance("n", same, 16000)])
    assert d.skipped


def test_distillmos_clean_beats_noisy(speech, noisy):
    m = build_metric("distillmos", num_threads=1)
    x = speech(2)
    c, n = m.score_batch([Utterance("c", x, 16000), Utterance("n", noisy(x, 0), 16000)])
    assert 1 <= n.values["distillmos"] < c.values["distillmos"] <= 5


@pytest.mark.parametrize("n", [100, 161, 52_000, 122_799, 122_880, 130_000, 300_000])
def test_distillmos_padded_front_end_equals_the_models_forward(speech, n):
    """Short clips through the padded front end, long ones window batch by window batch
    (three at a time here: 300 000 samples are 13 windows)."""
    import torch

    m = build_metric("distillmos", num_threads=1, batch_size=3)
    m.load()
    x = np.resize(speech(3), n).astype(np.float32)  # speech cycled to n samples
    with torch.inference_mode():
        want = float(m._model(torch.from_numpy(x)[None]).reshape(-1)[0])
        assert m.predict(x) == pytest.approx(want, abs=1e-5)


def test_spk_sim_hf_encoder_from_local_path(tmp_path, speech, on_meta):
    from transformers import WavLMConfig, WavLMForXVector

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cfg = WavLMConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, tdnn_dim=(16, 16), tdnn_kernel=(3, 1),
        tdnn_dilation=(1, 1), xvector_output_dim=8, architectures=["WavLMForXVector"],
    )  # fmt: skip
    WavLMForXVector(cfg).save_pretrained(tmp_path / "tiny_wavlm_xvector")
    m = build_metric(
        "spk_sim", num_threads=1, encoder="hf", model_path=str(tmp_path / "tiny_wavlm_xvector")
    )
    x = speech(0)
    (same,) = m.score_batch([Utterance("a", x, 16000, speaker_ref=x)])
    assert same.values["spk_sim"] == pytest.approx(1.0, abs=1e-3)
    on_device = build_metric(
        "spk_sim", encoder="hf", model_path=str(tmp_path / "tiny_wavlm_xvector")
    )
    on_meta(on_device, lambda m: (m.load(), m._embed(x)))
    missing = build_metric("spk_sim", encoder="hf", model_path=str(tmp_path / "nope"))
    with pytest.raises(MetricUnavailable, match="not found"):
        missing.load()


def _lsd_with_librosa(ref: np.ndarray, est: np.ndarray, sr: int, eps: float = 1e-8) -> float:
    """The URGENT challenges' LSD written directly on librosa's STFT (the reference)."""
    import librosa

    est = est * np.sum(ref * est) / (np.sum(est**2) + eps)
    n_fft, hop = int(0.032 * sr), int(0.016 * sr)
    r = np.abs(librosa.stft(ref, n_fft=n_fft, hop_length=hop)).T
    e = np.abs(librosa.stft(est, n_fft=n_fft, hop_length=hop)).T
    per_frame = np.mean(np.log(r**2 / (e + eps) ** 2 + eps) ** 2, axis=1) ** 0.5
    return float(np.mean(per_frame))


@pytest.mark.parametrize("snr", [0, 10, 30])
def test_lsd_equals_the_librosa_reference(speech, noisy, snr):
    x = speech(3)
    y = 0.6 * noisy(x, snr)  # a gain: LSD matches it away
    (r,) = build_metric("lsd").score_batch([Utterance("a", y, 16000, reference=x)])
    want = _lsd_with_librosa(x.astype(np.float64), y.astype(np.float64), 16000)
    assert r.values["lsd"] == pytest.approx(want, rel=1e-6)


def test_lsd_orders_by_distortion(speech, noisy):
    x = speech(4)
    m = build_metric("lsd")
    same, mild, bad = m.score_batch(
        [
            Utterance(k, y, 16000, reference=x)
            for k, y in [("s", x), ("m", noisy(x, 20)), ("b", noisy(x, 0))]
        ]
    )
    # not exactly 0: the definition's eps terms weigh on near-silent bins
    assert same.values["lsd"] < 0.05 < mild.values["lsd"] < bad.values["lsd"]
    (skip,) = m.score_batch([Utterance("n", x, 16000)])
    assert skip.skipped == "no reference"


def test_intrusive_metrics_skip_a_silent_reference(speech):
    x = speech(4)
    for name in ("lsd", "mcd", "pesq_wb", "stoi", "si_sdr", "composite"):
        (r,) = build_metric(name).score_batch([Utterance("z", x, 16000, reference=0 * x)])
        assert r.skipped == "the reference is digitally silent", name


def test_stoi_and_the_vbdmd_preset(speech, noisy):
    from pystoi import stoi

    from sealign.eval.score import ScoreConfig

    x = speech(9)
    y = noisy(x, 0)
    same, deg = build_metric("stoi").score_batch(
        [Utterance("s", x, 16000, reference=x), Utterance("d", y, 16000, reference=x)]
    )
    assert same.values["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert deg.values["stoi"] == stoi(x.astype(np.float64), y.astype(np.float64), 16000)
    cfg = ScoreConfig(metrics=["dnsmos", "vbdmd", "pesq_wb"])
    assert cfg.metrics == ["dnsmos", "pesq_wb", "composite", "stoi", "estoi", "si_sdr"]


def test_lsd_gain_matching_for_outputs_without_the_references_phase(speech):
    x = speech(10).astype(np.float64)
    y = random_phase(x)
    ls = build_metric("lsd").score_batch([Utterance("a", y, 16000, reference=x)])[0].values["lsd"]
    rms = build_metric("lsd", gain="rms").score_batch([Utterance("a", y, 16000, reference=x)])[0]
    assert rms.values["lsd"] < 0.5 * ls  # the least-squares gain nearly silences y
    assert build_metric("lsd", gain="none").settings()["gain"] == "none"
    with pytest.raises(ValueError, match="gain"):
        build_metric("lsd", gain="peak")


def test_scoring_keeps_a_files_rate_so_full_band_metrics_see_it(tmp_path):
    import soundfile as sf
    from scipy.signal import butter, sosfilt

    from sealign.data.manifest import Entry
    from sealign.eval.score import ScoreConfig, score_entries

    rng = np.random.default_rng(3)
    ref = 0.1 * rng.standard_normal(48000)  # 1 s of full-band noise at 48 kHz
    low = sosfilt(butter(8, 7000, fs=48000, output="sos"), ref)  # nothing above 7 kHz
    for name, x, sr in (("ref48", ref, 48000), ("low48", low, 48000), ("low16", low[::3], 16000)):
        sf.write(tmp_path / f"{name}.wav", x, sr, subtype="FLOAT")
    entries = [
        Entry("full", str(tmp_path / "low48.wav"), reference=str(tmp_path / "ref48.wav")),
        Entry("narrow", str(tmp_path / "low16.wav"), reference=str(tmp_path / "ref48.wav")),
    ]
    wide = {"lsd": {"sample_rate": 48000}, "mcd": {"sample_rate": 48000}}
    cfg = ScoreConfig(metrics=["lsd", "mcd"], metric_options=wide, cache=None)
    full, narrow = score_entries(entries, cfg, progress=False)
    at16 = score_entries(entries[:1], ScoreConfig(metrics=["lsd"], cache=None), progress=False)[0]
    # the 48-kHz LSD sees the missing 7-24 kHz band; the 16-kHz one only its 7-8 kHz part
    assert full["scores"]["lsd"] > 2 * at16["scores"]["lsd"]
    assert np.isfinite(full["scores"]["mcd"])  # order 39, all-pass 0.55 at 48 kHz
    for name in ("lsd", "mcd"):
        assert narrow["skipped"][name] == "audio at 16000 Hz, below the metric's 48000 Hz"
    # a reference below the metric's rate is as band-limited as such audio
    swapped = Entry("ref16", str(tmp_path / "low48.wav"), reference=str(tmp_path / "low16.wav"))
    rec = score_entries([swapped], ScoreConfig(metrics=["lsd", "mcd", "composite"],
                                               metric_options=wide, cache=None),
                        progress=False)[0]  # fmt: skip
    assert rec["skipped"]["lsd"] == "reference at 16000 Hz, below the metric's 48000 Hz"
    assert "composite" not in rec["skipped"]  # 16 kHz: what composite judges
    low8 = low[::6]
    sf.write(tmp_path / "low8.wav", low8, 8000, subtype="FLOAT")
    sf.write(tmp_path / "low16b.wav", low8.repeat(2), 16000, subtype="FLOAT")
    pairs = [
        Entry("ref8", str(tmp_path / "low16b.wav"), reference=str(tmp_path / "low8.wav")),
        Entry("out8", str(tmp_path / "low8.wav"), reference=str(tmp_path / "low16.wav")),
    ]
    ref8, out8 = score_entries(pairs, ScoreConfig(metrics=["pesq_wb", "composite"], cache=None),
                               progress=False)  # fmt: skip
    assert ref8["skipped"] == {m: "reference at 8000 Hz, below the metric's 16000 Hz"
                               for m in ("pesq_wb", "composite")}  # fmt: skip
    # narrowband audio against a wideband reference: PESQ-WB measures its lost band
    assert "pesq_wb" in out8["scores"] and "composite" in out8["skipped"]
