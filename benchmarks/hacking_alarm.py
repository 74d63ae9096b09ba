"""How often does the reward-hacking alarm fire when nothing changed, and when something did?

    .venv/bin/python benchmarks/hacking_alarm.py --null runs/eval_abl \
        [--effect runs/eval_pf_armgm:ar:ar_pf0.3] [--n 4,8,16,32] [--trials 200]

The alarm (``sealign.rl.evaluation.hacking_alarms``) compares the held-out scores of step N with
those of step 0, utterance by utterance. Here both sides come from a ``sealign eval`` folder:

- null: two sampled outputs of the same model (``<model>`` and ``<model>_sample<k>`` from
  ``eval --samples K``), so no metric truly changed and every alarm is a false one;
- effect (optional, ``FOLDER:BASELINE:SYSTEM``): two systems whose scores truly differ, e.g. a
  codec post-filter that costs DNSMOS SIG; the rate at which each worse column is caught.

For each held-out size n, random subsets of n utterances are drawn (seeded) and the alarm is
evaluated with the current rule (one-sided paired t-tests, Holm across columns, 5% family-wise)
and with the earlier one (each column's percentile-bootstrap 95% CI, no correction).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from sealign.eval.score import column_name
from sealign.eval.stats import paired_bootstrap_diff
from sealign.metrics.registry import metric_info, metric_names
from sealign.rl.evaluation import hacking_alarms


def directions() -> dict[str, bool]:
    out = {}
    for name in metric_names():
        info = metric_info(name)
        for o, h in zip(info.outputs, info.higher_is_better, strict=True):
            out[column_name(name, o)] = h
    return out


def bootstrap_rule(base, cur, hib, rewarded) -> list[str]:
    """The rule before 2026-12-04: any column whose bootstrap 95% CI lies on the bad side."""
    b = {r["id"]: r["scores"] for r in base}
    fired = []
    for col, h in hib.items():
        if col in rewarded:
            continue
        pairs = [(b[r["id"]][col], r["scores"][col]) for r in cur if col in r["scores"]]
        if len(pairs) < 2:
            continue
        ci = paired_bootstrap_diff(*map(np.array, zip(*pairs, strict=True)), n_boot=1000)
        if (ci.high < 0) if h else (ci.low > 0):
            fired.append(col)
    return fired


def load(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def main() -> None:
    from rollouts import at_least

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--null", required=True, help="eval folder with --samples >= 2")
    ap.add_argument("--effect", help="FOLDER:BASELINE:SYSTEM, two systems that truly differ")
    ap.add_argument("--n", default="4,8,16,32", help="held-out sizes")
    ap.add_argument("--trials", type=at_least(1), default=200, help="subsets per size")
    ap.add_argument("--rewarded", default="dnsmos_ovrl,wer,distillmos")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rewarded = set(args.rewarded.split(","))
    scores = Path(args.null) / "scores"
    draws: dict[str, list[dict[str, dict]]] = {}
    for f in sorted(scores.glob("*_sample*.jsonl")):
        model = f.stem.rsplit("_sample", 1)[0]
        draws.setdefault(model, [load(scores / f"{model}.jsonl")]).append(load(f))
    if not draws:
        raise SystemExit(f"{scores}: no <model>_sample<k>.jsonl; run eval with --samples >= 2")
    pairs = [(a, b) for runs in draws.values() for a, b in itertools.combinations(runs, 2)]
    hib = {c: h for c, h in directions().items() if c in next(iter(pairs[0][0].values()))["scores"]}
    watched = sorted(set(hib) - rewarded)
    print(f"null: {len(pairs)} pairs of draws ({', '.join(draws)}); watched columns: {watched}")
    effect = None
    if args.effect:
        folder, a, b = args.effect.split(":")
        effect = (
            load(Path(folder) / "scores" / f"{a}.jsonl"),
            load(Path(folder) / "scores" / f"{b}.jsonl"),
        )
        ids = sorted(set(effect[0]) & set(effect[1]))
        true = {
            c: np.mean([effect[1][i]["scores"][c] - effect[0][i]["scores"][c] for i in ids])
            for c in hib
            if c not in rewarded and c in effect[0][ids[0]]["scores"]
        }
        worse = {c: d for c, d in true.items() if (-d if hib[c] else d) > 0.01}  # a real drop
        print(
            f"effect {b} - {a} on all {len(ids)} utterances: "
            + ", ".join(f"{c} {d:+.3f}" for c, d in true.items())
        )
    rng = np.random.default_rng(args.seed)
    print(
        "| n | false alarms, current rule | false alarms, earlier rule |"
        + (" caught (current / earlier) |" if effect else "")
    )
    print("|---|---|---|" + ("---|" if effect else ""))
    for n in map(int, args.n.split(",")):
        fa_new = fa_old = 0
        for t in range(args.trials):
            base, cur = pairs[t % len(pairs)]
            ids = rng.choice(sorted(base), n, replace=False)
            sub_b, sub_c = [base[i] for i in ids], [cur[i] for i in ids]
            fa_new += bool(hacking_alarms(sub_b, sub_c, hib, rewarded))
            fa_old += bool(bootstrap_rule(sub_b, sub_c, hib, rewarded))
        row = f"| {n} | {fa_new / args.trials:.3f} | {fa_old / args.trials:.3f} |"
        if effect:
            caught_new = dict.fromkeys(worse, 0)
            caught_old = dict.fromkeys(worse, 0)
            all_ids = sorted(set(effect[0]) & set(effect[1]))
            for _ in range(args.trials):
                ids = rng.choice(all_ids, n, replace=False)
                sub_b, sub_c = [effect[0][i] for i in ids], [effect[1][i] for i in ids]
                for a in hacking_alarms(sub_b, sub_c, hib, rewarded):
                    if a.column in caught_new:
                        caught_new[a.column] += 1
                for c in bootstrap_rule(sub_b, sub_c, hib, rewarded):
                    if c in caught_old:
                        caught_old[c] += 1
            row += (
                " "
                + ", ".join(
                    f"{c} {caught_new[c] / args.trials:.2f} / {caught_old[c] / args.trials:.2f}"
                    for c in worse
                )
                + " |"
            )
        print(row)


if __name__ == "__main__":
    main()
