"""Listening tests: blinded, loudness-matched test folders; MUSHRA post-screening and scores;
A/B preference counts; the command line from `make` to `analyze`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from sealign.cli import main
from sealign.data.manifest import Entry
from sealign.eval.listening import (
    ANCHOR,
    REFERENCE,
    ListeningConfig,
    analyze_ab,
    analyze_mushra,
    make_test,
    wilson,
)

SR = 16000


@pytest.fixture
def systems(tmp_path):
    """Three systems' outputs for four utterances: clean speech-like noise, a quieter
    noisier copy, and a louder one (the loudness matching must undo both)."""
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, Entry]] = {"clean": {}, "noisy": {}, "loud": {}}
    for i in range(4):
        clean = rng.normal(0, 0.05, SR + 800 * i).astype(np.float32)
        sigs = {
            "clean": clean,
            "noisy": 0.3 * (clean + rng.normal(0, 0.05, clean.size)),
            "loud": 4 * clean,
        }
        for name, w in sigs.items():
            path = tmp_path / name / f"u{i}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, w, SR, subtype="FLOAT")
            out[name][f"u{i}"] = Entry(f"u{i}", str(path))
    return out


def _rms_db(path) -> float:
    w, _ = sf.read(path)
    return 20 * np.log10(np.sqrt(np.mean(w**2)))


def test_mushra_folder_is_blind_loudness_matched_with_hidden_reference_and_anchor(
    systems, tmp_path
):
    cfg = ListeningConfig(
        output=str(tmp_path / "test"),
        systems={k: "-" for k in systems},
        reference="clean",
        n_items=3,
        seed=1,
    )
    built = make_test(cfg, systems)
    assert built.trials == 3 and not built.skipped
    test = json.loads((built.root / "page" / "test.json").read_text())
    key = json.loads((built.root / "key.json").read_text())
    page = (built.root / "page" / "index.html").read_text()
    assert sorted(p.name for p in (built.root / "page").iterdir()) == [
        "audio",
        "index.html",
        "test.json",
    ]
    for text in (json.dumps(test), page):  # listeners see codes only
        assert not re.search(r"clean|noisy|loud|anchor", text)  # no system name
    items = set()
    for t in test["trials"]:
        codes = key["trials"][t["id"]]["codes"]
        items.add(key["trials"][t["id"]]["item"])
        assert sorted(codes.values()) == sorted(["noisy", "loud", REFERENCE, ANCHOR])
        assert list(codes) == t["stimuli"]
        folder = built.root / "page" / "audio" / t["id"]
        for code in [*t["stimuli"], "ref"]:
            assert _rms_db(folder / f"{code}.wav") == pytest.approx(-26.0, abs=0.05)
        by_name = {name: folder / f"{code}.wav" for code, name in codes.items()}
        ref, hidden = sf.read(folder / "ref.wav")[0], sf.read(by_name[REFERENCE])[0]
        np.testing.assert_array_equal(ref, hidden)
        f, pxx = welch(sf.read(by_name[ANCHOR])[0], SR, nperseg=1024)
        f, pref = welch(ref, SR, nperseg=1024)
        assert pxx[f > 4500].sum() < 1e-3 * pref[f > 4500].sum()  # the 3.5 kHz low-pass
    assert len(items) == 3
    # the order of stimuli is shuffled per trial
    assert len({tuple(key["trials"][t]["codes"].values()) for t in key["trials"]}) > 1


def _mushra_key():
    return {
        "kind": "mushra",
        "trials": {
            f"t{i}": {"item": f"u{i}", "codes": {"r": REFERENCE, "a": "sys_a", "b": "sys_b"}}
            for i in range(4)
        },
    }


def test_mushra_post_screening_scores_and_differences():
    key = _mushra_key()
    good1 = {"t0": {"r": 100, "a": 60, "b": 40}, "t1": {"r": 95, "a": 70, "b": 50},
             "t2": {"r": 100, "a": 80, "b": 30}, "t3": {"r": 90, "a": 50, "b": 40}}  # fmt: skip
    good2 = {t: {"r": 100, "a": v["a"] + 10, "b": v["b"]} for t, v in good1.items()}
    bad = {t: {"r": 50, "a": 90, "b": 90} for t in good1}  # misses the hidden reference
    results = [
        {"listener": "l1", "kind": "mushra", "answers": good1},
        {"listener": "l2", "kind": "mushra", "answers": good2},
        {"listener": "l3", "kind": "mushra", "answers": bad},
    ]
    res = analyze_mushra(key, results, baseline="sys_b")
    assert res["excluded_listeners"] == ["l3"]
    a = res["systems"]["sys_a"]
    assert a["listeners"] == 2 and a["mean"] == pytest.approx((65 + 75) / 2)
    assert res["systems"]["sys_b"]["mean"] == pytest.approx(40.0)
    d = a["diff_vs_baseline"]  # a t interval over the two listeners' differences, 25 and 35
    assert d["mean"] == pytest.approx(30.0)
    assert d["high"] - d["mean"] == pytest.approx(12.706 * 5, rel=1e-3)  # t(1) × s/√2
    # one listener: no interval; a listener who leaves the hidden reference unrated fails
    unrated = {t: {"a": v["a"], "b": v["b"]} for t, v in good1.items()}
    res = analyze_mushra(key, [*results[:1], {"listener": "l4", "kind": "mushra",
                                              "answers": unrated}], baseline="sys_b")  # fmt: skip
    assert res["excluded_listeners"] == ["l4"]
    assert np.isnan(res["systems"]["sys_a"]["diff_vs_baseline"]["low"])
    with pytest.raises(ValueError, match="bad rating"):
        analyze_mushra(key, [{"listener": "x", "kind": "mushra", "answers": {"t0": {"z": 1}}}])


def test_ab_counts_shares_and_tests():
    key = {
        "kind": "ab",
        "trials": {
            f"t{i}": {"item": f"u{i}", "codes": {"p": "new", "q": "old"}} for i in range(10)
        },
    }
    answers = {f"t{i}": {"choice": "p"} for i in range(8)} | {"t8": {"choice": "q"}}
    answers["t9"] = {"choice": "none"}
    res = analyze_ab(key, [{"listener": "l", "kind": "ab", "answers": answers}])
    (pair,) = res["pairs"].values()
    assert (pair["a"], pair["a_preferred"], pair["b_preferred"], pair["no_preference"]) == (
        "new", 8, 1, 1,
    )  # fmt: skip
    assert pair["a_share"] == pytest.approx(8 / 9)
    assert pair["p_value"] == pytest.approx(20 / 512)  # two-sided binomial, 8 of 9
    lo, hi = wilson(8, 9)
    assert lo < 8 / 9 < hi and lo == pytest.approx(0.5650, abs=1e-3)


def test_cli_make_then_analyze_an_ab_test(systems, tmp_path, capsys):
    args = ["listen", "make", "--kind", "ab", "--n", "2", "--output", str(tmp_path / "ab")]
    for name in ("clean", "noisy"):
        args += ["--system", f"{name}={tmp_path / name}"]
    assert main(args) == 0
    key = json.loads((tmp_path / "ab" / "key.json").read_text())
    assert len(key["trials"]) == 2
    answers = {}
    for tid, t in key["trials"].items():
        clean_code = next(c for c, n in t["codes"].items() if n == "clean")
        answers[tid] = {"choice": clean_code}
    test_id = json.loads((tmp_path / "ab" / "page" / "test.json").read_text())["id"]
    res_file = tmp_path / "results-l.json"
    res = {"listener": "l", "test": test_id, "kind": "ab", "answers": answers}
    res_file.write_text(json.dumps(res))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**res, "test": "0123456789ab"}))
    out = tmp_path / "analysis"
    cmd = ["listen", "analyze", "--test", str(tmp_path / "ab"), "--results", str(res_file)]
    assert main([*cmd, "--output", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["pairs"]["clean vs noisy"]["a_preferred"] == 2
    assert "clean vs noisy" in (out / "results.md").read_text()
    assert main([*cmd[:-1], str(other)]) == 2
    assert "answers to another test" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "mushra", "answers": {}}))
    assert main(["listen", "analyze", "--test", str(tmp_path / "ab"), "--results", str(bad)]) == 2
    assert "not a ab results file" in capsys.readouterr().err
    bad.write_text("[]")
    assert main(["listen", "analyze", "--test", str(tmp_path / "ab"), "--results", str(bad)]) == 2
    assert "a JSON object is expected" in capsys.readouterr().err
    assert main(args) == 0  # a test is made again over the earlier one


def test_make_never_writes_over_other_folders_or_files(systems, tmp_path, capsys):
    kept = tmp_path / "mine" / "notes.txt"
    kept.parent.mkdir()
    kept.write_text("keep")
    (tmp_path / "file").write_text("keep")
    for out, why in (("mine", "is not a listening test"), ("file", "is a file")):
        args = ["listen", "make", "--kind", "ab", "--n", "1", "--output", str(tmp_path / out)]
        args += [f"--system=clean={tmp_path / 'clean'}", f"--system=noisy={tmp_path / 'noisy'}"]
        assert main(args) == 2
        assert why in capsys.readouterr().err
    assert kept.read_text() == "keep" and (tmp_path / "file").read_text() == "keep"
    assert not list(tmp_path.glob("*.partial"))


def test_bad_settings_fail_before_work(systems, tmp_path, capsys):
    with pytest.raises(ValueError, match="reference"):
        ListeningConfig(output="x", systems={"a": "-", "b": "-"}, reference="c")
    with pytest.raises(ValueError, match="pairs"):
        ListeningConfig(output="x", kind="ab", systems={"a": "-", "b": "-"}, pairs=["a:a"])
    args = ["listen", "make", "--system", f"clean={tmp_path / 'clean'}", "--output", "o"]
    assert main(args) == 2  # MUSHRA without a reference
    assert "reference" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_page_script_is_valid_javascript(systems, tmp_path):
    cfg = ListeningConfig(output=str(tmp_path / "t"), systems={k: "-" for k in systems},
                          reference="clean", n_items=1)  # fmt: skip
    page = (make_test(cfg, systems).root / "page" / "index.html").read_text()
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    (tmp_path / "page.js").write_text(script)
    subprocess.run(["node", "--check", str(tmp_path / "page.js")], check=True)


def test_analysis_refuses_damaged_or_repeated_answers(tmp_path, capsys):
    from sealign.eval.listening import listening_page, read_results

    key = _mushra_key()
    good = {t: {"r": 100, "a": 60, "b": 40} for t in key["trials"]}

    def write(name, **fields):
        path = tmp_path / name
        path.write_text(json.dumps({"kind": "mushra", "answers": good, **fields}))
        return path

    # the page names unnamed listeners "anonymous": two of them stay two listeners
    other = {t: {"r": 95, "a": 70, "b": 30} for t in key["trials"]}
    a, b = write("a.json", listener="anonymous"), write("b.json", listener="anonymous")
    b.write_text(json.dumps({"kind": "mushra", "answers": other, "listener": "anonymous"}))
    res = analyze_mushra(key, read_results([a, b], key))
    assert res["systems"]["sys_a"]["listeners"] == 2
    with pytest.raises(ValueError, match="given twice"):
        read_results([a, a], key)
    # one listener's answers twice (a copy, a second download; a named listener's 2 files)
    with pytest.raises(ValueError, match="the same answers as"):
        read_results([a, write("a (1).json", listener="anonymous")], key)
    alice = write("alice.json", listener="alice")
    with pytest.raises(ValueError, match="'alice' has answered in"):
        read_results([alice, write("alice2.json", listener="alice", answers=other)], key)
    # two named listeners may agree on every trial (an A/B test with a clear winner)
    assert len(read_results([alice, write("bob.json", listener="bob")], key)) == 2
    for rating in (500, -40, True, float("nan")):
        bad = {**good, "t0": {"r": 100, "a": rating, "b": 40}}
        with pytest.raises(ValueError, match="bad rating"):
            analyze_mushra(key, read_results([write("bad.json", answers=bad)], key))
    for damaged, why in (({"answers": {"t0": [1]}}, "not a JSON object"),
                         ({"listener": ["x"]}, "listener must be")):  # fmt: skip
        with pytest.raises(ValueError, match=why):
            read_results([write("bad.json", **damaged)], key)
    test = tmp_path / "test"
    test.mkdir()
    (test / "key.json").write_text(json.dumps(key))
    cmd = ["listen", "analyze", "--test", str(test), "--results", str(a)]
    assert main([*cmd, "--baseline", "nosuch"]) == 2
    assert "not a system of this test" in capsys.readouterr().err
    (test / "key.json").write_text("[]")
    assert main(cmd) == 2
    assert "not a listening test's key" in capsys.readouterr().err
    # a title is text: it neither closes the page's script, nor changes how the rest of it is
    # read, nor fills its placeholders
    title = "</script><!--<script>__TEST__"
    page = listening_page({"id": "x", "title": title, "kind": "ab", "trials": []})
    assert "</script><!--" not in page and "<title>&lt;/script&gt;&lt;!--" in page
    data = re.search(r"const TEST = (.*);\n", page).group(1)
    assert "<" not in data and json.loads(data)["title"] == title


def test_make_refuses_reserved_names_and_skips_items_of_other_lengths(systems, tmp_path):
    with pytest.raises(ValueError, match="name of a stimulus the test adds"):
        ListeningConfig(output="x", systems={REFERENCE: "-", "b": "-"}, reference="b")
    with pytest.raises(ValueError, match="sample_rate"):
        ListeningConfig(output="x", systems={"a": "-", "b": "-"}, reference="a", sample_rate=4000)
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(SR // 4, np.float32) + 0.01, SR)
    systems["noisy"]["u0"] = Entry("u0", str(short))
    cfg = ListeningConfig(output=str(tmp_path / "t"), systems={k: "-" for k in systems},
                          reference="clean", n_items=4)  # fmt: skip
    built = make_test(cfg, systems)
    assert "differ in length" in built.skipped["u0"] and built.trials == 3


def test_tests_of_other_audio_or_seeds_differ_and_answered_tests_are_kept(systems, tmp_path):
    def build(name, seed=None, **changed):
        cfg = ListeningConfig(output=str(tmp_path / name), systems={k: "-" for k in systems},
                              reference="clean", n_items=2, seed=seed)  # fmt: skip
        make_test(cfg, {**systems, **changed})
        return json.loads((tmp_path / name / "key.json").read_text())

    same1, same2 = build("s1", seed=3), build("s2", seed=3)
    assert same1 == same2  # a seed reproduces its test
    other_audio = build("o", seed=3, loud=systems["noisy"])
    fresh1, fresh2 = build("f1"), build("f2")  # no seed: a fresh one, recorded
    ids = {json.dumps(k, sort_keys=True) for k in (same1, other_audio, fresh1, fresh2)}
    assert len(ids) == 4 and fresh1["seed"] != fresh2["seed"]
    assert fresh1["systems"] == {k: "-" for k in systems}
    # a test with answers or an analysis beside it keeps its key
    (tmp_path / "f1" / "results-alice.json").write_text("{}")
    with pytest.raises(ValueError, match="other files .*results-alice.json"):
        build("f1")
    assert json.loads((tmp_path / "f1" / "key.json").read_text()) == fresh1
    build("f2")  # nobody answered that one yet: it is replaced


def test_eval_systems_are_the_evals_own_models(tmp_path):
    from sealign.commands.listen import eval_systems

    for name in ("a", "a_sample1", "b_sampled", "stale"):
        (tmp_path / "enhanced" / name).mkdir(parents=True)
        (tmp_path / "enhanced" / name / "manifest.jsonl").write_text("")
    assert sorted(eval_systems(tmp_path)) == ["a", "b_sampled", "stale"]  # no results.json
    (tmp_path / "results.json").write_text(json.dumps({"models": ["a", "b_sampled"]}))
    assert sorted(eval_systems(tmp_path)) == ["a", "b_sampled"]


def test_a_test_made_from_an_eval_folder_can_be_made_again_from_its_config(systems, tmp_path):
    ev = tmp_path / "ev"
    (ev / "enhanced" / "a").mkdir(parents=True)
    rows = [{"id": uid, "audio": e.audio, "noisy": systems["noisy"][uid].audio,
             "reference": systems["clean"][uid].audio} for uid, e in systems["loud"].items()]  # fmt: skip
    (ev / "enhanced" / "a" / "manifest.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    (ev / "results.json").write_text(json.dumps({"models": ["a"]}))
    first = ["listen", "make", "--eval", str(ev), "--kind", "ab", "--n", "2"]
    assert main([*first, "--output", str(tmp_path / "t1")]) == 0
    saved = tmp_path / "t1" / "config.yaml"
    assert main(["listen", "make", "--config", str(saved), "--output", str(tmp_path / "t2")]) == 0
    keys = [json.loads((tmp_path / t / "key.json").read_text()) for t in ("t1", "t2")]
    assert sorted(keys[0]["systems"]) == sorted(keys[1]["systems"]) == ["a", "clean", "noisy"]
    assert keys[0]["seed"] != keys[1]["seed"]
