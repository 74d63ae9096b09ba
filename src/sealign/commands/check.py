"""Check that a policy (or a codec) keeps the protocol the trainers rely on, before a long run.

Loads --model (a run, checkpoint or policy folder, custom classes included), runs two short
noisy inputs (generated, or the first two of --manifest) through every Policy method and prints
one row per property with what it measured: shapes and masks, seeded sampling, sampled log-probs
equal to the teacher-forced ones (GSPO's ratio is 1 at unchanged weights only then), log-probs
that do not depend on the minibatch, decoding to the inputs' lengths, the SFT and DPO
objectives, and save / load. --codec SPEC checks a codec instead (any spec load_codec takes,
your registered kinds included): token shapes, ranges and frame counts, batching, decoding
lengths, the continuous latent flow matching needs, bad input, save / reload. --metric NAME
checks a metric (yours via a plug-in): declared outputs and ranges, finite values within them,
the same value alone, in a batch and on a repeat (scores are cached by content), a skip when a
declared input is missing; a clean-vs-noisy hint. Exit status 1 when a check fails.

examples:
  sealign check --model shipped:ar  # a demo checkpoint that ships in the package
  PYTHONPATH=examples sealign check --model runs/hf_base --manifest data/demo/valid.jsonl
  sealign check --codec world:src/sealign/assets/fm_demo/codec
  sealign check --metric dnsmos --manifest data/demo/test.jsonl
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

from sealign.commands.common import log
from sealign.utils.threads import set_torch_threads

HELP = "check that a policy, codec or metric (built-in or your own) keeps its protocol"


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="run, checkpoint or policy folder")
    what.add_argument("--codec", help="codec spec, e.g. world:runs/codec or mykind:path")
    what.add_argument("--metric", help="metric name (see `sealign metrics`; plug-ins included)")
    p.add_argument(
        "--metric-options",
        default="{}",
        help="with --metric: its options as YAML, e.g. '{weights: /path/nisqa.tar}'",
    )
    p.add_argument("--manifest", help="take the two inputs (noisy and clean) from here")
    p.add_argument("--group-size", type=int, default=2, help="samples per input (default 2)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="torch device of the policy (e.g. cuda)")
    p.add_argument("--json", help="also write the checks here (for a CI of your own)")


def _manifest_audio(
    path: str, sample_rate: int, with_text: bool = False, need_reference: bool = True
):
    """Two entries' (noisy, clean) audio; without ``need_reference`` an entry without a
    reference counts too, its audio standing for both."""
    from sealign.audio.io import load_audio
    from sealign.data.manifest import read_manifest

    rows = [e for e in read_manifest(path, check_files=True) if e.reference or not need_reference]
    rows = rows[:2]
    if len(rows) < 2:
        what = "with a reference (clean) file" if need_reference else ""
        raise ValueError(f"{path}: needs two entries {what}".rstrip())
    noisy = [load_audio(e.audio, sample_rate)[0] for e in rows]
    clean = [load_audio(e.reference or e.audio, sample_rate)[0] for e in rows]
    if with_text:
        return noisy, clean, [e.text or "" for e in rows] if all(e.text for e in rows) else None
    return noisy, clean


def run(args: argparse.Namespace) -> int:
    import torch

    from sealign.models.conformance import check_codec, check_metric, check_policy, format_checks
    from sealign.utils.device import check_device

    if args.group_size < 1:
        raise ValueError("--group-size must be >= 1")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if not 0 < args.temperature < math.inf:
        raise ValueError(f"--temperature must be a finite number > 0, got {args.temperature}")
    check_device(args.device, "--device")
    if args.json and os.path.isdir(args.json):
        raise ValueError(f"--json {args.json} is a folder; give a file name")
    set_torch_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.metric:
        from sealign.metrics.registry import build_metric, metric_names

        if args.metric not in metric_names():
            raise ValueError(f"unknown metric {args.metric!r}; known: {', '.join(metric_names())}")
        import yaml

        try:
            options = yaml.safe_load(args.metric_options)
        except yaml.YAMLError as err:
            raise ValueError(f"--metric-options is not YAML: {err}") from None
        if not isinstance(options, dict):
            raise ValueError(f"--metric-options must be a mapping, got {args.metric_options!r}")
        subject = build_metric(args.metric, **{"num_threads": args.threads, **options})
        noisy = clean = texts = None
        if args.manifest:
            info = subject.info  # a reference-free metric checks on any two recordings
            need = bool(info.needs_reference or info.needs_speaker_ref)
            noisy, clean, texts = _manifest_audio(args.manifest, info.sample_rate, True, need)
        checks = check_metric(subject, noisy, clean, texts)
        where = f"metric {args.metric}"
    elif args.codec:
        from sealign.codecs.base import load_codec

        subject: Any = load_codec(args.codec)
        clean = _manifest_audio(args.manifest, subject.sample_rate)[1] if args.manifest else None
        checks = check_codec(subject, clean)
        where = args.codec
    else:
        from sealign.models.persist import checkpoint_sampling
        from sealign.models.registry import load_policy
        from sealign.train.checkpoint import policy_dir

        where = str(policy_dir(args.model))
        checkpoint_sampling(where)  # settings enhance and eval would refuse
        subject = load_policy(where, map_location=args.device)
        noisy = clean = None
        if args.manifest:
            noisy, clean = _manifest_audio(args.manifest, subject.sample_rate)
        checks = check_policy(
            subject, noisy, clean, args.group_size, seed=args.seed, temperature=args.temperature
        )
    print(f"{type(subject).__module__}.{type(subject).__name__} from {where}\n")
    print(format_checks(checks))
    if args.json:
        from dataclasses import asdict
        from pathlib import Path

        from sealign.utils.jsonio import write_json

        write_json(Path(args.json), {"subject": where, "checks": [asdict(c) for c in checks]})
    failed = [c.name for c in checks if c.ok is False]
    if failed:
        log.error("%d of %d checks failed: %s", len(failed), len(checks), "; ".join(failed))
        return 1
    log.info("all %d checks passed", len(checks))
    return 0
