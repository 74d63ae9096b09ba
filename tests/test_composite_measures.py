"""CSIG / CBAK / COVL: LLR, WSS and segmental SNR against Loizou's composite.m run in Octave."""

import importlib.util
import json
from pathlib import Path

import pytest

from sealign.metrics import Utterance, build_metric
from sealign.metrics.composite_measures import composite_components, composite_scores

DATA = Path(__file__).parent / "data"


def _signals():
    path = DATA / "make_composite_reference.py"
    spec = importlib.util.spec_from_file_location("make_composite_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.signals()


@pytest.mark.parametrize("name", ["noise_5db", "lowpass_noise_15db", "delayed_2ms"])
def test_components_equal_composite_m(name):
    want = json.loads((DATA / "composite_reference.json").read_text())[name]
    clean, processed = _signals()[name]
    got = composite_components(clean, processed, 16000)
    for key in ("llr", "wss", "segsnr"):
        assert got[key] == pytest.approx(want[key], rel=1e-8, abs=1e-9), key


def test_the_regression_formulas_and_their_clipping():
    parts = {"llr": 0.5, "wss": 30.0, "segsnr": 5.0}
    s = composite_scores(parts, 2.5)
    assert s["csig"] == pytest.approx(3.093 - 1.029 * 0.5 + 0.603 * 2.5 - 0.009 * 30)
    assert s["cbak"] == pytest.approx(1.634 + 0.478 * 2.5 - 0.007 * 30 + 0.063 * 5)
    assert s["covl"] == pytest.approx(1.594 + 0.805 * 2.5 - 0.512 * 0.5 - 0.007 * 30)
    assert composite_scores({"llr": 0.0, "wss": 0.0, "segsnr": 35.0}, 4.64) == {
        "csig": 5.0, "cbak": 5.0, "covl": 5.0
    }  # fmt: skip
    assert composite_scores({"llr": 2.0, "wss": 150.0, "segsnr": -10.0}, 1.0)["cbak"] == 1.0


def test_composite_metric_orders_and_skips(speech, noisy):
    x = speech(8)
    m = build_metric("composite")
    same, mild, bad, missing = m.score_batch(
        [
            Utterance("s", x, 16000, reference=x),
            Utterance("m", noisy(x, 20), 16000, reference=x),
            Utterance("b", noisy(x, 0), 16000, reference=x),
            Utterance("n", x, 16000),
        ]
    )
    # (not 35 dB: frames of silence have no signal energy, so their SNR floors at -10 dB)
    assert same.values["csig"] == same.values["covl"] == 5.0 and same.values["ssnr"] > 30
    for col in ("csig", "cbak", "covl", "ssnr"):
        assert mild.values[col] > bad.values[col], col
    assert missing.skipped == "no reference"
    (short,) = m.score_batch([Utterance("t", x[:300], 16000, reference=x[:300])])
    assert short.skipped == "shorter than one 30-ms analysis frame"


def test_blocks_of_frames_give_the_same_numbers(monkeypatch):
    from sealign.metrics import composite_measures

    clean, processed = _signals()["noise_5db"]
    whole = composite_components(clean, processed, 16000)
    monkeypatch.setattr(composite_measures, "_BLOCK", 7)  # 156 frames in 23 blocks
    # equal up to the summation order of the BLAS kernels blocks of other sizes pick
    assert composite_components(clean, processed, 16000) == pytest.approx(whole, rel=1e-12)
