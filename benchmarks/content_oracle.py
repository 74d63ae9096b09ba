"""Is a content-conditioned model's WER limited by what the content encoder reads from the noisy
input, or by how the model renders it?

    .venv/bin/python benchmarks/content_oracle.py [--model src/sealign/assets/fm_demo] \
        [--manifest data/demo/test.jsonl] [--n 48] [--temperature 0.1] \
        [--denoise-train data/demo/train.jsonl,data/prefs_noisy/manifest.jsonl]

Each noisy test input is enhanced twice by a model with ``features.content`` (e.g. the shipped
FM): once as usual, and once with the content-feature columns of its conditioning replaced by
those of the *clean* reference (the log-mels, and the FM's noisy prior, stay the noisy input's).
Both are transcribed by Whisper base. If the oracle content closes the gap to the clean
reference, the encoder's reading of noisy, reverberant speech is what limits the model; if it
does not, the model does not render the content it is given. Printed: mean WER over all
utterances, over those whose degradation includes reverb, and over the rest.

``--denoise-train M1,M2`` adds a third condition: the content columns mapped towards clean ones
by a ridge regression (noisy content and log-mel frames, ±``--context`` frames → clean content
frames) fitted on the noisy/clean pairs of those training manifests (the ridge weight is picked
on a tenth of them held out; their centred cosines with the clean frames are printed).
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="src/sealign/assets/fm_demo")
    ap.add_argument("--manifest", default="data/demo/test.jsonl")
    ap.add_argument("--n", type=int, default=0, help="first N entries (0: all)")
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--denoise-train", help="comma-separated training manifests for the ridge map")
    ap.add_argument("--context", type=int, default=2, help="frames of context each side (ridge)")
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
    ridge = None
    if args.denoise_train:
        ridge = _fit_ridge(args.denoise_train.split(","), policy, args.context)
        outputs["model, ridge-denoised content"] = []
    for lo in range(0, len(entries), args.batch):
        batch = entries[lo : lo + args.batch]
        noisy = [load_audio(root / e["audio"], sr)[0] for e in batch]
        clean = [load_audio(root / e["reference"], sr)[0] for e in batch]
        if any(len(c) != len(n) for c, n in zip(clean, noisy, strict=True)):
            raise SystemExit("noisy and clean lengths differ; the oracle needs aligned pairs")
        cond = policy.condition(noisy)
        feats = cond.features.clone()
        feats[..., fc.n_mels :] = compute_features(clean, fc).features[..., fc.n_mels :]
        conds = {"model": cond}
        conds["model, clean content"] = Conditioning(feats, cond.mask, cond.num_samples, cond.extra)
        if ridge is not None:
            den = cond.features.clone()
            for j, t in enumerate(cond.mask.sum(dim=1).tolist()):
                x = _with_context(den[j, :t].numpy(), args.context)
                den[j, :t, fc.n_mels :] = torch.from_numpy(x @ ridge)
            conds["model, ridge-denoised content"] = Conditioning(
                den, cond.mask, cond.num_samples, cond.extra
            )
        for key, c in conds.items():
            gen = torch.Generator().manual_seed(lo)
            outputs[key] += policy.decode(policy.sample(c, args.temperature, generator=gen))
    print(f"{args.model}:")
    print_wer_by_reverb(entries, outputs, sr, args.threads)


def _with_context(f: np.ndarray, k: int) -> np.ndarray:
    """Frames ``[T, D]`` → ``[T, (2k + 1)·D + 1]``: each frame with its k neighbours each side
    (zeros past the ends) and a constant 1."""
    t = f.shape[0]
    p = np.pad(f, ((k, k), (0, 0)))
    return np.concatenate([p[i : i + t] for i in range(2 * k + 1)] + [np.ones((t, 1), f.dtype)], 1)


def _fit_ridge(manifests: list[str], policy, k: int) -> np.ndarray:
    """Ridge map from noisy feature frames (with context) to the clean reference's content
    frames, fitted on the pairs of ``manifests``; weight picked by held-out squared error."""
    fc, sr = policy.config.features, policy.sample_rate
    xs, ys = [], []
    for m in manifests:
        root = Path(m).parent
        for e in (json.loads(line) for line in Path(m).read_text().splitlines() if line.strip()):
            noisy, clean = (load_audio(root / e[key], sr)[0] for key in ("audio", "reference"))
            xs.append(_with_context(compute_features([noisy], fc).features[0].numpy(), k))
            ys.append(compute_features([clean], fc).features[0, :, fc.n_mels :].numpy())
    held = set(np.random.default_rng(0).permutation(len(xs))[: len(xs) // 10].tolist())
    fit = [i for i in range(len(xs)) if i not in held]
    x, y = np.concatenate([xs[i] for i in fit]), np.concatenate([ys[i] for i in fit])
    xh, yh = (
        np.concatenate([xs[i] for i in sorted(held)]),
        np.concatenate([ys[i] for i in sorted(held)]),
    )
    gram, cross = x.T.astype(np.float64) @ x, x.T.astype(np.float64) @ y
    mean = y.mean(axis=0)

    def centred_cos(a: np.ndarray) -> float:
        a, b = a - mean, yh - mean
        return float(
            np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9))
        )

    d = (xs[0].shape[1] - 1) // (2 * k + 1)
    own = xh[:, k * d + fc.n_mels : (k + 1) * d]  # the noisy frames' own content columns
    print(f"ridge: {len(fit)} pairs ({x.shape[0]} frames) to fit, {len(held)} held out")
    print(
        f"noisy frames: MSE {np.mean((own - yh) ** 2):.3f}, centred cosine {centred_cos(own):.3f}"
    )
    best = None
    for lam in (1.0, 1e2, 1e4):
        w = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), cross).astype(np.float32)
        err = float(np.mean((xh @ w - yh) ** 2))
        print(
            f"ridge λ = {lam:g}: held-out MSE {err:.3f}, centred cosine {centred_cos(xh @ w):.3f}"
        )
        if best is None or err < best[0]:
            best = (err, w)
    return best[1]


if __name__ == "__main__":
    main()
