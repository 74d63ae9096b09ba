"""Whisper content features of the noisy input: framing, caching, validation and a policy of each
built-in family using them end to end (condition, SFT loss, save / load, sample)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sealign.codecs.base import load_codec
from sealign.models.content import ContentEncoder
from sealign.models.features import FeatureConfig, compute_features, log_mel, normalize
from sealign.models.registry import build_policy, load_policy

torch.set_num_threads(1)


def test_content_needs_a_known_encoder_and_20_ms_frames():
    with pytest.raises(ValueError, match="content must be one of"):
        FeatureConfig(content="hubert")
    with pytest.raises(ValueError, match="codec frame here is 40 ms"):
        FeatureConfig(content="whisper", frames_per_token=4)
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
