"""Build and import speech-enhancement data.

  sealign data synth   --output DIR --n 200            clean multi-speaker speech (Kokoro / Piper / eSpeak NG)
  sealign data degrade --manifest clean.jsonl --output DIR   paired noisy/clean (noise, reverb, band limit, …)
  sealign data import  KIND --output m.jsonl ...        DNS 2020, VoiceBank+DEMAND, parallel folders, recordings
  sealign data demo    [--preset demo|train]           the default corpus in one command

Every step is deterministic by seed, parallel (--workers) and resumable (re-run the same command).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from sealign.commands import data_synth
from sealign.commands.common import (
    add_config_arguments,
    flags_of,
    log,
    log_run_scalars,
    prepare_run_dir,
    resolve_config,
)
from sealign.data.degrade import DegradationConfig, degrade_manifest
from sealign.data.manifest import ManifestError
from sealign.utils.jsonio import write_bytes
from sealign.utils.shard import Shard
from sealign.utils.threads import set_torch_threads

MANIFEST = "manifest.jsonl"

HELP = "synthesize, degrade and import speech data"


@dataclass
class DegradeConfig:
    """Settings of ``sealign data degrade``."""

    manifest: str = ""
    output: str = ""
    seed: int = 0
    workers: int = 2
    threads: int = 2  # torch / BLAS threads of this process (workers are processes)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    def __post_init__(self) -> None:
        if not self.manifest or not self.output:
            raise ValueError("manifest and output are required")
        if self.workers < 1 or self.threads < 1:
            raise ValueError("workers and threads must be >= 1")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="STEP", required=True)

    d = sub.add_parser(
        "degrade",
        help="make a paired noisy manifest from a clean one",
        description="Degrade every utterance of a clean manifest. Degradation settings are "
        "overrides prefixed degradation. (e.g. degradation.p_reverb=0.5; the resolved config "
        "the command logs lists them all); other keys: seed, workers, threads.\n\n"
        "Degradation settings: " + (DegradationConfig.__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument(
        "--manifest",
        help="clean JSONL manifest (audio = clean speech; an entry with a reference is degraded "
        "from its reference)",
    )
    d.add_argument("--output", help="output folder (wavs + manifest.jsonl)")
    d.add_argument("--seed", type=int)
    d.add_argument("--workers", type=int)
    d.add_argument(
        "--shard",
        help="K/N: degrade only utterances K, K+N, ... (one of N jobs; then run once without "
        "--shard: it reuses them all and writes the whole manifest)",
    )
    add_config_arguments(d, "degradation.p_reverb=0.5")
    d.set_defaults(data_func=_run_degrade)

    i = sub.add_parser(
        "import",
        help="import a standard test set or folders from local paths",
        description="Write a manifest (JSONL) of a data set already on disk: DNS 2020 or "
        "VoiceBank-DEMAND test sets, parallel noisy / clean folders, or recordings without "
        "references. Files are checked (rate, channels, lengths of pairs); problems are listed.",
    )
    i.add_argument("kind", choices=["dns2020", "voicebank", "parallel", "recordings"])
    i.add_argument("--root", help="dns2020 / voicebank: the data set's folder")
    i.add_argument("--noisy", help="parallel: folder of noisy files; recordings: the folder")
    i.add_argument("--clean", help="parallel: folder of clean files")
    i.add_argument("--subsets", default="no_reverb,with_reverb", help="dns2020 subsets")
    i.add_argument("--split", choices=["test", "train"], default="test", help="voicebank split")
    i.add_argument(
        "--length-tolerance",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="dns2020 / voicebank / parallel: accept a pair whose lengths differ by up to this "
        "(default 0: equal lengths; training crops pairs to the shorter)",
    )
    i.add_argument("--sample-rate", type=int, help="require this sample rate (report others)")
    i.add_argument(
        "--strict", action="store_true", help="fail on the first problem instead of reporting"
    )
    i.add_argument(
        "--check-audio",
        action="store_true",
        help="also decode every file and report NaN / inf or all-zero audio (reads the whole "
        "corpus; without it only headers are checked and such files are skipped later, when "
        "read)",
    )
    i.add_argument(
        "--multichannel",
        action="store_true",
        help="accept files with several channels (every reader averages them) instead of "
        "reporting them",
    )
    i.add_argument(
        "--output", required=True, help="manifest to write (problems go to <output>.problems.txt)"
    )
    i.set_defaults(data_func=_run_import)
    data_synth.add_parsers(sub)


def _run_degrade(args: argparse.Namespace) -> int:
    cfg = resolve_config(
        DegradeConfig, args, flags_of(args, ["manifest", "output", "seed", "workers"])
    )
    shard = Shard.resolve(args.shard or "", "--shard").connect()
    saved = Path(cfg.output) / "config.yaml"
    before = saved.read_bytes() if saved.is_file() else None
    out = prepare_run_dir(cfg.output, cfg, shard)
    set_torch_threads(cfg.threads)
    shard.begin(out / MANIFEST)

    def degrade(part: Shard):
        return degrade_manifest(
            cfg.manifest, out, cfg.degradation, seed=cfg.seed, workers=cfg.workers, shard=part
        )

    try:
        rep = degrade(shard)
    except ManifestError:  # refused (other settings, inputs inside the folder): as it was
        if before is not None:
            write_bytes(saved, before)
        else:
            saved.unlink(missing_ok=True)
        raise
    if shard.sharded:
        if not shard.settle(out / MANIFEST, bool(args.shard), "the same command without --shard"):
            return 0 if rep.entries else 1
        rep = degrade(Shard())  # rank 0, every rank done: list them all (each one reused)
    log_run_scalars(out, {
        "data/utterances": len(rep.entries), "data/computed": rep.computed,
        "data/reused": rep.reused, "data/failed": len(rep.failed),
    })  # fmt: skip
    log.info(
        "degraded %d utterances (%d computed, %d reused, %d failed) -> %s",
        len(rep.entries),
        rep.computed,
        rep.reused,
        len(rep.failed),
        rep.manifest,
    )
    for f in rep.failed:
        log.warning("failed: %s", f)
    return 0 if rep.entries else 1


def _run_import(args: argparse.Namespace) -> int:
    from sealign.data.importers import run_import

    common = {
        "sample_rate": args.sample_rate,
        "strict": args.strict,
        "multichannel": args.multichannel,
        "check_audio": args.check_audio,
    }
    if not 0 <= args.length_tolerance <= 10:
        raise ValueError(f"--length-tolerance must be 0-10 s, got {args.length_tolerance}")
    tol = {"length_tolerance": args.length_tolerance}
    if args.kind == "dns2020":
        kw = {"root": args.root, "subsets": args.subsets.split(","), **tol, **common}
    elif args.kind == "voicebank":
        kw = {"root": args.root, "split": args.split, **tol, **common}
    elif args.kind == "parallel":
        kw = {"noisy_dir": args.noisy, "clean_dir": args.clean, **tol, **common}
    else:
        kw = {"folder": args.noisy or args.root, **common}
    flags = {"noisy_dir": "--noisy", "clean_dir": "--clean", "folder": "--noisy or --root"}
    missing = [flags.get(k, "--" + k) for k, v in kw.items()
               if k not in common and k != "length_tolerance" and not v]  # fmt: skip
    if missing:
        raise ValueError(f"import {args.kind}: missing {', '.join(missing)}")
    out, problems = run_import(args.kind, args.output, **kw)
    log.info("wrote %s (%d problems reported)", out, len(problems))
    return 0


def run(args: argparse.Namespace) -> int:
    return args.data_func(args)
