"""Training speech for the WORLD codec: eSpeak NG voice sets and an offline corpus builder.

``sealign codec train`` (:mod:`sealign.commands.codec`) uses :func:`espeak_corpus` for
``--espeak N``; the round-trip benchmark speaks with :data:`TEST_VOICES`, disjoint from
:data:`TRAIN_VOICES`, to measure how the codebooks generalize to unseen voices.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

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


def espeak_corpus(
    n: int, voices: Sequence[str] = TRAIN_VOICES, seed: int = 0, progress: bool = False
) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Synthesize ``n`` generated sentences with eSpeak NG at 16 kHz, cycling through ``voices``
    with seeded random rate (140–190 wpm) and pitch (35–65). Returns ``(wavs, texts, voices)``."""
    from sealign.codecs.world import _bar
    from sealign.data.espeak import synthesize_espeak
    from sealign.data.text import generate_sentences

    rng = np.random.default_rng(seed + 7919)
    texts = generate_sentences(n, seed)
    wavs, used = [], []
    for i, text in enumerate(_bar(progress)(texts, desc="eSpeak NG", unit="utt")):
        voice = voices[i % len(voices)]
        rate, pitch = int(rng.integers(140, 191)), int(rng.integers(35, 66))
        wav, _ = synthesize_espeak(
            text, voice=voice, rate=rate, pitch=pitch, seed=seed * 100_003 + i
        )
        wavs.append(wav)
        used.append(voice)
    return wavs, texts, used
