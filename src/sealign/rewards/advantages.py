"""Group-relative advantages from per-component rewards.

``values [N, C]`` holds scaled component rewards (NaN = not applicable), ``group [N]`` the
input each sample was generated for. Samples flagged ``failed`` get no advantage and are left
out of their group's statistics. Aggregations:

- ``sum_then_normalize``: composite ``r_i`` = weighted mean of the available components, then
  ``A_i = (r_i - mean_g r) / (std_g r + eps)`` within the group (GSPO / GRPO as published);
- ``normalize_then_sum``: normalize each component within the group first, then take the
  weighted mean of the normalized components (metrics with a wide spread cannot dominate);
- ``rank``: replace each component by its centred rank within the group, scaled to [-1, 1]
  (ties share a rank), then take the weighted mean; invariant to any monotone metric transform.

``std`` is the unbiased sample standard deviation and ``eps = 1e-4``, as in TRL. A group (or a
component within it) with zero spread gives zero advantages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum", "rank")
EPS = 1e-4


@dataclass
class GroupAdvantages:
    """``advantages [N]`` (0 for excluded samples), ``composite [N]`` (weighted mean of the
    available components; NaN when excluded), ``valid [N]`` (sample enters the loss),
    ``frac_reward_zero_std`` (groups that give no learning signal: under
    ``sum_then_normalize`` a composite without spread, under the other aggregations advantages
    that are all zero, which components without spread or cancelling each other give)."""

    advantages: np.ndarray
    composite: np.ndarray
    valid: np.ndarray
    frac_reward_zero_std: float


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted mean over the non-NaN columns (NaN where a row has none)."""
    ok = np.isfinite(values)
    w = np.where(ok, weights[None, :], 0.0)
    total = w.sum(axis=1)
    s = np.where(ok, values, 0.0) @ weights
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, s / np.where(total > 0, total, 1.0), np.nan)


def _zscore(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """Z-scores of the finite entries of ``x`` (NaN elsewhere) and whether x has no spread."""
    ok = np.isfinite(x)
    out = np.full_like(x, np.nan)
    if ok.sum() < 2:
        out[ok] = 0.0
        return out, True
    v = x[ok]
    sd = v.std(ddof=1)
    out[ok] = (v - v.mean()) / (sd + EPS)
    return out, bool(np.isclose(sd, 0.0))


def _centred_rank(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    out = np.full_like(x, np.nan)
    n = int(ok.sum())
    if n < 2:
        out[ok] = 0.0
        return out
    v = x[ok]
    less = (v[:, None] > v[None, :]).sum(axis=1)
    ties = (v[:, None] == v[None, :]).sum(axis=1)
    rank = less + (ties - 1) / 2.0  # average rank, 0-based
    out[ok] = (rank - (n - 1) / 2.0) / ((n - 1) / 2.0)
    return out


def group_advantages(
    values: np.ndarray,
    group: np.ndarray,
    weights: np.ndarray,
    aggregation: str = "sum_then_normalize",
    failed: np.ndarray | None = None,
) -> GroupAdvantages:
    """Advantages of N samples in groups (see the module doc)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; known: {', '.join(AGGREGATIONS)}")
    values = np.asarray(values, dtype=np.float64)
    group = np.asarray(group)
    weights = np.asarray(weights, dtype=np.float64)
    n = values.shape[0]
    failed = np.zeros(n, dtype=bool) if failed is None else np.asarray(failed, dtype=bool)
    composite = weighted_mean(values, weights)
    valid = ~failed & np.isfinite(composite)
    composite = np.where(valid, composite, np.nan)
    adv = np.zeros(n)
    groups = np.unique(group)
    zero_std = 0
    for g in groups:
        idx = np.flatnonzero((group == g) & valid)
        z, flat = _zscore(composite[idx])
        if aggregation == "sum_then_normalize":
            zero_std += flat
            adv[idx] = z
            continue
        comp = values[idx]
        per = (
            np.stack(
                [
                    _zscore(comp[:, j])[0]
                    if aggregation == "normalize_then_sum"
                    else _centred_rank(comp[:, j])
                    for j in range(comp.shape[1])
                ],
                axis=1,
            )
            if len(idx)
            else comp
        )
        a = weighted_mean(per, weights) if len(idx) else np.zeros(0)
        adv[idx] = np.nan_to_num(a)
        zero_std += bool(np.allclose(adv[idx], 0.0, atol=1e-9))
    return GroupAdvantages(adv, composite, valid, zero_std / max(1, len(groups)))


def component_zero_spread(values: np.ndarray, group: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per component (column of ``values [N, C]``), the fraction of groups in which it has no
    spread: fewer than two valid samples with a value, or the same value for all of them. Such
    a group gets nothing from that term under ``normalize_then_sum`` whatever its weight (e.g.
    WER on inputs whose outputs are all transcribed right, or all wrong), and next to nothing
    under the other aggregations. A term with word credit has per-word signal even when its
    sequence value is flat; ``frac_words_with_spread`` measures that."""
    values = np.asarray(values, dtype=np.float64)
    group, valid = np.asarray(group), np.asarray(valid, dtype=bool)
    groups = np.unique(group)
    flat = np.zeros(values.shape[1])
    for g in groups:
        rows = values[(group == g) & valid]
        flat += [_zscore(rows[:, j])[1] for j in range(values.shape[1])]
    return flat / max(1, len(groups))
