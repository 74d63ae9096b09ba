"""How reliably does each estimate point the learned temperature the right way?

    .venv/bin/python benchmarks/temperature_probe.py [--model DIR] [--data data/demo]
        [--batches 16] [--delta 0.25] [--seed 0] [--threads 2]

Samples ``--batches`` rollout batches exactly as ``temperature_optimizer: probe`` does at the
demo's settings (4 inputs, each in two groups of 4: at the demo's temperature times e^+δ and
e^−δ; 32 samples), scores them with the demo's reward, and prints two estimates of which way the
temperature should move, per batch and over the batches (mean, standard error, t, and the mean
over one batch's spread: how sure a single step is):

* the probe: d reward / d log T, the groups' mean composite rewards' difference over 2δ
  (averaged over inputs), what ``probe`` steps by;
* the GSPO loss's own gradient on the policy's ``logit_scale`` s (on the same rollouts, at
  ratio 1, GSPO's advantages), what ``sgd`` and ``adamw`` step by. Its sign is flipped to
  read in the probe's direction (s = −log of the temperature's factor).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from rollouts import at_least, temperature_setup
    from temperature_gradient import reward_pull

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="policy dir (default: the shipped AR checkpoint)")
    p.add_argument("--data", default="data/demo", help="demo corpus root (train.jsonl)")
    p.add_argument("--batches", type=at_least(2), default=16)
    p.add_argument("--delta", type=float, default=0.25, help="temperature_probe (δ)")
    p.add_argument("--seed", type=int, default=0, help="data order and sampling")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    from sealign.commands.demo import _demo_gspo
    from sealign.rl.gspo import generate_and_score

    demo = _demo_gspo()
    cfg = dataclasses.replace(
        demo,
        data=dataclasses.replace(demo.data, batch_size=4),
        temperature_lr=1.0,
        temperature_optimizer="probe",
        temperature_probe=args.delta,
    )
    model, policy, scale, s0, ds, reward, gen = temperature_setup(
        args.model, args.data, args.seed, args.threads, cfg
    )
    slopes, pulls = [], []
    for b in range(args.batches):
        rb = generate_and_score(policy, ds.next_batch(), cfg, reward, gen)
        assert rb is not None and rb.probe is not None
        total, count = rb.probe
        slopes.append(total / count / (2 * args.delta) if count else np.nan)
        rows = torch.as_tensor(np.flatnonzero(rb.valid))
        adv = torch.as_tensor(rb.advantages, dtype=torch.float32)[rows]
        # −d loss/ds is the pull towards a larger s (a cooler sampler): minus it reads as d/d log T
        pulls.append(-reward_pull(policy, scale, rb.cond, rb.rollout.select(rows), adv, cfg, s0))
        print(f"batch {b + 1}/{args.batches}: probe {slopes[-1]:+.4f}, "
              f"loss gradient {pulls[-1]:+.5f}", flush=True)  # fmt: skip
    reward.close()
    print(
        f"\nmodel {model}; {args.batches} batches of {len(rb.rollout)} samples, δ = {args.delta:g}"
    )
    print(
        "| estimate of d reward / d log T | mean | standard error | t | mean / one batch's spread |"
    )
    print("|---|---|---|---|---|")
    for what, values in (("probe (reward units)", slopes), ("GSPO loss's gradient", pulls)):
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        m, sd = v.mean(), v.std(ddof=1)
        se = sd / np.sqrt(v.size)
        print(f"| {what} | {m:+.5f} | {se:.5f} | {m / se:+.1f} | {m / sd:+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
