"""Masked generative policy: trajectory log-probs, masked likelihoods, training, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import fit_batch
from sealign.cli import main
from sealign.codecs.base import load_codec
from sealign.models.mgm import MGMConfig, MGMPolicy
from sealign.models.policy import Policy, Targets, keep_passes, step_passes
from sealign.models.registry import build_policy, load_policy

torch.set_num_threads(1)
TINY = {"dim": 32, "layers": 2, "heads": 2, "features": {"n_mels": 20}, "decode_steps": 4}


@pytest.fixture(scope="module")
def codec(tiny_setup):
    return load_codec(f"world:{tiny_setup / 'codec'}?layout=mgm")


@pytest.fixture()
def policy(codec):
    torch.manual_seed(0)
    return MGMPolicy(codec, MGMConfig.for_codec(codec, **TINY)).eval()


@pytest.fixture(scope="module")
def waves(speech, noisy):
    clean = [speech(0)[:12800], speech(1, "en-us+f2")[:8000]]
    return clean, [noisy(c, 5.0, seed=i) for i, c in enumerate(clean)]


def test_protocol_and_registry(codec, policy):
    assert isinstance(policy, Policy) and policy.family == "mgm"
    built = build_policy("mgm", codec, dict(TINY))
    assert isinstance(built, MGMPolicy) and built.config.vocab_sizes == [8, 8, 8]


def test_sampled_log_probs_equal_recomputed(policy, waves):
    cond = policy.condition(waves[1])
    gen = torch.Generator().manual_seed(3)
    r = policy.sample(cond, temperature=0.8, generator=gen, top_k=5)
    tokens, commit = r.actions["tokens"], r.actions["commit_step"]
    assert tokens.shape == (2, 3, 40) and r.logp.shape == (2, 120)
    # every valid token is committed exactly once, padding never
    assert (commit[1, :, 25:] == -1).all() and (commit[1, :, :25] >= 0).all()
    assert set(commit[0].unique().tolist()) == {0, 1, 2, 3}
    assert r.mask.sum().item() == 3 * (40 + 25)
    lp, ent = policy.step_log_probs(cond, r)
    torch.testing.assert_close(lp, r.logp, atol=1e-4, rtol=0)
    assert (ent[r.mask.bool()] >= 0).all() and (lp[~r.mask.bool()] == 0).all()
    # recomputation follows the weights and carries gradients
    with torch.no_grad():
        policy.heads[0].weight.add_(0.3 * torch.randn_like(policy.heads[0].weight))
    lp2, _ = policy.step_log_probs(cond, r)
    assert not torch.allclose(lp2, r.logp, atol=1e-3)
    lp2.sum().backward()
    assert policy.heads[0].weight.grad is not None


def test_logit_scale_is_a_learned_inverse_temperature(policy, waves):
    from conftest import check_logit_scale

    check_logit_scale(policy, policy.condition(waves[1]), 0.5, 5)


def test_step_log_probs_skip_iterations_outside_the_mask(policy, waves, monkeypatch):
    # the trainer's step_fraction masks whole iterations: those need no forward pass, and the
    # others' log-probs are unchanged
    cond = policy.condition(waves[1])
    r = policy.sample(cond, temperature=0.8, generator=torch.Generator().manual_seed(3))
    full, _ = policy.step_log_probs(cond, r)
    passes = step_passes(policy, r)
    assert passes.shape == r.mask.shape and set(passes.unique().tolist()) == {-1, 0, 1, 2, 3}
    part = keep_passes(r, passes, 0.5, torch.Generator().manual_seed(0))
    kept = set(passes[part.mask > 0].unique().tolist())
    assert len(kept) == 2 and (part.mask <= r.mask).all()
    calls = []
    forward = policy._forward
    monkeypatch.setattr(policy, "_forward", lambda *a: calls.append(1) or forward(*a))
    lp, _ = policy.step_log_probs(cond, part)
    assert len(calls) == 2
    torch.testing.assert_close(lp, full * part.mask, atol=1e-6, rtol=0)
    assert keep_passes(r, passes, 1.0, torch.Generator()) is r
    # a family without step_passes (AR: one teacher-forced pass) keeps every step
    one = step_passes(object(), r)  # type: ignore[arg-type]
    assert set(one.unique().tolist()) == {-1, 0}
    assert keep_passes(r, one, 0.25, torch.Generator()) is r


def test_sampling_is_deterministic_by_seed(policy, waves):
    cond = policy.condition(waves[1])

    def draw(seed):
        return policy.sample(cond, generator=torch.Generator().manual_seed(seed)).actions["tokens"]

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))
    for bad in (0, -1, 2.5, "4"):  # a run would commit no tokens, or other steps than asked
        with pytest.raises(ValueError, match="steps must be"):
            policy.sample(cond, steps=bad)


def test_masked_log_likelihood_matches_definition_and_ignores_padding(policy, waves):
    clean, noisy = waves
    cond = policy.condition(noisy)
    targets = policy.encode_targets(clean)
    noise = policy.preference_noise(targets, torch.Generator().manual_seed(0))
    mask = noise["mask"]
    assert not mask[1, :, 25:].any() and mask.any()
    ll = policy.preference_log_likelihood(cond, targets, noise)
    # by hand: masked tokens replaced by MASK ids, log-softmax of each head, sum over the mask
    tokens = targets.values
    inp = torch.where(mask, torch.tensor([8, 8, 8]).view(1, 3, 1), tokens)
    states, m = policy._cond(cond)
    logits = policy._forward(states, m, inp)
    by_hand = sum(
        (F.log_softmax(lg, -1).gather(-1, tokens[:, k, :, None])[..., 0] * mask[:, k]).sum(1)
        for k, lg in enumerate(logits)
    )
    torch.testing.assert_close(ll, by_hand, atol=1e-4, rtol=0)
    # the shorter row alone gives the same value as inside the padded batch
    alone = policy.preference_log_likelihood(
        policy.condition([noisy[1]]),
        Targets(targets.values[1:, :, :25], targets.mask[1:, :25]),
        {"mask": mask[1:, :, :25]},
    )
    torch.testing.assert_close(alone, ll[1:], atol=1e-4, rtol=0)


def test_sft_overfits_a_batch_and_sampling_recovers_targets(codec, waves):
    torch.manual_seed(0)
    policy = MGMPolicy(codec, MGMConfig.for_codec(codec, **TINY))
    clean, noisy = waves
    cond, targets = policy.condition(noisy), policy.encode_targets(clean)
    losses = fit_batch(policy, cond, targets, 60, torch.optim.AdamW)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    policy.eval()
    r = policy.sample(cond, temperature=0.1, generator=torch.Generator().manual_seed(0))
    agree = (r.actions["tokens"] == targets.values)[targets.mask.unsqueeze(1).expand(-1, 3, -1)]
    assert agree.float().mean() > 0.5
    wavs = policy.decode(r)
    assert [w.size for w in wavs] == [n.size for n in noisy]


def test_save_load_round_trip(policy, waves, tmp_path):
    policy.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "config.json").read_text())
    assert meta["family"] == "mgm"
    loaded = load_policy(tmp_path / "p")
    assert isinstance(loaded, MGMPolicy)
    cond = policy.condition(waves[1])
    a = policy.sample(cond, generator=torch.Generator().manual_seed(5))
    b = loaded.sample(loaded.condition(waves[1]), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.actions["tokens"], b.actions["tokens"])
    torch.testing.assert_close(a.logp, b.logp)
    # hand-damaged config.json fields are named, not a TypeError / KeyError from deep inside
    for key, value, match in (
        ("config", None, "'config' must be an object"),
        ("codec", {"kind": "world"}, "'codec' must be"),
    ):
        (tmp_path / "p" / "config.json").write_text(json.dumps({**meta, key: value}))
        with pytest.raises(ValueError, match=match):
            load_policy(tmp_path / "p")


def _logged(run, key):
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in recs if key in r}


def test_cli_train_mgm_and_exact_resume(tiny_setup, tmp_path):
    def args(run, steps, *extra):
        return [
            "train",
            "--no-progress",
            "--family",
            "mgm",
            "--codec",
            f"world:{tiny_setup / 'codec'}?layout=mgm",
            "--output",
            str(run),
            "--max-steps",
            str(steps),
            "--threads",
            "1",
            "model.config={dim: 32, layers: 1, heads: 2, features: {n_mels: 20}}",
            f"data.train=[{tiny_setup / 'train.jsonl'}]",
            "data.batch_size=2",
            "data.crop_seconds=0",
            "eval_steps=0",
            "save_steps=3",
            "logging_steps=1",
            "optim.warmup_steps=1",
            "optim.min_lr_ratio=1.0",  # constant LR: a 3-step run then matches the 6-step one
            *extra,
        ]

    assert main(args(tmp_path / "full", 6)) == 0
    assert main(args(tmp_path / "part", 3)) == 0
    assert main([*args(tmp_path / "part", 6), "--resume"]) == 0
    a, b = _logged(tmp_path / "full", "train/loss"), _logged(tmp_path / "part", "train/loss")
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for s in (4, 5, 6):
        assert a[s] == pytest.approx(b[s], rel=1e-6)


def test_lora_adapters_reach_the_masked_decoder(codec, policy, waves, tmp_path):
    """Trajectory log-probs recomputed with adapters equal the sampled ones; saved merged."""
    from sealign.models.lora import LoRAConfig, LoRALinear, apply_lora

    assert apply_lora(policy, LoRAConfig(rank=2)) == 4 * TINY["layers"]
    with torch.no_grad():
        for m in policy.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    cond = policy.condition(waves[1])
    r = policy.sample(cond, temperature=0.8, generator=torch.Generator().manual_seed(3), top_k=5)
    lp, _ = policy.step_log_probs(cond, r)
    torch.testing.assert_close(lp, r.logp, atol=1e-4, rtol=0)
    torch.manual_seed(0)  # the unadapted model, as the fixture builds it
    plain = MGMPolicy(codec, MGMConfig.for_codec(codec, **TINY)).eval()
    assert (plain.step_log_probs(cond, r)[0] - lp).abs().max() > 1e-3
    policy.save(tmp_path / "merged")
    torch.testing.assert_close(load_policy(tmp_path / "merged").step_log_probs(cond, r)[0], lp,
                               atol=1e-5, rtol=0)  # fmt: skip
