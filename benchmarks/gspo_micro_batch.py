"""Peak memory and time of one GSPO update at several ``micro_batch_size`` settings.

    .venv/bin/python benchmarks/gspo_micro_batch.py [--family fm] [--micro 0,8,2] [--threads 2]

Samples one rollout batch at the demo's size (8 inputs × 4 samples of the demo train split, the
family's RL sampler, T = 0.3) and stores it; then, for each setting, a fresh process loads the
policy, its reference and the batch and runs :func:`sealign.rl.gspo.update` once (the demo's
settings: one minibatch of all 32 rollouts, k3 KL to the base). Prints the update's seconds and
its peak resident memory above what the process held before it (the high-water mark of the
process, read from ``getrusage``), so each row is one clean process. ``micro_batch_size`` 0 is
the whole minibatch at once; the update itself is the same at every setting (tests check it).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _setup(args: argparse.Namespace):
    from rollouts import held_temperature_demo

    from sealign.commands.demo import shipped_checkpoint
    from sealign.models.registry import load_policy
    from sealign.train.checkpoint import policy_dir
    from sealign.utils.threads import set_torch_threads

    set_torch_threads(args.threads)
    cfg = held_temperature_demo()
    cfg.sampling.temperature = 0.3
    model = Path(args.model) if args.model else shipped_checkpoint(args.family)
    policy = load_policy(policy_dir(model)).eval()  # type: ignore[attr-defined]
    return cfg, model, policy


def _sample(args: argparse.Namespace, path: Path) -> None:
    from sealign.rl.gspo import RolloutBatch, rl_options
    from sealign.train.data import PairDataset

    cfg, _, policy = _setup(args)
    ds = PairDataset([str(Path(args.data) / "train.jsonl")], cfg.data, policy.sample_rate, 0)
    gen = torch.Generator().manual_seed(0)
    examples = ds.next_batch()
    group = np.repeat(np.arange(len(examples)), cfg.sampling.group_size)
    cond = policy.condition([e.noisy for e in examples]).select(torch.as_tensor(group))
    with torch.no_grad():
        rollout = policy.sample(
            cond, cfg.sampling.temperature, generator=gen, **rl_options(policy, cfg)
        )
    adv = torch.randn(len(group), generator=gen).numpy()
    batch = RolloutBatch(examples, cond, rollout, group, adv, np.ones(len(group), bool), {})
    torch.save(batch, path)


def _worker(args: argparse.Namespace) -> None:
    from sealign.models.registry import load_policy
    from sealign.rl.gspo import Dist, update
    from sealign.train.checkpoint import policy_dir
    from sealign.train.sft import make_optimizer, make_scheduler

    cfg, model, policy = _setup(args)
    ref = load_policy(policy_dir(model)).eval()  # type: ignore[attr-defined]
    batch = torch.load(args.worker, weights_only=False)
    cfg.micro_batch_size = args.micro_size
    opt = make_optimizer(policy, cfg.optim)  # type: ignore[arg-type]
    sched = make_scheduler(opt, cfg.optim, 1000)
    before = _rss_mb()
    t = time.perf_counter()
    stats = update(policy, ref, batch, cfg, opt, sched, torch.Generator().manual_seed(1), Dist())
    out = {
        "seconds": time.perf_counter() - t,
        "extra_mb": max(0.0, _rss_mb() - before),
        "loss": stats["loss"],
        "rollouts": len(batch.rollout),
    }
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="fm", help="shipped base: ar, mgm or fm")
    p.add_argument("--model", help="policy dir (default: the family's shipped checkpoint)")
    p.add_argument("--data", default="data/demo", help="demo corpus root (train.jsonl)")
    p.add_argument("--micro", default="0,8,2", help="micro_batch_size settings")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--micro-size", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.pt"
        _sample(args, path)
        rows = []
        for m in [int(x) for x in args.micro.split(",")]:
            cmd = [sys.executable, __file__, "--worker", str(path), "--micro-size", str(m),
                   "--family", args.family, "--threads", str(args.threads)]  # fmt: skip
            if args.model:
                cmd += ["--model", args.model]
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows.append((m, json.loads(res.stdout.strip().splitlines()[-1])))
    n = rows[0][1]["rollouts"]
    print(f"{args.family} update on {n} rollouts (one minibatch, KL to the base), "
          f"{args.threads} threads")  # fmt: skip
    print("| micro_batch_size | update, s | peak memory above the loaded model, MB | loss |")
    print("|---|---|---|---|")
    for m, r in rows:
        print(f"| {m or n} | {r['seconds']:.1f} | {r['extra_mb']:.0f} | {r['loss']:.6f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
