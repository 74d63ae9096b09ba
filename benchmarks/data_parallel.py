"""Data-parallel SFT under torchrun against one process, on the same cores and global batch.

    .venv/bin/python benchmarks/data_parallel.py [--model DIR] [--data data/demo] [--steps 12]
        [--batch 8] [--cores 2] [--ranks 1,2] [--json out.json]

Trains the shipped AR checkpoint (or ``--model``) on the demo train split with ``sealign train``,
once per rank count N in ``--ranks``: N processes under ``torch.distributed.run`` (gloo), each with
``--cores / N`` threads and ``--batch / N`` examples, so every run uses the same cores and the same
global batch. Reports seconds per step (mean over the steps after the first two), examples per
second, and the time one gloo all-reduce of the model's gradients takes (measured by the same
ranks, outside training). On one machine this measures what the data-parallel machinery costs;
the speed-up it exists for needs more devices than the cores one process can already use.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = "--allreduce-worker"


def _allreduce_worker(numel: int, repeats: int) -> None:
    """Run under torchrun: time ``repeats`` all-reduces of ``numel`` float32 gradients."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    t = torch.randn(numel)
    dist.all_reduce(t)  # warm-up
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(t)
    secs = (time.perf_counter() - t0) / repeats
    if dist.get_rank() == 0:
        print(json.dumps({"allreduce_seconds": secs}))
    dist.barrier()
    dist.destroy_process_group()


def _torchrun(n: int, port: int, args: list[str], threads: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
           "--master-port", str(port), *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)


def main(argv: list[str] | None = None) -> int:
    from rollouts import at_least

    if argv is None and len(sys.argv) > 1 and sys.argv[1] == WORKER:
        _allreduce_worker(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="policy dir (default: the shipped AR checkpoint)")
    p.add_argument("--data", default="data/demo", help="demo corpus root (train.jsonl)")
    p.add_argument(
        "--steps",
        type=at_least(3),
        default=12,
        help="steps per run; the first two (warm-up) are left out of the mean",
    )
    p.add_argument("--batch", type=int, default=8, help="global batch (examples per step)")
    p.add_argument("--cores", type=int, default=2, help="threads shared out over the ranks")
    p.add_argument("--ranks", default="1,2", help="rank counts to compare")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args(argv)

    from sealign.commands.demo import shipped_checkpoint
    from sealign.models.registry import load_policy

    model = args.model or str(shipped_checkpoint("ar"))
    numel = sum(t.numel() for t in load_policy(model).parameters())  # type: ignore[attr-defined]
    train = Path(args.data) / "train.jsonl"
    if not train.is_file():
        raise SystemExit(f"{train} not found: run `sealign data demo --output {args.data}` first")
    rows = []
    for k, n in enumerate(int(x) for x in args.ranks.split(",")):
        if args.batch % n or args.cores % n:
            raise SystemExit(f"--batch {args.batch} and --cores {args.cores} must divide by {n}")
        threads = args.cores // n
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            overrides = [f"data.train=[{train}]", "data.valid=[]", f"data.batch_size={args.batch // n}",
                         "data.crop_seconds=4.0", f"max_steps={args.steps}", "logging_steps=1",
                         "eval_steps=0", "save_steps=0", f"threads={threads}"]  # fmt: skip
            cmd = ["-m", "sealign", "train", "--no-progress", "--init-from", model,
                   "--output", str(run), *overrides]  # fmt: skip
            t0 = time.perf_counter()
            proc = _torchrun(n, 29600 + 2 * k, cmd, threads)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
            secs = [r["train/seconds_per_step"] for r in recs if "train/seconds_per_step" in r]
        steady = secs[2:] or secs
        step = sum(steady) / len(steady)
        ar = None
        if n > 1:
            out = _torchrun(n, 29601 + 2 * k, [__file__, WORKER, str(numel), "10"], threads)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            ar = json.loads(out.stdout.strip().splitlines()[-1])["allreduce_seconds"]
        rows.append({"ranks": n, "threads_per_rank": threads, "batch_per_rank": args.batch // n,
                     "seconds_per_step": step, "examples_per_second": args.batch / step,
                     "allreduce_seconds": ar, "wall_seconds": wall})  # fmt: skip
    print(f"AR SFT, {numel / 1e6:.2f} M parameters, global batch {args.batch} × 4 s, "
          f"{args.cores} threads in all, {args.steps} steps (mean over steps 3..)")  # fmt: skip
    print(
        "| ranks | threads / rank | batch / rank | s / step | examples / s | gradient all-reduce (s) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        ar = f"{r['allreduce_seconds']:.4f}" if r["allreduce_seconds"] is not None else "–"
        print(f"| {r['ranks']} | {r['threads_per_rank']} | {r['batch_per_rank']} | "
              f"{r['seconds_per_step']:.3f} | {r['examples_per_second']:.2f} | {ar} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
