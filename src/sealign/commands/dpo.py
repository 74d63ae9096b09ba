"""Preference alignment with DPO (or the SFT baselines) on a `sealign prefs` dataset.

Works for every family through the policy's preference log-likelihood: AR sequence log-probs,
masked conditional log-probs under a shared random mask (MGM), the single-step flow-matching
error under a shared t and noise (FM). Writes config.yaml, log.jsonl, TensorBoard events,
checkpoints/ and held-out evaluations (eval.manifests) to --output; --resume continues exactly.

examples:
  sealign dpo --family ar --init-from runs/sft --dataset runs/prefs --output runs/dpo
  sealign dpo --init-from runs/sft --dataset runs/prefs --output runs/dpo_ovrl \\
      criterion=single:dnsmos_ovrl beta=0.1 max_steps=200
  sealign dpo --init-from runs/sft --dataset runs/prefs --output runs/sft_gt objective=sft-gt

data-parallel on 8 GPUs (batch_size pairs per GPU; rank 0 evaluates, logs and saves):
  torchrun --nproc-per-node 8 -m sealign dpo --init-from runs/sft --dataset runs/prefs \\
      --output runs/dpo device=cuda
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sealign.commands.common import (
    add_run_arguments,
    check_same_job,
    log,
    resolve_flags,
    reuse_run_config,
    run_flags,
)
from sealign.models.policy import FAMILIES
from sealign.rl.dpo import DPOConfig, train_dpo
from sealign.train.distributed import main_process
from sealign.utils.folder_lock import hold_for_command
from sealign.utils.shard import Shard

HELP = "DPO (or SFT baselines) on a multi-metric preference dataset, for any model family"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", choices=FAMILIES, help="expected model family (checked)")
    p.add_argument("--init-from", help="policy to align: run, checkpoint or policy dir")
    p.add_argument("--dataset", help="preference dataset folder (sealign prefs)")
    p.add_argument(
        "--metric-device",
        help="where the held-out metrics run: cpu, cuda, cuda:N (metric_device)",
    )
    add_run_arguments(p, "optimizer steps", "beta=0.2", "runs/dpo")


def run(args: argparse.Namespace) -> int:
    flags = {
        "family": args.family,
        "model.init_from": args.init_from,
        "dataset": args.dataset,
        "metric_device": args.metric_device,
        **run_flags(args),
    }
    reuse_run_config(args, args.resume)
    cfg = resolve_flags(DPOConfig, args, flags)
    cfg.check()
    hold_for_command(cfg.dataset, reader=True)  # not while `sealign prefs` still writes it
    hold_for_command(cfg.output_dir, Shard.resolve(""))  # one per torchrun rank
    check_same_job(Path(cfg.output_dir), cfg)
    result = train_dpo(cfg, resume=args.resume, progress=not args.no_progress)
    if not main_process():  # rank 0 reports the job's results
        return 0
    log.info(
        "%s reached step %d; latest checkpoint: %s", cfg.objective, result.step, result.checkpoint
    )
    log.info("curves: sealign plot %s", cfg.output_dir)
    return 0
