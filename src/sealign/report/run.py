"""Figures for any run folder: training curves from ``log.jsonl`` and the comparison in an
evaluation's ``results.json``, tied together by an HTML page (``sealign plot``)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sealign.eval.tables import read_results
from sealign.report.html import write_report
from sealign.report.plots import _plt, _save, _smooth, read_log

# keys of a log record that are not series to plot
_NOT_SERIES = {"step", "time", "epoch"}
# prefixes whose members share one panel (e.g. every clip_ratio/* line on one axis)
_SHARED = {"clip_ratio", "logps"}
_STATS = ("mean", "min", "max")
ZERO_SPREAD_PANEL = "groups without spread"


@dataclass
class Panel:
    """One axis of a figure: a title and the log keys drawn on it (``bands``: key → the key of
    its standard deviation, drawn as a band around it)."""

    title: str
    keys: list[str] = field(default_factory=list)
    bands: dict[str, str] = field(default_factory=dict)


def panel_of(key: str) -> tuple[str, str] | None:
    """(figure, panel title) a log key is drawn in, or None for keys that are not series.

    Figures: ``training`` (losses, rewards, KL, clipping, ...), ``held-out`` (``eval/*`` and
    ``val/*``, logged every N steps; SFT's ``eval/loss`` shares a panel with ``train/loss``) and
    ``time`` (``time/*`` seconds per phase, one panel per
    parent so that e.g. every ``time/score/<metric>`` shares an axis)."""
    if key in _NOT_SERIES or key.endswith("/std"):
        return None
    parts = key.split("/")
    if key in ("train/loss", "eval/loss"):  # SFT's training and validation loss on one axis
        return "training", "loss"
    if parts[0] in ("eval", "val"):
        return "held-out", key
    if parts[0] == "time":
        return "time", "/".join(parts[:-1]) if len(parts) > 1 else key
    if parts[0] in _SHARED and len(parts) > 1:
        return "training", parts[0]
    if parts[:1] == ["rewards"] and len(parts) == 2 and parts[1] in ("chosen", "rejected"):
        return "training", "rewards/chosen, rewards/rejected"
    if key == "frac_reward_zero_std" or (parts[0] == "rewards" and parts[-1] == "frac_zero_std"):
        return "training", ZERO_SPREAD_PANEL  # the whole reward's and each term's, side by side
    if len(parts) > 1 and parts[-1] in _STATS:
        return "training", "/".join(parts[:-1])
    return "training", key


def curve_panels(records: list[dict[str, Any]]) -> dict[str, list[Panel]]:
    """The panels of each figure for a log's records, in the order keys first appear; only
    numeric keys (NaN and inf included) logged with a ``step`` at two or more steps count (a
    single point is no curve: an evaluation's one-off numbers are in its results)."""
    figures: dict[str, dict[str, Panel]] = defaultdict(dict)
    steps: dict[str, set] = defaultdict(set)
    for rec in records:
        if "step" in rec:
            for key, value in rec.items():
                # NaN / inf count: a curve that diverged early is shown, its points marked
                if _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
                    steps[key].add(rec["step"])
    for key, at in steps.items():
        where = panel_of(key) if len(at) > 1 else None
        if where is None:
            continue
        fig, title = where
        panel = figures[fig].setdefault(title, Panel(title))
        panel.keys.append(key)
        if key.endswith("/mean"):
            panel.bands[key] = key[: -len("mean")] + "std"
    return {fig: list(panels.values()) for fig, panels in figures.items()}


def _is_number(v: Any) -> bool:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond float's range
        return False


def _series(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in records if "step" in r and _is_number(r.get(key))]
    if not pts:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*pts, strict=True)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def _nonfinite_steps(records: list[dict[str, Any]], key: str) -> list[float]:
    """Steps at which ``key`` was logged as NaN or ±inf (a curve would just leave them out)."""
    return [
        float(r["step"])
        for r in records
        if _is_number(r.get("step")) and isinstance(r.get(key), float) and not math.isfinite(r[key])
    ]


def plot_curves(
    records: list[dict[str, Any]],
    panels: list[Panel],
    out: str | Path,
    smooth: int = 5,
    max_columns: int = 4,
) -> Path:
    """A grid of ``panels``: each key's points joined by a line, or, from ``4 · smooth`` points
    on, the points and their moving average over ``smooth``; ``/std`` bands around ``/mean``
    series."""
    plt = _plt()
    ncols = min(max_columns, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.7 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        marked = False
        for i, key in enumerate(panel.keys):
            x, y = _series(records, key)
            color = f"C{i % 10}"
            label = key[len(panel.title) + 1 :] if key.startswith(panel.title + "/") else key
            few = x.size < 4 * smooth  # too few points for a moving average to help
            ax.plot(x, y, ".-" if few else ".", alpha=1.0 if few else 0.35, color=color,
                    label=label if few else None)  # fmt: skip
            if not few:
                ax.plot(x, _smooth(y, smooth), color=color, label=label)
            bad = _nonfinite_steps(records, key)
            marked |= bool(bad)
            if bad:  # marked along the bottom, so a diverged run does not look like a clean one
                ax.plot(bad, [0.02] * len(bad), "x", color="red", clip_on=False,
                        transform=ax.get_xaxis_transform(),
                        label=f"{label}: NaN/inf at {len(bad)} steps")  # fmt: skip
            band = panel.bands.get(key)
            if band:
                bx, by = _series(records, band)
                if bx.size == x.size and np.array_equal(bx, x):
                    ax.fill_between(x, y - by, y + by, color=color, alpha=0.12, lw=0)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(panel.keys) > 1 or marked:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return _save(fig, out)


def plot_comparison(stats: dict[str, Any], key: str, out: str | Path, max_columns: int = 4) -> Path:
    """One panel per metric column of an evaluation's ``results.json``: each system's mean and
    95% CI (``key`` = ``"systems"``) or each paired difference from the baseline with its CI
    (``key`` = ``"diff_vs_<name>"``; green when the CI lies on the better side of zero, red on
    the worse)."""
    rows: dict[str, dict[str, Any]] = stats[key]
    better: dict[str, bool] = stats["higher_is_better"]
    columns = [c for c in better if any(r.get(c, {}).get("n") for r in rows.values())]
    if not columns:
        raise ValueError(f"{key}: no scored column to plot")
    names = list(rows)
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    ncols = min(max_columns, len(columns))
    nrows = -(-len(columns) // ncols)
    height = max(2.2, 0.32 * len(names) + 1.2)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, height * nrows), squeeze=False, sharey=True
    )
    diff = key != "systems"
    y = np.arange(len(names))[::-1]
    for ax, col in zip(axes.flat, columns, strict=False):
        for yi, name in zip(y, names, strict=True):
            cell = rows[name].get(col)
            if not cell or not cell.get("n"):
                continue
            mean, low, high = cell["mean"], cell["low"], cell["high"]
            color = "tab:blue"
            if diff and (low > 0 or high < 0):
                color = "tab:green" if (low > 0) == better[col] else "tab:red"
            ax.errorbar(mean, yi, xerr=[[mean - low], [high - mean]], fmt="o", color=color,
                        capsize=3, ms=4)  # fmt: skip
        if diff:
            ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, names)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_title(f"{col} {'↑' if better[col] else '↓'}", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    return _save(fig, out)


_FIGURE_TITLES = {
    "training": "training curves",
    "held-out": "held-out evaluation during training",
    "time": "seconds per step, by phase",
}


def find_logs(run: Path) -> list[Path]:
    """``run/log.jsonl`` and the logs one folder down (e.g. a demo's ``gspo/log.jsonl``)."""
    return [p for p in [run / "log.jsonl", *sorted(run.glob("*/log.jsonl"))] if p.is_file()]


def write_run_plots(run: str | Path, out: str | Path | None = None, smooth: int = 5) -> Path:
    """Plot every training log and the evaluation results found in ``run`` into ``out``
    (default ``run/plots``) and write ``index.html`` there; returns the page's path."""
    import json

    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"no run folder {run}")
    out = Path(out) if out else run / "plots"
    figures: list[tuple[str, Path]] = []
    for log_path in find_logs(run):
        records = read_log(log_path)
        where = log_path.parent.relative_to(run).as_posix()
        tag = "" if where == "." else where.replace("/", "_") + "_"
        for name, panels in curve_panels(records).items():
            png = plot_curves(records, panels, out / f"{tag}{name}.png", smooth=smooth)
            prefix = "" if where == "." else f"{where}: "
            figures.append((f"{prefix}{_FIGURE_TITLES[name]}", png))
    sections: list[tuple[str, str]] = []
    results = run / "results.json"
    if results.is_file():
        try:
            stats = read_results(results)
            if isinstance(stats, dict) and "systems" in stats and "higher_is_better" in stats:
                png = plot_comparison(stats, "systems", out / "results.png")
                figures.append(("mean and 95% CI per system", png))
                for key in [k for k in stats if k.startswith("diff_vs_")]:
                    png = plot_comparison(stats, key, out / f"{key}.png")
                    figures.append((f"paired difference {key.replace('_', ' ')} (95% CI)", png))
        except (
            UnicodeDecodeError,
            json.JSONDecodeError,
            KeyError,
            TypeError,
            AttributeError,
        ) as err:
            raise ValueError(
                f"{results}: not a readable results.json ({type(err).__name__}: {err})"
            ) from None
        md = run / "results.md"
        if md.is_file():  # one section per table (results.md holds several)
            tables = [t for t in md.read_text(encoding="utf-8").split("\n\n") if t.strip()]
            sections += [("results" if i == 0 else "", t) for i, t in enumerate(tables)]
    if not figures:
        raise ValueError(
            f"{run}: nothing to plot (no log.jsonl with numbers at two or more steps, "
            "no results.json)"
        )
    return write_report(out / "index.html", f"sealign run: {run.name}", sections, figures, [])
