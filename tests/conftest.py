"""Shared fixtures: seeded speech generated offline with eSpeak NG, and noise mixtures."""

from __future__ import annotations

import numpy as np
import pytest

from sealign.data.espeak import synthesize_espeak

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A large red ball rolled slowly across the wooden floor of the kitchen.",
    "We will meet near the old bridge after the morning rain has stopped.",
]


@pytest.fixture(scope="session")
def speech():
    """``speech(i, voice)`` → 16 kHz float32 waveform of sentence ``i`` spoken by ``voice``."""
    cache: dict[tuple[int, str], np.ndarray] = {}

    def make(i: int = 0, voice: str = "en-us+m3") -> np.ndarray:
        key = (i, voice)
        if key not in cache:
            wav, _ = synthesize_espeak(SENTENCES[i % len(SENTENCES)], voice=voice)
            cache[key] = wav
        return cache[key].copy()

    return make


def add_noise(clean: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """Mix white-ish noise into ``clean`` at ``snr_db``."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(clean.size).astype(np.float32)
    p_s = np.mean(clean**2)
    p_n = np.mean(noise**2)
    noisy = clean + noise * np.sqrt(p_s / (p_n * 10 ** (snr_db / 10)))
    return (noisy / max(1.0, np.abs(noisy).max())).astype(np.float32)


@pytest.fixture(scope="session")
def noisy():
    return add_noise
