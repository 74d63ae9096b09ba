"""How good are the flow-matching SDE rollouts GSPO learns from, next to the ODE outputs it is
judged by?

    .venv/bin/python benchmarks/fm_sde_noise.py [--model DIR] [--manifest data/demo/valid.jsonl]
        [--n 16] [--temperature 0.7] [--sde-a 0.1,0.3,0.7] [--sde-steps N] [--threads 2]
        [--json out.json]

GSPO on an FM policy samples with the Flow-GRPO SDE (``method="sde"``, noise level ``sde_a``)
because its steps have log-probs; ``enhance`` / ``eval`` use the deterministic Euler ODE. The
SDE keeps the ODE's marginals only in the continuous-time limit: with ten Euler–Maruyama steps
every step, the last included, adds Gaussian noise of std ``g·√Δ`` to the latent. If the
rollouts are much worse than the ODE outputs, the reward ranks noise rather than what the ODE
will produce. This scores, on ``--n`` utterances of ``--manifest`` with the demo reward (DNSMOS
OVRL fast mode, 1 − WER with Whisper base, DistillMOS), the ODE output and one SDE rollout per
``sde_a`` (same initial noise scale ``--temperature``, same seed), with and without
``sde_mean_last`` (the last step lands on its mean), and prints the mean of each reward
component and of the composite.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="FM policy dir (default: the shipped FM checkpoint)")
    p.add_argument("--manifest", default="data/demo/valid.jsonl")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--sde-a", default="0.1,0.3,0.7", help="SDE noise levels to compare")
    p.add_argument("--sde-steps", type=int, default=0, help="SDE steps (0 = the policy's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args(argv)

    from rollouts import held_temperature_demo

    from sealign.commands.demo import shipped_checkpoint
    from sealign.models.fm import FMPolicy
    from sealign.models.registry import load_policy
    from sealign.rewards import CompositeReward
    from sealign.rl.gspo import _utterances
    from sealign.train.checkpoint import policy_dir
    from sealign.train.data import PairDataset
    from sealign.utils.threads import set_torch_threads

    set_torch_threads(args.threads)
    policy = load_policy(policy_dir(Path(args.model) if args.model else shipped_checkpoint("fm")))
    if not isinstance(policy, FMPolicy):
        raise SystemExit(f"--model must be a flow-matching policy, got {type(policy).__name__}")
    policy.eval()  # type: ignore[attr-defined]
    cfg = held_temperature_demo()
    cfg.data.batch_size = args.n
    ds = PairDataset([args.manifest], cfg.data, policy.sample_rate, args.seed, train=False)
    examples = ds.next_batch()
    reward = CompositeReward(cfg.reward, num_threads=args.threads)
    cond = policy.condition([e.noisy for e in examples])
    group = np.arange(len(examples))

    variants = [("ode", {"method": "ode"})]
    for a in args.sde_a.split(","):
        sde = {
            "method": "sde",
            "sde_a": float(a),
            **({"steps": args.sde_steps} if args.sde_steps else {}),
        }
        variants += [(f"sde a={a}", sde), (f"sde a={a}, mean last", {**sde, "sde_mean_last": True})]
    rows = {}
    for name, opts in variants:
        gen = torch.Generator().manual_seed(args.seed)
        rollout = policy.sample(cond, temperature=args.temperature, generator=gen, **opts)
        wavs = policy.decode(rollout)
        scores = reward(_utterances(examples, group, wavs, policy.sample_rate))
        row = {n: float(np.nanmean(scores.values[:, j])) for j, n in enumerate(scores.names)}
        w = reward.weights / reward.weights.sum()
        row["composite"] = float(np.nanmean(scores.values @ w))
        rows[name] = row
        print(f"  {name}: done", flush=True)
    reward.close()

    cols = list(next(iter(rows.values())))
    print(f"\n{len(examples)} utterances of {args.manifest}; temperature {args.temperature}")
    print("| sampler | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    print("(reward scale: DNSMOS and DistillMOS (m − 1)/4, WER 1 − min(WER, 1))")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
