"""``sealign codec train``: learn the codebooks of the built-in WORLD codec on clean speech.

Training audio comes from a JSONL manifest (each entry's ``reference``, or ``audio`` when it has
none) or is synthesized offline with eSpeak NG (``--espeak N``: N generated sentences spread over
several voices, rates and pitches). The codec folder holds ``codec.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

log = logging.getLogger(__name__)

# eSpeak NG voices for codec training. The round-trip benchmark speaks with TEST_VOICES, which are
# disjoint from these, to measure how the codebooks generalize to unseen voices.
TRAIN_VOICES = (
    "en-us+m3",
    "en-gb-x-rp+f4",
    "en-us+f2",
    "en+m1",
    "en-us-nyc+m7",
    "en-gb-scotland+f2",
    "en-us+m2",
    "en-gb-x-rp+m6",
    "en-us+f1",
    "en+f3",
)
TEST_VOICES = (
    "en-us+m5",
    "en-029+m2",
    "en-us+f4",
    "en-gb-x-gbclan+m4",
    "en-gb-x-gbcwmd+f1",
    "en+m6",
    "en-us+f5",
    "en-us+m4",
)


def _words(text: str) -> tuple[str, ...]:
    """Split a "|"-separated word list."""
    return tuple(w.strip() for w in text.split("|"))


# word lists of the sentence grammar
_SUBJECTS = _words(
    "the old farmer|my younger sister|a tired doctor|the children|our neighbor|the quiet student|"
    "a small gray cat|the new teacher|his father|the baker|every driver|the nervous pilot|"
    "a group of hikers|the museum guide|her cousin|the fisherman|a curious boy|the captain|"
    "my best friend|the singer"
)
_VERBS = _words(
    "carried|painted|found|watched|dropped|repaired|opened|cleaned|borrowed|described|ordered|"
    "pushed|measured|forgot|delivered|sold|hid|photographed|tasted|counted"
)
_OBJECTS = _words(
    "a heavy wooden box|the green bottle|seven yellow pencils|an enormous map|the broken umbrella|"
    "a bag of fresh oranges|the silver key|two thick books|a basket of eggs|the purple jacket|"
    "the leather shoes|a jar of honey|the kitchen window|three paper lanterns|a bright red kite|"
    "the morning newspaper|a bowl of warm soup|the garden hose|a pair of gloves|the rusty bicycle"
)
_PLACES = _words(
    "near the river|behind the station|in the kitchen|at the edge of town|under the bridge|"
    "beside the library|on the top floor|across the valley|inside the barn|along the beach|"
    "next to the fountain|in the crowded market"
)
_TIMES = _words(
    "this morning|before dinner|on Sunday|late last night|after the storm|during the winter|"
    "at half past nine|every Thursday|in the spring|yesterday"
)
_TEMPLATES = (
    "{S} {V} {O} {P} {T}.",
    "{T}, {S} {V} {O} {P}.",
    "Did {s} really say that {S2} {V} {O}?",
    "{S} {V} {O}, and then {S2} {V2} {O2}.",
    "Why has {s} {V} {O} {P}?",
    "Nobody knew that {S2} {V} {O} {T}.",
    "{S} {V} {O} while {S2} waited {P}.",
    "Please tell {s} that {O} is {P}.",
)


def generate_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` varied English sentences from a small seeded grammar (statements and questions)."""
    rng = np.random.default_rng(seed)

    def pick(words: Sequence[str]) -> str:
        return str(words[int(rng.integers(len(words)))])

    out = []
    for _ in range(n):
        tpl = pick(_TEMPLATES)
        s = pick(_SUBJECTS)
        text = tpl.format(
            S=s[0].upper() + s[1:],
            s=s,
            S2=pick(_SUBJECTS),
            V=pick(_VERBS),
            V2=pick(_VERBS),
            O=pick(_OBJECTS),
            O2=pick(_OBJECTS),
            P=pick(_PLACES),
            T=pick(_TIMES),
        )
        out.append(text[0].upper() + text[1:])
    return out


def espeak_corpus(
    n: int, voices: Sequence[str] = TRAIN_VOICES, seed: int = 0, progress: bool = False
) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Synthesize ``n`` generated sentences with eSpeak NG at 16 kHz, cycling through ``voices``
    with seeded random rate (140–190 wpm) and pitch (35–65). Returns ``(wavs, texts, voices)``."""
    from sealign.codecs.world import _bar
    from sealign.data.espeak import synthesize_espeak

    rng = np.random.default_rng(seed + 7919)
    texts = generate_sentences(n, seed)
    wavs, used = [], []
    for i, text in enumerate(_bar(progress)(texts, desc="eSpeak NG", unit="utt")):
        voice = voices[i % len(voices)]
        rate, pitch = int(rng.integers(140, 191)), int(rng.integers(35, 66))
        wav, _ = synthesize_espeak(text, voice=voice, rate=rate, pitch=pitch)
        wavs.append(wav)
        used.append(voice)
    return wavs, texts, used


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sealign codec train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="JSONL manifest of clean speech (reference or audio paths)")
    src.add_argument(
        "--espeak", type=int, metavar="N", help="synthesize N training sentences with eSpeak NG"
    )
    p.add_argument("--output", required=True, help="codec folder to write")
    p.add_argument("--seed", type=int, default=0, help="k-means and corpus seed (default 0)")
    p.add_argument(
        "--config",
        help="JSON file or inline JSON object overriding WorldCodecConfig fields "
        '(e.g. \'{"ar_spec_k": 256, "f0_method": "harvest"}\')',
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _config_overrides(arg: str | None) -> dict:
    if not arg:
        return {}
    from pathlib import Path

    text = Path(arg).read_text() if not arg.lstrip().startswith("{") else arg
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--config: invalid JSON ({err.msg})") from err
    if not isinstance(d, dict):
        raise SystemExit("--config: expected a JSON object")
    return d


def main_train(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sealign codec train``; returns a process exit code."""
    from sealign.codecs.base import CodecUnavailable
    from sealign.codecs.world import WorldCodecConfig, train_world_codec

    args = build_parser().parse_args(argv)
    overrides = _config_overrides(args.config)
    overrides.setdefault("seed", args.seed)
    try:
        cfg = WorldCodecConfig.from_dict({**asdict(WorldCodecConfig()), **overrides})
    except (TypeError, ValueError) as err:
        print(f"error: --config: {err}", file=sys.stderr)
        return 2
    progress = not args.no_progress
    t0 = time.perf_counter()
    if args.espeak is not None:
        if args.espeak < 1:
            print("error: --espeak needs N ≥ 1", file=sys.stderr)
            return 2
        data, _, _ = espeak_corpus(args.espeak, seed=args.seed, progress=progress)
    else:
        data = args.manifest
    try:
        codec = train_world_codec(data, args.output, cfg, progress=progress)
    except (ValueError, FileNotFoundError, CodecUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.output}: {codec.frame_rate:g} Hz, ar vocabulary {codec.codebook_size}"
        f", mgm codebooks {codec.with_layout('mgm').codebook_size}, latent dim {codec.latent_dim}"
        f" ({time.perf_counter() - t0:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main_train())
