import json

import numpy as np
import pytest
import soundfile as sf

from sealign.data.manifest import (
    ManifestError,
    from_kaldi,
    read_manifest,
    relocate,
    write_manifest,
)


def _wav(p, n=1600):
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(p, 0.1 * np.random.default_rng(0).standard_normal(n).astype(np.float32), 16000)


def test_roundtrip_and_relative_paths(tmp_path):
    _wav(tmp_path / "a.wav")
    m = tmp_path / "m.jsonl"
    write_manifest(m, [{"id": "a", "audio": "a.wav", "text": "hi", "snr": 5}])
    (e,) = read_manifest(m, check_files=True)
    assert e.audio == str(tmp_path / "a.wav") and e.text == "hi" and e.extra == {"snr": 5}


def test_relocated_entries_read_back_from_a_relative_working_directory(tmp_path, monkeypatch):
    # manifests read and rewritten elsewhere with relative paths (e.g. `--output data/demo`)
    monkeypatch.chdir(tmp_path)
    _wav(tmp_path / "corpus" / "noisy" / "a.wav")
    _wav(tmp_path / "refs" / "a.wav")
    write_manifest(
        "corpus/noisy/m.jsonl", [{"id": "a", "audio": "a.wav", "reference": "../../refs/a.wav"}]
    )
    (e,) = read_manifest("corpus/noisy/m.jsonl")
    assert e.audio == "corpus/noisy/a.wav"  # relative to the working directory
    top = write_manifest("corpus/all.jsonl", relocate([e], "corpus/all.jsonl"))
    d = json.loads(top.read_text())
    assert d["audio"] == "noisy/a.wav"  # inside the folder: relative, the folder can move
    assert d["reference"] == str(tmp_path / "refs" / "a.wav")  # outside: absolute
    (back,) = read_manifest(top, check_files=True)
    assert back.audio == "corpus/noisy/a.wav" and e.audio == "corpus/noisy/a.wav"


@pytest.mark.parametrize(
    "lines,msg",
    [
        (['{"id": "a", "audio": "x.wav"}', "{not json"], r"m.jsonl:2: invalid JSON"),
        (['{"audio": "x.wav"}'], r"m.jsonl:1: missing or empty field 'id'"),
        (
            ['{"id": "a", "audio": "x.wav"}', '{"id": "a", "audio": "y.wav"}'],
            r"m.jsonl:2: duplicate id",
        ),
        (['{"id": "a", "audio": 3}'], r"m.jsonl:1: field 'audio' must be a string, got int"),
    ],
)
def test_errors_carry_line_numbers(tmp_path, lines, msg):
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=msg):
        read_manifest(m)


def test_missing_file_check(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"id": "a", "audio": "gone.wav"}) + "\n")
    with pytest.raises(ManifestError, match="m.jsonl:1: audio file not found"):
        read_manifest(m, check_files=True)


def test_from_kaldi(tmp_path):
    (tmp_path / "wav.scp").write_text("u1 a.wav\nu2 /abs/b.wav\n")
    (tmp_path / "text").write_text("u1 hello there\n")
    es = from_kaldi(tmp_path / "wav.scp", tmp_path / "text")
    assert es[0].audio == str(tmp_path / "a.wav") and es[0].text == "hello there"
    assert es[1].audio == "/abs/b.wav" and es[1].text is None
    (tmp_path / "bad.scp").write_text("u1 a.wav\nu2\n")
    with pytest.raises(ManifestError, match="bad.scp:2"):
        from_kaldi(tmp_path / "bad.scp")
    with pytest.raises(ManifestError, match="nope: transcript file .Kaldi text. not found"):
        from_kaldi(tmp_path / "wav.scp", tmp_path / "nope")


def test_signature_follows_the_files_not_their_spelling(tmp_path, monkeypatch):
    from sealign.data.manifest import Entry

    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "a.wav", np.zeros(100, np.float32) + 0.1, 16000)
    sig = Entry("u", "a.wav", text="hi").signature()
    assert Entry("u", str(tmp_path / "a.wav"), text="hi").signature() == sig
    assert Entry("u", "a.wav", text="ho").signature() != sig
    sf.write(tmp_path / "a.wav", np.zeros(200, np.float32) + 0.1, 16000)  # replaced
    assert Entry("u", "a.wav", text="hi").signature() != sig
