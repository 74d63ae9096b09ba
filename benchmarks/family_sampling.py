"""Sampling speed of the three model families at the demo size.

    .venv/bin/python benchmarks/family_sampling.py [--codec DIR] [--seconds 4]
        [--batch 8] [--threads 2] [--repeats 2] [--shipped] [--json out.json]

Builds each family with its default config (dim 192, 6 layers, 4 heads; randomly initialized:
speed does not depend on the weights) over the WORLD codec (``ar`` and ``mgm`` use the
``mgm`` token layout, ``fm`` the continuous latent), and times ``sample`` + ``decode`` on
``--batch`` noisy inputs of ``--seconds`` s: AR with its KV cache (top-k 50), MGM with its
default 8 parallel-decoding iterations, FM with the 16-step Euler ODE and the 10-step SDE used
by RL. Reports seconds per batch and the real-time factor (compute time / audio time; lower is
faster), fastest of ``--repeats`` runs after a warm-up. ``--shipped`` times the checkpoints that
ship in the package (``sealign demo family=...``) instead of default-size random models;
``--model DIR`` (repeatable) times policy folders instead, custom classes included, as GSPO
samples them (AR with top-k 50, flow matching with its SDE), e.g. ``PYTHONPATH=examples ... --model runs/hf_base --model src/sealign/assets/ar_demo``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from rollouts import at_least

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--codec",
        default="src/sealign/assets/fm_demo/codec",
        help="WORLD codec folder (default: the shipped models' codec)",
    )
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=at_least(1), default=2)
    p.add_argument("--shipped", action="store_true", help="time the shipped checkpoints")
    p.add_argument("--model", action="append", default=[], help="time this policy folder")
    p.add_argument("--json")
    args = p.parse_args(argv)

    from sealign.codecs.base import load_codec
    from sealign.commands.demo import shipped_checkpoint
    from sealign.models.registry import build_policy, load_policy
    from sealign.utils.threads import set_torch_threads

    set_torch_threads(args.threads)
    rng = np.random.default_rng(0)
    n = int(args.seconds * 16000)
    t = np.arange(n) / 16000
    noisy = [
        (0.3 * np.sin(2 * np.pi * 150 * t * (1 + 0.1 * i)) + 0.05 * rng.standard_normal(n)).astype(
            np.float32
        )
        for i in range(args.batch)
    ]
    audio_s = args.batch * args.seconds
    cases = [
        ("ar", "mgm", {"top_k": 50}),
        ("mgm", "mgm", {}),
        ("fm (ODE, 16 steps)", "latent", {}),
        ("fm (SDE, 10 steps)", "latent", {"method": "sde"}),
    ]
    if args.model and args.shipped:
        p.error("--model and --shipped exclude each other")
    if args.model:
        cases = [(m, "", {}) for m in args.model]
    results = {}
    for name, layout, opts in cases:
        family = name.split()[0]
        spec = f"world:{args.codec}" + ("?layout=mgm" if layout == "mgm" else "")
        torch.manual_seed(0)
        if args.model:
            policy = load_policy(name)
            # what GSPO samples with: top-k 50 for AR, the RL sampler (the FM's SDE) if any
            rl = getattr(policy, "rl_sample_options", None)
            opts = {"top_k": 50} if policy.family == "ar" else (rl() if callable(rl) else {})
        elif args.shipped:
            policy = load_policy(shipped_checkpoint(family))
        else:
            policy = build_policy(family, load_codec(spec))
        policy.eval()  # type: ignore[attr-defined]
        cond = policy.condition(noisy)

        def run(policy=policy, cond=cond, opts=opts):
            r = policy.sample(cond, generator=torch.Generator().manual_seed(0), **opts)
            return policy.decode(r)

        run()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        best = min(times)
        params = sum(p.numel() for p in policy.parameters()) / 1e6  # type: ignore[attr-defined]
        results[name] = {"seconds_per_batch": best, "rtf": best / audio_s, "params_m": params}
    print(f"{args.batch} inputs x {args.seconds:g} s, {args.threads} threads (sample + decode)")
    print("| family | params (M) | s / batch | RTF |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['params_m']:.2f} | {r['seconds_per_batch']:.2f} | {r['rtf']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
