"""Plots for reports (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sealign.utils.jsonio import tmp_name


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``out`` (parent folders created) and free it."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(out)  # pages of runs under way are re-plotted: never a half-written image
    try:
        fig.savefig(tmp, dpi=dpi, format=out.suffix.lstrip(".") or "png")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
        _plt().close(fig)
    return out


def read_log(path: str | Path) -> list[dict]:
    """Records of a run's ``log.jsonl``: JSON objects whose ``step``, if any, is a whole
    number (lines cut by a crash, or otherwise damaged, are skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = rec.get("step", 0) if isinstance(rec, dict) else None
        if isinstance(step, int) and not isinstance(step, bool):
            out.append(rec)
    return out


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or y.size < k:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    head = c[1:k] / np.arange(1, k)
    return np.concatenate([head, (c[k:] - c[:-k]) / k])


def plot_reward_curves(log_path: str | Path, out: str | Path, smooth: int = 5) -> Path | None:
    """One panel per ``reward`` and ``rewards/<name>/mean`` series of a training log
    (raw points and a moving average). None when the log has no reward."""
    recs = read_log(log_path)
    keys = ["reward"] + sorted(
        {k for r in recs for k in r if k.startswith("rewards/") and k.endswith("/mean")}
    )
    keys = [k for k in keys if any(k in r for r in recs)]
    if not keys:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(r["step"], r[key]) for r in recs if key in r and "step" in r]
        x, y = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
        ax.plot(x, y, ".", alpha=0.35, color="tab:blue")
        ax.plot(x, _smooth(y, smooth), color="tab:blue")
        ax.set_title("composite reward" if key == "reward" else key[8:-5])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _save(fig, out, dpi=110)


def plot_spectrograms(
    wavs: dict[str, np.ndarray], sample_rate: int, out: str | Path, title: str = ""
) -> Path:
    """Stacked log-magnitude spectrograms (dB, shared colour scale) of labelled waveforms."""
    from scipy.signal import stft

    plt = _plt()
    fig, axes = plt.subplots(len(wavs), 1, figsize=(7.5, 1.7 * len(wavs)), squeeze=False)
    specs = {}
    for label, w in wavs.items():
        f, t, z = stft(np.asarray(w, dtype=np.float64), fs=sample_rate, nperseg=512, noverlap=384)
        specs[label] = (f, t, 20 * np.log10(np.abs(z) + 1e-6))
    vmax = max(float(s[2].max()) for s in specs.values())
    for ax, (label, (f, t, db)) in zip(axes[:, 0], specs.items(), strict=True):
        ax.pcolormesh(t, f / 1000, db, vmin=vmax - 80, vmax=vmax, shading="auto", cmap="magma")
        ax.set_ylabel(f"{label}\nkHz")
    axes[-1, 0].set_xlabel("s")
    if title:
        axes[0, 0].set_title(title)
    return _save(fig, out, dpi=100)


def plot_sweep(stats: dict, out: str | Path, max_columns: int = 4) -> Path:
    """One panel per metric column of an ``eval --sweep`` result (``stats`` as written to
    ``results.json``): each model's mean ± 95% CI against the swept values, with the noisy input
    and the clean reference as dashed lines."""
    sweep, systems = stats["sweep"], stats["systems"]
    values = sweep["values"]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    x = np.array(values, dtype=float) if numeric else np.arange(len(values), dtype=float)
    columns = list(stats["higher_is_better"])
    plt = _plt()
    ncols = min(max_columns, len(columns))
    nrows = -(-len(columns) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.8 * nrows), squeeze=False)
    for ax, col in zip(axes.flat, columns, strict=False):
        for model, names in sweep["systems"].items():
            cells = [systems[n][col] for n in names]
            mean = np.array([c["mean"] if c["n"] else np.nan for c in cells])
            low = np.array([c["low"] if c["n"] else np.nan for c in cells])
            high = np.array([c["high"] if c["n"] else np.nan for c in cells])
            yerr = np.nan_to_num([mean - low, high - mean])  # no bar where n < 2
            ax.errorbar(x, mean, yerr=yerr, marker="o", capsize=3, label=model)
        for ref, style in (("noisy", "tab:gray"), ("clean", "tab:green")):
            cell = systems.get(ref, {}).get(col)
            if cell and cell["n"]:
                ax.axhline(cell["mean"], ls="--", color=style, lw=1, label=ref)
        arrow = "↑" if stats["higher_is_better"][col] else "↓"
        ax.set_title(f"{col} {arrow}")
        ax.set_xlabel(sweep["key"])
        if not numeric:
            ax.set_xticks(x, [str(v) for v in values])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return _save(fig, out, dpi=110)
