"""Make a paper-style results table (LaTeX, Markdown or CSV) from evaluation runs.

One row per system and one column per metric output, the best value of each column in bold,
and † (‡) where the paired 95% bootstrap CI of the difference from the baseline (default
noisy) lies on the better (worse) side of zero. Sources: folders (or results.json files) of
`eval`, `demo` and `pref-ablation`, and `score` folders (scores.jsonl; one system each, named
after the folder, paired with the baseline by utterance id when the baseline is a score folder
too, or an eval's own). Several sources are merged: a system found in two of them with the
same numbers on the columns both have (noisy, clean) is shown once, with the columns of both; a
name used for different numbers is prefixed by its run's folder name, except the baseline, which
must be the same in every run (runs on different test sets: one table each). A run that
compares with another system (pref-ablation: base) is marked against it. --rows adds numbers
copied from papers, in a block of their own. --caption is LaTeX source.

Columns: metric output columns (dnsmos_ovrl), metric names (dnsmos: all its outputs) or
presets (vbdmd). WER is printed in %; --decimals and --label change any column's print.

examples:
  sealign table runs/eval --columns dnsmos,wer,spk_sim --output table.tex
  sealign table runs/eval_vbdmd runs/eval_urgent --columns vbdmd,lsd,mcd --ci --format markdown
  sealign table runs/score_ours runs/score_theirs runs/score_noisy --baseline score_noisy
  sealign table runs/eval --columns dnsmos,wer --deltas      # Δ vs noisy [paired 95% CI]
  sealign table runs/eval --rows published.yaml --caption "DNS 2020 no-reverb test set."
  sealign table runs/eval --by degradation.tasks --manifest data/demo/test.jsonl
  sealign table runs/eval --by degradation.noise.snr_db@0,10 --manifest data/demo/test.jsonl

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
import re
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
from sealign.eval.tables import read_results
from sealign.metrics.registry import metric_info, metric_names
from sealign.utils.jsonio import read_jsonl, write_text

HELP = "make a paper-style table (LaTeX / Markdown / CSV) from eval, demo or score runs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="eval / demo / pref-ablation / score folders")
    p.add_argument("--columns", help="columns, metric names or presets, in order (default all)")
    p.add_argument("--systems", help="rows to show, in order (default all; names before --rename)")
    p.add_argument("--rename", action="append", default=[], help="OLD=NEW,... (repeatable)")
    p.add_argument("--baseline", default="noisy", help="system the marks compare with ('none')")
    p.add_argument(
        "--reference", default="clean", help="rows never bold, comma-separated (default clean)"
    )
    p.add_argument("--rows", help="YAML list of published rows: {name, values: {column: v}}")
    p.add_argument("--ci", action="store_true", help="print each mean's 95%% CI half-width")
    p.add_argument(
        "--deltas",
        action="store_true",
        help="print each system's difference from the baseline with its paired 95%% CI "
        "instead of its mean in Markdown and LaTeX (the baseline and reference rows keep "
        "their means; rows not paired with the baseline, e.g. published ones, show none; CSV "
        "always holds both)",
    )
    p.add_argument("--decimals", help="N for every column, or COLUMN=N,... ")
    p.add_argument("--label", action="append", default=[], help="COLUMN=header (repeatable)")
    p.add_argument(
        "--caption", help="LaTeX caption (LaTeX source, e.g. \\cite{...}), before the note on marks"
    )
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
    path: Path | None = None  # the run folder


def column_direction(column: str) -> bool | None:
    """Whether a registered metric's output ``column`` is better higher (None: no such metric)."""
    for m in metric_names():
        if metric_columns(m, [column]):
            info = metric_info(m)
            outs = [column_name(m, out) for out in info.outputs]
            return info.higher_is_better[outs.index(column) if column in outs else 0]
    return None


def _stat(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(value.get(k), int | float) and not isinstance(value.get(k), bool)
        for k in ("mean", "low", "high", "n")
    )


def _check_results(data: Any, path: Path) -> None:
    """``results.json``'s systems and differences: ``{name: {column: {mean, low, high, n}}}``."""
    if not isinstance(data, dict) or not isinstance(data.get("systems"), dict):
        raise ValueError(f"{path}: not an evaluation's results.json (no systems)")
    if not isinstance(data.get("higher_is_better"), dict):
        raise ValueError(f"{path}: not an evaluation's results.json (no higher_is_better)")
    tables = {"systems": data["systems"]}
    tables.update({k: v for k, v in data.items() if k.startswith("diff_vs_")})
    for key, table in tables.items():
        for system, cols in table.items() if isinstance(table, dict) else [(None, table)]:
            bad = not isinstance(cols, dict) or not all(map(_stat, cols.values()))
            if bad:
                raise ValueError(f"{path}: {key}.{system}: expected {{column: {{mean, low, "
                                 "high, n}}}} with numbers")  # fmt: skip


def score_records(path: Path) -> list[dict[str, Any]]:
    """The per-utterance records of a scores file; lines without an id or scores are left out
    (logged), a score that is not a number is an error naming the file."""
    records, dropped = [], 0
    for r in read_jsonl(path):
        if not isinstance(r, dict) or not isinstance(r.get("id"), str):
            dropped += 1
            continue
        if not isinstance(r.get("scores"), dict):
            dropped += 1
            continue
        for c, v in r["scores"].items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"{path}: {r['id']}: score {c} = {v!r} is not a number")
        records.append(r)
    if dropped:
        log.warning("%s: %d line(s) without an id or scores left out", path, dropped)
    return records


def load_source(path: str | Path) -> Source:
    """The systems of a run folder (``results.json`` or ``scores.jsonl``) or a results file."""
    p = Path(path)
    if p.is_file() and p.name == "scores.jsonl":  # a score run's scores.jsonl itself
        p = p.parent
    elif p.is_file() and p.suffix == ".jsonl":
        raise ValueError(f"{p}: give a score run's folder (or its scores.jsonl), or an eval's "
                         "folder for its systems' scores")  # fmt: skip
    results = p if p.is_file() else p / "results.json"
    if results.is_file():
        try:
            data = read_results(results)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{results}: not an evaluation's results.json ({e})") from e
        _check_results(data, results)
        diffs = {k[len("diff_vs_") :]: v for k, v in data.items() if k.startswith("diff_vs_")}
        hib = {c: bool(v) for c, v in data["higher_is_better"].items()}
        return Source(results.parent.name, data["systems"], hib, diffs, path=results.parent)
    scores = p / "scores.jsonl"
    if not scores.is_file():
        raise ValueError(
            f"{p}: no results.json (eval, demo, pref-ablation) or scores.jsonl (score) found"
        )
    records = score_records(scores)
    columns = list(dict.fromkeys(c for r in records for c in r["scores"]))
    hib: dict[str, bool] = {}
    for c in columns:
        d = column_direction(c)
        if d is None:
            log.warning("%s: column %s belongs to no registered metric; left out", scores, c)
        else:
            hib[c] = d
    name = p.resolve().name
    systems = {name: from_records(records, list(hib))}
    return Source(name, systems, hib, records={name: records}, path=p)


def run_records(path: str | Path, systems: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per-utterance records of each of ``systems`` that a run folder has score files for: a
    ``score`` folder's ``scores.jsonl``, or ``scores/<system>.jsonl`` of ``eval`` / ``demo`` /
    ``pref-ablation`` (averaged with ``<system>_sample<i>.jsonl``, a model's further sampled
    outputs, as the run's own tables average them)."""
    p = Path(path)
    p = p.parent if p.is_file() else p
    if (p / "scores.jsonl").is_file() and len(systems) == 1:
        return {systems[0]: score_records(p / "scores.jsonl")}
    out = {}
    for s in systems:
        # pref-ablation writes an arm "single:wer" as "single_wer"; eval keeps a name as given
        stems = [st for st in dict.fromkeys((s, s.replace(":", "_")))
                 if (p / "scores" / f"{st}.jsonl").is_file()]  # fmt: skip
        if not stems:
            continue
        stem = stems[0]
        first = p / "scores" / f"{stem}.jsonl"
        more = sorted(
            (f for f in first.parent.glob(f"{stem}_sample*.jsonl")
             if f.stem[len(stem) + 7:].isdigit()),
            key=lambda f: int(f.stem[len(stem) + 7:]),
        )  # fmt: skip
        out[s] = mean_over_samples([score_records(f) for f in [first, *more]])
    return out


MAX_GROUPS = 50  # conditions `--by` makes a table of, without bins


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
    groups = {g: ids for g, ids in groups.items() if ids}
    if not edges and len(groups) > MAX_GROUPS:  # e.g. a number per utterance
        raise ValueError(
            f"--by {spec}: {len(groups)} distinct values, one table each; bin a numeric field "
            f"with {key}@EDGES (e.g. {key}@0,10), or pick a field with fewer values"
        )
    return groups


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
        scored = {x["id"] for recs in records.values() for x in recs}
        known = scored & set().union(*groups.values())
        if records and not known:
            raise ValueError(f"--by: no utterance scored in {src.name} is in {args.manifest}")
        if len(known) < len(scored):
            log.warning("%s: %d of its %d scored utterances are not in %s; left out", src.name,
                        len(scored) - len(known), len(scored), args.manifest)  # fmt: skip
    everywhere = {x["id"] for _, records in loaded for recs in records.values() for x in recs}
    empty = sorted(g for g, ids in groups.items() if not ids & everywhere)
    if empty:  # e.g. runs on part of the manifest (eval --shard, demo test_limit)
        log.info("--by %s: no scored utterance in %s; left out", args.by, ", ".join(empty))
    out = {}
    for g, ids in groups.items():
        if g in empty:
            continue
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
    """Whether two runs' systems of one name are the same system: equal on every column both
    have (runs that share no column, e.g. intrusive metrics in one and MOS in another, are
    merged by name)."""
    shared = [c for c in a if c in b and a[c].get("n") and b[c].get("n")]
    return all(
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
        own = src.records
        if baseline in src.systems and baseline not in src.diffs and src.path is not None:
            # a run whose own tables compare with another system: pair its per-utterance
            # scores with this baseline's instead
            own = {**run_records(src.path, list(src.systems)), **own}
        for s, cols in src.systems.items():
            name = s
            if s in cells and not _same(cells[s], cols):
                if s == baseline:
                    raise ValueError(
                        f"{src.name}: its {s} differs from the {s} of a run before it, so the "
                        "runs were not scored on the same utterances; make one table per test "
                        "set (or give --baseline none)"
                    )
                name = f"{src.name}/{s}"
                log.warning("%s: a system %s with other numbers is already loaded; this one "
                            "is shown as %s", src.name, s, name)  # fmt: skip
                if name in cells:
                    raise ValueError(f"two runs named {src.name} both have a system {s}")
            dest = cells.setdefault(name, {})
            for c, v in cols.items():
                dest.setdefault(c, v)
            if baseline and s in src.diffs.get(baseline, {}):
                diffs.setdefault(name, {}).update(src.diffs[baseline][s])
            if s in own:
                records[name] = own[s]
    if baseline and records and baseline not in records:
        for src in sources:  # the baseline's per-utterance scores from a run folder
            if baseline in src.systems and src.path is not None:
                records.update(run_records(src.path, [baseline]))
                break
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
    if baseline in cells and not diffs and len(cells) > 1:
        log.warning("no per-utterance scores to pair with the baseline %s: the table has no "
                    "significance marks", baseline)  # fmt: skip
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
        if str(row["name"]) in out:
            raise ValueError(f"--rows {path}: {row['name']!r} is listed twice")
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
    if baseline and baseline not in t.cells:
        compared = {k for src in sources for k in src.diffs}
        if len(compared) == 1 and (only := compared.pop()) in t.cells:
            log.info("no system %s: the marks compare with %s, as the runs do", baseline, only)
            t = merge(sources, only)
        else:
            log.warning("no system %s in these runs: no marks (--baseline NAME)", baseline)
    renames = _pairs([x for r in args.rename for x in split_list(r)], "--rename")
    unknown = [s for s in renames if s not in t.cells]
    if unknown:
        raise ValueError(f"--rename: no system {', '.join(unknown)}; have {', '.join(t.systems)}")
    new_names = [renames.get(s, s) for s in t.cells]
    if len(set(new_names)) < len(new_names):
        raise ValueError(f"--rename: two systems would be named alike ({', '.join(new_names)})")
    published = read_published(args.rows) if args.rows else {}
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
    t.columns = [c for c in t.columns if any(t.value(s, c) is not None for s in t.systems)]
    if args.systems:
        chosen = split_list(args.systems)
        unknown = [s for s in chosen if s not in t.cells]
        if unknown:
            raise ValueError(
                f"--systems: no system {', '.join(unknown)}; have {', '.join(t.systems)}"
            )
        if len(set(chosen)) < len(chosen):
            raise ValueError(f"--systems: a system is named twice ({args.systems})")
        t.systems = chosen
    refs = set(split_list(args.reference)) if args.reference else set()
    # a second run's clean, shown as <run>/clean, is a reference row too
    t.reference = frozenset(s for s in t.systems if s in refs or s.rpartition("/")[2] in refs)
    decimals: dict[str, int] = {}
    if args.decimals:
        decimals = (
            {"*": int(args.decimals)} if args.decimals.strip().isdigit()
            else _pairs(split_list(args.decimals), "--decimals", int)
        )  # fmt: skip
        if any(d < 0 or d > 10 for d in decimals.values()):
            raise ValueError(f"--decimals: digits must be 0 to 10, got {args.decimals}")
    labels = _pairs(args.label, "--label")
    for flag, named in (("--decimals", decimals), ("--label", labels)):
        unknown = [c for c in named if c != "*" and c not in t.columns]
        if unknown:
            raise ValueError(f"{flag}: no column {', '.join(unknown)} in the table; have "
                             f"{', '.join(t.columns)}")  # fmt: skip
    t = with_styles(t, decimals, labels)
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
    if args.tex_label and not re.fullmatch(r"[\w:.\-/]+", args.tex_label):
        raise ValueError(f"--tex-label {args.tex_label!r}: use letters, digits and : . - / _")
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
    if args.deltas and not any(t.diffs for t in tables.values()):
        raise ValueError("--deltas: no paired differences to print (no baseline in these runs; "
                         "name one with --baseline)")  # fmt: skip
    text = render_groups(tables, fmt, ci=args.ci, caption=args.caption, label=args.tex_label,
                         deltas=args.deltas)  # fmt: skip
    if args.output:
        write_text(Path(args.output), text)
        log.info("wrote %s (%d table%s)", args.output, len(tables), "s" * (len(tables) > 1))
    else:
        print(text, end="")
    return 0
