"""SpeechBERTScore: F1 arithmetic, Whisper-base encoder (default) and transformers encoders."""

from __future__ import annotations

import numpy as np
import pytest

from sealign.metrics import MetricUnavailable, Utterance, build_metric, metric_info
from sealign.metrics.speechbertscore import DEFAULT_OUTPUT, bertscore_f1, output_name

KEY = "speechbertscore_whisper_base"


def test_bertscore_f1_arithmetic():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 5))
    assert bertscore_f1(a, a) == pytest.approx((1.0, 1.0, 1.0))
    assert bertscore_f1(a[::-1], a)[2] == pytest.approx(1.0)  # order-free greedy matching
    e = np.eye(4)
    p, r, f = bertscore_f1(e[:2], e)  # output covers 2 of 4 reference directions
    assert (p, r, f) == pytest.approx((1.0, 0.5, 2 / 3))
    assert bertscore_f1(e[:2], e[2:])[2] == 0.0  # orthogonal
    with pytest.raises(ValueError):
        bertscore_f1(np.zeros((0, 4)), e)


def test_bertscore_f1_in_row_blocks_equals_the_whole_matrix(monkeypatch):
    from sealign.metrics import speechbertscore as sbs

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((23, 6)), rng.standard_normal((17, 6))
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    sim = an @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    p, r = sim.max(axis=1).mean(), sim.max(axis=0).mean()
    monkeypatch.setattr(sbs, "_SIM_BLOCK", 5)  # five blocks, the last of three rows
    assert bertscore_f1(a, b) == pytest.approx((p, r, 2 * p * r / (p + r)), abs=1e-12)


def test_output_naming():
    assert DEFAULT_OUTPUT == KEY
    assert metric_info("speechbertscore").outputs == (KEY,)
    assert output_name("WavLM-Base+") == "speechbertscore_wavlm_base"


@pytest.fixture(scope="module")
def sbs():
    m = build_metric("speechbertscore", num_threads=2)
    m.load()
    return m


@pytest.mark.slow
def test_whisper_encoder_scores(sbs, speech, noisy):
    assert sbs.info.outputs == (KEY,)
    assert sbs.info.needs_reference
    x = speech(0)
    utts = [
        Utterance("same", x, 16000, reference=x),
        Utterance("n20", noisy(x, 20.0, seed=1), 16000, reference=x),
        Utterance("n0", noisy(x, 0.0, seed=1), 16000, reference=x),
        Utterance("other", speech(1), 16000, reference=x),
        Utterance("noref", x, 16000),
    ]
    res = sbs(utts)
    assert res[-1].skipped == "no reference"
    v = [r.values[KEY] for r in res[:4]]
    assert v[0] == pytest.approx(1.0, abs=1e-5)
    assert v[0] > v[1] > v[2]
    assert v[1] > v[3]  # same words in light noise beat different words
    assert all(0.0 <= s <= 1.0 for s in v)


@pytest.mark.slow
def test_whisper_encoder_keeps_only_real_frames(sbs, speech):
    x = speech(2)
    (f,) = sbs.features([x])
    assert f.shape == (int(np.ceil(x.size / 320)), 512)
    # A clip longer than one 30-s window is encoded window by window.
    (g,) = sbs.features([np.tile(x, 9)])
    assert g.shape[0] == pytest.approx(9 * x.size / 320, abs=3)


def test_missing_hf_model_path_is_unavailable(tmp_path, speech):
    missing = tmp_path / "no-such-model"
    m = build_metric("speechbertscore", encoder="hf", model_path=str(missing))
    assert m.info.outputs == ("speechbertscore_no_such_model",)
    x = speech(0)
    with pytest.raises(MetricUnavailable, match=str(missing)):
        m([Utterance("u", x, 16000, reference=x)])


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    import torch
    from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

    small = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 8, 8),  # 320 samples = 20 ms per frame, like HuBERT/WavLM
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    root = tmp_path_factory.mktemp("sbs")
    torch.manual_seed(0)
    HubertModel(HubertConfig(**small)).save_pretrained(root / "tiny-hubert")
    WavLMModel(WavLMConfig(**small, num_buckets=16, max_bucket_distance=64)).save_pretrained(
        root / "tiny-wavlm"
    )
    return root


def test_hf_encoder_runs_on_its_device(tiny_models, speech, on_meta):
    m = build_metric("speechbertscore", encoder="hf", model_path=str(tiny_models / "tiny-wavlm"))
    on_meta(m, lambda m: m.features([speech(0)[:16000]]))


@pytest.mark.parametrize("name", ["tiny-hubert", "tiny-wavlm"])
def test_hf_encoder_on_random_tiny_model(tiny_models, speech, noisy, name):
    m = build_metric(
        "speechbertscore", encoder="hf", model_path=str(tiny_models / name), layer=1, num_threads=2
    )
    key = f"speechbertscore_{name.replace('-', '_')}"
    assert m.info.outputs == (key,)
    assert m.settings()["layer"] == 1
    x = speech(0)[:24000]
    res = m(
        [
            Utterance("same", x, 16000, reference=x),
            Utterance("noisy", noisy(x, 0.0, seed=2), 16000, reference=x),
        ]
    )
    assert all(r.ok for r in res)
    assert res[0].values[key] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= res[1].values[key] < 1.0
    (f,) = m.features([x])
    assert f.shape[1] == 32 and 70 <= f.shape[0] <= 76  # 20-ms frames of 1.5 s


def test_hf_layer_out_of_range(tiny_models, speech):
    m = build_metric(
        "speechbertscore", encoder="hf", model_path=str(tiny_models / "tiny-hubert"), layer=5
    )
    x = speech(0)[:8000]
    (r,) = m([Utterance("u", x, 16000, reference=x)])
    assert r.error is not None and "layer 5" in r.error


def test_max_seconds_by_encoder_and_explicitly():
    from sealign.metrics.registry import build_metric

    assert build_metric("speechbertscore", num_threads=1).max_seconds is None  # Whisper windows
    hf = {"encoder": "hf", "model_path": "/nowhere"}  # loaded lazily: not needed here
    assert build_metric("speechbertscore", **hf).max_seconds == 60
    assert build_metric("speechbertscore", **hf, max_seconds=None).max_seconds is None
    assert build_metric("speechbertscore", **hf, max_seconds=90).max_seconds == 90
    with pytest.raises(ValueError, match="max_seconds must be > 0"):
        build_metric("speechbertscore", **hf, max_seconds=0)
