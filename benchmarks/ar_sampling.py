"""Speed and memory of the autoregressive policy at the demo size.

    .venv/bin/python benchmarks/ar_sampling.py [--tokens 150] [--batch 8] [--threads 1]
        [--codec DIR] [--layout ar|mgm] [--model POLICY_DIR] [--size DIM,LAYERS,HEADS]
        [--json out.json]

Builds the default :class:`~sealign.models.ar.ARConfig` for a WORLD codec with the default
8192-symbol ``ar`` layout (trained first on ``--train-espeak`` eSpeak NG sentences unless
``--codec`` is given; only the vocabulary size matters here), or loads ``--model`` (e.g. the
shipped checkpoint), saves it to measure the checkpoint size, then reports

* sampling throughput (tokens/s) at ``--tokens`` frames, with and without the KV cache, for one
  sequence and for a GSPO-style group of ``--batch`` sequences (top-k 50, temperature 1);
* teacher-forced ``step_log_probs`` + backward on that group (the GSPO update's model cost);
* one SFT step (forward, backward, AdamW) on ``--batch`` × ``--sft-seconds`` s of noisy speech;
* peak resident memory (``ru_maxrss``) after each phase; torch's CPU allocations are not seen by
  ``tracemalloc``, so the process high-water mark is what is reported.

The machine may be shared: timings are the fastest of ``--repeats`` runs after one warm-up, and
cached and uncached sampling runs alternate so that outside load affects both alike.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024**2 if sys.platform == "darwin" else rss / 1024


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` runs after a warm-up (other processes share the CPU: the minimum
    is the least disturbed estimate)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    from rollouts import at_least

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=150)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sft-seconds", type=float, default=4.0)
    p.add_argument("--repeats", type=at_least(1), default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--codec", help="WORLD codec folder (default: train one)")
    p.add_argument("--layout", default="ar", help="codec token layout: ar (1 token) or mgm (5)")
    p.add_argument("--train-espeak", type=int, default=40)
    p.add_argument("--model", help="policy folder to time instead of a default-size model")
    p.add_argument("--size", help="DIM,LAYERS,HEADS of the built model (default: ARConfig's)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from sealign.codecs.train_cli import espeak_corpus
    from sealign.codecs.world import WorldCodec, WorldCodecConfig, train_world_codec
    from sealign.models.ar import ARConfig, ARPolicy
    from sealign.models.registry import load_policy

    rows: list[tuple[str, str]] = []
    results: dict[str, float] = {"rss_start_mb": peak_rss_mb()}
    wavs, _, _ = espeak_corpus(max(args.train_espeak, 2 * args.batch), seed=0)
    if args.model:
        codec = None
    elif args.codec:
        codec = WorldCodec.load(args.codec, layout=args.layout)
    else:
        t0 = time.perf_counter()
        codec = train_world_codec(wavs[: args.train_espeak], None, WorldCodecConfig(kmeans_iters=8))
        if args.layout != "ar":
            codec = WorldCodec(codec.config, codec.arrays, layout=args.layout)
        results["codec_train_s"] = time.perf_counter() - t0
    torch.manual_seed(0)
    if args.model:
        policy = load_policy(args.model).eval()
        if not isinstance(policy, ARPolicy):
            p.error(f"--model {args.model} is not an AR policy")
    else:
        size = {}
        if args.size:
            values = args.size.split(",")
            if len(values) != 3:
                p.error("--size takes DIM,LAYERS,HEADS")
            size = dict(zip(("dim", "layers", "heads"), map(int, values), strict=True))
        policy = ARPolicy(codec, ARConfig.for_codec(codec, **size)).eval()
    cfg = policy.config
    n_params = sum(p.numel() for p in policy.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        policy.save(Path(tmp) / "ckpt")
        results["weights_mb"] = (Path(tmp) / "ckpt" / "model.safetensors").stat().st_size / 1e6
        results["checkpoint_mb"] = folder_mb(Path(tmp) / "ckpt")
    rows.append(
        (
            "config",
            f"dim {cfg.dim}, {cfg.layers} layers (+{cfg.encoder_layers} encoder), {cfg.heads} "
            f"heads, vocab {cfg.vocab_sizes}, "
            f"{n_params / 1e6:.2f} M params",
        )
    )
    rows.append(
        (
            "checkpoint size",
            f"{results['weights_mb']:.1f} MB weights, {results['checkpoint_mb']:.1f} MB with codec",
        )
    )

    results["rss_after_build_mb"] = peak_rss_mb()

    rng = np.random.default_rng(0)
    n_samples = args.tokens * cfg.features.token_samples
    noisy = rng.standard_normal(n_samples).astype(np.float32) * 0.1
    noisy[: min(n_samples, wavs[0].size)] += wavs[0][:n_samples]
    cond1 = policy.condition([noisy])
    groups = {"1": cond1, str(args.batch): cond1.select([0] * args.batch)}
    for n, cond in groups.items():
        # cache and no-cache runs alternate so that load from other processes hits both alike
        best = {True: float("inf"), False: float("inf")}
        policy.sample(cond, top_k=50)  # warm-up
        for _ in range(args.repeats):
            for use_cache in (True, False):
                t0 = time.perf_counter()
                policy.sample(
                    cond, generator=torch.Generator().manual_seed(0), top_k=50, use_cache=use_cache
                )
                best[use_cache] = min(best[use_cache], time.perf_counter() - t0)
        for use_cache, dt in best.items():
            key = f"sample_b{n}_{'cache' if use_cache else 'nocache'}_tok_s"
            results[key] = int(n) * args.tokens / dt
            rows.append(
                (
                    f"sample batch {n}, {'KV cache' if use_cache else 'no cache'}",
                    f"{results[key]:8.0f} tokens/s  ({dt:.2f} s for {args.tokens} frames)",
                )
            )
        speedup = best[False] / best[True]
        results[f"cache_speedup_b{n}"] = speedup
        rows.append((f"KV-cache speed-up, batch {n}", f"{speedup:.1f}x (target >= 5x)"))
    results["rss_after_sampling_mb"] = peak_rss_mb()

    group = groups[str(args.batch)]
    rollout = policy.sample(group, generator=torch.Generator().manual_seed(0), top_k=50)

    def gspo_pass() -> None:
        logp, _ = policy.step_log_probs(group, rollout)
        (-(logp.sum(dim=1) / rollout.mask.sum(dim=1)).mean()).backward()
        policy.zero_grad(set_to_none=True)

    dt = timed(gspo_pass, args.repeats)
    results["gspo_logp_backward_s"] = dt
    rows.append((f"step_log_probs + backward, {args.batch} x {args.tokens}", f"{dt * 1000:.0f} ms"))
    results["rss_after_gspo_mb"] = peak_rss_mb()

    sft_n = int(args.sft_seconds * policy.sample_rate)
    clean = [np.resize(w, sft_n).astype(np.float32) for w in wavs[: args.batch]]
    noisy_b = [c + 0.05 * rng.standard_normal(sft_n).astype(np.float32) for c in clean]
    cond_b, targets = policy.condition(noisy_b), policy.encode_targets(clean)
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)

    def sft_step() -> None:
        loss = policy.sft_loss(cond_b, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    dt = timed(sft_step, args.repeats)
    results["sft_step_s"] = dt
    rows.append(
        (
            f"SFT step, {args.batch} x {args.sft_seconds:g} s ({targets.values.shape[-1]} frames)",
            f"{dt * 1000:.0f} ms",
        )
    )
    results["rss_after_sft_mb"] = peak_rss_mb()
    rows.append(
        (
            "peak RSS (imports / codec+model / sampling / GSPO / SFT)",
            " / ".join(
                f"{results[k]:.0f}"
                for k in (
                    "rss_start_mb",
                    "rss_after_build_mb",
                    "rss_after_sampling_mb",
                    "rss_after_gspo_mb",
                )
            )
            + f" / {results['rss_after_sft_mb']:.0f} MB",
        )
    )

    width = max(len(r[0]) for r in rows)
    print(f"\nAR policy benchmark ({args.threads} torch thread(s))")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
