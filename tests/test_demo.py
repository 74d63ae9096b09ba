"""`sealign demo` end to end on a tiny corpus and a tiny policy (the real run uses the shipped
checkpoint and the Kokoro demo corpus; see benchmarks and the README for its numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from sealign.cli import main
from sealign.commands.demo import add_reward_column, shipped_checkpoint
from sealign.config import shipped_configs
from sealign.metrics.registry import metric_info
from sealign.models.registry import load_policy
from sealign.report.html import markdown_table_to_html
from sealign.rl.gspo import GSPOConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tiny_setup):
    return tiny_setup


def test_demo_runs_end_to_end_and_writes_report(tiny, tmp_path, capsys):
    out = tmp_path / "demo"
    args = [
        "demo",
        "--output",
        str(out),
        "--device",
        "cpu",
        "--metric-device",
        "cpu",
        f"data={tiny}",
        f"checkpoint={tiny / 'base'}",
        "metrics=[si_sdr, estoi, wer]",
        "threads=1",
        "n_examples=2",
        "eval_samples=2",
        "gspo.max_steps=2",
        "gspo.sampling.group_size=2",
        "gspo.sampling.top_k=0",
        "gspo.sampling.temperature=0.8",
        "gspo.reward.components=[{metric: si_sdr}]",
        "gspo.eval.metrics=[si_sdr]",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "aligned" in printed and "Δ vs base" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["gspo"]["steps"] == 2 and res["test_utterances"] == 3
    assert (
        res["samples_per_utterance"] == 2 and (out / "scores" / "aligned_sample1.jsonl").is_file()
    )
    assert set(res["systems"]) == {"noisy", "base", "aligned", "base_learned_T", "clean"}
    # the base sampled at the learned temperature: what the weights add beside it
    learned = load_policy(out / "gspo" / "checkpoints" / "step_00000002" / "policy").logit_scale
    assert load_policy(out / "base_learned_T").logit_scale == learned != 0
    assert "aligned" in res["diff_vs_base_learned_T"]
    assert "Paired difference aligned - base_learned_T" in printed
    # held-out checks during GSPO sample at the temperature the test split is enhanced with
    gspo_cfg = yaml.safe_load((out / "gspo" / "config.yaml").read_text())
    assert gspo_cfg["eval"]["temperature"] == 0.8
    assert gspo_cfg["device"] == gspo_cfg["reward"]["metric_device"] == "cpu"
    # the sampling temperature is learned by probes
    assert gspo_cfg["temperature_optimizer"] == "probe" and gspo_cfg["temperature_lr"] > 0
    gspo_log = (out / "gspo" / "log.jsonl").read_text()
    assert gspo_log.count('"temperature_slope"') == gspo_log.count('"temperature_factor"') == 2
    assert res["diff_vs_base"]["aligned"]["reward"]["n"] == 3
    html = (out / "report" / "index.html").read_text()
    assert "reward_curves.png" in html and html.count("<audio") == 8
    assert html.count("whisper-base heard: ") == 8  # the WER metric's recognizer, per audio
    assert (out / "report" / "reward_curves.png").is_file()
    assert len(list((out / "report" / "audio").glob("*.wav"))) == 8
    key = json.loads((out / "listen" / "key.json").read_text())  # the blind A/B test
    assert key["kind"] == "ab" and len(key["trials"]) == 3
    assert all(sorted(t["codes"].values()) == ["aligned", "base"] for t in key["trials"].values())
    # a second run continues the finished GSPO run instead of starting over
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["gspo"]["steps"] == 2
    # the report is rebuilt beside the old one and swapped in whole
    assert sorted(p.name for p in out.glob("report*")) == ["report"]
    assert (out / "report" / "index.html").read_text().count("<audio") == 8


def test_a_base_without_a_temperature_trains_its_weights_alone(monkeypatch, tmp_path):
    import sealign.models.registry as registry
    from sealign.commands.demo import _demo_gspo, _without_temperature

    monkeypatch.setattr(registry, "load_policy", lambda *_a, **_k: object())  # no logit_scale
    g = _demo_gspo()
    _without_temperature(g, tmp_path)
    assert (g.temperature_lr, g.data.batch_size) == (0.0, 8)  # the same 32 samples a step
    g = _demo_gspo()
    g.data.batch_size = 16  # the user's batch stays
    _without_temperature(g, tmp_path)
    assert (g.temperature_lr, g.data.batch_size) == (0.0, 16)
    g = _demo_gspo()
    g.temperature_lr = 2.0  # the user's: kept, and GSPO refuses it with the reason
    _without_temperature(g, tmp_path)
    assert (g.temperature_lr, g.data.batch_size) == (2.0, 4)


def test_a_demo_run_from_before_the_learned_temperature_is_refused_at_once(tmp_path):
    from sealign.commands.demo import _check_continuable, _demo_gspo
    from sealign.train.checkpoint import _META, CHECKPOINT_DIR

    run = tmp_path / "gspo"
    _check_continuable(_demo_gspo(), run)  # nothing to continue
    ckpt = run / CHECKPOINT_DIR / "step_00000015"
    ckpt.mkdir(parents=True)
    (ckpt / _META).write_text("{}")
    (ckpt / "config.yaml").write_text("temperature_lr: 0.0\ntemperature_optimizer: sgd\n"
                                      "data:\n  batch_size: 8\n")  # fmt: skip
    with pytest.raises(ValueError, match=r"continue it with `gspo.temperature_lr=0.0 "
                                         r"gspo.data.batch_size=8`"):  # fmt: skip
        _check_continuable(_demo_gspo(), run)
    g = _demo_gspo()
    g.temperature_lr, g.data.batch_size = 0.0, 8
    _check_continuable(g, run)  # its own settings: continued


def test_replace_dir_swaps_whole_folders(tmp_path):
    from sealign.utils.paths import replace_dir

    dst, new = tmp_path / "report", tmp_path / "report.new"
    (dst / "a").mkdir(parents=True)
    (dst / "a" / "old.txt").write_text("old")
    (tmp_path / "report.old").mkdir()  # left by a crash between the two renames
    new.mkdir()
    (new / "index.html").write_text("new")
    assert replace_dir(new, dst) == dst
    assert [p.name for p in dst.iterdir()] == ["index.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_missing_checkpoint_is_a_clear_error(tiny, tmp_path, capsys):
    args = ["demo", "--output", str(tmp_path / "d"), f"data={tiny}", "checkpoint=/nope"]
    assert main(args) == 2
    assert "base checkpoint not found" in capsys.readouterr().err


def test_an_evaluation_metric_that_cannot_load_fails_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SEALIGN_UTMOS_CKPT", raising=False)
    data = tmp_path / "no_corpus_yet"
    args = ["demo", "--output", str(tmp_path / "d"), f"data={data}", "metrics=[pesq_wb, utmos]"]
    assert main(args) == 2
    assert "utmos: no checkpoint given" in capsys.readouterr().err
    assert not data.exists()  # neither the corpus nor GSPO ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_a_missing_gpu_fails_before_any_work(tmp_path, capsys):
    data = tmp_path / "no_corpus_yet"
    args = ["demo", "--output", str(tmp_path / "d"), f"data={data}", "--metric-device", "cuda"]
    assert main(args) == 2
    assert "device: 'cuda' requested" in capsys.readouterr().err
    assert not data.exists()  # the corpus was not built


def test_reward_column_matches_the_gspo_composite():
    cfg = GSPOConfig()  # dnsmos ovrl + wer + distillmos, equal weights
    infos = {m: metric_info(m) for m in ("dnsmos", "wer", "distillmos")}
    recs = [
        {"id": "a", "scores": {"dnsmos_ovrl": 3.0, "wer": 0.2, "distillmos": 4.0}},
        {"id": "b", "scores": {"dnsmos_ovrl": 2.0, "distillmos": 3.0}},  # no WER: not 0
    ]
    add_reward_column(recs, cfg, infos)
    assert recs[0]["scores"]["reward"] == pytest.approx((0.5 + 0.8 + 0.75) / 3)
    assert recs[1]["scores"]["reward"] == pytest.approx((0.25 + 0.5) / 2)


def test_report_shows_what_the_recognizer_heard(tmp_path):
    from sealign.report.html import Example, write_report

    fig = tmp_path / "f.png"
    fig.write_bytes(b"")
    ex = Example(
        "u1", fig, {"base": fig, "clean": fig}, "a cat", {"base": "a <hat>", "clean": ""}, "asr-x"
    )
    html = write_report(tmp_path / "index.html", "t", [], [], [ex]).read_text()
    assert "asr-x heard: <i>a &lt;hat&gt;</i>" in html and "asr-x heard: <i>(nothing)</i>" in html


def test_markdown_table_to_html():
    html = markdown_table_to_html("| a | b |\n|---|---|\n| x<1 | 2 |")
    assert html.count("<tr>") == 2 and "x&lt;1" in html and "<th>a</th>" in html


@pytest.mark.parametrize("family", ["ar", "mgm", "fm"])
def test_shipped_checkpoint_is_packaged(family):
    ckpt = shipped_checkpoint(family)
    if not (ckpt / "config.json").is_file():
        pytest.skip(f"the shipped {family} checkpoint is not built into this checkout yet")
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["family"] == family
    size = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    assert size <= 20_000_000  # the issues' budget: 20 MB, weights and codec together


CONFIGS = sorted(shipped_configs().values())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_parse(path):
    from sealign.config import load_config
    from sealign.rl.gspo import GSPOConfig
    from sealign.train.sft import SFTConfig

    cfg = load_config(GSPOConfig if path.name.startswith("gspo") else SFTConfig, path, [])
    assert cfg.max_steps > 0


def test_demo_gspo_settings_match_the_shipped_config():
    """configs/gspo_demo.yaml documents what `sealign demo` runs: the same GSPO settings."""

    from sealign.commands.demo import _demo_gspo
    from sealign.config import load_config, to_dict

    shipped = to_dict(load_config(GSPOConfig, "shipped:gspo_demo"))
    demo = to_dict(_demo_gspo())
    for key in ("sampling", "reward", "loss", "beta", "epsilon_low", "epsilon_high", "optim",
                "steps_per_generation", "max_steps", "temperature_lr", "temperature_optimizer",
                "temperature_probe"):  # fmt: skip
        assert shipped[key] == demo[key], key
    assert (shipped["data"]["batch_size"], shipped["data"]["max_seconds"]) == (
        demo["data"]["batch_size"],
        demo["data"]["max_seconds"],
    )


def test_the_demo_refuses_gspo_settings_it_sets_itself():
    from sealign.commands.demo import DemoConfig, _demo_gspo

    g = _demo_gspo()
    g.threads = 1  # the demo's own `threads` sets it: this one would be saved, not used
    with pytest.raises(ValueError, match="gspo.threads: the demo sets it"):
        DemoConfig(gspo=g)


def test_shipped_models_and_configs_are_named_without_a_path(tmp_path, monkeypatch):
    from sealign.config import ConfigError, config_file, load_config
    from sealign.models.registry import read_meta
    from sealign.models.shipped import model_path
    from sealign.train.checkpoint import policy_dir

    monkeypatch.chdir(tmp_path)  # as an installed package is used: away from the checkout
    assert model_path("shipped:fm") == shipped_checkpoint("fm")
    assert model_path("runs/x") == Path("runs/x")
    assert policy_dir("shipped:ar") == shipped_checkpoint("ar")
    assert read_meta("shipped:mgm")[1] == shipped_checkpoint("mgm")  # so load_policy takes it
    with pytest.raises(ValueError, match="no such shipped model; use one of shipped:ar"):
        model_path("shipped:tts")
    assert config_file("shipped:gspo_demo").name == "gspo_demo.yaml"
    assert load_config(GSPOConfig, "shipped:gspo_demo.yaml").model.init_from == "shipped:ar"
    with pytest.raises(ConfigError, match=r"package ships one by that name: --config shipped:gspo"):
        config_file("configs/gspo_demo.yaml")
    with pytest.raises(ConfigError, match="no such shipped config; there are: "):
        config_file("shipped:nope")


def test_the_whole_run_budget_shortens_gspo_only(caplog):
    from sealign.commands.demo import GSPO_OVERHEAD_MINUTES, DemoConfig, gspo_minutes

    cfg = DemoConfig()
    assert cfg.total_minutes == 20 and cfg.gspo.max_minutes == 6
    assert gspo_minutes(cfg, 60, 120) == 6  # plenty of time left: GSPO's own budget
    left = 20 - 10 - 3 - GSPO_OVERHEAD_MINUTES
    assert gspo_minutes(cfg, 600, 180) == pytest.approx(left)
    assert gspo_minutes(cfg, 1200, 180) == 1  # nothing left: the minimum, with a warning
    assert "ends late" in caplog.text
    assert gspo_minutes(DemoConfig(total_minutes=0), 1200, 180) == 6  # off
    short = DemoConfig()
    short.gspo.max_minutes = 0.5  # never raised to the minimum
    assert gspo_minutes(short, 1200, 180) == 0.5
    none = DemoConfig()
    none.gspo.max_minutes = 0  # max_steps ends GSPO: no budget is imposed
    assert gspo_minutes(none, 1200, 180) == 0
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="total_minutes"):
            DemoConfig(total_minutes=bad)


def test_a_continued_demo_keeps_the_budget_its_gspo_run_started_with(tmp_path):
    from sealign.commands.demo import _budget_of_run

    assert _budget_of_run(str(tmp_path), 6.0) == 6.0  # no run there
    (tmp_path / "config.yaml").write_text("max_minutes: 4.2\nmax_steps: 15\n")
    assert _budget_of_run(str(tmp_path), 6.0) == 4.2
    assert _budget_of_run(str(tmp_path), 3.0) == 3.0
    assert _budget_of_run(str(tmp_path), 0.0) == 4.2
    (tmp_path / "config.yaml").write_text("max_minutes: 0.0\n")
    assert _budget_of_run(str(tmp_path), 6.0) == 6.0


def test_the_base_model_is_enhanced_on_the_demos_threads(tiny, tmp_path, monkeypatch):
    from sealign.commands import demo

    seen = []

    def record(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "enhance_samples", record)
    args = ["demo", "--output", str(tmp_path / "d"), f"data={tiny}",
            f"checkpoint={tiny / 'base'}", "metrics=[si_sdr]", "threads=2"]  # fmt: skip
    try:
        assert main(args) != 0  # interrupted at the base model's enhancement
    finally:
        torch.set_num_threads(1)
    assert seen == [2]


def test_minutes_turns_the_whole_run_budget_off_unless_both_are_given(monkeypatch):
    import argparse

    from sealign.commands import demo

    seen = []
    monkeypatch.setattr(
        demo, "resolve_config", lambda cls, args, extra: seen.append(extra) or 1 / 0
    )
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    argvs = (["--minutes", "9"], ["--minutes", "0", "--total-minutes", "30"], [])
    for argv in argvs:
        with pytest.raises(ZeroDivisionError):
            demo.run(p.parse_args(argv))
    assert seen == [
        ["gspo.max_minutes=9.0", "gspo.max_steps=100000", "total_minutes=0"],
        ["gspo.max_minutes=0.0", "total_minutes=30.0"],
        [],
    ]
