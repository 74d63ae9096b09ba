"""Round trip of the built-in WORLD codec: how much quality and intelligibility each view loses.

    .venv/bin/python benchmarks/codec_roundtrip.py [--codec DIR | --train-espeak 600]
        [--manifest test.jsonl] [--n 16] [--views resynth,latent,ar,mgm] [--no-wer] [--json out]

Test set (default): 16+ hand-written sentences spoken by eSpeak NG voices that are NOT used for
codebook training (``TEST_VOICES`` vs ``TRAIN_VOICES`` in :mod:`sealign.codecs.train_cli`), or the
entries of ``--manifest`` (``reference`` or ``audio``, with ``text`` for WER).
Views: ``resynth`` = WORLD analysis/synthesis at 5 ms without the codec (the vocoder's own
ceiling), ``latent`` = encode_latent/decode_latent, ``ar`` and ``mgm`` = token layouts.

Reported per view: mean DNSMOS OVRL / P808 / SIG / BAK, wide-band PESQ against the original,
speaker similarity to the original (resemblyzer GE2E cosine; the ceiling of an enhancement
model's speaker similarity on this codec), WER of Whisper-base transcripts against the text
(mean over utterances), encode and decode speed
(× real time, one process) and the token bitrate. Targets for the token layouts and the latent:
ΔOVRL ≥ −0.15, ΔP808 ≥ −0.2, ΔWER ≤ +5 points.
Without ``--codec``, a codec is trained first on ``--train-espeak`` eSpeak NG sentences.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sealign.audio.io import load_audio
from sealign.codecs.train_cli import TEST_VOICES, espeak_corpus
from sealign.codecs.world import (
    WorldCodec,
    WorldCodecConfig,
    analyze,
    synthesize,
    train_world_codec,
)
from sealign.data.espeak import synthesize_espeak
from sealign.metrics.base import MetricUnavailable, Utterance
from sealign.metrics.registry import build_metric

TEST_SENTENCES = [
    "The little boat drifted slowly toward the quiet harbor.",
    "She found an old map hidden inside the library book.",
    "Please bring three apples and a loaf of bread tomorrow.",
    "The train to the northern city leaves at seven thirty.",
    "A cold wind blew across the open field all night.",
    "My brother painted the kitchen a bright shade of yellow.",
    "We heard the music playing from the house next door.",
    "The children laughed as the puppy chased its tail.",
    "Turn left at the church and follow the narrow road.",
    "Fresh bread is sold at the corner shop every morning.",
    "He could not remember where he had parked the car.",
    "The meeting was moved to Friday because of the holiday.",
    "Clouds gathered over the mountains before the storm.",
    "Your package will arrive sometime next week.",
    "The teacher asked everyone to read the first chapter.",
    "A flock of geese flew south over the frozen lake.",
]
TARGETS = {"ovrl": -0.15, "p808": -0.2, "wer": 5.0}


def espeak_test_set(n: int) -> list[tuple[str, np.ndarray, str]]:
    """``n`` utterances ``(id, wav, text)`` in voices unseen by codec training."""
    out = []
    for i in range(n):
        text = TEST_SENTENCES[i % len(TEST_SENTENCES)]
        voice = TEST_VOICES[(i + i // len(TEST_SENTENCES)) % len(TEST_VOICES)]
        wav, _ = synthesize_espeak(
            text, voice=voice, rate=155 + (7 * i) % 30, pitch=40 + (9 * i) % 25
        )
        out.append((f"t{i:02d}_{voice}", wav, text))
    return out


def manifest_test_set(path: str, n: int | None) -> list[tuple[str, np.ndarray, str]]:
    from sealign.data.manifest import read_manifest

    out = []
    for e in read_manifest(path)[:n]:
        wav, _ = load_audio(e.reference or e.audio, sample_rate=16000)
        out.append((e.id, wav, e.text or ""))
    return out


def _dnsmos():
    try:
        m = build_metric("dnsmos")

        def run(wavs: list[np.ndarray]) -> list[dict[str, float]]:
            res = m.score_batch([Utterance(f"u{i}", w, 16000) for i, w in enumerate(wavs)])
            return [r.values for r in res]

        return run
    except (ImportError, KeyError, MetricUnavailable):
        from speechmos import dnsmos

        def run_sm(wavs: list[np.ndarray]) -> list[dict[str, float]]:
            keys = {"ovrl_mos": "ovrl", "p808_mos": "p808", "sig_mos": "sig", "bak_mos": "bak"}
            return [
                {keys[k]: float(v) for k, v in dnsmos.run(w, sr=16000).items() if k in keys}
                for w in wavs
            ]

        return run_sm


def _wer(enabled: bool):
    if not enabled:
        return None
    try:
        # standard 30-s Whisper padding: with the short-padding default, Whisper-base hallucinated
        # (WER > 100 %) on several eSpeak NG clips, which swamped the codec's effect
        m = build_metric("wer", pad_to_30s=True)
        m.load()
    except (ImportError, KeyError, MetricUnavailable, ValueError) as err:
        print(f"[WER unavailable: {err}]", file=sys.stderr)
        return None

    def run(wavs: list[np.ndarray], texts: list[str]) -> list[float]:
        utts = [
            Utterance(f"u{i}", w, 16000, text=t)
            for i, (w, t) in enumerate(zip(wavs, texts, strict=True))
        ]
        return [r.values.get("wer", math.nan) for r in m.score_batch(utts)]

    return run


def _pesq(refs: list[np.ndarray], wavs: list[np.ndarray]) -> list[float]:
    m = build_metric("pesq_wb")
    utts = [
        Utterance(f"u{i}", w, 16000, reference=r)
        for i, (r, w) in enumerate(zip(refs, wavs, strict=True))
    ]
    return [next(iter(r.values.values()), math.nan) for r in m.score_batch(utts)]


def _spk(refs: list[np.ndarray], wavs: list[np.ndarray]) -> list[float]:
    """Speaker similarity (resemblyzer GE2E cosine) of each output to its original."""
    try:
        m = build_metric("spk_sim")
        utts = [
            Utterance(f"u{i}", w, 16000, speaker_ref=r)
            for i, (r, w) in enumerate(zip(refs, wavs, strict=True))
        ]
        return [r.values.get("spk_sim", math.nan) for r in m.score_batch(utts)]
    except (ImportError, MetricUnavailable) as err:
        print(f"[speaker similarity unavailable: {err}]", file=sys.stderr)
        return [math.nan] * len(wavs)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def run_view(codec: WorldCodec, view: str, wavs: list[np.ndarray]) -> tuple[list, float, float]:
    """Round trip ``wavs`` through ``view``; returns (outputs, encode s, decode s)."""
    if view == "resynth":
        t0 = time.perf_counter()
        frames = [analyze(w.astype(np.float64), codec.config) for w in wavs]
        t1 = time.perf_counter()
        out = [synthesize(f, codec.config, len(w)) for f, w in zip(frames, wavs, strict=True)]
        return out, t1 - t0, time.perf_counter() - t1
    if view == "latent":
        enc, dec = codec.encode_latent, codec.decode_latent
    else:
        c = codec.with_layout(view)
        enc, dec = c.encode, c.decode
    t0 = time.perf_counter()
    codes = enc(list(wavs))
    t1 = time.perf_counter()
    out = dec(codes)
    t2 = time.perf_counter()
    return [_fit(y, len(w)) for y, w in zip(out, wavs, strict=True)], t1 - t0, t2 - t1


def bitrate(codec: WorldCodec, view: str) -> str:
    if view in ("ar", "mgm"):
        c = codec.with_layout(view)
        sizes = c.codebook_size if isinstance(c.codebook_size, tuple) else (c.codebook_size,)
        return f"{c.frame_rate * sum(math.log2(s) for s in sizes):.0f} bps"
    if view == "latent":
        return f"{codec.latent_dim}×{codec.frame_rate:g} Hz float"
    return "-"


def main(argv: list[str] | None = None) -> int:
    from rollouts import at_least

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--codec", help="existing WORLD codec folder (otherwise one is trained)")
    p.add_argument("--train-espeak", type=int, default=600, help="training sentences (default 600)")
    p.add_argument("--train-config", help="inline JSON overriding WorldCodecConfig for training")
    p.add_argument("--save-codec", help="where to keep the trained codec (default: temporary)")
    p.add_argument("--manifest", help="test manifest instead of the eSpeak NG test set")
    p.add_argument("--n", type=at_least(1), default=16, help="test utterances (default 16)")
    p.add_argument("--views", default="resynth,latent,ar,mgm")
    p.add_argument("--no-wer", action="store_true", help="skip Whisper WER")
    p.add_argument("--json", help="write per-view results here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    tmp = None
    if args.codec:
        codec_dir = Path(args.codec)
        codec = WorldCodec.load(codec_dir)
    else:
        overrides = json.loads(args.train_config) if args.train_config else {}
        cfg = WorldCodecConfig.from_dict({"seed": args.seed, **overrides})
        if args.save_codec:
            codec_dir = Path(args.save_codec)
        else:
            tmp = tempfile.TemporaryDirectory()
            codec_dir = Path(tmp.name)
        t0 = time.perf_counter()
        train_wavs, _, _ = espeak_corpus(args.train_espeak, seed=args.seed)
        codec = train_world_codec(train_wavs, codec_dir, cfg, progress=True)
        print(
            f"trained on {args.train_espeak} eSpeak NG sentences in {time.perf_counter() - t0:.0f} s"
        )
    size_kb = sum(f.stat().st_size for f in codec_dir.iterdir() if f.is_file()) / 1024

    test = manifest_test_set(args.manifest, args.n) if args.manifest else espeak_test_set(args.n)
    ids, refs, texts = [t[0] for t in test], [t[1] for t in test], [t[2] for t in test]
    seconds = sum(len(w) for w in refs) / 16000
    dnsmos, wer = _dnsmos(), _wer(not args.no_wer)

    rows: dict[str, dict[str, float | str]] = {}
    for view in ["original", *[v.strip() for v in args.views.split(",") if v.strip()]]:
        if view == "original":
            outs, t_enc, t_dec = refs, math.nan, math.nan
        else:
            outs, t_enc, t_dec = run_view(codec, view, refs)
        d = dnsmos(outs)
        row: dict[str, float | str] = {
            k: float(np.mean([x[k] for x in d])) for k in ("ovrl", "p808", "sig", "bak")
        }
        row["pesq"] = float(np.nanmean(_pesq(refs, outs))) if view != "original" else math.nan
        row["spk"] = float(np.nanmean(_spk(refs, outs))) if view != "original" else math.nan
        row["wer"] = 100 * float(np.nanmean(wer(outs, texts))) if wer and all(texts) else math.nan
        row["enc_xrt"] = seconds / t_enc if t_enc == t_enc else math.nan
        row["dec_xrt"] = seconds / t_dec if t_dec == t_dec else math.nan
        row["bitrate"] = bitrate(codec, view) if view != "original" else "-"
        rows[view] = row
        print(f"  {view}: done", file=sys.stderr)

    base = rows["original"]
    header = "| view | OVRL | ΔOVRL | P808 | ΔP808 | SIG | BAK | PESQ | spk sim | WER % | ΔWER | enc ×RT | dec ×RT | rate |"
    print(
        f"\n{len(test)} utterances, {seconds:.1f} s; codec folder {size_kb:.0f} KiB ({codec_dir})"
    )
    print(header)
    print("|" + "---|" * 14)
    for view, r in rows.items():
        dw = r["wer"] - base["wer"]  # type: ignore[operator]
        print(
            f"| {view} | {r['ovrl']:.3f} | {r['ovrl'] - base['ovrl']:+.3f} | {r['p808']:.3f} | "  # type: ignore[operator]
            f"{r['p808'] - base['p808']:+.3f} | {r['sig']:.3f} | {r['bak']:.3f} | "  # type: ignore[operator]
            f"{r['pesq']:.2f} | {r['spk']:.3f} | {r['wer']:.1f} | {dw:+.1f} | {r['enc_xrt']:.1f} | "
            f"{r['dec_xrt']:.1f} | {r['bitrate']} |"
        )
    fails, untested = [], []
    for view in ("latent", "ar", "mgm"):
        if view not in rows:
            continue
        r = rows[view]
        for key, name, worse in (("ovrl", "ΔOVRL", -1), ("p808", "ΔP808", -1), ("wer", "ΔWER", 1)):
            delta = r[key] - base[key]  # type: ignore[operator]
            if not np.isfinite(delta):  # NaN compares as neither met nor missed
                untested.append(f"{view}: {name}")
            elif worse * (delta - TARGETS[key]) > 0:
                fails.append(f"{view}: {name}")
    print("targets met" if not fails else "targets missed: " + ", ".join(fails))
    if untested:
        print("not measured: " + ", ".join(untested))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"utterances": ids, "codec_kib": size_kb, "views": rows}, indent=2) + "\n"
        )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
