"""Score audio with perceptual and intrusive metrics.

Input is a JSONL manifest (id, audio, reference, text, speaker_ref), a folder of audio (optionally
with a parallel folder of clean references) or a Kaldi-style wav.scp. Writes to --output:
scores.jsonl (one line per utterance, flushed as it goes; --resume continues), summary.csv,
summary.md, config.yaml, log.jsonl and TensorBoard events.

examples:
  sealign score --input enhanced/ --reference clean/ --output runs/score1 --metrics dnsmos,pesq_wb
  sealign score --manifest test.jsonl --output runs/score2 metric_options.wer.asr=pocketsphinx

on several GPUs or machines: each process scores its share of the utterances
  torchrun --nproc-per-node 4 -m sealign score --manifest big.jsonl --output runs/big \\
      --metric-device cuda                    # rank 0 merges the shards and writes the table
  sealign score --manifest big.jsonl --output runs/big --shard 2/4   # one of 4 jobs, then:
  sealign score --output runs/big --merge
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sealign.commands.common import (
    add_config_arguments,
    flag,
    log,
    log_run_scalars,
    prepare_run_dir,
    refuse_earlier_results,
    resolve_config,
    split_list,
)
from sealign.config import load_config
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
from sealign.metrics.base import Metric
from sealign.train.distributed import process_device
from sealign.utils.folder_lock import hold_for_command
from sealign.utils.shard import Shard, merge_shard_files, record_id, require_finished_shards

SCORES = "scores.jsonl"

HELP = "score audio with metrics (table + per-utterance JSONL)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--manifest", help="JSONL manifest")
    src.add_argument("--input", help="folder of audio files to score")
    src.add_argument("--kaldi", help="Kaldi-style 'uid path' list (wav.scp)")
    p.add_argument("--reference", help="with --input: parallel folder of clean references")
    p.add_argument("--text", help="with --kaldi: 'uid transcript' file")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument(
        "--metrics",
        help="comma-separated metric names (see `sealign metrics`); `vbdmd` stands for the "
        "VoiceBank-DEMAND table's pesq_wb, composite, stoi, estoi, si_sdr",
    )
    p.add_argument(
        "--threads", type=int, help="threads per backend (torch / onnxruntime / ctranslate2)"
    )
    p.add_argument(
        "--metric-device", help="where metrics with a model run: cpu, cuda, cuda:N (metric_device)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument("--shard", help="K/N: score only utterances K, K+N, ... (one of N jobs)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="merge the finished shards in --output, write the table",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="do not use the content-hash score cache"
    )
    add_config_arguments(p, "metric_options.wer.asr=pocketsphinx")


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
    if args.merge:
        hold_for_command(args.output)  # not while shards still write
        return _merge(Path(args.output))
    if not (args.manifest or args.input or args.kaldi):
        raise ValueError("one of --manifest, --input or --kaldi is required (or --merge)")
    cfg = resolve_config(ScoreConfig, args, extra)
    shard = Shard.resolve(args.shard or "", "--shard").connect()
    if args.manifest:
        entries = read_manifest(args.manifest, check_files=False)
    elif args.input:
        # several channels are averaged, as when scoring a manifest's files
        if args.reference:
            entries, problems = import_parallel(args.input, args.reference, multichannel=True)
        else:
            entries, problems = import_recordings(args.input, multichannel=True)
        for prob in problems:
            log.warning("%s", prob)
        if not entries:
            raise ManifestError(f"{args.input}: nothing to score")
    else:
        entries = from_kaldi(args.kaldi, args.text)
    refuse_earlier_results(args.output, [Path(args.output) / SCORES], args.resume)
    out = prepare_run_dir(args.output, cfg, shard)
    cfg = dataclasses.replace(cfg, metric_device=process_device(cfg.metric_device))
    metrics = build_metrics(cfg)
    path = shard.path(out / SCORES)
    shard.begin(out / SCORES)
    records = score_entries(shard.take(entries), cfg, path, resume=args.resume, metrics=metrics)
    if not shard.settle(out / SCORES, bool(args.shard), f"sealign score --output {out} --merge"):
        return 0
    if shard.sharded:
        records = (
            merge_shard_files(out / SCORES, record_id, record_id, keep_existing=False) or records
        )
    _summary(out, records, metrics)
    return 0


def _merge(out: Path) -> int:
    """Fold the shard files of a sharded run in ``out`` into scores.jsonl and summarize."""
    cfg = load_config(ScoreConfig, out / "config.yaml")
    require_finished_shards(out / SCORES)
    records = merge_shard_files(out / SCORES, record_id, record_id, keep_existing=False)
    if records is None:
        raise ValueError(f"{out}: no shard files (scores.shard-K-of-N.jsonl) to merge")
    _summary(out, records, build_metrics(cfg.on_cpu()))  # built, not loaded: for their columns
    return 0


def _summary(out: Path, records: list[dict], metrics: dict[str, Metric]) -> None:
    rows = summarize(records, {name: m.info for name, m in metrics.items()})
    write_summary(rows, out)
    log_run_scalars(out, {f"score/{r.column}/mean": r.mean for r in rows if r.n})
    print(format_table(rows))
    log.info("wrote %s/{%s,summary.csv,summary.md}", out, SCORES)
