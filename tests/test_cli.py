"""The command line: KEY=VALUE overrides among the options."""

import pytest

from sealign.cli import build_parser, parse_command_line


def test_overrides_on_both_sides_of_an_option_keep_their_order():
    argv = ["gspo", "--config", "c.yaml", "max_steps=40", "eval.steps=4", "--output", "o",
            "reward.components=[{metric: dnsmos, output: ovrl}]", "max_steps=3"]  # fmt: skip
    args = parse_command_line(build_parser(), argv)
    assert args.config == "c.yaml" and args.output == "o"
    assert args.overrides == [
        "max_steps=40", "eval.steps=4", "reward.components=[{metric: dnsmos, output: ovrl}]",
        "max_steps=3",
    ]  # fmt: skip


def test_an_option_value_that_looks_like_an_override_stays_the_options():
    argv = ["eval", "--model", "m", "--sweep", "dereverb=none,wpe", "baseline=x", "--output", "o",
            "enhance.top_k=5"]  # fmt: skip
    args = parse_command_line(build_parser(), argv)
    assert args.sweep == "dereverb=none,wpe"
    assert args.overrides == ["baseline=x", "enhance.top_k=5"]


@pytest.mark.parametrize(
    "argv",
    [
        ["gspo", "--output", "o", "a=1", "--bogus", "3"],  # an unknown option
        ["gspo", "--output", "o", "a=1", "--max-steps", "2", "stray"],  # not KEY=VALUE
        ["metrics", "a=1"],  # a command without overrides
    ],
)
def test_anything_else_left_over_is_still_an_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_command_line(build_parser(), argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_metric_device_flags_name_their_config_keys(tmp_path, capsys):
    from sealign.cli import main

    assert main(["gspo", "--output", str(tmp_path / "g"), "--metric-device", "gpu"]) == 2
    assert "reward.metric_device: 'gpu' is not a device" in capsys.readouterr().err
    assert main(["eval", "--output", str(tmp_path / "e"), "--metric-device", "gpu"]) == 2
    assert "metric_device: 'gpu' is not a device" in capsys.readouterr().err


def test_a_folder_holding_another_kind_of_settings_is_refused_however_many_keys_they_share(
    tmp_path,
):
    from dataclasses import dataclass

    from sealign.commands.common import check_same_job
    from sealign.config import save_config

    @dataclass
    class TrainSettings:
        lr: float = 1e-3
        seed: int = 0

    @dataclass
    class OtherSettings:  # the same keys (SFT and DPO share 13)
        lr: float = 1e-3
        seed: int = 0

    save_config(TrainSettings(), tmp_path / "config.yaml")
    check_same_job(tmp_path, TrainSettings(lr=0.1))  # its own run, other values: fine
    with pytest.raises(ValueError, match="holds TrainSettings settings, this command's are Other"):
        check_same_job(tmp_path, OtherSettings())
    # a config.yaml of an older version names no kind: its keys decide
    (tmp_path / "config.yaml").write_text("lr: 0.001\nseed: 0\n")
    check_same_job(tmp_path, OtherSettings())


def test_every_overrides_example_in_help_is_a_key_of_its_command():
    import argparse
    import dataclasses
    import re
    import typing

    from sealign.cli import build_parser
    from sealign.commands.codec import CodecTrainConfig
    from sealign.commands.data import DegradeConfig
    from sealign.commands.data_synth import DataDemoConfig, SynthConfig
    from sealign.commands.demo import DemoConfig
    from sealign.commands.enhance import EnhanceRunConfig
    from sealign.commands.eval import EvalRunConfig
    from sealign.commands.listen import AnalyzeConfig
    from sealign.eval.listening import ListeningConfig
    from sealign.eval.score import ScoreConfig
    from sealign.prefs.ablation import AblationConfig
    from sealign.prefs.build import PrefsConfig
    from sealign.rl.dpo import DPOConfig
    from sealign.rl.gspo import GSPOConfig
    from sealign.train.sft import SFTConfig

    classes = {
        "codec train": CodecTrainConfig, "data degrade": DegradeConfig,
        "data synth": SynthConfig, "data demo": DataDemoConfig, "demo": DemoConfig,
        "enhance": EnhanceRunConfig, "eval": EvalRunConfig, "listen make": ListeningConfig,
        "listen analyze": AnalyzeConfig, "pref-ablation": AblationConfig, "prefs": PrefsConfig,
        "score": ScoreConfig, "dpo": DPOConfig, "gspo": GSPOConfig, "train": SFTConfig,
    }  # fmt: skip

    def has_key(cls, dotted):
        for part in dotted.split("."):
            if not dataclasses.is_dataclass(cls):
                return typing.get_origin(cls) is dict  # any key of a mapping
            hints = typing.get_type_hints(cls)
            if part not in hints:
                return False
            cls = hints[part]
        return True

    def walk(parser, path):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    yield from walk(sub, [*path, name])
            elif a.dest == "overrides":
                yield " ".join(path), re.search(r"e\.g\. (\S+?)=", a.help).group(1)

    found = dict(walk(build_parser(), []))
    assert set(classes) == set(found), set(found) ^ set(classes)
    for cmd, key in found.items():
        assert has_key(classes[cmd], key), (cmd, key)
