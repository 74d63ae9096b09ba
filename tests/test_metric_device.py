"""Where metrics run: device strings, the CTranslate2 / onnxruntime mappings, early failure when
the machine lacks the device, and (on the ``meta`` device) that every torch metric moves its
model *and* its inputs to the device it was given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sealign.eval.score import ScoreConfig, build_metrics
from sealign.metrics import registry
from sealign.metrics.registry import build_metric, with_device
from sealign.rewards import RewardConfig
from sealign.utils.device import ct2_device, onnx_providers, parse_device

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
# metrics that run a model, and so take a device
MODEL_METRICS = [
    "dnsmos", "distillmos", "utmos", "nisqa", "nisqa_tts", "wer", "cer", "text_likelihood",
    "asr_confidence", "spk_sim", "speechbertscore", "lps",
]  # fmt: skip


def test_parse_device():
    for ok in ("cpu", "cuda", "cuda:3", "mps"):
        assert parse_device(ok) == ok
    for bad in ("gpu", "cuda:", "cuda:x", "CUDA", "", "xla:0"):
        with pytest.raises(ValueError, match="reward.metric_device"):
            parse_device(bad, "reward.metric_device")


def test_ct2_device(monkeypatch):
    import ctranslate2

    assert ct2_device("cpu") == ("cpu", 0)
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 2)
    assert ct2_device("cuda") == ("cuda", 0)
    assert ct2_device("cuda:1") == ("cuda", 1)
    with pytest.raises(ValueError, match="sees 2 CUDA device"):
        ct2_device("cuda:2")
    with pytest.raises(ValueError, match="cpu or cuda"):
        ct2_device("mps")
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
    with pytest.raises(ValueError, match="sees 0 CUDA device"):
        ct2_device("cuda")


def test_onnx_providers(monkeypatch):
    import onnxruntime as ort

    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        onnx_providers("cuda")
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert onnx_providers("cuda:1") == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    with pytest.raises(ValueError, match="cpu or cuda"):
        onnx_providers("mps")


def test_the_metrics_that_take_a_device_are_the_model_metrics():
    built_in = registry._BUILTIN  # user metrics registered by other tests do not count
    assert {n for n in built_in if registry.takes_device(n)} == set(MODEL_METRICS)


@NO_CUDA
@pytest.mark.parametrize("name", MODEL_METRICS)
def test_a_missing_gpu_fails_when_the_metric_is_built(name):
    with pytest.raises(ValueError, match=rf"metric '{name}': device: 'cuda'"):
        build_metric(name, num_threads=1, device="cuda")


def test_cpu_only_backends_refuse_a_gpu():
    with pytest.raises(ValueError, match="CPU only"):
        build_metric("wer", asr="pocketsphinx", device="cuda")
    with pytest.raises(ValueError, match="unknown option"):
        build_metric("pesq_wb", device="cuda")


def test_with_device_fills_in_only_where_a_metric_takes_one(monkeypatch):
    assert with_device("dnsmos", {"mode": "fast"}, "cuda:1") == {"mode": "fast", "device": "cuda:1"}
    assert with_device("dnsmos", {"device": "cpu"}, "cuda") == {"device": "cpu"}  # explicit wins
    assert with_device("dnsmos", {}, "cpu") == {}
    assert with_device("pesq_wb", {}, "cuda") == {}  # runs on the CPU whatever the setting

    from sealign.metrics.base import Metric, MetricInfo

    class OnDevice(Metric):
        info = MetricInfo("on_device_probe", ("x",), (True,), ((0.0, 1.0),))

        def __init__(self, num_threads: int = 2, device: str = "cpu") -> None:
            super().__init__(num_threads, device)

    monkeypatch.setitem(registry._USER, "on_device_probe", OnDevice)
    assert with_device("on_device_probe", {}, "cuda") == {"device": "cuda"}
    if not torch.cuda.is_available():  # a device the machine lacks: refused for any metric
        with pytest.raises(
            ValueError, match="metric 'on_device_probe': device: 'cuda:1' requested"
        ):
            build_metric("on_device_probe", metric_device="cuda:1")
        monkeypatch.setattr(registry, "check_device", lambda device: None)
    # build_metric takes the command-wide device the same way
    assert build_metric("on_device_probe", metric_device="cuda:1").device == "cuda:1"
    assert build_metric("on_device_probe", metric_device="cuda", device="cpu").device == "cpu"
    assert build_metric("pesq_wb", metric_device="cuda").device == "cpu"

    class NoModel(Metric):  # the README's plugin example: no constructor of its own
        info = MetricInfo("no_model_probe", ("x",), (True,), ((0.0, 1.0),))

    monkeypatch.setitem(registry._USER, "no_model_probe", NoModel)
    assert not registry.takes_device("no_model_probe")
    assert with_device("no_model_probe", {}, "cuda") == {}
    monkeypatch.undo()  # the real device check: a GPU the machine lacks is not asked for
    monkeypatch.setitem(registry._USER, "no_model_probe", NoModel)
    assert build_metric("no_model_probe", metric_device="cuda").device == "cpu"


@NO_CUDA
def test_configs_fail_before_any_work():
    with pytest.raises(ValueError, match="reward.metric_device"):
        RewardConfig(metric_device="gpu")
    with pytest.raises(ValueError, match="metric_device"):
        ScoreConfig(metrics=["dnsmos"], metric_device="cuda:x")
    # well-formed but absent: building the metrics (the first thing `score` / `eval` do) fails
    with pytest.raises(ValueError, match="metric 'dnsmos'"):
        build_metrics(ScoreConfig(metrics=["pesq_wb", "dnsmos"], metric_device="cuda"))
    from sealign.train.sft import EvalConfig, build_eval_metrics

    with pytest.raises(ValueError, match="eval.metric_device"):
        EvalConfig(metric_device="gpu").check()
    with pytest.raises(ValueError, match="metric 'dnsmos'"):  # SFT validation, built first
        build_eval_metrics(EvalConfig(metrics=["dnsmos"], metric_device="cuda"), threads=1)
    # metrics without a model stay on the CPU, so a GPU setting leaves them buildable
    assert list(build_metrics(ScoreConfig(metrics=["pesq_wb"], metric_device="cuda"))) == [
        "pesq_wb"
    ]


@pytest.mark.parametrize("seconds", [1.0, 9.0])  # the padded front end, and the whole model
def test_distillmos_runs_on_its_device(on_meta, seconds):
    m = build_metric("distillmos", num_threads=1)
    on_meta(m, lambda m: m.predict(np.random.default_rng(0).normal(0, 0.1, int(seconds * 16000))))


def test_resemblyzer_runs_on_its_device(on_meta, speech):
    m = build_metric("spk_sim", num_threads=1)
    on_meta(m, lambda m: (m.load(), m._embed(speech(0))))


def test_content_features_follow_the_policy_to_a_usable_gpu(monkeypatch, caplog):
    import ctranslate2

    from sealign.models.content import content_device

    content_device.cache_clear()
    try:
        assert content_device("cpu") == content_device("mps") == "cpu"
        monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 2)
        assert content_device("cuda:1") == "cuda:1"
        content_device.cache_clear()
        monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
        with caplog.at_level("WARNING"):
            assert content_device("cuda:1") == "cpu"
        assert "content features on the CPU" in caplog.text
    finally:
        content_device.cache_clear()
