"""Train a speech-enhancement policy with supervised fine-tuning on (noisy, clean) pairs.

Manifests give the noisy input in `audio` and the clean target in `reference` (or clean speech
only, with data.degrade=true). Writes to --output: config.yaml, log.jsonl, TensorBoard events
(tb/), checkpoints/step_<N>/ (the last save_total_limit) and decoded validation samples.
--resume continues from the latest checkpoint with exactly the losses an uninterrupted run gets
(without --config it reuses the run's config.yaml).

examples:
  sealign train --family ar --codec world:runs/codec --output runs/sft \\
      data.train=[data/train.jsonl] data.valid=[data/valid.jsonl]
  sealign train --config configs/ar_whisper_demo.yaml --output runs/sft max_steps=20000 optim.lr=1e-4
  sealign train --output runs/sft --resume
  sealign train --init-from runs/sft --output runs/sft_more data.train=[more.jsonl]

data-parallel on 8 GPUs (data.batch_size per GPU; rank 0 validates, logs and saves):
  torchrun --nproc-per-node 8 -m sealign train --config configs/ar_whisper_demo.yaml \\
      --output runs/sft device=cuda
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
from sealign.train.distributed import main_process
from sealign.train.sft import SFTConfig, train_sft
from sealign.utils.folder_lock import hold_for_command
from sealign.utils.shard import Shard

HELP = "supervised fine-tuning of a policy on (noisy, clean) pairs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", choices=FAMILIES, help="model family of a new model (model.family)")
    p.add_argument("--codec", help="codec spec of a new model, e.g. world:runs/codec (model.codec)")
    p.add_argument("--init-from", help="start from a run, checkpoint or policy dir")
    add_run_arguments(p, "optimizer steps", "optim.lr=3e-4", "runs/sft")


def run(args: argparse.Namespace) -> int:
    flags = {
        "model.family": args.family,
        "model.codec": args.codec,
        "model.init_from": args.init_from,
        **run_flags(args),
    }
    reuse_run_config(args, args.resume)
    cfg = resolve_flags(SFTConfig, args, flags)
    cfg.check()  # manifests, init checkpoint, codec spec: fail before any work
    hold_for_command(cfg.output_dir, Shard.resolve(""))  # one per torchrun rank
    check_same_job(Path(cfg.output_dir), cfg)
    result = train_sft(cfg, resume=args.resume, progress=not args.no_progress)
    if not main_process():  # rank 0 reports the job's results
        return 0
    log.info("trained to step %d; latest checkpoint: %s", result.step, result.checkpoint)
    log.info("curves: sealign plot %s", cfg.output_dir)
    return 0
