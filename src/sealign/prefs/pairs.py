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
import math
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


def check_pairing(
    columns: list[str],
    margins: dict[str, float] | None = None,
    weights: dict[str, float] | None = None,
    weighted_margin: float = 0.0,
    max_pairs_per_input: int = 0,
) -> None:
    """Refuse pairing settings that would give contradictory or silently ignored pairs: no
    columns (every pair would be unanimous, both ways), negative margins (a pair and its reverse
    both pass), non-positive weights (which flip or drop a metric), keys of no column."""
    if not columns:
        raise ValueError("columns: at least one metric column is needed to compare candidates")
    for name, values in (("margins", margins or {}), ("weights", weights or {})):
        unknown = sorted(set(values) - set(columns))
        if unknown:
            raise ValueError(f"{name}: {unknown} not among the columns {columns}")
    for k, v in (margins or {}).items():
        if not 0 <= v < math.inf:
            raise ValueError(f"margins.{k} must be a finite number >= 0, got {v}")
    for k, v in (weights or {}).items():
        if not 0 < v < math.inf:
            raise ValueError(f"weights.{k} must be a finite number > 0, got {v}")
    if not 0 <= weighted_margin < math.inf:
        raise ValueError(f"weighted_margin must be a finite number >= 0, got {weighted_margin}")
    if max_pairs_per_input < 0:
        raise ValueError(f"max_pairs_per_input must be >= 0 (0: all), got {max_pairs_per_input}")


def _score(c: Candidate, k: str) -> float | None:
    """``c``'s score in column ``k`` when it is a finite number (a hand-edited or external
    file may hold null or text)."""
    v = c.scores.get(k)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _scaled(c: Candidate, columns: list[str], scales: dict[str, str], weights: dict[str, float]):
    vals = [(to_reward_scale(c.scores[k], scales[k]), weights.get(k, 1.0))
            for k in columns if _score(c, k) is not None]  # fmt: skip
    if not vals:
        return float("nan")
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
    """Pairs of ``candidates`` (grouped by input) under ``criterion`` (see the module doc). A
    candidate lacking a score the criterion compares is left out (``single:<column>`` needs
    that column, ``gt-winner`` none); ``gt-winner`` pairs only inputs with a reference (a
    candidate whose ``extra`` has ``reference: None`` has none)."""
    kind, single = parse_criterion(criterion, columns)
    check_pairing(columns, margins, weights, weighted_margin, max_pairs_per_input)
    margins, weights = dict(margins or {}), dict(weights or {})
    needed = {"single": [single], "gt-winner": []}.get(kind, columns)
    by_input: dict[str, list[Candidate]] = {}
    excluded = 0
    for c in candidates:
        if any(_score(c, k) is None for k in needed):  # type: ignore[arg-type]
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
        if kind == "gt-winner" and all(c.extra.get("reference", True) for c in cands):
            found = [Pair(input_id, GT, c.cand_id, float("nan")) for c in cands]
        for a, b in itertools.permutations(cands, 2):
            # signed improvement of a over b per column both have (positive = a better)
            d = {
                k: (a.scores[k] - b.scores[k]) * (1 if higher_is_better[k] else -1)
                for k in columns
                if _score(a, k) is not None and _score(b, k) is not None
            }
            if a.cand_id < b.cand_id:  # count each unordered pair once
                compared += 1
                signs = {k: np.sign(v) for k, v in d.items()}
                for k in signs:
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
