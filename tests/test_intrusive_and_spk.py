import numpy as np
import pytest

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


@pytest.mark.parametrize("n", [100, 161, 52_000, 122_799, 122_880, 130_000])
def test_distillmos_padded_front_end_equals_the_models_forward(speech, n):
    import torch

    m = build_metric("distillmos", num_threads=1)
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
