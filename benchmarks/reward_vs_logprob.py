"""How well a sample's own likelihood predicts each reward term, across and within groups.

    .venv/bin/python benchmarks/reward_vs_logprob.py [--model DIR] [--data data/demo]
        [--batches 12] [--threads 2]

Samples ``--batches`` rollout batches at the demo's GSPO settings (8 inputs × 4 samples, T = 1,
top-k 50) from the policy (default: the shipped AR base), scores them with the demo's reward
terms and prints the Spearman correlation of each sample's mean token log-probability with each
term, over all samples and within groups (both centred on their group mean). A within-group
correlation near zero means that making the sampler sharper (raising typical samples) does not
raise that term for a given input: its group-relative advantage must find another direction.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr


def centred(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``x`` minus its group's mean (NaN-aware)."""
    out = x.astype(np.float64).copy()
    for g in np.unique(groups):
        rows = groups == g
        out[rows] -= np.nanmean(x[rows])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="policy dir (default: the shipped AR checkpoint)")
    p.add_argument("--data", default="data/demo", help="demo corpus root (train.jsonl)")
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    from rollouts import held_temperature_demo

    from sealign.commands.demo import shipped_checkpoint
    from sealign.models.registry import load_policy
    from sealign.rewards import CompositeReward
    from sealign.rl.gspo import _utterances, rl_options
    from sealign.train.checkpoint import policy_dir
    from sealign.train.data import PairDataset
    from sealign.utils.threads import set_torch_threads

    set_torch_threads(args.threads)
    cfg = held_temperature_demo()
    model = Path(args.model) if args.model else shipped_checkpoint()
    policy = load_policy(policy_dir(model))
    policy.eval()  # type: ignore[attr-defined]
    ds = PairDataset([str(Path(args.data) / "train.jsonl")], cfg.data, policy.sample_rate, 0)
    reward = CompositeReward(cfg.reward, num_threads=args.threads)
    reward.load()
    gen = torch.Generator().manual_seed(0)
    logps, values, groups = [], [], []
    g = cfg.sampling.group_size
    for step in range(args.batches):
        examples = ds.next_batch()
        group = np.repeat(np.arange(len(examples)), g)
        cond = policy.condition([e.noisy for e in examples]).select(torch.as_tensor(group))
        rollout = policy.sample(
            cond, temperature=cfg.sampling.temperature, generator=gen, **rl_options(policy, cfg)
        )
        scores = reward(_utterances(examples, group, policy.decode(rollout), policy.sample_rate))
        logps.append((rollout.logp.sum(1) / rollout.mask.sum(1).clamp(min=1)).numpy())
        values.append(scores.values)
        groups.append(group + step * len(examples))
    reward.close()
    lp, vals, grp = np.concatenate(logps), np.concatenate(values), np.concatenate(groups)
    lp_within = centred(lp, grp)
    print(f"model {model}; {len(lp)} samples in {len(np.unique(grp))} groups of {g}")
    print("| reward term | Spearman with mean token log-prob: all samples | within groups |")
    print("|---|---|---|")
    for j, name in enumerate(scores.names):
        ok = np.isfinite(vals[:, j])
        across = spearmanr(lp[ok], vals[ok, j]).correlation
        within = spearmanr(lp_within[ok], centred(vals[:, j], grp)[ok]).correlation
        print(f"| {name} | {across:+.3f} | {within:+.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
