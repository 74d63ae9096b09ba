"""Held-out evaluation during RL, and the reward-hacking alarm.

The held-out set is enhanced with fixed seeds (the same draws at every evaluation) and scored on
every metric of the evaluation set, including metrics that are not in the reward. A metric
*not* in the reward whose paired difference to the first evaluation (step 0, the base model)
has its whole bootstrap 95% CI on the bad side of zero raises the alarm: the policy is probably
gaming the rewarded metrics at the expense of what they do not see.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sealign.eval.score import column_name
from sealign.eval.stats import paired_bootstrap_diff
from sealign.metrics.base import Metric, MetricUnavailable, Utterance
from sealign.models.policy import Policy
from sealign.train.data import Example

log = logging.getLogger(__name__)


@torch.no_grad()
def enhance_examples(
    policy: Policy,
    examples: list[Example],
    temperature: float,
    seed: int,
    batch_size: int = 8,
    **options: Any,
) -> list[np.ndarray]:
    """One sampled enhancement per example (seeded per batch, so results do not depend on
    what ran before)."""
    out: list[np.ndarray] = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        cond = policy.condition([e.noisy for e in batch])
        gen = torch.Generator().manual_seed(seed + start)
        rollout = policy.sample(cond, temperature=temperature, generator=gen, **options)
        out.extend(policy.decode(rollout))
    return out


def score_records(utts: list[Utterance], metrics: dict[str, Metric]) -> list[dict[str, Any]]:
    """``[{"id", "scores": {column: value}}]`` for each utterance; a metric that cannot load
    is dropped from ``metrics`` (logged)."""
    records: list[dict[str, Any]] = [{"id": u.id, "scores": {}} for u in utts]
    for name in list(metrics):
        try:
            results = metrics[name].score_batch(utts)
        except MetricUnavailable as err:
            log.warning("eval: dropping metric %s: %s", name, err)
            del metrics[name]
            continue
        for rec, r in zip(records, results, strict=True):
            for k, v in r.values.items():
                rec["scores"][column_name(name, k)] = v
    return records


def summarize_records(records: list[dict[str, Any]], prefix: str = "eval/") -> dict[str, float]:
    cols: dict[str, list[float]] = {}
    for r in records:
        for k, v in r["scores"].items():
            cols.setdefault(k, []).append(v)
    return {f"{prefix}{k}": float(np.mean(v)) for k, v in cols.items()}


@dataclass
class Alarm:
    column: str
    diff: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.column} changed by {self.diff:+.3f} (95% CI [{self.low:+.3f}, {self.high:+.3f}])"


def hacking_alarms(
    baseline: list[dict[str, Any]],
    current: list[dict[str, Any]],
    higher_is_better: dict[str, bool],
    rewarded: set[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> list[Alarm]:
    """Non-rewarded columns that got significantly worse than ``baseline`` (paired by id)."""
    base = {r["id"]: r["scores"] for r in baseline}
    alarms = []
    for col, hib in higher_is_better.items():
        if col in rewarded:
            continue
        pairs = [
            (base[r["id"]][col], r["scores"][col])
            for r in current
            if r["id"] in base and col in base[r["id"]] and col in r["scores"]
        ]
        if len(pairs) < 2:
            continue
        a, b = (np.array(x) for x in zip(*pairs, strict=True))
        ci = paired_bootstrap_diff(a, b, n_boot=n_boot, seed=seed)
        worse = ci.high < 0 if hib else ci.low > 0
        if worse:
            alarms.append(Alarm(col, ci.mean, ci.low, ci.high))
    return alarms


def metric_directions(metrics: dict[str, Metric]) -> dict[str, bool]:
    """``{column: higher_is_better}`` of every output of ``metrics``."""
    return {
        column_name(n, o): h
        for n, m in metrics.items()
        for o, h in zip(m.info.outputs, m.info.higher_is_better, strict=True)
    }
