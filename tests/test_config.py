from dataclasses import dataclass, field

import pytest

from sealign.config import ConfigError, load_config, save_config


@dataclass
class Optim:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])


@dataclass
class Cfg:
    name: str = "x"
    steps: int = 10
    optim: Optim = field(default_factory=Optim)
    extra: dict[str, dict] = field(default_factory=dict)
    path: str | None = None


def test_yaml_then_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: 20\noptim:\n  lr: 0.1\n")
    cfg = load_config(Cfg, y, ["optim.lr=1e-5", "extra.wer.asr=pocketsphinx", "path=null"])
    assert cfg.steps == 20 and cfg.optim.lr == 1e-5 and cfg.optim.betas == [0.9, 0.99]
    assert cfg.extra == {"wer": {"asr": "pocketsphinx"}} and cfg.path is None
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Cfg, tmp_path / "out.yaml") == cfg


@pytest.mark.parametrize(
    "override,msg",
    [
        ("optim.lrr=1", "unknown config key optim.lrr"),
        ("steps=ten", "steps: expected an integer"),
        ("optim.betas=[a]", r"optim.betas\[0\]: expected a number"),
        ("novalue", "not of the form key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(Cfg, None, [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, tmp_path / "none.yaml")
    (tmp_path / "b.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Cfg, tmp_path / "b.yaml")


def test_a_bad_key_of_a_config_file_names_the_file(tmp_path):
    from sealign.config import ConfigError, load_config
    from sealign.train.sft import SFTConfig

    f = tmp_path / "run.yaml"
    f.write_text("max_step: 3\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown config key max_step"):
        load_config(SFTConfig, f, ["output_dir=/tmp/x"])
    f.write_text("max_steps: 3\n")
    with pytest.raises(ConfigError, match=r"^unknown config key max_stepz"):  # an override's
        load_config(SFTConfig, f, ["max_stepz=1"])
