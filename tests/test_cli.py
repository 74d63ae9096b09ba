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
