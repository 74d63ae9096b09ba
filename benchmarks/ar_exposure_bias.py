"""How much an AR checkpoint loses by reading its own output (exposure bias).

    .venv/bin/python benchmarks/ar_exposure_bias.py --model src/sealign/assets/ar_demo \
        [--manifest data/demo/test.jsonl] [--n 48] [--temperatures 0.01,0.5]

Whisper-base WER against the manifest's text of four resyntheses of each utterance: the clean
reference's own codec tokens (the codec's floor), each frame's argmax given the clean token
history and the noisy input (teacher forced), and free-running samples at each temperature
(top-k 50 above 0.1). A large gap between the teacher-forced and free-running rows means the
model drifts once it conditions on its own tokens, which ``scheduled_sampling`` trains against.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sealign.audio.io import load_audio
from sealign.data.manifest import read_manifest
from sealign.metrics.base import Utterance
from sealign.metrics.registry import build_metric
from sealign.models.registry import load_policy
from sealign.train.checkpoint import policy_dir
from sealign.utils.threads import set_torch_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="AR policy, checkpoint or run folder")
    ap.add_argument("--manifest", default="data/demo/test.jsonl")
    ap.add_argument("--n", type=int, default=0, help="first N entries (0: all)")
    ap.add_argument("--temperatures", default="0.01,0.5")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    set_torch_threads(args.threads)
    policy = load_policy(policy_dir(args.model)).eval()
    if getattr(policy, "family", None) != "ar":
        raise SystemExit(f"{args.model}: not an AR policy")
    entries = [e for e in read_manifest(args.manifest) if e.reference and e.text]
    entries = entries[: args.n] if args.n else entries
    temps = [float(t) for t in args.temperatures.split(",") if t]
    rows: dict[str, list[np.ndarray]] = {"clean tokens": [], "teacher-forced argmax": []}
    rows.update({f"free-running T={t:g}": [] for t in temps})
    gen = torch.Generator().manual_seed(args.seed)
    sr = policy.sample_rate
    for i in range(0, len(entries), args.batch):
        batch = entries[i : i + args.batch]
        clean = [load_audio(e.reference, sr)[0] for e in batch]
        noisy = [load_audio(e.audio, sr)[0] for e in batch]
        cond, targets = policy.condition(noisy), policy.encode_targets(clean)
        rows["clean tokens"] += policy.decode_targets(targets)
        rows["teacher-forced argmax"] += policy.decode_targets(
            policy.teacher_forced_argmax(cond, targets)
        )
        for t in temps:
            top_k = 50 if t > 0.1 else 0
            rollout = policy.sample(cond, temperature=t, generator=gen, top_k=top_k)
            rows[f"free-running T={t:g}"] += policy.decode(rollout)
    wer = build_metric("wer", num_threads=args.threads)
    print(f"{args.model}: {len(entries)} utterances of {args.manifest}")
    for key, wavs in rows.items():
        utts = [Utterance(e.id, w, sr, text=e.text) for e, w in zip(entries, wavs, strict=True)]
        v = np.array([r.values.get("wer", np.nan) for r in wer(utts)])
        print(f"{key:26s} WER {np.nanmean(v):.3f}")


if __name__ == "__main__":
    main()
