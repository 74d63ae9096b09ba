"""Fast vs exact DNSMOS as a GSPO reward: do they rank a group's outputs alike, and at what cost?

    .venv/bin/python benchmarks/dnsmos_fast_reward.py [--model DIR] [--data data/demo]
        [--batches 4] [--threads 1]

Samples rollout batches as the demo's GSPO does (shipped AR base, 8 inputs of the demo train
split × 4 outputs, T = 1, top-k 50, seeded), scores every output with DNSMOS in exact and in fast
mode (one window per clip, the demo reward's setting) and reports, for OVRL: the mean and max
absolute difference, the within-group spread (std over a group's 4 outputs, averaged over
groups), the correlation of the group-normalized advantages of the two modes, the share of
output pairs within a group that both modes order the same way, and the seconds each mode took.
"""

from __future__ import annotations

import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from rollouts import demo_rollouts, group_agreement, rollout_parser

    p = rollout_parser(__doc__)
    p.add_argument("--threads", type=int, default=1, help="DNSMOS onnxruntime threads")
    args = p.parse_args(argv)

    from sealign.metrics.dnsmos import DNSMOS
    from sealign.rl.gspo import _utterances

    metrics = {m: DNSMOS(num_threads=args.threads, mode=m) for m in ("exact", "fast")}
    for metric in metrics.values():
        metric.load()
    g = 0  # outputs per input
    ovrl: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    seconds = dict.fromkeys(metrics, 0.0)
    lengths = []
    batches = demo_rollouts(args.model, args.data, args.batches)
    for b, (wavs, group, examples, sr) in enumerate(batches):
        utts = _utterances(examples, group, wavs, sr)
        g = int(np.bincount(group).max())
        lengths += [u.audio.size for u in utts]
        order = list(metrics.items())
        for name, metric in order if b % 2 else order[::-1]:  # neither always pays first calls
            t = time.perf_counter()
            res = metric.score_batch(utts)
            seconds[name] += time.perf_counter() - t
            ovrl[name].append(np.array([r.values["ovrl"] for r in res]).reshape(-1, g))

    exact, fast = (np.concatenate(ovrl[m]) for m in ("exact", "fast"))

    n = exact.size
    whole = np.mean([size % 160 == 0 for size in lengths])
    print(f"{n} outputs ({exact.shape[0]} groups of {g}); {whole:.0%} of whole 10-ms frames")
    print(
        f"mean |fast - exact| OVRL: {np.abs(fast - exact).mean():.3f} (max {np.abs(fast - exact).max():.3f})"
    )
    print(f"within-group OVRL std: exact {exact.std(1).mean():.3f}, fast {fast.std(1).mean():.3f}")
    corr, same = group_agreement(exact, fast)
    print(f"correlation of group-normalized advantages: {corr:.3f}")
    print(f"output pairs ordered alike: {same:.3f}")
    for name, s in seconds.items():
        print(f"{name}: {s:.2f} s, {s / n:.3f} s per output ({args.threads} thread(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
