"""Does GSPO's gradient ask for a sharper sampler, and how far would its KL term let it go?

    .venv/bin/python benchmarks/temperature_gradient.py [--model DIR] [--data data/demo]
        [--batches 12] [--beta 0.1] [--scales 0.05,0.1,0.3] [--seed 0] [--threads 2]

Samples ``--batches`` rollout batches at the demo's GSPO settings (8 inputs × 4 samples, T = 1,
top-k 50) from the policy (default: the shipped AR base), scores them with the demo's reward, and
differentiates the demo's GSPO loss with respect to the policy's ``logit_scale`` s (the log of
its inverse sampling temperature; ``temperature_lr`` learns it) at s = 0, by autograd:

* the reward term: on-policy (ratio 1), its derivative is minus the batch mean of each sample's
  advantage times its mean per-token d log p / ds. Printed per batch, with the mean, its
  standard error and t over the batches: a positive pull, consistently, means the reward asks
  for a sharper sampler. Also with each sample's composite reward minus its group's mean as
  the advantage (close to the expected reward's own gradient, without GSPO's per-group,
  per-metric scaling), to compare how reliably each points the way;
* the KL term (``--beta`` × the k3 estimator against the policy at its own s) at each s + Δ
  of ``--scales``, on tokens sampled at s + Δ, as GSPO's rollouts would be there: its
  derivative grows with Δ, and where it equals the reward's pull, GSPO with the weights' KL
  would stop sharpening. ``temperature_lr`` ties the reference to the learned temperature,
  which removes this term for s.

Only samples with a usable reward enter, as in GSPO's update.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def reward_pull(policy, scale, cond, rollout, advantages, cfg, at: float) -> float:
    """−d(the GSPO loss's reward term)/ds at ``logit_scale`` = ``at``, on-policy (the rollout
    was sampled there)."""
    from sealign.rl.losses import policy_loss

    with torch.no_grad():
        scale.fill_(at)
    scale.grad = None
    logp, _ = policy.step_log_probs(cond, rollout)
    out = policy_loss(logp, rollout.logp, advantages, rollout.mask, cfg.loss, cfg.epsilon_low,
                      cfg.epsilon_high)  # fmt: skip
    out.loss.backward()
    return -float(scale.grad)


def centred(composite: np.ndarray, group: np.ndarray) -> torch.Tensor:
    """Each sample's composite reward minus its group's mean (NaN for unusable samples): with
    these advantages the on-policy pull approximates the expected reward's gradient (the loss
    averages per-token log-probs), without GSPO's per-group (per-metric) scaling."""
    out = np.full(len(composite), np.nan)
    for g in np.unique(group):
        idx = np.flatnonzero((group == g) & np.isfinite(composite))
        out[idx] = composite[idx] - composite[idx].mean()
    return torch.as_tensor(out, dtype=torch.float32)


def kl_push(policy, scale, cond, cfg, s0: float, at: float, beta: float, gen) -> float:
    """d(beta × k3 KL against the policy at ``s0``)/ds at ``logit_scale`` = ``at``, on tokens
    sampled at ``at``."""
    from sealign.rl.gspo import rl_options
    from sealign.rl.losses import policy_loss

    with torch.no_grad():
        scale.fill_(at)
    rollout = policy.sample(
        cond, temperature=cfg.sampling.temperature, generator=gen, **rl_options(policy, cfg)
    )
    with torch.no_grad():
        scale.fill_(s0)
        ref_logp, _ = policy.step_log_probs(cond, rollout)
        scale.fill_(at)
    scale.grad = None
    logp, _ = policy.step_log_probs(cond, rollout)
    zero = torch.zeros(len(rollout))
    out = policy_loss(logp, rollout.logp, zero, rollout.mask, cfg.loss, cfg.epsilon_low,
                      cfg.epsilon_high, ref_logp=ref_logp, beta=beta)  # fmt: skip
    out.loss.backward()
    return float(scale.grad)


def main(argv: list[str] | None = None) -> int:
    from rollouts import at_least, held_temperature_demo, temperature_setup

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="policy dir (default: the shipped AR checkpoint)")
    p.add_argument("--data", default="data/demo", help="demo corpus root (train.jsonl)")
    p.add_argument("--batches", type=at_least(2), default=12)
    p.add_argument("--beta", type=float, default=0.1, help="the KL weight (the demo's)")
    p.add_argument("--scales", default="0.05,0.1,0.3", help="values of s for the KL term")
    p.add_argument("--seed", type=int, default=0, help="data order and sampling")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    scales = [float(x) for x in args.scales.split(",")]

    from sealign.rl.gspo import generate_and_score

    cfg = held_temperature_demo()
    model, policy, scale, s0, ds, reward, gen = temperature_setup(
        args.model, args.data, args.seed, args.threads, cfg
    )
    pulls, centred_pulls, kl_grads = [], [], []
    for b in range(args.batches):
        # a rollout batch exactly as GSPO makes it: samples, 16-bit audio, rewards, advantages
        rb = generate_and_score(policy, ds.next_batch(), cfg, reward, gen)
        assert rb is not None
        rows = torch.as_tensor(np.flatnonzero(rb.valid))
        adv = torch.as_tensor(rb.advantages, dtype=torch.float32)[rows]
        sub = rb.rollout.select(rows)
        pulls.append(reward_pull(policy, scale, rb.cond, sub, adv, cfg, s0))
        centred_pulls.append(
            reward_pull(policy, scale, rb.cond, sub, centred(rb.composite, rb.group)[rows], cfg, s0)
        )
        kl_grads.append(
            [kl_push(policy, scale, rb.cond, cfg, s0, s0 + s, args.beta, gen) for s in scales]
        )
        with torch.no_grad():  # the next batch is sampled at s0 again
            scale.fill_(s0)
        print(f"batch {b + 1}/{args.batches}: reward pull on s {pulls[-1]:+.5f} "
              f"(centred composite {centred_pulls[-1]:+.5f})", flush=True)  # fmt: skip
    reward.close()
    print(f"\nmodel {model}; {args.batches} batches of {len(rb.rollout)} samples")
    mean = 0.0
    for what, values in (("GSPO's advantages", pulls), ("centred composite", centred_pulls)):
        pull = np.asarray(values)
        m, se = pull.mean(), pull.std(ddof=1) / np.sqrt(len(pull))
        mean = mean or m
        print(f"reward's pull on s with {what} (−d loss/ds at s = {s0:g}): {m:+.5f} ± {se:.5f} "
              f"(t {m / se:+.1f}, one batch's spread {pull.std(ddof=1):.5f})")  # fmt: skip
    kl = np.asarray(kl_grads).mean(axis=0)
    print(
        f"| s − {s0:g} | KL term's push back (beta {args.beta:g} × d KL/ds) | share of the pull |"
    )
    print("|---|---|---|")
    for s, k in zip(scales, kl, strict=True):
        print(f"| {s:g} | {k:+.5f} | {k / mean:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
