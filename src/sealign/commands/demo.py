"""Showcase: synthesize speech offline, degrade it with noise, and score clean vs noisy.

Runs end to end on a laptop CPU with no downloads: Kokoro-82M speech (eSpeak NG when Kokoro's
voices are not installed; the log says which), modulated noise at several SNRs, and the offline
metric suite (DNSMOS, DistillMOS, Whisper-base WER, speaker similarity, SpeechBERTScore, PESQ,
ESTOI, SI-SDR).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from sealign.audio.io import resample, write_audio
from sealign.commands.common import (
    add_config_arguments,
    log,
    log_run_scalars,
    prepare_run_dir,
    resolve_config,
)
from sealign.data.manifest import Entry, write_manifest
from sealign.data.synth import trim_and_normalize
from sealign.data.tts import engine_unavailable_reason, get_engine
from sealign.eval.score import DEFAULT_METRICS, ScoreConfig, build_metrics, score_entries
from sealign.eval.tables import compare_table

HELP = "offline showcase: synthesize, degrade and score speech"

DEMO_SENTENCES = [
    "The little boat drifted slowly toward the quiet harbor.",
    "She found an old map hidden inside the library book.",
    "Please bring three apples and a loaf of bread tomorrow.",
    "The train to the northern city leaves at seven thirty.",
    "A cold wind blew across the open field all night.",
    "My brother painted the kitchen a bright shade of yellow.",
    "We heard the music playing from the house next door.",
    "The children laughed as the puppy chased its tail.",
]
DEMO_VOICES = {
    "kokoro": ["af_heart", "am_michael", "bf_emma", "bm_george"],
    "espeak": ["en-us+m3", "en-gb-x-rp+f4", "en-us+f2", "en+m1"],
}


@dataclass
class DemoConfig:
    output: str = "runs/demo"
    n_utterances: int = 8
    engine: str = "kokoro"
    snrs_db: list[float] = field(default_factory=lambda: [10.0, 0.0])
    seed: int = 0
    score: ScoreConfig = field(default_factory=lambda: ScoreConfig(metrics=list(DEFAULT_METRICS)))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", help="output folder (default runs/demo)")
    add_config_arguments(p)


def _mix(clean: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(clean.size).astype(np.float32)
    # A slowly modulated, low-passed component makes the noise less stationary than pure white.
    env = 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * np.arange(clean.size) / 16000)
    noise = noise * env.astype(np.float32)
    scale = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    mix = clean + scale * noise
    return (mix / max(1.0, float(np.abs(mix).max()) / 0.99)).astype(np.float32)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(DemoConfig, args, [f"output={args.output}"] if args.output else [])
    out = prepare_run_dir(cfg.output, cfg)
    rng = np.random.default_rng(cfg.seed)
    conditions: dict[str, list[Entry]] = {"clean": []} | {
        f"noisy {s:g} dB": [] for s in cfg.snrs_db
    }
    engine_name = cfg.engine
    reason = engine_unavailable_reason(engine_name)
    if reason is not None:
        log.warning("TTS engine %s unavailable (%s); using espeak instead", engine_name, reason)
        engine_name = "espeak"
    engine = get_engine(engine_name)
    voices = DEMO_VOICES.get(engine_name) or engine.voices()[:4]
    log.info("synthesizing %d utterances with %s", cfg.n_utterances, engine_name)
    for i in range(cfg.n_utterances):
        text = DEMO_SENTENCES[i % len(DEMO_SENTENCES)]
        wav, native_sr = engine.synthesize(text, voices[i % len(voices)], seed=cfg.seed + i)
        sr = 16000
        clean = trim_and_normalize(resample(wav, native_sr, sr), sr)
        cpath = out / "audio" / f"utt{i:02d}_clean.wav"
        write_audio(cpath, clean, sr)
        conditions["clean"].append(
            Entry(f"utt{i:02d}", str(cpath), reference=str(cpath), text=text)
        )
        for s in cfg.snrs_db:
            npath = out / "audio" / f"utt{i:02d}_snr{s:g}.wav"
            write_audio(npath, _mix(clean, s, rng), sr)
            conditions[f"noisy {s:g} dB"].append(
                Entry(f"utt{i:02d}", str(npath), reference=str(cpath), text=text)
            )
    metrics = build_metrics(cfg.score)
    systems = {}
    for name, entries in conditions.items():
        tag = name.replace(" ", "_")
        write_manifest(out / f"{tag}.jsonl", entries)
        log.info("scoring %s", name)
        systems[name] = score_entries(
            entries, cfg.score, out / f"scores_{tag}.jsonl", metrics=metrics
        )
    for step, recs in enumerate(systems.values()):
        cols = {c for r in recs for c in r["scores"]}
        log_run_scalars(out, {
            f"demo/{c}/mean": float(np.mean([r["scores"][c] for r in recs if c in r["scores"]]))
            for c in sorted(cols)
        }, step=step)  # fmt: skip
    table = compare_table(systems, {n: m.info for n, m in metrics.items()})
    (out / "table.md").write_text(table + "\n")
    print(table)
    log.info("wrote %s (audio, manifests, per-utterance scores, table.md)", out)
    return 0
