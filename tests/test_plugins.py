"""User extensions: plugin modules for metrics and codecs, and the guards around them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sealign import plugins
from sealign.cli import main
from sealign.codecs import base as codec_base
from sealign.codecs import load_codec, register_codec
from sealign.eval.score import ScoreConfig
from sealign.metrics import Metric, MetricInfo
from sealign.metrics import registry as metric_registry
from sealign.models.ar import ARConfig, ARPolicy
from sealign.models.persist import codec_kind
from sealign.models.registry import load_policy

PLUGIN = """
import numpy as np
from sealign.metrics import Metric, MetricInfo, register


class Loudness(Metric):
    info = MetricInfo("loudness", ("loudness",), (True,), ((-100.0, 0.0),))

    def _score(self, utts):
        return [{"loudness": float(10 * np.log10(np.mean(u.audio**2) + 1e-12))} for u in utts]


register("loudness", Loudness)
"""


@pytest.fixture
def clean_registries(monkeypatch):
    monkeypatch.setattr(metric_registry, "_USER", {})
    monkeypatch.setattr(codec_base, "_USER_KINDS", {})
    monkeypatch.setattr(plugins, "_loaded", [])


def test_plugin_from_env_adds_a_metric_to_the_cli(tmp_path, monkeypatch, clean_registries):
    (tmp_path / "plug_loudness.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV_VAR, " plug_loudness , ")
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for i, amp in enumerate((0.1, 0.01)):
        t = np.arange(16000) / 16000
        sf.write(wavs / f"u{i}.wav", (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    out = tmp_path / "out"
    args = ["score", "--input", str(wavs), "--output", str(out), "--metrics", "loudness"]
    assert main([*args, "--no-cache", "threads=1"]) == 0
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    got = {r["id"]: r["scores"]["loudness"] for r in rows}
    # a sine of amplitude a has power a²/2
    assert got["u0"] == pytest.approx(10 * np.log10(0.1**2 / 2), abs=0.05)
    assert got["u0"] - got["u1"] == pytest.approx(20.0, abs=0.05)
    assert plugins.load_plugins() == ["plug_loudness"]  # imported once


def test_missing_plugin_stops_the_command_naming_it(monkeypatch, capsys, clean_registries):
    monkeypatch.setenv(plugins.ENV_VAR, "no_such_sealign_plugin")
    assert main(["metrics"]) == 2
    err = capsys.readouterr().err
    assert "no_such_sealign_plugin" in err and "PYTHONPATH" in err


class ToyCodec:
    """One codebook of 16 frame-energy levels at 50 Hz; decodes to noise of that energy."""

    sample_rate = 16000
    frame_rate = 50.0
    num_codebooks = 1
    codebook_size = 16
    hop = 320

    def __init__(self, floor_db: float = -60.0) -> None:
        self.floor_db = floor_db

    def encode(self, wavs):
        items, single = codec_base.split_batch(wavs, 1)
        out = []
        for w in items:
            frames = np.asarray(w)[: len(w) // self.hop * self.hop].reshape(-1, self.hop)
            db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
            out.append(np.clip((db - self.floor_db) / 4, 0, 15).astype(np.int64)[None])
        return codec_base.join_batch(out, single)

    def decode(self, tokens):
        items, single = codec_base.split_batch(tokens, 2)
        rng = np.random.default_rng(0)
        out = []
        for t in items:
            amp = 10 ** ((t[0] * 4 + self.floor_db) / 20)
            out.append(np.repeat(amp, self.hop) * rng.standard_normal(t.shape[1] * self.hop))
        return codec_base.join_batch([o.astype(np.float32) for o in out], single)

    def save(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps({"floor_db": self.floor_db}))
        return directory

    @classmethod
    def load(cls, location, **options):
        cfg = json.loads((Path(location) / "config.json").read_text())
        return cls(**{**cfg, **options})


def test_registered_codec_builds_from_a_spec_and_reloads_with_a_policy(tmp_path, clean_registries):
    with pytest.raises(ValueError, match="not a registered codec kind"):
        codec_kind(ToyCodec())
    register_codec("toycodec", ToyCodec)
    with pytest.raises(ValueError, match="already registered"):
        register_codec("toycodec", ToyCodec)
    with pytest.raises(ValueError, match="lowercase"):
        register_codec("Toy:Codec", ToyCodec)
    ToyCodec(-50.0).save(tmp_path / "toy")
    codec = load_codec(f"toycodec:{tmp_path / 'toy'}")
    assert isinstance(codec, ToyCodec) and codec.floor_db == -50.0
    assert codec_kind(codec) == ("toycodec", {})

    torch.manual_seed(0)
    cfg = ARConfig.for_codec(codec, dim=16, layers=1, heads=2, features={"n_mels": 20})
    policy = ARPolicy(codec, cfg).eval()
    policy.save(tmp_path / "policy")
    again = load_policy(tmp_path / "policy")
    assert isinstance(again.codec, ToyCodec) and again.codec.floor_db == -50.0
    for k, v in policy.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


def test_unknown_codec_kind_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown codec kind 'nope'.*world"):
        load_codec("nope:/x")


def test_score_cache_lives_under_the_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SEALIGN_CACHE", str(tmp_path))
    assert ScoreConfig().cache == str(tmp_path / "scores.sqlite")


def test_requirements_declared_outside_metric_info_are_refused():
    with pytest.raises(TypeError, match="MetricInfo"):

        class RefRatio(Metric):  # noqa: F841 - defining it is the test
            info = MetricInfo("ref_ratio", ("r",), (True,), ((0.0, 1.0),))
            needs_reference = True


def test_entry_point_plugins_are_imported(tmp_path, monkeypatch, clean_registries):
    from importlib.metadata import EntryPoint

    (tmp_path / "plug_ep.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    eps = [EntryPoint(name="lab", value="plug_ep", group=plugins.GROUP)]
    monkeypatch.setattr(
        plugins, "entry_points", lambda group: eps if group == plugins.GROUP else []
    )
    assert plugins.load_plugins() == ["plug_ep"]
    assert "loudness" in metric_registry.metric_names()


def test_entry_point_functions_are_called_and_broken_plugins_named(
    tmp_path, monkeypatch, capsys, clean_registries
):
    from importlib.metadata import EntryPoint

    body = textwrap.dedent(PLUGIN).replace('register("loudness", Loudness)', "")
    (tmp_path / "plug_fn.py").write_text(
        body + '\n\ndef register_all():\n    register("loudness", Loudness)\n'
    )
    (tmp_path / "plug_broken.py").write_text("x = undefined_name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    eps = [EntryPoint(name="lab", value="plug_fn:register_all", group=plugins.GROUP)]
    monkeypatch.setattr(
        plugins, "entry_points", lambda group: eps if group == plugins.GROUP else []
    )
    plugins.load_plugins()
    assert "loudness" in metric_registry.metric_names()  # the function registered it
    monkeypatch.setenv(plugins.ENV_VAR, "plug_broken")
    assert main(["metrics"]) == 2
    assert (
        "plugin plug_broken: importing 'plug_broken' failed: NameError" in capsys.readouterr().err
    )


def test_metric_mistakes_are_named(clean_registries):
    class NoThreads(Metric):
        info = MetricInfo("no_threads_probe", ("x",), (True,), ((0.0, 1.0),))

        def __init__(self, floor: float = 0.1) -> None:
            super().__init__()

    class WrongKeys(Metric):
        info = MetricInfo("wrong_keys_probe", ("x",), (True,), ((0.0, 1.0),))

        def _score(self, utts):
            return [{"x_value": 0.5} for _ in utts]

    metric_registry.register("no_threads_probe", NoThreads)
    with pytest.raises(ValueError, match=r"add them, or \*\*kwargs, to its constructor"):
        metric_registry.build_metric("no_threads_probe", num_threads=1)
    from sealign.metrics import Utterance

    res = WrongKeys()([Utterance("u", np.ones(1600, np.float32) * 0.1, 16000)])
    assert res[0].error == "returned ['x_value'], none of its declared outputs ['x']"
