"""Whisper content features of the noisy input: framing, caching, validation and a policy of each
built-in family using them end to end (condition, SFT loss, save / load, sample)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sealign.codecs.base import load_codec
from sealign.models.content import ContentEncoder
from sealign.models.features import (
    FeatureConfig,
    compute_features,
    drop_content,
    log_mel,
    normalize,
)
from sealign.models.registry import build_policy, load_policy

torch.set_num_threads(1)


def test_content_needs_a_known_encoder_and_20_ms_frames():
    with pytest.raises(ValueError, match="content must be one of"):
        FeatureConfig(content="hubert")
    with pytest.raises(ValueError, match="codec frame here is 40 ms"):
        FeatureConfig(content="whisper", frames_per_token=4)
    for bad in ({"n_mels": 0}, {"fmax": 9000.0}, {"fmin": 5000.0, "fmax": 4000.0}):
        with pytest.raises(ValueError):  # else a crash inside the first forward pass
            FeatureConfig(**bad)
    cfg = FeatureConfig(content="whisper", n_mels=20)
    assert cfg.dim == 20 + 512 and FeatureConfig(n_mels=20).dim == 20


def test_features_append_whisper_frames_per_codec_frame(speech, noisy):
    cfg = FeatureConfig(content="whisper", n_mels=20)
    wavs = [noisy(speech(0)[:11200], 5.0), noisy(speech(1)[:17000], 5.0, seed=1)]
    cond = compute_features(wavs, cfg)
    assert cond.features.shape == (2, 2 * 54, 532)
    n0 = cfg.num_frames(11200)
    mels = normalize(log_mel(wavs[0], cfg), cfg.normalize)
    torch.testing.assert_close(cond.features[0, :n0, :20], mels)
    content = cond.features[0, :n0, 20:]
    assert torch.equal(content[0::2], content[1::2])  # one encoder frame per codec frame
    assert content.abs().sum(dim=1).min() > 0 and not cond.features[0, n0:].any()
    # each input's frames come from that input alone, in float16 precision
    alone = compute_features([wavs[1]], cfg).features[0]
    assert torch.equal(alone, cond.features[1])
    assert torch.equal(content, content.half().float())


def test_content_cache_returns_the_same_frames_and_stays_bounded(speech):
    enc = ContentEncoder(cache_gb=120_000 / 2**30)  # room for two 1-s clips (51,200 B each)
    clips = [speech(i)[:16000] for i in range(3)]
    first = enc(clips[:1], 16000)[0]
    assert first.shape == (50, 512) and first.dtype == np.float32
    assert np.array_equal(enc(clips[:1], 16000)[0], first)
    enc(clips, 16000)
    assert enc._held <= enc.cache_bytes and len(enc._cache) == 2
    assert np.array_equal(enc(clips[:1], 16000)[0], first)  # evicted, recomputed identically


@pytest.mark.parametrize(
    "family, extra",
    [("ar", {}), ("mgm", {"decode_steps": 2}), ("fm", {"ode_steps": 2, "sde_steps": 2})],
)
def test_policy_with_content_features_trains_saves_and_loads(
    family, extra, tiny_setup, speech, noisy, tmp_path
):
    codec = load_codec(f"world:{tiny_setup / 'codec'}")
    torch.manual_seed(0)
    feats = {"n_mels": 20, "content": "whisper"}
    policy = build_policy(
        family, codec, {"dim": 32, "layers": 1, "heads": 2, "features": feats, **extra}
    )
    clean = [speech(0)[:11200], speech(1, "en-us+f2")[:14400]]
    wavs = [noisy(c, 5.0, seed=i) for i, c in enumerate(clean)]
    cond = policy.condition(wavs)
    assert cond.features.shape[-1] == 532 and policy.cond_in.in_features == 2 * 532
    loss = policy.sft_loss(cond, policy.encode_targets(clean))
    loss.backward()
    assert policy.cond_in.weight.grad[:, 20:532].abs().sum() > 0
    policy.eval().save(tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    assert loaded.config.features.content == "whisper"
    gen = torch.Generator().manual_seed(0)
    out = loaded.sample(loaded.condition(wavs), generator=gen)
    assert len(loaded.decode(out)) == 2


def test_fm_guidance_extrapolates_along_the_content_features(tiny_setup, speech, noisy):
    codec = load_codec(f"world:{tiny_setup / 'codec'}")
    torch.manual_seed(0)
    cfg = {"dim": 32, "layers": 1, "heads": 2, "ode_steps": 1, "sde_steps": 3}
    with pytest.raises(ValueError, match="content_dropout and guidance act on content"):
        build_policy("fm", codec, {**cfg, "features": {"n_mels": 20}, "guidance": 1.0})
    feats = {"n_mels": 20, "content": "whisper"}
    policy = build_policy("fm", codec, {**cfg, "features": feats, "content_dropout": 0.5})
    clean = [speech(0)[:11200], speech(1, "en-us+f2")[:14400]]
    wavs = [noisy(c, 5.0, seed=i) for i, c in enumerate(clean)]
    cond = policy.condition(wavs)
    fc = policy.config.features
    null = drop_content(cond, fc)
    assert torch.equal(null.features[..., :20], cond.features[..., :20])
    assert not null.features[..., 20:].any() and cond.features[..., 20:].any()

    # content dropout zeroes the content of the rows a first torch.rand draw picks
    targets = policy.encode_targets(clean)
    torch.manual_seed(0)
    rows = torch.rand(2) < 0.5
    assert rows.any() and not rows.all()
    expected = policy.eval().sft_loss(drop_content(cond, fc, rows), targets)
    torch.manual_seed(0)
    assert torch.equal(policy.train().sft_loss(cond, targets), expected)
    policy.eval()

    # one ODE step from s = 0: x1 − x0 is v_c + w·(v_c − v_∅) at x0
    w = 1.5
    out = policy.sample(cond, temperature=1.0, generator=gen(0), guidance=w)
    x0, x1 = out.actions["states"][:, 0], out.actions["states"][:, 1]
    s0 = torch.zeros(2)
    vc, vu = policy.velocity(cond, x0, s0), policy.velocity(null, x0, s0)
    assert (vc - vu).abs().max() > 1e-3
    torch.testing.assert_close(x1 - x0, vc + w * (vc - vu), atol=1e-5, rtol=1e-5)
    plain = policy.sample(cond, temperature=1.0, generator=gen(0))  # config default: 0
    torch.testing.assert_close(plain.actions["states"][:, 1] - x0, vc, atol=1e-5, rtol=1e-5)

    # SDE rollouts store their guidance, so recomputed step log-probs are the guided steps'
    sde = policy.sample(cond, generator=gen(1), method="sde", guidance=w)
    logp, _ = policy.step_log_probs(cond, sde)
    torch.testing.assert_close(logp, sde.logp, atol=1e-6, rtol=0)
    sde.actions["guidance"].zero_()
    assert (policy.step_log_probs(cond, sde)[0] - sde.logp).abs().max() > 1e-3


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_fm_representation_alignment_with_clean_content(tiny_setup, speech, noisy, tmp_path):
    codec = load_codec(f"world:{tiny_setup / 'codec'}")
    cfg = {"dim": 32, "layers": 2, "heads": 2, "features": {"n_mels": 20}}
    with pytest.raises(ValueError, match="repa_layer must be in"):
        build_policy("fm", codec, {**cfg, "repa_layer": 3})
    torch.manual_seed(0)
    plain = build_policy("fm", codec, cfg)
    policy = build_policy("fm", codec, {**cfg, "repa_layer": 1, "repa_weight": 2.0})
    policy.load_state_dict(plain.state_dict())  # no repa_proj in the state: kept as built
    clean = [speech(0)[:11200], speech(1, "en-us+f2")[:14400]]
    wavs = [noisy(c, 5.0, seed=i) for i, c in enumerate(clean)]
    cond = policy.condition(wavs)
    targets = policy.encode_targets(clean)
    z = targets.extra["content"]
    assert z.shape == (2, 45, 512) and z[0, :35].abs().sum(-1).min() > 0 and not z[0, 35:].any()
    assert "content" not in plain.encode_targets(clean).extra

    # the loss is the flow-matching loss plus 2 × mean(1 − cos) of block 1's projected states
    torch.manual_seed(1)
    base = plain.sft_loss(cond, targets)
    torch.manual_seed(1)
    loss = policy.sft_loss(cond, targets)
    torch.manual_seed(1)
    hidden: list[torch.Tensor] = []
    states, m = policy._cond_states(cond)
    x1 = targets.values
    t = torch.rand(2)
    x0 = policy._start(cond, torch.randn(x1.shape), m.unsqueeze(-1).float())
    policy._velocity(states, m, (1 - t)[:, None, None] * x0 + t[:, None, None] * x1, t, 0.0, hidden)
    cos = torch.nn.functional.cosine_similarity(policy.repa_proj(hidden[0]), z, dim=-1)
    align = ((1 - cos) * m).sum() / m.sum()
    torch.testing.assert_close(loss, base + 2.0 * align)
    align.backward()  # the alignment term trains the projection and the blocks up to layer 1
    assert policy.repa_proj[0].weight.grad.abs().sum() > 0
    assert policy.blocks[0].qkv.weight.grad.abs().sum() > 0
    assert policy.blocks[1].qkv.weight.grad is None

    # saved with the projection; loads into a model without one (dropped) and back
    policy.save(tmp_path / "repa")
    loaded = load_policy(tmp_path / "repa")
    assert torch.equal(loaded.repa_proj[0].weight, policy.repa_proj[0].weight)
    plain.load_state_dict(policy.state_dict())
    assert torch.equal(plain.head.weight, policy.head.weight)


# ------------------------------------------------------------------- transformers SSL encoders


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory):
    """A randomly initialized 2-layer WavLM (32 wide) and its feature extractor, saved as a
    user's local checkpoint would be."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    out = tmp_path_factory.mktemp("wavlm")
    cfg = WavLMConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    torch.manual_seed(0)
    WavLMModel(cfg).save_pretrained(out)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(out)
    return out


def test_ssl_encoder_frames_layers_and_rates(tiny_wavlm, speech, noisy):
    from transformers import AutoModel

    enc = ContentEncoder(str(tiny_wavlm), kind="ssl", layer=-1)
    wavs = [noisy(speech(0)[:16000], 5.0), noisy(speech(1)[:11200], 5.0, seed=1)]
    frames = enc(wavs, 16000)
    assert [f.shape for f in frames] == [(50, 32), (35, 32)]  # ceil(n / 320) frames
    # the last hidden state of the model itself, one utterance at a time, in float16 precision
    model = AutoModel.from_pretrained(tiny_wavlm).eval()
    x = torch.from_numpy((wavs[1] - wavs[1].mean()) / np.sqrt(wavs[1].var() + 1e-7))[None]
    with torch.no_grad():
        ref = model(x).last_hidden_state[0].numpy()
    np.testing.assert_allclose(frames[1][: len(ref)], ref, atol=2e-3, rtol=2e-3)
    assert np.array_equal(enc(wavs[1:], 16000)[0], frames[1])  # the same alone as in a batch
    first = ContentEncoder(str(tiny_wavlm), kind="ssl", layer=0)(wavs[:1], 16000)[0]
    assert first.shape == (50, 32) and not np.allclose(first, frames[0])
    # another rate is resampled: 1 s at 24 kHz is still 50 frames
    assert enc([np.resize(wavs[0], 24000)], 24000)[0].shape == (50, 32)


def test_a_policy_conditions_on_ssl_features_end_to_end(tiny_wavlm, tiny_setup, speech, noisy,
                                                        tmp_path):  # fmt: skip
    codec = load_codec(f"world:{tiny_setup / 'codec'}")
    feats = {"n_mels": 20, "content": "ssl", "content_model": str(tiny_wavlm), "content_dim": 32}
    torch.manual_seed(0)
    policy = build_policy("ar", codec, {"dim": 32, "layers": 1, "heads": 2, "features": feats})
    clean = [speech(0)[:11200], speech(1, "en-us+f2")[:14400]]
    wavs = [noisy(c, 5.0, seed=i) for i, c in enumerate(clean)]
    cond = policy.condition(wavs)
    assert cond.features.shape[-1] == 52
    loss = policy.sft_loss(cond, policy.encode_targets(clean))
    loss.backward()
    assert policy.cond_in.weight.grad[:, 20:52].abs().sum() > 0
    policy.eval().save(tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    assert loaded.config.features.content_model == str(tiny_wavlm)
    assert torch.equal(loaded.condition(wavs).features, cond.features)


def test_ssl_settings_fail_clearly(tiny_wavlm, tiny_setup, speech, tmp_path):
    with pytest.raises(ValueError, match="content: ssl needs content_model"):
        FeatureConfig(content="ssl")
    with pytest.raises(ValueError, match="cannot load the content encoder"):
        ContentEncoder(str(tmp_path / "nope"), kind="ssl")
    with pytest.raises(ValueError, match="content_layer 5: .* has layers 0..2"):
        ContentEncoder(str(tiny_wavlm), kind="ssl", layer=5)
    codec = load_codec(f"world:{tiny_setup / 'codec'}")
    feats = {"n_mels": 20, "content": "ssl", "content_model": str(tiny_wavlm)}  # dim 512
    policy = build_policy("ar", codec, {"dim": 32, "layers": 1, "heads": 2, "features": feats})
    with pytest.raises(ValueError, match="32-dim frames but the model was built for content_dim"):
        policy.condition([speech(0)[:16000]])
