"""Writes composite_reference.json: LLR, WSS and segmental SNR of Loizou's ``composite.m`` (run in
GNU Octave) on seeded synthetic signals, the reference tests/test_composite_measures.py compares
sealign's implementation with.

To regenerate: put a function ``[llr_mean, segSNR, wss_dist] = loizou_parts(clean, processed,
fs)`` on Octave's path that runs the first part of ``composite.m`` (Hu & Loizou; from the CD of
Loizou's "Speech Enhancement: Theory and Practice" or his web site) on arrays instead of files,
i.e. everything before the PESQ call, then `python tests/data/make_composite_reference.py DIR`
with DIR holding ``loizou_parts.m`` (needs `octave-cli`).
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def signals() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(clean, processed) pairs at 16 kHz: a 1.2-s voiced signal with a pause and a gliding
    pitch, against additive noise, a low-passed noisy copy and a slightly delayed copy
    (numpy's PCG64 draws and scipy's filters give the same numbers on every platform)."""
    from scipy.signal import butter, lfilter

    sr, n = 16000, 19200
    rng = np.random.default_rng(7)
    t = np.arange(n) / sr
    phase = 2 * np.pi * np.cumsum(110 + 40 * t) / sr
    pulses = (np.diff(np.floor(phase / (2 * np.pi)), prepend=0) > 0).astype(float)
    x = pulses
    for f, bw in ((600, 90), (1400, 120), (2600, 200)):
        r = np.exp(-np.pi * bw / sr)
        x = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * f / sr), r * r], x)
    x *= np.where((t > 0.5) & (t < 0.7), 0.02, 1.0)  # a near-silent pause
    clean = x / np.abs(x).max() * 0.5
    noise = rng.standard_normal(n)
    b, a = butter(4, 3000 / (sr / 2))
    return {
        "noise_5db": (clean, clean + noise * np.std(clean) / 10 ** (5 / 20)),
        "lowpass_noise_15db": (
            clean,
            lfilter(b, a, clean) + noise * np.std(clean) / 10 ** (15 / 20),
        ),
        "delayed_2ms": (clean, np.concatenate([np.zeros(32), clean[:-32]])),
    }


def main(harness_dir: str) -> None:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (clean, processed) in signals().items():
            np.savetxt(Path(tmp) / "c.txt", clean, fmt="%.17g")
            np.savetxt(Path(tmp) / "p.txt", processed, fmt="%.17g")
            script = (
                f"addpath('{harness_dir}'); c = load('{tmp}/c.txt'); p = load('{tmp}/p.txt'); "
                "[l, s, w] = loizou_parts(c, p, 16000); printf('%.17g %.17g %.17g\\n', l, s, w);"
            )
            res = subprocess.run(["octave-cli", "--eval", script], capture_output=True, text=True)
            llr, segsnr, wss = (float(v) for v in res.stdout.split()[-3:])
            out[name] = {"llr": llr, "segsnr": segsnr, "wss": wss}
    path = Path(__file__).with_name("composite_reference.json")
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
