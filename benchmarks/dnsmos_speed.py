"""Throughput of DNSMOS: ``speechmos.dnsmos.run`` clip by clip vs sealign's exact and fast modes.

Clips are eSpeak NG sentences (voices without random variation, so runs are reproducible),
zero-padded or cut to ``--seconds`` (default 4 s); every second one is mixed with seeded white
noise at 0-20 dB SNR. All backends use ``--threads`` onnxruntime intra-op threads (speechmos'
sessions are rebuilt with the same options). Models are loaded and warmed up before timing; with
``--repeats`` > 1 the runs are interleaved and the fastest of each is reported.

    python benchmarks/dnsmos_speed.py --clips 16 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_THREADS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def main(argv: list[str] | None = None) -> None:
    from rollouts import at_least

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clips", type=at_least(1), default=16)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=at_least(1), default=1)
    ap.add_argument("--personalized", action="store_true")
    args = ap.parse_args(argv)
    for var in _THREADS_ENV:  # numpy's BLAS must not add threads of its own
        os.environ[var] = str(args.threads)

    import numpy as np
    import onnxruntime as ort
    import speechmos.dnsmos as sm

    from sealign.data.espeak import synthesize_espeak
    from sealign.metrics.base import Utterance
    from sealign.metrics.dnsmos import DNSMOS
    from sealign.utils.threads import ort_session_options

    sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "Please call Stella and ask her to bring these things with her from the store.",
        "A large red ball rolled slowly across the wooden floor of the kitchen.",
        "We will meet near the old bridge after the morning rain has stopped.",
    ]
    n = int(round(args.seconds * 16000))
    rng = np.random.default_rng(0)
    clips = []
    for i in range(args.clips):
        voice = ("en-us+m3", "en-us+f4", "en-us+m1", "en-us+m5")[(i // 4) % 4]
        wav, _ = synthesize_espeak(sentences[i % 4], voice=voice)
        wav = np.pad(wav[:n], (0, max(0, n - wav.size)))
        if i % 2:
            noise = rng.standard_normal(n).astype(np.float32)
            snr = float(rng.uniform(0, 20))
            wav = wav + noise * np.sqrt(np.mean(wav**2) / np.mean(noise**2) / 10 ** (snr / 10))
            wav = wav / max(1.0, float(np.abs(wav).max()))
        clips.append(wav.astype(np.float32))
    utts = [Utterance(f"clip{i}", c, 16000) for i, c in enumerate(clips)]

    model_type = "dnsmos_personalized" if args.personalized else "dnsmos"
    sm.run(clips[0], sr=16000, model_type=model_type)  # builds speechmos' global model
    opts = ort_session_options(args.threads)
    ref_model = sm.dnsmos
    ref_model.onnx_sess = ort.InferenceSession(ref_model.primary_model_path, opts)
    ref_model.p808_onnx_sess = ort.InferenceSession(
        os.path.join(os.path.dirname(sm.__file__), "dnsmos_models", "model_v8.onnx"), opts
    )
    exact = DNSMOS(num_threads=args.threads, personalized=args.personalized, mode="exact")
    fast = DNSMOS(num_threads=args.threads, personalized=args.personalized, mode="fast")
    warm = [Utterance("warm", clips[0], 16000)]
    sm.run(clips[0], sr=16000, model_type=model_type)
    exact(warm)
    fast(warm)

    def run_ref() -> list[dict[str, float]]:
        out = []
        for c in clips:
            r = sm.run(c, sr=16000, model_type=model_type)
            out.append({k: float(r[f"{k}_mos"]) for k in ("sig", "bak", "ovrl", "p808")})
        return out

    def run_ours(metric: DNSMOS) -> list[dict[str, float]]:
        return [r.values for r in metric(utts)]

    runs = {
        "speechmos clip-by-clip": run_ref,
        "sealign exact": lambda: run_ours(exact),
        "sealign fast": lambda: run_ours(fast),
    }
    best = {name: float("inf") for name in runs}
    results = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)

    def max_dev(a: list[dict[str, float]], b: list[dict[str, float]]) -> dict[str, float]:
        return {k: max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True)) for k in a[0]}

    print(
        f"{args.clips} clips of {args.seconds:g} s, {args.threads} threads, "
        f"personalized={args.personalized}, best of {args.repeats}"
    )
    base = best["speechmos clip-by-clip"]
    for name, secs in best.items():
        print(
            f"  {name:24s} {secs / args.clips:7.3f} s/clip  {args.clips / secs:6.2f} clips/s"
            f"  speed-up x{base / secs:5.2f}"
        )
    ref = results["speechmos clip-by-clip"]
    for name in ("sealign exact", "sealign fast"):
        dev = max_dev(results[name], ref)
        print(f"  max |{name} - speechmos|: " + ", ".join(f"{k} {v:.2e}" for k, v in dev.items()))
    dev = max_dev(results["sealign fast"], results["sealign exact"])
    print("  max |fast - exact|: " + ", ".join(f"{k} {v:.3f}" for k, v in dev.items()))
    print(f"  load average during run: {os.getloadavg()[0]:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
