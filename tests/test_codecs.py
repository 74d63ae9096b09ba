"""Codec contract, the built-in WORLD codec (tiny codebooks) and the neural-codec adapters."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from sealign.codecs import Codec, CodecError, CodecUnavailable, LatentCodec, load_codec
from sealign.codecs.base import codebook_sizes, parse_spec
from sealign.codecs.train_cli import espeak_corpus
from sealign.codecs.world import (
    WorldCodec,
    WorldCodecConfig,
    kmeans,
    moving_average,
    nearest,
    train_world_codec,
    upsample_linear,
)

TINY = {
    "ar_k": 32,
    "ar_spec_k": 16,
    "ar_f0_k": 4,
    "mgm_spec_k": [8, 8],
    "mgm_f0_k": 8,
    "kmeans_iters": 6,
}


@pytest.fixture(scope="module")
def train_wavs():
    wavs, _, _ = espeak_corpus(6, seed=0)
    return wavs


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory, train_wavs):
    out = tmp_path_factory.mktemp("world")
    train_world_codec(train_wavs, out, WorldCodecConfig(**TINY))
    return out


@pytest.fixture(scope="module")
def codec(codec_dir) -> WorldCodec:
    return WorldCodec.load(codec_dir)


# --- WORLD codec: contract -------------------------------------------------------------------


def test_protocol_and_layout_shapes(codec, speech):
    wav = speech(0, "en-us+m5")  # a voice not used for training
    assert isinstance(codec, Codec) and isinstance(codec, LatentCodec)
    assert codec.sample_rate == 16000 and codec.frame_rate == pytest.approx(50.0)
    expected_t = math.ceil(len(wav) / 320)
    assert abs(expected_t - len(wav) / 16000 * codec.frame_rate) < 1
    ar, mgm = codec.with_layout("ar"), codec.with_layout("mgm")
    assert ar.num_codebooks == 1 and ar.codebook_size == 16 * 4
    assert mgm.num_codebooks == 3 and mgm.codebook_size == (8, 8, 8)
    for c in (ar, mgm):
        tok = c.encode(wav)
        assert tok.dtype == np.int64 and tok.shape == (c.num_codebooks, expected_t)
        for k, size in enumerate(codebook_sizes(c)):
            assert tok[k].min() >= 0 and tok[k].max() < size
        y = c.decode(tok)
        assert y.dtype == np.float32 and y.ndim == 1 and np.all(np.isfinite(y))
        assert len(y) == expected_t * 320 and len(wav) <= len(y) < len(wav) + 320
        assert 0.01 < np.abs(y).max() <= 1.0


def test_round_trip_keeps_voicing_and_energy(codec, speech):
    wav = speech(1, "en-us+f4")
    y = codec.decode(codec.encode(wav))[: len(wav)]
    # coarse sanity: same loudness ballpark and energy envelope follows the input
    rms = lambda x: np.sqrt(np.mean(x**2))  # noqa: E731
    assert 0.3 < rms(y) / rms(wav) < 3.0
    env = lambda x: np.sqrt(np.mean(x[: len(x) // 800 * 800].reshape(-1, 800) ** 2, axis=1))  # noqa: E731
    assert np.corrcoef(env(wav), env(y))[0, 1] > 0.6


def test_batched_encode_equals_per_item(codec, speech):
    a, b = speech(0, "en-us+m5"), speech(2, "en-us+f4")
    for layout in ("ar", "mgm"):
        c = codec.with_layout(layout)
        batch = c.encode([a, b])
        assert isinstance(batch, list) and len(batch) == 2
        np.testing.assert_array_equal(batch[0], c.encode(a))
        np.testing.assert_array_equal(batch[1], c.encode(b))
        dec = c.decode(batch)
        np.testing.assert_array_equal(dec[1], c.decode(batch[1]))
    same_len = np.stack([a[:16000], b[:16000]])  # a 2-D array is a batch too
    out = codec.encode(same_len)
    assert len(out) == 2 and out[0].shape == (1, 50)


def test_threaded_batches_equal_serial_ones(codec, speech, monkeypatch):
    import sealign.utils.threads as threads

    wavs = [speech(i, v) for i, v in enumerate(["en-us+m5", "en-us+f4", "en-us+m3"])]
    out = {}
    for n in (1, 3):
        monkeypatch.setattr(threads, "_budget", n)
        tok = codec.with_layout("mgm").encode(wavs)
        lat = codec.encode_latent(wavs)
        out[n] = (tok, codec.with_layout("mgm").decode(tok), lat, codec.decode_latent(lat))
    for serial, threaded in zip(out[1], out[3], strict=True):
        for a, b in zip(serial, threaded, strict=True):
            np.testing.assert_array_equal(a, b)
    # a bad item in a threaded batch is still a clear error naming it
    with pytest.raises(CodecError, match="item 1.*silent"):
        codec.encode([wavs[0], np.zeros(16000, np.float32), wavs[2]])


def test_analysis_cache_gives_identical_results_and_evicts(codec, speech, monkeypatch):
    import sealign.codecs.world as world

    wavs = [speech(i, v) for i, v in enumerate(["en-us+m5", "en-us+f4", "en-us+m3"])]
    c = codec.with_layout("mgm")
    plain = (c.encode(wavs), c.encode_latent(wavs))
    calls = []
    real = world.analyze
    monkeypatch.setattr(world, "analyze", lambda x, cfg: calls.append(1) or real(x, cfg))
    c.set_analysis_cache(2)
    for _ in range(2):
        cached = (c.encode(wavs[:2]), c.encode_latent(wavs[:2]))
        for p, q in zip(plain, cached, strict=True):
            for a, b in zip(p[:2], q, strict=True):
                np.testing.assert_array_equal(a, b)
    assert len(calls) == 2  # each waveform analysed once, however often it is encoded
    c.encode(wavs[1])  # a hit, and now the most recently used
    c.encode(wavs[2])  # a third waveform evicts the least recently used one, wavs[0]
    c.encode(wavs[1])
    assert len(calls) == 3
    c.encode(wavs[0])
    assert len(calls) == 4
    c.set_analysis_cache(0)
    c.encode(wavs[1])
    assert len(calls) == 5
    with pytest.raises(ValueError, match="max_items"):
        c.set_analysis_cache(-1)


def test_map_threads_keeps_order_and_raises():
    from sealign.utils.threads import map_threads

    assert map_threads(lambda x: x * x, list(range(7)), threads=3) == [x * x for x in range(7)]
    assert map_threads(str, [], threads=2) == []

    def boom(x: int) -> int:
        if x == 2:
            raise ValueError("two")
        return x

    with pytest.raises(ValueError, match="two"):
        map_threads(boom, [0, 1, 2, 3], threads=2)


def test_save_load_same_tokens(codec, codec_dir, tmp_path, speech):
    wav = speech(3, "en-us+m5")
    codec.save(tmp_path / "copy")
    again = load_codec(f"world:{tmp_path / 'copy'}")
    np.testing.assert_array_equal(codec.encode(wav), again.encode(wav))
    mgm = load_codec(f"world:{codec_dir}?layout=mgm")
    np.testing.assert_array_equal(mgm.encode(wav), codec.with_layout("mgm").encode(wav))
    np.testing.assert_array_equal(
        mgm.decode(mgm.encode(wav)), again.with_layout("mgm").decode(mgm.encode(wav))
    )
    meta = json.loads((codec_dir / "config.json").read_text())
    assert meta["kind"] == "world" and meta["config"]["ar_k"] == 32
    assert meta["training"]["utterances"] == 6


def test_damaged_codec_folders_and_bad_settings_are_named(codec, tmp_path):
    # one codec's arrays beside another's config (two runs into one folder) do not mix
    other = WorldCodec(codec.config, {k: v * 1.001 for k, v in codec.arrays.items()})
    codec.save(tmp_path / "mixed")
    other.save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "codec.safetensors", tmp_path / "mixed")
    with pytest.raises(CodecError, match="not the arrays file config.json was saved with"):
        load_codec(f"world:{tmp_path / 'mixed'}")
    assert not list((tmp_path / "mixed").glob("*.tmp"))
    codec.save(tmp_path / "trunc")
    arrays = tmp_path / "trunc" / "codec.safetensors"
    arrays.write_bytes(arrays.read_bytes()[:100])
    with pytest.raises(CodecError, match="damaged, or written by another run"):
        load_codec(f"world:{tmp_path / 'trunc'}")
    codec.save(tmp_path / "json")
    (tmp_path / "json" / "config.json").write_text("{\n 'kind': 'world'}")
    with pytest.raises(CodecError, match="config.json: not a readable codec config"):
        load_codec(f"world:{tmp_path / 'json'}")
    (tmp_path / "json" / "config.json").write_text("[]")
    with pytest.raises(CodecError, match="not a WORLD codec"):
        load_codec(f"world:{tmp_path / 'json'}")
    bad = {
        "f0_floor": (dict(f0_floor=600, f0_ceil=100), "f0_floor < f0_ceil"),
        "n_mcep": (dict(n_mcep=1), "n_mcep"),
        "ar_spec_k": (dict(ar_spec_k=0), "ar_spec_k"),
        "frame_period_ms": (dict(frame_period_ms=0), "frame_period_ms"),
        "sample_rate": (dict(sample_rate=0), "sample_rate"),
        "kmeans_iters": (dict(kmeans_iters=-1), "kmeans_iters"),
        "mgm_spec_k": (dict(mgm_spec_k=[4, 0]), "mgm_spec_k"),
    }
    for settings, message in bad.values():
        with pytest.raises(ValueError, match=message):
            WorldCodecConfig(**settings)


def test_training_is_deterministic_by_seed(train_wavs, codec):
    small = {**TINY, "kmeans_iters": 3}
    a = train_world_codec(train_wavs[:3], None, WorldCodecConfig(**small, seed=5))
    b = train_world_codec(train_wavs[:3], None, WorldCodecConfig(**small, seed=5))
    c = train_world_codec(train_wavs[:3], None, WorldCodecConfig(**small, seed=6))
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
    assert not np.array_equal(a.arrays["ar_spec"], c.arrays["ar_spec"])


def test_latent_round_trip(codec, speech):
    wav = speech(2, "en-us+f4")
    z = codec.encode_latent(wav)
    t = math.ceil(len(wav) / 320)
    assert z.dtype == np.float32 and z.shape == (codec.latent_dim, t) == (2 * 33 + 2, t)
    assert np.all(np.isfinite(z)) and np.abs(z.mean()) < 1.0
    y = codec.decode_latent(z)
    assert y.dtype == np.float32 and len(y) == t * 320 and np.all(np.isfinite(y))
    # re-encoding the decoded audio gives a close latent (spectral rows)
    z2 = codec.encode_latent(y)
    assert np.mean(np.abs(z2[:32] - z[:32])) < 0.5
    batch = codec.decode_latent([z, z[:, :20]])
    assert len(batch[1]) == 20 * 320


def test_too_loud_latents_are_scaled_not_clipped(codec, speech):
    z = codec.encode_latent(speech(2, "en-us+f4"))
    loud = z.copy()
    loud[0] += 4.0  # the energy coefficient, as an overshooting generative model might give
    y = codec.decode_latent(loud)
    assert 0.98 < np.abs(y).max() <= 0.99 + 1e-6
    assert np.mean(np.abs(y) > 0.97) < 1e-3  # a peak, not a plateau of clipped samples


def test_bad_input_is_a_clear_error(codec):
    with pytest.raises(CodecError, match="silent"):
        codec.encode(np.zeros(16000, np.float32))
    with pytest.raises(CodecError, match="silent"):
        codec.encode(np.full(16000, 1e-6, np.float32))
    with pytest.raises(CodecError, match="too short"):
        codec.encode(np.random.default_rng(0).standard_normal(800).astype(np.float32) * 0.1)
    with pytest.raises(CodecError, match="NaN"):
        codec.encode(np.full(16000, np.nan, np.float32))
    with pytest.raises(CodecError, match="rank"):
        codec.encode(np.zeros((1, 2, 3), np.float32))
    stereo = np.random.default_rng(0).standard_normal((16000, 2)).astype(np.float32) * 0.1
    with pytest.raises(CodecError, match=r"looks like \[samples, channels\] audio"):
        codec.encode(stereo)
    with pytest.raises(CodecError, match="expected float audio .* int16"):
        codec.encode((stereo[:, 0] * 32767).astype(np.int16))
    with pytest.raises(CodecError, match="outside"):
        codec.decode(np.array([[0, 64]]))
    with pytest.raises(CodecError, match="shape"):
        codec.with_layout("mgm").decode(np.zeros((2, 5), np.int64))
    with pytest.raises(CodecError, match="integers"):
        codec.decode(np.zeros((1, 5), np.float32))
    with pytest.raises(CodecError, match="latent of shape"):
        codec.decode_latent(np.zeros((3, 5), np.float32))
    bad = np.zeros((codec.latent_dim, 5), np.float32)
    bad[0, 2] = np.nan
    with pytest.raises(CodecError, match="item 1: latent contains NaN"):
        codec.decode_latent([np.zeros((codec.latent_dim, 3), np.float32), bad])
    with pytest.raises(FileNotFoundError, match="not a WORLD codec"):
        load_codec("world:/nonexistent/codec")
    with pytest.raises(ValueError, match="unknown codec kind"):
        load_codec("mp3:/x")


def test_ar_layouts(codec, train_wavs, speech):
    wav = speech(0, "en-us+m5")
    tok = codec.encode(wav)  # product mode: spectral cluster × F0 class (0 = unvoiced)
    spec, f0 = np.divmod(tok[0], 4)
    assert spec.max() < 16 and f0.max() < 4 and (f0 == 0).any() and (f0 > 0).any()
    cfg = WorldCodecConfig(**{**TINY, "ar_mode": "joint", "kmeans_iters": 3})
    joint = train_world_codec(train_wavs[:3], None, cfg)
    assert joint.codebook_size == 32 and "ar_spec" not in joint.arrays
    tok = joint.encode(wav)
    assert tok.shape == (1, math.ceil(len(wav) / 320)) and tok.max() < 32
    assert len(joint.decode(tok)) == tok.shape[1] * 320


def test_training_rejects_unusable_data():
    with pytest.raises(ValueError, match="every training item was rejected"):
        train_world_codec([np.zeros(16000, np.float32)], None, WorldCodecConfig(**TINY))
    with pytest.raises(ValueError, match="unknown WORLD codec config keys"):
        WorldCodecConfig.from_dict({"nope": 1})


# --- training CLI ----------------------------------------------------------------------------


def test_codec_train_command_espeak_and_manifest(tmp_path, train_wavs):
    import soundfile as sf

    from sealign.cli import main

    tiny = [
        f"world.{k}={json.dumps(v).replace(' ', '')}"
        for k, v in {**TINY, "kmeans_iters": 2}.items()
    ]
    out = tmp_path / "cli"
    assert (
        main(["codec", "train", "--espeak", "3", "--output", str(out), "--no-progress", *tiny]) == 0
    )
    assert WorldCodec.load(out).config.seed == 0 and WorldCodec.load(out).codebook_size == 64
    logged = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert (
        logged["codec/frame_rate"] == WorldCodec.load(out).frame_rate and logged["time/train"] > 0
    )

    lines = []
    for i, w in enumerate(train_wavs[:3]):
        sf.write(tmp_path / f"r{i}.wav", w, 16000)
        lines.append(json.dumps({"id": f"u{i}", "audio": f"n{i}.wav", "reference": f"r{i}.wav"}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    args = [
        "codec",
        "train",
        "--manifest",
        str(tmp_path / "m.jsonl"),
        "--output",
        str(tmp_path / "m"),
    ]
    assert main([*args, "--seed", "3", "--no-progress", *tiny]) == 0
    assert WorldCodec.load(tmp_path / "m").config.seed == 3
    # bad config keys and a missing source fail before any work, naming the problem
    assert (
        main(["codec", "train", "--espeak", "2", "--output", str(tmp_path / "x"), "world.bad=1"])
        == 2
    )
    assert main(["codec", "train", "--output", str(tmp_path / "y")]) == 2


def test_kmeans_nearest_and_interpolation():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + 0.1 * rng.standard_normal((50, 2)) for c in centers])
    found = kmeans(x, 3, iters=10, seed=0)
    assert np.allclose(np.sort(found[:, 0] + found[:, 1]), [0, 10, 10], atol=0.1)
    np.testing.assert_array_equal(kmeans(x, 3, seed=4), kmeans(x, 3, seed=4))
    np.testing.assert_array_equal(nearest(x, found), nearest(x, found[:, None, :][:, 0]))
    one_d = np.array([3.0, -1.0, 7.0])
    assert list(nearest(np.array([-5.0, 2.9, 5.1, 100.0]), one_d)) == [1, 0, 2, 2]
    up = upsample_linear(np.array([[0.0], [4.0]]), 4)
    assert (
        up.shape == (8, 1) and up[0, 0] == 0 and up[-1, 0] == 4 and np.all(np.diff(up[:, 0]) >= 0)
    )
    np.testing.assert_allclose(moving_average(np.arange(5.0), 3), [1 / 3, 1, 2, 3, 11 / 3])


def test_parse_spec():
    assert parse_spec("world:runs/c?layout=mgm") == ("world", "runs/c", {"layout": "mgm"})
    assert parse_spec("encodec:facebook/encodec_24khz?bandwidth=6.0&x=2") == (
        "encodec",
        "facebook/encodec_24khz",
        {"bandwidth": 6.0, "x": 2},
    )
    with pytest.raises(ValueError, match="KIND:LOCATION"):
        parse_spec("runs/c")


# --- neural codec adapters -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_encodec_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.EncodecConfig(
        sampling_rate=16000,
        num_filters=4,
        hidden_size=16,
        codebook_dim=16,
        codebook_size=64,
        upsampling_ratios=[8, 5],
        num_lstm_layers=1,
        num_residual_layers=1,
        target_bandwidths=[2.4, 4.8],
    )
    out = tmp_path_factory.mktemp("encodec")
    transformers.EncodecModel(cfg).save_pretrained(out)
    return out


def test_encodec_adapter_round_trip(tiny_encodec_dir, tmp_path, speech):
    c = load_codec(f"encodec:{tiny_encodec_dir}?bandwidth=4.8", num_threads=1)
    assert isinstance(c, LatentCodec)
    assert c.frame_rate == 400 and c.num_codebooks == 2 and c.codebook_size == 64
    wav = speech(0)
    tok = c.encode(wav)
    assert tok.dtype == np.int64 and tok.shape == (2, math.ceil(len(wav) / 40))
    y = c.decode(tok)
    assert y.dtype == np.float32 and len(y) == tok.shape[1] * 40 and np.all(np.isfinite(y))
    batch = c.encode([wav, wav[:8000]])
    np.testing.assert_array_equal(batch[0], tok)
    assert batch[1].shape == (2, 200)
    z = c.encode_latent(wav[:8000])
    assert z.shape == (16, 200) and len(c.decode_latent(z)) == 8000
    c.save(tmp_path / "saved")
    again = load_codec(f"encodec:{tmp_path / 'saved'}")
    assert again.bandwidth == 4.8
    np.testing.assert_array_equal(again.encode(wav), tok)
    assert load_codec(f"encodec:{tiny_encodec_dir}").num_codebooks == 1  # lowest bandwidth
    with pytest.raises(ValueError, match="bandwidth"):
        load_codec(f"encodec:{tiny_encodec_dir}?bandwidth=3.0")
    with pytest.raises(CodecError, match="silent"):
        c.encode(np.zeros(4000, np.float32))
    with pytest.raises(CodecError, match="latent contains NaN"):
        c.decode_latent(np.full((16, 10), np.nan, np.float32))


def test_dac_adapter_round_trip(tmp_path, speech):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.DacConfig(
        encoder_hidden_size=4,
        decoder_hidden_size=16,
        hidden_size=32,
        downsampling_ratios=[2, 4],
        upsampling_ratios=[4, 2],
        hop_length=8,
        n_codebooks=3,
        codebook_size=32,
        codebook_dim=4,
        sampling_rate=16000,
    )
    transformers.DacModel(cfg).save_pretrained(tmp_path / "dac")
    c = load_codec(f"dac:{tmp_path / 'dac'}?n_quantizers=2", num_threads=1)
    wav = speech(1)[:4001]
    tok = c.encode(wav)
    assert tok.shape == (2, 501) and tok.dtype == np.int64 and tok.max() < 32
    assert len(c.decode(tok)) == 501 * 8
    assert c.encode_latent(wav).shape == (32, 501)
    # one codec's folder given as the other's: refused, not a randomly initialized model
    with pytest.raises(CodecUnavailable, match="holds a 'dac' model, not EnCodec"):
        load_codec(f"encodec:{tmp_path / 'dac'}")


def test_a_neural_codec_folder_missing_weights_is_refused(tiny_encodec_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_encodec_dir, tmp_path / "part")
    weights = tmp_path / "part" / "model.safetensors"
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if not k.startswith("decoder.")}, weights)
    with pytest.raises(CodecUnavailable, match="weights are missing .*random ones"):
        load_codec(f"encodec:{tmp_path / 'part'}")
    weights.write_bytes(b"\x10\0\0")  # truncated
    with pytest.raises(CodecUnavailable, match="could not be loaded .*save_pretrained"):
        load_codec(f"encodec:{tmp_path / 'part'}")
    (tmp_path / "part" / "config.json").unlink()
    with pytest.raises(CodecUnavailable, match="no config.json"):
        load_codec(f"encodec:{tmp_path / 'part'}")


def test_neural_codecs_without_weights_fail_clearly(tmp_path):
    with pytest.raises(CodecUnavailable, match="does not exist"):
        load_codec(f"encodec:{tmp_path / 'missing'}")
    with pytest.raises(CodecUnavailable, match="no config.json"):
        load_codec(f"encodec:{tmp_path}")  # exists but holds no model
    pth = tmp_path / "weights.pth"
    pth.write_bytes(b"\0")
    with pytest.raises(CodecUnavailable, match="descript-audio-codec"):
        load_codec(f"dac:{pth}")
    with pytest.raises(CodecUnavailable, match="does not exist"):
        load_codec("dac:./no/such/dac_16khz")
