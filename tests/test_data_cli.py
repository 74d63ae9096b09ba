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
    deg = tmp_path / "noisy"
    assert main(["data", "degrade", "--manifest", str(out / "test.jsonl"), "--output", str(deg),
                 "--workers", "1", "degradation.p_reverb=0.0"]) == 0  # fmt: skip
    noisy = read_manifest(deg / "manifest.jsonl")
    assert [e.id for e in noisy] == [e.id for e in test]
    assert all("degradation" in e.extra and e.reference for e in noisy)


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
