"""Score audio with perceptual and intrusive metrics.

Input is a JSONL manifest (id, audio, reference, text, speaker_ref), a folder of audio (optionally
with a parallel folder of clean references) or a Kaldi-style wav.scp. Writes to --output:
scores.jsonl (one line per utterance, flushed as it goes; --resume continues), summary.csv,
summary.md, config.yaml, log.jsonl and TensorBoard events.

examples:
  sealign score --input enhanced/ --reference clean/ --output runs/score1 --metrics dnsmos,pesq_wb
  sealign score --manifest test.jsonl --output runs/score2 metric_options.wer.asr=pocketsphinx
"""

from __future__ import annotations

import argparse

from sealign.commands.common import (
    add_config_arguments,
    flag,
    log,
    log_run_scalars,
    prepare_run_dir,
    resolve_config,
    split_list,
)
from sealign.data.importers import import_parallel, import_recordings
from sealign.data.manifest import ManifestError, from_kaldi, read_manifest
from sealign.eval.score import (
    ScoreConfig,
    build_metrics,
    format_table,
    score_entries,
    summarize,
    write_summary,
)

HELP = "score audio with metrics (table + per-utterance JSONL)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="JSONL manifest")
    src.add_argument("--input", help="folder of audio files to score")
    src.add_argument("--kaldi", help="Kaldi-style 'uid path' list (wav.scp)")
    p.add_argument("--reference", help="with --input: parallel folder of clean references")
    p.add_argument("--text", help="with --kaldi: 'uid transcript' file")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--metrics", help="comma-separated metric names (see `sealign metrics`)")
    p.add_argument(
        "--threads", type=int, help="threads per backend (torch / onnxruntime / ctranslate2)"
    )
    p.add_argument(
        "--metric-device", help="where metrics with a model run: cpu, cuda, cuda:N (metric_device)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument(
        "--no-cache", action="store_true", help="do not use the content-hash score cache"
    )
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    extra = []
    if args.metrics:
        extra.append(flag("metrics", split_list(args.metrics)))
    if args.threads:
        extra.append(flag("threads", args.threads))
    if args.metric_device:
        extra.append(flag("metric_device", args.metric_device))
    if args.no_cache:
        extra.append("cache=null")
    cfg = resolve_config(ScoreConfig, args, extra)
    if args.manifest:
        entries = read_manifest(args.manifest, check_files=False)
    elif args.input:
        if args.reference:
            entries, problems = import_parallel(args.input, args.reference)
        else:
            entries, problems = import_recordings(args.input)
        for prob in problems:
            log.warning("%s", prob)
        if not entries:
            raise ManifestError(f"{args.input}: nothing to score")
    else:
        entries = from_kaldi(args.kaldi, args.text)
    out = prepare_run_dir(args.output, cfg)
    metrics = build_metrics(cfg)
    records = score_entries(entries, cfg, out / "scores.jsonl", resume=args.resume, metrics=metrics)
    if args.resume:
        from sealign.eval.score import load_records

        records = load_records(out / "scores.jsonl")
    rows = summarize(records, {name: m.info for name, m in metrics.items()})
    write_summary(rows, out)
    log_run_scalars(out, {f"score/{r.column}/mean": r.mean for r in rows if r.n})
    print(format_table(rows))
    log.info("wrote %s/{scores.jsonl,summary.csv,summary.md}", out)
    return 0
