"""Train the built-in WORLD codec's codebooks on clean speech, or import a HiFi-GAN vocoder.

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

HELP = "train the built-in WORLD codec, or import a HiFi-GAN vocoder"

IMPORT_DOC = """Import a HiFi-GAN generator trained with the original implementation (jik876/hifi-gan:
a generator checkpoint such as generator_v1 and its training config.json) as a local folder
with HiFi-GAN's own mel analysis (mel.json), used as mel_vocoder:DIR by the flow-matching
family. Weight norms are folded into the weights. Residual blocks of type 1 (V1, V2) become a
transformers SpeechT5HifiGan, type 2 (V3) sealign's own HiFi-GAN generator. With --manifest,
the latents' mean and standard deviation are measured on its clean speech (each entry's
reference, else its audio).

examples:
  sealign codec import-hifigan --checkpoint generator_v1 --config config_v1.json \\
      --output runs/hifigan_v1 --manifest data/demo/clean/train.jsonl
  sealign train --family fm --codec mel_vocoder:runs/hifigan_v1 --output runs/fm_mel ...
"""


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
    h = sub.add_parser(
        "import-hifigan",
        help="import an original HiFi-GAN generator as a mel_vocoder folder",
        description=IMPORT_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    h.add_argument("--checkpoint", required=True, help="generator checkpoint (e.g. generator_v1)")
    h.add_argument("--config", required=True, help="its training config.json")
    h.add_argument("--output", required=True, help="folder to write (mel_vocoder:DIR)")
    h.add_argument("--manifest", help="clean speech to measure the latents' statistics on")
    h.add_argument("--max-files", type=int, default=100, help="at most this many (default 100)")


def run(args: argparse.Namespace) -> int:
    if args.codec_command == "import-hifigan":
        return run_import(args)
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


def run_import(args: argparse.Namespace) -> int:
    import shutil
    import tempfile
    from pathlib import Path

    from sealign.codecs.hifigan import import_hifigan

    if args.max_files < 1:
        raise ValueError(f"--max-files must be >= 1, got {args.max_files}")
    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder: give a new folder")
    codec = import_hifigan(args.checkpoint, args.config, args.manifest, args.max_files)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        codec.save(tmp)  # written whole, then renamed: a failed import leaves no half folder
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    s = codec.settings
    log.info(
        "wrote %s: %d mels at %d Hz, hop %d, n_fft %d, %g–%g Hz, latents standardized by mean %.2f and std %.2f (ln mel); "
        "use it as mel_vocoder:%s",
        out, codec.latent_dim, codec.sample_rate, codec.hop, codec.n_fft, s.fmin, codec.fmax,
        s.latent_mean, s.latent_std, out,
    )  # fmt: skip
    return 0
