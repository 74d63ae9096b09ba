"""Plot a run folder: training curves from its ``log.jsonl`` (and those one folder down, e.g. a
demo's ``gspo/``) and, for an evaluation, each system's mean and 95% CI and each paired
difference from the baseline, one panel per metric; an ``index.html`` shows them with the
results tables.

Training runs (``train``, ``gspo``, ``dpo``) get three figures: training curves (losses,
``reward`` and ``rewards/<name>/mean`` with ± std bands, KL, clip ratios, entropy, learning
rate...), the held-out evaluation logged every N steps (``eval/*``), and seconds per phase
(``time/*``). Evaluation folders (``eval``, ``demo``) get ``results.png`` and one
``diff_vs_<baseline>.png`` per baseline (green: the CI lies on the better side of zero; red: on
the worse). Runs still in progress can be plotted at any time.

examples:
  sealign plot runs/gspo
  sealign plot runs/eval_families --output /tmp/plots
"""

from __future__ import annotations

import argparse
import os

from sealign.commands.common import log
from sealign.report.run import write_run_plots

HELP = "plot a run's training curves and evaluation results into an HTML page"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (train, gspo, dpo, eval or demo output)")
    p.add_argument("--output", help="folder for the figures and index.html (default RUN/plots)")
    p.add_argument(
        "--smooth", type=int, default=5, help="moving-average window over steps (1 = none)"
    )


def run(args: argparse.Namespace) -> int:
    if args.smooth < 1:
        raise ValueError(f"--smooth must be ≥ 1, got {args.smooth}")
    if args.output and os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"--output {args.output} is a file, not a folder")
    page = write_run_plots(args.run, args.output, smooth=args.smooth)
    log.info("wrote %s", page)
    return 0
