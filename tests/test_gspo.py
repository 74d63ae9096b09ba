"""Rewards, group advantages and the GSPO trainer on a tiny AR policy over a tiny WORLD codec."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from sealign.cli import main
from sealign.config import load_config
from sealign.metrics.base import MetricInfo, Utterance
from sealign.metrics.registry import metric_info
from sealign.models.registry import load_policy
from sealign.rewards import (
    CompositeReward,
    RewardConfig,
    component_zero_spread,
    group_advantages,
    to_reward_scale,
)
from sealign.rewards.composite import auto_scale
from sealign.rl.gspo import GSPOConfig, generate_and_score, train_gspo
from sealign.train.checkpoint import policy_dir
from sealign.train.data import PairDataset
from sealign.train.sft import init_policy

torch.set_num_threads(1)

CALLS: list[str] = []


def flaky_reward(utts: list[Utterance]) -> list[float | None]:
    """Loudness reward that is NaN for sample #1 and not applicable for sample #2."""
    out: list[float | None] = []
    for u in utts:
        CALLS.append(u.id)
        j = int(u.id.rsplit("#", 1)[1])
        out.append(float("nan") if j == 1 else None if j == 2 else float(np.abs(u.audio).mean()))
    return out


def odd_values(utts: list[Utterance]) -> list:
    """A reward function whose values for samples #1 and #2 are not numbers."""
    return [np.ones(2) if u.id.endswith("#1") else "abc" if u.id.endswith("#2") else 0.5
            for u in utts]  # fmt: skip


def never(utts: list[Utterance]) -> list[None]:
    """A reward function that applies to no sample."""
    return [None] * len(utts)


SEEN: list[np.ndarray] = []


def recording_reward(utts: list[Utterance]) -> list[float | None]:
    """Loudness reward that keeps the audio it was given."""
    SEEN.extend(u.audio for u in utts)
    return [float(np.abs(u.audio).mean()) for u in utts]


# ------------------------------------------------------------------------------ advantages


def test_reward_scales():
    assert to_reward_scale(3.0, "mos") == pytest.approx(0.5)
    assert to_reward_scale(0.25, "error_rate") == pytest.approx(0.75)
    assert to_reward_scale(1.7, "error_rate") == 0.0
    assert to_reward_scale(0.8, "identity") == 0.8
    assert auto_scale(metric_info("dnsmos"), "ovrl") == "mos"
    assert auto_scale(metric_info("wer"), "wer") == "error_rate"
    assert auto_scale(metric_info("spk_sim"), "spk_sim") == "identity"
    assert auto_scale(metric_info("pesq_wb"), "pesq_wb") == "mos"  # MOS-LQO, 1 to 4.64
    # distances without an upper bound declare their scale: lower distance, higher reward
    assert (
        auto_scale(metric_info("mcd"), "mcd") == auto_scale(metric_info("lsd"), "lsd") == "negated"
    )
    assert to_reward_scale(4.5, "negated") == -4.5
    with pytest.raises(ValueError, match="unknown reward scale"):
        to_reward_scale(1.0, "log")
    with pytest.raises(ValueError, match="reward_scale 'log' unknown"):
        MetricInfo("probe", ("x",), (False,), ((0.0, 1.0),), reward_scale="log")


@pytest.mark.parametrize(
    ("aggregation", "warns"),
    [("sum_then_normalize", True), ("normalize_then_sum", False), ("rank", False)],
)
def test_a_term_on_its_own_scale_is_flagged_only_where_scale_matters(caplog, aggregation, warns):
    """SI-SDR (dB) beside a 0–1 term outweighs it in a summed composite; aggregations that
    standardize or rank each term within its group first are indifferent to its units."""
    from sealign.rewards import CompositeReward, RewardConfig

    cfg = RewardConfig(components=[{"metric": "si_sdr"}, {"metric": "estoi"}],
                       aggregation=aggregation, metric_options={}, cache="")  # fmt: skip
    with caplog.at_level("WARNING", logger="sealign"):
        CompositeReward(cfg, num_threads=1).close()
    assert ("si_sdr enters on its own scale" in caplog.text) is warns


def test_sum_then_normalize_matches_definition():
    rng = np.random.default_rng(0)
    values = rng.random((8, 3))
    group = np.repeat([0, 1], 4)
    w = np.array([1.0, 2.0, 1.0])
    out = group_advantages(values, group, w)
    comp = values @ w / w.sum()
    for g in (0, 1):
        r = comp[group == g]
        np.testing.assert_allclose(
            out.advantages[group == g], (r - r.mean()) / (r.std(ddof=1) + 1e-4)
        )
    np.testing.assert_allclose(out.composite, comp)
    assert out.valid.all() and out.frac_reward_zero_std == 0.0


def test_missing_component_is_not_zero_and_failed_sample_is_excluded():
    values = np.array([[0.5, 1.0], [0.5, np.nan], [0.2, 0.0], [0.9, 0.9]])
    failed = np.array([False, False, False, True])
    out = group_advantages(values, np.zeros(4, int), np.ones(2), failed=failed)
    assert out.composite[1] == pytest.approx(0.5)  # mean of the available component only
    assert not out.valid[3] and out.advantages[3] == 0.0 and np.isnan(out.composite[3])
    r = np.array([0.75, 0.5, 0.1])
    np.testing.assert_allclose(out.advantages[:3], (r - r.mean()) / (r.std(ddof=1) + 1e-4))


def test_zero_spread_group_gives_zero_advantage():
    values = np.array([[0.3], [0.3], [0.1], [0.9]])
    out = group_advantages(values, np.array([0, 0, 1, 1]), np.ones(1))
    assert out.advantages[:2].tolist() == [0.0, 0.0]
    assert out.frac_reward_zero_std == 0.5


def test_component_zero_spread_counts_each_term_per_group():
    # WER-like term: the same in groups 0 and 1 (all right / all wrong), spread in group 2;
    # quality term: spread everywhere but where one valid value is left
    wer = [1.0, 1.0, 0.0, 0.0, 0.8, 0.9]
    quality = [0.2, 0.3, 0.4, np.nan, 0.1, 0.5]
    values = np.stack([wer, quality], axis=1)
    group = np.repeat([0, 1, 2], 2)
    valid = np.ones(6, bool)
    np.testing.assert_allclose(component_zero_spread(values, group, valid), [2 / 3, 1 / 3])
    valid[5] = False  # an excluded sample leaves group 2 one value of each term
    np.testing.assert_allclose(component_zero_spread(values, group, valid), [1.0, 2 / 3])


@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum", "rank"])
def test_a_group_left_with_one_valid_sample_gives_it_no_advantage(aggregation):
    values = np.array([[0.2, 0.4], [np.nan, np.nan], [0.9, 0.1], [0.3, 0.5]])
    failed = np.array([False, True, False, False])
    out = group_advantages(values, np.array([0, 0, 1, 1]), np.ones(2), aggregation, failed)
    assert np.isfinite(out.advantages).all() and out.advantages[:2].tolist() == [0.0, 0.0]
    assert out.valid.tolist() == [True, False, True, True]


def test_rank_advantages_share_tied_ranks_and_span_minus_one_to_one():
    values = np.array([[0.1], [0.5], [0.5], [0.9]])
    adv = group_advantages(values, np.zeros(4, int), np.ones(1), "rank").advantages
    np.testing.assert_allclose(adv, [-1.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("aggregation", ["normalize_then_sum", "rank"])
def test_zero_signal_groups_are_counted_by_the_advantages_used(aggregation):
    # a flat composite whose components still rank the samples, and components that cancel
    c1 = np.array([0.0, 1.0, 3.0])
    flat = np.stack([c1, (3 - c1) / 2], axis=1)  # weights 1, 2: composite ≡ 1
    out = group_advantages(flat, np.zeros(3, int), np.array([1.0, 2.0]), aggregation)
    assert np.ptp(out.composite) < 1e-12 and np.abs(out.advantages).max() > 0.05
    assert out.frac_reward_zero_std == 0.0
    cancel = np.stack([c1, 3 - c1], axis=1)  # equal weights: advantages cancel
    out = group_advantages(cancel, np.zeros(3, int), np.ones(2), aggregation)
    assert np.allclose(out.advantages, 0) and out.frac_reward_zero_std == 1.0


def test_rank_is_invariant_to_monotone_transforms_and_normalize_then_sum_balances():
    rng = np.random.default_rng(1)
    values = rng.random((6, 2))
    group = np.zeros(6, int)
    a = group_advantages(values, group, np.ones(2), "rank").advantages
    b = group_advantages(np.exp(5 * values), group, np.ones(2), "rank").advantages
    np.testing.assert_allclose(a, b)
    assert a.max() <= 1 and a.min() >= -1
    # a component scaled by 100 dominates sum_then_normalize but not normalize_then_sum
    scaled = values * np.array([100.0, 1.0])
    n1 = group_advantages(values, group, np.ones(2), "normalize_then_sum").advantages
    n2 = group_advantages(scaled, group, np.ones(2), "normalize_then_sum").advantages
    np.testing.assert_allclose(n1, n2, atol=1e-3)


def test_composite_reward_flags_failures_and_not_applicable(speech):
    cfg = RewardConfig(
        components=[
            {"metric": "si_sdr"},
            {"function": "test_gspo:flaky_reward", "weight": 0.5},
        ]
    )
    reward = CompositeReward(cfg, num_threads=1)
    clean = speech(0)
    utts = [
        Utterance(
            f"u#{j}", clean + 0.01 * j * np.sin(np.arange(clean.size)), 16000, reference=clean
        )
        for j in range(4)
    ]
    utts.append(Utterance("v#0", clean, 16000))  # no reference: si_sdr not applicable
    batch = reward(utts)
    assert batch.names == ["si_sdr", "flaky_reward"]
    assert batch.failed.tolist() == [False, True, False, False, False]
    assert np.isnan(batch.values[2, 1]) and np.isfinite(batch.values[2, 0])
    assert np.isnan(batch.values[4, 0]) and np.isfinite(batch.values[4, 1])
    assert "non-finite" in batch.reasons[1]
    assert reward.columns() == {"si_sdr"}
    # one reward per utterance for a trainer of your own: the weighted mean of its terms
    total = batch.composite()
    assert np.isnan(total[1]) and total[4] == batch.values[4, 1]
    assert total[0] == pytest.approx((batch.values[0, 0] + 0.5 * batch.values[0, 1]) / 1.5)
    nan = Utterance("w#0", np.full(clean.size, np.nan, np.float32), 16000, reference=clean)
    assert batch.reasons and "; " not in batch.reasons[1]
    both = reward([nan]).reasons[0]  # every failing term says why, not only the last
    assert both.startswith("si_sdr: ") and "; flaky_reward: " in both
    odd = CompositeReward(RewardConfig(components=[{"function": "test_gspo:odd_values"}]))
    assert odd(utts).failed.tolist() == [False, True, True, False, False]  # not the run's end


def test_metrics_scored_side_by_side_give_the_same_rewards(speech):
    clean = speech(0)
    rng = np.random.default_rng(0)
    utts = [
        Utterance(
            f"u#{j}", clean + 0.02 * j * rng.standard_normal(clean.size), 16000, reference=clean
        )
        for j in range(4)
    ]
    batches = {}
    for workers, parts in ((1, 1), (2, 1), (2, 3), (3, 8)):  # 8 parts of 4: one per utterance
        cfg = RewardConfig(
            components=[{"metric": "si_sdr"}, {"metric": "estoi"}, {"metric": "pesq_wb"}],
            workers=workers,
            parts=parts,
        )
        batches[workers, parts] = CompositeReward(cfg, num_threads=1)(utts)
    for key, batch in batches.items():
        np.testing.assert_allclose(batch.values, batches[1, 1].values, rtol=1e-9, err_msg=key)
        assert set(batch.seconds) == {"si_sdr", "estoi", "pesq_wb"}
    assert np.isfinite(batches[2, 3].values).all()
    with pytest.raises(ValueError, match="reward.parts"):
        RewardConfig(parts=0)


def test_the_default_reward_leaves_the_trainers_torch_threads_alone(speech):
    # metric backends share the OpenMP runtime with torch: loading Whisper with one thread was
    # seen to leave the trainer at one thread
    before = torch.get_num_threads()
    reward = CompositeReward(RewardConfig(metric_threads=before + 1), num_threads=before)
    assert {m.num_threads for m in reward.metrics.values()} == {before + 1}
    reward.load()
    assert torch.get_num_threads() == before
    clean = speech(0)
    batch = reward([Utterance("u#0", clean, 16000, text="hello")])
    assert np.isfinite(batch.values).all()
    assert torch.get_num_threads() == before
    reward.close()


def test_reward_config_errors_name_the_key():
    with pytest.raises(ValueError, match="aggregation"):
        RewardConfig(aggregation="max")
    with pytest.raises(ValueError, match=r"components\[0\].metric"):
        RewardConfig(components=[{"metric": "nope"}]).check()
    with pytest.raises(ValueError, match=r"components\[0\].output"):
        RewardConfig(components=[{"metric": "dnsmos", "output": "mos"}]).check()
    with pytest.raises(ValueError, match="exactly one"):
        RewardConfig(components=[{"metric": "wer", "function": "a:b"}])


# --------------------------------------------------------------------------------- trainer


@pytest.fixture(scope="module")
def setup(tiny_setup):
    return tiny_setup


def overrides(root, run, **kw) -> list[str]:
    base = {
        "output_dir": str(run),
        "model.init_from": str(root / "base"),
        "data.train": f"[{root / 'train.jsonl'}]",
        "data.batch_size": 2,
        "sampling.group_size": 3,
        "reward.components": "[{metric: si_sdr}, {metric: estoi, weight: 0.5}]",
        "eval.manifests": f"[{root / 'valid.jsonl'}]",
        "eval.metrics": "[si_sdr, estoi, pesq_wb]",
        "eval.steps": 2,
        "optim.lr": 3e-3,
        "epsilon_low": 0.2,
        "epsilon_high": 0.2,
        "steps_per_generation": 2,
        "threads": 1,
        **kw,
    }
    return [f"{k}={v}" for k, v in base.items()]


def logged(run, key: str) -> dict[int, float]:
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in recs if key in r}


def test_gspo_cli_runs_logs_and_evaluates(setup, tmp_path):
    run = tmp_path / "run"
    assert main(["gspo", "--no-progress", *overrides(setup, run, max_steps=2, beta=0.1)]) == 0
    for key in (
        "reward",
        "rewards/si_sdr/mean",
        "rewards/estoi/std",
        "frac_reward_zero_std",
        "rewards/si_sdr/frac_zero_std",
        "clip_ratio/region_mean",
        "kl",
        "entropy",
        "completions/mean_length",
        "time/generate",
        "time/score",
        "time/update",
        "loss",
    ):
        assert set(logged(run, key)) == {1, 2}, key
    assert set(logged(run, "eval/pesq_wb")) == {0, 2}
    assert (run / "eval" / "step_00000000.json").is_file()
    assert (run / "checkpoints" / "step_00000002").is_dir()
    assert list((run / "samples" / "step_00000002").glob("*.wav"))
    assert (run / "tb").is_dir()


def test_first_update_is_on_policy_and_later_ones_are_off_policy(setup, tmp_path):
    cfg = load_config(
        GSPOConfig,
        None,
        overrides(
            setup,
            tmp_path / "r",
            max_steps=1,
            **{
                "eval.manifests": "[]",
                "steps_per_generation": 3,
                "epsilon_low": 1e-6,
                "epsilon_high": 1e-6,
            },
        ),
    )
    res = train_gspo(cfg, progress=False)
    h = res.history[0]
    # ratio is exactly 1 on the first minibatch; the later ones see updated weights
    assert h["ratio/mean"] != 1.0
    assert 0.0 <= h["clip_ratio/region_mean"] <= 1.0  # whether any clips depends on the signs


def test_bf16_updates_compare_like_with_like(setup, tmp_path):
    """Under bf16 the old log-probs are recomputed by the bf16 forward, so the first full-batch
    update is on-policy (ratio 1, nothing clipped at GSPO's tiny ε) as in fp32."""
    kw = {"eval.manifests": "[]", "steps_per_generation": 1, "epsilon_low": 3e-4,
          "epsilon_high": 4e-4, "precision": "bf16", "beta": 0.1}  # fmt: skip
    cfg = load_config(GSPOConfig, None, overrides(setup, tmp_path / "r", max_steps=2, **kw))
    res = train_gspo(cfg, progress=False)
    h = res.history[0]
    assert h["ratio/mean"] == pytest.approx(1.0, abs=1e-6)
    assert h["clip_ratio/region_mean"] == 0.0 and h["kl"] == pytest.approx(0.0, abs=1e-6)
    assert all(np.isfinite(r["loss"]) for r in res.history)
    from types import SimpleNamespace

    from sealign.rl.gspo import recompute_old_logp

    assert not recompute_old_logp(SimpleNamespace(precision="fp32", device="cpu"))
    assert recompute_old_logp(SimpleNamespace(precision="fp32", device="cuda:1"))  # other kernels
    assert recompute_old_logp(SimpleNamespace(precision="bf16", device="cpu"))
    from sealign.models.policy import Rollout
    from sealign.rl.gspo import _recompute_old_logp

    class Scaled:  # log-probs that depend on a weight: the recomputation must not track them
        w = torch.ones((), requires_grad=True)

        def step_log_probs(self, cond, part):
            return part.logp * self.w, None

    old = Rollout({}, -torch.rand(4, 3), torch.ones(4, 3), torch.arange(4))
    cfg = SimpleNamespace(micro_batch_size=2, device="cpu", precision="bf16")
    again = _recompute_old_logp(Scaled(), None, old, cfg)
    assert torch.equal(again.logp, old.logp) and not again.logp.requires_grad


@pytest.mark.parametrize("passes", [1, 2])
def test_each_pass_over_the_rollout_batch_is_one_more_update(setup, tmp_path, passes):
    kw = {"eval.manifests": "[]", "steps_per_generation": 1, "num_iterations": passes}
    cfg = load_config(GSPOConfig, None, overrides(setup, tmp_path / "r", max_steps=1, **kw))
    h = train_gspo(cfg, progress=False).history[0]
    # one full-batch update is on-policy; a second pass over the same samples is not
    assert (h["ratio/mean"] == 1.0) == (passes == 1)
    trainer = torch.load(next((tmp_path / "r" / "checkpoints").iterdir()) / "trainer.pt")
    assert trainer["optimizer"]["state"][0]["step"] == passes


def test_negative_advantage_scale_shrinks_only_below_average_samples(setup, tmp_path):
    advantages = {}
    for scale in (1.0, 0.25):
        kw = {"eval.manifests": "[]", "negative_advantage_scale": scale}
        cfg = load_config(GSPOConfig, None, overrides(setup, tmp_path / "r", **kw))
        policy = init_policy(cfg.model)
        data = PairDataset(cfg.data.train, cfg.data, policy.sample_rate, 0, True)
        reward = CompositeReward(cfg.reward, num_threads=1)
        gen = torch.Generator().manual_seed(0)
        batch = generate_and_score(policy, data.next_batch(), cfg, reward, gen)
        advantages[scale] = batch.advantages
    full = advantages[1.0]
    assert (full < 0).any() and (full > 0).any()
    np.testing.assert_allclose(advantages[0.25], np.where(full < 0, 0.25 * full, full), atol=1e-6)


def test_fuse_mask_scores_each_output_as_a_mask_on_its_input(setup, tmp_path, monkeypatch):
    import sealign.rl.gspo as gspo
    from sealign.infer.fusion import fuse_outputs

    seen, noisy = {}, {}
    for fuse in ("written", "none", "mask"):
        if fuse == "none":  # compared before the 16-bit rounding below
            monkeypatch.setattr(gspo, "as_written", lambda w: w)
        kw = {"reward.components": "[{function: 'test_gspo:recording_reward'}]",
              "fuse": "none" if fuse == "written" else fuse}  # fmt: skip
        cfg = load_config(GSPOConfig, None, overrides(setup, tmp_path / "r", **kw))
        policy = init_policy(cfg.model)
        data = PairDataset(cfg.data.train, cfg.data, policy.sample_rate, 0, True)
        examples = data.next_batch()
        SEEN.clear()
        gen = torch.Generator().manual_seed(0)
        batch = generate_and_score(policy, examples, cfg, CompositeReward(cfg.reward), gen)
        seen[fuse] = list(SEEN)
        noisy[fuse] = [examples[k].noisy for k in batch.group]
    want = fuse_outputs(seen["none"], noisy["none"], policy.sample_rate, "mask")
    for got, w in zip(seen["mask"], want, strict=True):
        np.testing.assert_allclose(got, w, atol=1e-6)
    assert not np.allclose(seen["mask"][0], seen["none"][0][: want[0].size], atol=1e-3)
    # the reward judges what enhance writes: 16-bit samples
    for w, raw in zip(seen["written"], seen["none"], strict=True):
        assert np.array_equal(w * 32768, np.round(w * 32768)) and np.abs(w - raw).max() < 1e-4


def test_nan_reward_sample_is_excluded_not_fatal(setup, tmp_path, caplog):
    CALLS.clear()
    kw = {
        "reward.components": "[{metric: si_sdr}, {function: 'test_gspo:flaky_reward'}]",
        "eval.manifests": "[]",
    }
    cfg = load_config(GSPOConfig, None, overrides(setup, tmp_path / "r", max_steps=2, **kw))
    res = train_gspo(cfg, progress=False)
    assert CALLS and all(h["num_excluded"] == 1.0 for h in res.history)
    assert "excluding sample" in caplog.text
    assert all(np.isfinite(h["loss"]) for h in res.history)


def test_a_run_whose_updates_keep_failing_stops_with_the_reason(setup, tmp_path, monkeypatch):
    import functools

    import sealign.rl.gspo as gspo_mod
    from sealign.train.sft import DivergenceGuard

    real = gspo_mod._micro_loss

    def nan_loss(*args, **kwargs):
        out = real(*args, **kwargs)
        return dataclasses.replace(out, loss=out.loss * float("nan"))

    monkeypatch.setattr(gspo_mod, "_micro_loss", nan_loss)
    monkeypatch.setattr(gspo_mod, "DivergenceGuard", functools.partial(DivergenceGuard, limit=3))
    cfg = load_config(
        GSPOConfig, None, overrides(setup, tmp_path / "r", max_steps=4, **{"eval.manifests": "[]"})
    )
    with pytest.raises(ValueError, match="training diverged: 3 updates in a row"):
        train_gspo(cfg, progress=False)
    # two updates a step: the third skipped one, in step 2, ends the run before it saves
    assert set(logged(tmp_path / "r", "loss")) == {1}
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_run_whose_samples_never_get_a_reward_stops(setup, tmp_path, monkeypatch):
    import sealign.rl.gspo as gspo_mod

    monkeypatch.setattr(gspo_mod, "UNREWARDED_LIMIT", 2)
    kw = {"reward.components": "[{function: 'test_gspo:never'}]", "eval.manifests": "[]"}
    cfg = load_config(GSPOConfig, None, overrides(setup, tmp_path / "r", max_steps=5, **kw))
    with pytest.raises(ValueError, match="no sample of the last 2 rollout batches had a usable"):
        train_gspo(cfg, progress=False)


def test_resume_gives_the_same_losses(setup, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    kw = {"eval.manifests": "[]", "save_steps": 2}
    assert main(["gspo", "--no-progress", *overrides(setup, full, max_steps=4, **kw)]) == 0
    assert main(["gspo", "--no-progress", *overrides(setup, part, max_steps=2, **kw)]) == 0
    args = ["gspo", "--no-progress", "--resume", *overrides(setup, part, max_steps=4, **kw)]
    assert main([*args[:-1], "threads=1", "beta=0.5", "max_steps=3"]) == 0  # changed: warned
    assert "resuming with changed settings: beta: 0.0 → 0.5" in capsys.readouterr().err
    shutil.rmtree(part / "checkpoints" / "step_00000003")
    assert main(args) == 0
    a, b = logged(full, "loss"), logged(part, "loss")
    assert set(b) == {1, 2, 3, 4}
    for s in (3, 4):
        assert a[s] == pytest.approx(b[s], rel=1e-6, abs=1e-9)
    assert logged(full, "reward")[4] == pytest.approx(logged(part, "reward")[4])


def test_the_time_budget_stops_and_saves_the_run(setup, tmp_path, capsys):
    run = tmp_path / "timed"
    kw = {"eval.manifests": "[]", "max_steps": 50, "max_minutes": 0.0001}
    assert main(["gspo", "--no-progress", *overrides(setup, run, **kw)]) == 0
    assert "time budget of 0.0 min reached at step" in capsys.readouterr().err
    steps = sorted(int(p.name[5:]) for p in (run / "checkpoints").glob("step_*"))
    assert steps and steps[-1] < 50  # stopped early, and the step it stopped at was saved


def test_a_fresh_model_keeps_its_initial_weights_as_the_kl_reference(setup, tmp_path):
    from conftest import TINY_AR

    full, part = tmp_path / "full", tmp_path / "part"
    kw = {"eval.manifests": "[]", "save_steps": 2, "beta": 0.1, "model.init_from": "null",
          "model.family": "ar", "model.codec": f"world:{setup / 'codec'}",
          "model.config": json.dumps(TINY_AR)}  # fmt: skip
    assert main(["gspo", "--no-progress", *overrides(setup, full, max_steps=4, **kw)]) == 0
    assert main(["gspo", "--no-progress", *overrides(setup, part, max_steps=2, **kw)]) == 0
    assert (part / "reference" / "model.safetensors").is_file()
    args = ["gspo", "--no-progress", "--resume", *overrides(setup, part, max_steps=4, **kw)]
    assert main(args) == 0
    assert logged(full, "kl")[2] > 0
    for key in ("kl", "loss"):  # the resumed run's KL is still to the initial weights
        a, b = logged(full, key), logged(part, key)
        assert a[4] == pytest.approx(b[4], rel=1e-6, abs=1e-9)


def test_a_resume_logs_the_evaluations_after_its_checkpoint_again(setup, tmp_path):
    run = tmp_path / "run"
    kw = {"save_steps": 2, "eval.steps": 1}
    assert main(["gspo", "--no-progress", *overrides(setup, run, max_steps=4, **kw)]) == 0
    first = logged(run, "eval/si_sdr")
    assert sorted(first) == [0, 1, 2, 3, 4]
    # killed after step 4's evaluation, before its checkpoint was complete
    shutil.rmtree(run / "checkpoints" / "step_00000004")
    args = ["gspo", "--no-progress", "--resume", *overrides(setup, run, max_steps=4, **kw)]
    assert main(args) == 0
    again = logged(run, "eval/si_sdr")
    assert sorted(again) == [0, 1, 2, 3, 4]  # steps 3 and 4 were cut from the log and logged anew
    for step, value in first.items():
        assert again[step] == pytest.approx(value, abs=1e-6)


def test_micro_batches_accumulate_to_the_same_update(setup, tmp_path):
    # Adam's first steps are ±lr wherever |grad| >> eps, whatever the gradient's size: a rare
    # token's output row has a gradient near 1e-8 whose sign float rounding of the summed
    # micro-batches may flip (seen on CI). An eps above that noise keeps the update comparable.
    kw = {
        "eval.manifests": "[]",
        "max_steps": 2,
        "steps_per_generation": 1,
        "beta": 0.1,
        "optim.eps": 1e-4,
    }
    whole, micro = tmp_path / "whole", tmp_path / "micro"
    assert main(["gspo", "--no-progress", *overrides(setup, whole, **kw)]) == 0
    assert main(["gspo", "--no-progress", *overrides(setup, micro, micro_batch_size=2, **kw)]) == 0
    for key in ("loss", "kl", "grad_norm"):
        a, b = logged(whole, key), logged(micro, key)
        for s in (1, 2):
            assert a[s] == pytest.approx(b[s], rel=1e-4, abs=1e-7), key
    wa = load_policy(policy_dir(whole)).state_dict()
    wb = load_policy(policy_dir(micro)).state_dict()
    for k, v in wa.items():
        torch.testing.assert_close(v, wb[k], rtol=1e-3, atol=5e-5)


def test_sigkill_mid_run_resumes_with_the_same_losses(setup, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    kw = {"eval.manifests": "[]", "save_steps": 1}
    assert main(["gspo", "--no-progress", *overrides(setup, full, max_steps=4, **kw)]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "sealign", "gspo", "--no-progress"]
    proc = subprocess.Popen(
        [*cmd, *overrides(setup, killed, max_steps=400, **kw)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not (killed / "checkpoints" / "step_00000002").is_dir():
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoints" / "step_00000002").is_dir()
    args = ["gspo", "--no-progress", "--resume", *overrides(setup, killed, max_steps=4, **kw)]
    assert main(args) == 0
    a, b = logged(full, "loss"), logged(killed, "loss")
    assert sorted(b) == [1, 2, 3, 4]
    for s in (1, 2, 3, 4):
        assert a[s] == pytest.approx(b[s], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    "override, key",
    [
        ("loss=ppo", "loss"),
        ("reward.aggregation=max", "aggregation"),
        ("reward.metric_threads=-1", "metric_threads"),
        ("sampling.group_size=1", "group_size"),
        ("data.crop_seconds=2", "crop_seconds"),
        ("steps_per_generation=99", "steps_per_generation"),
        ("negative_advantage_scale=-1", "negative_advantage_scale"),
        ("step_fraction=0", "step_fraction"),
        ("fuse=wiener", "fuse"),
        ("eval.metrics=[nope]", "eval.metrics"),
        ("eval.metric_options={estoi_typo: {x: 1}}", "eval.metric_options"),
        ("sampling.temperature=inf", "sampling.temperature"),
        ("seed=-1", "seed must be in [0, 2**32)"),
        ("temperature_lr=-0.1", "temperature_lr"),
        ("temperature_optimizer=adam", "temperature_optimizer must be one of"),
        ("sampling.extra={sde_aa: 0.3}", "sampling.extra"),
        ("reward.components=[{metric: wer, credit: word}]", "credit: word"),  # loss gspo
    ],
)
def test_invalid_config_fails_before_work(setup, tmp_path, override, key, capsys):
    run = tmp_path / "bad"
    assert main(["gspo", "--no-progress", *overrides(setup, run), override]) == 2
    assert key in capsys.readouterr().err
    assert not (run / "checkpoints").exists()


def _gspo_ddp(torchrun, setup, run, port: int, *extra: str, **kw):
    kw = {"eval.manifests": "[]", "data.batch_size": 1, **kw}
    return torchrun(port, "gspo", "--no-progress", *extra, *overrides(setup, run, **kw))


def test_gspo_runs_under_torchrun_with_two_ranks(setup, tmp_path, torchrun):
    run = tmp_path / "ddp"
    proc = _gspo_ddp(torchrun, setup, run, 29571, max_steps=2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(logged(run, "loss")) == {1, 2}  # rank 0 logs
    assert (run / "checkpoints" / "step_00000002").is_dir()


_UNEVEN_REWARD = """
import os
import numpy as np


def reward(utts):
    # rank 1 scores two samples of its group of three (10 more than rank 0's); one fails
    if os.environ.get("RANK") == "1":
        return [float("nan") if u.id.endswith("#2") else 10 + float(np.abs(u.audio).mean())
                for u in utts]
    return [float(np.abs(u.audio).mean()) for u in utts]
"""


def test_ranks_with_unequal_valid_samples_step_together(setup, tmp_path, torchrun, monkeypatch):
    # rank 1 has samples in two minibatches of three: it still joins every averaged update,
    # and the logged statistics cover both ranks
    (tmp_path / "uneven_reward.py").write_text(_UNEVEN_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "ddp"
    kw = {"sampling.group_size": 3, "steps_per_generation": 3, "max_steps": 2,
          "reward.components": "[{function: 'uneven_reward:reward'}]"}  # fmt: skip
    proc = _gspo_ddp(torchrun, setup, run, 29573, **kw)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(logged(run, "loss")) == {1, 2}
    assert all(4 < r < 6 for r in logged(run, "reward").values())  # (≈0 + ≈10) / 2


def test_two_rank_resume_continues_every_rank_exactly(setup, tmp_path, torchrun):
    # rank 1's sampling stream and data position are checkpointed too: after a resume both
    # ranks draw what they would have drawn, so the averaged updates are the same
    full, part = tmp_path / "full", tmp_path / "part"
    for run, steps, extra in ((full, 4, ()), (part, 2, ()), (part, 4, ("--resume",))):
        proc = _gspo_ddp(torchrun, setup, run, 29572, *extra, max_steps=steps, save_steps=2)
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = logged(full, "loss"), logged(part, "loss")
    assert set(b) == {1, 2, 3, 4}
    for s in (3, 4):
        assert a[s] == pytest.approx(b[s], rel=1e-6, abs=1e-9)


def test_two_rank_lora_runs_resume_exactly(setup, tmp_path, torchrun):
    """Adapters are not broadcast: the ranks agree by construction (one base file, A drawn from
    the run's seed, B zero), and a resume puts the checkpoint's back on every rank."""
    full, part = tmp_path / "full", tmp_path / "part"
    lora = {"model.lora": "{rank: 2, alpha: 4}", "beta": 0.1, "optim.lr": 3e-2}
    for run, steps, extra in ((full, 4, ()), (part, 2, ()), (part, 4, ("--resume",))):
        proc = _gspo_ddp(torchrun, setup, run, 29597, *extra, max_steps=steps, save_steps=2,
                         **lora)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
    for key in ("loss", "kl"):
        a, b = logged(full, key), logged(part, key)
        for s in (3, 4):
            assert a[s] == pytest.approx(b[s], rel=1e-6, abs=1e-9)
    assert logged(full, "kl")[4] > 0


def test_two_rank_probes_step_one_temperature(setup, tmp_path, torchrun):
    """The probe's differences are summed over the ranks: both step by the same slope, and the
    logged temperature factor (their mean) moves by exactly rate × the logged slope."""
    run, rate = tmp_path / "probe", 0.5
    kw = {"temperature_lr": rate, "temperature_optimizer": "probe", "max_steps": 2}
    proc = _gspo_ddp(torchrun, setup, run, 29598, **kw)
    assert proc.returncode == 0, proc.stderr[-2000:]
    slope, factor = logged(run, "temperature_slope"), logged(run, "temperature_factor")
    before = -float(load_policy(setup / "base").logit_scale)
    for step in (1, 2):
        after = float(np.log(factor[step]))
        assert after - before == pytest.approx(rate * slope[step], abs=2e-6)
        before = after


@pytest.mark.parametrize("family, layout", [("mgm", "?layout=mgm"), ("fm", "")])
def test_gspo_trains_masked_and_flow_matching_policies(setup, tmp_path, family, layout, capsys):
    from sealign.codecs.base import load_codec
    from sealign.models.registry import build_policy

    torch.manual_seed(0)
    small = {"dim": 32, "layers": 1, "heads": 2, "features": {"n_mels": 20}}
    if family == "fm":
        small["sde_steps"] = 3
    codec = load_codec(f"world:{setup / 'codec'}{layout}")
    build_policy(family, codec, small).save(tmp_path / "base")
    run = tmp_path / "run"
    kw = {"model.init_from": str(tmp_path / "base"), "eval.metrics": "[si_sdr]"}
    if family == "fm":  # family-specific sampler options reach Policy.sample
        kw["sampling.extra"] = "{steps: 2, sde_a: 0.3}"
    else:  # each minibatch trains on half of the decoding iterations
        kw["step_fraction"] = 0.5
    assert main(["gspo", "--no-progress", *overrides(setup, run, max_steps=2, **kw)]) == 0
    loss = logged(run, "loss")
    assert set(loss) == {1, 2} and all(np.isfinite(v) for v in loss.values())
    length = logged(run, "completions/mean_length")[1]
    assert length == 2 if family == "fm" else length > 0  # FM: SDE steps
    assert set(logged(run, "eval/si_sdr")) == {0, 2}
    # their steps are not along time: word credit for WER is refused before any work
    words = {"reward.components": "[{metric: wer, credit: word}]", "loss": "gspo_token"}
    run = tmp_path / "words"
    assert main(["gspo", "--no-progress", *overrides(setup, run, **kw, **words)]) == 2
    assert "ar family" in capsys.readouterr().err and not (run / "checkpoints").exists()


def test_word_credit_trains_an_ar_policy_with_per_step_advantages(setup, tmp_path):
    run = tmp_path / "words"
    kw = {
        "reward.components": "[{metric: si_sdr}, {metric: wer, credit: word}]",
        "loss": "gspo_token",
        "eval.manifests": "[]",
        "max_steps": 2,
    }
    assert main(["gspo", "--no-progress", *overrides(setup, run, **kw)]) == 0
    assert set(logged(run, "frac_words_with_spread")) == {1, 2}
    assert all(np.isfinite(v) for v in logged(run, "loss").values())


@pytest.mark.parametrize("how, rate", [("sgd", 20.0), ("adamw", 0.05), ("probe", 0.01)])
def test_a_learned_temperature_trains_at_its_own_rate_outside_the_kl(
    setup, tmp_path, capsys, how, rate
):
    from sealign.rl.gspo import TEMPERATURE_OPTIMIZERS, learned_temperature

    full, part = tmp_path / "full", tmp_path / "part"
    kw = {"eval.manifests": "[]", "save_steps": 2, "beta": 0.1, "temperature_lr": rate,
          "temperature_optimizer": how}  # fmt: skip
    assert main(["gspo", "--no-progress", *overrides(setup, full, max_steps=4, **kw)]) == 0
    factor = logged(full, "temperature_factor")
    assert sorted(factor) == [1, 2, 3, 4]
    scale = float(load_policy(full / "checkpoints" / "step_00000004" / "policy").logit_scale)
    assert abs(scale) > 1e-4 and factor[4] == pytest.approx(np.exp(-scale), rel=1e-6)
    assert all(np.isfinite(v) for v in logged(full, "logit_scale_grad").values())
    # sgd: outside AdamW (plain steps); adamw: a group of its own at its own rate
    ckpt = full / "checkpoints" / "step_00000004" / "trainer.pt"
    groups = torch.load(ckpt, weights_only=False)["optimizer"]["param_groups"]
    own = [g for g in groups if g["initial_lr"] == rate]
    assert len(groups) == (3 if how == "adamw" else 2) and len(own) == (how == "adamw")
    # exact resume (with adamw, the temperature's optimizer state included)
    assert main(["gspo", "--no-progress", *overrides(setup, part, max_steps=2, **kw)]) == 0
    args = ["gspo", "--no-progress", "--resume", *overrides(setup, part, max_steps=4, **kw)]
    assert main(args) == 0
    for key in ("loss", "kl", "temperature_factor"):
        a, b = logged(full, key), logged(part, key)
        assert a[4] == pytest.approx(b[4], rel=1e-6, abs=1e-9), key
    # another rate or optimizer than the run started with would not apply: refused
    for other in ("0", "0.1"):
        assert main([*args, f"temperature_lr={other}", "max_steps=5"]) == 2
        assert f"temperature_lr: {other} now" in capsys.readouterr().err
    other = next(o for o in TEMPERATURE_OPTIMIZERS if o != how)
    assert main([*args, f"temperature_optimizer={other}", "max_steps=5"]) == 2
    assert f"temperature_optimizer: {other} now" in capsys.readouterr().err
    # the KL reference samples at the policy's learned temperature: with the weights held
    # still, the temperature moves and the KL stays 0
    still = tmp_path / "still"
    kw["optim.lr"] = 1e-30
    assert main(["gspo", "--no-progress", *overrides(setup, still, max_steps=3, **kw)]) == 0
    assert abs(np.log(logged(still, "temperature_factor")[3])) > 1e-4
    assert all(abs(v) < 1e-7 for v in logged(still, "kl").values())
    # a family without one is refused before any work

    class NoScale:
        family = "fm"

    assert learned_temperature(NoScale(), 0.0) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature_lr: a fm policy has no learned"):
        learned_temperature(NoScale(), 0.1)  # type: ignore[arg-type]


def test_probes_step_the_temperature_by_the_measured_slope(setup, tmp_path):
    """``temperature_optimizer: probe``: each step moves log(temperature factor) by exactly
    rate × the slope measured between the two groups of each input (constant schedule)."""
    run, rate = tmp_path / "probe", 0.7
    kw = {"eval.manifests": "[]", "temperature_lr": rate, "temperature_optimizer": "probe",
          "temperature_probe": 0.3}  # fmt: skip
    assert main(["gspo", "--no-progress", *overrides(setup, run, max_steps=3, **kw)]) == 0
    slope, factor = logged(run, "temperature_slope"), logged(run, "temperature_factor")
    assert sorted(slope) == [1, 2, 3] and any(abs(v) > 1e-3 for v in slope.values())
    before = -float(load_policy(setup / "base").logit_scale)
    for step in (1, 2, 3):
        after = float(np.log(factor[step]))
        assert after - before == pytest.approx(rate * slope[step], abs=2e-6)
        before = after


def test_probe_groups_differences_and_concatenated_rollouts(setup, tmp_path, monkeypatch):
    import sealign.rl.gspo as gspo_module
    from sealign.rl.gspo import _probe_differences, concat_rollouts

    group = np.repeat(np.arange(4), 2)  # inputs 0, 1: groups 0, 1 hotter, 2, 3 cooler
    comp = np.array([0.2, 0.4, 0.9, np.nan, 0.5, 0.5, 0.7, 0.9])
    # input 0: 0.3 − 0.5; input 1: 0.9 − 0.8
    assert _probe_differences(comp, group, 2) == (pytest.approx(-0.1), 2)
    assert _probe_differences(np.full(8, np.nan), group, 2) == (0.0, 0)
    # a rollout batch: each input twice, its first group hotter, every row's temperature kept
    kw = {"eval.manifests": "[]", "temperature_lr": 1, "temperature_optimizer": "probe",
          "temperature_probe": 0.4, "sampling.temperature": 0.9}  # fmt: skip
    cfg = load_config(GSPOConfig, None, overrides(setup, tmp_path / "r", **kw))
    policy = init_policy(cfg.model)
    data = PairDataset(cfg.data.train, cfg.data, policy.sample_rate, 0, True)
    examples = data.next_batch()
    gen = torch.Generator().manual_seed(0)
    seen = []  # the per-term spread is counted over the same groups as the advantages
    spread = gspo_module.component_zero_spread
    monkeypatch.setattr(gspo_module, "component_zero_spread",
                        lambda v, grp, ok: seen.append((grp, ok)) or spread(v, grp, ok))  # fmt: skip
    batch = generate_and_score(policy, examples, cfg, CompositeReward(cfg.reward), gen)
    n, g = len(examples), cfg.sampling.group_size
    assert [e.id for e in batch.examples] == [e.id for e in examples] * 2
    assert batch.group.tolist() == np.repeat(np.arange(2 * n), g).tolist()
    assert [(grp.tolist(), ok.tolist()) for grp, ok in seen] == [
        (batch.group.tolist(), batch.valid.tolist())
    ]
    temps = batch.rollout.actions["sampling"][:, 0]
    assert temps[: n * g].tolist() == pytest.approx([0.9 * np.exp(0.4)] * (n * g))
    assert temps[n * g :].tolist() == pytest.approx([0.9 * np.exp(-0.4)] * (n * g))
    assert batch.probe == _probe_differences(batch.composite, batch.group, n)
    logp, _ = policy.step_log_probs(batch.cond, batch.rollout)  # each row at its temperature
    torch.testing.assert_close(logp, batch.rollout.logp, atol=1e-4, rtol=0)
    # concatenation shifts the second part's sources
    cond = batch.cond.select(torch.arange(4))
    parts = [policy.sample(cond.select(torch.arange(lo, lo + 2)), temperature=1.0,
                           generator=gen) for lo in (0, 2)]  # fmt: skip
    assert concat_rollouts(parts, [2, 2]).source.tolist() == [0, 1, 2, 3]


def test_a_resumed_run_keeps_its_base_and_reference(tmp_path):
    from types import SimpleNamespace

    from sealign.rl.gspo import _check_same_base

    saved = tmp_path / "run" / "checkpoints" / "step_00000001" / "config.yaml"
    saved.parent.mkdir(parents=True)
    saved.write_text(f"model:\n  init_from: {tmp_path / 'ar'}\nreference_model: null\n")

    def cfg(init_from, reference=None):
        return SimpleNamespace(
            model=SimpleNamespace(init_from=init_from), reference_model=reference, temperature_lr=0
        )

    _check_same_base(saved, cfg(str(tmp_path / "x" / ".." / "ar")))  # the same, spelt otherwise
    with pytest.raises(ValueError, match="model.init_from: .*mgm now, but the run"):
        _check_same_base(saved, cfg(str(tmp_path / "mgm")))
    with pytest.raises(ValueError, match="reference_model"):
        _check_same_base(saved, cfg(str(tmp_path / "ar"), str(tmp_path / "ref")))
