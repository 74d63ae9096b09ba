"""``sealign.rl.losses`` against TRL's ``GRPOTrainer`` loss, plus TRL-free properties.

The differential tests run TRL's own ``GRPOTrainer._compute_loss`` (the pinned ``trl`` of the
``dev`` extra) on the same float64 tensors as ``policy_loss`` and compare loss values and
gradients w.r.t. the per-step log-probs to 1e-6. The trainer is made with
``object.__new__(GRPOTrainer)`` (no model, dataset or generation set-up); its ``args`` is a real
``GRPOConfig`` and the attributes ``_compute_loss`` reads are copied from it as
``GRPOTrainer.__init__`` does. Its per-token log-prob method is replaced by one returning our
``logp`` leaf, so everything after the model's forward pass is TRL's arithmetic.

Mapping: ``grpo`` = ``loss_type="grpo", importance_sampling_level="token"``; ``gspo`` =
``loss_type="grpo", importance_sampling_level="sequence"`` (TRL 1.16 has no GSPO-token level;
``gspo_token`` is checked against ``gspo`` below). ``policy_loss``'s KL term is the plain k3
estimator, which is TRL's ``use_bias_correction_kl=False``; TRL's default (True) multiplies the
per-token KL by the importance ratio, so the tests set it explicitly.

Without TRL installed only the TRL-free tests run (the fixture ``trl_grpo`` skips the rest).
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch
from torch import nn

from sealign.rl.losses import kl_k3, log_importance_weights, policy_loss

# transformers' TrainingArguments warns about its own renamed field on every GRPOConfig.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`gradient_checkpointing` is deprecated:FutureWarning"
)

N, S, PROMPT = 6, 9, 4
LENGTHS = [9, 7, 5, 3, 8, 1]
# GSPO batch: per-sequence log-ratio offsets and advantages chosen so that rows 0 and 1 are
# clipped (ratio above 1 + eps_high with A > 0, below 1 - eps_low with A < 0), rows 2 and 3 are
# outside the range but on the unclipped side of the min, and rows 4 and 5 are inside it.
GSPO_SHIFT = [1e-3, -1e-3, 1e-3, -1e-3, 1e-4, -5e-5]
GSPO_SIGN = [1.0, -1.0, -1.0, 1.0, 1.0, -1.0]
GSPO_EPS = (3e-4, 4e-4)
GRPO_EPS = (0.2, 0.2)
TRL_SKIP = (
    "trl is not installed: `pip install -e .[dev]` installs the pinned version needed for the "
    "differential test against TRL's GRPOTrainer loss"
)


def _batch(level: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded float64 ``[N, S]`` log-probs with a ragged mask; garbage on padded steps."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    mask = (torch.arange(S) < torch.tensor(LENGTHS)[:, None]).long()
    logp = -3.0 * torch.rand(N, S, generator=g, dtype=torch.float64) - 0.05
    ref_logp = logp + 0.3 * randn(N, S)
    if level == "token":
        old_logp = logp + 0.3 * randn(N, S)  # many per-token ratios leave [0.8, 1.2]
        advantages = randn(N)
    else:
        shift = torch.tensor(GSPO_SHIFT, dtype=torch.float64)[:, None]
        old_logp = logp - shift + 2e-5 * randn(N, S)
        advantages = torch.tensor(GSPO_SIGN, dtype=torch.float64) * (
            0.5 + torch.rand(N, generator=g)
        )
    entropy = torch.rand(N, S, generator=g, dtype=torch.float64) * 2.0
    return dict(
        logp=logp,
        old_logp=old_logp,
        ref_logp=ref_logp,
        advantages=advantages,
        mask=mask,
        entropy=entropy,
    )


def _ours(b, loss_type, eps, beta, entropy_coef=0.0):
    logp = b["logp"].clone().requires_grad_(True)
    out = policy_loss(
        logp,
        b["old_logp"],
        b["advantages"],
        b["mask"],
        loss_type=loss_type,
        eps_low=eps[0],
        eps_high=eps[1],
        ref_logp=b["ref_logp"] if beta else None,
        beta=beta,
        entropy=b["entropy"],
        entropy_coef=entropy_coef,
    )
    out.loss.backward()
    return out.loss.detach(), logp.grad, out.stats


# --- TRL differential tests -------------------------------------------------------------------


class _SingleProcess:
    """The parts of ``accelerate.Accelerator`` that ``_compute_loss`` uses, for one process."""

    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


@pytest.fixture(scope="module")
def trl_grpo():
    pytest.importorskip("trl", reason=TRL_SKIP)
    from trl import GRPOConfig, GRPOTrainer

    return GRPOConfig, GRPOTrainer


def _trl(trl_grpo, tmp_path, b, level, eps, beta, entropy_coef=0.0, **config):
    """Loss, gradient w.r.t. ``logp`` and logged metrics from TRL's ``_compute_loss``."""
    GRPOConfig, GRPOTrainer = trl_grpo
    config.setdefault("use_bias_correction_kl", False)
    args = GRPOConfig(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        loss_type="grpo",
        importance_sampling_level=level,
        epsilon=eps[0],
        epsilon_high=eps[1],
        beta=beta,
        entropy_coef=entropy_coef,
        **config,
    )
    t = object.__new__(GRPOTrainer)
    # What GRPOTrainer.__init__ derives from args and _compute_loss reads.
    t.args = args
    t.loss_type = args.loss_type
    t.importance_sampling_level = args.importance_sampling_level
    t.beta = args.beta
    t.epsilon_low = args.epsilon
    t.epsilon_high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    t.top_entropy_quantile = args.top_entropy_quantile
    t.off_policy_mask_threshold = args.off_policy_mask_threshold
    t.use_vllm = args.use_vllm
    t.vllm_importance_sampling_correction = args.vllm_importance_sampling_correction
    t.aux_loss_enabled = False
    t.entropy_coef = args.entropy_coef
    t.use_adaptive_entropy = args.use_adaptive_entropy
    t._entropy_bonus_enabled = t.entropy_coef != 0.0 or t.use_adaptive_entropy
    t._last_world_entropy = float("inf")
    t._entropy_window_stats = None
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    # Set by Trainer's training loop; training mode with 1 step means no accumulation scaling.
    t.current_gradient_accumulation_steps = 1
    t.accelerator = _SingleProcess()
    t.model = nn.Module()  # only `.training` is read (True: "train" mode)

    logp = b["logp"].clone().requires_grad_(True)

    def per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, **kw):
        assert logits_to_keep == S and input_ids.shape == (N, PROMPT + S)
        assert attention_mask.shape == input_ids.shape
        return logp, b["entropy"], None

    t._get_per_token_logps_and_entropies = per_token_logps_and_entropies
    inputs = {
        "prompt_ids": torch.zeros(N, PROMPT, dtype=torch.long),
        "prompt_mask": torch.ones(N, PROMPT, dtype=torch.long),
        "completion_ids": torch.zeros(N, S, dtype=torch.long),
        "completion_mask": b["mask"],
        "advantages": b["advantages"],
        "old_per_token_logps": b["old_logp"],
    }
    if beta:
        inputs["ref_per_token_logps"] = b["ref_logp"]
    loss = t._compute_loss(t.model, inputs)
    loss.backward()
    metrics = {k: v[-1] for k, v in t._metrics["train"].items()}
    return loss.detach(), logp.grad, metrics


CASES = [
    pytest.param("grpo", "token", GRPO_EPS, 0.0, id="grpo-token"),
    pytest.param("grpo", "token", GRPO_EPS, 0.04, id="grpo-token-kl"),
    pytest.param("gspo", "sequence", GSPO_EPS, 0.0, id="gspo-sequence"),
    pytest.param("gspo", "sequence", GSPO_EPS, 0.04, id="gspo-sequence-kl"),
]


@pytest.mark.parametrize("loss_type,level,eps,beta", CASES)
def test_loss_and_grad_match_trl(trl_grpo, tmp_path, loss_type, level, eps, beta):
    b = _batch(level)
    ref_loss, ref_grad, metrics = _trl(trl_grpo, tmp_path, b, level, eps, beta)
    loss, grad, stats = _ours(b, loss_type, eps, beta)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=0)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert (grad * (1 - b["mask"])).abs().max() == 0  # padded steps get no gradient
    # The batches exercise clipping: some ratios are clipped and some are not.
    region = metrics["clip_ratio/region_mean"]
    if level == "token":
        assert 0.05 < region < 0.95
        for k in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"):
            assert stats[k] == pytest.approx(metrics[k], abs=1e-6), k  # TRL counts in float32
    else:
        assert region == pytest.approx(2 / N)  # rows 0 and 1, a fraction of sequences in TRL
        if not beta:  # clipped sequences get no policy gradient, the others do
            assert grad[:2].abs().max() == 0
            assert (grad[2:].abs().sum(-1) > 0).all()
    if beta:
        assert metrics["kl"] > 0 and stats["kl"] > 0


def test_trl_default_bias_corrected_kl_is_not_ours(trl_grpo, tmp_path):
    """TRL's default ``use_bias_correction_kl=True`` weights the KL by the ratio: a different loss."""
    b = _batch("token")
    _, ref_grad, _ = _trl(
        trl_grpo, tmp_path, b, "token", GRPO_EPS, 0.04, use_bias_correction_kl=True
    )
    _, grad, _ = _ours(b, "grpo", GRPO_EPS, 0.04)
    assert not torch.allclose(grad, ref_grad, atol=1e-6, rtol=0)


@pytest.mark.xfail(
    strict=True,
    reason="known divergence: policy_loss's entropy bonus is a per-sequence mean then a batch mean; "
    "TRL 1.16's is a mean over all masked tokens, so they differ on ragged masks",
)
def test_entropy_bonus_matches_trl(trl_grpo, tmp_path):
    b = _batch("token")
    ref_loss, ref_grad, _ = _trl(trl_grpo, tmp_path, b, "token", GRPO_EPS, 0.0, entropy_coef=0.01)
    loss, grad, _ = _ours(b, "grpo", GRPO_EPS, 0.0, entropy_coef=0.01)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=0)


@pytest.mark.xfail(
    strict=True,
    reason="known divergence in logged statistics only: at sequence level TRL's clip_ratio/* are "
    "fractions of sequences, ours fractions of tokens; TRL's kl is a mean over all masked tokens, "
    "ours a per-sequence mean then a batch mean",
)
def test_sequence_level_stats_match_trl(trl_grpo, tmp_path):
    b = _batch("sequence")
    _, _, metrics = _trl(trl_grpo, tmp_path, b, "sequence", GSPO_EPS, 0.04)
    _, _, stats = _ours(b, "gspo", GSPO_EPS, 0.04)
    for k in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "kl"):
        assert stats[k] == pytest.approx(metrics[k], abs=1e-6), k


# --- TRL-free properties ----------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("per_step_adv", [False, True])
def test_gspo_token_equals_gspo_for_constant_advantages(beta, per_step_adv):
    b = _batch("sequence")
    loss, grad, stats = _ours(b, "gspo", GSPO_EPS, beta)
    if per_step_adv:  # the same constant advantage given on every step
        b = dict(b, advantages=b["advantages"][:, None].expand(N, S).clone())
    tok_loss, tok_grad, tok_stats = _ours(b, "gspo_token", GSPO_EPS, beta)
    torch.testing.assert_close(tok_loss, loss, atol=1e-12, rtol=0)
    torch.testing.assert_close(tok_grad, grad, atol=1e-12, rtol=0)
    assert tok_stats["clip_ratio/region_mean"] == pytest.approx(stats["clip_ratio/region_mean"])
    assert 0 < stats["clip_ratio/region_mean"] < 1


@pytest.mark.parametrize("loss_type", ["gspo", "gspo_token", "grpo"])
def test_on_policy_ratio_is_one_and_loss_is_minus_mean_advantage(loss_type):
    b = _batch("sequence")
    mask = b["mask"].double()
    log_w = log_importance_weights(b["logp"], b["logp"].clone(), mask, loss_type)
    assert torch.equal(torch.exp(log_w), torch.ones_like(log_w))
    out = policy_loss(
        b["logp"], b["logp"].clone(), b["advantages"], b["mask"], loss_type, *GSPO_EPS
    )
    assert float(out.loss) == pytest.approx(-float(b["advantages"].mean()), abs=1e-12)
    assert out.stats["ratio/mean"] == 1.0
    assert out.stats["clip_ratio/region_mean"] == 0.0


def test_kl_k3_nonnegative_and_zero_at_equality():
    g = torch.Generator().manual_seed(1)
    logp = -5.0 * torch.rand(1000, generator=g, dtype=torch.float64)
    ref = logp + 3.0 * torch.randn(1000, generator=g, dtype=torch.float64)
    kl = kl_k3(logp, ref)
    assert (kl >= 0).all() and (kl > 0).any()
    assert torch.equal(kl_k3(logp, logp.clone()), torch.zeros_like(logp))


@pytest.mark.parametrize("coef", [0.05, -0.05])
def test_entropy_term_is_a_bonus_or_a_penalty_of_the_per_sequence_mean(coef):
    b = _batch("token")
    ent = b["entropy"].clone().requires_grad_(True)
    kw = dict(loss_type="grpo", eps_low=GRPO_EPS[0], eps_high=GRPO_EPS[1], entropy=ent)
    plain = policy_loss(b["logp"], b["old_logp"], b["advantages"], b["mask"], **kw)
    out = policy_loss(b["logp"], b["old_logp"], b["advantages"], b["mask"], **kw, entropy_coef=coef)
    m = b["mask"]
    seq_mean = ((b["entropy"] * m).sum(-1) / m.sum(-1)).mean()
    torch.testing.assert_close(out.loss - plain.loss, -coef * seq_mean)
    out.loss.backward()
    # minimizing the loss raises entropy for a bonus and lowers it for a penalty
    assert (torch.sign(-ent.grad[m > 0]) == (1 if coef > 0 else -1)).all()


def test_statistics_count_only_real_steps_by_hand():
    # token-level ratios; the second sequence's last step is padding (ratio 10, a KL of its own)
    ratio = torch.tensor([[1.5, 0.5], [0.5, 10.0], [1.5, 1.0]], dtype=torch.float64)
    logp, old = torch.log(ratio), torch.zeros_like(ratio)
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    adv = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    ref = logp.clone()
    ref[0, 0] += 1.0  # k3 = e - 2 on this step
    ref[1, 1] += 5.0  # padding: not counted
    out = policy_loss(logp, old, adv, mask, "grpo", 0.2, 0.2, ref_logp=ref)
    # high clip: ratio 1.5 with a positive advantage (not with advantage 0); low clip: ratio
    # 0.5 with a negative one; 5 real steps
    assert out.stats["clip_ratio/high_mean"] == pytest.approx(1 / 5)
    assert out.stats["clip_ratio/low_mean"] == pytest.approx(1 / 5)
    assert out.stats["ratio/mean"] == pytest.approx((1.0 + 0.5 + 1.25) / 3)
    assert out.stats["kl"] == pytest.approx((math.e - 2) / 2 / 3)
    # per sequence: -(1.2 + 0.5) / 2, +0.8, 0
    assert float(out.loss) == pytest.approx((-0.85 + 0.8 + 0.0) / 3)


def test_a_sequence_without_real_steps_adds_nothing_and_no_nan():
    logp = torch.tensor([[-1.0, -2.0], [-1.5, -0.5]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1], [0, 0]])
    out = policy_loss(logp, logp.detach() - 0.1, torch.tensor([1.0, 1.0]), mask, "gspo", 0.2, 0.2)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(logp.grad).all()
    assert logp.grad[1].abs().sum() == 0


def test_policy_loss_defaults_checks_and_padding():
    from sealign.rl.losses import DEFAULT_EPS

    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(4, 6, generator=g) - 0.5
    old = logp + 0.3 * torch.randn(4, 6, generator=g)
    adv = torch.randn(4, generator=g)
    mask = torch.ones(4, 6)
    mask[0, 4:] = 0
    # each loss clips with its own range unless told: GRPO's 0.2, not GSPO's 3e-4
    grpo = policy_loss(logp, old, adv, mask, "grpo")
    same = policy_loss(logp, old, adv, mask, "grpo", *DEFAULT_EPS["grpo"])
    assert torch.equal(grpo.loss, same.loss) and DEFAULT_EPS["grpo"] == (0.2, 0.2)
    tight = policy_loss(logp, old, adv, mask, "grpo", 3e-4, 4e-4)
    assert grpo.stats["clip_ratio/region_mean"] < tight.stats["clip_ratio/region_mean"]
    # [N, 1] advantages and numpy ones are one per sequence too
    base = policy_loss(logp, old, adv, mask)
    assert torch.equal(policy_loss(logp, old, adv[:, None], mask).loss, base.loss)
    assert torch.allclose(policy_loss(logp, old, adv.numpy(), mask).loss, base.loss)
    # padding may hold -inf or NaN
    pad_logp, pad_old = logp.clone(), old.clone()
    pad_logp[0, 4:], pad_old[0, 4:] = -math.inf, math.nan
    padded = policy_loss(pad_logp, pad_old, adv, mask, ref_logp=pad_old, beta=0.1)
    assert torch.allclose(
        padded.loss, policy_loss(logp, old, adv, mask, ref_logp=old, beta=0.1).loss
    )
    # shapes that broadcasting would hide
    with pytest.raises(
        ValueError, match=r"one per sequence \[4\] or one per step \[4, 6\], got \[1\]"
    ):
        policy_loss(logp, old, adv[:1], mask)
    with pytest.raises(ValueError, match="must share one"):
        policy_loss(logp, old, adv, mask[:, :1])
    with pytest.raises(ValueError, match="eps_low must be in"):
        policy_loss(logp, old, adv, mask, eps_low=-0.1)
