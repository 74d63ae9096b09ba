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
