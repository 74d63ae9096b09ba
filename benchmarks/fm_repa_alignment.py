"""How close does an FM trained with representation alignment (``repa_layer``) get to a clean
reading of the speech?

    .venv/bin/python benchmarks/fm_repa_alignment.py --model runs/fm_repa_finetune \
        [--manifest data/demo/test.jsonl] [--n 48]

For every test pair: the Whisper-encoder frames ``z`` of the clean reference (the alignment
targets), those of the noisy input (what the model is conditioned on), and the model's projected
block-``repa_layer`` states at flow times 0, 0.5 and 0.9 (from its noisy-prior start towards
the clean latents). Printed: mean cosine with ``z`` over valid frames, raw and after subtracting
the mean clean frame (Whisper frames share a large common direction that inflates raw cosines).
Alignment has helped when the model's states are closer to ``z`` than the noisy frames are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from sealign.audio.io import load_audio
from sealign.models.registry import load_policy
from sealign.train.checkpoint import policy_dir
from sealign.utils.threads import set_torch_threads

TIMES = (0.0, 0.5, 0.9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="run, checkpoint or policy folder")
    ap.add_argument("--manifest", default="data/demo/test.jsonl")
    ap.add_argument("--n", type=int, default=0, help="first N entries (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    set_torch_threads(args.threads)
    policy = load_policy(policy_dir(Path(args.model))).eval()
    if policy.family != "fm" or policy.repa_proj is None:
        raise SystemExit(f"{args.model} is not an FM trained with repa_layer > 0")
    fc = policy.config.features
    root = Path(args.manifest).parent
    lines = Path(args.manifest).read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    entries = entries[: args.n] if args.n else entries
    clean_z, noisy_z = [], []
    states_z: dict[float, list[torch.Tensor]] = {t: [] for t in TIMES}
    with torch.no_grad():
        for i, e in enumerate(entries):
            noisy = load_audio(root / e["audio"], policy.sample_rate)[0]
            clean = load_audio(root / e["reference"], policy.sample_rate)[0]
            cond, targets = policy.condition([noisy]), policy.encode_targets([clean])
            m = targets.mask[0]
            clean_z.append(targets.extra["content"][0][m])
            noisy_z.append(cond.features[0, 0 :: fc.frames_per_token, fc.n_mels :][m])
            states, mask = policy._cond_states(cond)
            eps = torch.randn(targets.values.shape, generator=torch.Generator().manual_seed(i))
            x0 = policy._start(cond, eps, mask.unsqueeze(-1).float())
            for t in TIMES:
                hidden: list[torch.Tensor] = []
                xt = (1 - t) * x0 + t * targets.values
                policy._velocity(states, mask, xt, torch.tensor([t]), 0.0, hidden)
                states_z[t].append(policy.repa_proj(hidden[0])[0][m])
    z = torch.cat(clean_z)
    mean = z.mean(dim=0)

    def cosines(a: torch.Tensor) -> tuple[float, float]:
        raw = F.cosine_similarity(a, z, dim=-1).mean().item()
        return raw, F.cosine_similarity(a - mean, z - mean, dim=-1).mean().item()

    print(f"{args.model}: {len(entries)} utterances, {len(z)} frames")
    print(f"{'frames':28s} {'cosine':>8s} {'centred':>8s}")
    rows = [("noisy input's encoder frames", torch.cat(noisy_z))]
    rows += [(f"model states, t = {t:g}", torch.cat(v)) for t, v in states_z.items()]
    for name, a in rows:
        print(f"{name:28s} {cosines(a)[0]:8.3f} {cosines(a)[1]:8.3f}")


if __name__ == "__main__":
    main()
