"""The Metric contract: skip reasons, error isolation, registry, cache."""

import dataclasses

import numpy as np
import pytest
import torch

from sealign.metrics import Metric, MetricInfo, Utterance, build_metric, metric_names, register
from sealign.metrics.cache import ScoreCache, cache_key, score_with_cache
from sealign.metrics.registry import metric_class, metric_info


class Energy(Metric):
    info = MetricInfo(
        "energy", ("energy",), (True,), ((0.0, 1.0),), sample_rate=8000, needs_text=True
    )
    calls = 0

    def _score(self, utts):
        Energy.calls += len(utts)
        out = []
        for u in utts:
            if u.text == "boom":
                raise RuntimeError("kaboom")
            assert u.sample_rate == 8000
            out.append({"energy": float(np.mean(u.audio**2))})
        return out


def _utt(i, text="hi", n=1600):
    x = np.random.default_rng(i).standard_normal(n).astype(np.float32) * 0.1
    return Utterance(f"u{i}", x, 16000, text=text)


def test_skip_and_isolated_failure():
    res = Energy().score_batch([_utt(0), _utt(1, text=None), _utt(2, text="boom"), _utt(3)])
    assert res[0].ok and res[3].ok
    assert res[1].skipped == "no text"
    assert "kaboom" in res[2].error
    # white noise resampled 16 kHz -> 8 kHz keeps half its power
    assert res[0].values["energy"] == pytest.approx(0.005, rel=0.2)


def test_non_finite_output_is_an_error():
    class Bad(Energy):
        def _score(self, utts):
            return [{"energy": float("nan")} for _ in utts]

    (r,) = Bad().score_batch([_utt(0)])
    assert r.error and "non-finite" in r.error


def test_registry_lists_builtins_and_user_metrics(monkeypatch):
    from sealign.metrics import registry

    monkeypatch.setattr(registry, "_USER", dict(registry._USER))  # registered here, gone after
    names = metric_names()
    for n in (
        "dnsmos",
        "distillmos",
        "wer",
        "spk_sim",
        "speechbertscore",
        "pesq_wb",
        "nisqa",
        "utmos",
    ):
        assert n in names
    with pytest.raises(ValueError, match="declares MetricInfo.name='energy'.; register it under"):
        register("energy_test", Energy)  # the cache and the columns go by the declared name
    with pytest.raises(ValueError, match="'dnsmos' is built in"):
        register("dnsmos", Energy)

    def energy_class(kind):
        class EnergyTest(Energy):
            info = dataclasses.replace(Energy.info, name="energy_test2", description=kind)

        return EnergyTest

    register("energy_test2", energy_class("first"))
    assert isinstance(build_metric("energy_test2"), Energy)
    register("energy_test2", energy_class("again"))  # the same class defined again: a notebook
    assert metric_info("energy_test2").description == "again"

    class Other(Energy):
        info = dataclasses.replace(Energy.info, name="energy_test2")

    with pytest.raises(ValueError, match="already registered .* pass replace=True"):
        register("energy_test2", Other)
    register("energy_test2", Other, replace=True)
    assert metric_class("energy_test2") is Other
    register("energy_test3", lambda **kw: Energy(**kw), replace=True)
    with pytest.raises(ValueError, match="already registered"):  # lambdas are all "<lambda>"
        register("energy_test3", lambda **kw: Energy(**kw))
    assert metric_info("energy_test3") is Energy.info  # a factory's metric tells it
    with pytest.raises(KeyError, match="unknown metric"):
        build_metric("nope")


def test_cache_hit_returns_identical_values(tmp_path):
    cache = ScoreCache(tmp_path / "c.sqlite")
    m = Energy()
    utts = [_utt(0), _utt(1), _utt(2, text="boom")]
    Energy.calls = 0
    first = score_with_cache(m, utts, cache)
    n_calls = Energy.calls
    second = score_with_cache(m, utts, cache)
    assert [r.to_json() for r in first[:2]] == [r.to_json() for r in second[:2]]
    assert Energy.calls == n_calls + 1  # only the failed one is retried: errors are not cached
    assert cache.hits == 2
    # text is read by this metric, so it is part of the key; a different signal is a miss
    assert cache_key(m, _utt(0)) != cache_key(m, _utt(0, text="other"))
    assert cache_key(m, _utt(0)) != cache_key(m, _utt(5))


def test_torch_threads_restores_the_callers_count():
    import torch

    from sealign.utils.threads import torch_threads

    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_scoring_distillmos_leaves_the_trainers_torch_threads_alone():
    import torch

    from sealign.metrics.distillmos import DistillMOS

    before = torch.get_num_threads()
    m = DistillMOS(num_threads=before + 1)
    m.load()
    rng = np.random.default_rng(0)
    out = m([Utterance("a", 0.1 * rng.standard_normal(8000).astype(np.float32), 16000)])
    assert out[0].ok
    assert torch.get_num_threads() == before


def test_metrics_list_names_the_weights_users_must_give(monkeypatch, capsys):
    from sealign.cli import main

    monkeypatch.delenv("SEALIGN_UTMOS_CKPT", raising=False)
    monkeypatch.setenv("SEALIGN_NISQA_WEIGHTS", "/somewhere/nisqa.tar")
    assert main(["metrics"]) == 0
    rows = {r.split("|")[1].strip(): r for r in capsys.readouterr().out.splitlines()[2:]}
    assert "metric_options.utmos.checkpoint or $SEALIGN_UTMOS_CKPT (not set)" in rows["utmos"]
    assert "metric_options.nisqa.weights or $SEALIGN_NISQA_WEIGHTS (set)" in rows["nisqa"]
    assert "metric_options.lps.model |" in rows["lps"]
    assert "| installed |" in rows["dnsmos"] and "| installed |" in rows["pesq_wb"]
    assert "| installed |" in rows["distillmos"] and "| installed |" in rows["spk_sim"]


def test_metrics_list_names_packages_installed_apart(monkeypatch, capsys):
    """distillmos and resemblyzer are installed with --no-deps, apart from sealign's own
    dependencies: without them the list says so instead of 'installed'."""
    import importlib.util

    from sealign.cli import main

    find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda m, *a: None if m == "xls_r_sqa" else find(m, *a)
    )
    assert main(["metrics"]) == 0
    rows = {r.split("|")[1].strip(): r for r in capsys.readouterr().out.splitlines()[2:]}
    want = "| missing Python package xls_r_sqa: pip install --no-deps distillmos==0.9.1 xls-r-sqa"
    assert want in rows["distillmos"]
    assert "| installed |" in rows["spk_sim"]


def test_references_are_resampled_once_from_their_own_rate(tmp_path):
    import soundfile as sf

    from sealign.audio.io import AudioLimits, resample
    from sealign.data.manifest import Entry
    from sealign.eval.score import entry_to_utterance

    rng = np.random.default_rng(0)
    ref = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    out = resample(ref + 0.01 * rng.standard_normal(16000).astype(np.float32), 16000, 48000)
    sf.write(tmp_path / "ref.wav", ref, 16000)
    sf.write(tmp_path / "out.wav", out, 48000)
    e = Entry("u", str(tmp_path / "out.wav"), reference=str(tmp_path / "ref.wav"))
    utt, problems = entry_to_utterance(e, AudioLimits())
    assert not problems and utt.sample_rate == 48000 and utt.reference_rate == 16000
    assert utt.seconds("reference") == pytest.approx(utt.seconds()) == pytest.approx(1.0)
    at16 = utt.at_rate(16000)
    stored = sf.read(tmp_path / "ref.wav", dtype="float32")[0]
    np.testing.assert_array_equal(at16.reference, stored)  # not up to 48 kHz and down again
    assert at16.reference_rate is None and at16.audio.size == 16000
    # the cache tells this reference from the same samples at the audio's rate
    m = build_metric("si_sdr")
    same_rate = Utterance("u", utt.audio, 48000, reference=utt.reference)
    assert cache_key(m, utt) != cache_key(m, same_rate)


def test_unusable_audio_is_an_error_of_the_metrics_that_read_it():
    class Probe(Metric):
        info = MetricInfo("probe", ("x",), (True,), ((0.0, 1.0),))

        def _score(self, utts):
            return [{"x": 0.5} for _ in utts]

    x = (0.1 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32)
    bad = x.copy()
    bad[5] = np.nan
    si = build_metric("si_sdr")
    r = si.score_batch([Utterance("a", bad, 16000, reference=x),
                        Utterance("b", np.zeros_like(x), 16000, reference=x),
                        Utterance("c", x, 16000, reference=x)])  # fmt: skip
    assert r[0].error == "audio holds NaN or inf"
    assert r[1].error == "digitally silent audio (every sample 0)" and r[2].values
    # a damaged reference does not stop a metric that does not read it
    assert Probe().score_batch([Utterance("d", x, 16000, reference=bad)])[0].values == {"x": 0.5}


def test_utterances_refuse_integer_and_multichannel_audio_and_take_tensors():
    x = np.sin(np.arange(1600) / 5).astype(np.float32)
    with pytest.raises(TypeError, match=r"u: audio holds integer samples \(int16\); pass float"):
        Utterance("u", (x * 32767).astype(np.int16), 16000)
    with pytest.raises(
        ValueError, match=r"u: reference must be mono and 1-D, got shape \(1600, 2\)"
    ):
        Utterance("u", x, 16000, reference=np.stack([x, x], axis=1))
    with pytest.raises(TypeError, match="speaker_ref must hold float samples, not bool"):
        Utterance("u", x, 16000, speaker_ref=x > 0)
    u = Utterance("u", torch.from_numpy(x), 16000, reference=list(x))
    assert isinstance(u.audio, np.ndarray) and np.array_equal(u.audio, x)
    assert isinstance(u.reference, np.ndarray) and u.reference.shape == (1600,)


def test_loading_a_metric_leaves_torch_random_stream_alone():
    torch.manual_seed(0)
    want = torch.rand(4)
    torch.manual_seed(0)
    m = build_metric("distillmos", num_threads=1)
    m.load()  # builds a randomly initialized model before loading its weights
    assert torch.equal(torch.rand(4), want)
