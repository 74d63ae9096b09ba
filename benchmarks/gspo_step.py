"""Step-time breakdown of GSPO at the demo defaults, and scored samples per second.

    .venv/bin/python benchmarks/gspo_step.py [--model DIR] [--data data/demo] [--steps 4]
        [--workers 3] [--metric-threads N] [--threads 2] [--solo] [--json out.json]

Runs the real trainer pieces (:func:`sealign.rl.gspo.generate_and_score` and
:func:`sealign.rl.gspo.update`) on the demo train split with the demo's GSPO settings
(``sealign demo``: since session 51 4 inputs × 2 temperatures × 4 samples, the learned
temperature's probes, before it 8 inputs × 4; top-k 50, DNSMOS OVRL + (1 − WER) + DistillMOS, KL
to the base when ``beta`` > 0, the three metrics side by side on one thread each) and reports
seconds per phase (generate / decode / score, per metric / update) averaged over ``--steps``
steps after one warm-up step, the share of decode + scoring, and scored samples/s. ``--solo`` also
scores each step's rollouts with every metric alone, one after another (outside the step's
timing): the CPU cost each metric brings, at its own thread count. ``--cpu`` also reports the
process's CPU seconds per phase and the cores it kept busy (CPU / wall): on a machine whose
cores every phase already keeps busy, overlapping phases cannot shorten a step.
``--workers`` lists the reward's metric concurrency settings to compare (``reward.workers``;
``2x4``: two workers, each metric's batch scored in four parts, ``reward.parts``; a trailing
``p``, as in ``3p``, makes the workers processes, ``reward.processes``: give it its own run, since
a thread setting run first leaves the metrics' libraries loaded in the trainer's process);
``--metric-threads`` sets each metric backend's threads (``reward.metric_threads``).
The default model is the shipped checkpoint (``sealign demo``'s base).
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
    p.add_argument("--model", help="policy dir (default: the shipped AR checkpoint)")
    p.add_argument("--data", default="data/demo", help="demo corpus root (train.jsonl)")
    p.add_argument("--steps", type=at_least(1), default=4)
    p.add_argument(
        "--workers",
        default="3",
        help="reward.workers settings to compare; WxP: W workers, each metric in P parts; "
        "a trailing p: worker processes (reward.processes)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--metric-threads",
        type=int,
        default=None,
        help="threads per metric backend (default: the demo's reward.metric_threads; 0: --threads)",
    )
    p.add_argument(
        "--solo",
        action="store_true",
        help="also time each reward metric alone on each step's rollouts (untimed in the step)",
    )
    p.add_argument(
        "--cpu", action="store_true", help="also report CPU seconds and busy cores per phase"
    )
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args(argv)

    from sealign.commands.demo import _demo_gspo, shipped_checkpoint
    from sealign.models.registry import load_policy
    from sealign.rewards import CompositeReward
    from sealign.rl.gspo import _utterances, generate_and_score, update
    from sealign.train.checkpoint import policy_dir
    from sealign.train.data import PairDataset
    from sealign.train.sft import make_optimizer, make_scheduler
    from sealign.utils.threads import set_torch_threads

    set_torch_threads(args.threads)
    cfg = _demo_gspo()
    cfg.threads = args.threads
    model = Path(args.model) if args.model else shipped_checkpoint()
    ref = load_policy(policy_dir(model)).eval() if cfg.beta > 0 else None  # type: ignore[attr-defined]
    results = {}
    for setting in args.workers.split(","):
        # "2x4": 2 workers, each metric in 4 parts; "3p": 3 worker processes
        workers, _, parts = setting.removesuffix("p").partition("x")
        # every setting starts from the same weights and sees the same batches
        policy = load_policy(policy_dir(model))
        policy.eval()  # type: ignore[attr-defined]
        ds = PairDataset([str(Path(args.data) / "train.jsonl")], cfg.data, policy.sample_rate, 0)
        cfg.reward.workers, cfg.reward.parts = int(workers), int(parts or 1)
        cfg.reward.processes = setting.endswith("p")
        if args.metric_threads is not None:
            cfg.reward.metric_threads = args.metric_threads
        reward = CompositeReward(cfg.reward, num_threads=args.threads)
        reward.load()
        opt = make_optimizer(policy, cfg.optim)  # type: ignore[arg-type]
        sched = make_scheduler(opt, cfg.optim, 1000)
        gen = torch.Generator().manual_seed(0)
        cpu: dict[str, list[tuple[float, float]]] = {}
        if args.cpu:
            for name in ("condition", "sample", "decode"):
                setattr(policy, name, _cpu_timed(getattr(policy, name), name, cpu))
            reward._score = _cpu_timed(reward._score, "score", cpu)  # type: ignore[method-assign]
        rows = []
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            batch = generate_and_score(policy, ds.next_batch(), cfg, reward, gen)
            t1, c1 = time.perf_counter(), time.process_time()
            update(policy, ref, batch, cfg, opt, sched, gen, _single())
            t2 = time.perf_counter()
            cpu.setdefault("update", []).append((t2 - t1, time.process_time() - c1))
            if step == 0:
                cpu.clear()
                continue  # warm-up (first calls allocate, lazy imports)
            row = {k: v for k, v in batch.stats.items() if k.startswith("time/")}
            row["time/update"] = t2 - t1
            row["time/step"] = t2 - t0
            row["samples"] = len(batch.rollout)
            samples = float(sum(batch.rollout.actions["num_samples"]))
            row["audio_seconds"] = samples / policy.sample_rate
            if args.solo:  # the step's outputs again, each metric alone (no cache)
                wavs = type(policy).decode(policy, batch.rollout)  # not --cpu's timer
                utts = _utterances(batch.examples, batch.group, wavs, policy.sample_rate)
                for name, metric in reward.metrics.items():
                    t = time.perf_counter()
                    metric.score_batch(utts)
                    row[f"solo/{name}"] = time.perf_counter() - t
            rows.append(row)
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        if args.cpu:
            for name, calls in cpu.items():
                wall, used = np.sum(calls, axis=0) / args.steps
                mean[f"cpu/{name}"], mean[f"cores_busy/{name}"] = used, used / wall
        mean["decode_plus_score_share"] = (mean["time/decode"] + mean["time/score"]) / mean[
            "time/step"
        ]
        mean["scored_samples_per_s"] = mean["samples"] / mean["time/step"]
        results[f"workers={setting}"] = mean
        reward.close()
    print(f"model {model}; {args.steps} steps after a warm-up; {args.threads} threads")
    keys = [k for k in next(iter(results.values())) if k.startswith("time/")]
    print("| phase | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for k in keys:
        print(f"| {k[5:]} (s) | " + " | ".join(f"{r[k]:.2f}" for r in results.values()) + " |")
    for k in [k for k in next(iter(results.values())) if k.startswith("solo/")]:
        print(
            f"| {k[5:]} alone (s) | " + " | ".join(f"{r[k]:.2f}" for r in results.values()) + " |"
        )
    for k in [k for k in next(iter(results.values())) if k.startswith(("cpu/", "cores_busy/"))]:
        unit = " (s)" if k.startswith("cpu/") else ""
        print(f"| {k}{unit} | " + " | ".join(f"{r[k]:.2f}" for r in results.values()) + " |")
    for k in ("decode_plus_score_share", "scored_samples_per_s", "audio_seconds"):
        print(f"| {k} | " + " | ".join(f"{r[k]:.2f}" for r in results.values()) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _cpu_timed(fn, name: str, out: dict[str, list[tuple[float, float]]]):
    """``fn`` recording (wall, process CPU) seconds of each call under ``name``."""

    def timed(*args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            out.setdefault(name, []).append((time.perf_counter() - w, time.process_time() - c))

    return timed


def _single():
    from sealign.rl.gspo import Dist

    return Dist()


if __name__ == "__main__":
    raise SystemExit(main())
