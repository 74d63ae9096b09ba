"""Paper-style results tables: one row per system, one column per metric output, as speech
enhancement papers print them (LaTeX with booktabs, Markdown or long-format CSV).

The best value of each column is bold (compared as displayed, so ties are all bold; reference
rows such as ``clean`` are left out), and a value carries † (‡) where the paired 95% CI of its
difference from the baseline system lies entirely on the better (worse) side of zero. The noisy
input is printed first and the reference rows last.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field, replace
from typing import Any

from sealign.eval.stats import mean_ci


@dataclass(frozen=True)
class ColumnStyle:
    """How a metric column is printed: header ``label`` (under ``group`` when several adjacent
    columns share one, e.g. DNSMOS), value × ``scale`` with ``decimals`` digits."""

    label: str
    group: str = ""
    scale: float = 1.0
    decimals: int = 2


COLUMN_STYLES: dict[str, ColumnStyle] = {
    "pesq_wb": ColumnStyle("PESQ-WB"),
    "composite_csig": ColumnStyle("CSIG"),
    "composite_cbak": ColumnStyle("CBAK"),
    "composite_covl": ColumnStyle("COVL"),
    "composite_ssnr": ColumnStyle("SSNR"),
    "stoi": ColumnStyle("STOI", decimals=3),
    "estoi": ColumnStyle("ESTOI", decimals=3),
    "si_sdr": ColumnStyle("SI-SDR"),
    "lsd": ColumnStyle("LSD"),
    "mcd": ColumnStyle("MCD"),
    "lps": ColumnStyle("LPS", decimals=3),
    "dnsmos_sig": ColumnStyle("SIG", "DNSMOS"),
    "dnsmos_bak": ColumnStyle("BAK", "DNSMOS"),
    "dnsmos_ovrl": ColumnStyle("OVRL", "DNSMOS"),
    "dnsmos_p808": ColumnStyle("P.808", "DNSMOS"),
    "nisqa_mos": ColumnStyle("MOS", "NISQA"),
    "nisqa_noi": ColumnStyle("NOI", "NISQA"),
    "nisqa_dis": ColumnStyle("DIS", "NISQA"),
    "nisqa_col": ColumnStyle("COL", "NISQA"),
    "nisqa_loud": ColumnStyle("LOUD", "NISQA"),
    "nisqa_tts": ColumnStyle("NISQA-TTS"),
    "distillmos": ColumnStyle("DistillMOS"),
    "utmos": ColumnStyle("UTMOS"),
    "wer": ColumnStyle("WER (%)", scale=100.0, decimals=1),
    "cer": ColumnStyle("CER (%)", scale=100.0, decimals=1),
    "spk_sim": ColumnStyle("SpkSim", decimals=3),
    "speechbertscore": ColumnStyle("SBERT", decimals=3),
    "asr_confidence": ColumnStyle("ASR conf.", decimals=3),
    "text_likelihood_text_prob": ColumnStyle("P(text)", decimals=3),
    "text_likelihood_text_logprob": ColumnStyle("log P(text)"),
    "reward": ColumnStyle("Reward", decimals=3),
}


def column_style(column: str) -> ColumnStyle:
    """The print style of ``column``; a column of an unknown metric is printed under its own
    name with 3 decimals. SpeechBERTScore's column names its backbone (any of them: SBERT)."""
    if column in COLUMN_STYLES:
        return COLUMN_STYLES[column]
    if column.startswith("speechbertscore_"):
        return COLUMN_STYLES["speechbertscore"]
    return ColumnStyle(column, decimals=3)


@dataclass
class PaperTable:
    """What a table shows.

    ``cells[system][column]`` and ``diffs[system][column]`` are ``{"mean", "low", "high", "n"}``
    (a :class:`MeanCI` as a dict; ``diffs``: system − ``baseline``, paired). ``reference``:
    rows shown but never bold (e.g. ``clean``); ``published``: rows of numbers copied from
    papers (no CI, no test), shown in a block of their own."""

    systems: list[str]
    columns: list[str]
    higher_is_better: dict[str, bool]
    cells: dict[str, dict[str, dict[str, Any]]]
    diffs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    baseline: str | None = None
    reference: frozenset[str] = frozenset({"clean"})
    published: frozenset[str] = frozenset()
    styles: dict[str, ColumnStyle] = field(default_factory=dict)

    def style(self, column: str) -> ColumnStyle:
        return self.styles.get(column) or column_style(column)

    def value(self, system: str, column: str) -> float | None:
        c = self.cells.get(system, {}).get(column)
        if not c or not c.get("n") or not math.isfinite(c["mean"]):
            return None
        return float(c["mean"])

    def shown(self, system: str, column: str) -> str | None:
        """The cell's mean as printed (scaled and rounded), or None when there is none."""
        v = self.value(system, column)
        if v is None:
            return None
        st = self.style(column)
        text = f"{v * st.scale:.{st.decimals}f}"
        return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text

    def half_width(self, system: str, column: str) -> str | None:
        c = self.cells.get(system, {}).get(column)
        if not c or system in self.published or not math.isfinite(c.get("low", math.nan)):
            return None
        st = self.style(column)
        mean = c.get("mean", (c["high"] + c["low"]) / 2)
        half = max(
            mean - c["low"], c["high"] - mean
        )  # the t half-width (the range may cut one side)
        return f"{half * st.scale:.{st.decimals}f}"

    def delta(self, system: str, column: str) -> str | None:
        """``system − baseline`` and its paired CI as printed, e.g. ``+0.30 [+0.21, +0.39]``
        (scaled and rounded like the column), or None without a paired difference."""
        d = self.diffs.get(system, {}).get(column)
        if not d or not d.get("n") or not math.isfinite(d.get("mean", math.nan)):
            return None
        st = self.style(column)

        def signed(v: float) -> str:
            text = f"{v * st.scale:+.{st.decimals}f}"
            return text[1:] if float(text) == 0 else text  # no sign on a printed zero

        if not (math.isfinite(d.get("low", math.nan)) and math.isfinite(d.get("high", math.nan))):
            return signed(d["mean"])
        return f"{signed(d['mean'])} [{signed(d['low'])}, {signed(d['high'])}]"

    def best(self, column: str) -> set[str]:
        """Rows whose printed value is the best of the column (reference rows excluded; none
        when every row prints the same)."""
        hib = self.higher_is_better.get(column, True)
        shown = {
            s: float(t)
            for s in self.systems
            if s not in self.reference and (t := self.shown(s, column)) is not None
        }
        if len(shown) < 2:
            return set()
        top = max(shown.values()) if hib else min(shown.values())
        best = {s for s, v in shown.items() if v == top}
        return set() if len(best) == len(shown) else best

    def significance(self, system: str, column: str) -> int:
        """+1 (−1) when the paired CI of ``system − baseline`` lies on the better (worse) side
        of zero, else 0."""
        d = self.diffs.get(system, {}).get(column)
        if not d or not d.get("n") or not math.isfinite(d.get("low", math.nan)):
            return 0
        sign = 1 if self.higher_is_better.get(column, True) else -1
        if d["low"] > 0:
            return sign
        if d["high"] < 0:
            return -sign
        return 0

    def row_blocks(self) -> list[list[str]]:
        """Rows in printed blocks: the noisy input, published rows, the systems, the reference
        rows (clean)."""
        first = [s for s in self.systems if s == "noisy" and s not in self.published]
        blocks = [
            first,
            [s for s in self.systems if s in self.published],
            [s for s in self.systems if s not in {*first, *self.published, *self.reference}],
            [s for s in self.systems if s in self.reference and s not in first],
        ]
        return [b for b in blocks if b]

    def note(self, deltas: bool = False) -> str:
        """What bold and the marks mean (and, with ``deltas``, what the cells are), for a
        caption or a line under the table."""
        ref = ", ".join(sorted(self.reference & set(self.systems)))
        text = "Bold: best per column" + (f" (without {ref})." if ref else ".")
        if deltas and self.baseline and self.diffs:
            text = (
                f"Rows other than {self.baseline}"
                + (f" and {ref}" if ref else "")
                + f": the difference from {self.baseline} with its paired 95% bootstrap CI"
                " (none where a row is not paired with it); bold: the best mean per column."
            )
        if self.baseline and self.diffs:
            text += (
                f" † / ‡: the paired 95% bootstrap CI of the difference from {self.baseline} "
                "lies on the better / worse side of zero."
            )
        return text


def from_results(
    results: dict[str, Any], baseline: str | None = "noisy", columns: list[str] | None = None
) -> PaperTable:
    """A table of an evaluation's ``results.json`` (``eval``, ``demo``, ``pref-ablation``):
    every system, the given (default: every) column, the marks from its ``diff_vs_<baseline>``
    (none when the file has no such comparison)."""
    hib = dict(results["higher_is_better"])
    cols = list(hib) if columns is None else columns
    diffs = results.get(f"diff_vs_{baseline}", {}) if baseline else {}
    return PaperTable(
        systems=list(results["systems"]),
        columns=cols,
        higher_is_better=hib,
        cells=results["systems"],
        diffs=diffs,
        baseline=baseline if baseline in results["systems"] else None,
    )


def from_records(records: list[dict[str, Any]], columns: list[str]) -> dict[str, dict[str, Any]]:
    """Mean ± CI per column of per-utterance score records (``score``'s ``scores.jsonl``)."""
    return {
        c: vars(mean_ci([r["scores"][c] for r in records if c in r.get("scores", {})]))
        for c in columns
    }


# -- rendering -------------------------------------------------------------------------------

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"$<$",
    ">": r"$>$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "|": r"\textbar{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _cell(
    t: PaperTable, s: str, c: str, ci: bool, fmt: dict[str, str], deltas: bool = False
) -> str:
    shown = t.shown(s, c)
    if shown is None:
        return fmt["missing"]
    if deltas and s != t.baseline and s not in t.reference:
        delta = t.delta(s, c)
        if delta is None:  # published numbers, a system not paired with the baseline
            return fmt["missing"]
        ci = False  # the bracket is the difference's CI
        shown = delta
    text = fmt["bold"].format(shown) if s in t.best(c) else shown
    sig = t.significance(s, c) if s != t.baseline and s not in t.reference else 0
    if sig:
        text += fmt["better" if sig > 0 else "worse"]
    h = t.half_width(s, c) if ci else None
    return text + fmt["ci"].format(h) if h is not None else text


_LATEX = {
    "missing": "--",
    "bold": r"\textbf{{{}}}",
    "better": r"$^\dagger$",
    "worse": r"$^\ddagger$",
    "ci": r"\,{{\scriptsize$\pm${}}}",
}
_MARKDOWN = {"missing": "—", "bold": "**{}**", "better": "†", "worse": "‡", "ci": " ± {}"}


def _arrow(t: PaperTable, c: str, up: str, down: str) -> str:
    return up if t.higher_is_better.get(c, True) else down


def _groups(t: PaperTable) -> list[tuple[str, int]]:
    """Runs of adjacent columns sharing a group: ``[(group or "", span)]``; a group of one
    column is no group (its label says it, see :func:`_label`)."""
    runs: list[tuple[str, int]] = []
    for c in t.columns:
        g = t.style(c).group
        if runs and g and runs[-1][0] == g:
            runs[-1] = (g, runs[-1][1] + 1)
        else:
            runs.append((g, 1))
    return [(g if span > 1 else "", span) for g, span in runs]


def _labels(t: PaperTable, grouped: bool) -> list[str]:
    """Column headers: the label alone under a group header (``grouped``), else with its group
    in front ("DNSMOS OVRL")."""
    groups = _groups(t) if grouped else [("", len(t.columns))]
    under = [bool(g) for g, span in groups for _ in range(span)]
    return [
        t.style(c).label if u else f"{t.style(c).group} {t.style(c).label}".strip()
        for c, u in zip(t.columns, under, strict=True)
    ]


def to_latex(
    t: PaperTable, ci: bool = False, caption: str | None = None, label: str | None = None,
    deltas: bool = False,
) -> str:  # fmt: skip
    """A ``table`` environment with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``);
    ``deltas``: the systems' cells are their paired differences from the baseline."""
    lines = [r"\begin{table}[t]", r"\centering"]
    note = latex_escape(t.note(deltas))
    lines.append(r"\caption{" + (caption + " " if caption else "") + note + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\begin{tabular}{l" + "c" * len(t.columns) + "}")
    lines.append(r"\toprule")
    groups = _groups(t)
    if any(g for g, _ in groups):
        heads, rules, col = [""], [], 2
        for g, span in groups:
            if g:
                heads.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(g)}}}")
                rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
            else:
                heads += [""] * span
            col += span
        lines.append(" & ".join(heads) + r" \\")
        lines.append(" ".join(rules))
    head = ["System"] + [
        latex_escape(label) + _arrow(t, c, r"$\uparrow$", r"$\downarrow$")
        for c, label in zip(t.columns, _labels(t, grouped=True), strict=True)
    ]
    lines.append(" & ".join(head) + r" \\")
    for block in t.row_blocks():
        lines.append(r"\midrule")
        for s in block:
            cells = [_cell(t, s, c, ci, _LATEX, deltas) for c in t.columns]
            lines.append(" & ".join([latex_escape(s), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_markdown(t: PaperTable, ci: bool = False, deltas: bool = False) -> str:
    """A Markdown table in the same layout, with the note under it; ``deltas``: the systems'
    cells are their paired differences from the baseline."""

    heads = [
        label + _arrow(t, c, " ↑", " ↓")
        for c, label in zip(t.columns, _labels(t, grouped=False), strict=True)
    ]
    lines = [
        "| system | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(t.columns),
    ]
    for block in t.row_blocks():
        for s in block:
            cells = [_cell(t, s, c, ci, _MARKDOWN, deltas) for c in t.columns]
            lines.append("| " + s.replace("|", r"\|") + " | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + t.note(deltas) + "\n"


def to_csv(t: PaperTable) -> str:
    """Long format, unscaled: one line per system and column with the row's kind (system,
    reference or published), the mean, its CI, n, and the paired difference from the baseline
    with its CI."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["system", "kind", "column", "higher_is_better", "mean", "ci_low", "ci_high", "n",
                "baseline", "diff", "diff_low", "diff_high", "best"])  # fmt: skip
    for s in t.systems:
        kind = "published" if s in t.published else "reference" if s in t.reference else "system"
        for c in t.columns:
            cell = t.cells.get(s, {}).get(c) or {}
            d = t.diffs.get(s, {}).get(c) or {}
            if kind == "published":
                cell = {"mean": cell.get("mean", "")}
            w.writerow([
                s, kind, c, t.higher_is_better.get(c, True),
                *(cell.get(k, "") for k in ("mean", "low", "high", "n")),
                t.baseline if d else "", *(d.get(k, "") for k in ("mean", "low", "high")),
                s in t.best(c),
            ])  # fmt: skip
    return buf.getvalue()


FORMATS = {"latex": ".tex", "markdown": ".md", "csv": ".csv"}


def render(t: PaperTable, fmt: str, ci: bool = False, caption: str | None = None,
           label: str | None = None, deltas: bool = False) -> str:  # fmt: skip
    """``t`` as ``latex``, ``markdown`` or ``csv`` (which always holds the differences)."""
    if fmt == "latex":
        return to_latex(t, ci=ci, caption=caption, label=label, deltas=deltas)
    if fmt == "markdown":
        return to_markdown(t, ci=ci, deltas=deltas)
    if fmt == "csv":
        return to_csv(t)
    raise ValueError(f"table format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def render_groups(
    tables: dict[str, PaperTable], fmt: str, ci: bool = False, caption: str | None = None,
    label: str | None = None, deltas: bool = False,
) -> str:  # fmt: skip
    """Several tables (``{condition: table}``; one with the key ``""`` is a plain table): in
    LaTeX one ``table`` each (the condition ends its caption, the label gets ``:<k>``), in
    Markdown one section each, in CSV one file with a leading ``condition`` column."""
    if list(tables) == [""]:
        return render(tables[""], fmt, ci=ci, caption=caption, label=label, deltas=deltas)
    parts = []
    for k, (cond, t) in enumerate(tables.items()):
        n = max((c.get("n", 0) for s in t.systems for c in t.cells.get(s, {}).values()), default=0)
        title = f"{cond} ({n} utterances)"
        if fmt == "csv":
            lines = to_csv(t).splitlines()
            rows = csv.reader(lines[1:]) if k else csv.reader(lines)
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            for j, row in enumerate(rows):
                w.writerow(["condition" if j == 0 and not k else cond, *row])
            parts.append(buf.getvalue())
        elif fmt == "latex":
            cap = f"{caption} {title}." if caption else f"{title}."
            parts.append(to_latex(t, ci=ci, caption=cap, label=f"{label}:{k}" if label else None,
                                  deltas=deltas))  # fmt: skip
        else:
            parts.append(f"### {title}\n\n" + render(t, fmt, ci=ci, deltas=deltas) + "\n")
    return "".join(parts) if fmt == "csv" else "\n".join(parts)


def with_styles(t: PaperTable, decimals: dict[str, int], labels: dict[str, str]) -> PaperTable:
    """``t`` with some columns' decimals or labels changed (``"*"`` in ``decimals``: every
    column)."""
    styles = dict(t.styles)
    for c in t.columns:
        st = t.style(c)
        d = decimals.get(c, decimals.get("*"))
        st = replace(st, decimals=st.decimals if d is None else d)
        styles[c] = replace(st, label=labels.get(c, st.label))
    return replace(t, styles=styles)
