"""Data pipeline throughput: speed and quality of each offline TTS engine, then degradation.

For every available engine (kokoro, piper, espeak), speaks ``--n`` generated sentences (voices
taken in turn from the engine's list, prosody seeded per utterance) and reports

* model load time, real-time factor (synthesis seconds per second of audio) and utterances/s
  on 1 worker (in this process) and on 2 worker processes (each loads the engine once, warm-up
  excluded; RTF there is wall-clock time over total audio);
* DNSMOS SIG/BAK/OVRL/P.808 of the clean speech after the corpus post-processing (16 kHz,
  silence trimmed, -26 dBFS active RMS), via ``sealign.metrics.build_metric("dnsmos")``.

One onnxruntime thread per worker. The machine may be shared, so wall-clock numbers are noisy.

    python benchmarks/data_throughput.py --n 10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

_ENGINE: Any = None


def _engine_options(name: str, voices_dir: str | None) -> dict[str, Any]:
    opts: dict[str, Any] = {} if name == "espeak" else {"threads": 1}
    if name == "kokoro" and voices_dir:
        opts["voices_dir"] = voices_dir
    return opts


def _worker_init(name: str, options: dict[str, Any]) -> None:
    global _ENGINE
    from sealign.data.tts import get_engine

    _ENGINE = get_engine(name, **options)
    _ENGINE.load()
    _ENGINE.synthesize("Warm up.", _ENGINE.voices()[0], seed=0)


def _worker_ready(pause: float) -> int:
    time.sleep(pause)  # holds this worker so the next warm-up task lands on the other one
    return os.getpid()


def _worker_synth(job: tuple[str, str, int]) -> tuple[np.ndarray, int]:
    text, voice, seed = job
    return _ENGINE.synthesize(text, voice, seed=seed)


def bench_engine(
    name: str, n: int, seed: int, workers: list[int], voices_dir: str | None
) -> tuple[dict[str, Any], list[tuple[np.ndarray, int]]]:
    """Timings for one engine; also returns the 1-worker audio for quality scoring."""
    from sealign.data.text import generate_sentences
    from sealign.data.tts import get_engine

    options = _engine_options(name, voices_dir)
    eng = get_engine(name, **options)
    voices = eng.voices()
    texts = generate_sentences(n, seed=seed)
    jobs = [(t, voices[i % len(voices)], seed * 1000 + i) for i, t in enumerate(texts)]
    row: dict[str, Any] = {"engine": name, "voices": len(voices), "n": n}
    audio: list[tuple[np.ndarray, int]] = []
    for w in workers:
        if w == 1:
            t0 = time.perf_counter()
            eng.load()
            eng.synthesize("Warm up.", voices[0], seed=0)
            row["load_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            audio = [eng.synthesize(*job[:2], seed=job[2]) for job in jobs]
            wall = time.perf_counter() - t0
            outs = audio
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                w, mp_context=ctx, initializer=_worker_init, initargs=(name, options)
            ) as pool:
                pids = {f.result() for f in [pool.submit(_worker_ready, 1.0) for _ in range(w)]}
                row[f"workers_up_{w}"] = len(pids)
                t0 = time.perf_counter()
                outs = list(pool.map(_worker_synth, jobs))
                wall = time.perf_counter() - t0
        secs = sum(len(x) / sr for x, sr in outs)
        row[f"rtf_{w}"] = wall / secs
        row[f"utt_s_{w}"] = n / wall
        row["audio_s"] = secs
    return row, audio


def dnsmos_scores(audio: list[tuple[np.ndarray, int]]) -> dict[str, float]:
    """Mean DNSMOS of post-processed clips (as written by ``synthesize_corpus``)."""
    from sealign.audio.io import resample
    from sealign.data.synth import trim_and_normalize
    from sealign.metrics import build_metric
    from sealign.metrics.base import Utterance

    metric = build_metric("dnsmos", num_threads=1)
    utts = []
    for i, (x, sr) in enumerate(audio):
        y = trim_and_normalize(resample(x, sr, 16000), 16000, -26.0)
        utts.append(Utterance(f"u{i}", y, 16000))
    res = metric.score_batch(utts)
    keys = ("sig", "bak", "ovrl", "p808")
    return {k: float(np.mean([r.values[k] for r in res if r.ok])) for k in keys}


def format_table(rows: list[dict[str, Any]], workers: list[int]) -> str:
    cols = ["engine", "voices", "load s", "audio s"]
    for w in workers:
        cols += [f"RTF {w}w", f"utt/s {w}w"]
    cols += ["SIG", "BAK", "OVRL", "P808"]
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in rows:
        cells = [r["engine"], str(r["voices"]), f"{r['load_s']:.1f}", f"{r['audio_s']:.1f}"]
        for w in workers:
            cells += [f"{r[f'rtf_{w}']:.3f}", f"{r[f'utt_s_{w}']:.2f}"]
        for k in ("sig", "bak", "ovrl", "p808"):
            cells.append(f"{r[k]:.2f}" if k in r else "-")
        lines.append(" | ".join(cells))
    return "\n".join("| " + line + " |" for line in lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10, help="utterances per engine")
    ap.add_argument("--engines", nargs="*", help="default: every available engine")
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--voices-dir", help="Kokoro voice tables (default: the sealign cache)")
    ap.add_argument("--no-dnsmos", action="store_true")
    ap.add_argument("--no-degrade", action="store_true", help="skip the degradation part")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    if 1 not in args.workers:  # the load time and the scored audio come from that run
        ap.error("--workers must include 1")

    from sealign.data.tts import engine_names, engine_unavailable_reason

    names = args.engines or engine_names()
    rows = []
    for name in names:
        opts = {"voices_dir": args.voices_dir} if name == "kokoro" and args.voices_dir else {}
        reason = engine_unavailable_reason(name, **opts)
        if reason:
            print(f"skip {name}: {reason}")
            continue
        print(f"{name}: {args.n} utterances on {args.workers} workers ...", flush=True)
        row, audio = bench_engine(name, args.n, args.seed, args.workers, args.voices_dir)
        if not args.no_dnsmos and audio:
            row.update(dnsmos_scores(audio))
        rows.append(row)
    print()
    print(format_table(rows, args.workers))
    print("\nRTF = synthesis wall time / audio duration (lower is faster); DNSMOS on clean output.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    if not args.no_degrade:
        import sys

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import degrade_throughput

        print("\nDegradation:")
        degrade_throughput.run(args.n, args.workers, args.seed)


if __name__ == "__main__":
    main()
