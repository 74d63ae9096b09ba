"""How much of a GSPO gradient is signal, per reward term and credit, on fixed inputs.

    .venv/bin/python benchmarks/reward_gradient_snr.py [--model DIR] [--data data/demo]
        [--inputs 4] [--batches 6] [--threads 2] [--extra METRIC:OUTPUT ...]

Draws ``--batches`` independent rollout batches for the same ``--inputs`` training inputs at the
demo's GSPO settings (4 samples per input, T = 1, top-k 50) from the policy (default: the
shipped AR base), scores them once with the demo's reward terms, and computes the on-policy GSPO
gradient of each batch for several rewards: each term alone, WER with word credit
(``gspo_token``), and the demo composite with sequence or word credit. Two batches' gradients
share the true gradient ``s`` and differ in their noise ``n``, so their mean pairwise cosine
estimates ``|s|² / (|s|² + |n|²)``: near 0, one rollout batch's update is mostly noise for that
reward; the printed ``k`` is the number of batches whose averaged gradient would be half
signal (``(1 - c) / c``). Each ``--extra`` reward term (e.g. ``text_likelihood:text_prob``) is
scored as well and measured alone and in the composite in place of the WER term.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from rollouts import at_least, held_temperature_demo

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="policy dir (default: the shipped AR checkpoint)")
    p.add_argument("--data", default="data/demo", help="demo corpus root (train.jsonl)")
    p.add_argument("--inputs", type=int, default=4, help="fixed training inputs")
    p.add_argument(
        "--batches",
        type=at_least(3),
        default=6,
        help="independent rollout batches (a standard error needs 2+ pairs)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--by-module", action="store_true",
                   help="also the cosine within each block / module's parameters")  # fmt: skip
    p.add_argument("--extra", action="append", default=[], metavar="METRIC:OUTPUT",
                   help="another reward term to measure, alone and in place of WER")  # fmt: skip
    args = p.parse_args(argv)

    import dataclasses

    from sealign.commands.demo import shipped_checkpoint
    from sealign.models.registry import load_policy
    from sealign.rewards import CompositeReward, RewardComponent, RewardConfig, group_advantages
    from sealign.rewards.word_credit import step_advantages
    from sealign.rl.gspo import _utterances, rl_options
    from sealign.rl.losses import policy_loss
    from sealign.train.checkpoint import policy_dir
    from sealign.train.data import PairDataset
    from sealign.utils.threads import set_torch_threads

    set_torch_threads(args.threads)
    cfg = held_temperature_demo()
    comps = [dataclasses.replace(c) for c in cfg.reward.components]
    wer_col = next(j for j, c in enumerate(comps) if c.metric == "wer")
    comps[wer_col].credit = "word"
    reward_cfg = dataclasses.replace(cfg.reward, components=comps)
    model = Path(args.model) if args.model else shipped_checkpoint()
    policy = load_policy(policy_dir(model))
    module: torch.nn.Module = policy  # type: ignore[assignment]
    module.eval()
    data = dataclasses.replace(cfg.data, batch_size=args.inputs)
    examples = PairDataset([str(Path(args.data) / "train.jsonl")], data, policy.sample_rate, 0)
    examples = examples.next_batch()
    reward = CompositeReward(reward_cfg, num_threads=args.threads)
    reward.load()
    extras = [RewardComponent(*e.split(":", 1)) for e in args.extra]
    extra = CompositeReward(RewardConfig(extras), num_threads=args.threads) if extras else None
    g = cfg.sampling.group_size
    group = np.repeat(np.arange(len(examples)), g)
    cond = policy.condition([e.noisy for e in examples]).select(torch.as_tensor(group))
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.batches):
        rollout = policy.sample(
            cond, temperature=cfg.sampling.temperature, generator=gen, **rl_options(policy, cfg)
        )
        utts = _utterances(examples, group, policy.decode(rollout), policy.sample_rate)
        batches.append((rollout, reward(utts), extra(utts) if extra else None))
    reward.close()

    agg, ones = cfg.reward.aggregation, np.ones(1)
    names = reward.names

    def advantages(variant: str, rollout, scores, more) -> tuple[np.ndarray, str]:
        v, valid = scores.values, ~scores.failed
        if more is not None and variant.startswith("composite, ") and variant[11:] in more.names:
            v = v.copy()
            v[:, wer_col] = more.values[:, more.names.index(variant[11:])]
            failed = scores.failed | more.failed
            return group_advantages(v, group, reward.weights, agg, failed).advantages, "gspo"
        if more is not None and variant in more.names:
            col = more.values[:, [more.names.index(variant)]]
            return group_advantages(col, group, ones, agg, more.failed).advantages, "gspo"
        if variant == "composite":
            return group_advantages(v, group, reward.weights, agg, scores.failed).advantages, "gspo"
        if variant == "composite, word credit":
            a, _ = step_advantages(v, group, reward.weights, agg, valid, wer_col,
                                   scores.word_credit, rollout.logp.shape[1],
                                   policy.step_seconds)  # fmt: skip
            return a, "gspo_token"
        name, _, credit = variant.partition(", ")
        col = v[:, [names.index(name)]]
        if credit:
            a, _ = step_advantages(col, group, ones, agg, valid, 0, scores.word_credit,
                                   rollout.logp.shape[1], policy.step_seconds)  # fmt: skip
            return a, "gspo_token"
        return group_advantages(col, group, ones, agg, scores.failed).advantages, "gspo"

    named = [(n, q) for n, q in module.named_parameters() if q.requires_grad]
    params = [q for _, q in named]
    spans: dict[str, list[tuple[int, int]]] = {}  # module → slices of the flat gradient
    start = 0
    for n, q in named:
        parts = n.split(".")
        key = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        spans.setdefault(key, []).append((start, start + q.numel()))
        start += q.numel()

    def mean_cosine(grads: list[torch.Tensor]) -> tuple[float, float]:
        cos = [
            float(torch.nn.functional.cosine_similarity(a, b, dim=0))
            for a, b in itertools.combinations(grads, 2)
        ]
        return float(np.mean(cos)), float(np.std(cos) / np.sqrt(len(cos)))

    by_module: dict[str, dict[str, float]] = {}
    variants = [*names, f"{names[wer_col]}, word credit", "composite", "composite, word credit"]
    if extra is not None:
        variants += [*extra.names, *(f"composite, {n}" for n in extra.names)]
    print(f"model {model}; {args.batches} rollout batches of {len(examples)} inputs x {g}")
    print("| reward | mean pairwise cosine | batches for half signal | gradient norm |")
    print("|---|---|---|---|")
    for variant in variants:
        grads = []
        for rollout, scores, more in batches:
            adv, loss_type = advantages(variant, rollout, scores, more)
            logp, _ = policy.step_log_probs(cond, rollout)
            adv_t = torch.as_tensor(adv, dtype=torch.float32)
            out = policy_loss(logp, rollout.logp, adv_t, rollout.mask, loss_type)
            module.zero_grad()
            out.loss.backward()
            flat = [q.grad if q.grad is not None else torch.zeros_like(q) for q in params]
            grads.append(torch.cat([x.flatten() for x in flat]))
        c, se = mean_cosine(grads)
        half = f"{(1 - c) / c:.0f}" if c > 0 else "∞"
        norm = float(torch.stack([x.norm() for x in grads]).mean())
        print(f"| {variant} | {c:+.4f} ± {se:.4f} | {half} | {norm:.3f} |")
        if args.by_module:
            by_module[variant] = {
                key: mean_cosine([torch.cat([x[a:b] for a, b in sl]) for x in grads])[0]
                for key, sl in spans.items()
            }
    if by_module:
        keys = list(spans)
        print("\nmean pairwise cosine within each module's parameters")
        print("| reward | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        for variant, row in by_module.items():
            print(f"| {variant} | " + " | ".join(f"{row[k]:+.3f}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
