"""Enhance audio with a trained policy.

--model is a run folder (its latest checkpoint), a checkpoint folder or a saved policy folder.
--input is a JSONL manifest (audio = noisy; reference/text are carried over) or a folder of
audio files. Long files are enhanced in overlapping chunks and crossfaded. Writes to --output:
one wav per input, manifest.jsonl (audio = enhanced, noisy = input), config.yaml, log.jsonl and
TensorBoard events.

With --samples N --best-of COLS each input is enhanced N times and the output with the highest
sum of those reference-free columns on the reward scale is kept (best-of-N selection, as `eval
--best-of` measures it); the candidates and their scores stay in <output>/candidates/.

Sampling settings (--temperature, enhance.top_k / top_p), the pre-processing (--dereverb) and
the post-processing (--fuse) not given here come from the policy folder's sampling.json.
--dereverb wpe dereverberates each chunk of the input (weighted prediction error) before the
model sees it. --fuse mask writes the (dereverberated) input masked by the output instead of
the output. The shipped AR and MGM do both by default; --fuse none --dereverb none writes the
model's own output for the noisy input. --remix W then mixes a share W of the input back in.

examples:
  sealign enhance --model runs/sft --input data/test.jsonl --output runs/enh
  sealign enhance --model runs/sft --input recordings/ --output out --samples 4 \\
      --best-of dnsmos_ovrl,distillmos,asr_confidence
  sealign enhance --model runs/sft/checkpoints/step_00002000 --input recordings/ --output out \\
      --chunk-seconds 8 --overlap-seconds 0.5 enhance.temperature=0.5

on several GPUs or machines: each process enhances its share of the inputs
  torchrun --nproc-per-node 4 -m sealign enhance --model runs/sft --input big.jsonl \\
      --output runs/enh --device cuda             # rank 0 merges the manifests
  sealign enhance ... --shard 1/4                 # one of 4 jobs; when all are done:
  sealign enhance --output runs/enh --merge
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealign.commands.common import (
    add_config_arguments,
    flag,
    flags_of,
    log,
    prepare_run_dir,
    resolve_config,
    split_list,
)
from sealign.infer.dereverb import DEREVERBS
from sealign.infer.enhance import (
    MANIFEST,
    MAX_SAMPLES,
    EnhanceConfig,
    enhance_files,
    resolve_inputs,
)
from sealign.infer.fusion import FUSIONS
from sealign.models.shipped import model_path
from sealign.train.checkpoint import policy_dir
from sealign.train.distributed import process_device
from sealign.utils.folder_lock import hold_for_command
from sealign.utils.logging import RunLogger
from sealign.utils.shard import Shard, merge_shard_files, record_id, require_finished_shards
from sealign.utils.threads import set_torch_threads

HELP = "enhance audio files with a trained policy"


@dataclass
class EnhanceRunConfig:
    """Settings of ``sealign enhance``."""

    model: str = ""
    input: str = ""
    output: str = ""
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)
    samples: int = 1  # outputs per input to choose from (with best_of)
    best_of: list[str] = field(default_factory=list)  # reference-free columns that pick the best

    def check(self) -> None:
        """Required settings and paths (defaults stay constructible for ``load_config``)."""
        for key in ("model", "input", "output"):
            if not getattr(self, key):
                raise ValueError(f"{key} is required")
        if not model_path(self.model).exists():
            raise ValueError(f"model: not found: {self.model}")
        if not Path(self.input).exists():
            raise ValueError(f"input: not found: {self.input}")
        if (self.samples > 1) != bool(self.best_of) or self.samples < 1:
            raise ValueError("samples > 1 and best_of go together (N outputs, columns to pick by)")
        if self.samples > MAX_SAMPLES:
            raise ValueError(f"samples must be at most {MAX_SAMPLES}, got {self.samples}")
        if self.best_of:
            from sealign.infer.best_of import selection_metrics

            selection_metrics(self.best_of)  # unknown or reference-based columns fail here


def add_enhance_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared with ``sealign eval`` (each sets a field of ``enhance``)."""
    p.add_argument("--batch-size", type=int, help="chunks per forward pass")
    p.add_argument("--chunk-seconds", type=float, help="chunk length for long files (0 = none)")
    p.add_argument("--overlap-seconds", type=float, help="overlap of consecutive chunks")
    p.add_argument(
        "--temperature",
        type=float,
        help="sampling temperature (default: the checkpoint's sampling.json, else 0.3)",
    )
    p.add_argument(
        "--remix",
        type=float,
        help="weight in [0, 1) of the noisy input mixed back into each output "
        "(observation adding; 0 = off)",
    )
    p.add_argument(
        "--fuse",
        choices=FUSIONS,
        help="mask: write the noisy input masked by the output's smoothed share of its power "
        "(keeps the input's own speech; no dereverberation or gap filling)",
    )
    p.add_argument(
        "--dereverb",
        choices=DEREVERBS,
        help="wpe: dereverberate the input by weighted prediction error before the model",
    )
    p.add_argument("--seed", type=int, help="sampling seed")
    p.add_argument("--device", help="torch device")
    p.add_argument("--threads", type=int, help="torch threads")


def enhance_flags(args: argparse.Namespace) -> list[str]:
    names = ["batch_size", "chunk_seconds", "overlap_seconds", "temperature", "remix", "fuse"]
    names += ["dereverb", "seed"]
    names += ["device", "threads"]
    return flags_of(args, names, prefix="enhance.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="run, checkpoint or policy folder")
    p.add_argument("--input", help="JSONL manifest, folder of audio files, or one audio file")
    p.add_argument("--output", help="output folder")
    p.add_argument(
        "--shard",
        help="K/N: enhance only inputs K, K+N, ... (one of N jobs; "
        "a sampling model's outputs are other draws than one job's)",
    )
    p.add_argument(
        "--merge", action="store_true", help="merge the finished shards' manifests in --output"
    )
    p.add_argument("--samples", type=int, help="outputs per input to choose from (--best-of)")
    p.add_argument(
        "--best-of",
        help="comma-separated reference-free columns (e.g. dnsmos_ovrl,distillmos): keep the "
        "output of the --samples with the highest sum on the reward scale",
    )
    add_enhance_flags(p)
    add_config_arguments(p, "enhance.temperature=0.5")


def load_model(path: str, cfg: EnhanceConfig) -> tuple[Any, EnhanceConfig]:
    """The policy saved at ``path`` (run, checkpoint or policy folder) in eval mode, and
    ``cfg`` with the sampling settings it leaves unset taken from the checkpoint."""
    from sealign.models.registry import load_policy

    set_torch_threads(cfg.threads)
    policy = load_policy(policy_dir(path))
    cfg = model_settings(policy, path, cfg)
    return policy.to(cfg.device).eval(), cfg  # type: ignore[attr-defined]


def model_settings(policy: Any, path: str, cfg: EnhanceConfig) -> EnhanceConfig:
    """``cfg`` checked against the policy loaded from ``path`` (its sampler's options), with
    the sampling settings it leaves unset taken from the checkpoint."""
    from sealign.models.policy import check_sample_options

    check_sample_options(policy, cfg.extra, "enhance.extra")
    cfg = cfg.for_checkpoint(policy_dir(path))
    check_sample_options(policy, cfg.sample_options(), f"{path}: top_k / top_p", False)
    log.info(
        "%s: sampling temperature %g, top_k %d, top_p %g%s",
        path,
        cfg.temperature,
        cfg.top_k,
        cfg.top_p,
        (f", remix {cfg.remix:g}" if cfg.remix else "")
        + (f", {cfg.fuse} fusion" if cfg.fuse != "none" else "")
        + (f", {cfg.dereverb} dereverberation" if cfg.dereverb != "none" else ""),
    )
    return cfg


def run(args: argparse.Namespace) -> int:
    if args.merge:
        if not args.output:
            raise ValueError("--merge needs --output")
        hold_for_command(args.output)  # not while shards still write
        require_finished_shards(Path(args.output) / MANIFEST)
        merged = merge_shard_files(Path(args.output) / MANIFEST, record_id, record_id, False)
        if merged is None:
            raise ValueError(f"{args.output}: no shard manifests (manifest.shard-K-of-N.jsonl)")
        _log_merged(Path(args.output), merged)
        return 0
    flags = flags_of(args, ("model", "input", "output", "samples"))
    if args.best_of:
        flags.append(flag("best_of", split_list(args.best_of)))
    cfg = resolve_config(EnhanceRunConfig, args, [*flags, *enhance_flags(args)])
    cfg.check()
    shard = Shard.resolve(args.shard or "", "--shard").connect()
    if Path(cfg.output).resolve() == Path(cfg.input).resolve():
        raise ValueError(f"--output must differ from --input ({cfg.input}): outputs would "
                         "overwrite the inputs")  # fmt: skip
    inside = Path(cfg.output).resolve().is_relative_to(Path(cfg.input).resolve())
    entries = shard.take(resolve_inputs(cfg.input, exclude=cfg.output if inside else None))
    out = prepare_run_dir(cfg.output, cfg, shard)
    shard.begin(out / MANIFEST)
    enh = dataclasses.replace(cfg.enhance, device=process_device(cfg.enhance.device))
    policy, e = load_model(cfg.model, enh)
    manifest = shard.path(Path(MANIFEST)).name
    # an earlier run's manifest would list this run's files as done until it finishes
    (out / manifest).unlink(missing_ok=True)
    if cfg.best_of:
        from sealign.infer.best_of import enhance_best_of

        res = enhance_best_of(policy, entries, out, cfg.samples, cfg.best_of, e.seed, e.threads,
                              manifest, shard.path(Path("candidates")).name,
                              **e.file_options())  # fmt: skip
    else:
        res = enhance_files(
            policy, entries, out, seed=e.seed, manifest=manifest, **e.file_options()
        )
    part = f"shard_{shard.index}/" if shard.sharded else ""  # a shard logs its own share
    logger = RunLogger(out)
    logger.log(
        {
            f"enhance/{part}files": len(res.entries),
            f"enhance/{part}failed": len(res.failed),
            f"enhance/{part}audio_seconds": res.audio_seconds,
            f"enhance/{part}real_time_factor": res.real_time_factor,
        }
    )
    logger.close()
    for uid, reason in res.failed.items():
        log.warning("not enhanced: %s: %s", uid, reason)
    log.info(
        "enhanced %d files (%.1f s of audio, RTF %.2f) -> %s",
        len(res.entries),
        res.audio_seconds,
        res.real_time_factor,
        res.manifest,
    )
    if not shard.settle(
        out / MANIFEST, bool(args.shard), f"sealign enhance --output {out} --merge"
    ):
        return 0 if res.entries else 1
    if shard.sharded:
        _log_merged(out, merge_shard_files(out / MANIFEST, record_id, record_id, False) or [])
    return 0 if res.entries else 1


def _log_merged(out: Path, merged: list[dict]) -> None:
    """The whole job's count, once its shards are merged (each shard logged its own)."""
    logger = RunLogger(out)
    logger.log({"enhance/files": len(merged)})
    logger.close()
    log.info("%d enhanced files listed in %s", len(merged), out / MANIFEST)
