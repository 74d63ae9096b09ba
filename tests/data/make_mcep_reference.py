"""Writes mcep_reference.json: SPTK's mel-cepstra (pysptk) of a seeded synthetic signal, the
reference tests/test_mcd.py compares sealign's numpy mel-cepstral analysis with.

pysptk builds from source (no wheels) and imports pkg_resources, gone from setuptools >= 81, so
it is not a test dependency; to regenerate: `pip install pysptk==1.0.1 "setuptools<81"`, then
`python tests/data/make_mcep_reference.py`.
"""

import json
from pathlib import Path

import numpy as np


def signal() -> np.ndarray:
    """0.5 s at 16 kHz: a 140-Hz pulse train through two resonances, plus white noise
    (numpy's PCG64 draws are the same on every platform)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(20261205)
    x = np.zeros(8000)
    x[:: 16000 // 140] = 1.0
    for f, bw in ((700, 80), (1800, 120)):
        r = np.exp(-np.pi * bw / 16000)
        x = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * f / 16000), r * r], x)
    return x / np.abs(x).max() * 0.5 + 0.01 * rng.standard_normal(8000)


def main() -> None:
    import pysptk  # only here: tests/test_mcd.py imports signal() without it

    x = signal()
    window = pysptk.sptk.hamming(1024)
    out = {"version": pysptk.__version__, "order": 23, "alpha": 0.42, "frames": []}
    for start in (0, 2048, 6976):
        frame = x[start : start + 1024] * window
        out["frames"].append(
            {"start": start, "mcep": pysptk.mcep(frame, 23, 0.42, eps=1e-6, etype=1).tolist()}
        )
    path = Path(__file__).with_name("mcep_reference.json")
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
