"""Which WORLD parameters make an enhanced output unintelligible: spectra or pitch?

    .venv/bin/python benchmarks/world_param_swap.py --enhanced runs/eval_fm/enhanced/fm \
        [--manifest data/demo/test.jsonl] [--codec src/sealign/assets/fm_demo/codec] [--n 48]

Every enhanced file, its clean reference and its noisy input are analysed into the codec's
continuous latent; the spectral rows of one are combined with the log-F0 / voicing rows of
another, resynthesized, and transcribed by Whisper base. Printed per combination: mean WER over
all utterances, over those whose degradation includes reverb, and over the rest. If
"model spectra + clean F0" is as bad as the model, the spectral envelope is what is wrong; if
"clean spectra + model F0" is, the pitch track is. Re-analysing the enhanced audio costs a few
WER points by itself (the "model" row vs `sealign eval`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sealign.audio.io import load_audio
from sealign.codecs.world import WorldCodec
from sealign.metrics.base import Utterance
from sealign.metrics.registry import build_metric
from sealign.utils.threads import set_torch_threads


def with_pitch_of(spec: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """``spec``'s spectral rows with ``pitch``'s last two rows (log-F0, voiced fraction)."""
    z = spec.copy()
    z[-2:] = pitch[-2:]
    return z


def print_wer_by_reverb(
    entries: list[dict], outputs: dict[str, list[np.ndarray]], sr: int, threads: int
) -> None:
    """Whisper-base WER of each named list of outputs (one per manifest entry): mean over all
    entries, over those whose degradation includes reverb, and over the rest."""
    wer = build_metric("wer", num_threads=threads)
    reverb = np.array(["reverb" in e.get("degradation", {}).get("ops", []) for e in entries])
    print(f"{len(entries)} utterances, {reverb.sum()} with reverb")
    print(f"{'output':28s} {'WER all':>8s} {'reverb':>8s} {'other':>8s}")
    for key, wavs in outputs.items():
        utts = [
            Utterance(e["id"], w, sr, text=e["text"]) for e, w in zip(entries, wavs, strict=True)
        ]
        v = np.array([r.values.get("wer", np.nan) for r in wer(utts)])
        print(
            f"{key:28s} {np.nanmean(v):8.3f} {np.nanmean(v[reverb]):8.3f} "
            f"{np.nanmean(v[~reverb]):8.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--enhanced", required=True, help="folder of <id>.wav written by eval")
    ap.add_argument("--manifest", default="data/demo/test.jsonl")
    ap.add_argument("--codec", default="src/sealign/assets/fm_demo/codec")
    ap.add_argument("--n", type=int, default=0, help="first N entries (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    set_torch_threads(args.threads)
    codec = WorldCodec.load(args.codec, layout="mgm")
    root = Path(args.manifest).parent
    lines = Path(args.manifest).read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    entries = entries[: args.n] if args.n else entries
    rows: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "clean",
            "model",
            "model spectra + clean F0",
            "clean spectra + model F0",
            "noisy spectra + clean F0",
        )
    }
    for e in entries:
        clean = load_audio(root / e["reference"], codec.sample_rate)[0]
        noisy = load_audio(root / e["audio"], codec.sample_rate)[0]
        enhanced = load_audio(Path(args.enhanced) / f"{e['id']}.wav", codec.sample_rate)[0]
        zc, zm, zn = codec.encode_latent([clean, enhanced, noisy])
        t = min(z.shape[1] for z in (zc, zm, zn))
        zc, zm, zn = zc[:, :t], zm[:, :t], zn[:, :t]
        latents = [zc, zm, with_pitch_of(zm, zc), with_pitch_of(zc, zm), with_pitch_of(zn, zc)]
        for key, wav in zip(rows, codec.decode_latent(latents), strict=True):
            rows[key].append(wav)
    print_wer_by_reverb(entries, rows, codec.sample_rate, args.threads)


if __name__ == "__main__":
    main()
