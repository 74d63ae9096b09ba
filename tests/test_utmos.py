"""UTMOS22 strong: the public-checkpoint layout, and loading/scoring a random checkpoint in that
format (no real weights exist on this machine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sealign.audio.io import resample
from sealign.metrics.base import MetricUnavailable, Utterance
from sealign.metrics.utmos import CKPT_NAME, UTMOS, UTMOS22Strong, UTMOSArch

SMALL = {
    "conv_layers": [(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2,
    "ssl_dim": 32,
    "n_layers": 2,
    "n_heads": 4,
    "ffn_dim": 64,
    "pos_conv_kernel": 16,
    "pos_conv_groups": 4,
    "domain_dim": 8,
    "judge_dim": 8,
    "rnn_hidden": 16,
    "proj_hidden": 32,
}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def small_ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    model = UTMOS22Strong(SMALL)
    path = tmp_path / CKPT_NAME
    torch.save(model.state_dict(), path)
    return path


def test_default_architecture_has_the_public_checkpoint_layout():
    # Keys and shapes of tarepan/SpeechMOS `UTMOS22Strong` (utmos22_strong_step7459_v1.pt).
    with torch.device("meta"):
        sd = UTMOS22Strong().state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert len(shapes) == 225
    expected = {
        "wav2vec2.feature_extractor.conv_layers.0.0.weight": (512, 1, 10),
        "wav2vec2.feature_extractor.conv_layers.0.2.weight": (512,),
        "wav2vec2.feature_extractor.conv_layers.0.2.bias": (512,),
        "wav2vec2.feature_extractor.conv_layers.4.0.weight": (512, 512, 3),
        "wav2vec2.feature_extractor.conv_layers.6.0.weight": (512, 512, 2),
        "wav2vec2.layer_norm.weight": (512,),
        "wav2vec2.post_extract_proj.weight": (768, 512),
        "wav2vec2.mask_emb": (768,),
        "wav2vec2.encoder.pos_conv.0.weight_g": (1, 1, 128),
        "wav2vec2.encoder.pos_conv.0.weight_v": (768, 48, 128),
        "wav2vec2.encoder.pos_conv.0.bias": (768,),
        "wav2vec2.encoder.layer_norm.bias": (768,),
        "wav2vec2.encoder.layers.11.self_attn.q_proj.weight": (768, 768),
        "wav2vec2.encoder.layers.11.self_attn.out_proj.bias": (768,),
        "wav2vec2.encoder.layers.0.fc1.weight": (3072, 768),
        "wav2vec2.encoder.layers.0.fc2.weight": (768, 3072),
        "wav2vec2.encoder.layers.0.self_attn_layer_norm.weight": (768,),
        "wav2vec2.encoder.layers.0.final_layer_norm.weight": (768,),
        "domain_emb": (1, 128),
        "judge_emb": (1, 128),
        "blstm.weight_ih_l0": (2048, 1024),
        "blstm.weight_hh_l0_reverse": (2048, 512),
        "projection.0.weight": (2048, 1024),
        "projection.2.weight": (1, 2048),
        "projection.2.bias": (1,),
    }
    for k, shape in expected.items():
        assert shapes.get(k) == shape, k
    assert not any("conv_layers.1.2" in k or "dropout" in k for k in shapes)
    assert sum(k.startswith("wav2vec2.encoder.layers.") for k in shapes) == 12 * 16
    assert UTMOSArch().min_samples() == 400


def test_random_checkpoint_scores(small_ckpt, speech, noisy):
    m = UTMOS(num_threads=1, checkpoint=str(small_ckpt), arch=SMALL, batch_size=2)
    clean = speech(0)
    utts = [
        Utterance("a", clean, 16000),
        Utterance("b", noisy(clean, 0.0, 0), 16000),  # same length as "a": batched together
        Utterance("c", clean[:7001], 16000),
        Utterance("d", resample(clean[:12000], 16000, 22050), 22050),
        Utterance("e", np.full(200, 0.1, np.float32), 16000),  # too short for the conv stack
    ]
    res = m.score_batch(utts)
    for r in res[:4]:
        assert r.ok, r.to_json()
        assert set(r.values) == {"utmos"}
        assert 1.0 <= r.values["utmos"] <= 5.0
    assert "too short" in res[4].error
    # Batching equal lengths gives the same numbers as one at a time, and matches the model.
    wavs = [u.audio for u in utts[:3]]
    together = m.predict(wavs)
    alone = np.array([m.predict([w])[0] for w in wavs])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    model = UTMOS22Strong(SMALL)
    model.load_state_dict(torch.load(small_ckpt, weights_only=True))
    with torch.inference_mode():
        x = torch.from_numpy(wavs[2])[None]
        direct = model.eval()(x).item()
        frames = model.frame_scores(x)
    assert together[2] == pytest.approx(direct, abs=1e-5)
    assert direct == pytest.approx(frames.mean().item() * 2 + 3, abs=1e-5)
    s = m.settings()
    assert s["checkpoint"] == CKPT_NAME and len(s["sha256"]) == 16 and s["arch"]["n_layers"] == 2


def test_odd_and_even_frame_counts(small_ckpt):
    # 16000 samples → 49 frames (padded to 50 inside the transformer), 16320 → 50 frames.
    m = UTMOS(num_threads=1, checkpoint=str(small_ckpt), arch=SMALL)
    rng = np.random.default_rng(0)
    for n in (16000, 16320):
        v = m.predict([rng.standard_normal(n).astype(np.float32) * 0.1])
        assert np.isfinite(v).all()


def test_missing_or_renamed_keys_are_refused(tmp_path, small_ckpt):
    sd = torch.load(small_ckpt, weights_only=True)
    missing = dict(sd)
    del missing["judge_emb"]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(MetricUnavailable, match=r"SpeechMOS format.*judge_emb"):
        UTMOS(num_threads=1, checkpoint=str(tmp_path / "missing.pt"), arch=SMALL).load()
    renamed = dict(sd)
    renamed["blstm.weight_ih_l0_fwd"] = renamed.pop("blstm.weight_ih_l0")
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(MetricUnavailable, match=r"blstm\.weight_ih_l0_fwd"):
        UTMOS(num_threads=1, checkpoint=str(tmp_path / "renamed.pt"), arch=SMALL).load()
    # The default (public) architecture refuses a checkpoint of another size.
    with pytest.raises(MetricUnavailable, match="size mismatch"):
        UTMOS(num_threads=1, checkpoint=str(small_ckpt)).load()


def test_parametrized_weight_norm_keys_are_accepted(tmp_path, small_ckpt):
    sd = torch.load(small_ckpt, weights_only=True)
    pre = "wav2vec2.encoder.pos_conv.0."
    sd[pre + "parametrizations.weight.original0"] = sd.pop(pre + "weight_g")
    sd[pre + "parametrizations.weight.original1"] = sd.pop(pre + "weight_v")
    torch.save(sd, tmp_path / "new_api.pt")
    a = UTMOS(num_threads=1, checkpoint=str(tmp_path / "new_api.pt"), arch=SMALL)
    b = UTMOS(num_threads=1, checkpoint=str(small_ckpt), arch=SMALL)
    w = [np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1]
    np.testing.assert_allclose(a.predict(w), b.predict(w), atol=1e-6)


def test_missing_checkpoint(monkeypatch, tmp_path):
    monkeypatch.delenv("SEALIGN_UTMOS_CKPT", raising=False)
    with pytest.raises(MetricUnavailable, match=rf"{CKPT_NAME}.*SpeechMOS"):
        UTMOS().load()
    monkeypatch.setenv("SEALIGN_UTMOS_CKPT", str(tmp_path / "absent.pt"))
    m = UTMOS()
    assert m.checkpoint == str(tmp_path / "absent.pt")
    assert m.settings()["sha256"] is None
    with pytest.raises(MetricUnavailable, match=rf"not found.*absent\.pt.*{CKPT_NAME}"):
        m.score_batch([Utterance("x", np.full(16000, 0.1, np.float32), 16000)])


def test_unknown_arch_field():
    with pytest.raises(ValueError, match="n_layer"):
        UTMOSArch.from_options({"n_layer": 2})


def test_not_a_state_dict(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MetricUnavailable, match="junk.pt"):
        UTMOS(num_threads=1, checkpoint=str(tmp_path / "junk.pt"), arch=SMALL).load()
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(MetricUnavailable, match="not a UTMOS22 strong state dict"):
        UTMOS(num_threads=1, checkpoint=str(tmp_path / "list.pt"), arch=SMALL).load()


def test_runs_on_its_device(small_ckpt, on_meta):
    m = UTMOS(num_threads=1, checkpoint=str(small_ckpt), arch=SMALL)
    x = np.random.default_rng(0).normal(0, 0.1, 24000).astype(np.float32)
    on_meta(m, lambda m: m.predict([x, x[:20001]]))


def test_clips_longer_than_max_seconds_are_errors_of_their_own(small_ckpt):
    """The model attends over the whole clip (memory grows with its length squared): clips
    above ``max_seconds`` (60 s by default, an option) are refused one by one."""
    assert UTMOS(checkpoint=str(small_ckpt), arch=SMALL).max_seconds == 60
    m = UTMOS(num_threads=1, checkpoint=str(small_ckpt), arch=SMALL, max_seconds=1.5)
    rng = np.random.default_rng(0)
    short, long = (rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 32000))
    res = m.score_batch([Utterance("s", short, 16000), Utterance("l", long, 16000)])
    assert res[0].ok
    assert res[1].error.startswith("audio too long for utmos (2.0 s > max_seconds 1.5;")
    assert UTMOS(checkpoint=str(small_ckpt), max_seconds=None).max_seconds is None  # no limit
    for bad in (0, -5, "long"):
        with pytest.raises(ValueError, match="max_seconds must be > 0"):
            UTMOS(checkpoint=str(small_ckpt), max_seconds=bad)
