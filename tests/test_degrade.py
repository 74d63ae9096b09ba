"""Degradation ops, their composition, noise sources and the manifest driver (seeded, fast)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sealign.data import degrade as D
from sealign.data.manifest import Entry, ManifestError, read_manifest
from sealign.data.noise import (
    GENERATORS,
    BabbleItem,
    BabbleSource,
    NoiseBank,
    SampleContext,
    babble_noise,
    detect_layout,
)

SR = 16000


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("kind", sorted(GENERATORS))
@pytest.mark.parametrize("n", [800, 3 * SR])
def test_procedural_noise_finite_length_nonsilent(kind, n):
    for seed in range(3):
        x, info = GENERATORS[kind](n, _rng(seed), sr=SR)
        assert x.shape == (n,) and x.dtype == np.float32
        assert np.all(np.isfinite(x)) and np.sqrt(np.mean(x**2)) > 1e-3
        assert info["kind"] == kind
        json.dumps(info)


def test_babble_noise_from_other_speakers(speech):
    others = [speech(1, "en+f2"), speech(2, "en-us+m7"), speech(3, "en-gb-x-rp+f4")]
    x, info = babble_noise(5 * SR, _rng(1), others)
    assert x.shape == (5 * SR,) and np.all(np.isfinite(x)) and np.std(x) > 1e-3
    assert 3 <= info["n_talkers"] <= 7
    items = [BabbleItem(f"u{i}", f"s{i % 2}", a) for i, a in enumerate(others)]
    src = BabbleSource(items)
    for seed in range(5):
        _, info = src.sample(SR, _rng(seed), SR, SampleContext("u0", "s0"))
        assert set(info["sources"]) == {"u1"}  # only the other speaker's utterance
    assert src.available(SampleContext("x", None))


def test_babble_talkers_are_the_ith_other_item_found_by_index_not_by_scan():
    """The index gives the items a scan of the corpus would (in order), for any target."""
    rng = np.random.default_rng(0)
    items = [BabbleItem(f"u{i % 40}", f"s{rng.integers(5)}" if i % 7 else None, "x.wav")
             for i in range(60)]  # repeated ids and speakers, some unknown  # fmt: skip
    src = BabbleSource(items)
    for ctx in [SampleContext("u3", "s1"), SampleContext("u3", None), SampleContext(None, "s4"),
                SampleContext("nope", "s0"), SampleContext("u10", None)]:  # fmt: skip
        scan = [k for k, it in enumerate(items) if it.utt_id != ctx.utt_id
                and (ctx.speaker is None or it.speaker != ctx.speaker)]  # fmt: skip
        excluded = src._excluded(ctx)
        assert [src._position(i, excluded) for i in range(len(scan))] == scan
        assert src.available(ctx) == bool(scan)
    alone = BabbleSource([BabbleItem("u0", "s0", "x.wav")])
    assert not alone.available(SampleContext("u9", "s0"))
    alone.items.append(BabbleItem("u1", "s1", "x.wav"))  # the index follows a corpus that grows
    assert alone.available(SampleContext("u9", "s0"))
    assert alone._excluded(SampleContext("u1", "s0")) == [0, 1]


def test_silent_or_non_finite_noise_never_poisons_the_mix(speech, tmp_path):
    good = [speech(1, "en+f2"), speech(2, "en-us+m7")]
    bad = [np.full(SR, np.nan, np.float32), np.zeros(SR, np.float32)]
    for seed in range(4):  # every draw that picks a bad talker leaves it out
        x, info = babble_noise(2 * SR, _rng(seed), [bad[0], good[0], bad[1], good[1]])
        assert np.isfinite(x).all() and np.std(x) > 1e-3
        assert set(info["sources"]) <= {1, 3}
    items = [BabbleItem(f"u{i}", f"s{i}", a) for i, a in enumerate([*bad, *good])]
    for seed in range(4):
        x, info = BabbleSource(items).sample(SR, _rng(seed), SR, SampleContext("x", None))
        assert np.isfinite(x).all() and set(info["sources"]) <= {"u2", "u3"}
    with pytest.raises(ValueError, match="non-silent, finite"):
        babble_noise(SR, _rng(0), bad)
    folder = tmp_path / "noise"
    (folder).mkdir()
    sf.write(folder / "a_nan.wav", np.full(SR, np.nan, np.float32), SR, subtype="FLOAT")
    _write(folder / "b_silent.wav", np.zeros(SR))
    _write(folder / "c_ok.wav", 0.1 * _rng(0).standard_normal(SR))
    bank = NoiseBank.from_folder(folder)
    for seed in range(4):
        x, info = bank.sample(SR // 2, _rng(seed))
        assert np.isfinite(x).all() and np.std(x) > 1e-3
        assert {f.rsplit("/", 1)[-1] for f in info["files"]} == {"c_ok.wav"}


def _write(path, x, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr)


def test_noise_folders_layouts_and_short_files(tmp_path):
    rng = _rng(0)
    short = 0.1 * rng.standard_normal(SR // 4)
    _write(tmp_path / "demand" / "DKITCHEN" / "ch01.wav", short)
    _write(tmp_path / "demand" / "TBUS" / "ch01.wav", short)
    _write(tmp_path / "musan" / "noise" / "free-sound" / "a.wav", short)
    _write(tmp_path / "musan" / "noise" / "sound-bible" / "b.wav", short)
    _write(tmp_path / "musan" / "music" / "fma" / "m.wav", short)
    stereo = 0.1 * rng.standard_normal((48000 // 4, 2))
    _write(tmp_path / "dns" / "datasets_fullband" / "noise_fullband" / "n.wav", stereo, 48000)
    _write(tmp_path / "dns20" / "datasets" / "noise" / "n.wav", short)
    _write(tmp_path / "dns20" / "datasets" / "clean" / "c.wav", short)
    expect = {
        "demand": ("demand", 2),
        "musan": ("musan", 2),
        "dns": ("dns", 1),
        "dns20": ("dns", 1),
    }
    for name, (layout, n_src) in expect.items():
        assert detect_layout(tmp_path / name) == layout
        bank = NoiseBank.from_folder(tmp_path / name)
        assert len(bank) == n_src
        x, info = bank.sample(SR, _rng(3))  # 1 s from 0.25 s files: concatenation
        assert x.shape == (SR,) and np.all(np.isfinite(x)) and np.std(x) > 1e-3
        assert info["kind"] == "file" and len(info["files"]) >= 4
        assert not any("clean" in f for f in info["files"])
    assert len(NoiseBank.from_folder(tmp_path / "musan", include_music=True)) == 3
    with pytest.raises(ValueError, match="not found"):
        NoiseBank.from_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        NoiseBank.from_folder(tmp_path / "empty")
    # a file that cannot be opened is left out once, when the bank is built, not at each draw
    (tmp_path / "dns20" / "datasets" / "noise" / "broken.wav").write_bytes(b"not audio")
    bank = NoiseBank.from_folder(tmp_path / "dns20")
    for seed in range(6):
        assert "broken" not in " ".join(bank.sample(SR, _rng(seed))[1]["files"])
    (tmp_path / "dns20" / "datasets" / "noise" / "n.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="no readable audio file"):
        NoiseBank.from_folder(tmp_path / "dns20")


# ------------------------------------------------------------------------------------ ops


@pytest.mark.parametrize("mode", ["active", "full"])
@pytest.mark.parametrize("kind", ["colored", "modulated", "impulsive", "hum", "machine"])
def test_mixture_snr_within_0p1_db(speech, mode, kind):
    clean = speech(0)
    for seed in range(3):
        rng = _rng(seed)
        noise, _ = GENERATORS[kind](clean.size, rng)
        mix, p = D.add_noise(clean, rng, noise, snr=(-5, 20), snr_mode=mode)
        s = clean.astype(np.float64) * p["speech_gain"]
        assert abs(D.snr_db(s, mix - s, SR, mode) - p["snr_db"]) < 0.1
        assert np.abs(mix).max() <= 0.99 + 1e-9
        assert -36 < p["level_dbfs"] < -14


def test_snr_holds_through_degrade_with_peak_rescale(speech):
    cfg = D.DegradationConfig(
        p_reverb=0, p_noise=1, p_band_limit=0, p_clip=0, p_codec=0, p_packet_loss=0,
        snr_db=(-5.0, -5.0), level_dbfs=(-12.0, -12.0),  # loud: forces the anti-clip rescale
    )  # fmt: skip
    noisy, target, p = D.degrade(speech(1), _rng(4), cfg)
    assert p["noise"]["peak_rescale"] < 1.0
    achieved = D.snr_db(target, noisy.astype(np.float64) - target, SR, "active")
    assert abs(achieved - (-5.0)) < 0.1  # float32 outputs
    assert p["tasks"] == ["denoising"]


def test_measure_rt60_on_exponential_decay():
    rng = _rng(0)
    for rt60 in (0.3, 0.8):
        t = np.arange(int(1.5 * rt60 * SR)) / SR
        h = rng.standard_normal(t.size) * np.exp(-3 * np.log(10) * t / rt60)
        h[0] = 5.0
        assert abs(D.measure_rt60(h, SR, 30) / rt60 - 1) < 0.05
        assert abs(D.measure_rt60(h, SR, 20) / rt60 - 1) < 0.05


def test_simulated_rir_rt60_within_tolerance():
    # Tolerance: +/-25 % of the request (T30 from Schroeder integration, T20 fallback).
    for seed, rt60 in ((1, 0.3), (2, 0.8)):
        h, info = D.simulate_rir(_rng(seed), rt60, SR)
        measured = D.rt60_of(h, SR)
        assert abs(measured / rt60 - 1) <= 0.25, (rt60, measured, info)
        assert info["rt60_measured"] == pytest.approx(measured)


def test_reverb_target_is_early_part_and_aligned(speech):
    clean = speech(2).astype(np.float64)
    rng = _rng(0)
    peak = 123
    t = np.arange(SR // 2) / SR
    h = 0.3 * rng.standard_normal(t.size) * np.exp(-6.9 * t / 0.4)
    h[:peak] = 0.0
    h[peak] = 1.0
    rev, tgt, p = D.reverberate(clean, rng, h, sr=SR, early_ms=50.0)
    assert rev.shape == tgt.shape == clean.shape
    assert p["direct_peak_sample"] == peak
    early = h[: peak + 801]
    want = np.convolve(clean, early)[peak : peak + clean.size]
    assert np.allclose(tgt, want, atol=1e-6)
    # A pure delayed impulse leaves the signal unchanged (alignment to the direct path).
    d = np.zeros(400)
    d[200] = 0.5
    rev, tgt, _ = D.reverberate(clean, rng, d, sr=SR)
    assert np.allclose(rev, clean, atol=1e-6) and np.allclose(tgt, clean, atol=1e-6)


def test_clipping_ratio(speech):
    x = speech(0).astype(np.float64)
    for seed in range(3):
        y, p = D.clip(x, _rng(seed), fraction=(0.1, 0.6))
        thr = p["threshold"]
        assert thr == pytest.approx(p["threshold_fraction"] * np.abs(x).max())
        assert np.abs(y).max() <= thr + 1e-12
        assert p["clipped_ratio"] == pytest.approx(np.mean(np.abs(x) > thr))
        assert p["clipped_ratio"] == pytest.approx(np.mean(np.abs(y) >= thr))
        assert 0 < p["clipped_ratio"] < 0.5


@pytest.mark.parametrize("method", ["resample", "iir"])
def test_band_limit_no_energy_above_cutoff(method):
    from scipy.signal import welch

    x = _rng(9).standard_normal(2 * SR)  # white: the hardest case
    f, px = welch(x, SR, nperseg=1024)  # Hann-windowed: no leakage from the signal edges
    for seed in range(4):
        y, p = D.band_limit(x, _rng(seed), sr=SR, cutoff_hz=(2000, 7500), methods=[method])
        assert y.shape == x.shape
        _, py = welch(y, SR, nperseg=1024)
        cut = p["cutoff_hz"]
        above = py[f >= cut + SR / 1024].sum() / py.sum()  # one bin past the cutoff
        assert 10 * np.log10(above) < -50, p
        assert py[f < 0.7 * cut].sum() / px[f < 0.7 * cut].sum() > 0.8  # pass band kept


@pytest.mark.parametrize("model", ["bernoulli", "gilbert"])
def test_packet_loss_rate(model):
    x = _rng(0).standard_normal(60 * SR) + 0.1  # no exact zeros
    for rate in (0.05, 0.2):
        y, p = D.packet_loss(x, _rng(1), sr=SR, loss_rate=rate, model=model, burst_frames=3.0)
        frame = 320
        zero = np.array([not np.any(y[i : i + frame]) for i in range(0, y.size, frame)])
        assert p["loss_rate"] == pytest.approx(zero.mean())
        assert sorted(p["lost_frames"]) == list(np.nonzero(zero)[0])
        assert abs(p["loss_rate"] - rate) < 0.04
        kept = np.repeat(~zero, frame)[: x.size]
        assert np.array_equal(y[kept], x[kept])


@pytest.mark.parametrize("name", sorted(D.CODECS))
def test_codec_roundtrip(speech, name):
    reason = D.available_codecs(SR)[name]
    if reason is not None:
        pytest.skip(f"{name} unavailable in this libsndfile: {reason}")
    x = 0.5 * speech(3).astype(np.float64)
    y, p = D.codec(x, _rng(2), sr=SR, codecs=[name])
    assert p["codec"] == name and y.shape == x.shape and np.all(np.isfinite(y))
    assert np.corrcoef(x, y)[0, 1] > 0.8 and p["kbps"] < 64
    assert not np.array_equal(x, y)


def test_codec_skips_with_reason(monkeypatch, caplog):
    monkeypatch.setattr(D, "available_codecs", lambda sr: {"opus": "not built"})
    with caplog.at_level("WARNING"):
        y, p = D.codec(np.ones(100), _rng(0), codecs=["opus"])
    assert "not built" in caplog.text
    assert "skipped" in p and "not built" in p["skipped"] and np.array_equal(y, np.ones(100))


# ----------------------------------------------------------------------------- composition


def test_degrade_all_ops_and_determinism(speech):
    clean = speech(0)
    cfg = D.DegradationConfig(
        p_reverb=1, p_noise=1, p_band_limit=1, p_clip=1, p_codec=1, p_packet_loss=1, rir_pool=0
    )
    a, b, p = D.degrade(clean, _rng(5), cfg)
    a2, b2, p2 = D.degrade(clean, _rng(5), cfg)
    assert np.array_equal(a, a2) and np.array_equal(b, b2) and p == p2
    assert p["ops"][:2] == ["reverb", "noise"] and "packet_loss" in p["ops"]
    assert "dereverberation" in p["tasks"] and a.shape == b.shape == clean.shape
    assert max(np.abs(a).max(), np.abs(b).max()) <= 1.0
    json.dumps(p)
    a3, _, _ = D.degrade(clean, _rng(6), cfg)
    assert not np.array_equal(a, a3)


def test_degrade_always_applies_something_and_rir_bank(tmp_path, speech):
    cfg = D.DegradationConfig(
        p_reverb=0, p_noise=0, p_band_limit=0, p_clip=0, p_codec=0, p_packet_loss=0
    )
    _, _, p = D.degrade(speech(0), _rng(0), cfg)
    assert p["ops"] == [] and "level" in p  # all probabilities 0: nothing to choose
    cfg = D.DegradationConfig(
        p_reverb=0, p_noise=0, p_band_limit=0, p_clip=1e-6, p_codec=0, p_packet_loss=0
    )
    for seed in range(3):
        assert D.degrade(speech(0), _rng(seed), cfg)[2]["ops"] == ["clip"]
    t = np.arange(SR // 4) / SR
    rir = np.exp(-6.9 * t / 0.3) * _rng(1).standard_normal(t.size)
    _write(tmp_path / "rirs" / "room1.wav", np.stack([rir, rir], axis=1) * 0.5)
    bank = D.RirBank.from_folder(tmp_path / "rirs")
    cfg = D.DegradationConfig(
        p_reverb=1, p_noise=0, p_band_limit=0, p_clip=0, p_codec=0, p_packet_loss=0
    )
    noisy, target, p = D.degrade(speech(0), _rng(0), cfg, rir_bank=bank)
    assert p["ops"] == ["reverb"] and p["reverb"]["path"].endswith("room1.wav")
    assert not np.allclose(noisy, target)


def test_config_validation_and_roundtrip():
    with pytest.raises(ValueError, match="p_noise"):
        D.DegradationConfig(p_noise=1.5)
    with pytest.raises(ValueError, match="snr_db"):
        D.DegradationConfig(snr_db=(10, 0))
    with pytest.raises(ValueError, match="unknown codecs"):
        D.DegradationConfig(codecs=["aac"])
    with pytest.raises(ValueError, match="sample_rate must be"):
        D.DegradationConfig(sample_rate=0)
    cfg = D.DegradationConfig(snr_db=(0, 5), room=D.RoomConfig(n_rays=1000))
    again = D.DegradationConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown degradation settings"):
        D.DegradationConfig.from_dict({"p_nosie": 0.5})


def _clean_manifest(tmp_path, speech) -> list[Entry]:
    voices = [("en-us+m3", "m3"), ("en+f2", "f2")]
    entries = []
    for i in range(4):
        voice, spk = voices[i % 2]
        p = tmp_path / "clean_in" / f"utt{i}.wav"
        _write(p, speech(i, voice))
        entries.append(Entry(f"spk/{i}", str(p), text=f"sentence {i}", extra={"speaker": spk}))
    bad = tmp_path / "clean_in" / "bad.wav"
    bad.write_bytes(b"not audio")
    entries.append(Entry("bad", str(bad), extra={"speaker": "m3"}))
    return entries


def test_degrade_manifest_workers_resume(tmp_path, speech):
    entries = _clean_manifest(tmp_path, speech)
    cfg = D.DegradationConfig(p_reverb=0.5, p_noise=1.0, babble_weight=1.0)
    r1 = D.degrade_manifest(entries, tmp_path / "w1", cfg, seed=7, workers=1, progress=False)
    r2 = D.degrade_manifest(entries, tmp_path / "w2", cfg, seed=7, workers=2, progress=False)
    assert r1.computed == r2.computed == 4 and len(r1.failed) == 1 and "bad" in r1.failed[0]
    m1, m2 = read_manifest(r1.manifest), read_manifest(r2.manifest)
    assert [e.id for e in m1] == ["spk/0", "spk/1", "spk/2", "spk/3"]
    for e1, e2 in zip(m1, m2, strict=True):
        for key in ("audio", "reference"):
            a1, _ = sf.read(getattr(e1, key))
            a2, _ = sf.read(getattr(e2, key))
            assert np.array_equal(a1, a2), (e1.id, key)
        assert e1.extra["degradation"] == e2.extra["degradation"]
        assert e1.text and e1.extra["speaker"] in ("m3", "f2")
        noise = e1.extra["degradation"].get("noise", {}).get("noise", {})
        if noise.get("kind") == "babble":  # babble never uses the target's own speaker
            own = {x.id for x in entries if x.extra["speaker"] == e1.extra["speaker"]}
            assert not own & set(noise["sources"])
    assert any("reverb" in e.extra["degradation"]["ops"] for e in m1)
    r3 = D.degrade_manifest(entries, tmp_path / "w1", cfg, seed=7, workers=1, progress=False)
    assert r3.reused == 4 and r3.computed == 0
    with pytest.raises(ManifestError, match="other settings"):
        D.degrade_manifest(entries, tmp_path / "w1", cfg, seed=8, progress=False)


def test_degrade_manifest_protects_its_inputs_and_redoes_changed_sources(tmp_path, speech):
    import dataclasses

    entries = _clean_manifest(tmp_path, speech)[:2]
    cfg = D.DegradationConfig(p_reverb=0.0, p_noise=1.0, babble_weight=0.0)
    moved = tmp_path / "clean"  # an output folder whose clean/ holds the inputs
    shutil.copytree(tmp_path / "clean_in", moved)
    inside = [dataclasses.replace(e, audio=str(moved / Path(e.audio).name)) for e in entries]
    with pytest.raises(ManifestError, match="would overwrite the input audio"):
        D.degrade_manifest(inside, tmp_path, cfg, progress=False)
    out = tmp_path / "out"
    D.degrade_manifest(entries, out, cfg, progress=False)
    # the same id now names other audio: degraded again, not reused
    swapped = [dataclasses.replace(entries[0], audio=entries[1].audio), entries[1]]
    rep = D.degrade_manifest(swapped, out, cfg, progress=False)
    assert rep.reused == 1 and rep.computed == 1
    first = read_manifest(rep.manifest)[0]
    assert first.extra["source_audio"] == str(Path(entries[1].audio).resolve())
    assert sf.info(first.reference).frames == sf.info(entries[1].audio).frames


def test_a_paired_manifest_is_degraded_from_its_references(tmp_path, speech):
    entries = [e for e in _clean_manifest(tmp_path, speech) if "bad" not in e.audio][:2]
    noisy = []
    for e in entries:  # a noisy/clean pair: the noisy side is another signal
        path = tmp_path / f"noisy_{e.id.replace('/', '_')}.wav"
        sf.write(path, np.full(16000, 0.3, np.float32), 16000)
        noisy.append(Entry(e.id, str(path), reference=e.audio, text=e.text, extra=e.extra))
    cfg = D.DegradationConfig(p_noise=1.0, p_reverb=0.0)
    paired = D.degrade_manifest(noisy, tmp_path / "p", cfg, seed=1, progress=False)
    plain = D.degrade_manifest(entries, tmp_path / "c", cfg, seed=1, progress=False)
    for a, b in zip(read_manifest(paired.manifest), read_manifest(plain.manifest), strict=True):
        assert a.extra["source_audio"] == b.extra["source_audio"]
        for key in ("audio", "reference"):
            assert np.array_equal(sf.read(getattr(a, key))[0], sf.read(getattr(b, key))[0])
