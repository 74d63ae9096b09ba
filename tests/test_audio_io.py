import logging

import numpy as np
import pytest
import soundfile as sf

from sealign.audio.io import (
    AudioError,
    AudioLimits,
    load_audio,
    resample,
    validate_audio,
    write_audio,
)


def test_load_resample_and_mixdown(tmp_path, speech):
    wav = speech(0)
    stereo = np.stack([wav, 0.5 * wav], axis=1)
    p = tmp_path / "s.flac"
    sf.write(p, stereo, 16000)
    out, sr = load_audio(p, sample_rate=8000)
    assert sr == 8000 and out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - wav.size // 2) <= 2
    assert np.abs(out).max() <= 1.0
    sf.write(p, np.stack([wav, -wav], axis=1), 16000)  # channels in antiphase
    with pytest.raises(AudioError, match="its 2 channels cancel out when averaged to mono"):
        load_audio(p)


def test_resample_roundtrip_preserves_tone():
    t = np.arange(16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = resample(resample(x, 16000, 48000), 48000, 16000)
    assert np.max(np.abs(x[100:-100] - y[100:-100])) < 1e-2


@pytest.mark.parametrize(
    "content,msg",
    [
        (np.zeros(16000, np.float32), "all zeros"),
        (np.full(16000, np.nan, np.float32), "NaN"),
        (np.ones(10, np.float32) * 0.1, "too short"),
    ],
)
def test_validation_errors_name_the_problem(content, msg):
    with pytest.raises(AudioError, match=msg):
        validate_audio(content, 16000, name="x.wav")


def test_too_long_and_clipping_warning(caplog):
    with pytest.raises(AudioError, match="too long"):
        validate_audio(
            np.ones(16000 * 3, np.float32) * 0.1, 16000, limits=AudioLimits(max_duration=2)
        )
    with caplog.at_level(logging.WARNING):
        validate_audio(np.sign(np.sin(np.arange(16000))).astype(np.float32), 16000, name="clip.wav")
    assert "clipping" in caplog.text


def test_corrupt_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav: empty file"):
        load_audio(empty)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError, match="corrupt.wav: unreadable"):
        load_audio(corrupt)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "a.wav").mkdir()
    with pytest.raises(AudioError, match="a.wav: a folder, not an audio file"):
        load_audio(tmp_path / "a.wav")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: audio contains NaN"):
        load_audio(nan)


def test_write_audio_is_atomic_and_readable(tmp_path, speech):
    p = tmp_path / "a" / "b.wav"
    write_audio(p, speech(1), 16000)
    assert p.exists() and not list(p.parent.glob("*.tmp"))
    y, sr = load_audio(p)
    assert sr == 16000 and y.size == speech(1).size


def test_a_file_beyond_max_duration_is_refused_before_decoding(tmp_path, monkeypatch):
    import sealign.audio.io as aio

    path = tmp_path / "long.wav"
    sf.write(path, np.full(32000, 0.1, np.float32), 16000)

    def no_decoding(p):
        raise AssertionError("decoded")

    monkeypatch.setattr(aio, "_read_any", no_decoding)
    with pytest.raises(aio.AudioError, match="too long"):
        aio.load_audio(path, 16000, aio.AudioLimits(max_duration=1.0))


def test_near_silent_audio_is_silent():
    from sealign.audio.io import AudioError, validate_audio

    with pytest.raises(AudioError, match="silent"):
        validate_audio(np.full(16000, 1e-30, np.float32), 16000)
    validate_audio(np.full(16000, 1e-4, np.float32), 16000)  # quiet, not silent


def test_a_truncated_wav_is_read_with_one_warning(tmp_path, caplog):
    full = tmp_path / "full.wav"
    sf.write(full, np.full(48000, 0.1, np.float32), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:48044])  # the 44-byte header and half the samples
    with caplog.at_level(logging.WARNING, logger="sealign.audio.io"):
        assert load_audio(full)[0].size == 48000
        assert "header announces" not in caplog.text
        y, _ = load_audio(cut)
        load_audio(cut)
    assert y.size == 24000
    assert caplog.text.count("header announces") == 1
    assert "cut.wav: truncated: its header announces 3.00 s, the file holds 1.50 s" in caplog.text


def test_as_written_is_what_a_written_file_reads_back(tmp_path):
    from sealign.audio.io import as_written

    rng = np.random.default_rng(0)
    x = np.clip(0.2 * rng.standard_normal(8000), -0.9, 0.9).astype(np.float32)
    x[:10] = 1e-6  # below a 16-bit step
    write_audio(tmp_path / "x.wav", x, 16000)
    assert np.array_equal(as_written(x), load_audio(tmp_path / "x.wav", limits=None)[0])
    loud = 2 * x  # overshoots full scale: scaled, as enhance writes it, not clipped
    y = as_written(loud)
    assert np.abs(y).max() == pytest.approx(0.99, abs=1e-4)
    assert np.corrcoef(y, loud)[0, 1] > 0.9999
    bad = x.copy()
    bad[5] = np.nan  # left as it is, for the metrics to refuse, not written as full scale
    assert np.array_equal(as_written(bad), bad, equal_nan=True)
