"""Train the built-in WORLD codec's codebooks on clean speech.

Training audio comes from a JSONL manifest (each entry's ``reference``, or ``audio`` when it has
none) or is synthesized offline with eSpeak NG (``--espeak N``: N generated sentences over
several voices, rates and pitches). The codec folder holds codec.safetensors + config.json and is
used as ``world:<folder>`` (``world:<folder>?layout=mgm`` for the residual multi-codebook view).

examples:
  sealign codec train --manifest data/demo/clean/train.jsonl --output runs/codec
  sealign codec train --espeak 600 --output runs/codec world.ar_spec_k=256
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

from sealign.codecs.world import WorldCodecConfig
from sealign.commands.common import (
    add_config_arguments,
    flag,
    flags_of,
    log,
    log_run_scalars,
    prepare_run_dir,
    resolve_config,
)
from sealign.utils.threads import set_torch_threads

HELP = "train the built-in WORLD codec"


@dataclass
class CodecTrainConfig:
    """Settings of ``sealign codec train``."""

    output: str = ""
    manifest: str | None = None
    espeak: int = 0  # > 0: synthesize this many eSpeak NG sentences instead of a manifest
    threads: int = 2  # torch / BLAS threads (WORLD analysis, k-means)
    world: WorldCodecConfig = field(default_factory=WorldCodecConfig)

    def __post_init__(self) -> None:
        if not self.output:
            raise ValueError("output is required")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if (self.manifest is None) == (self.espeak <= 0):
            raise ValueError("give exactly one of manifest or espeak (> 0)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="codec_command", metavar="STEP", required=True)
    t = sub.add_parser(
        "train",
        help=HELP,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--manifest", help="JSONL manifest of clean speech")
    t.add_argument("--espeak", type=int, metavar="N", help="synthesize N training sentences")
    t.add_argument("--output", help="codec folder to write")
    t.add_argument("--seed", type=int, help="k-means and corpus seed (world.seed)")
    t.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_config_arguments(t, "world.f0_method=harvest")


def run(args: argparse.Namespace) -> int:
    from sealign.codecs.train_cli import espeak_corpus
    from sealign.codecs.world import train_world_codec

    extra = flags_of(args, ("output", "manifest", "espeak"))
    if args.seed is not None:
        extra.append(flag("world.seed", args.seed))
    cfg = resolve_config(CodecTrainConfig, args, extra)
    prepare_run_dir(cfg.output, cfg)
    set_torch_threads(cfg.threads)
    progress = not args.no_progress
    t0 = time.perf_counter()
    data = (
        espeak_corpus(cfg.espeak, seed=cfg.world.seed, progress=progress)[0]
        if cfg.espeak > 0
        else cfg.manifest
    )
    codec = train_world_codec(data, cfg.output, cfg.world, progress=progress)
    log_run_scalars(cfg.output, {
        "codec/frame_rate": float(codec.frame_rate),
        "codec/latent_dim": float(codec.latent_dim),
        "time/train": time.perf_counter() - t0,
    })  # fmt: skip
    log.info(
        "wrote %s: %g Hz, ar vocabulary %s, mgm codebooks %s, latent dim %d (%.1f s)",
        cfg.output, codec.frame_rate, codec.codebook_size,
        codec.with_layout("mgm").codebook_size, codec.latent_dim, time.perf_counter() - t0,
    )  # fmt: skip
    return 0
