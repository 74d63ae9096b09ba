"""Side-by-side tables of several systems (noisy / model / clean …) scored on the same items."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sealign.eval.score import column_name
from sealign.eval.stats import mean_ci, paired_bootstrap_diff
from sealign.metrics.base import MetricInfo


def compare_table(systems: dict[str, list[dict[str, Any]]], infos: dict[str, MetricInfo]) -> str:
    """Markdown table: one row per metric output, one column per system, ``mean ± CI half-width``."""
    names = list(systems)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for metric, info in infos.items():
        for out, hib, span in zip(info.outputs, info.higher_is_better, info.ranges, strict=True):
            col = column_name(metric, out)
            cells = []
            for recs in systems.values():
                ci = mean_ci([r["scores"][col] for r in recs if col in r["scores"]], bounds=span)
                if ci.n == 0:
                    cells.append("—")
                elif not np.isfinite(ci.low):
                    cells.append(f"{ci.mean:.3f}")
                elif ci.symmetric:
                    cells.append(f"{ci.mean:.3f} ± {ci.half_width:.3f}")
                else:  # cut at the metric's range: ± would pass it
                    cells.append(f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
            lines.append(f"| {col} {'↑' if hib else '↓'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_stats(
    systems: dict[str, list[dict[str, Any]]],
    infos: dict[str, MetricInfo],
    models: list[str],
    n_boot: int = 2000,
    seed: int = 0,
    baseline: str = "noisy",
) -> dict[str, Any]:
    """Mean ± CI per system and column, and the paired bootstrap CI of ``model - baseline``
    for each of ``models`` (utterances paired by id), under ``diff_vs_<baseline>``."""
    columns = [
        (column_name(m, out), hib)
        for m, info in infos.items()
        for out, hib in zip(info.outputs, info.higher_is_better, strict=True)
    ]
    spans = {
        column_name(m, out): span
        for m, info in infos.items()
        for out, span in zip(info.outputs, info.ranges, strict=True)
    }
    by_id = {s: {r["id"]: r["scores"] for r in recs} for s, recs in systems.items()}
    key = f"diff_vs_{baseline}"
    out: dict[str, Any] = {"systems": {}, key: {}, "higher_is_better": dict(columns)}
    for s, recs in systems.items():
        out["systems"][s] = {
            col: vars(
                mean_ci([r["scores"][col] for r in recs if col in r["scores"]], bounds=spans[col])
            )  # fmt: skip
            for col, _ in columns
        }
    base = by_id[baseline]
    for m in models:
        out[key][m] = {}
        for col, _ in columns:
            ids = [i for i, sc in by_id[m].items() if col in sc and col in base.get(i, {})]
            a = [base[i][col] for i in ids]
            b = [by_id[m][i][col] for i in ids]
            out[key][m][col] = vars(paired_bootstrap_diff(a, b, n_boot=n_boot, seed=seed))
    return out


def diff_table(stats: dict[str, Any], models: list[str], baseline: str = "noisy") -> str:
    """Markdown table of ``model - baseline`` per metric output with its bootstrap 95% CI."""
    key = f"diff_vs_{baseline}"
    lines = [f"| Δ vs {baseline} | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for col, hib in stats["higher_is_better"].items():
        cells = []
        for m in models:
            d = stats[key][m][col]
            if d["n"] == 0:
                cells.append("—")
            elif not np.isfinite(d["low"]):  # one pair: no interval
                cells.append(f"{d['mean']:+.3f}")
            else:
                cells.append(f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
        lines.append(f"| {col} {'↑' if hib else '↓'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_results(path: Path) -> Any:
    """An evaluation's ``results.json`` as written (``compare_stats``' layout), with the
    statistics written as null (no CI from one utterance; a column nothing scored) read back
    as NaN. Raises ``json.JSONDecodeError`` / ``UnicodeDecodeError`` on a damaged file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        return data
    for key, table in data.items():
        if (key == "systems" or key.startswith("diff_vs_")) and isinstance(table, dict):
            for cols in table.values():
                for cell in cols.values() if isinstance(cols, dict) else []:
                    if isinstance(cell, dict):
                        cell.update({k: math.nan for k in ("mean", "low", "high")
                                     if k in cell and cell[k] is None})  # fmt: skip
    return data
