"""How much do a group's rewards differ when its rollouts are scored as masks on the input?

    .venv/bin/python benchmarks/fused_reward_spread.py [--model src/sealign/assets/ar_demo] \
        [--config configs/gspo_demo.yaml] [--batches 3] [--temperature 1.0]

Samples GSPO rollout batches (the config's inputs per step × group size) from the demo train
split, scores each reward term on the model's own outputs and on the same outputs after mask
fusion (``sealign.infer.fusion``, what ``gspo.fuse=mask`` scores), and prints the mean
within-group standard deviation of each term: the differences the group-relative advantages
are built from.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sealign.config import load_config
from sealign.infer.fusion import fuse_outputs
from sealign.metrics.base import Utterance
from sealign.metrics.registry import build_metric
from sealign.models.registry import load_policy
from sealign.rl.gspo import GSPOConfig, rl_options
from sealign.train.data import PairDataset
from sealign.utils.threads import set_torch_threads

TERMS = {"dnsmos": "ovrl", "wer": "wer", "distillmos": "distillmos"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="src/sealign/assets/ar_demo")
    ap.add_argument("--config", default="configs/gspo_demo.yaml")
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    set_torch_threads(args.threads)
    # 8 inputs a step, as the demo sampled them (the probe default groups 4 inputs twice)
    cfg = load_config(GSPOConfig, args.config, ["data.batch_size=8"])
    g = cfg.sampling.group_size
    policy = load_policy(args.model).eval()
    data = PairDataset(cfg.data.train, cfg.data, policy.sample_rate, 0, True)
    metrics = {n: build_metric(n, num_threads=args.threads) for n in TERMS}
    spread: dict[str, dict[str, list[np.ndarray]]] = {"own": {}, "mask": {}}
    gen = torch.Generator().manual_seed(0)
    for _ in range(args.batches):
        ex = data.next_batch()
        group = np.repeat(np.arange(len(ex)), g)
        with torch.no_grad():
            cond = policy.condition([e.noisy for e in ex]).select(torch.as_tensor(group))
            roll = policy.sample(cond, args.temperature, generator=gen, **rl_options(policy, cfg))
            own = policy.decode(roll)
        noisy = [ex[k].noisy for k in group]
        for kind, wavs in (
            ("own", own),
            ("mask", fuse_outputs(own, noisy, policy.sample_rate, "mask")),
        ):
            utts = [
                Utterance(f"{ex[k].id}#{i}", w, policy.sample_rate, text=ex[k].text)
                for i, (k, w) in enumerate(zip(group, wavs, strict=True))
            ]
            for name, metric in metrics.items():
                v = np.array([r.values.get(TERMS[name], np.nan) for r in metric(utts)])
                spread[kind].setdefault(name, []).append(np.nanstd(v.reshape(-1, g), axis=1))
    print(
        f"{args.model}: {args.batches} batches of {len(group) // g} inputs x {g}, T = {args.temperature}"
    )
    print(f"{'scored':8s} " + " ".join(f"{n:>11s}" for n in TERMS))
    for kind, cols in spread.items():
        print(
            f"{kind:8s} " + " ".join(f"{np.nanmean(np.concatenate(cols[n])):11.4f}" for n in TERMS)
        )


if __name__ == "__main__":
    main()
