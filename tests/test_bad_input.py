"""Bad input and damaged files give clear errors or logged skips, not tracebacks or silent
wrong results (paths read as YAML, colliding ids, mismatched references, damaged caches...)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sealign.cli import main
from sealign.commands.common import flag, prepare_run_dir
from sealign.commands.demo import shipped_checkpoint
from sealign.config import ConfigError, from_dict_strict, load_config
from sealign.data.importers import file_ids
from sealign.eval.score import ScoreConfig
from sealign.metrics.base import Utterance
from sealign.metrics.cache import open_score_cache
from sealign.metrics.registry import build_metric
from sealign.models.ar import ARConfig
from sealign.models.registry import load_policy
from sealign.rl.dpo import read_pairs
from sealign.utils.device import check_device


@pytest.mark.parametrize("value", ["runs/a #2", "yes", "[x", "null", "a: b", "!abc", "1e-5"])
def test_flag_values_reach_the_config_unchanged(value):
    cfg = load_config(ScoreConfig, None, [flag("cache", value)])
    assert cfg.cache == value


def test_a_broken_yaml_override_names_its_key():
    with pytest.raises(ConfigError, match="threads: '\\[1,' is not a valid YAML value"):
        load_config(ScoreConfig, None, ["threads=[1,"])


def test_section_errors_do_not_end_in_a_dot():
    from sealign.commands.enhance import EnhanceRunConfig

    with pytest.raises(ConfigError, match=r"^enhance: "):
        load_config(EnhanceRunConfig, None, ["enhance.remix=2"])


@pytest.mark.parametrize(
    ("override", "key"),
    [("metrics=[]", "metrics"), ("max_duration=0", "max_duration"), ("min_duration=-1", "min")],
)
def test_score_settings_that_make_no_sense_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(ScoreConfig, None, [override])


def test_files_sharing_a_stem_keep_their_extension_in_the_id(tmp_path):
    files = [tmp_path / "a.wav", tmp_path / "a.flac", tmp_path / "sub" / "b.wav"]
    assert file_ids(files, tmp_path) == ["a.wav", "a.flac", "sub/b"]


def test_intrusive_metrics_skip_a_reference_of_another_length():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(32000).astype(np.float32) * 0.1
    close = Utterance("close", ref[:31000], 16000, reference=ref)  # 62.5 ms shorter: trimmed
    far = Utterance("far", ref[:16000], 16000, reference=ref)
    res = build_metric("si_sdr").score_batch([close, far])
    assert res[0].ok and res[0].values["si_sdr"] > 40
    assert res[1].skipped is not None and "differ by 1.000 s" in res[1].skipped
    strict = build_metric("si_sdr", max_length_mismatch=0.01).score_batch([close])
    assert strict[0].skipped is not None


def test_wer_skips_a_text_without_words():
    audio = np.zeros(16000, np.float32)
    res = build_metric("wer").score_batch([Utterance("p", audio, 16000, text="...!?")])
    assert res[0].skipped == "text has no words"


def test_damaged_score_cache_is_left_out_with_a_warning(tmp_path, caplog):
    bad = tmp_path / "scores.sqlite"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    blocked = tmp_path / "file" / "scores.sqlite"
    (tmp_path / "file").write_text("x")
    with caplog.at_level(logging.WARNING, logger="sealign"):
        assert open_score_cache(bad) is None
        assert open_score_cache(blocked) is None
    assert str(bad) in caplog.text and "scoring without it" in caplog.text
    assert open_score_cache(None) is None
    good = open_score_cache(tmp_path / "ok.sqlite")
    assert good is not None
    good.close()


def test_device_strings_are_checked():
    check_device("cpu")
    with pytest.raises(ValueError, match="device"):
        check_device("banana")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            check_device("cuda:0", key="enhance.device")


def test_output_that_is_a_file_is_an_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        prepare_run_dir(tmp_path / "afile", ScoreConfig())
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "u.wav", np.full(16000, 0.1, np.float32), 16000)
    args = ["score", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "afile")]
    assert main([*args, "--metrics", "si_sdr", "threads=1"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_damaged_checkpoint_files_are_named(tmp_path):
    src = shipped_checkpoint("ar")
    folder = tmp_path / "ar"
    shutil.copytree(src, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors: cannot read the weights"):
        load_policy(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: invalid JSON"):
        load_policy(folder)


def test_config_json_scalars_are_type_checked():
    with pytest.raises(ValueError, match="AR config: dim: expected an integer"):
        from_dict_strict(ARConfig, {"dim": "x"}, "AR")


def test_damaged_pair_lines_are_named(tmp_path):
    path = tmp_path / "unanimous.jsonl"
    path.write_text('{"input_id": "a", "winner": "c0", "loser": "c1"}\n{"input_id": "b", "win\n')
    with pytest.raises(ValueError, match=r"unanimous.jsonl:2: not a pair record"):
        read_pairs(Path(path))
    path.write_text('{"input_id": "a", "winner": 3, "loser": "c1"}\n')
    with pytest.raises(ValueError, match=r":1: .*string input_id"):
        read_pairs(path)


def test_sampler_option_values_are_type_checked_before_work():
    from sealign.models.policy import check_sample_options

    class Sampler:
        def sample(self, cond, temperature: float = 1.0, generator=None, steps: int = 8):
            raise AssertionError("never called")

    check_sample_options(Sampler(), {"steps": 4}, "enhance.extra")
    with pytest.raises(ValueError, match="enhance.extra.steps: expected an integer"):
        check_sample_options(Sampler(), {"steps": "abc"}, "enhance.extra")


def test_an_unusable_reference_only_skips_the_metrics_that_need_it(tmp_path):
    from sealign.data.manifest import Entry
    from sealign.eval.score import score_entries

    sf.write(tmp_path / "out.wav", np.random.default_rng(0).normal(0, 0.1, 16000), 16000)
    (tmp_path / "ref.wav").write_bytes(b"not audio")
    entry = Entry("u", str(tmp_path / "out.wav"), reference=str(tmp_path / "ref.wav"))
    cfg = ScoreConfig(metrics=["dnsmos", "si_sdr"], threads=1, cache=None)
    (rec,) = score_entries([entry], cfg, progress=False)
    assert "dnsmos_ovrl" in rec["scores"] and "si_sdr" not in rec["scores"]
    assert rec["skipped"]["si_sdr"] == "no reference" and "reference" in rec["errors"]
