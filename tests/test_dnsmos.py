"""DNSMOS backend: equality with ``speechmos.dnsmos.run`` and with the whole ONNX model, batching,
fast mode, windowing."""

from __future__ import annotations

import importlib.util
import os
from types import SimpleNamespace

import numpy as np
import pytest

from sealign.metrics import MetricUnavailable, Utterance, build_metric
from sealign.metrics.dnsmos import DNSMOS, WINDOW, group_windows, plan_clip, window_starts

sm = pytest.importorskip("speechmos.dnsmos")

SR = 16000
OUTPUTS = {"sig": "sig_mos", "bak": "bak_mos", "ovrl": "ovrl_mos", "p808": "p808_mos"}
# Fast mode (1 window) vs exact, measured on ~120 eSpeak clips of 2-30 s, clean and 0-20 dB SNR:
# max abs sig 0.24, bak 0.23, ovrl 0.21, p808 0.19 (mean abs 0.04-0.05).
FAST_TOL = 0.3


@pytest.fixture(scope="module")
def clips(speech, noisy) -> dict[str, np.ndarray]:
    """A tiled short clip (2.8 s -> 11.2 s, 2 windows) and an 11.5 s clip (2 windows), clean and
    at 0 dB SNR. The default voice is used: eSpeak's f-variants draw random numbers."""
    short = speech(1)[: int(2.8 * SR)]
    long = np.concatenate([speech(i) for i in range(4)])[: int(11.5 * SR)]
    return {
        "short": short,
        "short_0db": noisy(short, 0.0, seed=1),
        "long": long,
        "long_0db": noisy(long, 0.0, seed=2),
    }


def _utts(clips: dict[str, np.ndarray]) -> list[Utterance]:
    return [Utterance(k, v, SR) for k, v in clips.items()]


@pytest.fixture(scope="module")
def metrics() -> dict[bool, DNSMOS]:
    return {p: DNSMOS(num_threads=2, personalized=p) for p in (False, True)}


@pytest.fixture(scope="module")
def exact(metrics, clips) -> dict[bool, dict[str, dict[str, float]]]:
    """Batch scores of all clips, per ``personalized``."""
    out = {}
    for pers, metric in metrics.items():
        res = metric(_utts(clips))
        assert all(r.ok for r in res), [r.error for r in res]
        out[pers] = {u: r.values for u, r in zip(clips, res, strict=True)}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("personalized", [False, True])
def test_exact_equals_speechmos(exact, clips, personalized: bool) -> None:
    model_type = "dnsmos_personalized" if personalized else "dnsmos"
    for name, wav in clips.items():
        ref = sm.run(wav, sr=SR, model_type=model_type)
        ours = exact[personalized][name]
        assert set(ours) == set(OUTPUTS)
        for key, ref_key in OUTPUTS.items():
            assert ours[key] == pytest.approx(float(ref[ref_key]), abs=1e-4), (name, key)


@pytest.mark.slow
def test_clean_beats_zero_db(exact) -> None:
    # Only the standard model: the personalized one rates this clean synthetic voice's OVRL
    # below its 0 dB mixture (it equals speechmos there too, see above).
    scores = exact[False]
    for name in ("short", "long"):
        for key in ("ovrl", "bak"):
            assert scores[name][key] > scores[f"{name}_0db"][key], (name, key)


@pytest.mark.slow
def test_batch_equals_per_clip(metrics, exact, clips) -> None:
    for name, wav in clips.items():
        (single,) = metrics[False]([Utterance(name, wav, SR)])
        for key, value in single.values.items():
            assert value == pytest.approx(exact[False][name][key], abs=1e-6), (name, key)


@pytest.mark.slow
def test_fast_mode_close_to_exact(exact, clips) -> None:
    fast = DNSMOS(num_threads=2, mode="fast")
    res = fast(_utts(clips))
    for name, r in zip(clips, res, strict=True):
        for key, value in r.values.items():
            assert abs(value - exact[False][name][key]) <= FAST_TOL, (name, key)
    by_name = {name: r.values for name, r in zip(clips, res, strict=True)}
    assert by_name["long"]["ovrl"] > by_name["long_0db"]["ovrl"]


class _FakeSession:
    """Stands in for an onnxruntime session: a fixed linear read-out of each input row, so that
    any difference in window content or P.808 features changes the output."""

    def __init__(self, shape: tuple[int, ...], n_out: int) -> None:
        rng = np.random.default_rng(len(shape))
        self.weights = rng.uniform(-1, 1, (n_out, *shape)).astype(np.float64)

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="input_1")]

    def run(self, _names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["input_1"].astype(np.float64)
        flat = x.reshape(len(x), -1)
        out = flat @ self.weights.reshape(len(self.weights), -1).T / np.sqrt(flat.shape[1])
        return [(out + 2.5).astype(np.float32)]


class _FakeP835:
    """The split P.835 model's interface over a fake whole-window session."""

    def __init__(self, session: _FakeSession) -> None:
        self.session = session

    def raw(self, audio: np.ndarray, starts: list[int], period: int = 0) -> np.ndarray:
        windows = np.stack([audio[s : s + WINDOW] for s in starts])
        return self.session.run(None, {"input_1": windows})[0]


def test_windowing_matches_speechmos_with_fake_models(monkeypatch) -> None:
    """Tiling, window selection (incl. windows speechmos drops), de-duplication and the P.808
    features agree with speechmos for many lengths; models replaced by cheap fakes."""
    primary, p808 = _FakeSession((WINDOW,), 3), _FakeSession((900, 120), 1)
    ref_model = sm.DNSMOS.__new__(sm.DNSMOS)  # no sessions loaded
    # the path speechmos.dnsmos.run compares with, so that it keeps this model
    here = os.path.dirname(os.path.abspath(sm.__file__))
    ref_model.primary_model_path = os.path.join(here, "dnsmos_models", "sig_bak_ovr.onnx")
    ref_model.onnx_sess, ref_model.p808_onnx_sess = primary, p808
    monkeypatch.setattr(sm, "dnsmos", ref_model)
    ours = DNSMOS(batch_size=3)
    ours.load()
    ours._primary, ours._p808 = _FakeP835(primary), p808

    rng = np.random.default_rng(7)
    lengths = [0.3, 1.0, 2.0, 2.76, 4.0, 4.4, 8.7, 9.0, 9.01, 10.5, 11.5, 17.0, 35.0]
    signals = [(rng.standard_normal(int(s * SR)) * 0.1).astype(np.float32) for s in lengths]
    res = ours([Utterance(str(s), x, SR) for s, x in zip(lengths, signals, strict=True)])
    for s, x, r in zip(lengths, signals, res, strict=True):
        ref = sm.run(x, sr=SR)
        for key, ref_key in OUTPUTS.items():
            assert r.values[key] == pytest.approx(float(ref[ref_key]), abs=1e-4), (s, key)


@pytest.mark.slow
@pytest.mark.parametrize("personalized", [False, True])
def test_shared_convolutions_equal_the_whole_model(speech, personalized: bool) -> None:
    """Windows scored through the split model equal the ONNX model run on each window: one
    window, overlapping windows of a doubled clip, a long clip split into groups, and doubled
    clips whose length is a whole number of frames (one pass over a period serves all)."""
    import onnxruntime as ort

    metric = DNSMOS(num_threads=2, personalized=personalized, batch_size=3)
    metric.load()
    sub = "pdnsmos_models" if personalized else "dnsmos_models"
    whole = ort.InferenceSession(
        os.path.join(os.path.dirname(sm.__file__), sub, "sig_bak_ovr.onnx"),
        providers=["CPUExecutionProvider"],
    )
    rng = np.random.default_rng(3)
    long = np.concatenate([speech(i) for i in range(6)])
    long = long + 0.01 * rng.standard_normal(long.size).astype(np.float32)
    cases = {  # samples: (windows per group, or [] for one periodic pass), windows
        10 * SR + 37: ([1], 1),
        int(3.7 * SR) + 37: ([3, 2], 5),
        int(16.5 * SR): ([3, 3, 1], 7),
        int(3.7 * SR): ([], 5),
        int(0.31 * SR): ([], 1),
        int(8.99 * SR): ([], 7),
        5 * SR: ([], 1),
        160: ([], 1),  # periods shorter than the edge
        480: ([], 6),
    }
    for n, (sizes, windows) in cases.items():
        audio, starts, period = plan_clip(long[:n])
        assert len(starts) == windows and period == (0 if sizes else n)
        groups = group_windows(starts, 3) if sizes else [starts]
        assert [len(g) for g in groups] == (sizes or [windows])
        ours = np.concatenate([metric._primary.raw(audio, g, period) for g in groups])
        ref = whole.run(None, {"input_1": np.stack([audio[s : s + WINDOW] for s in starts])})[0]
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5, err_msg=str(n))


def test_group_windows() -> None:
    assert group_windows([0, SR, 2 * SR, 3 * SR], 2) == [[0, SR], [2 * SR, 3 * SR]]
    # windows that do not overlap share nothing (fast mode on a long clip)
    assert group_windows([0, 10 * SR, 11 * SR], 8) == [[0], [10 * SR, 11 * SR]]


def test_window_starts() -> None:
    assert window_starts(int(2.76 * SR)) == (int(2.76 * SR) * 4, [0, SR])
    assert window_starts(WINDOW) == (WINDOW, [0])
    # 17 s: 8 hops, but the 8th window's float end is one sample short, so the script drops it.
    total, starts = window_starts(17 * SR)
    assert total == 17 * SR and starts == [i * SR for i in range(7)]
    with pytest.raises(ValueError):
        window_starts(0)


def test_options_and_settings() -> None:
    assert DNSMOS().settings() == {"personalized": False, "mode": "exact"}
    fast = build_metric("dnsmos", mode="fast", fast_windows=2, personalized=True)
    assert isinstance(fast, DNSMOS)
    assert fast.settings() == {"personalized": True, "mode": "fast", "fast_windows": 2}
    assert DNSMOS(batch_size=2, num_threads=1).settings() == DNSMOS().settings()
    with pytest.raises(ValueError):
        DNSMOS(mode="slow")


def test_empty_clip_is_an_error_result(metrics) -> None:
    (r,) = metrics[False]([Utterance("empty", np.zeros(0, np.float32), SR)])
    assert not r.ok and "empty" in r.error


def test_missing_speechmos_is_unavailable(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "speechmos" else real(name, *a),
    )
    with pytest.raises(MetricUnavailable, match=r"pip install speechmos==0\.0\.1\.1"):
        DNSMOS().load()


def test_onnx_sessions_do_not_spin_when_idle() -> None:
    # spinning worker threads would hold a core while the other metrics or the policy run
    from sealign.utils.threads import ort_session_options

    opts = ort_session_options(3)
    assert opts.intra_op_num_threads == 3
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
