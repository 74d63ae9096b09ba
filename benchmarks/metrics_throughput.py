"""Seconds per clip and clips/s for every metric on 4-s clips with a fixed thread count.

    .venv/bin/python benchmarks/metrics_throughput.py [--clips 16] [--threads 2] [--metrics a,b]

Clips are eSpeak NG sentences cut or padded to 4 s, mixed with noise at 5 dB; each has its clean
reference, transcript and speaker reference, so every metric runs. Each metric is loaded and
warmed up on one clip first (model loading is reported separately), then timed on all clips in
one batch. DNSMOS is also compared with calling ``speechmos.dnsmos.run`` clip by clip.
NISQA / UTMOS run only when their weights are given (SEALIGN_NISQA_WEIGHTS, SEALIGN_UTMOS_CKPT).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sealign.data.espeak import synthesize_espeak
from sealign.metrics import MetricUnavailable, Utterance, build_metric, metric_names

TEXTS = [
    "The little boat drifted slowly toward the quiet harbor",
    "She found an old map hidden inside the library book",
    "Please bring three apples and a loaf of bread tomorrow",
    "A cold wind blew across the open field all night",
]
VOICES = ["en-us+m3", "en-gb-x-rp+f4", "en-us+f2", "en+m1"]


def make_clips(n: int, seconds: float = 4.0, seed: int = 0) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    target = int(seconds * 16000)
    utts = []
    for i in range(n):
        text = TEXTS[i % len(TEXTS)]
        clean, _ = synthesize_espeak(
            text, VOICES[i % len(VOICES)], rate=int(rng.integers(120, 150))
        )
        clean = np.pad(clean, (0, max(0, target - clean.size)))[:target] * 0.5 / np.abs(clean).max()
        noise = rng.standard_normal(target).astype(np.float32)
        noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10**0.5)
        spk, _ = synthesize_espeak(TEXTS[(i + 1) % len(TEXTS)], VOICES[i % len(VOICES)])
        utts.append(
            Utterance(
                f"c{i}",
                (clean + noise).astype(np.float32),
                16000,
                reference=clean.astype(np.float32),
                text=text,
                speaker_ref=spk,
            )
        )
    return utts


def time_metric(name: str, utts: list[Utterance], threads: int) -> tuple[float, float, str]:
    m = build_metric(name, num_threads=threads)
    t0 = time.perf_counter()
    m.score_batch(utts[:1])  # load + warm-up
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = m.score_batch(utts)
    dt = time.perf_counter() - t0
    errs = [r.error for r in res if r.error]
    return dt / len(utts), load, (f"{len(errs)} errors: {errs[0]}" if errs else "")


def speechmos_baseline(utts: list[Utterance], threads: int) -> float:
    import onnxruntime as ort
    from speechmos import dnsmos

    # speechmos builds its sessions with default options; cap threads the same way for fairness
    orig = ort.InferenceSession

    def capped(path, sess_options=None, **kw):
        so = sess_options or ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return orig(path, sess_options=so, **kw)

    ort.InferenceSession = capped
    try:
        dnsmos.run(utts[0].audio, sr=16000)
        t0 = time.perf_counter()
        for u in utts:
            dnsmos.run(u.audio, sr=16000)
        return (time.perf_counter() - t0) / len(utts)
    finally:
        ort.InferenceSession = orig


def main() -> None:
    from rollouts import at_least

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clips", type=at_least(1), default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--metrics", default=",".join(metric_names()))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    utts = make_clips(args.clips)
    print(f"{args.clips} clips of 4.0 s, {args.threads} threads\n")
    print("| metric | s/clip | clips/s | load+warm-up s | note |")
    print("|---|---|---|---|---|")
    for name in args.metrics.split(","):
        try:
            per, load, note = time_metric(name, utts, args.threads)
            print(f"| {name} | {per:.4f} | {1 / per:.1f} | {load:.1f} | {note} |", flush=True)
        except MetricUnavailable as err:
            print(
                f"| {name} | — | — | — | unavailable: {str(err).splitlines()[0][:90]} |", flush=True
            )
    if "dnsmos" in args.metrics.split(","):
        base = speechmos_baseline(utts, args.threads)
        print(
            f"| speechmos.dnsmos.run (clip by clip) | {base:.4f} | {1 / base:.1f} | — | baseline |"
        )


if __name__ == "__main__":
    main()
