"""What LoRA adapters (``model.lora``) save in a GSPO update: memory held and seconds.

    .venv/bin/python benchmarks/lora_update.py [--size 512,12,8] [--ranks 0,8,32] [--rollouts 8]
        [--frames 150] [--batches 3] [--threads 2]

Builds an AR policy of ``--size`` (DIM,LAYERS,HEADS; random weights) on the shipped AR's codec,
samples ``--batches`` rollout batches of ``--rollouts`` × ``--frames`` from random noisy audio,
gives them random advantages, and runs :func:`sealign.rl.gspo.update` (the demo's GSPO
settings: one minibatch, k3 KL to the base at β = 0.1) on each, for every rank of ``--ranks``
(0 = every weight trains, against a separate copy of the base; r > 0 = adapters of rank r on
``qkv``, ``proj``, ``mlp_in``, ``mlp_out``, the KL reference being the same model with its
adapters off). Prints, per setting: trainable parameters, the bytes a run holds besides the
policy's own weights between updates (the reference copy, AdamW's two moments and the gradients
of what trains, counted from those tensors after the updates; activations kept for a backward
pass come on top, alike for every setting) and the mean update time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def tensor_mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def main(argv: list[str] | None = None) -> int:
    from rollouts import at_least, held_temperature_demo

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="512,12,8", help="DIM,LAYERS,HEADS of the AR policy")
    p.add_argument("--ranks", default="0,8,32", help="LoRA ranks (0: full fine-tuning)")
    p.add_argument("--rollouts", type=at_least(1), default=8)
    p.add_argument("--frames", type=at_least(8), default=150)
    p.add_argument("--batches", type=at_least(1), default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    from sealign.commands.demo import shipped_checkpoint
    from sealign.models.ar import ARConfig, ARPolicy
    from sealign.models.lora import BaseView, LoRAConfig, apply_lora, count_trainable
    from sealign.models.registry import load_policy
    from sealign.rl.gspo import Dist, RolloutBatch, update
    from sealign.train.checkpoint import policy_dir
    from sealign.train.sft import make_optimizer, make_scheduler
    from sealign.utils.threads import set_torch_threads

    set_torch_threads(args.threads)
    dim, layers, heads = (int(x) for x in args.size.split(","))
    codec = load_policy(policy_dir(shipped_checkpoint("ar"))).codec
    cfg = held_temperature_demo()
    rng = np.random.default_rng(0)
    t = np.arange(args.frames * 320) / 16000
    noisy = [(0.3 * np.sin(2 * np.pi * (150 + 40 * k) * t) + 0.05 * rng.standard_normal(t.size))
             .astype(np.float32) for k in range(args.rollouts)]  # fmt: skip

    def build() -> ARPolicy:
        torch.manual_seed(0)
        return ARPolicy(codec, ARConfig.for_codec(codec, dim=dim, layers=layers, heads=heads))

    rows = []
    for rank in [int(r) for r in args.ranks.split(",")]:
        policy = build().eval()
        cond = policy.condition(noisy)
        gen = torch.Generator().manual_seed(0)
        batches = []
        for _ in range(args.batches):
            with torch.no_grad():
                rollout = policy.sample(cond, 1.0, generator=gen, top_k=50)
            group = np.arange(args.rollouts) // 4
            adv = torch.randn(args.rollouts, generator=gen).numpy()
            batches.append(RolloutBatch([], cond, rollout, group, adv, np.ones(args.rollouts, bool),
                                        {}))  # fmt: skip
        if rank:
            apply_lora(policy, LoRAConfig(rank=rank, alpha=2.0 * rank), seed=0)
            ref, ref_mb = BaseView(policy), 0.0
        else:
            ref = build().eval().requires_grad_(False)
            ref_mb = tensor_mb(ref.parameters())
        trainable, total = count_trainable(policy)
        opt = make_optimizer(policy, cfg.optim)
        sched = make_scheduler(opt, cfg.optim, 1000)
        times = []
        for b, batch in enumerate([batches[0], *batches]):  # the first: an untimed warm-up
            t0 = time.perf_counter()
            update(policy, ref, batch, cfg, opt, sched, torch.Generator().manual_seed(b), Dist())
            if b:
                times.append(time.perf_counter() - t0)
        moments = tensor_mb(v for s in opt.state.values() for v in s.values() if v.dim())
        grads = tensor_mb(q.grad for q in policy.parameters() if q.grad is not None)
        rows.append((rank, trainable, total, ref_mb, moments, grads, float(np.mean(times))))
    print(f"AR policy dim {dim}, {layers} layers, {heads} heads; {args.batches} updates of "
          f"{args.rollouts} × {args.frames} frames; {args.threads} threads")  # fmt: skip
    print("| setting | trainable / all params | reference copy MB | AdamW moments MB | "
          "gradients MB | held besides the policy, MB | update s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for rank, tr, tot, ref_mb, mom, gr, sec in rows:
        name = f"LoRA rank {rank}" if rank else "full fine-tuning"
        print(f"| {name} | {tr / 1e6:.2f} M / {tot / 1e6:.2f} M | {ref_mb:.1f} | {mom:.1f} | "
              f"{gr:.1f} | {ref_mb + mom + gr:.1f} | {sec:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
