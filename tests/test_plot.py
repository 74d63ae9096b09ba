"""`sealign plot`: which log keys become which curves, and the figures and page it writes."""

from __future__ import annotations

import json

import numpy as np

from sealign.cli import main
from sealign.eval.tables import compare_stats, compare_table, diff_table
from sealign.metrics.base import MetricInfo
from sealign.report.run import curve_panels, panel_of


def gspo_records(steps: int = 4) -> list[dict]:
    rng = np.random.default_rng(0)
    recs = [{"step": 0, "time": 1.0, "eval/dnsmos_ovrl": 2.0, "time/eval": 9.0}]
    for s in range(1, steps + 1):
        recs.append(
            {
                "step": s,
                "time": 1.0 + s,
                "reward": float(rng.random()),
                "rewards/wer/mean": 0.5,
                "rewards/wer/std": 0.1,
                "clip_ratio/low_mean": 0.0,
                "clip_ratio/high_mean": 0.01,
                "kl": 0.01 * s,
                "time/generate": 3.0,
                "time/score": 10.0,
                "time/score/wer": 4.0,
                "time/score/dnsmos": 5.0,
                "lr": 1e-4,
                "ok": True,  # not a number to plot
            }
        )
    recs.append({"step": steps, "eval/dnsmos_ovrl": 2.1, "time/eval": 8.0})
    recs.append({"note": "no step"})
    return recs


def test_log_keys_map_to_figures_and_panels():
    assert panel_of("step") is None and panel_of("time") is None
    assert panel_of("rewards/wer/std") is None  # drawn as the band of rewards/wer/mean
    assert panel_of("rewards/wer/mean") == ("training", "rewards/wer")
    assert panel_of("clip_ratio/region_mean") == ("training", "clip_ratio")
    assert panel_of("logps/chosen") == ("training", "logps")
    assert panel_of("rewards/rejected") == ("training", "rewards/chosen, rewards/rejected")
    assert panel_of("rewards/margins") == ("training", "rewards/margins")
    assert panel_of("frac_reward_zero_std") == panel_of("rewards/wer/frac_zero_std")
    assert panel_of("rewards/dnsmos_ovrl/frac_zero_std") == ("training", "groups without spread")
    assert panel_of("train/loss") == panel_of("eval/loss") == ("training", "loss")
    assert panel_of("train/grad_norm") == ("training", "train/grad_norm")
    assert panel_of("eval/dnsmos_ovrl") == ("held-out", "eval/dnsmos_ovrl")
    assert panel_of("time/score/wer") == ("time", "time/score")
    assert panel_of("time/update") == ("time", "time")


def test_curve_panels_group_keys_and_drop_one_off_numbers():
    figs = curve_panels(gspo_records())
    training = {p.title: p for p in figs["training"]}
    assert list(training) == ["reward", "rewards/wer", "clip_ratio", "kl", "lr"]
    assert training["clip_ratio"].keys == ["clip_ratio/low_mean", "clip_ratio/high_mean"]
    assert training["rewards/wer"].bands == {"rewards/wer/mean": "rewards/wer/std"}
    time = {p.title: p.keys for p in figs["time"]}
    assert time == {
        "time": ["time/eval", "time/generate", "time/score"],
        "time/score": ["time/score/wer", "time/score/dnsmos"],
    }
    assert [p.title for p in figs["held-out"]] == ["eval/dnsmos_ovrl"]
    # an evaluation's log: every number at one step, so no curves at all
    assert curve_panels([{"step": 3, "eval/noisy/wer": 0.2, "eval/model/wer": 0.3}]) == {}


def eval_results(folder) -> None:
    """results.json / results.md as `sealign eval` writes them, for three systems."""
    rng = np.random.default_rng(1)
    infos = {
        "dnsmos": MetricInfo("dnsmos", ("ovrl",), (True,), ((1.0, 5.0),)),
        "wer": MetricInfo("wer", ("wer",), (False,), ((0.0, 1.0),)),
    }
    systems = {
        name: [
            {
                "id": f"u{i}",
                "scores": {"dnsmos_ovrl": 2 + shift + rng.random(), "wer": rng.random()},
            }
            for i in range(8)
        ]
        for name, shift in (("noisy", 0.0), ("model", 1.0), ("clean", 2.0))
    }
    stats = compare_stats(systems, infos, ["model"], n_boot=200)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(stats))
    text = f"{compare_table(systems, infos)}\n\n{diff_table(stats, ['model'])}\n"
    (folder / "results.md").write_text(text)


def test_plot_command_writes_figures_and_a_page(tmp_path):
    run = tmp_path / "demo"
    (run / "gspo").mkdir(parents=True)
    with open(run / "gspo" / "log.jsonl", "w") as f:
        for rec in gspo_records():
            f.write(json.dumps(rec) + "\n")
        f.write('{"step": 9, "rew')  # a line cut by a crash
    eval_results(run)
    assert main(["plot", str(run), "--smooth", "2"]) == 0
    out = run / "plots"
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {
        "gspo_training.png",
        "gspo_held-out.png",
        "gspo_time.png",
        "results.png",
        "diff_vs_noisy.png",
    }
    page = (out / "index.html").read_text()
    for png in pngs:
        assert f"src='{png}'" in page
    assert page.count("<table>") == 2  # the two tables of results.md, kept apart
    assert "Δ vs noisy" in page


def test_plot_command_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "no run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "nothing to plot" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "empty"), "--smooth", "0"]) == 2
    assert "--smooth must be" in capsys.readouterr().err


def test_damaged_log_lines_and_results_are_skipped_or_named(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    good = [json.dumps({"step": i, "loss": 1.0 / (i + 1)}) for i in range(3)]
    damaged = [
        "null",
        "5",
        json.dumps({"step": [1], "loss": 2}),
        json.dumps({"step": 4, "loss": 10**400}),
    ]
    (run / "log.jsonl").write_text("\n".join(good + damaged) + "\n")
    assert main(["plot", str(run)]) == 0
    (run / "results.json").write_text(
        json.dumps({"systems": {"a": {"x": 1}}, "higher_is_better": {"x": True}})
    )
    assert main(["plot", str(run)]) == 2
    assert "not a readable results.json" in capsys.readouterr().err


def test_nan_and_inf_in_a_log_are_marked_not_left_out(tmp_path, monkeypatch):
    import sealign.report.run as report_run

    figs = []
    monkeypatch.setattr(report_run, "_save", lambda fig, out: figs.append(fig) or out)
    recs = [{"step": s, "loss": float("nan") if s % 2 else 1.0 / (s + 1)} for s in range(8)]
    recs[2]["loss"] = float("inf")
    report_run.plot_curves(recs, [report_run.Panel("loss", ["loss"])], tmp_path / "x.png")
    labels = figs[0].axes[0].get_legend_handles_labels()[1]
    assert labels == ["loss", "loss: NaN/inf at 5 steps"]
    # a run that diverged after its first logged step still gets its panel
    early = [{"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": float("nan")}]
    assert "train/loss" in [k for p in curve_panels(early)["training"] for k in p.keys]
