"""Is a content-conditioned model's WER limited by what the content encoder reads from the noisy
input, or by how the model renders it?

    .venv/bin/python benchmarks/content_oracle.py [--model src/sealign/assets/fm_demo] \
        [--manifest data/demo/test.jsonl] [--n 48] [--temperature 0.1]

Each noisy test input is enhanced twice by a model with ``features.content`` (e.g. the shipped
FM): once as usual, and once with the content-feature columns of its conditioning replaced by
those of the *clean* reference (the log-mels, and the FM's noisy prior, stay the noisy input's).
Both are transcribed by Whisper base. If the oracle content closes the gap to the clean
reference, the encoder's reading of noisy, reverberant speech is what limits the model; if it
does not, the model does not render the content it is given. Printed: mean WER over all
utterances, over those whose degradation includes reverb, and over the rest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from world_param_swap import print_wer_by_reverb

from sealign.audio.io import load_audio
from sealign.models.features import compute_features
from sealign.models.policy import Conditioning
from sealign.models.registry import load_policy
from sealign.utils.threads import set_torch_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="src/sealign/assets/fm_demo")
    ap.add_argument("--manifest", default="data/demo/test.jsonl")
    ap.add_argument("--n", type=int, default=0, help="first N entries (0: all)")
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    set_torch_threads(args.threads)
    policy = load_policy(args.model).eval()
    fc = policy.config.features
    if fc.content == "none":
        raise SystemExit(f"{args.model} has no content features (features.content: none)")
    root = Path(args.manifest).parent
    lines = Path(args.manifest).read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    entries = entries[: args.n] if args.n else entries
    sr = policy.sample_rate
    outputs: dict[str, list[np.ndarray]] = {"model": [], "model, clean content": []}
    for lo in range(0, len(entries), args.batch):
        batch = entries[lo : lo + args.batch]
        noisy = [load_audio(root / e["audio"], sr)[0] for e in batch]
        clean = [load_audio(root / e["reference"], sr)[0] for e in batch]
        if any(len(c) != len(n) for c, n in zip(clean, noisy, strict=True)):
            raise SystemExit("noisy and clean lengths differ; the oracle needs aligned pairs")
        cond = policy.condition(noisy)
        feats = cond.features.clone()
        feats[..., fc.n_mels :] = compute_features(clean, fc).features[..., fc.n_mels :]
        oracle = Conditioning(feats, cond.mask, cond.num_samples, cond.extra)
        for key, c in (("model", cond), ("model, clean content", oracle)):
            gen = torch.Generator().manual_seed(lo)
            outputs[key] += policy.decode(policy.sample(c, args.temperature, generator=gen))
    print(f"{args.model}:")
    print_wer_by_reverb(entries, outputs, sr, args.threads)


if __name__ == "__main__":
    main()
