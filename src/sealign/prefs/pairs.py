"""Preference pairs from scored candidates, by criterion.

Criteria (``--criterion``):

- ``unanimous`` (default, GenSR-Pref): ``w`` beats ``l`` only if it is strictly better on
  *every* metric of the set (by more than the metric's margin, when margins are given);
- ``single:<column>``: better on that one metric column (e.g. ``single:dnsmos_ovrl``);
- ``weighted``: the weighted mean of the metrics, each mapped to the reward scale
  (:func:`~sealign.rewards.composite.to_reward_scale`), is higher by more than ``margin``;
- ``gt-winner``: the clean reference always wins against every candidate (the ablation that the
  paper reports to collapse).

Directions come from the metrics' declarations (lower WER is better). For each input, every
ordered candidate pair that satisfies the criterion becomes a pair; ``max_pairs_per_input``
keeps those with the largest composite margin.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sealign.rewards.composite import to_reward_scale

GT = "clean"  # the candidate id of the clean reference in gt-winner pairs


@dataclass
class Candidate:
    """One sampled output: ids, its metric scores (``{column: value}``) and file locations."""

    input_id: str
    cand_id: str
    scores: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pair:
    input_id: str
    winner: str
    loser: str
    margin: float  # composite margin (reward scale) of winner over loser


@dataclass
class PairReport:
    """Yield of a criterion: pairs, inputs with at least one pair, candidates without scores,
    and per metric how often it disagreed with the majority of the others on a candidate pair."""

    criterion: str
    pairs: list[Pair]
    inputs: int
    inputs_with_pairs: int
    excluded_candidates: int
    disagreement: dict[str, float]

    def summary(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "pairs": len(self.pairs),
            "inputs": self.inputs,
            "inputs_with_pairs": self.inputs_with_pairs,
            "pairs_per_input": len(self.pairs) / max(1, self.inputs),
            "excluded_candidates": self.excluded_candidates,
            "disagreement": self.disagreement,
        }


def parse_criterion(criterion: str, columns: list[str]) -> tuple[str, str | None]:
    """``(kind, column)``; raises ``ValueError`` naming the valid choices."""
    if criterion in ("unanimous", "weighted", "gt-winner"):
        return criterion, None
    if criterion.startswith("single:"):
        col = criterion.split(":", 1)[1]
        if col not in columns:
            raise ValueError(
                f"criterion {criterion!r}: {col!r} is not a scored column ({', '.join(columns)})"
            )
        return "single", col
    raise ValueError(
        f"unknown criterion {criterion!r}; use unanimous, weighted, gt-winner or single:<column>"
    )


def _scaled(c: Candidate, columns: list[str], scales: dict[str, str], weights: dict[str, float]):
    vals = [(to_reward_scale(c.scores[k], scales[k]), weights.get(k, 1.0)) for k in columns]
    return sum(v * w for v, w in vals) / max(1e-12, sum(w for _, w in vals))


def make_pairs(
    candidates: list[Candidate],
    columns: list[str],
    higher_is_better: dict[str, bool],
    scales: dict[str, str],
    criterion: str = "unanimous",
    margins: dict[str, float] | None = None,
    weights: dict[str, float] | None = None,
    weighted_margin: float = 0.0,
    max_pairs_per_input: int = 0,
) -> PairReport:
    """Pairs of ``candidates`` (grouped by input) under ``criterion`` (see the module doc)."""
    kind, single = parse_criterion(criterion, columns)
    margins, weights = dict(margins or {}), dict(weights or {})
    by_input: dict[str, list[Candidate]] = {}
    excluded = 0
    for c in candidates:
        if any(k not in c.scores or not np.isfinite(c.scores[k]) for k in columns):
            excluded += 1
            continue
        by_input.setdefault(c.input_id, []).append(c)
    inputs = {c.input_id for c in candidates}
    pairs: list[Pair] = []
    disagree = dict.fromkeys(columns, 0)
    compared = 0
    for input_id, cands in by_input.items():
        comp = {c.cand_id: _scaled(c, columns, scales, weights) for c in cands}
        found: list[Pair] = []
        if kind == "gt-winner":
            found = [Pair(input_id, GT, c.cand_id, float("nan")) for c in cands]
        for a, b in itertools.permutations(cands, 2):
            # signed improvement of a over b per column (positive = a better)
            d = {
                k: (a.scores[k] - b.scores[k]) * (1 if higher_is_better[k] else -1) for k in columns
            }
            if a.cand_id < b.cand_id:  # count each unordered pair once
                compared += 1
                signs = {k: np.sign(v) for k, v in d.items()}
                for k in columns:
                    others = sum(s for j, s in signs.items() if j != k)
                    if signs[k] and others and np.sign(others) != signs[k]:
                        disagree[k] += 1
            if kind == "unanimous":
                ok = all(d[k] > margins.get(k, 0.0) for k in columns)
            elif kind == "single":
                ok = d[single] > margins.get(single, 0.0)  # type: ignore[index]
            elif kind == "weighted":
                ok = comp[a.cand_id] - comp[b.cand_id] > weighted_margin
            else:
                ok = False
            if ok:
                found.append(
                    Pair(input_id, a.cand_id, b.cand_id, comp[a.cand_id] - comp[b.cand_id])
                )
        if max_pairs_per_input and len(found) > max_pairs_per_input:
            found = sorted(found, key=lambda p: -np.nan_to_num(p.margin, nan=np.inf))
            found = found[:max_pairs_per_input]
        pairs.extend(found)
    return PairReport(
        criterion,
        pairs,
        len(inputs),
        len({p.input_id for p in pairs}),
        excluded,
        {k: v / max(1, compared) for k, v in disagree.items()},
    )


def no_pairs_message(report: PairReport) -> str:
    """Why a criterion gave nothing, naming the metrics that disagreed most."""
    if report.inputs == 0:
        return (
            f"criterion {report.criterion!r}: no input has candidates to pair; every input was "
            "skipped (the reasons are logged above: unreadable, silent or too long audio...)"
        )
    worst = sorted(report.disagreement.items(), key=lambda kv: -kv[1])[:3]
    detail = ", ".join(
        f"{k} disagreed with the others on {v:.0%} of candidate pairs" for k, v in worst
    )
    return (
        f"criterion {report.criterion!r} produced no pairs from {report.inputs} inputs "
        f"({report.excluded_candidates} candidates without complete scores). "
        f"Most disagreeing metrics: {detail or 'n/a'}. Sample more candidates per input, "
        "drop a metric, lower the margins, or use another criterion."
    )
