"""Build a multi-metric preference dataset: sample N candidates per noisy input from a policy
(any family), score them on complementary metrics, and form pairs by criterion.

The manifest gives the noisy input in `audio`, the clean reference in `reference` (speaker
similarity and SpeechBERTScore need it) and optionally `text`. Writes to --output:
candidates.jsonl, audio/, targets/ (what DPO needs to recompute log-likelihoods),
pairs/<criterion>.jsonl for every criterion, yield.json and yield.md (pair yield per criterion,
total and per input). Re-running resumes the sampling; `--repair` only re-forms pairs. Either
first scores again, from the stored audio, every candidate whose scores of a metric came from
other settings of it (other `metric_options`, an upgrade) or lack a metric added since
(`rescore=false` pairs the stored scores as they are). The candidates follow `seed` and the
batching: each batch of `batch_size` inputs draws from a stream seeded by its first input's
position, so another `batch_size` (or number of shards) gives other, equally random candidates.

examples:
  sealign prefs --model runs/sft --manifest data/demo/train.jsonl --output runs/prefs --n 4
  sealign prefs --model runs/sft --manifest data/demo/train.jsonl --output runs/prefs \\
      metrics=[dnsmos,distillmos,spk_sim,speechbertscore,nisqa] \\
      metric_options.nisqa.weights=weights/nisqa.tar \\
      'columns=[dnsmos_sig,dnsmos_bak,dnsmos_ovrl,nisqa_mos,spk_sim,speechbertscore_whisper_base]'
  sealign prefs --output runs/prefs --repair criterion=single:dnsmos_ovrl

on several GPUs or machines: each process samples and scores its share of the inputs
  torchrun --nproc-per-node 8 -m sealign prefs --model runs/sft --manifest m.jsonl \\
      --output runs/prefs --num-candidates 4 --device cuda --metric-device cuda
      # (rank 0 forms the pairs)
  sealign prefs ... --shard 3/8      # one of 8 independent jobs (e.g. a cluster job array);
  sealign prefs --output runs/prefs --repair    # once all 8 are done: merge, form pairs
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sealign.commands.common import (
    add_config_arguments,
    check_same_job,
    log,
    log_run_scalars,
    resolve_flags,
    reuse_run_config,
)
from sealign.config import save_config
from sealign.eval.score import load_metrics
from sealign.metrics.registry import build_metric
from sealign.prefs.build import (
    CANDIDATES,
    PrefsConfig,
    all_criteria,
    build_candidates,
    merge_shards,
    pair_dataset,
    prefs_inputs,
    refresh_scores,
    require_pairs,
    warn_unfinished,
    yield_table,
)
from sealign.utils.folder_lock import hold_for_command
from sealign.utils.jsonio import write_json, write_text
from sealign.utils.shard import Shard, shard_files
from sealign.utils.threads import set_torch_threads

HELP = "sample, score and pair candidates into a preference dataset (unanimous agreement)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="policy: run, checkpoint or policy dir")
    p.add_argument(
        "--manifest",
        help="noisy inputs (audio = noisy, reference = clean); a.jsonl,b.jsonl: several",
    )
    p.add_argument("--output", help="dataset folder")
    # the long form also works after `torchrun ... -m sealign prefs`, whose parser would take
    # a bare --n for an abbreviation of its own --nnodes / --nproc-per-node
    p.add_argument(
        "--n", "--num-candidates", type=int, dest="n", help="candidates per input (num_candidates)"
    )
    p.add_argument("--criterion", help="unanimous | weighted | gt-winner | single:<column>")
    p.add_argument("--device", help="where the policy samples: cpu, cuda, cuda:N (device)")
    p.add_argument(
        "--metric-device", help="where metrics with a model run: cpu, cuda, cuda:N (metric_device)"
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="only re-form pairs of --output (after scoring again candidates that other "
        "metric settings scored; rescore=false: pair them as stored)",
    )
    p.add_argument("--shard", help="K/N: only inputs K, K+N, ... (one of N jobs; shard)")
    add_config_arguments(p, "temperature=0.7")


def run(args: argparse.Namespace) -> int:
    from sealign.models.registry import load_policy
    from sealign.train.checkpoint import policy_dir
    from sealign.train.distributed import process_device

    if args.repair and not (args.output and (Path(args.output) / "config.yaml").is_file()):
        raise ValueError(f"--repair: {args.output} holds no `sealign prefs` run (no config.yaml)")
    reuse_run_config(args, args.repair)
    flags = {
        "model": args.model,
        "manifest": args.manifest,
        "output": args.output,
        "num_candidates": args.n,
        "criterion": args.criterion,
        "device": args.device,
        "metric_device": args.metric_device,
        "shard": args.shard,
    }
    cfg = resolve_flags(PrefsConfig, args, {k: v for k, v in flags.items() if v not in (None, "")})
    cfg.check()
    set_torch_threads(cfg.threads)
    shard = Shard() if args.repair else Shard.resolve(cfg.shard).connect()
    metrics = {
        m: build_metric(
            m,
            num_threads=cfg.threads,
            metric_device=process_device(cfg.metric_device),
            **cfg.metric_options.get(m, {}),
        )
        for m in cfg.metrics
    }
    if not args.repair:  # bad inputs, and a metric that cannot load, fail before any writing
        prefs_inputs(cfg)
        load_metrics(metrics)
    out = Path(cfg.output)
    hold_for_command(out, shard)  # so a --repair refuses a job that still runs
    # what the stored candidates were sampled with (pairing and scoring settings may change)
    sampled = ("model", "num_candidates", "temperature", "sample_options", "seed", "max_seconds")
    stored = out / CANDIDATES
    started = not args.repair and (stored.is_file() or bool(shard_files(stored)))
    check_same_job(out, dataclasses.replace(cfg, shard=""), shard, sampled if started else ())
    save_config(dataclasses.replace(cfg, shard=""), out / "config.yaml")  # the whole job's
    if not args.repair:
        device = process_device(cfg.device)
        policy = load_policy(policy_dir(cfg.model), map_location=device)
        build_candidates(cfg, policy, metrics, shard)
        if not shard.settle(
            out / CANDIDATES, bool(cfg.shard), f"sealign prefs --output {out} --repair"
        ):
            return 0
    merge_shards(out, cfg.num_candidates)
    warn_unfinished(out)
    refresh_scores(cfg, metrics)
    reports = [pair_dataset(cfg, metrics, c) for c in all_criteria(cfg.columns)]
    chosen = next(r for r in reports if r.criterion == cfg.criterion)
    summary = {r.criterion: r.summary() for r in reports}
    per_input: dict[str, dict[str, int]] = {}
    for r in reports:
        for p in r.pairs:
            per_input.setdefault(p.input_id, {}).setdefault(r.criterion, 0)
            per_input[p.input_id][r.criterion] += 1
    write_json(out / "yield.json", {"criteria": summary, "per_input": per_input})
    table = yield_table(reports)
    write_text(out / "yield.md", table + "\n")
    print(table)
    log_run_scalars(out, {f"prefs/{r.criterion}/pairs": float(len(r.pairs)) for r in reports})
    require_pairs(chosen)
    log.info("%d %s pairs in %s", len(chosen.pairs), cfg.criterion, out / "pairs")
    return 0
