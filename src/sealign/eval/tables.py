"""Side-by-side tables of several systems (noisy / model / clean …) scored on the same items."""

from __future__ import annotations

from typing import Any

import numpy as np

from sealign.eval.score import column_name
from sealign.eval.stats import mean_ci
from sealign.metrics.base import MetricInfo


def compare_table(systems: dict[str, list[dict[str, Any]]], infos: dict[str, MetricInfo]) -> str:
    """Markdown table: one row per metric output, one column per system, ``mean ± CI half-width``."""
    names = list(systems)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for metric, info in infos.items():
        for out, hib in zip(info.outputs, info.higher_is_better, strict=True):
            col = column_name(metric, out)
            cells = []
            for recs in systems.values():
                ci = mean_ci([r["scores"][col] for r in recs if col in r["scores"]])
                if ci.n == 0:
                    cells.append("—")
                elif not np.isfinite(ci.low):
                    cells.append(f"{ci.mean:.3f}")
                else:
                    cells.append(f"{ci.mean:.3f} ± {ci.half_width:.3f}")
            lines.append(f"| {col} {'↑' if hib else '↓'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
