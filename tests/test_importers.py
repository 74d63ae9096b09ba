"""Importers on fabricated trees with the official naming; problems are reported, not dropped."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sealign.data.importers import (
    import_dns2020,
    import_parallel,
    import_recordings,
    import_voicebank,
    run_import,
)
from sealign.data.manifest import ManifestError, read_manifest


def _wav(path, n=1600, sr=16000, channels=1, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.random.default_rng(seed).standard_normal((n, channels)).astype(np.float32)
    sf.write(path, x if channels > 1 else x[:, 0], sr)
    return path


def _dns_tree(root):
    syn = root / "test_set" / "synthetic"
    noisy_names = {
        0: "book_02054_chp_0013_reader_06262_7_door_Freesound_validated_380758_0_snr4_fileid_0",
        1: "book_00001_chp_0002_reader_01326_5_kXyZ_snr-5_fileid_1",
        2: "book_00101_chp_0003_reader_00412_2_babble_snr15_fileid_2",
        3: "book_00030_chp_0004_reader_00777_1_fan_snr0_fileid_3",
    }
    for subset in ("no_reverb", "with_reverb"):
        for fid, name in noisy_names.items():
            _wav(syn / subset / "noisy" / f"{name}.wav", seed=fid)
            if subset == "no_reverb" and fid == 3:
                continue  # missing clean partner
            sr = 8000 if (subset == "no_reverb" and fid == 2) else 16000
            n = 800 if sr == 8000 else 1600
            _wav(syn / subset / "clean" / f"clean_fileid_{fid}.wav", n=n, sr=sr, seed=10 + fid)
    return root


def test_dns2020_pairs_and_reports(tmp_path):
    root = _dns_tree(tmp_path / "dns")
    entries, problems = import_dns2020(root)
    ids = [e.id for e in entries]
    assert ids == [
        "no_reverb/fileid_0",
        "no_reverb/fileid_1",
        "with_reverb/fileid_0",
        "with_reverb/fileid_1",
        "with_reverb/fileid_2",
        "with_reverb/fileid_3",
    ]
    kinds = sorted(p.kind for p in problems)
    assert kinds == ["missing_partner", "wrong_rate"]
    wrong = next(p for p in problems if p.kind == "wrong_rate")
    assert "clean_fileid_2" in wrong.path and "8000 Hz; expected 16000 Hz" in wrong.detail
    missing = next(p for p in problems if p.kind == "missing_partner")
    assert missing.path.endswith("snr0_fileid_3.wav") and "no clean partner" in missing.detail
    e = entries[0]
    assert e.audio.endswith("snr4_fileid_0.wav") and e.reference.endswith("clean_fileid_0.wav")
    assert e.extra["snr_db"] == 4.0 and e.extra["speaker"] == "06262" and e.text is None
    assert entries[1].extra["snr_db"] == -5.0
    assert entries[-1].extra["reverberant_reference"] is True
    assert not entries[0].extra["reverberant_reference"]
    # a single subset folder works, and strict mode raises with the reasons
    sub, _ = import_dns2020(root / "test_set" / "synthetic" / "with_reverb")
    assert len(sub) == 4 and sub[0].id == "with_reverb/fileid_0"
    with pytest.raises(ManifestError, match="2 problems.*expected 16000 Hz"):
        import_dns2020(root, strict=True)


def test_dns2020_length_mismatch_and_unrecognised(tmp_path):
    syn = tmp_path / "synthetic" / "no_reverb"
    _wav(syn / "clean" / "clean_fileid_5.wav", n=1600)
    _wav(syn / "noisy" / "x_snr3_fileid_5.wav", n=1700)
    _wav(syn / "clean" / "clean_fileid_6.wav")
    _wav(syn / "noisy" / "x_snr3_fileid_6.wav")
    _wav(syn / "noisy" / "no_id_here.wav")
    entries, problems = import_dns2020(tmp_path)
    assert [e.id for e in entries] == ["no_reverb/fileid_6"]
    assert sorted(p.kind for p in problems) == ["length_mismatch", "unrecognised_name"]
    assert "1700 samples" in str(problems[0]) or "1700 samples" in str(problems[1])


def test_voicebank(tmp_path):
    root = tmp_path / "vb"
    for name in ("p232_001", "p232_002", "p257_010"):
        _wav(root / "clean_testset_wav" / f"{name}.wav", sr=48000, n=4800)
        channels = 2 if name == "p232_002" else 1
        _wav(root / "noisy_testset_wav" / f"{name}.wav", sr=48000, n=4800, channels=channels)
    (root / "testset_txt").mkdir()
    (root / "testset_txt" / "p232_001.txt").write_text("Please call Stella.\n")
    entries, problems = import_voicebank(root)
    assert [e.id for e in entries] == ["p232_001", "p257_010"]
    assert entries[0].text == "Please call Stella." and entries[1].text is None
    assert entries[0].extra["speaker"] == "p232" and entries[1].extra["speaker"] == "p257"
    assert entries[0].audio.endswith("noisy_testset_wav/p232_001.wav")
    assert entries[0].reference.endswith("clean_testset_wav/p232_001.wav")
    (p,) = problems
    assert p.kind == "not_mono" and "2 channels; expected mono" in p.detail
    with pytest.raises(ManifestError, match="expected 16000 Hz"):
        import_voicebank(root, sample_rate=16000, strict=True)
    with pytest.raises(ManifestError, match="not a VoiceBank"):
        import_voicebank(tmp_path / "vb" / "testset_txt")
    # the community's 16 kHz copies beside the 48 kHz ones: --sample-rate 16000 takes them;
    # a length tolerance (seconds) accepts a pair 10 samples apart
    for name in ("p232_001", "p257_010"):
        _wav(root / "clean_testset_wav_16k" / f"{name}.wav", sr=16000, n=1600)
        _wav(root / "noisy_testset_wav_16k" / f"{name}.wav", sr=16000, n=1610)
    with pytest.raises(ManifestError, match="_16k/p232_001.wav: 1610 samples"):
        import_voicebank(root, sample_rate=16000)
    entries, problems = import_voicebank(root, sample_rate=16000, length_tolerance=0.001)
    assert len(entries) == 2 and "_16k" in entries[0].audio and not problems
    # the training split (28 speakers) sits beside the test split: --split train
    for name in ("p226_001", "p287_002"):
        _wav(root / "clean_trainset_28spk_wav" / f"{name}.wav", sr=48000, n=4800)
        _wav(root / "noisy_trainset_28spk_wav" / f"{name}.wav", sr=48000, n=4800)
    (root / "trainset_28spk_txt").mkdir()
    (root / "trainset_28spk_txt" / "p226_001.txt").write_text("Ask her to bring these things.\n")
    train, problems = import_voicebank(root, split="train")
    assert [e.id for e in train] == ["p226_001", "p287_002"] and not problems
    assert train[0].text == "Ask her to bring these things." and "trainset" in train[0].audio
    with pytest.raises(ManifestError, match="split must be 'test' or 'train'"):
        import_voicebank(root, split="valid")


def test_parallel_and_recordings(tmp_path):
    _wav(tmp_path / "noisy" / "a" / "x.wav")
    _wav(tmp_path / "clean" / "a" / "x.flac")
    _wav(tmp_path / "noisy" / "only_noisy.wav")
    _wav(tmp_path / "clean" / "only_clean.wav")
    _wav(tmp_path / "noisy" / "r.wav", sr=16000)
    _wav(tmp_path / "clean" / "r.wav", sr=22050)
    (tmp_path / "clean" / "a" / "x.txt").write_text("hello  world")
    entries, problems = import_parallel(tmp_path / "noisy", tmp_path / "clean")
    assert [(e.id, e.text) for e in entries] == [("a/x", "hello world")]
    assert sorted(p.kind for p in problems) == [
        "missing_partner",
        "missing_partner",
        "rate_mismatch",
    ]
    (tmp_path / "noisy" / "broken.wav").write_bytes(b"RIFF....garbage")
    entries, problems = import_recordings(tmp_path / "noisy")
    assert sorted(e.id for e in entries) == ["a/x", "only_noisy", "r"]
    assert all(e.reference is None for e in entries)
    assert [p.kind for p in problems] == ["unreadable"] and "broken.wav" in problems[0].path


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        import_dns2020(tmp_path / "nope")
    with pytest.raises(ManifestError, match="not found"):
        import_recordings(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no audio files"):
        import_recordings(tmp_path / "empty")
    with pytest.raises(ManifestError, match="not a DNS 2020 synthetic test set"):
        import_dns2020(tmp_path / "empty")
    (tmp_path / "dns" / "no_reverb" / "clean").mkdir(parents=True)
    (tmp_path / "dns" / "no_reverb" / "noisy").mkdir(parents=True)
    with pytest.raises(ManifestError, match="clean folder has no audio files"):
        import_dns2020(tmp_path / "dns")
    _wav(tmp_path / "stereo" / "s.wav", channels=2)
    with pytest.raises(ManifestError, match="no usable entries.*2 channels; expected mono"):
        import_recordings(tmp_path / "stereo")
    _wav(tmp_path / "rate" / "r.wav", sr=8000)
    with pytest.raises(ManifestError, match="8000 Hz; expected 16000 Hz"):
        import_recordings(tmp_path / "rate", sample_rate=16000)


def test_run_import_writes_manifest_and_problem_list(tmp_path):
    root = _dns_tree(tmp_path / "dns")
    out, problems = run_import("dns2020", tmp_path / "m.jsonl", root=root)
    entries = read_manifest(out, check_files=True)
    assert len(entries) == 6 and len(problems) == 2
    listed = (tmp_path / "m.jsonl.problems.txt").read_text().splitlines()
    assert len(listed) == 2 and any("[wrong_rate]" in line for line in listed)
    with pytest.raises(ManifestError, match="unknown import kind"):
        run_import("librispeech", tmp_path / "x.jsonl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match="a manifest is a .jsonl file"):
        run_import("dns2020", tmp_path / "folder", root=root)
    assert not list(tmp_path.glob("*.tmp"))


def test_check_audio_reports_non_finite_and_silent_files(tmp_path):
    _wav(tmp_path / "rec" / "good.wav")
    bad = _wav(tmp_path / "rec" / "nan.wav")
    x, sr = sf.read(bad, dtype="float32")
    x[5] = np.nan
    sf.write(bad, x, sr, subtype="FLOAT")
    sf.write(tmp_path / "rec" / "zero.wav", np.zeros(1600, np.float32), 16000)
    entries, problems = import_recordings(tmp_path / "rec")  # headers only: all three pass
    assert len(entries) == 3 and not problems
    entries, problems = import_recordings(tmp_path / "rec", check_audio=True)
    assert [e.id for e in entries] == ["good"]
    assert sorted((p.kind, p.path.rsplit("/", 1)[-1]) for p in problems) == [
        ("non_finite", "nan.wav"),
        ("silent", "zero.wav"),
    ]
    with pytest.raises(ManifestError, match="2 problems"):
        import_recordings(tmp_path / "rec", check_audio=True, strict=True)
    # a pair is dropped when either side fails
    _wav(tmp_path / "noisy" / "a.wav")
    _wav(tmp_path / "noisy" / "b.wav")
    _wav(tmp_path / "clean" / "b.wav", seed=1)
    sf.write(tmp_path / "clean" / "a.wav", np.zeros(1600, np.float32), 16000)
    entries, problems = import_parallel(tmp_path / "noisy", tmp_path / "clean", check_audio=True)
    assert [e.id for e in entries] == ["b"]
    assert [(p.kind, p.path) for p in problems] == [("silent", str(tmp_path / "clean" / "a.wav"))]


def test_multichannel_files_are_accepted_on_request(tmp_path):
    _wav(tmp_path / "noisy" / "s.wav", channels=2)
    _wav(tmp_path / "clean" / "s.wav", channels=2, seed=1)
    entries, problems = import_parallel(tmp_path / "noisy", tmp_path / "clean", multichannel=True)
    assert [e.id for e in entries] == ["s"] and not problems
    with pytest.raises(ManifestError, match="--multichannel"):
        import_parallel(tmp_path / "noisy", tmp_path / "clean")


def test_parallel_refuses_one_folder_as_both_sides(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for noisy, clean in (("a", "a"), ("a", "a/b")):
        with pytest.raises(ValueError, match="must be separate folders"):
            import_parallel(tmp_path / noisy, tmp_path / clean)
