"""Cheaper Whisper settings as a GSPO reward: do they rank a group's outputs like the WER the
tables report, and at what cost?

    .venv/bin/python benchmarks/wer_fast_reward.py [--model DIR] [--data data/demo]
        [--batches 4] [--threads 1]

Samples rollout batches as the demo's GSPO does (shipped AR base, 8 inputs of the demo train
split × 4 outputs, T = 1, top-k 50, seeded) and scores every output with the WER metric at its
standard settings (short padding, 30-s re-decode of looping transcripts) and at cheaper ones:
without the 30-s fallback, and with a 4-s silence tail instead of 2 s (fewer loops, so fewer
re-decodes), with and without the fallback. For the reward term 1 − min(WER, 1) it reports the
outputs whose term changes, the mean and max change, the correlation of the group-normalized
advantages with the standard's, the share of a group's output pairs ordered alike, and seconds.
"""

from __future__ import annotations

import time

import numpy as np

VARIANTS = {
    "standard": {},
    "no_fallback": {"fallback_compression_ratio": None, "fallback_repeat_words": None},
    "tail_4s": {"tail_s": 4.0},
    "tail_4s_no_fallback": {
        "tail_s": 4.0,
        "fallback_compression_ratio": None,
        "fallback_repeat_words": None,
    },
}


def main(argv: list[str] | None = None) -> int:
    from rollouts import demo_rollouts, group_agreement, rollout_parser

    p = rollout_parser(__doc__)
    p.add_argument("--threads", type=int, default=1, help="CTranslate2 threads")
    args = p.parse_args(argv)

    from sealign.metrics.wer import WER
    from sealign.rl.gspo import _utterances

    metrics = {k: WER(num_threads=args.threads, **v) for k, v in VARIANTS.items()}
    for metric in metrics.values():
        metric.load()
    terms: dict[str, list[np.ndarray]] = {k: [] for k in metrics}
    seconds = dict.fromkeys(metrics, 0.0)
    g = 0
    batches = demo_rollouts(args.model, args.data, args.batches)
    for b, (wavs, group, examples, sr) in enumerate(batches):
        utts = _utterances(examples, group, wavs, sr)
        g = int(np.bincount(group).max())
        order = list(metrics.items())
        for name, metric in order if b % 2 else order[::-1]:  # neither always pays first calls
            t = time.perf_counter()
            res = metric.score_batch(utts)
            seconds[name] += time.perf_counter() - t
            wer = np.array([r.values["wer"] for r in res])
            terms[name].append((1 - np.minimum(wer, 1)).reshape(-1, g))
    standard = np.concatenate(terms["standard"])
    print(
        f"{standard.size} outputs ({standard.shape[0]} groups of {g}); reward term 1 - min(WER, 1)"
    )
    print(
        "| settings | s per output | outputs changed | mean / max change | advantage corr | pairs alike |"
    )
    print("|---|---|---|---|---|---|")
    for name in metrics:
        term = np.concatenate(terms[name])
        diff = np.abs(term - standard)
        corr, same = group_agreement(standard, term)
        print(
            f"| {name} | {seconds[name] / term.size:.3f} | {int((diff > 1e-9).sum())} | "
            f"{diff.mean():.3f} / {diff.max():.3f} | {corr:.3f} | {same:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
