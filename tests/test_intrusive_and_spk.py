import numpy as np
import pytest

from sealign.metrics import Utterance, build_metric
from sealign.metrics.intrusive import si_sdr


def test_pesq_identity_and_noise(speech, noisy):
    x = speech(0)
    m = build_metric("pesq_wb")
    same, deg = m.score_batch(
        [Utterance("a", x, 16000, reference=x), Utterance("b", noisy(x, 0), 16000, reference=x)]
    )
    assert same.values["pesq_wb"] == pytest.approx(4.64, abs=0.01)
    assert deg.values["pesq_wb"] < 2.0


def test_si_sdr_and_estoi(speech, noisy):
    x = speech(1)
    assert si_sdr(x.astype(np.float64), x.astype(np.float64)) > 100
    assert si_sdr(2 * x.astype(np.float64), x.astype(np.float64)) > 100  # scale invariant
    assert si_sdr(noisy(x, 5).astype(np.float64), x.astype(np.float64)) == pytest.approx(5, abs=0.6)
    r = build_metric("estoi").score_batch([Utterance("a", x, 16000, reference=x)])[0]
    assert r.values["estoi"] == pytest.approx(1.0, abs=1e-6)


def test_missing_reference_is_skipped(speech):
    for name in ("pesq_wb", "estoi", "si_sdr"):
        (r,) = build_metric(name).score_batch([Utterance("a", speech(0), 16000)])
        assert r.skipped == "no reference"


def test_spk_sim_same_voice_beats_other_voice(speech):
    m = build_metric("spk_sim", num_threads=1)
    ref = speech(0, "en-us+m3")
    same = speech(1, "en-us+m3")
    other = speech(1, "en-gb-x-rp+f4")
    a, b = m.score_batch(
        [
            Utterance("s", same, 16000, speaker_ref=ref),
            Utterance("o", other, 16000, speaker_ref=ref),
        ]
    )
    assert a.values["spk_sim"] > b.values["spk_sim"]
    # falls back to the clean reference; skipped without either
    (c,) = m.score_batch([Utterance("r", same, 16000, reference=ref)])
    assert c.values["spk_sim"] == pytest.approx(a.values["spk_sim"], abs=1e-5)
    (d,) = m.score_batch([Utterance("n", same, 16000)])
    assert d.skipped


def test_distillmos_clean_beats_noisy(speech, noisy):
    m = build_metric("distillmos", num_threads=1)
    x = speech(2)
    c, n = m.score_batch([Utterance("c", x, 16000), Utterance("n", noisy(x, 0), 16000)])
    assert 1 <= n.values["distillmos"] < c.values["distillmos"] <= 5
