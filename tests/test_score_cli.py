"""`sealign score` end to end on cheap metrics: outputs, skip reasons, bad audio, resume."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from sealign.cli import main
from sealign.data.manifest import write_manifest


def _make(tmp_path, speech, noisy):
    rows = []
    for i in range(3):
        clean = speech(i)
        sf.write(tmp_path / f"c{i}.wav", clean, 16000)
        sf.write(tmp_path / f"n{i}.wav", noisy(clean, 5, seed=i), 16000)
        rows.append({"id": f"u{i}", "audio": f"n{i}.wav", "reference": f"c{i}.wav"})
    rows.append({"id": "noref", "audio": "n0.wav"})
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    rows.append({"id": "bad", "audio": "bad.wav", "reference": "c0.wav"})
    write_manifest(tmp_path / "m.jsonl", rows)
    return tmp_path / "m.jsonl"


def test_score_manifest_then_resume(tmp_path, speech, noisy):
    m = _make(tmp_path, speech, noisy)
    out = tmp_path / "out"
    args = [
        "score",
        "--manifest",
        str(m),
        "--output",
        str(out),
        "--metrics",
        "si_sdr,estoi",
        f"cache={tmp_path / 'cache.sqlite'}",
    ]
    assert main(args) == 0
    recs = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in recs}
    assert set(by_id) == {"u0", "u1", "u2", "noref", "bad"}
    assert 3 < by_id["u0"]["scores"]["si_sdr"] < 7
    assert by_id["noref"]["skipped"] == {"si_sdr": "no reference", "estoi": "no reference"}
    assert "unreadable" in by_id["bad"]["errors"]["audio"]
    summary = (out / "summary.md").read_text()
    assert "si_sdr" in summary and "1 no reference" in summary
    assert (
        (out / "summary.csv").exists()
        and (out / "config.yaml").exists()
        and (out / "log.jsonl").exists()
    )

    # simulate a run killed mid-write: keep two lines and a truncated third, then resume
    lines = (out / "scores.jsonl").read_text().splitlines()
    (out / "scores.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])
    assert main([*args, "--resume"]) == 0
    again = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in again) == sorted(by_id)
    assert {r["id"]: r for r in again}["u1"]["scores"] == by_id["u1"]["scores"]

    # resuming with a metric the first run did not have scores it for every utterance
    assert main([*args[:-2], "si_sdr,estoi,pesq_wb", args[-1], "--resume"]) == 0
    more = {r["id"]: r for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines())}
    assert sorted(more) == sorted(by_id)  # one record per utterance
    assert all("pesq_wb" in more[u]["scores"] for u in ("u0", "u1", "u2"))
    assert more["noref"]["skipped"]["pesq_wb"] == "no reference"
    assert more["u1"]["scores"]["si_sdr"] == by_id["u1"]["scores"]["si_sdr"]


def test_score_resume_follows_a_changed_manifest(tmp_path, speech, noisy, capsys):
    m = _make(tmp_path, speech, noisy)
    out = tmp_path / "out"
    args = _score_args(m, out)
    assert main(args) == 0
    before = {r["id"]: r for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines())}
    # u0 now points to another recording, u2's file was replaced in place, u1 left, x9 came
    rows = [json.loads(x) for x in m.read_text().splitlines()]
    rows = [r for r in rows if r["id"] != "u1"] + [
        {"id": "x9", "audio": "n1.wav", "reference": "c1.wav"}
    ]
    rows[0].update(audio="n1.wav", reference="c1.wav")
    write_manifest(m, rows)
    sf.write(tmp_path / "n2.wav", speech(2), 16000)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "dropping 1 records of utterances not in this run's input" in err
    assert "text of 2 utterances changed since they were scored" in err
    after = {r["id"]: r for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines())}
    assert sorted(after) == sorted(r["id"] for r in rows)  # the table is this manifest's
    assert after["u0"]["scores"]["si_sdr"] != before["u0"]["scores"]["si_sdr"]
    assert after["u2"]["scores"]["si_sdr"] > 40  # the clean speech itself now
    assert after["noref"] == before["noref"]  # unchanged: not scored again


def test_score_resume_with_changed_metric_settings_scores_everything_again(
    tmp_path, speech, noisy, capsys
):
    m = _make(tmp_path, speech, noisy)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    args = ["score", "--manifest", str(m), "--metrics", "lsd,si_sdr",
            f"cache={tmp_path / 'cache.sqlite'}"]  # fmt: skip
    assert main([*args, "--output", str(out)]) == 0
    settings = json.loads((out / "scores.jsonl.metrics.json").read_text())
    assert settings["lsd"][1] == {
        "gain": "least_squares",
        "max_length_mismatch": 0.1,
        "sample_rate": 16000,
    }
    lines = (out / "scores.jsonl").read_text().splitlines()
    (out / "scores.jsonl").write_text("\n".join(lines[:2]) + "\n")  # killed after two
    # resumed with another gain (an upgrade that changed a default acts the same way)
    assert main([*args, "--output", str(out), "metric_options.lsd.gain=rms", "--resume"]) == 0
    assert main([*args, "--output", str(fresh), "metric_options.lsd.gain=rms"]) == 0

    def scores(folder):
        recs = map(json.loads, (folder / "scores.jsonl").read_text().splitlines())
        return {r["id"]: r["scores"] for r in recs}

    assert scores(out) == scores(fresh)  # no utterance kept the old gain's LSD
    assert json.loads((out / "scores.jsonl.metrics.json").read_text())["lsd"][1]["gain"] == "rms"

    # a run resumed without lsd, then with it and another gain: lsd's record was kept
    assert main([*args, "--output", str(out)]) == 2  # an earlier run's scores stay
    assert "holds the results of an earlier run" in capsys.readouterr().err
    (out / "scores.jsonl").unlink()
    assert main([*args, "--output", str(out)]) == 0  # least squares again, from the start
    (out / "scores.jsonl").write_text("\n".join(lines[:2]) + "\n")
    assert main([*args[:4], "si_sdr", args[5], "--output", str(out), "--resume"]) == 0
    assert "lsd" in json.loads((out / "scores.jsonl.metrics.json").read_text())
    assert main([*args, "--output", str(out), "metric_options.lsd.gain=rms", "--resume"]) == 0
    assert scores(out) == scores(fresh)  # fresh: the rms run above
    # scores written before sealign recorded settings (no record): all scored again
    (out / "scores.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (out / "scores.jsonl.metrics.json").unlink()
    assert main([*args, "--output", str(out), "metric_options.lsd.gain=rms", "--resume"]) == 0
    assert scores(out) == scores(fresh)


def test_score_directory_pairs_and_bad_config(tmp_path, speech, noisy):
    (tmp_path / "clean").mkdir()
    (tmp_path / "enh").mkdir()
    x = speech(0)
    sf.write(tmp_path / "clean" / "a.wav", x, 16000)
    sf.write(tmp_path / "enh" / "a.wav", noisy(x, 20), 16000)
    sf.write(tmp_path / "enh" / "lonely.wav", x, 16000)
    out = tmp_path / "o"
    assert (
        main(
            [
                "score",
                "--input",
                str(tmp_path / "enh"),
                "--reference",
                str(tmp_path / "clean"),
                "--output",
                str(out),
                "--metrics",
                "pesq_wb",
                "--no-cache",
            ]
        )
        == 0
    )
    (rec,) = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert 1.0 < rec["scores"]["pesq_wb"] < 4.0
    # a stereo recording is averaged to mono, as enhance and a manifest's files are
    (tmp_path / "rec").mkdir()
    sf.write(tmp_path / "rec" / "st.wav", np.stack([x, 0.5 * x], axis=1), 16000)
    args = ["score", "--input", str(tmp_path / "rec"), "--output", str(tmp_path / "o2")]
    assert main([*args, "--metrics", "si_sdr", "--no-cache"]) == 0
    assert len((tmp_path / "o2" / "scores.jsonl").read_text().splitlines()) == 1
    # invalid configuration fails before any work, naming the key
    assert main(["score", "--input", str(tmp_path / "enh"), "--output", str(out), "thredas=2"]) == 2
    assert (
        main(["score", "--input", str(tmp_path / "enh"), "--output", str(out), "--metrics", "nope"])
        == 2
    )
    if not torch.cuda.is_available():  # a GPU this machine lacks, before any scoring
        gpu = ["--metrics", "pesq_wb,dnsmos", "--metric-device", "cuda"]
        assert main(["score", "--input", str(tmp_path / "enh"), "--output", str(out), *gpu]) == 2


def test_sine_is_not_speech_but_scores(tmp_path):
    # a metric computes on any valid signal; the runner never crashes on odd but valid audio
    t = np.arange(16000) / 16000
    for folder, gain in (("enh", 0.3), ("ref", 0.2)):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "s.wav", gain * np.sin(2 * np.pi * 300 * t), 16000)
    out = tmp_path / "o"
    args = ["score", "--input", str(tmp_path / "enh"), "--reference", str(tmp_path / "ref"),
            "--output", str(out), "--metrics", "si_sdr,dnsmos", "--no-cache"]  # fmt: skip
    assert main(args) == 0
    (rec,) = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert rec["scores"]["si_sdr"] > 40  # the same tone, scaled
    assert 1.0 <= rec["scores"]["dnsmos_ovrl"] <= 5.0


def _score_args(m, out, *extra):
    return ["score", "--manifest", str(m), "--output", str(out), "--metrics", "si_sdr,estoi",
            "cache=null", *extra]  # fmt: skip


def _same_records(a, b):
    """Same ids in the same order, same skips and errors, scores equal up to float rounding (a
    batch of other utterances may change the last bits)."""
    ra, rb = (
        [json.loads(x) for x in (d / "scores.jsonl").read_text().splitlines()] for d in (a, b)
    )
    assert [r["id"] for r in ra] == [r["id"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert (x["skipped"], x["errors"]) == (y["skipped"], y["errors"])
        assert x["scores"] == pytest.approx(y["scores"], rel=1e-9)


def test_shards_merge_into_the_unsharded_table(tmp_path, speech, noisy, capsys):
    m = _make(tmp_path, speech, noisy)
    one, split = tmp_path / "one", tmp_path / "split"
    assert main(_score_args(m, one)) == 0
    spelled = _score_args(m, split, "--shard", "1/2")
    spelled[spelled.index("--manifest") + 1] = os.path.relpath(m)  # one file, spelled otherwise
    assert main(spelled) == 0
    shard1 = [json.loads(x) for x in (split / "scores.shard-1-of-2.jsonl").read_text().splitlines()]
    assert [r["id"] for r in shard1] == ["u1", "noref"]  # rows 1 and 3 of 5
    assert not (split / "summary.md").exists()
    assert main(["score", "--output", str(split), "--merge"]) == 2  # shard 0/2 has not run
    assert "shard 0/2 has not finished" in capsys.readouterr().err
    assert (split / "scores.shard-1-of-2.jsonl").is_file()  # nothing was merged
    # a shard with other job settings would be merged as one table with the first
    other = ["score", "--manifest", str(m), "--output", str(split), "--metrics", "si_sdr",
             "cache=null", "--shard", "0/2"]  # fmt: skip
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "metrics: ['si_sdr', 'estoi'] → ['si_sdr'] differ from the settings in" in err
    assert main([*_score_args(m, split, "--shard", "0/2"), "--threads", "1"]) == 0  # per process
    capsys.readouterr()
    assert main(["score", "--output", str(split), "--merge"]) == 0
    table = capsys.readouterr().out
    assert not list(split.glob("scores.shard-*"))
    _same_records(split, one)  # the merged file is the unsharded one
    assert "si_sdr" in table and "1 no reference" in (split / "summary.md").read_text()
    assert main(["score", "--output", str(split), "--merge"]) == 2  # nothing left to merge
    # the finished job resumed, sharded, with a metric more: not another job's shard
    assert main(_score_args(m, split, "--shard", "0/1", "--resume")) == 0
    more = ["score", "--manifest", str(m), "--output", str(split), "--metrics", "si_sdr,estoi,lsd",
            "cache=null", "--resume", "--shard"]  # fmt: skip
    assert main([*more, "0/2"]) == 0
    capsys.readouterr()
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "config.yaml").write_text(
        "models: [a]\nnames: []\nmanifest: m\nsamples: 2\n"
    )
    assert main(_score_args(m, tmp_path / "ev")) == 2  # not into another command's run
    assert "holds the run of another command" in capsys.readouterr().err
    assert main(_score_args(m, split, "--shard", "2/2")) == 2
    assert "--shard: '2/2' is not K/N" in capsys.readouterr().err


@pytest.mark.parametrize("nodes, port", [(1, 29585), (2, 29588)])
def test_score_under_torchrun_splits_the_utterances(tmp_path, speech, noisy, torchrun, nodes, port):
    # two nodes: the shard follows the global RANK, not LOCAL_RANK (0 on both "machines")
    m = _make(tmp_path, speech, noisy)
    one, ddp = tmp_path / "one", tmp_path / "ddp"
    assert main(_score_args(m, one)) == 0
    proc = torchrun(port, *_score_args(m, ddp), nodes=nodes)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[rank 1] INFO sealign.utils.shard: shard 1/2 done" in proc.stderr
    _same_records(ddp, one)
    assert (ddp / "summary.md").is_file() and not list(ddp.glob("scores.shard-*"))


def test_merging_builds_the_metrics_on_the_cpu_whatever_the_shards_ran_on():
    from sealign.eval.score import ScoreConfig, build_metrics

    cfg = ScoreConfig(metrics=["dnsmos"], metric_device="cuda",
                      metric_options={"dnsmos": {"device": "cuda:1", "mode": "fast"}})  # fmt: skip
    cpu = cfg.on_cpu()
    assert cpu.metric_device == "cpu" and cpu.metric_options == {"dnsmos": {"mode": "fast"}}
    assert build_metrics(cpu)["dnsmos"].info.outputs  # builds here, where cuda would not


def _in_every_rank(tmp_path, monkeypatch, code: str) -> None:
    """Run ``code`` (top-level Python, ``os`` imported) at the start of every process this
    test launches, through a ``sitecustomize`` that only acts under SEALIGN_TEST_HOOK."""
    hook = tmp_path / "hook"
    hook.mkdir()
    body = "".join(f"    {line}\n" for line in code.splitlines())
    (hook / "sitecustomize.py").write_text(
        f"import os\nif os.environ.get('SEALIGN_TEST_HOOK'):\n{body}"
    )
    monkeypatch.syspath_prepend(str(hook))
    monkeypatch.setenv("SEALIGN_TEST_HOOK", "1")


def test_a_rank_that_dies_during_set_up_ends_the_other_machines_wait(
    tmp_path, speech, noisy, torchrun, monkeypatch
):
    """Two "machines": rank 1 exits while it builds its metrics (after the ranks joined their
    group, before the shards' start barrier). Rank 0 fails with a message instead of waiting
    for it (on one machine torchrun's agent would end it; across machines nothing does)."""
    m = _make(tmp_path, speech, noisy)
    _in_every_rank(
        tmp_path, monkeypatch,
        "if os.environ.get('RANK') == '1':\n"
        "    import sealign.commands.score as s\n"
        "    s.build_metrics = lambda cfg: os._exit(3)\n",
    )  # fmt: skip
    proc = torchrun(29594, *_score_args(m, tmp_path / "ddp"), nodes=2)
    assert proc.returncode != 0
    assert "a rank of this torchrun launch failed or stopped before the job's start" in proc.stderr


def test_a_rank_that_dies_before_joining_ends_the_other_machines_wait(
    tmp_path, speech, noisy, torchrun, monkeypatch
):
    """Two "machines": rank 1 exits before it joins the process group. Rank 0 fails when the
    join times out (here 5 s instead of 15 minutes), not after the collective timeout."""
    m = _make(tmp_path, speech, noisy)
    _in_every_rank(
        tmp_path, monkeypatch,
        "if os.environ.get('RANK') == '1':\n"
        "    os._exit(3)\n"
        "import datetime\n"
        "import sealign.train.distributed as d\n"
        "d.JOIN_TIMEOUT = datetime.timedelta(seconds=5)\n",
    )  # fmt: skip
    proc = torchrun(29596, *_score_args(m, tmp_path / "ddp"), nodes=2)
    assert proc.returncode != 0
    assert "the ranks of this torchrun launch did not all join within 0:00:05" in proc.stderr


def test_workers_score_metrics_side_by_side_with_the_same_records(tmp_path, speech, noisy):
    import threading

    from sealign.data.manifest import read_manifest
    from sealign.eval.score import ScoreConfig, build_metrics, score_entries
    from sealign.metrics.base import Metric, MetricInfo

    entries = read_manifest(_make(tmp_path, speech, noisy))
    both = threading.Barrier(2, timeout=20)  # each metric waits for the other to be running

    class Waits(Metric):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.info = MetricInfo(name, (name,), (True,), ((0.0, 1.0),))

        def _score(self, utts):
            both.wait()
            return [{self.info.name: 0.5} for _ in utts]

    metrics = {"first": Waits("first"), "second": Waits("second")}
    cfg = ScoreConfig(metrics=["si_sdr"], workers=2, cache=None)
    recs = score_entries(entries, cfg, metrics=metrics, progress=False)
    assert [list(r["scores"]) for r in recs if r["scores"]] == [["first", "second"]] * 4

    names = ["si_sdr", "estoi", "pesq_wb"]
    one = ScoreConfig(metrics=names, cache=None)
    two = ScoreConfig(metrics=names, workers=2, batch_size=2, cache=None)
    assert two.metric_threads() == 1 and one.metric_threads() == 2
    a = score_entries(entries, one, metrics=build_metrics(one), progress=False)
    b = score_entries(entries, two, metrics=build_metrics(two), progress=False)
    assert json.dumps(a) == json.dumps(b)  # values, columns and their order
    with pytest.raises(ValueError, match="workers"):
        ScoreConfig(metrics=names, workers=0)
