"""Make a paper-style results table (LaTeX, Markdown or CSV) from evaluation runs.

One row per system and one column per metric output, the best value of each column in bold,
and † (‡) where the paired 95% bootstrap CI of the difference from the baseline (default
noisy) lies on the better (worse) side of zero. Sources: folders (or results.json files) of
`eval`, `demo` and `pref-ablation`, and `score` folders (scores.jsonl; one system each, named
after the folder, paired with the baseline by utterance id when the baseline is a score folder
too). Several sources are merged: a system found in two of them with the same numbers (noisy,
clean) is shown once, with the columns of both; a name used for different numbers is prefixed
by its run's folder name. --rows adds numbers copied from papers, in a block of their own.

Columns: metric output columns (dnsmos_ovrl), metric names (dnsmos: all its outputs) or
presets (vbdmd). WER is printed in %; --decimals and --label change any column's print.

examples:
  sealign table runs/eval --columns dnsmos,wer,spk_sim --output table.tex
  sealign table runs/eval_vbdmd runs/eval_urgent --columns vbdmd,lsd,mcd --ci --format markdown
  sealign table runs/score_ours runs/score_theirs runs/score_noisy --baseline score_noisy
  sealign table runs/eval --rows published.yaml --caption "DNS 2020 no-reverb test set."

published.yaml (numbers in the metric's own units: WER as a fraction):
  - name: GenSE (reported)
    values: {dnsmos_sig: 3.65, dnsmos_bak: 4.18, dnsmos_ovrl: 3.43}
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sealign.commands.common import log, split_list
from sealign.data.manifest import Entry, read_manifest
from sealign.eval.paper_table import (
    FORMATS,
    PaperTable,
    from_records,
    render_groups,
    with_styles,
)
from sealign.eval.score import METRIC_PRESETS, column_name, mean_over_samples
from sealign.eval.stats import paired_bootstrap_diff
from sealign.metrics.registry import metric_info, metric_names
from sealign.utils.jsonio import read_jsonl, write_text

HELP = "make a paper-style table (LaTeX / Markdown / CSV) from eval, demo or score runs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="eval / demo / pref-ablation / score folders")
    p.add_argument("--columns", help="columns, metric names or presets, in order (default all)")
    p.add_argument("--systems", help="rows to show, in order (default all)")
    p.add_argument("--rename", action="append", default=[], help="OLD=NEW (repeatable)")
    p.add_argument("--baseline", default="noisy", help="system the marks compare with ('none')")
    p.add_argument(
        "--reference", default="clean", help="rows never bold, comma-separated (default clean)"
    )
    p.add_argument("--rows", help="YAML list of published rows: {name, values: {column: v}}")
    p.add_argument("--ci", action="store_true", help="print each mean's 95%% CI half-width")
    p.add_argument("--decimals", help="N for every column, or COLUMN=N,... ")
    p.add_argument("--label", action="append", default=[], help="COLUMN=header (repeatable)")
    p.add_argument("--caption", help="LaTeX caption, before the note on bold and marks")
    p.add_argument("--tex-label", help="LaTeX \\label of the table")
    p.add_argument(
        "--by",
        help="one table per condition: a manifest field (dotted path into each line, e.g. "
        "degradation.tasks; a list puts an utterance in each of its values' tables), or "
        "FIELD@E1,E2,... to bin a number at those edges (degradation.noise.snr_db@0,10)",
    )
    p.add_argument("--manifest", help="with --by: the manifest the runs were scored on")
    p.add_argument("--format", choices=list(FORMATS), help="default: from --output's suffix")
    p.add_argument("--output", help="file to write (default: print to the console)")


@dataclass
class Source:
    """One run's systems: mean ± CI per column, directions, paired differences per baseline,
    and per-utterance records where the run has them (score folders)."""

    name: str
    systems: dict[str, dict[str, dict[str, Any]]]
    higher_is_better: dict[str, bool]
    diffs: dict[str, dict[str, dict[str, dict[str, Any]]]] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def column_direction(column: str) -> bool | None:
    """Whether a registered metric's output ``column`` is better higher (None: no such metric)."""
    for m in metric_names():
        if metric_columns(m, [column]):
            info = metric_info(m)
            outs = [column_name(m, out) for out in info.outputs]
            return info.higher_is_better[outs.index(column) if column in outs else 0]
    return None


def load_source(path: str | Path) -> Source:
    """The systems of a run folder (``results.json`` or ``scores.jsonl``) or a results file."""
    p = Path(path)
    results = p if p.is_file() else p / "results.json"
    if results.is_file():
        try:
            data = json.loads(results.read_text(encoding="utf-8"))
            systems, hib = data["systems"], data["higher_is_better"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{results}: not an evaluation's results.json ({e})") from e
        diffs = {k[len("diff_vs_") :]: v for k, v in data.items() if k.startswith("diff_vs_")}
        name = p.parent.name if p.is_file() else p.name
        return Source(name, systems, hib, diffs)
    scores = p / "scores.jsonl"
    if not scores.is_file():
        raise ValueError(
            f"{p}: no results.json (eval, demo, pref-ablation) or scores.jsonl (score) found"
        )
    records = [r for r in read_jsonl(scores) if isinstance(r.get("scores"), dict)]
    columns = list(dict.fromkeys(c for r in records for c in r["scores"]))
    hib: dict[str, bool] = {}
    for c in columns:
        d = column_direction(c)
        if d is None:
            log.warning("%s: column %s belongs to no registered metric; left out", scores, c)
        else:
            hib[c] = d
    name = p.resolve().name
    return Source(name, {name: from_records(records, list(hib))}, hib, records={name: records})


def run_records(path: str | Path, systems: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per-utterance records of each of ``systems`` that a run folder has score files for: a
    ``score`` folder's ``scores.jsonl``, or ``scores/<system>.jsonl`` of ``eval`` / ``demo`` /
    ``pref-ablation`` (averaged with ``<system>_sample<i>.jsonl``, a model's further sampled
    outputs, as the run's own tables average them)."""
    p = Path(path)
    if not p.is_dir():
        return {}
    if (p / "scores.jsonl").is_file() and len(systems) == 1:
        return {systems[0]: read_jsonl(p / "scores.jsonl")}
    out = {}
    for s in systems:
        stem = s.replace(":", "_")
        first = p / "scores" / f"{stem}.jsonl"
        if not first.is_file():
            continue
        more = sorted(
            (f for f in first.parent.glob(f"{stem}_sample*.jsonl")
             if f.stem[len(stem) + 7:].isdigit()),
            key=lambda f: int(f.stem[len(stem) + 7:]),
        )  # fmt: skip
        out[s] = mean_over_samples([read_jsonl(f) for f in [first, *more]])
    return out


def condition_groups(entries: list[Entry], spec: str) -> dict[str, set[str]]:
    """Utterance ids per condition (see ``--by``), in order of first appearance (bins in
    order of their edges)."""
    key, _, edges_text = spec.partition("@")
    edges = []
    if edges_text:
        try:
            edges = sorted(float(e) for e in split_list(edges_text))
        except ValueError as e:
            raise ValueError(f"--by {spec}: bin edges must be numbers ({e})") from e
    labels = [f"< {edges[0]:g}"] if edges else []
    labels += [f"{a:g} to {b:g}" for a, b in itertools.pairwise(edges)]
    labels += [f"≥ {edges[-1]:g}"] if edges else []
    groups: dict[str, set[str]] = {label: set() for label in labels}
    found = False
    for e in entries:
        value: Any = e.to_json()
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        found |= value is not None
        if value is None:
            values = ["none"]
        elif edges:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"--by {spec}: {e.id} has {key} = {value!r}, not a number")
            values = [labels[bisect.bisect_right(edges, value)]]
        else:
            values = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        for v in values:
            groups.setdefault(v, set()).add(e.id)
    if not found:
        raise ValueError(f"--by {spec}: no utterance of the manifest has a field {key}")
    return {g: ids for g, ids in groups.items() if ids}


def grouped_sources(args: argparse.Namespace) -> dict[str, list[Source]]:
    """``--by``: for each condition, the runs' systems on its utterances only."""
    if not args.manifest:
        raise ValueError("--by needs --manifest (the utterances' conditions)")
    if args.rows:
        raise ValueError("--rows cannot be combined with --by (published rows have no conditions)")
    groups = condition_groups(read_manifest(args.manifest), args.by)
    loaded = []
    for r in args.runs:
        src = load_source(r)
        records = run_records(r, list(src.systems))
        left = [s for s in src.systems if s not in records]
        if left:
            log.warning("%s: no per-utterance scores for %s; left out of the tables by %s",
                        src.name, ", ".join(left), args.by)  # fmt: skip
        loaded.append((src, records))
    out = {}
    for g, ids in groups.items():
        out[f"{args.by.partition('@')[0]}: {g}"] = [
            Source(
                src.name,
                {
                    s: from_records([x for x in recs if x["id"] in ids], list(src.higher_is_better))
                    for s, recs in records.items()
                },
                src.higher_is_better,
                records={s: [x for x in recs if x["id"] in ids] for s, recs in records.items()},
            )  # fmt: skip
            for src, records in loaded
        ]
    return out


def _same(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> bool:
    shared = [c for c in a if c in b and a[c].get("n") and b[c].get("n")]
    return bool(shared) and all(
        a[c]["n"] == b[c]["n"] and math.isclose(a[c]["mean"], b[c]["mean"], rel_tol=1e-9)
        for c in shared
    )


def merge(sources: list[Source], baseline: str | None) -> PaperTable:
    """One table of several runs (see the module's help for how names are merged)."""
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    hib: dict[str, bool] = {}
    diffs: dict[str, dict[str, dict[str, Any]]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    for src in sources:
        hib.update(src.higher_is_better)
        for s, cols in src.systems.items():
            name = s
            if s in cells and not _same(cells[s], cols):
                name = f"{src.name}/{s}"
                log.warning("%s: a system %s with other numbers is already loaded; this one "
                            "is shown as %s", src.name, s, name)  # fmt: skip
            if name in cells and name != s:
                raise ValueError(f"two runs named {src.name} both have a system {s}")
            dest = cells.setdefault(name, {})
            for c, v in cols.items():
                dest.setdefault(c, v)
            if baseline and s in src.diffs.get(baseline, {}):
                diffs.setdefault(name, {}).update(src.diffs[baseline][s])
            if s in src.records:
                records[name] = src.records[s]
    if baseline in records:  # score folders: pair with the baseline by utterance id
        base = {r["id"]: r["scores"] for r in records[baseline]}
        for s, recs in records.items():
            if s == baseline:
                continue
            for c in hib:
                pairs = [(base[r["id"]][c], r["scores"][c]) for r in recs
                         if c in r["scores"] and c in base.get(r["id"], {})]  # fmt: skip
                if pairs and c not in diffs.get(s, {}):
                    a, b = zip(*pairs, strict=True)
                    diffs.setdefault(s, {})[c] = vars(paired_bootstrap_diff(list(a), list(b)))
    columns = list(dict.fromkeys(c for cols in cells.values() for c in cols if c in hib))
    return PaperTable(
        systems=list(cells), columns=columns, higher_is_better=hib, cells=cells, diffs=diffs,
        baseline=baseline if baseline in cells else None,
    )  # fmt: skip


def metric_columns(name: str, available: list[str]) -> list[str]:
    """The available columns of metric ``name`` (its outputs; for a single-output metric whose
    column names an option, e.g. ``speechbertscore_<model>``, any ``name_*`` column)."""
    if name not in metric_names():
        return []
    info = metric_info(name)
    own = {column_name(name, out) for out in info.outputs}
    single = len(info.outputs) == 1
    return [c for c in available if c in own or (single and c.startswith(f"{name}_"))]


def select_columns(available: list[str], wanted: list[str]) -> list[str]:
    """Columns named, metric names or presets expanded to the available columns, in order."""
    out: list[str] = []
    missing = []
    for token in wanted:
        for name in METRIC_PRESETS.get(token, [token]):
            found = [name] if name in available else metric_columns(name, available)
            if not found:
                missing.append(name)
            out += found
    if missing:
        raise ValueError(
            f"--columns: no column for {', '.join(missing)} in these runs; they have: "
            f"{', '.join(available)}"
        )
    return list(dict.fromkeys(out))


def read_published(path: str | Path) -> dict[str, dict[str, float]]:
    """``--rows``: a YAML list of ``{name, values: {column: number}}``."""
    try:
        rows = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"--rows {path}: {e}") from e
    if not isinstance(rows, list):
        raise ValueError(f"--rows {path}: expected a list of {{name, values}} entries")
    out: dict[str, dict[str, float]] = {}
    for k, row in enumerate(rows):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("values"), dict)
            or not row.get("name")
        ):
            raise ValueError(f"--rows {path}: entry {k} needs a name and a values mapping")
        try:
            out[str(row["name"])] = {str(c): float(v) for c, v in row["values"].items()}
        except (TypeError, ValueError) as e:
            raise ValueError(f"--rows {path}: entry {row['name']!r}: {e}") from e
    return out


def _pairs(items: list[str], what: str, cast: type = str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what}: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = cast(value.strip())
        except ValueError as e:
            raise ValueError(f"{what} {item!r}: {e}") from e
    return out


def build_table(args: argparse.Namespace, sources: list[Source]) -> PaperTable:
    """The table the options ask for, of ``sources``."""
    baseline = None if args.baseline.lower() == "none" else args.baseline
    t = merge(sources, baseline)
    renames = _pairs([x for r in args.rename for x in split_list(r)], "--rename")
    unknown = [s for s in renames if s not in t.cells]
    if unknown:
        raise ValueError(f"--rename: no system {', '.join(unknown)}; have {', '.join(t.systems)}")
    published = read_published(args.rows) if args.rows else {}
    if published:
        for name, values in published.items():
            if name in t.cells:
                raise ValueError(f"--rows: {name!r} is already a system of these runs")
            t.cells[name] = {c: {"mean": v, "low": math.nan, "high": math.nan, "n": 1}
                             for c, v in values.items()}  # fmt: skip
            t.systems.append(name)
            strange = [c for c in values if c not in t.higher_is_better]
            if strange:
                log.warning("--rows %s: %s not among the runs' columns", name, ", ".join(strange))
        t.published = frozenset(published)
    if args.columns:
        t.columns = select_columns(t.columns, split_list(args.columns))
    if args.systems:
        chosen = split_list(args.systems)
        unknown = [s for s in chosen if s not in t.cells]
        if unknown:
            raise ValueError(
                f"--systems: no system {', '.join(unknown)}; have {', '.join(t.systems)}"
            )
        t.systems = chosen
    t.reference = frozenset(split_list(args.reference)) if args.reference else frozenset()
    if args.decimals:
        decimals = (
            {"*": int(args.decimals)} if args.decimals.strip().isdigit()
            else _pairs(split_list(args.decimals), "--decimals", int)
        )  # fmt: skip
    else:
        decimals = {}
    t = with_styles(t, decimals, _pairs(args.label, "--label"))
    return rename(t, renames)


def rename(t: PaperTable, names: dict[str, str]) -> PaperTable:
    """``t`` with systems renamed (``{old: new}``)."""
    if not names:
        return t

    def r(s: str) -> str:
        return names.get(s, s)

    return PaperTable(
        systems=[r(s) for s in t.systems],
        columns=t.columns,
        higher_is_better=t.higher_is_better,
        cells={r(s): v for s, v in t.cells.items()},
        diffs={r(s): v for s, v in t.diffs.items()},
        baseline=r(t.baseline) if t.baseline else None,
        reference=frozenset(r(s) for s in t.reference),
        published=frozenset(r(s) for s in t.published),
        styles=t.styles,
    )


def run(args: argparse.Namespace) -> int:
    if args.by:
        tables = {g: build_table(args, srcs) for g, srcs in grouped_sources(args).items()}
    else:
        tables = {"": build_table(args, [load_source(r) for r in args.runs])}
    for t in tables.values():
        if not t.columns or not t.systems:
            raise ValueError("nothing to tabulate: the runs have no scored columns")
    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix if args.output else ".md"
        fmt = {v: k for k, v in FORMATS.items()}.get(suffix)
        if fmt is None:
            raise ValueError(f"--output {args.output}: give --format (suffix not one of "
                             f"{', '.join(FORMATS.values())})")  # fmt: skip
    text = render_groups(tables, fmt, ci=args.ci, caption=args.caption, label=args.tex_label)
    if args.output:
        write_text(Path(args.output), text)
        log.info("wrote %s (%d table%s)", args.output, len(tables), "s" * (len(tables) > 1))
    else:
        print(text, end="")
    return 0
