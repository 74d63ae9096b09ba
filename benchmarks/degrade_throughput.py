"""Throughput of the degradation pipeline: utterances/s and real-time factor (RTF).

Speaks ``--n`` seeded sentences with eSpeak NG (16 kHz), then times

* each op alone (``degrade`` with only that op's probability at 1, in this process; every run
  also includes the level normalisation), with reverb both simulated per utterance
  (pyroomacoustics) and drawn from a pre-simulated pool,
* the default mixture (``DegradationConfig()``) in this process, and
* ``degrade_manifest`` with the default mixture on 1 and 2 worker processes (wav reading and
  writing included, pool start-up included).

RTF = processing seconds / audio seconds (lower is faster).

    python benchmarks/degrade_throughput.py --n 12 --workers 1 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from sealign.audio.io import write_audio
from sealign.data.degrade import (
    OP_ORDER,
    DegradationConfig,
    RirBank,
    degrade,
    degrade_manifest,
)
from sealign.data.espeak import synthesize_espeak
from sealign.data.manifest import Entry

SENTENCES = [
    "The old farmer carried a heavy wooden box near the river before lunch.",
    "My younger sister painted the broken window behind the school early this morning.",
    "Nobody knew why the quiet librarian opened the garden gate at seven o'clock.",
    "A busy nurse delivered two cups of coffee to the empty office yesterday.",
    "The bus driver found the silver key under the bridge after the storm.",
    "Did the tall doctor really sell forty two paper bags at the train station?",
]
VOICES = ["en-us+m3", "en+f2", "en-gb-x-rp+f4", "en-us+m7"]


def _only(op: str) -> DegradationConfig:
    probs = {f"p_{o}": 1.0 if o == op else 0.0 for o in OP_ORDER}
    return DegradationConfig(**probs)


def _row(name: str, n: int, secs: float, audio_s: float) -> str:
    return f"{name:<28} {n / secs:8.2f} utt/s   RTF {secs / audio_s:7.4f}   ({secs:6.2f} s)"


def main() -> None:
    from rollouts import at_least

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=at_least(1), default=12, help="utterances (default 12)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rir-pool", type=int, default=8, help="pool size for the pooled-reverb row")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run(args.n, args.workers, args.seed, args.rir_pool)


def run(n: int, workers: list[int], seed: int = 0, rir_pool: int = 8) -> None:
    """Print per-op and whole-manifest degradation throughput on ``n`` eSpeak utterances."""
    args = argparse.Namespace(n=n, workers=workers, seed=seed, rir_pool=rir_pool)
    rng = np.random.default_rng(args.seed)
    clean = []
    for i in range(args.n):
        wav, sr = synthesize_espeak(
            SENTENCES[i % len(SENTENCES)],
            voice=VOICES[i % len(VOICES)],
            rate=int(rng.integers(150, 180)),
        )
        clean.append(wav)
    audio_s = sum(w.size for w in clean) / 16000
    print(f"{args.n} utterances, {audio_s:.1f} s of 16 kHz speech\n")

    print("per op (1 process):")
    t0 = time.perf_counter()
    pool = RirBank.simulate(args.rir_pool, args.seed)
    print(f"  (pre-simulating {args.rir_pool} RIRs took {time.perf_counter() - t0:.2f} s)")
    cases: list[tuple[str, DegradationConfig, RirBank | None]] = [
        (op + (" (simulated)" if op == "reverb" else ""), _only(op), None) for op in OP_ORDER
    ]
    cases.insert(1, ("reverb (pool)", _only("reverb"), pool))
    cases.append(("default mixture", DegradationConfig(), None))
    for name, cfg, rir_bank in cases:
        t0 = time.perf_counter()
        for i, wav in enumerate(clean):
            degrade(wav, np.random.default_rng([args.seed, i]), cfg, rir_bank=rir_bank)
        print("  " + _row(name, args.n, time.perf_counter() - t0, audio_s))

    print("\ndegrade_manifest, default mixture (wav I/O and pool start-up included):")
    with tempfile.TemporaryDirectory() as tmp:
        entries = []
        for i, wav in enumerate(clean):
            p = Path(tmp) / "clean" / f"u{i:03d}.wav"
            write_audio(p, wav, 16000)
            entries.append(Entry(f"u{i:03d}", str(p), extra={"speaker": VOICES[i % len(VOICES)]}))
        for w in args.workers:
            t0 = time.perf_counter()
            rep = degrade_manifest(
                entries, Path(tmp) / f"out{w}", seed=args.seed, workers=w, progress=False
            )
            secs = time.perf_counter() - t0
            print("  " + _row(f"{w} worker(s)", rep.computed, secs, audio_s))


if __name__ == "__main__":
    main()
