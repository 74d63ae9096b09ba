"""`sealign data synth / degrade / import` end to end on tiny inputs."""

import json

import numpy as np
import soundfile as sf

from sealign.cli import main
from sealign.data.manifest import read_manifest


def test_synth_then_degrade(tmp_path):
    out = tmp_path / "clean"
    rc = main(["data", "synth", "--output", str(out), "--n", "9", "--engines", "espeak",
               "--workers", "1", "splits=[3,0,6]", "min_test_speakers=6"])  # fmt: skip
    assert rc == 0
    test = read_manifest(out / "test.jsonl")
    train = read_manifest(out / "train.jsonl")
    assert len(test) == 6 and len(train) == 3
    assert {e.extra["speaker"] for e in test}.isdisjoint({e.extra["speaker"] for e in train})
    assert len({e.extra["speaker"] for e in test}) == 6
    # a re-run killed before it wrote its manifests leaves none over audio it replaced
    import sealign.data.synth as synth

    def killed(*a, **k):
        raise KeyboardInterrupt

    saved, synth._run_tasks = synth._run_tasks, killed
    try:
        assert main(["data", "synth", "--output", str(out), "--n", "9", "--engines", "espeak",
                     "--workers", "1", "splits=[3,0,6]", "min_test_speakers=6",
                     "--seed", "1"]) != 0  # fmt: skip
    finally:
        synth._run_tasks = saved
    assert not (out / "test.jsonl").exists() and not (out / "train.jsonl").exists()
    assert main(["data", "synth", "--output", str(out), "--n", "9", "--engines", "espeak",
                 "--workers", "1", "splits=[3,0,6]", "min_test_speakers=6"]) == 0  # fmt: skip
    assert read_manifest(out / "test.jsonl") == test  # every file reused
    deg = tmp_path / "noisy"
    assert main(["data", "degrade", "--manifest", str(out / "test.jsonl"), "--output", str(deg),
                 "--workers", "1", "degradation.p_reverb=0.0"]) == 0  # fmt: skip
    noisy = read_manifest(deg / "manifest.jsonl")
    assert [e.id for e in noisy] == [e.id for e in test]
    assert all("degradation" in e.extra and e.reference for e in noisy)
    # in two shards (babble still drawn from the whole corpus), then once more without --shard:
    # every utterance is reused and comes out as in the unsharded run
    split = tmp_path / "split"
    args = ["data", "degrade", "--manifest", str(out / "test.jsonl"), "--output", str(split),
            "--workers", "1", "degradation.p_reverb=0.0"]  # fmt: skip
    for k in (0, 1):
        assert main([*args, "--shard", f"{k}/2"]) == 0
    assert len(read_manifest(split / "manifest.shard-1-of-2.jsonl")) == 3
    assert not (split / "manifest.jsonl").exists()
    assert main(args) == 0
    again = read_manifest(split / "manifest.jsonl")
    assert [e.extra["degradation"] for e in again] == [e.extra["degradation"] for e in noisy]
    for a, b in zip(again, noisy, strict=True):
        np.testing.assert_array_equal(sf.read(a.audio)[0], sf.read(b.audio)[0])
    log = [json.loads(x) for x in (split / "log.jsonl").read_text().splitlines()]
    assert log[-1]["data/reused"] == 6 and log[-1]["data/computed"] == 0


def test_synth_in_shards_then_once_more_reuses_every_utterance(tmp_path):
    args = ["data", "synth", "--num-utterances", "6", "--engines", "espeak", "--workers", "1",
            "splits=[2,0,4]", "min_test_speakers=4"]  # fmt: skip
    one, split = tmp_path / "one", tmp_path / "split"
    assert main([*args, "--output", str(one)]) == 0
    for k in (1, 0):
        assert main([*args, "--output", str(split), "--shard", f"{k}/2"]) == 0
    assert len(list(split.rglob("*.wav"))) == 6 and not (split / "test.jsonl").exists()
    assert main([*args, "--output", str(split)]) == 0
    for name in ("train.jsonl", "test.jsonl"):
        a, b = read_manifest(one / name), read_manifest(split / name)
        assert [(e.id, e.text, e.extra["speaker"]) for e in a] == [
            (e.id, e.text, e.extra["speaker"]) for e in b
        ]
    log = [json.loads(x) for x in (split / "log.jsonl").read_text().splitlines()]
    assert log[-1]["data/reused"] == 6 and log[-1]["data/synthesized"] == 0
    assert not list(split.glob("*.done"))


def test_degrade_requires_manifest(tmp_path):
    assert main(["data", "degrade", "--output", str(tmp_path / "x")]) == 2


def test_import_parallel_reports_mismatch(tmp_path):
    for d in ("noisy", "clean"):
        (tmp_path / d).mkdir()
    x = 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    for name in ("a", "b"):
        sf.write(tmp_path / "noisy" / f"{name}.wav", x, 16000)
    sf.write(tmp_path / "clean" / "a.wav", x, 16000)
    out = tmp_path / "m.jsonl"
    assert main(["data", "import", "parallel", "--noisy", str(tmp_path / "noisy"),
                 "--clean", str(tmp_path / "clean"), "--output", str(out)]) == 0  # fmt: skip
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a"]
    assert "b" in (tmp_path / "m.jsonl.problems.txt").read_text()
    sf.write(tmp_path / "clean" / "b.wav", np.zeros(16000, np.float32), 16000)
    assert main(["data", "import", "parallel", "--noisy", str(tmp_path / "noisy"),
                 "--clean", str(tmp_path / "clean"), "--output", str(out),
                 "--check-audio"]) == 0  # fmt: skip
    assert "every sample is zero [silent]" in (tmp_path / "m.jsonl.problems.txt").read_text()


def test_import_names_the_missing_flags(tmp_path, capsys):
    out = str(tmp_path / "m.jsonl")
    assert main(["data", "import", "parallel", "--output", out]) == 2
    assert "missing --noisy, --clean" in capsys.readouterr().err
    assert main(["data", "import", "recordings", "--output", out]) == 2
    assert "missing --noisy or --root" in capsys.readouterr().err


def test_data_demo_takes_a_config_files_settings_over_the_default_preset(tmp_path, monkeypatch):
    import sealign.commands.data_synth as ds

    seen = []
    monkeypatch.setattr(ds, "build_demo_corpus", lambda cfg: seen.append(cfg) or {})
    cfg = tmp_path / "small.yaml"
    cfg.write_text(
        f"output: {tmp_path / 'small'}\nsynth:\n  n_utterances: 20\n  splits: [14, 3, 3]\n"
    )
    assert main(["data", "demo", "--config", str(cfg)]) == 0
    assert seen[-1].synth.n_utterances == 20 and list(seen[-1].synth.splits) == [14, 3, 3]
    assert main(["data", "demo", "--output", str(tmp_path / "d")]) == 0  # no file: the preset
    assert seen[-1].synth.n_utterances == 176
