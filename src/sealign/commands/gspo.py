"""Post-train a policy with GSPO (or GRPO) on a composite perceptual reward.

The training manifests give the noisy input in `audio`, the clean reference in `reference` and
the transcript in `text` (the default reward needs it for WER; speaker similarity and PESQ
use the reference). Writes to --output: config.yaml, log.jsonl, TensorBoard events (tb/),
checkpoints/step_<N>/, held-out scores eval/step_<N>.json and audio samples/step_<N>/.

examples:
  sealign gspo --config configs/gspo_demo.yaml --output runs/gspo
  sealign gspo --init-from runs/sft --output runs/gspo data.train=[data/train.jsonl] \\
      eval.manifests=[data/valid.jsonl] max_steps=300 optim.lr=1e-5
  sealign gspo --config configs/gspo_demo.yaml --output runs/gspo_dnsmos \\
      'reward.components=[{metric: dnsmos, output: ovrl}]' \\
      'reward.metric_options={dnsmos: {mode: fast}}'  # options only for metrics rewarded
  # WER credited word by word (AR policies; each frame gets its own reference word's advantage)
  sealign gspo --config configs/gspo_demo.yaml --output runs/gspo_words loss=gspo_token \\
      'reward.components=[{metric: dnsmos, output: ovrl}, {metric: wer, credit: word},
      {metric: distillmos}]'
  sealign gspo --output runs/gspo --resume
  torchrun --nproc-per-node 2 -m sealign gspo --config configs/gspo_demo.yaml --output runs/ddp
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
from sealign.rl.gspo import GSPOConfig, train_gspo
from sealign.train.distributed import main_process
from sealign.utils.folder_lock import hold_for_command
from sealign.utils.shard import Shard

HELP = "online RL (GSPO / GRPO) on a composite perceptual reward"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init-from", help="policy to post-train: run, checkpoint or policy dir")
    p.add_argument("--max-minutes", type=float, help="wall-time budget (max_minutes)")
    p.add_argument(
        "--metric-device",
        help="where the reward's metrics run: cpu, cuda, cuda:N (reward.metric_device)",
    )
    add_run_arguments(p, "rollout steps", "beta=0.04", "runs/gspo")


def run(args: argparse.Namespace) -> int:
    flags = {
        "model.init_from": args.init_from,
        "max_minutes": args.max_minutes,
        "reward.metric_device": args.metric_device,
        **run_flags(args),
    }
    reuse_run_config(args, args.resume)
    cfg = resolve_flags(GSPOConfig, args, flags)
    cfg.check()
    hold_for_command(cfg.output_dir, Shard.resolve(""))  # one per torchrun rank
    check_same_job(Path(cfg.output_dir), cfg)
    result = train_gspo(cfg, resume=args.resume, progress=not args.no_progress)
    if not main_process():  # rank 0 reports the job's results
        return 0
    log.info("GSPO reached step %d; latest checkpoint: %s", result.step, result.checkpoint)
    log.info("curves: sealign plot %s", cfg.output_dir)
    for a in result.alarms:
        log.warning(a)
    return 0
