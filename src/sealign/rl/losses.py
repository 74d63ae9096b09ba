"""Policy-gradient losses over per-step log-probs: GSPO, GSPO-token and GRPO, plus the k3 KL.

All take ``[N, S]`` tensors (N sampled outputs, S steps; ``mask`` 1 on real steps) and
advantages ``[N]`` (or ``[N, S]`` for GSPO-token and GRPO). With ``log r`` the per-step
log-ratio ``logp - old_logp``:

- ``gspo``: one ratio per sequence, ``s_i = exp(mean_t log r_it)`` (length-normalized), clipped
  to ``[1 - eps_low, 1 + eps_high]``;
- ``gspo_token``: ``s_it = sg[s_i] · π(y_it) / sg[π(y_it)]``: the GSPO value with token-level
  gradients, so per-token advantages can be used (equal to ``gspo`` when they are constant);
- ``grpo``: per-token ratios ``r_it`` clipped token by token.

The loss is ``-min(ratio · A, clip(ratio) · A) + β · KL_k3`` per step, averaged over the steps
of each sequence, then over sequences (TRL's ``loss_type="grpo"``, which
``tests/test_rl_losses.py`` checks against TRL itself). ``entropy_coef`` subtracts
``coef · mean entropy``: a bonus when positive, a penalty (entropy minimization) when negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSSES = ("gspo", "gspo_token", "grpo")
# clipping ranges (eps_low, eps_high) when none is given: a sequence ratio is a geometric mean
# over many steps, so GSPO clips it far tighter than GRPO clips a token's (the GSPO paper's
# 3e-4 / 4e-4 against PPO's 0.2)
DEFAULT_EPS = {"gspo": (3e-4, 4e-4), "gspo_token": (3e-4, 4e-4), "grpo": (0.2, 0.2)}


@dataclass
class LossOutput:
    """The loss and detached statistics (clip fractions, ratio, KL, entropy) for logging."""

    loss: torch.Tensor
    stats: dict[str, float]


def _seq_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean over masked steps ``[N]``."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-step k3 estimator of KL(π‖π_ref): ``exp(ref - logp) - (ref - logp) - 1`` (≥ 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def log_importance_weights(
    logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, loss_type: str
) -> torch.Tensor:
    """Log of the importance ratio: ``[N, 1]`` for ``gspo``, ``[N, S]`` otherwise."""
    log_ratio = logp - old_logp
    if loss_type == "grpo":
        return log_ratio
    seq = _seq_mean(log_ratio, mask).unsqueeze(-1)
    if loss_type == "gspo":
        return seq
    if loss_type == "gspo_token":
        return logp - logp.detach() + seq.detach()
    raise ValueError(f"unknown loss {loss_type!r}; known: {', '.join(LOSSES)}")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "gspo",
    eps_low: float | None = None,
    eps_high: float | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> LossOutput:
    """The clipped surrogate loss to minimize (see the module doc) and its statistics.

    ``logp`` / ``old_logp`` / ``mask`` ``[N, S]``; ``advantages`` ``[N]`` (or ``[N, 1]``), or
    ``[N, S]`` for ``gspo_token`` and ``grpo``; ``eps_low`` / ``eps_high`` default to the loss's
    own (:data:`DEFAULT_EPS`). Masked steps may hold anything, NaN and -inf included."""
    if loss_type not in LOSSES:
        raise ValueError(f"unknown loss {loss_type!r}; known: {', '.join(LOSSES)}")
    eps_low = DEFAULT_EPS[loss_type][0] if eps_low is None else eps_low
    eps_high = DEFAULT_EPS[loss_type][1] if eps_high is None else eps_high
    if not (0 <= eps_low < 1 and eps_high >= 0):
        raise ValueError(f"eps_low must be in [0, 1) and eps_high >= 0, got {eps_low}, {eps_high}")
    if logp.dim() != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            f"logp, old_logp and mask must share one [N, S] shape, got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(mask.shape)}"
        )
    real = mask.bool()
    mask = mask.to(logp.dtype)
    # padding may hold -inf or NaN: 0 * -inf would make the loss NaN
    logp = torch.where(real, logp, torch.zeros((), dtype=logp.dtype, device=logp.device))
    old_logp = torch.where(real, old_logp, torch.zeros_like(logp))
    if ref_logp is not None:
        ref_logp = torch.where(real, ref_logp, torch.zeros_like(logp))
    if entropy is not None:
        entropy = torch.where(real, entropy, torch.zeros_like(logp))
    adv = torch.as_tensor(advantages, device=logp.device).to(logp.dtype)
    if adv.dim() == 2 and adv.shape[1] == 1:
        adv = adv[:, 0]
    if (
        adv.shape[0] != logp.shape[0]
        or adv.dim() > 2
        or (adv.dim() == 2 and adv.shape != logp.shape)
    ):
        raise ValueError(
            f"advantages: one per sequence [{logp.shape[0]}] or one per step "
            f"{list(logp.shape)}, got {list(adv.shape)}"
        )
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)
    elif loss_type == "gspo":
        raise ValueError("gspo takes one advantage per sequence; use gspo_token for per-step ones")
    log_w = log_importance_weights(logp, old_logp.detach(), mask, loss_type)
    coef1 = torch.exp(log_w)
    coef2 = torch.clamp(coef1, 1.0 - eps_low, 1.0 + eps_high)
    per_step = -torch.min(coef1 * adv, coef2 * adv)
    kl = None
    if ref_logp is not None:
        kl = kl_k3(logp, ref_logp.detach())
        if beta:
            per_step = per_step + beta * kl
    loss = _seq_mean(per_step, mask).mean()
    ent_mean = None
    if entropy is not None:
        ent_mean = _seq_mean(entropy, mask).mean()
        if entropy_coef:
            loss = loss - entropy_coef * ent_mean
    with torch.no_grad():
        c = coef1.detach().expand_as(logp) if coef1.shape != logp.shape else coef1.detach()
        a = adv.expand_as(logp)
        low = ((c < 1.0 - eps_low) & (a < 0)).to(logp.dtype)
        high = ((c > 1.0 + eps_high) & (a > 0)).to(logp.dtype)
        denom = mask.sum().clamp(min=1.0)
        stats = {
            "clip_ratio/low_mean": float((low * mask).sum() / denom),
            "clip_ratio/high_mean": float((high * mask).sum() / denom),
            "clip_ratio/region_mean": float(((low + high) * mask).sum() / denom),
            "ratio/mean": float(_seq_mean(c, mask).mean()),
        }
        if kl is not None:
            stats["kl"] = float(_seq_mean(kl.detach(), mask).mean())
        if ent_mean is not None:
            stats["entropy"] = float(ent_mean)
    return LossOutput(loss, stats)
