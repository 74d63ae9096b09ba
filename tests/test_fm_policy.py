"""The flow-matching policy (tiny model over the tiny WORLD codec of ``tiny_setup``), its SFT run
through the CLI with exact resume, and the mel-spectrogram vocoder codec adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import fit_batch
from sealign.cli import main
from sealign.codecs.base import CodecError, CodecUnavailable, LatentCodec, load_codec
from sealign.models import registry
from sealign.models.fm import FMConfig, FMPolicy
from sealign.models.policy import Policy, Rollout, keep_passes, step_passes
from sealign.models.registry import build_policy, load_policy
from sealign.train.checkpoint import latest_checkpoint, policy_dir

torch.set_num_threads(1)

TINY_FM = {
    "dim": 32,
    "layers": 2,
    "heads": 2,
    "features": {"n_mels": 20},
    "ode_steps": 4,
    "sde_steps": 4,
}


@pytest.fixture(scope="module")
def codec(tiny_setup):
    return load_codec(f"world:{tiny_setup / 'codec'}")


@pytest.fixture(scope="module")
def pair(speech, noisy):
    """Two clean/noisy pairs of different lengths (0.7 s and 1.1 s), the shorter first."""
    clean = [speech(0)[:11200], speech(1, "en-us+f2")[:17600]]
    return clean, [noisy(c, 5.0, seed=i) for i, c in enumerate(clean)]


def make_policy(codec, seed: int = 0, **overrides) -> FMPolicy:
    torch.manual_seed(seed)
    return FMPolicy(codec, FMConfig.for_codec(codec, **{**TINY_FM, **overrides})).eval()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_protocol_config_and_targets(codec, pair):
    clean, noisy = pair
    policy = make_policy(codec)
    assert isinstance(policy, Policy) and isinstance(codec, LatentCodec)
    assert policy.family == "fm" and policy.sample_rate == 16000
    assert policy.config.latent_dim == codec.latent_dim == 68
    assert policy.rl_sample_options() == {"method": "sde"}
    cond = policy.condition(noisy)
    targets = policy.encode_targets(clean)
    n_tok = [int(np.ceil(len(w) / 320)) for w in clean]
    assert targets.values.shape == (2, max(n_tok), 68) and targets.values.dtype == torch.float32
    assert targets.mask.sum(dim=1).tolist() == n_tok
    assert cond.features.shape[1] == 2 * max(n_tok)
    assert torch.all(targets.values[0, n_tok[0] :] == 0)
    lat = codec.encode_latent(clean[1])
    assert lat.shape[0] == 68 and abs(lat.shape[1] - n_tok[1]) <= 1
    m = min(lat.shape[1], n_tok[1])
    torch.testing.assert_close(targets.values[1, :m], torch.from_numpy(lat[:, :m].T))
    back = policy.decode_targets(targets)
    assert [len(w) for w in back] == [n * 320 for n in n_tok]
    with pytest.raises(ValueError, match="unknown FM config keys: widht"):
        FMConfig.for_codec(codec, widht=3)
    with pytest.raises(ValueError, match="time_sampling"):
        FMConfig.for_codec(codec, time_sampling="beta")
    with pytest.raises(ValueError, match="no continuous latents"):
        FMConfig.for_codec(object())
    with pytest.raises(ValueError, match="latent_dim 5 does not match"):
        FMPolicy(codec, FMConfig(**{**policy.config.to_dict(), "latent_dim": 5}))


def _expected_step(policy, cond, r, k):
    """Mean and std of SDE step ``k`` computed here from a separate velocity call."""
    x = r.actions["states"][:, k]
    s, s_next = r.actions["times"][:, k], r.actions["times"][:, k + 1]
    with torch.no_grad():
        v = policy.velocity(cond, x, s).double()
    x, s, s_next = x.double(), s.double(), s_next.double()
    a = r.actions["sde_a"].double()
    s_t = torch.maximum(s, r.actions["times"][:, 1].double())  # the clamp at the noise end
    g2 = a**2 * (1 - s_t) / s_t
    dt = s_next - s
    drift = v - (g2 / (2 * (1 - s)))[:, None, None] * (x - s[:, None, None] * v)
    return x + drift * dt[:, None, None], (g2 * dt).sqrt()


def test_sde_step_log_prob_is_the_gaussian_density(codec, pair):
    policy = make_policy(codec)
    cond = policy.condition(pair[1])
    r = policy.sample(cond, generator=gen(0), method="sde", sde_a=0.8)
    n_t = cond.features.shape[1] // 2
    assert r.actions["states"].shape == (2, 5, n_t, 68)
    assert r.actions["times"].shape == (2, 5) and r.logp.shape == (2, 4)
    assert r.logp.dtype == torch.float64 and torch.equal(r.mask, torch.ones(2, 4))
    assert r.actions["num_samples"].tolist() == [len(w) for w in pair[1]]
    assert torch.allclose(r.actions["sde_a"], torch.tensor(0.8))
    fm = r.actions["frame_mask"]
    for k in range(4):
        mean, std = _expected_step(policy, cond, r, k)
        lp = torch.distributions.Normal(mean, std[:, None, None]).log_prob(
            r.actions["states"][:, k + 1].double()
        )
        expected = (lp.sum(dim=-1) * fm).sum(dim=-1) / (fm.sum(dim=-1) * 68)  # per element
        torch.testing.assert_close(r.logp[:, k], expected, atol=1e-6, rtol=0)
    # all steps are stochastic and finite, including the first (s = 0, σ clamped)
    assert torch.isfinite(r.logp).all()
    assert torch.all(r.actions["states"][~fm[:, None].expand(-1, 5, -1)] == 0)


def test_noisy_prior_starts_at_the_input_latents(codec, pair):
    policy = make_policy(codec, prior="noisy", prior_std=0.3)
    cond = policy.condition(pair[1])
    mu = cond.extra["prior"]
    torch.testing.assert_close(mu, policy.encode_targets(pair[1]).values)
    fm = cond.select([0, 1]).extra["prior"].abs().sum(dim=-1) > 0
    assert torch.equal(fm, policy._cond_states(cond)[1])  # latents on valid frames only
    ode = policy.sample(cond, temperature=1e-6, generator=gen(0))
    torch.testing.assert_close(ode.actions["states"][:, 0], mu, atol=1e-5, rtol=0)
    sde = policy.sample(cond.select([1, 0, 1]), generator=gen(1), method="sde")
    sde.source = torch.tensor([1, 0, 1])
    logp, _ = policy.step_log_probs(cond, sde)
    torch.testing.assert_close(logp, sde.logp, atol=1e-4, rtol=0)
    targets = policy.encode_targets(pair[0])
    assert policy.sft_loss(cond, targets).item() > 0
    with pytest.raises(ValueError, match="prior='noisy'"):
        policy.sample(make_policy(codec).condition(pair[1]))
    with pytest.raises(ValueError, match="prior"):
        FMConfig.for_codec(codec, prior="uniform")


@pytest.mark.parametrize(("prior", "sigma", "steps"), [("gaussian", 1.0, 40), ("noisy", 0.4, 160)])
def test_sde_keeps_the_marginals_of_the_flow(codec, pair, monkeypatch, prior, sigma, steps):
    """With the exact velocity of a point target ``c`` (``v = (c − x)/(1 − s)``) the flow's
    marginal at ``s`` is ``N((1 − s)·μ + s·c, ((1 − s)·σ)²)``; the SDE must keep it, whatever
    the prior's mean ``μ`` and scale ``σ`` (a smaller σ needs more steps for the same
    Euler–Maruyama error)."""
    policy = make_policy(codec, prior=prior, prior_std=sigma, sde_steps=steps)
    cond = policy.condition(pair[1])
    c = 1.5

    def exact(states, m, x, t, dropout=0.0):
        return (c - x) / (1.0 - t)[:, None, None] * m.unsqueeze(-1)

    monkeypatch.setattr(policy, "_velocity", exact)
    r = policy.sample(cond, generator=gen(2), method="sde", sde_a=0.7)
    fm = r.actions["frame_mask"]
    mu = cond.extra.get("prior", torch.zeros_like(r.actions["states"][:, 0]))
    for k in (steps // 4, steps // 2, 3 * steps // 4):
        s = k / steps
        z = (r.actions["states"][:, k] - ((1 - s) * mu + s * c)) / ((1 - s) * sigma)
        z = z[fm]
        assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1.0) < 0.05, (k, z.std())


def test_reconfigure_keeps_weights_and_reference_follows(codec, pair, tmp_path):
    from sealign.models.persist import checkpoint_sampling
    from sealign.models.registry import reconfigure
    from sealign.train.checkpoint import TrainerState, save_checkpoint
    from sealign.train.sft import ModelConfig, init_policy, reference_config

    base = make_policy(codec)
    base.save(tmp_path / "base")
    (tmp_path / "base" / "sampling.json").write_text('{"temperature": 0.1}')
    model = ModelConfig(init_from=str(tmp_path / "base"), config={"prior": "noisy"})
    tuned = init_policy(model)
    assert tuned.config.prior == "noisy" and tuned.config.dim == base.config.dim
    for (name, a), b in zip(base.state_dict().items(), tuned.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # the recommended sampling settings travel into every checkpoint trained from the base
    assert tuned.sampling_defaults == {"temperature": 0.1}
    opt = torch.optim.AdamW(tuned.parameters())
    ckpt = save_checkpoint(tmp_path / "run", tuned, opt, None, TrainerState(step=1))
    assert checkpoint_sampling(ckpt / "policy") == {"temperature": 0.1}
    assert "prior" in tuned.condition(pair[1]).extra
    # the frozen reference of post-training from the same checkpoint gets the same overrides
    assert init_policy(reference_config(model, model.init_from)).config.prior == "noisy"
    assert reference_config(model, "elsewhere").config == {}
    with pytest.raises(ValueError, match="dim"):
        reconfigure(base, {"dim": 48})
    with pytest.raises(ValueError, match="not both"):
        ModelConfig(init_from=str(tmp_path / "base"), codec="world:x").check()


def test_sde_mean_last_lands_on_the_mean_and_masks_that_step(codec, pair):
    policy = make_policy(codec)
    cond = policy.condition(pair[1])
    noisy = policy.sample(cond, generator=gen(3), method="sde")
    r = policy.sample(cond, generator=gen(3), method="sde", sde_mean_last=True)
    assert r.mask[:, :-1].eq(1).all() and r.mask[:, -1].eq(0).all() and r.logp[:, -1].eq(0).all()
    # the same draws up to the last step, which has no noise
    torch.testing.assert_close(r.actions["states"][:, :-1], noisy.actions["states"][:, :-1])
    mean, _ = _expected_step(policy, cond, r, 3)
    fm = r.actions["frame_mask"]
    torch.testing.assert_close(r.actions["states"][:, -1][fm], mean.float()[fm], atol=1e-5, rtol=0)
    torch.testing.assert_close(r.logp[:, :-1], noisy.logp[:, :-1])
    logp, _ = policy.step_log_probs(cond, r)
    torch.testing.assert_close(logp, r.logp, atol=1e-4, rtol=0)  # masked step is 0 in both


def test_one_sde_step_is_refused(codec, pair):
    # its only step starts at s_min = 1, where the SDE has no noise and no log-density
    policy = make_policy(codec)
    cond = policy.condition(pair[1])
    with pytest.raises(ValueError, match="steps must be ≥ 2"):
        policy.sample(cond, method="sde", steps=1)
    assert policy.sample(cond, method="ode", steps=1).actions["states"].shape[1] == 2
    with pytest.raises(ValueError, match="sde_steps ≥ 2"):
        FMConfig(latent_dim=4, sde_steps=1)


def test_step_log_probs_recompute_perturb_and_entropy(codec, pair):
    policy = make_policy(codec)
    cond = policy.condition(pair[1])
    r = policy.sample(cond, generator=gen(1), method="sde")
    logp, ent = policy.step_log_probs(cond, r)
    assert logp.shape == ent.shape == (2, 4) and logp.requires_grad
    torch.testing.assert_close(logp, r.logp, atol=1e-4, rtol=0)
    fm = r.actions["frame_mask"].double()
    for k in range(4):
        _, std = _expected_step(policy, cond, r, k)
        assert fm.sum() > 0  # entropy is per element with the default logp_reduction="mean"
        torch.testing.assert_close(ent[:, k], 0.5 * np.log(2 * np.pi * np.e) + std.log())
    logp.sum().backward()
    assert policy.head.weight.grad is not None and policy.head.weight.grad.abs().sum() > 0
    with torch.no_grad():
        policy.head.weight.add_(0.05 * torch.randn_like(policy.head.weight))
    changed, _ = policy.step_log_probs(cond, r)
    assert (changed - r.logp).abs().min() > 1e-3
    # the deterministic sampler has no step log-probs
    ode = policy.sample(cond, generator=gen(1))
    assert torch.all(ode.mask == 0) and torch.all(ode.logp == 0)
    with pytest.raises(ValueError, match="method='sde'"):
        policy.step_log_probs(cond, ode)


def test_step_log_probs_leave_out_steps_masked_in_every_row(codec, pair, monkeypatch):
    policy = make_policy(codec)
    cond = policy.condition(pair[1])
    r = policy.sample(cond, generator=gen(1), method="sde")
    full, full_ent = policy.step_log_probs(cond, r)
    passes = step_passes(policy, r)
    assert passes.tolist() == [[0, 1, 2, 3]] * 2
    part = keep_passes(r, passes, 0.5, gen(0))
    kept = part.mask[0] > 0
    assert int(kept.sum()) == 2 and torch.equal(part.mask, kept.expand(2, 4).to(part.mask))
    rows = []
    velocity = policy._guided_velocity
    monkeypatch.setattr(
        policy, "_guided_velocity", lambda *a: rows.append(len(a[3])) or velocity(*a)
    )
    lp, ent = policy.step_log_probs(cond, part)
    assert rows == [2 * 2]  # two inputs x the two kept steps, in one batch
    torch.testing.assert_close(lp, full * part.mask, atol=1e-9, rtol=0)
    torch.testing.assert_close(ent, full_ent * part.mask)


def test_seed_determinism_and_default_ode(codec, pair):
    policy = make_policy(codec)
    cond = policy.condition(pair[1])
    a = policy.sample(cond, generator=gen(3), method="sde")
    b = policy.sample(cond, generator=gen(3), method="sde")
    c = policy.sample(cond, generator=gen(4), method="sde")
    assert torch.equal(a.actions["states"], b.actions["states"]) and torch.equal(a.logp, b.logp)
    assert not torch.equal(a.actions["states"], c.actions["states"])
    # a plain call (what enhance / eval do) is the ODE; token options are ignored
    o1 = policy.sample(cond, temperature=1.0, generator=gen(3), top_k=5, top_p=0.9)
    o2 = policy.sample(cond, temperature=1.0, generator=gen(3), method="ode")
    assert torch.equal(o1.actions["states"], o2.actions["states"])
    assert o1.actions["states"].shape[1] == 5 and torch.all(o1.actions["sde_a"] == 0)
    # the ODE's only randomness is the initial noise, which the temperature scales
    assert torch.equal(o1.actions["states"][:, 0], a.actions["states"][:, 0])
    cold = policy.sample(cond, temperature=0.5, generator=gen(3), steps=2)
    torch.testing.assert_close(cold.actions["states"][:, 0], 0.5 * o1.actions["states"][:, 0])
    assert cold.actions["states"].shape[1] == 3
    wavs = policy.decode(o1)
    assert [len(w) for w in wavs] == [len(w) for w in pair[1]]
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in wavs)
    with pytest.raises(ValueError, match="method must be one of"):
        policy.sample(cond, method="dpm")
    with pytest.raises(ValueError, match="temperature"):
        policy.sample(cond, temperature=0.0)


def test_padding_does_not_change_valid_rows(codec, pair):
    policy = make_policy(codec)
    cond = policy.condition(pair[1])
    r = policy.sample(cond, generator=gen(2), method="sde")
    logp, ent = policy.step_log_probs(cond, r)
    short = int(r.actions["frame_mask"][0].sum())
    assert short < r.actions["frame_mask"].shape[1] == int(r.actions["frame_mask"][1].sum())
    alone_cond = policy.condition(pair[1][:1])
    one = r.select([0])
    acts = dict(one.actions)
    acts["states"] = acts["states"][:, :, :short]
    acts["frame_mask"] = acts["frame_mask"][:, :short]
    alone = Rollout(acts, one.logp, one.mask, one.source)
    logp1, ent1 = policy.step_log_probs(alone_cond, alone)
    torch.testing.assert_close(logp1[0], logp[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(ent1[0], ent[0])
    # velocities agree on valid frames too
    x, t = r.actions["states"][:, 1], r.actions["times"][:, 1]
    with torch.no_grad():
        v = policy.velocity(cond, x, t)
        v1 = policy.velocity(alone_cond, x[:1, :short], t[:1])
    torch.testing.assert_close(v1[0], v[0, :short], atol=1e-5, rtol=0)
    assert torch.all(v[0, short:] == 0)
    # whatever sits in the padded tail is ignored
    tail = Rollout(dict(r.actions), r.logp, r.mask, r.source)
    tail.actions["states"] = r.actions["states"].clone()
    tail.actions["states"][0, :, short:] = 3.0
    torch.testing.assert_close(policy.step_log_probs(cond, tail)[0], logp, atol=1e-6, rtol=0)


def test_preference_log_likelihood_is_minus_flow_error(codec, pair):
    clean, noisy = pair
    policy = make_policy(codec)
    cond, targets = policy.condition(noisy), policy.encode_targets(clean)
    noise = policy.preference_noise(targets, gen(7))
    assert noise["t"].shape == (2,) and noise["noise"].shape == targets.values.shape
    assert torch.all((noise["t"] > 0) & (noise["t"] < 1))
    assert torch.all(noise["noise"][~targets.mask] == 0)
    again = policy.preference_noise(targets, gen(7))
    assert all(torch.equal(noise[k], again[k]) for k in noise)
    ll = policy.preference_log_likelihood(cond, targets, noise)
    assert ll.shape == (2,) and ll.requires_grad and torch.all(ll < 0)
    t, x0, x1 = noise["t"][:, None, None], noise["noise"], targets.values
    with torch.no_grad():
        v = policy.velocity(cond, (1 - t) * x0 + t * x1, noise["t"])
    err = ((v - (x1 - x0)) ** 2).sum(dim=-1) * targets.mask
    torch.testing.assert_close(ll.detach(), -err.sum(dim=1), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(policy.preference_log_likelihood(cond, targets, noise), ll)
    # the model's own samples as targets (DPO winners / losers)
    own = policy.targets_from_rollout(policy.sample(cond, generator=gen(0)))
    assert own.values.shape == targets.values.shape and torch.equal(own.mask, targets.mask)
    assert torch.isfinite(policy.preference_log_likelihood(cond, own, noise)).all()
    logit = make_policy(codec, time_sampling="logit_normal")
    assert logit.preference_noise(targets, gen(7))["t"].shape == (2,)


def test_sft_loss_decreases_on_an_overfit_batch(codec, pair):
    clean, noisy = pair
    policy = make_policy(codec, dim=48, dropout=0.1).train()
    cond, targets = policy.condition(noisy), policy.encode_targets(clean)

    def fixed_loss() -> float:
        """Loss in eval mode averaged over the same 8 draws of (t, noise)."""
        policy.eval()
        torch.manual_seed(123)
        with torch.no_grad():
            value = np.mean([policy.sft_loss(cond, targets).item() for _ in range(8)])
        policy.train()
        return float(value)

    before = fixed_loss()
    assert before == pytest.approx(2.0, abs=0.3)  # ≈ E||x1 - x0||² / D at initialization
    torch.manual_seed(0)
    losses = fit_batch(policy, cond, targets, 60)
    assert np.mean(losses[-10:]) < 0.75 * np.mean(losses[:5])
    assert fixed_loss() < 0.65 * before  # the flow loss has a floor well above 0
    with pytest.raises(ValueError, match="do not match"):
        policy.sft_loss(cond, policy.encode_targets([clean[1], clean[1]]))


def test_save_load_round_trip_and_registry(codec, tiny_setup, pair, tmp_path, monkeypatch):
    policy = make_policy(codec)
    cond = policy.condition(pair[1])
    r = policy.sample(cond, generator=gen(0), method="sde")
    policy.save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["family"] == "fm" and meta["codec"]["kind"] == "world"
    for loaded in (FMPolicy.load(tmp_path / "ckpt"), load_policy(tmp_path / "ckpt")):
        assert isinstance(loaded, FMPolicy) and loaded.config == policy.config
        assert torch.equal(loaded.step_log_probs(cond, r)[0], policy.step_log_probs(cond, r)[0])
        again = loaded.sample(cond, generator=gen(0), method="sde")
        assert torch.equal(again.actions["states"], r.actions["states"])
    ref = FMPolicy(codec, policy.config, codec_spec=f"world:{tiny_setup / 'codec'}")
    ref.load_state_dict(policy.state_dict())
    ref.save(tmp_path / "ref")
    assert not (tmp_path / "ref" / "codec").exists()
    torch.testing.assert_close(load_policy(tmp_path / "ref").step_log_probs(cond, r)[0], r.logp)
    # the registry builds fm with FMConfig, and picks up a family module only when it exists
    built = build_policy("fm", codec, {"dim": 16, "layers": 1, "heads": 2, "lookahead": 0})
    assert isinstance(built, FMPolicy) and built.cond_conv is None
    with pytest.raises(ValueError, match="unknown FM config keys: widht"):
        build_policy("fm", codec, {"widht": 3})
    monkeypatch.setitem(registry.BUILTIN, "mgm", ("sealign.models.no_such_mgm", "P", "C"))
    with pytest.raises(NotImplementedError, match="'mgm' is not implemented yet"):
        build_policy("mgm", codec, {})
    monkeypatch.setitem(registry.BUILTIN, "mgm", ("sealign.models.fm", "FMPolicy", "FMConfig"))
    assert isinstance(build_policy("mgm", codec, {"dim": 16, "heads": 2}), FMPolicy)
    with pytest.raises(ValueError, match="unknown model family 'gan'"):
        build_policy("gan", codec, {})


# ------------------------------------------------------------------------------ sealign train


class Killed(Exception):
    """Stands in for SIGKILL: the loop stops mid-step, nothing is saved on the way out."""


def _train_args(root, run, **kw) -> list[str]:
    base = {
        "output_dir": str(run),
        "model.family": "fm",
        "model.codec": f"world:{root / 'codec'}",
        "model.config": "{dim: 32, layers: 1, heads: 2, dropout: 0.1, ode_steps: 3, "
        "features: {n_mels: 20}}",
        "data.train": f"[{root / 'train.jsonl'}]",
        "data.valid": f"[{root / 'valid.jsonl'}]",
        "data.batch_size": 3,
        "data.crop_seconds": 0.6,
        "optim.lr": 3e-3,
        "optim.warmup_steps": 2,
        "eval.metrics": "[si_sdr]",
        "eval.num_samples": 1,
        "logging_steps": 1,
        "max_steps": 6,
        "eval_steps": 3,
        "save_steps": 2,
        "threads": 1,
        **kw,
    }
    return ["train", "--no-progress", *[f"{k}={v}" for k, v in base.items()]]


def _logged(run, key: str) -> dict[int, float]:
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in recs if key in r}


def test_cli_train_fm_and_exact_resume(tiny_setup, tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    assert main(_train_args(tiny_setup, ref)) == 0
    loss = _logged(ref, "train/loss")
    assert sorted(loss) == list(range(1, 7)) and all(np.isfinite(v) for v in loss.values())
    assert set(_logged(ref, "eval/loss")) == {3, 6} and set(_logged(ref, "eval/si_sdr")) == {3, 6}
    assert len(list((ref / "samples" / "step_00000006").glob("*.wav"))) == 1
    trained = load_policy(policy_dir(ref))
    assert isinstance(trained, FMPolicy) and trained.config.dim == 32

    calls = {"n": 0}
    sft_loss = FMPolicy.sft_loss

    def dying(self, cond, targets):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 5:  # during step 5; the last checkpoint is step 4
                raise Killed
        return sft_loss(self, cond, targets)

    run = tmp_path / "killed"
    monkeypatch.setattr(FMPolicy, "sft_loss", dying)
    with pytest.raises(Killed):
        main(_train_args(tiny_setup, run))
    monkeypatch.setattr(FMPolicy, "sft_loss", sft_loss)
    assert max(_logged(run, "train/loss")) == 4
    assert latest_checkpoint(run).name == "step_00000004"
    assert main([*_train_args(tiny_setup, run), "--resume"]) == 0
    a, b = _logged(ref, "train/loss"), _logged(run, "train/loss")
    assert sorted(b) == list(range(1, 7))
    np.testing.assert_allclose([b[s] for s in a], [a[s] for s in a], rtol=0, atol=1e-6)
    assert _logged(run, "eval/loss") == pytest.approx(_logged(ref, "eval/loss"))
    w_ref, w_res = trained.state_dict(), load_policy(policy_dir(run)).state_dict()
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)


# ------------------------------------------------------------------------- mel vocoder codec


@pytest.fixture(scope="module")
def vocoder_dir(tmp_path_factory):
    """A randomly initialized tiny SpeechT5HifiGan (16 mels, hop 256) saved locally."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    cfg = SpeechT5HifiGanConfig(
        model_in_dim=16,
        upsample_initial_channel=16,
        upsample_rates=[4, 4, 4, 4],
        upsample_kernel_sizes=[8, 8, 8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1]],
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("vocoder")
    SpeechT5HifiGan(cfg).save_pretrained(str(out))
    return out


def test_mel_vocoder_codec_shapes_round_trip_and_features(vocoder_dir, pair):
    from transformers import SpeechT5FeatureExtractor

    from sealign.codecs.vocoder import MelVocoderCodec

    codec = load_codec(f"mel_vocoder:{vocoder_dir}")
    assert isinstance(codec, MelVocoderCodec) and isinstance(codec, LatentCodec)
    assert (codec.sample_rate, codec.frame_rate, codec.latent_dim) == (16000, 62.5, 16)
    clean = pair[0]
    one = codec.encode_latent(clean[0])
    both = codec.encode_latent(clean)
    frames = [int(np.ceil(len(w) / 256)) for w in clean]
    assert one.shape == (16, frames[0]) and one.dtype == np.float32
    assert [z.shape for z in both] == [(16, n) for n in frames]
    np.testing.assert_array_equal(one, both[0])
    wavs = codec.decode_latent(both)
    assert [len(w) for w in wavs] == [n * 256 for n in frames]
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in wavs)
    # the analysis is SpeechT5's (what its HiFi-GAN vocoders were trained on)
    fe = SpeechT5FeatureExtractor(num_mel_bins=16)
    ref = fe(audio_target=clean[0], sampling_rate=16000, return_tensors="np")["input_values"][0]
    ours = codec.log_mel(clean[0]).T
    n = min(len(ref), len(ours))
    np.testing.assert_allclose(ours[:n], ref[:n], atol=1e-4)
    with pytest.raises(CodecError, match="no tokens"):
        codec.encode(clean[0])
    with pytest.raises(CodecError, match=r"shape \[16, T\]"):
        codec.decode_latent(np.zeros((8, 4), np.float32))
    assert load_codec(f"mel_vocoder:{vocoder_dir}?fmin=0").settings.fmin == 0.0
    # the codec contract holds for a codec of latents only (no codebooks)
    from sealign.models.conformance import check_codec, format_checks

    checks = check_codec(codec)
    assert all(c.ok for c in checks), format_checks(checks)
    assert "continuous latents only" in checks[0].detail


def test_mel_vocoder_missing_or_incomplete_folder(vocoder_dir, tmp_path):
    import shutil

    with pytest.raises(FileNotFoundError, match="mel vocoder folder not found"):
        load_codec(f"mel_vocoder:{tmp_path / 'nope'}")
    partial = tmp_path / "partial"
    shutil.copytree(vocoder_dir, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing vocoder weights"):
        load_codec(f"mel_vocoder:{partial}")
    from safetensors.torch import load_file, save_file

    half = {k: v for i, (k, v) in enumerate(load_file(vocoder_dir / "model.safetensors").items())
            if i % 2}  # fmt: skip
    save_file(half, partial / "model.safetensors")
    with pytest.raises(CodecUnavailable, match="weights are missing .*random ones"):
        load_codec(f"mel_vocoder:{partial}")
    (partial / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        load_codec(f"mel_vocoder:{partial}")
    other = tmp_path / "other"
    shutil.copytree(vocoder_dir, other)
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert' is not 'speecht5_hifigan'"):
        load_codec(f"mel_vocoder:{other}")


@pytest.mark.parametrize(
    ("mel", "match"),
    [
        ([1024], "expected a JSON object"),
        ({"fmax": 9000.0}, "Nyquist"),
        ({"fmin": 4000.0, "fmax": 2000.0}, "must be non-empty"),
        ({"fmin": -1.0}, "≥ 0"),
        ({"min_duration": 0}, "min_duration"),
        ({"n_fft": "big"}, "mel config: n_fft"),
        ({"hop": 256}, r"unknown mel config keys: hop \(known: center, fmax, fmin, latent_mean"),
        ({"n_mels": 80}, "n_mels is the vocoder's own .model_in_dim"),
    ],
)
def test_mel_vocoder_settings_are_checked_on_load(vocoder_dir, tmp_path, mel, match):
    import shutil

    folder = tmp_path / "v"
    shutil.copytree(vocoder_dir, folder)
    (folder / "mel.json").write_text(json.dumps(mel))
    with pytest.raises(ValueError, match=match):
        load_codec(f"mel_vocoder:{folder}")


def test_mel_vocoder_statistics_and_what_the_codec_sets(vocoder_dir, pair):
    from transformers import SpeechT5HifiGan

    from sealign.codecs.vocoder import MelVocoderCodec
    from sealign.models.fm import FMConfig

    codec = load_codec(f"mel_vocoder:{vocoder_dir}")
    # its config's default statistics (mean 0, scale 1) are no statistics: latents are
    # standardized with latent_mean / latent_std, not left as raw log-mels
    z = np.concatenate(codec.encode_latent(pair[0]), axis=1)
    raw = np.concatenate([codec.log_mel(w) for w in pair[0]], axis=1)
    np.testing.assert_allclose(z, (raw + 4.0) / 2.0, atol=1e-4)
    voc = SpeechT5HifiGan.from_pretrained(str(vocoder_dir))
    with torch.no_grad():
        voc.mean.fill_(-3.0)
        voc.scale.fill_(1.5)
    own = MelVocoderCodec(voc)  # statistics of its own: they standardize
    first = codec.log_mel(pair[0][0])
    np.testing.assert_allclose(own.encode_latent(pair[0][0]), (first + 3.0) / 1.5, atol=1e-4)
    # a vocoder object without what saving a checkpoint needs fails now, not at the first save
    plain = torch.nn.Linear(2, 2)
    plain.config = type("C", (), {"sampling_rate": 16000})()
    with pytest.raises(TypeError, match="missing: upsample_rates, model_in_dim, normalize_before"):
        MelVocoderCodec(plain)
    # the codec sets the latent width and the feature framing: a different value is an error
    with pytest.raises(ValueError, match="latent_dim: 80, but the codec's latents have 16"):
        FMConfig.for_codec(codec, latent_dim=80)
    with pytest.raises(ValueError, match="features.sample_rate: 22050, but the codec's rates"):
        FMConfig.for_codec(codec, features={"sample_rate": 22050})
    assert (
        FMConfig.for_codec(codec, latent_dim=16, features={"sample_rate": 16000}).latent_dim == 16
    )


def test_fm_policy_over_the_mel_vocoder(vocoder_dir, pair, tmp_path):
    codec = load_codec(f"mel_vocoder:{vocoder_dir}")
    policy = make_policy(codec, layers=1)
    assert policy.config.latent_dim == 16 and policy.config.features.hop_length == 128
    clean, noisy = pair
    cond, targets = policy.condition(noisy), policy.encode_targets(clean)
    assert targets.values.shape == (2, cond.features.shape[1] // 2, 16)
    assert policy.sft_loss(cond, targets).item() > 0
    r = policy.sample(cond, generator=gen(0), method="sde")
    torch.testing.assert_close(policy.step_log_probs(cond, r)[0], r.logp, atol=1e-4, rtol=0)
    assert [len(w) for w in policy.decode(r)] == [len(w) for w in noisy]
    policy.save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["codec"]["kind"] == "mel_vocoder"
    loaded = load_policy(tmp_path / "ckpt")
    assert isinstance(loaded, FMPolicy) and loaded.codec.latent_dim == 16
    assert torch.equal(loaded.step_log_probs(cond, r)[0], policy.step_log_probs(cond, r)[0])


def test_lora_adapters_reach_the_flow(codec, pair, tmp_path):
    """SDE step log-probs recomputed with adapters equal the sampled ones; saved merged."""
    from sealign.models.lora import LoRAConfig, LoRALinear, apply_lora

    policy = make_policy(codec)
    assert apply_lora(policy, LoRAConfig(rank=2)) > 0
    with torch.no_grad():
        for m in policy.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0, 0.1, generator=gen(1))
    cond = policy.condition(pair[1])
    r = policy.sample(cond, generator=gen(0), method="sde")
    lp, _ = policy.step_log_probs(cond, r)
    torch.testing.assert_close(lp, r.logp, atol=1e-4, rtol=0)
    assert (make_policy(codec).step_log_probs(cond, r)[0] - lp).abs().max() > 1e-3
    policy.save(tmp_path / "merged")
    torch.testing.assert_close(load_policy(tmp_path / "merged").step_log_probs(cond, r)[0], lp,
                               atol=1e-4, rtol=0)  # fmt: skip
