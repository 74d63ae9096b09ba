"""What Whisper's 30-s re-decodes cost in the WER reward of a GSPO step.

    .venv/bin/python benchmarks/whisper_fallback_cost.py [--model DIR] [--data data/demo]
        [--batches 3] [--threads 1]

Samples rollout batches as the demo's GSPO does (shipped AR base, 8 inputs of the demo train
split × 4 outputs, T = 1, top-k 50, seeded) and transcribes each batch with the WER metric's
Whisper (offline Whisper-base, int8, greedy, short padding). Reports per batch the seconds of
the whole transcription and of the clips whose short-window transcript looped and were decoded
again with the standard 30-s window (``WhisperASR``'s fallback). ``--compare 1000,1500`` then
decodes those clips again with each shorter window (in feature frames of 10 ms) and counts how
many transcripts equal the 30-s ones and how many still loop.
"""

from __future__ import annotations

import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from rollouts import demo_rollouts, rollout_parser

    p = rollout_parser(__doc__, 3)
    p.add_argument("--threads", type=int, default=1, help="CTranslate2 threads")
    p.add_argument("--compare", default="", help="shorter fallback windows to try (frames)")
    args = p.parse_args(argv)

    from sealign.metrics.asr import _MAX_FRAMES, WhisperASR

    asr = WhisperASR(cpu_threads=args.threads)
    asr.load()
    decode = asr._decode
    calls: list[tuple[int, int, float]] = []
    redecoded: list[tuple[np.ndarray, str]] = []  # (clip, its 30-s transcript)

    def timed(wavs: list[np.ndarray], frames: int) -> list[str]:
        t = time.perf_counter()
        out = decode(wavs, frames)
        calls.append((len(wavs), frames, time.perf_counter() - t))
        if frames == _MAX_FRAMES:
            redecoded.extend(zip(wavs, out, strict=True))
        return out

    asr._decode = timed  # type: ignore[method-assign]
    total = redone = clips = 0.0
    batches = demo_rollouts(args.model, args.data, args.batches)
    for b, (wavs, _, _, sr) in enumerate(batches):
        calls.clear()
        t = time.perf_counter()
        asr.transcribe(wavs, sr)
        dt = time.perf_counter() - t
        long = [c for c in calls if c[1] == _MAX_FRAMES]
        n, s = sum(c[0] for c in long), sum(c[2] for c in long)
        total, redone, clips = total + dt, redone + s, clips + n
        print(f"batch {b}: {len(wavs)} outputs, {dt:.2f} s; 30-s re-decodes: {n} clips, {s:.2f} s")
    print(
        f"all: {total:.2f} s, of which 30-s re-decodes {redone:.2f} s ({redone / total:.0%}) "
        f"for {clips:.0f} of {args.batches * len(wavs)} outputs"
    )
    for frames in [int(f) for f in args.compare.split(",") if f]:
        t = time.perf_counter()
        alt = [decode([w], frames)[0] for w, _ in redecoded]
        dt = time.perf_counter() - t
        same = sum(a == ref for a, (_, ref) in zip(alt, redecoded, strict=True))
        loops = sum(asr._loops(a) for a in alt)
        print(
            f"fallback window {frames} frames: {same} of {len(alt)} transcripts equal the 30-s "
            f"ones, {loops} still loop, {dt:.2f} s (one clip at a time)"
        )
    if args.compare and redecoded:
        t = time.perf_counter()
        for w, _ in redecoded:
            decode([w], _MAX_FRAMES)
        print(f"30-s window, one clip at a time: {time.perf_counter() - t:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
