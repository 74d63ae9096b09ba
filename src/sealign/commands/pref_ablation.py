"""The GenSR-Pref ablation for one family: multi-metric DPO vs each single-metric criterion vs
the clean reference as fixed winner vs the SFT baselines (and cross-family data), same budget,
evaluated on a test manifest, plus the preference-vector analysis.

Writes to --output: arms/<arm>/ (each a `sealign dpo` run), enhanced/, scores/, results.md and
results.json. Finished arms are reused on a second run.

examples:
  sealign pref-ablation --family ar --model runs/sft --dataset runs/prefs_ar \\
      --test data/demo/test.jsonl --output runs/ablation_ar max_steps=100
  sealign pref-ablation --family ar --model runs/sft --dataset runs/prefs_ar \\
      --cross-dataset runs/prefs_fm --test data/demo/test.jsonl --output runs/ablation_ar
"""

from __future__ import annotations

import argparse

from sealign.commands.common import add_config_arguments, flags_of, prepare_run_dir, resolve_config
from sealign.models.policy import FAMILIES
from sealign.prefs.ablation import AblationConfig, run_ablation
from sealign.utils.folder_lock import hold_for_command

HELP = "multi- vs single-metric preference ablation for one model family"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", choices=FAMILIES, help="family of --model (checked)")
    p.add_argument("--model", help="base policy")
    p.add_argument("--dataset", help="preference dataset of the same family (sealign prefs)")
    p.add_argument("--cross-dataset", help="preference dataset sampled by another family")
    p.add_argument("--test", help="test manifest")
    p.add_argument("--output", help="output folder")
    p.add_argument("--device", help="where the arms train and enhance: cpu, cuda, cuda:N")
    p.add_argument(
        "--metric-device", help="where metrics with a model run: cpu, cuda, cuda:N (metric_device)"
    )
    add_config_arguments(p, "beta=0.2")


def run(args: argparse.Namespace) -> int:
    keys = ("family", "model", "dataset", "cross_dataset", "test", "output", "device",
            "metric_device")  # fmt: skip
    flags = flags_of(args, keys)
    cfg = resolve_config(AblationConfig, args, flags)
    cfg.check()
    # not while `sealign prefs` still writes a dataset (as `sealign dpo` holds it)
    for dataset in filter(None, (cfg.dataset, cfg.cross_dataset)):
        hold_for_command(dataset, reader=True)
    prepare_run_dir(cfg.output, cfg)
    run_ablation(cfg)
    return 0
