"""Evaluate models on a test manifest: enhance with each, score noisy / models / clean.

The manifest gives the noisy input in `audio` and the clean reference in `reference` (plus
`text`, `speaker_ref` for the metrics that need them). Every system is scored on the same
utterances with the metric suite; the table shows mean ± 95% CI per system, and for each model the
paired bootstrap 95% CI of its difference from the noisy input (utterances paired by id).
Writes to --output: enhanced/<model>/ (wavs + manifest), scores/<system>.jsonl, results.md,
results.json (every number), results.tex (the table as papers print it; `sealign table` makes
others), config.yaml, log.jsonl and TensorBoard events.

With --samples N each model enhances every utterance N times (seeds seed, seed + 1, ...; extra
outputs in enhanced/<model>_sample<i>/) and its score per utterance is the mean over the N
outputs: the expected quality of a sampling model, with less of its sampling noise in the CIs.
--best-of COLS adds, for each model, a system <model>_best that keeps per utterance the one of
its N outputs with the highest sum of those columns on the reward scale (best-of-N selection;
columns that read the reference make it an oracle, and the log says so).

With --sweep KEY=V1,V2,... each model enhances the test set once per value of one enhancement
setting (temperature, top_k, top_p, remix, fuse, dereverb, seed, or extra.<option> of the
model's sampler); each value is a system named <model>_<key><value> (e.g. fm_remix0.1) and
sweep.png plots every metric against the values.

A killed run continues with the same command plus --resume: every system whose outputs were
finished (enhanced/<tag>/manifest.jsonl.done.json) is read back instead of enhanced again, and
the utterances already in scores/<system>.jsonl are not scored again.

examples:
  sealign eval --model runs/sft --manifest data/test.jsonl --output runs/eval
  sealign eval --model runs/sft --model runs/gspo --name sft --name gspo \\
      --manifest data/test.jsonl --output runs/eval2 --metrics dnsmos,pesq_wb,wer
  sealign eval --model runs/sft --model runs/gspo --samples 4 baseline=sft \\
      --manifest data/test.jsonl --output runs/eval3
  sealign eval --model runs/fm --sweep temperature=0.1,0.3,0.7 baseline=fm_temperature0.1 \\
      --manifest data/valid.jsonl --output runs/eval_t

on several GPUs or machines, each rank enhances and scores its share of the utterances and
rank 0 merges them and writes the tables:
  torchrun --nproc-per-node 4 -m sealign eval --model runs/sft --manifest big.jsonl \\
      --output runs/eval_big --device cuda --metric-device cuda
  sealign eval ... --shard 2/4        # one of 4 jobs (e.g. a cluster job array); when all are done:
  sealign eval --output runs/eval_big --merge
"""

from __future__ import annotations

import argparse
import gc
import json
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sealign.audio.io import too_long
from sealign.commands.common import (
    add_config_arguments,
    flag,
    flags_of,
    log,
    prepare_run_dir,
    refuse_earlier_results,
    resolve_config,
    split_list,
)
from sealign.commands.enhance import add_enhance_flags, enhance_flags, load_model, model_settings
from sealign.config import load_config
from sealign.data.manifest import Entry, read_manifest
from sealign.eval.paper_table import from_results, to_latex
from sealign.eval.score import (
    ScoreConfig,
    best_of_samples,
    build_metrics,
    load_metrics,
    mean_over_samples,
    score_entries,
    selection_columns,
)
from sealign.eval.tables import compare_stats, compare_table, diff_table
from sealign.infer.enhance import (
    MANIFEST,
    MAX_SAMPLES,
    EnhanceConfig,
    enhance_samples,
    sample_tags,
)
from sealign.models.shipped import model_path
from sealign.report.plots import plot_sweep
from sealign.train.checkpoint import policy_dir
from sealign.train.distributed import process_device
from sealign.utils.folder_lock import hold_for_command
from sealign.utils.jsonio import write_json, write_text
from sealign.utils.logging import RunLogger
from sealign.utils.shard import (
    Shard,
    merge_shard_files,
    record_id,
    remove_shard_files,
    require_finished_shards,
    shard_files,
)
from sealign.utils.threads import set_torch_threads

RESULTS = "results.json"
PARTS = "parts.json"  # a shard's failures and sampling settings

HELP = "enhance a test set with one or more models and compare them with noisy and clean"


@dataclass
class EvalRunConfig:
    """Settings of ``sealign eval``."""

    models: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # one per model; default from the paths
    manifest: str = ""
    output: str = ""
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    n_boot: int = 2000
    baseline: str = "noisy"  # paired differences are taken against this system (or a model name)
    samples: int = 1  # outputs per utterance and model (seeds enhance.seed + i), scores averaged
    sweep: str = ""  # "KEY=V1,V2,...": each model enhanced once per value of enhance.KEY
    best_of: list[str] = field(default_factory=list)  # columns to pick the best of `samples` by
    seed: int = 0  # of the bootstrap

    def check(self) -> None:
        """Required settings and paths, checked before any work."""
        if not self.models:
            raise ValueError("models: give at least one --model")
        for m in self.models:
            if not model_path(m).exists():
                raise ValueError(f"models: not found: {m}")
        if self.names and len(self.names) != len(self.models):
            raise ValueError(f"names: {len(self.names)} names for {len(self.models)} models")
        if not self.manifest:
            raise ValueError("manifest: give --manifest (the utterances to evaluate)")
        if not Path(self.manifest).is_file():
            raise ValueError(f"manifest: not found: {self.manifest}")
        if not self.output:
            raise ValueError("output is required")
        if self.n_boot < 100:
            raise ValueError(f"n_boot must be >= 100, got {self.n_boot}")
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise ValueError(f"samples must be between 1 and {MAX_SAMPLES}, got {self.samples}")
        if self.best_of and self.samples < 2:
            raise ValueError("best_of needs samples >= 2 (outputs to choose from)")
        self.variants("model")  # a bad sweep fails here
        systems = ["noisy", "clean"]
        folders = list(systems)  # every output folder and scores file the run writes
        for name in self.names or model_names(self.models):
            if not name or name in (".", "..") or any(c in name for c in "/\\"):
                raise ValueError(f"names: {name!r} cannot name a folder (no path separators)")
            for system, _ in self.variants(name):
                systems += [system, f"{system}_best"] if self.best_of else [system]
                folders += sample_tags(system, self.samples)
                folders += [f"{system}_best"] if self.best_of else []
        clash = next((f for k, f in enumerate(folders) if f in folders[:k]), None)
        if clash is not None:
            raise ValueError(
                f"names: two systems would be called {clash!r} (noisy and clean are taken, and "
                "a model's sampled outputs are <name>_sample<i>); give other --name values"
            )
        if self.baseline not in systems:
            raise ValueError(f"baseline: {self.baseline!r} is not one of {', '.join(systems)}")

    def variants(self, name: str) -> list[tuple[str, EnhanceConfig]]:
        """``(system name, enhancement settings)`` of model ``name``: one, or one per value of
        the sweep."""
        if not self.sweep:
            return [(name, self.enhance)]
        key, values = parse_sweep(self.sweep)
        out = []
        for v in values:
            try:
                out.append(
                    (f"{name}_{key.removeprefix('extra.')}{v}", self.enhance.with_setting(key, v))
                )
            except (TypeError, ValueError) as err:
                raise ValueError(f"sweep: {key}={v}: {err}") from err
        return out


def parse_sweep(spec: str) -> tuple[str, list[Any]]:
    """``"KEY=V1,V2,..."`` → ``(KEY, [V1, V2, ...])`` with values read as YAML scalars."""
    import yaml

    key, sep, values = spec.partition("=")
    key = key.strip().removeprefix("enhance.")
    items = [v.strip() for v in values.split(",")]
    if not sep or not key or not all(items):
        raise ValueError(f"sweep: expected KEY=V1,V2,... (e.g. remix=0,0.1,0.2), got {spec!r}")
    parsed = [yaml.safe_load(v) for v in items]
    if len(set(map(str, parsed))) != len(parsed):
        raise ValueError(f"sweep: repeated values in {spec!r}")
    return key, parsed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", help="run, checkpoint or policy folder (repeat)")
    p.add_argument("--name", action="append", help="display name of each --model (repeat)")
    p.add_argument("--manifest", help="test manifest (audio = noisy, reference = clean)")
    p.add_argument("--output", help="output folder")
    p.add_argument(
        "--metrics",
        help="comma-separated metric names (see `sealign metrics`); `vbdmd` stands for the "
        "VoiceBank-DEMAND table's pesq_wb, composite, stoi, estoi, si_sdr",
    )
    p.add_argument("--no-cache", action="store_true", help="do not use the score cache")
    p.add_argument(
        "--metric-device",
        help="where metrics with a model run: cpu, cuda, cuda:N (score.metric_device)",
    )
    p.add_argument("--samples", type=int, help="outputs per utterance and model, scores averaged")
    p.add_argument(
        "--best-of",
        help="comma-separated columns (e.g. dnsmos_ovrl,distillmos): add each model's best of "
        "its --samples outputs by their sum on the reward scale",
    )
    p.add_argument(
        "--sweep",
        help="KEY=V1,V2,...: enhance once per value of a setting (e.g. remix=0,0.1,0.2)",
    )
    p.add_argument(
        "--shard",
        help="K/N: only utterances K, K+N, ... (one of N jobs; a sampling "
        "model's outputs are other draws than one job's)",
    )
    p.add_argument(
        "--merge", action="store_true", help="merge the finished shards in --output, write tables"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run in --output (same settings): outputs a system finished are "
        "not enhanced again, scored utterances are kept",
    )
    add_enhance_flags(p)
    add_config_arguments(p, "n_boot=1000")


def model_names(paths: list[str]) -> list[str]:
    """Short unique names: ``<run>@<step>`` for checkpoints, else the folder name."""
    names = []
    for p in map(model_path, paths):
        p = p.resolve()
        if p.name.startswith("step_") and p.name[5:].isdigit():
            name = f"{p.parent.parent.name}@{int(p.name[5:])}"
        else:
            name = p.name
        base, k = name, 2
        while name in names or name in ("noisy", "clean"):
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def run(args: argparse.Namespace) -> int:
    if args.merge:
        if not args.output:
            raise ValueError("--merge needs --output")
        hold_for_command(args.output)  # not while shards still write
        return _merge(Path(args.output))
    extra = flags_of(args, ("manifest", "output", "samples", "sweep"))
    if args.model:
        extra.append(flag("models", args.model))
    if args.name:
        extra.append(flag("names", args.name))
    if args.metrics:
        extra.append(flag("score.metrics", split_list(args.metrics)))
    if args.no_cache:
        extra.append("score.cache=null")
    if args.threads:
        extra.append(flag("score.threads", args.threads))
    if args.metric_device:
        extra.append(flag("score.metric_device", args.metric_device))
    if args.best_of:
        extra.append(flag("best_of", split_list(args.best_of)))
    cfg = resolve_config(EvalRunConfig, args, [*extra, *enhance_flags(args)])
    cfg.check()
    # before the metrics load: merged results only (a job's shards write their own names)
    scores = [f for f in Path(cfg.output).glob("scores/*.jsonl") if ".shard-" not in f.name]
    refuse_earlier_results(cfg.output, [Path(cfg.output) / RESULTS, *scores], args.resume)
    set_torch_threads(cfg.enhance.threads)
    shard = Shard.resolve(args.shard or "", "--shard").connect()
    entries = shard.take(read_manifest(cfg.manifest))
    names = list(cfg.names) or model_names(cfg.models)
    score_cfg = replace(cfg.score, metric_device=process_device(cfg.score.metric_device))
    entries, too_long_inputs = _scorable_length(entries, score_cfg.max_duration)
    metrics = build_metrics(score_cfg)  # unknown metrics and selection columns fail first
    infos = {n: m.info for n, m in metrics.items()}
    selection = selection_columns(infos, cfg.best_of) if cfg.best_of else ({}, [])
    load_metrics(metrics)  # and a metric that cannot load, before any enhancement
    if args.resume:
        check_same_run(cfg, Path(cfg.output))
    out = prepare_run_dir(cfg.output, cfg, shard)
    if not args.resume and not shard.sharded:  # an earlier run's tables are not this one's
        for name in (RESULTS, "results.md", "results.tex"):
            (out / name).unlink(missing_ok=True)
    shard.begin(out / RESULTS)
    manifest = shard.path(Path(MANIFEST)).name

    systems_entries: dict[str, list[Entry]] = {"noisy": entries}
    samples_of: dict[str, list[str]] = {"noisy": ["noisy"]}  # system → its sampled outputs
    failed: dict[str, dict[str, str]] = {"noisy": too_long_inputs} if too_long_inputs else {}
    sampling: dict[str, dict[str, Any]] = {}
    paths: dict[str, str] = {}  # system → model path
    series: dict[str, list[str]] = {}  # model → its systems
    for name, path in zip(names, cfg.models, strict=True):
        policy = None
        for system, settings in cfg.variants(name):
            settings = replace(settings, device=process_device(settings.device))
            log.info("enhancing with %s (%s)", system, path)
            if policy is None:
                policy, e = load_model(path, settings)
            else:
                e = model_settings(policy, path, settings)
            sampling[system] = {"temperature": e.temperature, "top_k": e.top_k, "top_p": e.top_p}
            sampling[system].update({"remix": e.remix} if e.remix else {}, **e.extra)
            if e.fuse and e.fuse != "none":
                sampling[system].update(
                    fuse=e.fuse, fuse_smooth_hz=e.fuse_smooth_hz, fuse_smooth_ms=e.fuse_smooth_ms
                )
            if e.dereverb and e.dereverb != "none":
                sampling[system]["dereverb"] = e.dereverb
            results = enhance_samples(
                policy, entries, out / "enhanced", system, cfg.samples, e.seed, record=True,
                resume=args.resume, model=policy_dir(path), manifest=manifest,
                **e.file_options(),
            )  # fmt: skip
            samples_of[system] = list(results)
            for tag, res in results.items():
                systems_entries[tag] = res.entries
                failed[tag] = res.failed
                if not res.resumed:  # new outputs: an earlier run's scores of the tag are stale
                    shard.path(out / "scores" / f"{tag}.jsonl").unlink(missing_ok=True)
            paths[system] = path
            series.setdefault(name, []).append(system)
        del policy
        gc.collect()
    # the clean column covers the utterances the models could enhance, as the others do
    usable = {e.id for tag, ents in systems_entries.items() if tag != "noisy" for e in ents}
    if not usable and not shard.sharded:
        raise ValueError(
            f"none of the {len(entries)} utterances of {cfg.manifest} could be enhanced "
            "(the reasons are logged above)"
        )
    systems_entries["noisy"] = [e for e in entries if e.id in usable]
    clean = [
        Entry(x.id, x.reference, reference=x.reference, text=x.text, speaker_ref=x.speaker_ref)
        for x in entries
        if x.reference and x.id in usable
    ]
    if clean:
        systems_entries["clean"] = clean
        samples_of["clean"] = ["clean"]
    elif not shard.sharded:
        log.warning("%s has no references: no clean column", cfg.manifest)

    scored: dict[str, list[dict[str, Any]]] = {}
    for s, ents in systems_entries.items():
        log.info("scoring %s (%d utterances)", s, len(ents))
        path = shard.path(out / "scores" / f"{s}.jsonl")
        scored[s] = score_entries(ents, score_cfg, path, resume=args.resume, metrics=metrics)
    if shard.sharded:
        write_json(shard.path(out / PARTS), {"failed": failed, "sampling": sampling})
        if not shard.settle(
            out / RESULTS, bool(args.shard), f"sealign eval --output {out} --merge"
        ):
            return 0
        return _merge(out)
    _report(cfg, out, scored, samples_of, paths, series, sampling, failed, infos, selection)
    return 0


def check_same_run(cfg: EvalRunConfig, out: Path) -> None:
    """``--resume`` continues the run in ``out`` only with the settings it was started with."""
    saved = out / "config.yaml"
    if not saved.is_file():
        raise ValueError(f"--resume: {saved} not found; nothing to continue")
    before = load_config(EvalRunConfig, saved)
    changed = [
        f.name for f in fields(EvalRunConfig) if getattr(before, f.name) != getattr(cfg, f.name)
    ]
    if changed:
        raise ValueError(
            f"--resume: {', '.join(changed)} differ from the run in {out}; use the same "
            "settings, or a new --output"
        )


def _scorable_length(
    entries: list[Entry], max_duration: float
) -> tuple[list[Entry], dict[str, str]]:
    """``entries`` without the inputs longer than scoring takes, and why each of those was
    left out: no system's output of them would be scored, so none is enhanced."""
    keep, left_out = [], {}
    for e in entries:
        if why := too_long(e.audio, max_duration):
            log.warning("skipping %s: %s (score.max_duration)", e.id, why)
            left_out[e.id] = f"{why} (score.max_duration)"
        else:
            keep.append(e)
    return keep, left_out


def _merge(out: Path) -> int:
    """Fold the shards of a sharded run in ``out`` (every rank's, or every job's of a job array)
    into one set of score files and manifests, and write the tables."""
    cfg = load_config(EvalRunConfig, out / "config.yaml")
    require_finished_shards(out / RESULTS)
    parts = shard_files(out / PARTS)
    if not parts:
        raise ValueError(f"{out}: no shards to merge ({Path(PARTS).stem}.shard-K-of-N.json)")
    failed: dict[str, dict[str, str]] = {}
    sampling: dict[str, dict[str, Any]] = {}
    for f in parts:
        part = json.loads(f.read_text(encoding="utf-8"))
        sampling.update(part["sampling"])
        for tag, reasons in part["failed"].items():
            failed.setdefault(tag, {}).update(reasons)
    scored: dict[str, list[dict[str, Any]]] = {}
    for path in sorted({f.with_name(f.name.split(".shard-")[0] + ".jsonl")
                        for f in (out / "scores").glob("*.shard-*-of-*.jsonl")}):  # fmt: skip
        scored[path.stem] = merge_shard_files(path, record_id, record_id, False, False) or []
    for folder in sorted(p for p in (out / "enhanced").glob("*") if p.is_dir()):
        merge_shard_files(folder / MANIFEST, record_id, record_id, False, False)
        stem, suffix = Path(MANIFEST).stem, Path(MANIFEST).suffix
        for record in folder.glob(f"{stem}.shard-*-of-*{suffix}.done.json"):
            record.unlink()  # the shards' resume records: the merged run is complete
    # which systems there are follows from the config, as when they were enhanced
    samples_of: dict[str, list[str]] = {"noisy": ["noisy"]}
    paths: dict[str, str] = {}
    series: dict[str, list[str]] = {}
    for name, path in zip(list(cfg.names) or model_names(cfg.models), cfg.models, strict=True):
        for system, _ in cfg.variants(name):
            samples_of[system] = sample_tags(system, cfg.samples)
            paths[system] = path
            series.setdefault(name, []).append(system)
    if "clean" in scored:
        samples_of["clean"] = ["clean"]
    if not any(scored.get(tag) for s in paths for tag in samples_of[s]):
        raise ValueError(f"none of the utterances of {cfg.manifest} could be enhanced")
    # the metrics are built (not loaded) for their output columns only
    infos = {n: m.info for n, m in build_metrics(cfg.score.on_cpu()).items()}
    selection = selection_columns(infos, cfg.best_of) if cfg.best_of else ({}, [])
    _report(cfg, out, scored, samples_of, paths, series, sampling, failed, infos, selection)
    for f in parts:
        f.unlink()
    remove_shard_files(out / RESULTS)  # the shards' markers
    return 0


def _report(
    cfg: EvalRunConfig,
    out: Path,
    scored: dict[str, list[dict[str, Any]]],
    samples_of: dict[str, list[str]],
    paths: dict[str, str],
    series: dict[str, list[str]],
    sampling: dict[str, dict[str, Any]],
    failed: dict[str, dict[str, str]],
    infos: dict[str, Any],
    best_of: tuple[dict[str, str], list[str]],
) -> None:
    """The tables (``results.md``, ``results.json``, TensorBoard) from every system's scores;
    ``best_of``: the selection columns and the oracle ones (:func:`selection_columns`)."""
    selection, oracle = best_of
    systems: dict[str, list[dict[str, Any]]] = {}
    selected: dict[str, dict[int, int]] = {}
    for s, tags in samples_of.items():
        systems[s] = mean_over_samples([scored[tag] for tag in tags])
        if selection and s in paths:
            best = best_of_samples([scored[tag] for tag in tags], selection)
            systems[f"{s}_best"], paths[f"{s}_best"] = best, paths[s]
            selected[f"{s}_best"] = dict(Counter(r["selected"] for r in best))
    if cfg.baseline not in systems:
        raise ValueError(f"baseline: {cfg.baseline!r} is not one of {', '.join(systems)}")
    others = [n for n in systems if n in paths and n != cfg.baseline]
    stats = compare_stats(systems, infos, others, cfg.n_boot, cfg.seed, baseline=cfg.baseline)
    stats.update(models=paths, sampling=sampling, failed=failed)
    stats["samples_per_utterance"] = cfg.samples
    if selection:
        stats["best_of"] = {"columns": selection, "oracle": oracle, "selected": selected}
    if cfg.sweep:
        key, values = parse_sweep(cfg.sweep)
        if selection:  # each model's best-of-N systems as a second line
            series.update({f"{m}, best of {cfg.samples}": [f"{x}_best" for x in series[m]]
                           for m in list(series)})  # fmt: skip
        stats["sweep"] = {"key": key, "values": values, "systems": series}
        plot_sweep(stats, out / "sweep.png")
    table = compare_table(systems, infos)
    diffs = diff_table(stats, others, baseline=cfg.baseline)
    text = f"{table}\n\n{diffs}\n"
    recs = [r for rs in scored.values() for r in rs]
    for name in infos:  # a metric that scored nothing: say why, not only "—" in every cell
        if not recs or any(k == name or k.startswith(f"{name}_")
                           for r in recs for k in r.get("scores", {})):  # fmt: skip
            continue
        why = Counter(r.get("skipped", {}).get(name) or r.get("errors", {}).get(name)
                      or "no result" for r in recs)  # fmt: skip
        reasons = ", ".join(f"{w} ({n})" for w, n in why.most_common(2))
        text += f"\nNote: {name} scored no utterance: {reasons}.\n"
    if failed.get("noisy"):  # inputs no system was run on ("failed" of the input itself)
        text += (f"\nNote: {len(failed['noisy'])} input(s) left out, too long to score "
                 "(results.json 'failed.noisy').\n")  # fmt: skip
    lost = {tag: len(reasons) for tag, reasons in failed.items() if reasons and tag != "noisy"}
    if lost:  # a mean over fewer utterances than the others': say so beside the table
        text += "\n" + "".join(
            f"Note: {tag} could not enhance {k} utterance(s) (reasons in results.json "
            "'failed'); its means cover the others, its differences pair by utterance.\n"
            for tag, k in lost.items()
        )
    write_text(out / "results.md", text)
    write_text(out / "results.tex", to_latex(from_results(stats, cfg.baseline)))
    write_json(out / RESULTS, stats, strict=True)
    logger = RunLogger(out)
    scalars = {
        f"eval/{s}/{col}": v["mean"]
        for s, cols in stats["systems"].items()
        for col, v in cols.items()
        if v["n"]
    }
    scalars.update(
        {
            f"eval/{m}/{col}_diff_vs_{cfg.baseline}": v["mean"]
            for m, cols in stats[f"diff_vs_{cfg.baseline}"].items()
            for col, v in cols.items()
            if v["n"]
        }
    )
    logger.log(scalars)
    logger.close()
    print(text)
    log.info("wrote %s/{results.md,results.json,results.tex,scores/,enhanced/}%s", out,
             ", sweep.png" if cfg.sweep else "")  # fmt: skip
    log.info("figures: sealign plot %s", out)
    try:  # a hint only: a manifest moved since the run began must not fail its last step
        degradations = [e.extra.get("degradation") for e in read_manifest(cfg.manifest)]
    except (OSError, ValueError):
        degradations = []
    if any(isinstance(d, dict) and "tasks" in d for d in degradations):
        log.info("by degradation: sealign table %s --by degradation.tasks --manifest %s", out,
                 cfg.manifest)  # fmt: skip
