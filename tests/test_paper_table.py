"""Paper-style tables (`sealign.eval.paper_table`) and `sealign table`."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sealign.cli import main
from sealign.eval.paper_table import PaperTable, from_results, to_csv, to_latex, to_markdown
from sealign.eval.stats import paired_bootstrap_diff


def ci(mean: float, half: float = 0.1, n: int = 10) -> dict:
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def results() -> dict:
    """An evaluation's results.json: noisy / two models / clean on DNSMOS OVRL and WER."""
    return {
        "systems": {
            "noisy": {"dnsmos_ovrl": ci(1.94), "wer": ci(0.235)},
            "ar_v1": {"dnsmos_ovrl": ci(2.504), "wer": ci(0.280)},
            "fm": {"dnsmos_ovrl": ci(2.496), "wer": ci(0.231)},
            "clean": {"dnsmos_ovrl": ci(2.98), "wer": ci(0.030)},
        },
        "higher_is_better": {"dnsmos_ovrl": True, "wer": False},
        "diff_vs_noisy": {
            "ar_v1": {"dnsmos_ovrl": ci(0.56, 0.15), "wer": ci(0.045, 0.04)},
            "fm": {"dnsmos_ovrl": ci(0.55, 0.15), "wer": ci(-0.004, 0.03)},
        },
    }


def test_markdown_bolds_the_best_marks_significance_and_prints_wer_in_percent():
    text = to_markdown(from_results(results()))
    assert text.splitlines()[:6] == [
        "| system | DNSMOS OVRL ↑ | WER (%) ↓ |",
        "|---|---|---|",
        "| noisy | 1.94 | 23.5 |",
        # OVRL 2.504 and 2.496 both print as 2.50: a tie, both bold; the WER rise is
        # significant (worse), the FM's fall is not; clean is never the best
        "| ar_v1 | **2.50**† | 28.0‡ |",
        "| fm | **2.50**† | **23.1** |",
        "| clean | 2.98 | 3.0 |",
    ]
    assert "difference from noisy" in text


def test_latex_has_grouped_headers_escapes_names_and_optional_cis():
    r = results()
    r["higher_is_better"]["dnsmos_bak"] = True
    for s, v in zip(r["systems"], (2.29, 3.45, 3.61, 3.84), strict=True):
        r["systems"][s]["dnsmos_bak"] = ci(v)
    t = from_results(r, columns=["dnsmos_bak", "dnsmos_ovrl", "wer"])
    tex = to_latex(t, ci=True, caption=r"Test 100\% set.", label="tab:x")  # LaTeX source
    lines = tex.splitlines()
    assert r"\caption{Test 100\% set. Bold: best per column (without clean)." in tex
    assert r"\label{tab:x}" in lines and r"\begin{tabular}{lccc}" in lines
    assert r" & \multicolumn{2}{c}{DNSMOS} &  \\" in lines
    assert r"\cmidrule(lr){2-3}" in lines
    assert r"System & BAK$\uparrow$ & OVRL$\uparrow$ & WER (\%)$\downarrow$ \\" in lines
    row = next(x for x in lines if x.startswith("ar"))
    assert row.startswith(r"ar\_v1 & 3.45\,{\scriptsize$\pm$0.10} & \textbf{2.50}$^\dagger$")
    assert r"28.0$^\ddagger$\,{\scriptsize$\pm$10.0}" in row
    assert lines.count(r"\midrule") == 3  # noisy | models | clean
    # a group of one column is no group: its header names it
    alone = to_latex(from_results(results()))
    assert r"System & DNSMOS OVRL$\uparrow$ &" in alone and "multicolumn" not in alone


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_output_compiles(tmp_path):
    t = from_results(results())
    t.systems.append("a_b & c ≥ 1 | 2")  # every character LaTeX treats specially
    t.cells["a_b & c ≥ 1 | 2"] = {"wer": ci(0.1)}
    body = to_latex(t, ci=True, caption=r"A\_b \& c.", label="tab:r")
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
    (tmp_path / "t.tex").write_text(doc + body + "\\end{document}\n")
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 1000


def test_csv_is_long_format_and_unscaled():
    rows = list(csv.DictReader(io.StringIO(to_csv(from_results(results())))))
    assert len(rows) == 8
    wer = next(r for r in rows if r["system"] == "ar_v1" and r["column"] == "wer")
    assert float(wer["mean"]) == 0.28 and float(wer["diff"]) == 0.045
    assert wer["baseline"] == "noisy" and wer["best"] == "False"
    noisy = next(r for r in rows if r["system"] == "noisy" and r["column"] == "wer")
    assert noisy["diff"] == "" and noisy["higher_is_better"] == "False"


def test_empty_cells_and_a_single_row_have_no_best():
    t = PaperTable(
        systems=["noisy", "a"], columns=["wer"], higher_is_better={"wer": False},
        cells={"noisy": {"wer": ci(0.2)}, "a": {"wer": {"mean": math.nan, "low": math.nan,
                                                        "high": math.nan, "n": 0}}},
    )  # fmt: skip
    assert to_markdown(t).splitlines()[2:4] == ["| noisy | 20.0 |", "| a | — |"]


# -- the command ----------------------------------------------------------------------------


def write_run(path, res: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(res))


def write_scores(path, values: dict[str, list[float]]) -> None:
    """A `score` folder: per-utterance records of the given columns."""
    path.mkdir(parents=True)
    n = len(next(iter(values.values())))
    lines = [
        json.dumps({"id": f"u{i}", "scores": {c: v[i] for c, v in values.items()},
                    "skipped": {}, "errors": {}})
        for i in range(n)
    ]  # fmt: skip
    (path / "scores.jsonl").write_text("\n".join(lines) + "\n")


def test_table_merges_runs_prefixes_clashing_names_and_writes_the_format_of_the_suffix(
    tmp_path, capsys
):
    write_run(tmp_path / "e1", results())
    other = results()  # a second evaluation on the same test set: a different fm, more columns
    other["systems"]["fm"]["dnsmos_ovrl"] = ci(2.7)
    for s in other["systems"]:
        other["systems"][s]["pesq_wb"] = ci(1.5)
    other["higher_is_better"]["pesq_wb"] = True
    write_run(tmp_path / "e2", other)
    out = tmp_path / "t.md"
    args = ["table", str(tmp_path / "e1"), str(tmp_path / "e2"), "--output", str(out)]
    assert main([*args, "--columns", "pesq_wb,dnsmos", "--rename", "ar_v1=AR"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "| system | PESQ-WB ↑ | DNSMOS OVRL ↑ |"
    # noisy, ar_v1 and clean agree, so each is shown once with e2's PESQ (a tie everywhere:
    # nothing bold); e2's fm is another system
    assert [x.split(" | ")[0] for x in lines[2:7]] == ["| noisy", "| AR", "| fm", "| e2/fm",
                                                        "| clean"]  # fmt: skip
    assert lines[3] == "| AR | 1.50 | 2.50† |" and lines[4] == "| fm | — | 2.50† |"
    assert lines[5] == "| e2/fm | 1.50 | **2.70**† |"
    # printed to the console without --output; csv by --format
    assert main(["table", str(tmp_path / "e1"), "--format", "csv", "--baseline", "none"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 8 and all(r["diff"] == "" for r in rows)


def test_table_pairs_score_folders_with_a_score_folder_baseline(tmp_path):
    rng = np.random.default_rng(0)
    noisy = rng.uniform(1.5, 2.5, 30)
    gain = noisy + rng.normal(0.3, 0.1, 30)
    write_scores(tmp_path / "noisy", {"dnsmos_ovrl": list(noisy), "wer": [0.2] * 30})
    write_scores(tmp_path / "ours", {"dnsmos_ovrl": list(gain), "wer": [0.2] * 30})
    out = tmp_path / "t.csv"
    args = ["table", str(tmp_path / "noisy"), str(tmp_path / "ours"), "--output", str(out)]
    assert main(args) == 0
    rows = {(r["system"], r["column"]): r for r in csv.DictReader(out.open())}
    d = paired_bootstrap_diff(noisy, gain)
    r = rows[("ours", "dnsmos_ovrl")]
    assert float(r["diff"]) == pytest.approx(d.mean) and float(r["diff_low"]) == d.low
    assert float(r["mean"]) == pytest.approx(gain.mean())
    assert rows[("ours", "wer")]["higher_is_better"] == "False"
    assert float(rows[("ours", "wer")]["diff"]) == 0.0
    # the scores files themselves name the same runs
    files = [str(tmp_path / n / "scores.jsonl") for n in ("noisy", "ours")]
    assert main(["table", *files, "--output", str(tmp_path / "f.csv")]) == 0
    assert (tmp_path / "f.csv").read_text() == out.read_text()


def test_table_published_rows_join_the_best_but_get_no_mark(tmp_path):
    write_run(tmp_path / "e", results())
    (tmp_path / "pub.yaml").write_text(
        "- name: GenSE (reported)\n  values: {dnsmos_ovrl: 3.43, wer: 0.1}\n"
    )
    out = tmp_path / "t.md"
    args = ["table", str(tmp_path / "e"), "--rows", str(tmp_path / "pub.yaml")]
    assert main([*args, "--output", str(out), "--ci", "--decimals", "wer=2"]) == 0
    lines = out.read_text().splitlines()
    assert lines[2].startswith("| noisy | 1.94 ± 0.10 | 23.50 ± 10.00 |")
    assert lines[3] == "| GenSE (reported) | **3.43** | **10.00** |"


def test_table_errors_name_what_is_wrong(tmp_path, capsys):
    write_run(tmp_path / "e", results())
    e = str(tmp_path / "e")
    for args, message in [
        ([str(tmp_path / "none")], "no results.json"),
        ([e, "--columns", "dnsmos,pesq_wb"], "no column for pesq_wb"),
        ([e, "--systems", "noisy,xx"], "no system xx"),
        ([e, "--rename", "ar_v1"], "expected KEY=VALUE"),
        ([e, "--output", str(tmp_path / "t.docx")], "give --format"),
    ]:
        assert main(["table", *args]) == 2, args
        assert message in capsys.readouterr().err, args
    (tmp_path / "bad.yaml").write_text("- name: x\n  values: {wer: high}\n")
    assert main(["table", e, "--rows", str(tmp_path / "bad.yaml")]) == 2
    assert "entry 'x'" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")
    assert main(["table", str(tmp_path / "broken")]) == 2
    assert "not an evaluation's results.json" in capsys.readouterr().err


# -- tables by condition ----------------------------------------------------------------------


def eval_folder(tmp_path, rng):
    """An `eval`-like folder: per-utterance scores of noisy / model (two sampled outputs) /
    clean, the results.json its own tables compute from them, and the manifest."""
    from sealign.eval.score import mean_over_samples
    from sealign.eval.tables import compare_stats
    from sealign.metrics.registry import metric_info

    run, n = tmp_path / "ev", 24
    (run / "scores").mkdir(parents=True)
    ids = [f"u{i:02d}" for i in range(n)]
    noisy = rng.uniform(1.5, 2.5, n)

    def recs(ovrl, wer):
        return [{"id": i, "scores": {"dnsmos_sig": 3.0, "dnsmos_bak": 3.0, "dnsmos_p808": 3.0,
                                     "dnsmos_ovrl": float(o), "wer": float(w)},
                 "skipped": {}, "errors": {}} for i, o, w in zip(ids, ovrl, wer, strict=True)]  # fmt: skip

    files = {
        "noisy": recs(noisy, rng.uniform(0, 0.5, n)),
        "model": recs(noisy + rng.normal(0.4, 0.2, n), rng.uniform(0, 0.6, n)),
        "model_sample1": recs(noisy + rng.normal(0.4, 0.2, n), rng.uniform(0, 0.6, n)),
        "clean": recs(np.full(n, 3.0), np.zeros(n)),
    }
    for name, r in files.items():
        (run / "scores" / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in r))
    systems = {
        "noisy": files["noisy"],
        "model": mean_over_samples([files["model"], files["model_sample1"]]),
        "clean": files["clean"],
    }
    infos = {"dnsmos": metric_info("dnsmos"), "wer": metric_info("wer")}
    write_run(run, compare_stats(systems, infos, ["model"]))
    tasks = [["denoising"], ["denoising", "dereverberation"], ["declipping"]]
    lines = [
        json.dumps({"id": i, "audio": f"{i}.wav", "degradation": {
            "tasks": tasks[k % 3], "snr_db": float(k), "room": "small"}})
        for k, i in enumerate(ids)
    ]  # fmt: skip
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    return run, systems


def test_table_by_condition_equals_the_runs_own_statistics_on_each_subset(tmp_path):
    run, systems = eval_folder(tmp_path, np.random.default_rng(1))
    m = str(tmp_path / "m.jsonl")
    whole, by = tmp_path / "whole.csv", tmp_path / "by.csv"
    assert main(["table", str(run), "--output", str(whole)]) == 0
    # a field every utterance shares: one condition holding them all, the same numbers
    assert main(["table", str(run), "--by", "degradation.room", "--manifest", m,
                 "--output", str(by)]) == 0  # fmt: skip
    a = list(csv.DictReader(whole.open()))
    b = list(csv.DictReader(by.open()))
    assert {r["condition"] for r in b} == {"degradation.room: small"}
    for ra, rb in zip(a, b, strict=True):
        for key in ("system", "column", "mean", "ci_low", "ci_high", "n", "best"):
            assert ra[key] == rb[key], key
        for key in ("diff", "diff_low", "diff_high"):  # clean: no test in either
            assert ra[key] == rb[key] or (rb["system"] == "clean" and ra[key] == ""), key
    # a list puts an utterance in each of its values; bins at edges
    out = tmp_path / "tasks.md"
    assert main(["table", str(run), "--by", "degradation.tasks", "--manifest", m,
                 "--output", str(out), "--columns", "wer"]) == 0  # fmt: skip
    text = out.read_text()
    assert "### degradation.tasks: denoising (16 utterances)" in text
    assert "### degradation.tasks: dereverberation (8 utterances)" in text
    assert "### degradation.tasks: declipping (8 utterances)" in text
    # a condition of the manifest that no run scored (a run on part of it) is left out
    wider = tmp_path / "wider.jsonl"
    extra = {"id": "zz", "audio": "zz.wav", "degradation": {"tasks": ["packet_loss"]}}
    wider.write_text(Path(m).read_text() + json.dumps(extra) + "\n")
    assert main(["table", str(run), "--by", "degradation.tasks", "--manifest", str(wider),
                 "--output", str(out), "--columns", "wer"]) == 0  # fmt: skip
    assert "packet_loss" not in out.read_text() and "declipping" in out.read_text()
    model_wer = mean_ci_of(systems["model"], "wer", lambda k: k % 3 == 2)
    row = next(x for x in text.split("declipping")[1].splitlines() if x.startswith("| model"))
    assert f"{100 * model_wer:.1f}" in row
    assert main(["table", str(run), "--by", "degradation.snr_db@5,20", "--manifest", m,
                 "--output", str(out), "--columns", "wer"]) == 0  # fmt: skip
    heads = [x for x in out.read_text().splitlines() if x.startswith("###")]
    assert heads == ["### degradation.snr_db: < 5 (5 utterances)",
                     "### degradation.snr_db: 5 to 20 (15 utterances)",
                     "### degradation.snr_db: ≥ 20 (4 utterances)"]  # fmt: skip


def mean_ci_of(records, column, keep) -> float:
    return float(np.mean([r["scores"][column] for k, r in enumerate(records) if keep(k)]))


def test_table_by_condition_errors(tmp_path, capsys, monkeypatch):
    run, _ = eval_folder(tmp_path, np.random.default_rng(2))
    m = str(tmp_path / "m.jsonl")
    for args, message in [
        (["--by", "degradation.tasks"], "--by needs --manifest"),
        (["--by", "degradation.nope", "--manifest", m], "no utterance of the manifest has"),
        (["--by", "degradation.room@1,2", "--manifest", m], "not a number"),
        (["--by", "degradation.snr_db@a", "--manifest", m], "bin edges must be numbers"),
    ]:
        assert main(["table", str(run), *args]) == 2, args
        assert message in capsys.readouterr().err, args
    from sealign.commands import table

    monkeypatch.setattr(table, "MAX_GROUPS", 2)  # a value per utterance: a table each
    assert main(["table", str(run), "--by", "id", "--manifest", m]) == 2
    assert "distinct values, one table each; bin a numeric field" in capsys.readouterr().err


def test_table_merging_rules(tmp_path, capsys):
    r = results()
    intrusive = {  # the same systems scored with other metrics only: merged by name
        "systems": {s: {"pesq_wb": ci(1.5 + k)} for k, s in enumerate(r["systems"])},
        "higher_is_better": {"pesq_wb": True},
    }
    write_run(tmp_path / "a", r)
    write_run(tmp_path / "b", intrusive)
    out = tmp_path / "t.md"
    assert main(["table", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(out)]) == 0
    rows = [x.split(" | ")[0] for x in out.read_text().splitlines()[2:6]]
    assert rows == ["| noisy", "| ar_v1", "| fm", "| clean"]
    # another test set's noisy cannot share the marks' baseline
    other = results()
    other["systems"]["noisy"]["wer"] = ci(0.5)
    write_run(tmp_path / "c", other)
    assert main(["table", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "not scored on the same utterances" in capsys.readouterr().err
    # without marks they are shown side by side; the second clean is a reference row too
    other["systems"]["clean"]["dnsmos_ovrl"] = ci(4.0)
    write_run(tmp_path / "c", other)
    args = ["table", str(tmp_path / "a"), str(tmp_path / "c"), "--baseline", "none"]
    assert main([*args, "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[5:8] == ["| c/noisy | 1.94 | 50.0 |", "| clean | 2.98 | 3.0 |",
                          "| c/clean | 4.00 | 3.0 |"]  # fmt: skip
    # renaming onto a name in use is refused
    assert main(["table", str(tmp_path / "a"), "--rename", "fm=ar_v1"]) == 2
    assert "two systems would be named alike" in capsys.readouterr().err


def test_table_marks_against_the_runs_own_baseline_and_pairs_score_folders_with_a_run(tmp_path):
    r = results()
    r["diff_vs_base"] = r.pop("diff_vs_noisy")  # as pref-ablation writes it
    r["systems"]["base"] = r["systems"].pop("noisy")
    write_run(tmp_path / "abl", r)
    out = tmp_path / "t.md"
    assert main(["table", str(tmp_path / "abl"), "--output", str(out)]) == 0
    assert "| ar_v1 | **2.50**† | 28.0‡ |" in out.read_text()
    assert "difference from base" in out.read_text()
    # a score folder paired with an eval run's noisy scores, by utterance id
    rng = np.random.default_rng(3)
    run, systems = eval_folder(tmp_path, rng)
    ours = [x["scores"]["dnsmos_ovrl"] + 1.0 + rng.normal(0, 0.1) for x in systems["noisy"]]
    write_scores(tmp_path / "ours", {"dnsmos_ovrl": ours})
    (tmp_path / "ours" / "scores.jsonl").write_text(
        "\n".join(
            json.dumps({"id": x["id"], "scores": {"dnsmos_ovrl": v}})
            for x, v in zip(systems["noisy"], ours, strict=True)
        )
        + '\n{"scores": {"dnsmos_ovrl": 9}}\n'  # a line without an id: left out
    )
    csv_out = tmp_path / "t.csv"
    assert main(["table", str(run), str(tmp_path / "ours"), "--output", str(csv_out)]) == 0
    row = next(x for x in csv.DictReader(csv_out.open())
               if x["system"] == "ours" and x["column"] == "dnsmos_ovrl")  # fmt: skip
    noisy = [x["scores"]["dnsmos_ovrl"] for x in systems["noisy"]]
    assert float(row["diff"]) == pytest.approx(paired_bootstrap_diff(noisy, ours).mean)
    assert row["n"] == "24" and row["kind"] == "system"
    # an eval run against one of its models: its per-utterance scores are paired by id
    assert main(["table", str(run), "--baseline", "model", "--output", str(csv_out)]) == 0
    row = next(x for x in csv.DictReader(csv_out.open())
               if x["system"] == "noisy" and x["column"] == "wer")  # fmt: skip
    from sealign.eval.score import mean_over_samples

    model = mean_over_samples([records_of(run, "model"), records_of(run, "model_sample1")])
    want = paired_bootstrap_diff([r["scores"]["wer"] for r in model],
                                 [r["scores"]["wer"] for r in systems["noisy"]])  # fmt: skip
    assert float(row["diff"]) == pytest.approx(want.mean) and row["baseline"] == "model"


def records_of(run, name):
    return [json.loads(x) for x in (run / "scores" / f"{name}.jsonl").read_text().splitlines()]


def test_table_rejects_malformed_inputs_and_options(tmp_path, capsys):
    e = tmp_path / "e"
    write_run(e, results())
    bad = results()
    bad["systems"]["fm"]["wer"] = 0.2
    write_run(tmp_path / "bad", bad)
    write_scores(tmp_path / "s", {"wer": [0.1, 0.2]})
    (tmp_path / "s" / "scores.jsonl").write_text('{"id": "u0", "scores": {"wer": "high"}}\n')
    (tmp_path / "dup.yaml").write_text("- {name: x, values: {wer: 1}}\n- {name: x, values: {}}\n")
    (tmp_path / "other.jsonl").write_text('{"id": "zz", "audio": "a.wav", "snr": 1}\n')
    for args, message in [
        ([str(tmp_path / "bad")], "systems.fm: expected {column: {mean, low, high, n}}"),
        ([str(tmp_path / "s")], "u0: score wer = 'high' is not a number"),
        ([str(e), "--decimals", "wer=-1"], "digits must be 0 to 10"),
        ([str(e), "--decimals", "wre=2"], "--decimals: no column wre in the table"),
        ([str(e), "--label", "wre=WER"], "--label: no column wre in the table"),
        ([str(e), "--systems", "fm,fm"], "--systems: a system is named twice"),
        ([str(e), "--rows", str(tmp_path / "dup.yaml")], "'x' is listed twice"),
        ([str(e), "--tex-label", "tab:a%b"], "--tex-label"),
    ]:
        assert main(["table", *args]) == 2, args
        assert message in capsys.readouterr().err, args
    run, _ = eval_folder(tmp_path, np.random.default_rng(4))
    assert (
        main(["table", str(run), "--by", "snr", "--manifest", str(tmp_path / "other.jsonl")]) == 2
    )
    assert "no utterance scored in ev is in" in capsys.readouterr().err
    # a name with a pipe stays one Markdown cell
    r = results()
    r["systems"]["a|b"] = r["systems"].pop("fm")
    write_run(tmp_path / "p", r)
    assert main(["table", str(tmp_path / "p"), "--format", "markdown"]) == 0
    assert "| a\\|b |" in capsys.readouterr().out


def test_run_records_find_names_with_colons_as_written(tmp_path):
    from sealign.commands.table import run_records

    (tmp_path / "scores").mkdir()
    rec = {"id": "u", "scores": {"wer": 0.5}, "skipped": {}, "errors": {}}
    (tmp_path / "scores" / "mgm:v2.jsonl").write_text(json.dumps(rec) + "\n")  # eval --name
    (tmp_path / "scores" / "single_wer.jsonl").write_text(json.dumps(rec) + "\n")  # an arm
    got = run_records(tmp_path, ["mgm:v2", "single:wer", "absent"])
    assert sorted(got) == ["mgm:v2", "single:wer"]


def test_results_json_is_strict_json_and_its_nulls_read_back_as_missing(tmp_path, capsys):
    """Statistics with no value (one utterance: no CI; nothing scored) are written as null,
    which every JSON reader accepts, and `table` / `plot` read them as the NaN they were."""
    from sealign.utils.jsonio import write_json

    res = results()
    res["systems"]["fm"]["wer"] = {"mean": 0.2, "low": math.nan, "high": math.inf, "n": 1}
    res["diff_vs_noisy"]["fm"]["wer"] = {"mean": np.float32("nan"), "low": math.nan,
                                         "high": math.nan, "n": 0}  # fmt: skip
    run = tmp_path / "e"
    write_json(run / "results.json", res, strict=True)
    text = (run / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}"))
    assert strict["systems"]["fm"]["wer"] == {"mean": 0.2, "low": None, "high": None, "n": 1}
    assert main(["table", str(run), "--columns", "wer"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| fm | **20.0** |" in lines  # a mean without a CI: no significance mark
    assert main(["plot", str(run), "--output", str(tmp_path / "plot")]) == 0
    assert (tmp_path / "plot" / "results.png").is_file()


def test_table_deltas_print_each_systems_paired_difference_and_its_ci(tmp_path, capsys):
    rng = np.random.default_rng(1)
    noisy = rng.uniform(1.5, 2.5, 30)
    gain = noisy + rng.normal(0.3, 0.1, 30)
    wer_n, wer_o = rng.uniform(0.1, 0.4, 30), rng.uniform(0.1, 0.4, 30)
    write_scores(tmp_path / "noisy", {"dnsmos_ovrl": list(noisy), "wer": list(wer_n)})
    write_scores(tmp_path / "ours", {"dnsmos_ovrl": list(gain), "wer": list(wer_o)})
    args = ["table", str(tmp_path / "noisy"), str(tmp_path / "ours"), "--format", "markdown"]
    assert main([*args, "--deltas"]) == 0
    lines = capsys.readouterr().out.splitlines()
    d, w = paired_bootstrap_diff(noisy, gain), paired_bootstrap_diff(wer_n, wer_o)
    assert lines[2] == f"| noisy | {noisy.mean():.2f} | {100 * wer_n.mean():.1f} |"
    ovrl = f"**{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]**†"
    wer = f"**{100 * w.mean:+.1f} [{100 * w.low:+.1f}, {100 * w.high:+.1f}]**"
    assert lines[3] == f"| ours | {ovrl} | {wer} |"  # bold: the lower mean WER
    assert w.low < 0 < w.high  # not significant: no mark
    assert "Rows other than noisy: the difference from noisy" in lines[-1]
    assert main([*args, "--deltas", "--format", "latex"]) == 0
    assert f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]" in capsys.readouterr().out
    (tmp_path / "pub.yaml").write_text("- name: GenSE (reported)\n  values: {dnsmos_ovrl: 3.43}\n")
    assert main([*args, "--deltas", "--rows", str(tmp_path / "pub.yaml")]) == 0
    assert "| GenSE (reported) | — | — |" in capsys.readouterr().out  # no paired difference
    assert main([*args, "--deltas", "--baseline", "none"]) == 2
    assert "--deltas: no paired differences" in capsys.readouterr().err
