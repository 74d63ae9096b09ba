import numpy as np
import pytest

from sealign.data.degrade import reverberate
from sealign.infer.dereverb import dereverb_input, wpe_dereverb, wpe_stft

SR = 16000


def test_wpe_matches_the_reference_implementation():
    nara = pytest.importorskip("nara_wpe.wpe")
    rng = np.random.default_rng(1)
    spec = rng.standard_normal((33, 200)) + 1j * rng.standard_normal((33, 200))
    for k in range(3, 12):  # a decaying tail of earlier frames, as a room leaves
        spec[:, k:] += 0.4 * 0.8**k * spec[:, :-k]
    for taps, delay, iterations in ((10, 3, 3), (5, 2, 1)):
        want = nara.wpe(spec[:, None, :], taps=taps, delay=delay, iterations=iterations)[:, 0]
        got = wpe_stft(spec, taps, delay, iterations)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-8 * np.abs(want).max())


def test_wpe_reduces_late_reverberation_of_speech(speech):
    dry = speech(0)
    for rt60, gain_db in ((0.4, 1.1), (0.7, 1.1), (1.0, 0.7)):  # measured: 1.1, 1.1, 0.7 dB
        wet, early, _ = reverberate(dry, np.random.default_rng(0), rt60=rt60)
        out = wpe_dereverb(wet.astype(np.float32), SR)
        assert out.dtype == np.float32 and out.shape == wet.shape
        # late reverberation = everything but the direct sound and its first 50 ms
        assert late_db(out, early) < late_db(wet, early) - gain_db + 0.1


def late_db(x: np.ndarray, early: np.ndarray) -> float:
    """Energy of ``x - early`` relative to ``early``, dB."""
    return float(10 * np.log10(np.sum((x - early) ** 2) / np.sum(early**2)))


def test_wpe_edge_cases():
    assert not wpe_dereverb(np.zeros(SR, np.float32), SR).any()  # silence stays silence
    short = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    assert wpe_dereverb(short, SR).shape == (100,)  # shorter than one window
    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    assert dereverb_input(x, SR, "none") is x
    with pytest.raises(ValueError, match="dereverb must be one of"):
        dereverb_input(x, SR, "dry")
    with pytest.raises(ValueError, match="1-D"):
        wpe_dereverb(np.zeros((2, 100), np.float32), SR)
    with pytest.raises(ValueError, match="taps"):
        wpe_stft(np.zeros((3, 10), complex), taps=0)


def test_wpe_gives_the_same_bits_whatever_the_blas_threads():
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):  # other tests may have lowered it
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    if max(blas, default=1) < 2:
        pytest.skip("numpy's BLAS runs one thread here: nothing to compare")

    # 10 s: shorter inputs give products too small for OpenBLAS to thread
    x = np.random.default_rng(0).standard_normal(160000).astype(np.float32) * 0.1
    outs = []
    for threads in (2, 1):
        with threadpool_limits(limits=threads, user_api="blas"):
            outs.append(wpe_dereverb(x, 16000))
    assert np.array_equal(outs[0], outs[1])
