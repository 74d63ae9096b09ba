"""Whisper short padding vs standard 30-s padding: WER and speed on synthetic English speech.

Generates seeded English sentences, speaks them with eSpeak NG (several voices, rates and
pitches), and transcribes them with the offline Whisper-base model

* with the default short padding (each clip + a silence tail, batched by padded length),
* with standard 30-s padding (same batching and decoding, only the padding differs),

plus PocketSphinx as an independent baseline. Reports corpus WER/CER (%) and seconds per clip,
on clean speech and optionally on noisy speech (white noise at ``--snr`` dB).

    python benchmarks/whisper_padding.py --n 60 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SUBJECTS = [
    "the old farmer",
    "my younger sister",
    "a tired student",
    "the new manager",
    "our neighbor",
    "the quiet librarian",
    "a small child",
    "the tall doctor",
    "her best friend",
    "the bus driver",
    "a young pilot",
    "the careful painter",
    "his grandmother",
    "the local baker",
    "a busy nurse",
]
ACTIONS = [
    "carried a heavy wooden box",
    "repaired the broken window",
    "ordered two cups of coffee",
    "borrowed an old map of the city",
    "washed the red bicycle",
    "packed a basket of fresh bread",
    "sold a pair of leather boots",
    "found the silver key",
    "opened the garden gate",
    "cleaned the kitchen table",
    "forgot the yellow umbrella",
    "delivered a letter from the bank",
    "counted forty two paper bags",
    "bought three green apples",
    "painted the wooden fence",
    "lost a small black notebook",
    "fixed the kitchen clock",
    "planted six young trees",
    "read the morning newspaper",
    "moved the piano upstairs",
]
PLACES = [
    "near the river",
    "behind the school",
    "at the train station",
    "in the small village",
    "on the top floor",
    "next to the market",
    "inside the museum",
    "across the busy street",
    "under the bridge",
    "by the harbor",
    "in the empty office",
    "at the edge of the forest",
]
TIMES = [
    "before lunch",
    "early this morning",
    "after the storm",
    "last winter",
    "on Sunday evening",
    "during the long meeting",
    "at seven o'clock",
    "in nineteen ninety eight",
    "yesterday",
    "before the sun went down",
    "late at night",
    "every Tuesday",
]
TEMPLATES = [
    "{s} {a} {p} {t}.",
    "{t}, {s} {a} {p}.",
    "{s} {a} {t}, and then went home.",
    "Did {s} really say that {s2} {a} {p}?",
    "Nobody knew why {s} {a} {p}.",
]
VOICES = [
    "en-us+m3",
    "en+f2",
    "en-gb-x-rp+f4",
    "en-us+f3",
    "en+m1",
    "en-gb-scotland+m2",
    "en-us+m7",
    "en-029+f1",
]


def make_sentences(n: int, seed: int) -> list[str]:
    """``n`` distinct sentences from the templates above, drawn with a seeded generator."""
    rng = np.random.default_rng(seed)

    def pick(options: list[str]) -> str:
        return options[int(rng.integers(len(options)))]

    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        text = pick(TEMPLATES).format(
            s=pick(SUBJECTS), s2=pick(SUBJECTS), a=pick(ACTIONS), p=pick(PLACES), t=pick(TIMES)
        )
        text = text[0].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def synthesize(sentences: list[str], seed: int) -> list[np.ndarray]:
    from sealign.data.espeak import synthesize_espeak

    rng = np.random.default_rng(seed + 1)
    wavs = []
    for k, text in enumerate(sentences):
        voice = VOICES[k % len(VOICES)]
        rate = int(rng.integers(140, 186))
        pitch = int(rng.integers(40, 66))
        wav, _ = synthesize_espeak(text, voice=voice, rate=rate, pitch=pitch)
        wavs.append(wav)
    return wavs


def add_noise(clean: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(clean.size).astype(np.float32)
    gain = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    noisy = clean + gain * noise
    return (noisy / max(1.0, float(np.abs(noisy).max()))).astype(np.float32)


def score(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    from sealign.metrics.text_norm import EditCounts, char_counts, word_counts

    w = sum((word_counts(r, h) for r, h in zip(refs, hyps, strict=True)), EditCounts(0, 0, 0, 0))
    c = sum((char_counts(r, h) for r, h in zip(refs, hyps, strict=True)), EditCounts(0, 0, 0, 0))
    return 100 * w.rate, 100 * c.rate


def run(asr, wavs: list[np.ndarray], batch: int) -> tuple[list[str], float, float]:
    """Transcripts, wall seconds per clip and CPU seconds per clip (all threads)."""
    asr.transcribe(wavs[:1], 16000)  # warm-up (model load, first-call allocations)
    t0, c0 = time.perf_counter(), time.process_time()
    hyps: list[str] = []
    for i in range(0, len(wavs), batch):
        hyps += asr.transcribe(wavs[i : i + batch], 16000)
    n = len(wavs)
    return hyps, (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="number of sentences (>= 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="clips per transcribe() call")
    ap.add_argument("--snr", type=float, nargs="*", default=[10.0], help="noisy conditions (dB)")
    ap.add_argument("--tail", type=float, default=None, help="silence tail (s) of the short path")
    ap.add_argument("--beam", type=int, default=1, help="Whisper beam size (1 = greedy)")
    ap.add_argument("--no-pocketsphinx", action="store_true")
    ap.add_argument("--show", type=int, default=0, help="print this many transcript differences")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from sealign.metrics.asr import PocketsphinxASR, WhisperASR

    sentences = make_sentences(args.n, args.seed)
    clean = synthesize(sentences, args.seed)
    dur = np.array([w.size / 16000 for w in clean])
    print(
        f"{len(clean)} clips, {dur.mean():.2f} s mean (min {dur.min():.2f}, max {dur.max():.2f}), "
        f"{len(VOICES)} voices, {args.threads} threads, batches of {args.batch}"
    )
    conditions = [("clean", clean)] + [
        (f"{snr:g} dB", [add_noise(w, snr, args.seed + k) for k, w in enumerate(clean)])
        for snr in args.snr
    ]
    opts = {"cpu_threads": args.threads, "beam_size": args.beam}
    short_opts = opts if args.tail is None else {**opts, "tail_s": args.tail}
    systems = [
        ("whisper-base, short padding (default)", WhisperASR(**short_opts)),
        ("whisper-base, 30-s padding", WhisperASR(pad_to_30s=True, **opts)),
    ]
    print(f"load average at start: {os.getloadavg()[0]:.1f} (CPU time is less sensitive to it)")
    head = f"{'system':40s} {'condition':>9s} {'WER %':>7s} {'CER %':>7s} {'s/clip':>7s} {'cpu s/clip':>10s}"
    print("\n" + head)
    rows: dict[tuple[str, str], float] = {}
    for cond, wavs in conditions:
        hyps_by = {}
        for name, asr in systems:
            hyps, spc, cpu = run(asr, wavs, args.batch)
            w, c = score(sentences, hyps)
            rows[(name, cond)] = w
            hyps_by[name] = hyps
            print(f"{name:40s} {cond:>9s} {w:7.2f} {c:7.2f} {spc:7.3f} {cpu:10.3f}", flush=True)
        (a, ha), (b, hb) = list(hyps_by.items())
        diff = [k for k in range(len(wavs)) if ha[k] != hb[k]]
        print(
            f"{'':40s} {cond:>9s} transcripts differing between paddings: {len(diff)}/{len(wavs)}"
        )
        for k in diff[: args.show]:
            print(f"    ref:   {sentences[k]}\n    short: {ha[k]}\n    30-s:  {hb[k]}")
    if not args.no_pocketsphinx:
        ps = PocketsphinxASR()
        hyps, spc, cpu = run(ps, clean, args.batch)
        w, c = score(sentences, hyps)
        print(f"{'pocketsphinx en-us':40s} {'clean':>9s} {w:7.2f} {c:7.2f} {spc:7.3f} {cpu:10.3f}")
    print()
    for cond, _ in conditions:
        delta = rows[(systems[0][0], cond)] - rows[(systems[1][0], cond)]
        verdict = "OK" if delta <= 1.0 else "FAIL"
        print(f"{cond}: short − 30-s padding WER = {delta:+.2f} points ({verdict}: limit +1.00)")


if __name__ == "__main__":
    main()
