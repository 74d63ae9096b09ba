"""Does the WER metric give the same transcripts on every CPU? CTranslate2 picks its kernels by
the CPU's instruction set; ``CT2_FORCE_CPU_ISA`` makes it use the kernels of another one.

    .venv/bin/python benchmarks/whisper_isa.py --manifest data/demo/test.jsonl
        [--isa AVX2,AVX,GENERIC] [--compute-types int8,float32] [--threads 1]

For each compute type and instruction set, a fresh process transcribes the manifest's audio
with the WER metric's Whisper (offline Whisper-base, greedy, short padding) and scores its WER
against the manifest's text. Prints per setting the mean WER, the seconds taken, and how many
transcripts differ from those of the first instruction set. An instruction set the CPU lacks
(AVX512 on an AVX2 machine) falls back to the best one it has, which CTranslate2 logs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = """
import json, sys, time
from sealign.audio.io import load_audio
from sealign.data.manifest import read_manifest
from sealign.metrics.base import Utterance
from sealign.metrics.registry import build_metric
manifest, compute_type, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
utts = [Utterance(e.id, load_audio(e.audio)[0], 16000, text=e.text)
        for e in read_manifest(manifest)]
m = build_metric("wer", num_threads=threads, compute_type=compute_type)
m.load()
t = time.perf_counter()
texts = m.asr.transcribe([u.audio for u in utts], 16000)
seconds = time.perf_counter() - t
wer = [r.values.get("wer") for r in m(utts)]
print(json.dumps({"texts": texts, "wer": wer, "seconds": seconds}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--manifest", required=True, help="JSONL manifest with audio and text")
    p.add_argument("--isa", default="AVX2,AVX,GENERIC", help="CT2_FORCE_CPU_ISA values")
    p.add_argument("--compute-types", default="int8,float32", help="CTranslate2 compute types")
    p.add_argument("--threads", type=int, default=1, help="CTranslate2 threads")
    args = p.parse_args(argv)

    print("| compute type | kernels | mean WER | s to transcribe | transcripts ≠ first |")
    print("|---|---|---|---|---|")
    for ct in args.compute_types.split(","):
        first: list[str] | None = None
        for isa in args.isa.split(","):
            env = {**os.environ, "CT2_FORCE_CPU_ISA": isa}
            cmd = [sys.executable, "-c", CHILD, args.manifest, ct, str(args.threads)]
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if run.returncode:
                print(run.stderr[-2000:], file=sys.stderr)
                return run.returncode
            res = json.loads(run.stdout.strip().splitlines()[-1])
            wer = [w for w in res["wer"] if w is not None]
            first = res["texts"] if first is None else first
            differ = sum(a != b for a, b in zip(first, res["texts"], strict=True))
            print(f"| {ct} | {isa} | {sum(wer) / len(wer):.4f} | {res['seconds']:.1f} | {differ} "
                  f"of {len(first)} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
