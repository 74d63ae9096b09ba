"""The autoregressive codec-token policy (tiny model, tiny WORLD codec) and the policy registry."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from conftest import check_logit_scale, fit_batch
from sealign.codecs.world import WorldCodec, WorldCodecConfig, train_world_codec
from sealign.models.ar import ARConfig, ARPolicy, SamplingTransform, sampling_settings
from sealign.models.features import FeatureConfig, FeatureError, compute_features
from sealign.models.policy import Policy, Rollout, Targets
from sealign.models.registry import build_policy, load_policy

torch.set_num_threads(1)

TINY_CODEC = {"ar_spec_k": 16, "ar_f0_k": 4, "mgm_spec_k": [8, 8], "mgm_f0_k": 8, "kmeans_iters": 6}
TINY_MODEL = {"dim": 32, "layers": 2, "heads": 2, "features": {"n_mels": 20}}


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory, speech):
    out = tmp_path_factory.mktemp("ar_codec")
    wavs = [speech(i, v) for i in range(4) for v in ("en-us+m3", "en-us+f2")]
    train_world_codec(wavs, out, WorldCodecConfig(**TINY_CODEC))
    return out


@pytest.fixture(scope="module")
def codec(codec_dir) -> WorldCodec:
    return WorldCodec.load(codec_dir)


@pytest.fixture(scope="module")
def pair(speech, noisy):
    """Two clean/noisy pairs of different lengths (about 2.7 s and 3.9 s)."""
    clean = [speech(0), speech(1)]
    return clean, [noisy(c, 5.0, seed=i) for i, c in enumerate(clean)]


def make_policy(codec, seed: int = 0, **overrides) -> ARPolicy:
    torch.manual_seed(seed)
    return ARPolicy(codec, ARConfig.for_codec(codec, **{**TINY_MODEL, **overrides})).eval()


def test_protocol_config_and_features(codec, pair):
    policy = make_policy(codec)
    assert isinstance(policy, Policy) and policy.family == "ar" and policy.sample_rate == 16000
    fc = policy.config.features
    assert (fc.hop_length, fc.frames_per_token, fc.n_mels) == (160, 2, 20)
    assert policy.config.vocab_sizes == [64]
    _, noisy = pair
    cond = policy.condition(noisy)
    n_tok = [int(np.ceil(len(w) / 320)) for w in noisy]
    assert cond.features.shape == (2, 2 * max(n_tok), 20)
    assert cond.mask.sum(dim=1).tolist() == [2 * n for n in n_tok]
    assert cond.num_samples == [len(w) for w in noisy]
    assert torch.all(cond.features[0, ~cond.mask[0]] == 0)
    # per-utterance normalization: batching does not change an item's features
    alone = compute_features([noisy[0]], fc)
    torch.testing.assert_close(cond.features[0, : alone.features.shape[1]], alone.features[0])
    valid = cond.features[1][cond.mask[1]]
    assert abs(valid.mean().item()) < 1e-4 and abs(valid.std(unbiased=False).item() - 1) < 1e-3
    # the gain of the input does not matter
    louder = compute_features([noisy[0] * 0.3], fc)
    torch.testing.assert_close(louder.features, alone.features, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 1.0},
        {"temperature": 0.7, "top_k": 5},
        {"temperature": 1.3, "top_p": 0.8},
        {"temperature": 0.8, "top_k": 12, "top_p": 0.9},
    ],
)
def test_sampled_logp_equals_teacher_forced(codec, pair, options):
    policy = make_policy(codec)
    cond = policy.condition(pair[1])
    rollout = policy.sample(cond, generator=torch.Generator().manual_seed(1), **options)
    tokens = rollout.actions["tokens"]
    assert tokens.shape == (2, cond.features.shape[1] // 2) and tokens.dtype == torch.long
    assert torch.equal(rollout.source, torch.arange(2))
    assert rollout.mask.sum(dim=1).tolist() == [int(np.ceil(len(w) / 320)) for w in pair[1]]
    logp, entropy = policy.step_log_probs(cond, rollout)
    assert logp.requires_grad
    torch.testing.assert_close(logp, rollout.logp, atol=1e-4, rtol=0)
    assert torch.all(rollout.logp[rollout.mask == 0] == 0)
    assert torch.all(entropy[rollout.mask == 1] >= 0) and torch.all(entropy[rollout.mask == 0] == 0)
    if options.get("top_k"):  # every stored token came from a top-k set
        assert entropy.max().item() <= np.log(options["top_k"]) + 1e-4
    # GSPO with groups: expanded conditioning, rollout.source maps back to it
    group = policy.sample(cond.select([1, 1, 0]), generator=torch.Generator().manual_seed(2))
    group.source = torch.tensor([1, 1, 0])
    torch.testing.assert_close(policy.step_log_probs(cond, group)[0], group.logp, atol=1e-4, rtol=0)


def test_temperature_changes_the_stored_distribution(codec, pair):
    policy = make_policy(codec)
    cond = policy.condition(pair[1][:1])
    rollout = policy.sample(cond, temperature=0.5, generator=torch.Generator().manual_seed(0))
    at_one = Rollout(
        {"tokens": rollout.actions["tokens"]}, rollout.logp, rollout.mask, rollout.source
    )
    plain, _ = policy.step_log_probs(cond, at_one)  # no settings stored → temperature 1
    assert (plain - rollout.logp).abs().max().item() > 1e-2


@pytest.mark.parametrize("multi", [False, True])
def test_logit_scale_is_a_learned_inverse_temperature(codec, codec_dir, pair, tmp_path, multi):
    """exp(logit_scale) multiplies every logit: sampling at T with logit_scale s is sampling at
    T·exp(-s) without it; sampled log-probs still equal teacher-forced ones; it is saved, and a
    checkpoint written before it existed loads with 0."""
    from safetensors.torch import load_file, save_file

    c = WorldCodec.load(codec_dir, layout="mgm") if multi else codec
    policy = make_policy(c)
    check_logit_scale(policy, policy.condition(pair[1]), 0.6, 12)
    policy.save(tmp_path / "ckpt")
    assert float(load_policy(tmp_path / "ckpt").logit_scale) == pytest.approx(np.log(2.0))
    weights = load_file(tmp_path / "ckpt" / "model.safetensors")
    del weights["logit_scale"]
    save_file(weights, tmp_path / "ckpt" / "model.safetensors")
    assert float(load_policy(tmp_path / "ckpt").logit_scale) == 0.0
    del weights["norm.weight"]  # a weight that must be there still must
    save_file(weights, tmp_path / "ckpt" / "model.safetensors")
    with pytest.raises(ValueError, match="do not fit"):
        load_policy(tmp_path / "ckpt")


def test_scaled_bf16_logits_are_rounded_once():
    """Under bf16 autocast the factor is applied in float32: bf16 × a 0-dim float32 tensor
    would stay bf16 and round the scaled logits a second time."""
    from sealign.models.backbone import LogitScale

    class Head(torch.nn.Module, LogitScale):
        def __init__(self) -> None:
            super().__init__()
            self._init_logit_scale()

    head = Head()
    with torch.no_grad():
        head.logit_scale.fill_(np.log(1.37))
    lg = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)).bfloat16()
    (out,) = head._scale_logits([lg])
    assert out.dtype == torch.float32
    assert torch.equal(out, lg.float() * head.logit_scale.exp())
    assert not torch.equal(out, (lg * head.logit_scale.exp()).float())  # the double rounding


def test_sampling_transform_top_k_fast_path_and_ties():
    logits = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0, 0.0], [0.5, 4.0, 1.0, 3.0, 2.0, 0.0]])
    settings = sampling_settings(2, 0.5, 2, 1.0)
    warp = SamplingTransform(settings, 6, torch.device("cpu"))
    full, keep = warp(logits)
    # row 0: the tie at the 2nd value keeps all three 2.0 logits (falls back to the full path)
    assert keep.sum(dim=1).tolist() == [4, 2]
    for u in (0.0, 0.3, 0.7, 0.999):
        tok, lp = warp.sample(logits, torch.full((2,), u))
        assert bool(keep[torch.arange(2), tok].all())
        torch.testing.assert_close(lp, full[torch.arange(2), tok])
    one = SamplingTransform(settings[1:], 6, torch.device("cpu"))  # no tie: the top-k path
    tok, lp = one.sample(logits[1:], torch.tensor([0.9]))
    torch.testing.assert_close(lp, one(logits[1:])[0][0, tok])
    # forcing keeps a token outside the set with a finite log-prob
    forced, _ = warp(logits, force=torch.tensor([5, 0]))
    assert torch.isfinite(forced[0, 5]) and torch.isfinite(forced[1, 0])


@pytest.mark.parametrize("encoder_layers", [0, 1])
def test_kv_cache_matches_no_cache_and_seed_determinism(codec, pair, encoder_layers):
    policy = make_policy(codec, encoder_layers=encoder_layers)
    cond = policy.condition(pair[1])
    opts = {"temperature": 0.9, "top_k": 20}
    a = policy.sample(cond, generator=torch.Generator().manual_seed(3), **opts)
    b = policy.sample(cond, generator=torch.Generator().manual_seed(3), use_cache=False, **opts)
    c = policy.sample(cond, generator=torch.Generator().manual_seed(3), **opts)
    d = policy.sample(cond, generator=torch.Generator().manual_seed(4), **opts)
    assert torch.equal(a.actions["tokens"], b.actions["tokens"])
    torch.testing.assert_close(a.logp, b.logp, atol=1e-5, rtol=0)
    assert torch.equal(a.actions["tokens"], c.actions["tokens"]) and torch.equal(a.logp, c.logp)
    assert not torch.equal(a.actions["tokens"], d.actions["tokens"])
    # sampled log-probs equal teacher-forced ones with the noisy-feature encoder too
    torch.testing.assert_close(policy.step_log_probs(cond, a)[0], a.logp, atol=1e-4, rtol=0)


@pytest.mark.parametrize("encoder_layers", [0, 1])
def test_padding_rows_do_not_change_valid_rows(codec, pair, encoder_layers):
    policy = make_policy(codec, encoder_layers=encoder_layers)
    cond = policy.condition(pair[1])
    rollout = policy.sample(cond, generator=torch.Generator().manual_seed(0), top_p=0.95)
    logp, ent = policy.step_log_probs(cond, rollout)
    short = int(rollout.mask[0].sum())
    assert short < rollout.mask.shape[1]
    alone_cond = policy.condition(pair[1][:1])
    alone = rollout.select([0])
    alone = Rollout(
        {k: (v[:, :short] if k == "tokens" else v) for k, v in alone.actions.items()},
        alone.logp[:, :short],
        alone.mask[:, :short],
        alone.source,
    )
    logp1, ent1 = policy.step_log_probs(alone_cond, alone)
    torch.testing.assert_close(logp1[0], logp[0, :short], atol=1e-5, rtol=0)
    torch.testing.assert_close(ent1[0], ent[0, :short], atol=1e-5, rtol=0)
    # and the other way round: whatever sits in the padded tail is ignored
    noisy_tail = Rollout(dict(rollout.actions), rollout.logp, rollout.mask, rollout.source)
    noisy_tail.actions["tokens"] = rollout.actions["tokens"].clone()
    noisy_tail.actions["tokens"][0, short:] = 7
    torch.testing.assert_close(policy.step_log_probs(cond, noisy_tail)[0], logp)


@pytest.mark.parametrize("encoder_layers", [0, 1])
def test_encoder_gives_future_noisy_context(codec, pair, encoder_layers):
    """Without the encoder, frame 0 sees the noisy input only up to ``lookahead`` frames ahead;
    with it, the whole utterance."""
    policy = make_policy(codec, encoder_layers=encoder_layers)
    cond = policy.condition(pair[1][:1])
    rollout = policy.sample(cond, generator=torch.Generator().manual_seed(0))
    late = cond.select([0])
    late.features = late.features.clone()
    late.features[0, -40:] += 1.0  # the last 20 codec frames
    before = policy.step_log_probs(cond, rollout)[0][0, :5]
    after = policy.step_log_probs(late, rollout)[0][0, :5]
    assert torch.equal(before, after) != bool(encoder_layers)


def test_sft_overfits_one_batch(codec, pair):
    clean, noisy = pair
    policy = make_policy(codec, dim=48, label_smoothing=0.05, dropout=0.1).train()
    cond, targets = policy.condition(noisy), policy.encode_targets(clean)
    assert targets.values.shape == (2, 1, cond.features.shape[1] // 2)
    losses = fit_batch(policy, cond, targets, 30)
    assert losses[0] == pytest.approx(np.log(64), abs=0.3)
    assert losses[-1] < 0.6 * losses[0]
    policy.eval()
    argmax = policy.teacher_forced_argmax(cond, targets)
    assert torch.equal(argmax.mask, targets.mask) and argmax.values.shape == targets.values.shape
    hits = (argmax.values == targets.values).all(dim=1)[targets.mask].float().mean().item()
    assert hits > 0.4  # an untrained model would hit 1 in 64
    with pytest.raises(ValueError, match="do not match"):
        policy.sft_loss(cond, policy.encode_targets([clean[0], clean[0]]))


@pytest.mark.parametrize("sequential", [False, True])
def test_scheduled_sampling_mixes_own_samples_into_the_history(codec, pair, sequential):
    clean, noisy = pair
    policy = make_policy(codec, sequential_codebooks=sequential, scheduled_sampling=0.5)
    cond, targets = policy.condition(noisy), policy.encode_targets(clean)
    tokens = policy._tokens3(targets.values)
    torch.manual_seed(3)
    mixed = policy._scheduled_inputs(cond, tokens)
    changed = (mixed != tokens).any(dim=1)[targets.mask]
    # about half of the frames are resampled; a resampled frame may redraw its own token
    assert 0.1 < changed.float().mean().item() < 0.6
    # the training loss reads the mixed history and scores the clean targets
    torch.manual_seed(3)
    expected = [
        torch.nn.functional.cross_entropy(lg[targets.mask], tokens[:, k][targets.mask])
        for k, lg in enumerate(policy._teacher_forced(cond, mixed, targets=tokens)[0])
    ]
    policy.train()
    torch.manual_seed(3)
    loss = policy.sft_loss(cond, targets)
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)
    loss.backward()  # gradients flow through the second pass only
    # in eval mode (validation) the clean history is used
    plain = make_policy(codec, sequential_codebooks=sequential)
    assert policy.eval().sft_loss(cond, targets).item() == pytest.approx(
        plain.sft_loss(cond, targets).item(), abs=1e-6
    )
    with pytest.raises(ValueError, match="scheduled_sampling"):
        make_policy(codec, scheduled_sampling=1.5)


def test_preference_log_likelihood_is_masked_sum(codec, pair):
    policy = make_policy(codec)
    cond = policy.condition(pair[1])
    rollout = policy.sample(cond, generator=torch.Generator().manual_seed(5))
    targets = policy.targets_from_rollout(rollout)
    assert policy.preference_noise(targets) == {}
    ll = policy.preference_log_likelihood(cond, targets, {})
    logp, _ = policy.step_log_probs(cond, rollout)
    torch.testing.assert_close(ll, (logp * rollout.mask).sum(dim=1), atol=1e-4, rtol=1e-5)
    assert ll.shape == (2,) and ll.requires_grad


@pytest.mark.parametrize("sequential", [False, True])
def test_multi_codebook_layout(codec_dir, pair, sequential):
    mgm = WorldCodec.load(codec_dir, layout="mgm")
    policy = make_policy(mgm, tie_embeddings=False, sequential_codebooks=sequential)
    assert policy.config.vocab_sizes == [8, 8, 8]
    clean, noisy = pair
    cond = policy.condition(noisy)
    rollout = policy.sample(cond, 0.9, torch.Generator().manual_seed(0), top_k=4)
    assert rollout.actions["tokens"].shape == (2, 3, cond.features.shape[1] // 2)
    torch.testing.assert_close(
        policy.step_log_probs(cond, rollout)[0], rollout.logp, atol=1e-4, rtol=0
    )
    no_cache = policy.sample(cond, 0.9, torch.Generator().manual_seed(0), top_k=4, use_cache=False)
    assert torch.equal(no_cache.actions["tokens"], rollout.actions["tokens"])
    # codebook 0 never depends on the frame's later tokens; codebook 2 does only if sequential
    changed = Rollout(dict(rollout.actions), rollout.logp, rollout.mask, rollout.source)
    changed.actions["tokens"] = rollout.actions["tokens"].clone()
    changed.actions["tokens"][:, 1, 0] = (changed.actions["tokens"][:, 1, 0] + 1) % 8
    logits_a, _ = policy._teacher_forced(cond, rollout.actions["tokens"])
    logits_b, _ = policy._teacher_forced(cond, changed.actions["tokens"])
    assert torch.equal(logits_a[0][:, 0], logits_b[0][:, 0])
    assert torch.equal(logits_a[2][:, 0], logits_b[2][:, 0]) != sequential
    targets = policy.encode_targets(clean)
    assert targets.values.shape[1] == 3 and policy.sft_loss(cond, targets).item() > 0
    wavs = policy.decode(rollout)
    assert [len(w) for w in wavs] == [len(w) for w in noisy]


@pytest.mark.parametrize(
    "options", [{"top_k": 3}, {"top_k": 6}, {"top_p": 0.9}, {"temperature": 0.7}]
)
def test_fast_decoding_with_norm_gains_and_unequal_vocabularies(
    tmp_path_factory, speech, pair, options
):
    """Decoding folds the RMSNorm gains into the matrices and draws all codebooks at once from
    logits padded to the largest vocabulary (one by one when a top-k filters only some); it
    must agree with the unfused teacher-forced path and with decoding without a cache."""
    out = tmp_path_factory.mktemp("ar_codec_unequal")
    wavs = [speech(i, v) for i in range(4) for v in ("en-us+m3", "en-us+f2")]
    train_world_codec(wavs, out, WorldCodecConfig(**{**TINY_CODEC, "mgm_f0_k": 4}))
    policy = make_policy(WorldCodec.load(out, layout="mgm"), tie_embeddings=False)
    assert policy.config.vocab_sizes == [8, 8, 4]
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, w in policy.named_parameters():
            if "norm" in name:
                w.mul_(0.5 + torch.rand(w.shape, generator=gen))
    cond = policy.condition(pair[1])
    settings = sampling_settings(2, options.get("temperature", 1.0), options.get("top_k", 0),
                                 options.get("top_p", 1.0))  # fmt: skip
    assert (policy._joint_transform(settings) is None) == (options.get("top_k") == 6)
    a = policy.sample(cond, generator=torch.Generator().manual_seed(1), **options)
    b = policy.sample(cond, generator=torch.Generator().manual_seed(1), use_cache=False, **options)
    assert torch.equal(a.actions["tokens"], b.actions["tokens"])
    torch.testing.assert_close(a.logp, b.logp, atol=1e-5, rtol=0)
    assert int(a.actions["tokens"][:, 2].max()) < 4  # never a padding column
    torch.testing.assert_close(policy.step_log_probs(cond, a)[0], a.logp, atol=1e-4, rtol=0)


def test_decode_trims_to_input_length(codec, pair):
    clean, noisy = pair
    policy = make_policy(codec)
    cond = policy.condition(noisy)
    wavs = policy.decode(policy.sample(cond, generator=torch.Generator().manual_seed(0)))
    assert [len(w) for w in wavs] == [len(w) for w in noisy]
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in wavs)
    targets = policy.encode_targets(clean)
    back = policy.decode_targets(targets)
    assert [len(w) for w in back] == [int(np.ceil(len(w) / 320)) * 320 for w in clean]
    assert targets.values.max().item() < 64 and isinstance(targets, Targets)


def test_save_load_round_trip(codec, codec_dir, pair, tmp_path):
    policy = make_policy(codec)
    cond = policy.condition(pair[1])
    rollout = policy.sample(cond, 0.8, torch.Generator().manual_seed(0), top_k=10)
    policy.save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["family"] == "ar" and meta["codec"]["kind"] == "world"
    assert (tmp_path / "ckpt" / "codec" / "codec.safetensors").is_file()
    mask = os.umask(0)
    os.umask(mask)
    for name in ("model.safetensors", "codec/codec.safetensors", "config.json"):
        # safetensors writes owner-only files; a checkpoint is readable like any other file
        assert stat.S_IMODE((tmp_path / "ckpt" / name).stat().st_mode) == 0o666 & ~mask, name
    for loaded in (
        ARPolicy.load(tmp_path / "ckpt"),
        load_policy(tmp_path / "ckpt" / "config.json"),
    ):
        assert isinstance(loaded, ARPolicy) and loaded.config == policy.config
        assert torch.equal(
            loaded.step_log_probs(cond, rollout)[0], policy.step_log_probs(cond, rollout)[0]
        )
        again = loaded.sample(cond, 0.8, torch.Generator().manual_seed(0), top_k=10)
        assert torch.equal(again.actions["tokens"], rollout.actions["tokens"])
    # an external codec is referenced by its spec instead of copied
    ref = ARPolicy(codec, policy.config, codec_spec=f"world:{codec_dir}")
    ref.load_state_dict(policy.state_dict())
    ref.save(tmp_path / "ref")
    assert not (tmp_path / "ref" / "codec").exists()
    torch.testing.assert_close(
        load_policy(tmp_path / "ref").step_log_probs(cond, rollout)[0],
        rollout.logp,
        atol=1e-4,
        rtol=0,
    )


def test_registry(codec, tmp_path):
    policy = build_policy("ar", codec, {"dim": 16, "layers": 1, "heads": 2, "lookahead": 0})
    assert isinstance(policy, ARPolicy) and policy.cond_conv is None
    with pytest.raises(ValueError, match="unknown model family 'gan'"):
        build_policy("gan", codec, {})
    (tmp_path / "fm").mkdir()
    (tmp_path / "fm" / "config.json").write_text(json.dumps({"family": "fm"}))
    with pytest.raises(FileNotFoundError, match="not a policy checkpoint"):
        load_policy(tmp_path / "fm")  # a config without weights
    with pytest.raises(FileNotFoundError, match="not a policy checkpoint"):
        load_policy(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown AR config keys: widht"):
        build_policy("ar", codec, {"widht": 3})
    # a checkpoint may name its class (custom policies, docs/custom_models.md)
    policy.save(tmp_path / "custom")
    meta = json.loads((tmp_path / "custom" / "config.json").read_text())
    meta["class"] = "sealign.models.ar:ARPolicy"
    (tmp_path / "custom" / "config.json").write_text(json.dumps(meta))
    assert isinstance(load_policy(tmp_path / "custom"), ARPolicy)
    meta["class"] = "sealign.models.ar:ARConfig"
    (tmp_path / "custom" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="must have family = 'ar'"):
        load_policy(tmp_path / "custom")
    # a subclass of the built-in family names itself when it saves, and loads as itself
    sub = SubclassedAR(policy.codec, policy.config)
    sub.save(tmp_path / "sub")
    meta = json.loads((tmp_path / "sub" / "config.json").read_text())
    assert meta["class"] == f"{__name__}:SubclassedAR"
    assert type(load_policy(tmp_path / "sub")) is SubclassedAR
    policy.save(tmp_path / "plain")  # the built-in class itself is not named
    assert "class" not in json.loads((tmp_path / "plain" / "config.json").read_text())


class SubclassedAR(ARPolicy):
    """A user's variant of the built-in AR policy (module level, so that it can be imported)."""


def test_bad_input_is_a_clear_error(codec, speech):
    policy = make_policy(codec)
    with pytest.raises(FeatureError, match="noisy item 0: audio is all zeros"):
        policy.condition([np.zeros(16000, np.float32)])
    with pytest.raises(FeatureError, match="noisy item 1: audio is silent"):
        policy.condition([speech(0), np.full(16000, 1e-6, np.float32)])
    with pytest.raises(FeatureError, match="too short"):
        policy.condition([speech(0)[:800]])
    with pytest.raises(FeatureError, match="mono"):
        policy.condition([np.stack([speech(0), speech(0)])])
    with pytest.raises(FeatureError, match="NaN"):
        policy.condition([np.full(16000, np.nan, np.float32)])
    with pytest.raises(FeatureError, match="expected float samples in .-1, 1., got int16"):
        policy.condition([(speech(0) * 32767).astype(np.int16)])
    with pytest.raises(FeatureError, match="max_frames"):
        make_policy(codec, max_frames=50).condition([speech(0)])
    cond = policy.condition([speech(0)])
    with pytest.raises(ValueError, match="temperature"):
        policy.sample(cond, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        policy.sample(cond, top_p=0.0)
    other = FeatureConfig(n_mels=40)
    with pytest.raises(FeatureError, match="does not fit this model"):
        policy.sample(compute_features([speech(0)], other))
    with pytest.raises(ValueError, match="do not match the codec"):
        ARPolicy(codec, ARConfig(vocab_sizes=[128], features=FeatureConfig()))
