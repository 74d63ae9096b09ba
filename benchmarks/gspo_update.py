"""Seconds per GSPO update at several ``step_fraction`` settings, for any shipped family.

    .venv/bin/python benchmarks/gspo_update.py [--family mgm] [--model DIR]
        [--fractions 1,0.5,0.25] [--batches 3] [--threads 2] [--temperature T]

Samples ``--batches`` rollout batches at the demo's size (8 inputs × 4 samples of the demo train
split, the family's RL sampler), gives them random group-relative advantages (an update costs
the same whatever the reward), and times :func:`sealign.rl.gspo.update` (demo settings: one
minibatch of all 32 samples, k3 KL to the base) on each batch at each ``step_fraction``,
restoring the weights and optimizer before every update so each setting does the same work
(after one untimed warm-up pass over the settings).
Prints the mean update time per setting and the model passes per update (MGM decoding
iterations, FM SDE steps).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from rollouts import at_least, held_temperature_demo

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="mgm", help="shipped base: ar, mgm or fm")
    p.add_argument("--model", help="policy dir (default: the family's shipped checkpoint)")
    p.add_argument("--data", default="data/demo", help="demo corpus root (train.jsonl)")
    p.add_argument("--fractions", default="1,0.5,0.25", help="step_fraction settings")
    p.add_argument("--batches", type=at_least(1), default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--temperature", type=float, default=None, help="default: the demo's")
    args = p.parse_args(argv)

    from sealign.commands.demo import shipped_checkpoint
    from sealign.models.policy import keep_passes, step_passes
    from sealign.models.registry import load_policy
    from sealign.rl.gspo import Dist, RolloutBatch, rl_options, update
    from sealign.train.checkpoint import policy_dir
    from sealign.train.data import PairDataset
    from sealign.train.sft import make_optimizer, make_scheduler
    from sealign.utils.threads import set_torch_threads

    set_torch_threads(args.threads)
    cfg = held_temperature_demo()
    if args.temperature is not None:
        cfg.sampling.temperature = args.temperature
    model = Path(args.model) if args.model else shipped_checkpoint(args.family)
    policy = load_policy(policy_dir(model)).eval()  # type: ignore[attr-defined]
    ref = load_policy(policy_dir(model)).eval()  # type: ignore[attr-defined]
    ds = PairDataset([str(Path(args.data) / "train.jsonl")], cfg.data, policy.sample_rate, 0)
    gen = torch.Generator().manual_seed(0)
    g = cfg.sampling.group_size
    batches = []
    for _ in range(args.batches):
        examples = ds.next_batch()
        group = np.repeat(np.arange(len(examples)), g)
        cond = policy.condition([e.noisy for e in examples]).select(torch.as_tensor(group))
        with torch.no_grad():
            rollout = policy.sample(
                cond, cfg.sampling.temperature, generator=gen, **rl_options(policy, cfg)
            )
        adv = torch.randn(len(group), generator=gen).numpy()
        valid = np.ones(len(group), dtype=bool)
        batches.append(RolloutBatch(examples, cond, rollout, group, adv, valid, {}))
    weights = copy.deepcopy(policy.state_dict())
    fractions = [float(f) for f in args.fractions.split(",")]
    times: dict[float, list[float]] = {f: [] for f in fractions}
    passes: dict[float, list[int]] = {f: [] for f in fractions}
    for b, batch in enumerate([batches[0], *batches]):
        # the first pass is an untimed warm-up (allocations); later batches alternate the
        # order of the settings so that none always runs first
        for f in fractions if b % 2 else fractions[::-1]:
            policy.load_state_dict(weights)
            opt = make_optimizer(policy, cfg.optim)  # type: ignore[arg-type]
            sched = make_scheduler(opt, cfg.optim, 1000)
            cfg.step_fraction = f
            draw = torch.Generator().manual_seed(1)
            kept = keep_passes(batch.rollout, step_passes(policy, batch.rollout), f, draw)
            t = time.perf_counter()
            update(policy, ref, batch, cfg, opt, sched, torch.Generator().manual_seed(1), Dist())
            if b:
                times[f].append(time.perf_counter() - t)
                kept_passes = step_passes(policy, kept).unique()
                passes[f].append(int((kept_passes >= 0).sum()))  # -1 marks left-out steps
    n = len(batches[0].rollout)
    print(f"{policy.family} model {model}; {args.batches} batches of {n} rollouts; "
          f"{args.threads} threads; update = one minibatch of {n}, KL to the base")  # fmt: skip
    print("| step_fraction | model passes per update | update (s), mean | per batch |")
    print("|---|---|---|---|")
    for f in fractions:
        per = ", ".join(f"{x:.2f}" for x in times[f])
        print(f"| {f:g} | {np.mean(passes[f]):.1f} | {np.mean(times[f]):.2f} | {per} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
