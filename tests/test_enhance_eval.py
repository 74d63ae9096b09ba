"""Enhancement (batching, chunking, crossfades, outputs) and `sealign enhance` / `sealign eval`."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sealign.cli import main
from sealign.codecs.world import WorldCodec, WorldCodecConfig, train_world_codec
from sealign.data.manifest import Entry, read_manifest, write_manifest
from sealign.eval.score import best_of_samples, mean_over_samples
from sealign.infer.dereverb import wpe_dereverb
from sealign.infer.enhance import (
    EnhanceConfig,
    chunk_bounds,
    enhance_audio,
    enhance_files,
    resolve_inputs,
    stitch,
)
from sealign.models.policy import Conditioning, Policy, Rollout
from sealign.models.registry import build_policy

torch.set_num_threads(1)

SR = 16000
TINY_CODEC = {"ar_spec_k": 16, "ar_f0_k": 4, "mgm_spec_k": [8, 8], "mgm_f0_k": 8, "kmeans_iters": 6}
TINY_MODEL = {"dim": 32, "layers": 1, "heads": 2, "features": {"n_mels": 20}}


def sine_ish(seconds: float, seed: int = 0) -> np.ndarray:
    """A slowly gliding, amplitude-modulated tone (no discontinuities of its own)."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    f = 180 + 40 * np.sin(2 * np.pi * 0.13 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f) / SR
    return (0.4 * (1 + 0.3 * np.sin(2 * np.pi * 0.7 * t)) * np.sin(phase)).astype(np.float32)


class GainPolicy:
    """Test policy whose output is its input times a per-call random gain in [0.9, 1.1]:
    chunk outputs disagree slightly, as a generative model's would."""

    family = "ar"
    sample_rate = SR

    def __init__(self) -> None:
        self.batches: list[int] = []

    def condition(self, noisy: list[np.ndarray]) -> Conditioning:
        for w in noisy:
            if np.abs(w).max() < 1e-4:
                raise ValueError("silent input")
        n = max(len(w) for w in noisy)
        feats = torch.zeros(len(noisy), n, 1)
        mask = torch.zeros(len(noisy), n, dtype=torch.bool)
        for i, w in enumerate(noisy):
            feats[i, : len(w), 0] = torch.from_numpy(w)
            mask[i, : len(w)] = True
        self.batches.append(len(noisy))
        return Conditioning(feats, mask, [len(w) for w in noisy])

    def sample(self, cond, temperature=1.0, generator=None, **options) -> Rollout:
        gain = 0.9 + 0.2 * torch.rand(len(cond), 1, generator=generator)
        wav = cond.features[..., 0] * gain
        return Rollout(
            {"wav": wav}, torch.zeros_like(wav), cond.mask.float(), torch.arange(len(cond))
        )

    def decode(self, rollout: Rollout) -> list[np.ndarray]:
        n = rollout.mask.sum(1).long().tolist()
        return [rollout.actions["wav"][i, : n[i]].numpy() for i in range(len(n))]

    def encode_targets(self, clean):  # pragma: no cover - unused by enhancement
        raise NotImplementedError

    step_log_probs = decode_targets = sft_loss = preference_noise = encode_targets
    targets_from_rollout = encode_targets
    preference_log_likelihood = save = encode_targets


def max_jump(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x)).max())


def test_stitching_has_no_clicks_at_chunk_boundaries():
    n = int(23.3 * SR)
    x = sine_ish(23.3)
    bounds = chunk_bounds(n, 4 * SR, SR // 2)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(b0 - a1 >= SR // 2 for (_, b0), (a1, _) in zip(bounds[:-1], bounds[1:], strict=True))
    # exact chunks come back exactly
    exact = stitch([x[a:b] for a, b in bounds], bounds, n, SR // 2)
    np.testing.assert_allclose(exact, x, atol=1e-6)
    # chunks that disagree by ±20% in gain: the crossfade keeps every sample-to-sample change
    # within the chunks' own largest change; a hard cut does not
    gains = np.where(np.arange(len(bounds)) % 2 == 0, 0.8, 1.2)
    segs = [g * x[a:b] for g, (a, b) in zip(gains, bounds, strict=True)]
    own = max(max_jump(s) for s in segs)
    assert max_jump(stitch(segs, bounds, n, SR // 2)) <= own * 1.001
    edges = [a for a, _ in bounds] + [n]  # hard cuts where the next chunk starts
    hard = np.concatenate([s[: edges[i + 1] - edges[i]] for i, s in enumerate(segs)])
    assert max_jump(hard) > own * 1.2
    # equal-power gains: squares sum to one in the overlap
    ep = stitch([np.ones(b - a) for a, b in bounds], bounds, n, SR // 2, "equal_power")
    assert ep.max() <= np.sqrt(2) + 1e-6 and ep.min() >= 1 - 1e-6
    assert chunk_bounds(1000, 4 * SR, SR // 2) == [(0, 1000)]


def test_enhance_files_batches_chunks_and_writes_manifest(tmp_path):
    long, short = sine_ish(21.0, 1), sine_ish(2.5, 2)
    sf.write(tmp_path / "long.wav", long, SR)
    sf.write(tmp_path / "short.wav", short, SR)
    sf.write(tmp_path / "silent.wav", np.zeros(SR, dtype=np.float32), SR)
    (tmp_path / "broken.wav").write_bytes(b"nope")
    rows = [
        {"id": "long", "audio": "long.wav", "reference": "long.wav", "text": "a tone", "snr": 3},
        {"id": "broken", "audio": "broken.wav"},
        {"id": "short", "audio": "short.wav"},
        {"id": "silent", "audio": "silent.wav"},
    ]
    write_manifest(tmp_path / "in.jsonl", rows)
    policy = GainPolicy()
    assert isinstance(policy, Policy)
    res = enhance_files(
        policy, tmp_path / "in.jsonl", tmp_path / "out", batch_size=3, chunk_seconds=4.0,
        overlap_seconds=0.5, seed=0, progress=False,
    )  # fmt: skip
    assert [e.id for e in res.entries] == ["long", "short"]
    assert set(res.failed) == {"broken", "silent"} and "unreadable" in res.failed["broken"]
    assert policy.batches[:2] == [1, 3]  # the chunk-length check, then one file's chunks
    out = read_manifest(res.manifest)
    assert [e.id for e in out] == ["long", "short"]
    first = out[0]
    assert first.noisy == str(tmp_path / "long.wav") and first.reference == str(
        tmp_path / "long.wav"
    )
    assert first.text == "a tone" and first.extra == {"snr": 3}
    y, sr = sf.read(first.audio, dtype="float32")
    assert sr == SR and y.size == long.size
    assert max_jump(y) <= 1.1 * max_jump(long) + 2 / 32768  # no clicks where chunks meet
    ratio = y[SR:-SR] / np.where(np.abs(long[SR:-SR]) > 0.05, long[SR:-SR], np.nan)
    assert np.nanmin(ratio) > 0.89 and np.nanmax(ratio) < 1.11
    y2, _ = sf.read(out[1].audio, dtype="float32")
    assert y2.size == short.size
    # same seed and batch size → same output
    again = enhance_files(GainPolicy(), tmp_path / "in.jsonl", tmp_path / "out2", 3, 4.0, 0.5,
                          seed=0, progress=False)  # fmt: skip
    assert np.array_equal(sf.read(again.entries[0].audio)[0], sf.read(first.audio)[0])
    # in memory: the same outputs before the files' 16-bit rounding; None for the silent input
    ins = [sf.read(tmp_path / f"{k}.wav", dtype="float32")[0] for k in ("long", "short", "silent")]
    arrays = enhance_audio(GainPolicy(), ins, batch_size=3, chunk_seconds=4.0, overlap_seconds=0.5)
    assert arrays[2] is None and [a.size for a in arrays[:2]] == [long.size, short.size]
    assert np.abs(arrays[0] - y).max() < 1 / 32768 and np.abs(arrays[1] - y2).max() < 1 / 32768
    with pytest.raises(ValueError, match=r"input 0 must be mono and 1-D, got shape \(1, 40000\)"):
        enhance_audio(GainPolicy(), [ins[1][None]])
    bf16 = enhance_audio(GainPolicy(), [torch.from_numpy(ins[1]).bfloat16()], batch_size=3,
                         chunk_seconds=4.0, overlap_seconds=0.5)[0]  # fmt: skip
    assert bf16.dtype == np.float32 and bf16.size == short.size
    with pytest.raises(TypeError, match="input 0 holds integer samples .int16.; pass float"):
        enhance_audio(GainPolicy(), [(long * 32767).astype(np.int16)])


class PickyPolicy(GainPolicy):
    """Rejects inputs longer than ``max_seconds`` and inputs with a peak above 0.9."""

    def __init__(self, max_seconds: float = 60.0) -> None:
        super().__init__()
        self.max_samples = int(max_seconds * SR)

    def condition(self, noisy: list[np.ndarray]) -> Conditioning:
        for w in noisy:
            if w.size > self.max_samples:
                raise ValueError(f"{w.size} samples is more than the model takes")
            if np.abs(w).max() > 0.9:
                raise ValueError("too loud")
        return super().condition(noisy)


def test_a_rejected_chunk_fails_its_file_and_a_too_long_chunk_fails_the_run(tmp_path):
    tone = sine_ish(12.0, 1)
    burst = tone.copy()
    burst[6 * SR : 6 * SR + 100] = 0.95  # only the middle chunk is rejected
    pause = tone.copy()
    pause[4 * SR : 8 * SR] = 0.0  # a silent chunk stays silent
    for name, wav in (("burst", burst), ("pause", pause)):
        sf.write(tmp_path / f"{name}.wav", wav, SR)
    write_manifest(
        tmp_path / "in.jsonl", [{"id": n, "audio": f"{n}.wav"} for n in ("burst", "pause")]
    )
    res = enhance_files(PickyPolicy(), tmp_path / "in.jsonl", tmp_path / "out", chunk_seconds=4.0,
                        overlap_seconds=0.0, progress=False)  # fmt: skip
    assert [e.id for e in res.entries] == ["pause"] and not (
        tmp_path / "out" / "burst.wav"
    ).exists()
    assert "chunk 2 of 3" in res.failed["burst"]
    with pytest.raises(ValueError, match="chunk_seconds=4: the model cannot take chunks this long"):
        enhance_files(PickyPolicy(max_seconds=3.0), tmp_path / "in.jsonl", tmp_path / "out2",
                      chunk_seconds=4.0, progress=False)  # fmt: skip


def test_enhance_never_writes_over_its_inputs(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    sf.write(rec / "a.wav", sine_ish(2.0), SR)
    before = (rec / "a.wav").read_bytes()
    with pytest.raises(ValueError, match="would overwrite an input file"):
        enhance_files(GainPolicy(), resolve_inputs(rec), rec, chunk_seconds=0, progress=False)
    assert (rec / "a.wav").read_bytes() == before
    enhance_files(GainPolicy(), resolve_inputs(rec), rec / "enh", chunk_seconds=0, progress=False)
    # a second run does not take the first one's outputs, inside the input folder, as inputs
    assert [e.id for e in resolve_inputs(rec, exclude=rec / "enh")] == ["a"]


def test_outputs_over_full_scale_are_scaled_not_clipped(tmp_path):
    loud = sine_ish(2.0, 3)
    loud = 0.98 * loud / np.abs(loud).max()  # the gain of up to 1.1 pushes it over full scale
    sf.write(tmp_path / "loud.wav", loud, SR)
    write_manifest(tmp_path / "in.jsonl", [{"id": "loud", "audio": "loud.wav"}])
    res = enhance_files(GainPolicy(), tmp_path / "in.jsonl", tmp_path / "out", seed=1,
                        progress=False)  # fmt: skip
    y, _ = sf.read(res.entries[0].audio, dtype="float32")
    assert 0.985 < np.abs(y).max() <= 0.99 + 1 / 32768
    ratio = y / np.where(np.abs(loud) > 0.3, loud, np.nan)  # one gain everywhere: no clipping
    assert np.nanmax(ratio) - np.nanmin(ratio) < 1e-3


def test_remix_mixes_the_input_back_into_each_chunk(tmp_path):
    x = sine_ish(9.0, 4)
    sf.write(tmp_path / "x.wav", x, SR)
    write_manifest(tmp_path / "in.jsonl", [{"id": "x", "audio": "x.wav"}])
    runs = {
        w: enhance_files(GainPolicy(), tmp_path / "in.jsonl", tmp_path / f"out{w}", batch_size=2,
                         chunk_seconds=4.0, overlap_seconds=0.5, seed=3, progress=False, remix=w)
        for w in (0.0, 0.25)
    }  # fmt: skip
    plain, mixed = (sf.read(runs[w].entries[0].audio, dtype="float32")[0] for w in (0.0, 0.25))
    x16 = sf.read(tmp_path / "x.wav", dtype="float32")[0]
    np.testing.assert_allclose(mixed, 0.75 * plain + 0.25 * x16, atol=3 / 32768)
    with pytest.raises(ValueError, match="remix"):
        EnhanceConfig(remix=1.0)
    assert EnhanceConfig(remix=0.2).for_checkpoint(tmp_path).file_options()["remix"] == 0.2


def test_mask_fusion_keeps_the_input_scaled_by_each_chunks_gain(tmp_path):
    x = sine_ish(9.0, 5)
    sf.write(tmp_path / "x.wav", x, SR)
    write_manifest(tmp_path / "in.jsonl", [{"id": "x", "audio": "x.wav"}])
    cfg = EnhanceConfig(batch_size=2, chunk_seconds=4.0, overlap_seconds=0.5).with_setting(
        "fuse", "mask"
    )
    res = enhance_files(GainPolicy(), tmp_path / "in.jsonl", tmp_path / "out", seed=1,
                        progress=False, **cfg.for_checkpoint(tmp_path).file_options())  # fmt: skip
    y = sf.read(res.entries[0].audio, dtype="float32")[0]
    x16 = sf.read(tmp_path / "x.wav", dtype="float32")[0]
    # each chunk's output is the input times a gain (seed 1: 1.05, 0.96, 0.98): the mask is
    # min(gain, 1), so the first chunk gives the input itself and none is amplified
    ratio = y / np.where(np.abs(x16) > 0.1, x16, np.nan)
    first = ratio[: 2 * SR]  # the first chunk alone (the second starts at 2.5 s)
    assert np.nanmin(first) > 0.999 and np.nanmax(first) < 1.001
    assert np.nanmin(ratio) > 0.95 and np.nanmax(ratio) < 1.001
    for bad in ({"fuse": "wiener"}, {"fuse_smooth_ms": -1.0}):
        with pytest.raises(ValueError, match="fuse"):
            EnhanceConfig(**bad)
    with pytest.raises(ValueError, match="fuse"):
        EnhanceConfig().with_setting("fuse", 1)


def test_dereverb_feeds_the_model_and_the_mask_the_dereverberated_input(tmp_path):
    x = 0.3 * sine_ish(3.0, 2)  # quiet enough that no output needs peak limiting
    sf.write(tmp_path / "x.wav", x, SR)
    (tmp_path / "sampling.json").write_text('{"dereverb": "wpe"}')
    x16 = sf.read(tmp_path / "x.wav", dtype="float32")[0]
    want = wpe_dereverb(x16, SR)  # a steady tone is predictable: WPE changes it a lot
    assert np.abs(want - x16).max() > 0.1
    for fuse in ("none", "mask"):
        cfg = EnhanceConfig(chunk_seconds=0.0, fuse=fuse).for_checkpoint(tmp_path)
        assert cfg.dereverb == "wpe"
        res = enhance_files(GainPolicy(), [Entry("x", str(tmp_path / "x.wav"))],
                            tmp_path / fuse, seed=1, progress=False, **cfg.file_options())  # fmt: skip
        y = sf.read(res.entries[0].audio, dtype="float32")[0]
        gain = np.dot(y, want) / np.dot(want, want)  # the policy's random gain (min(g, 1) masked)
        assert 0.9 < gain < 1.1 and np.abs(y - gain * want).max() < 3e-3
    with pytest.raises(ValueError, match="dereverb must be one of"):
        EnhanceConfig().with_setting("dereverb", "dry")
    with pytest.raises(ValueError, match="dereverb must be one of"):
        EnhanceConfig(dereverb="dry")
    assert EnhanceConfig().with_setting("dereverb", "none").dereverb == "none"
    entries = [Entry("x", str(tmp_path / "x.wav"))]
    for bad in ({"fuse": "Mask"}, {"dereverb": "dry"}):  # the Python API checks them too
        with pytest.raises(ValueError, match="must be one of"):
            enhance_files(GainPolicy(), entries, tmp_path / "bad", progress=False, **bad)
        assert not (tmp_path / "bad").exists()
        with pytest.raises(ValueError, match="must be one of"):
            enhance_audio(GainPolicy(), [np.zeros(SR, np.float32)], **bad)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, speech, noisy):
    """Two tiny untrained AR policies and a test manifest with one long (chunked) file."""
    root = tmp_path_factory.mktemp("enh")
    clean = [speech(i, "en-us+m3") for i in range(4)]
    train_world_codec(clean, root / "codec", WorldCodecConfig(**TINY_CODEC))
    codec = WorldCodec.load(root / "codec")
    for k in (0, 1):
        torch.manual_seed(k)
        build_policy("ar", codec, TINY_MODEL).save(root / f"model{k}")
    long = np.concatenate(clean[:3])
    rows = []
    for k, c in enumerate([clean[3], speech(0, "en-us+f2"), long]):
        sf.write(root / f"c{k}.wav", c, SR)
        sf.write(root / f"n{k}.wav", noisy(c, 5.0, seed=k), SR)
        rows.append({"id": f"u{k}", "audio": f"n{k}.wav", "reference": f"c{k}.wav", "text": "hi"})
    write_manifest(root / "test.jsonl", rows)
    return root


def test_enhance_cli_with_ar_policy(setup, tmp_path):
    out = tmp_path / "enh"
    args = ["enhance", "--model", str(setup / "model0"), "--input", str(setup / "test.jsonl")]
    args += ["--output", str(out), "--chunk-seconds", "4", "--overlap-seconds", "0.5"]
    args += ["enhance.threads=1"]
    assert main(args) == 0
    entries = read_manifest(out / "manifest.jsonl")
    assert [e.id for e in entries] == ["u0", "u1", "u2"]
    for e in entries:
        y, sr = sf.read(e.audio, dtype="float32")
        x, _ = sf.read(e.noisy, dtype="float32")
        assert sr == SR and y.size == x.size and np.isfinite(y).all() and np.abs(y).max() > 0
        assert e.reference.endswith(f"c{e.id[1]}.wav") and e.text == "hi"
    assert (out / "config.yaml").is_file() and (out / "log.jsonl").is_file()
    rec = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert rec["enhance/files"] == 3 and rec["enhance/failed"] == 0
    # a folder of audio works too
    assert main(["enhance", "--model", str(setup / "model0"), "--input", str(out),
                 "--output", str(tmp_path / "enh2"), "enhance.threads=1"]) == 0  # fmt: skip
    assert len(read_manifest(tmp_path / "enh2" / "manifest.jsonl")) == 3
    # a re-run killed midway leaves no manifest listing a mix of old and new files as done
    import sealign.commands.enhance as cmd

    def killed(*a, **k):
        raise KeyboardInterrupt

    saved, cmd.enhance_files = cmd.enhance_files, killed
    try:
        assert main([*args, "--temperature", "1.0"]) != 0
    finally:
        cmd.enhance_files = saved
    assert not (out / "manifest.jsonl").exists()


def test_enhance_cli_one_file_and_misused_folders(setup, tmp_path, capsys):
    model = ["enhance", "--model", str(setup / "model0"), "enhance.threads=1"]
    one = tmp_path / "one.wav"
    shutil.copyfile(setup / "n0.wav", one)
    assert main([*model, "--input", str(one), "--output", str(tmp_path / "o1")]) == 0
    assert [e.id for e in read_manifest(tmp_path / "o1" / "manifest.jsonl")] == ["one"]
    assert main([*model, "--input", str(tmp_path / "o1"), "--output", str(tmp_path / "o1")]) == 2
    assert "--output must differ from --input" in capsys.readouterr().err
    short = ["--chunk-seconds", "0.05", "--overlap-seconds", "0.01"]
    assert main([*model, "--input", str(one), "--output", str(tmp_path / "o2"), *short]) == 2
    assert "cannot take chunks this short" in capsys.readouterr().err


def test_enhance_cli_input_folder_inside_its_output_folder(setup, tmp_path):
    (tmp_path / "proj" / "in").mkdir(parents=True)
    sf.write(tmp_path / "proj" / "in" / "a.wav", sine_ish(1.5), SR)
    args = ["enhance", "--model", str(setup / "model0"), "--input", str(tmp_path / "proj" / "in"),
            "--output", str(tmp_path / "proj"), "enhance.threads=1"]  # fmt: skip
    assert main(args) == 0
    assert (tmp_path / "proj" / "a.wav").is_file()


def test_enhance_best_of_keeps_the_output_the_metric_prefers(setup, tmp_path, monkeypatch):
    out = tmp_path / "bo"
    args = ["enhance", "--model", str(setup / "model0"), "--input", str(setup / "test.jsonl")]
    args += ["--output", str(out), "--threads", "1", "--samples", "2"]
    assert main([*args, "--best-of", "dnsmos_p808", "enhance.temperature=1.0"]) == 0
    got = read_manifest(out / "manifest.jsonl")
    assert [e.id for e in got] == ["u0", "u1", "u2"] and got[0].reference is not None
    scores = [
        {r["id"]: r["scores"]["dnsmos_p808"] for r in map(json.loads, f.read_text().splitlines())}
        for f in (out / "candidates" / "sample.scores.jsonl",
                  out / "candidates" / "sample_sample1.scores.jsonl")
    ]  # fmt: skip
    assert any(a != b for a, b in zip(scores[0].values(), scores[1].values(), strict=True))
    for e in got:
        k = e.extra["best_of"]["selected"]
        assert scores[k][e.id] == max(s[e.id] for s in scores) == e.extra["best_of"]["dnsmos_p808"]
        tag = "sample" if k == 0 else "sample_sample1"
        cand = out / "candidates" / tag / Path(e.audio).name
        assert Path(e.audio).parent == out and Path(e.audio).read_bytes() == cand.read_bytes()
    for bad in (["--samples", "2"], ["--best-of", "dnsmos_ovrl"], ["--best-of", "wer"],
                ["--best-of", "nope"]):  # fmt: skip
        assert main([*args[:-2], "--output", str(tmp_path / "bad"), *bad]) == 2
    assert not (tmp_path / "bad").exists()
    # a metric whose weights are missing stops the command before any sampling
    monkeypatch.delenv("SEALIGN_UTMOS_CKPT", raising=False)
    assert main([*args, "--output", str(tmp_path / "u"), "--best-of", "utmos"]) != 0
    assert not list((tmp_path / "u").rglob("*.wav"))


def test_enhance_shards_and_torchrun_merge_their_manifests(setup, tmp_path, torchrun):
    base = ["enhance", "--model", str(setup / "model0"), "--input", str(setup / "test.jsonl"),
            "enhance.threads=1"]  # fmt: skip
    split = tmp_path / "split"
    for k in (1, 0):
        assert main([*base, "--output", str(split), "--shard", f"{k}/2"]) == 0
        if k == 1:  # a merge before every shard has finished would lose shard 0's inputs
            assert main(["enhance", "--output", str(split), "--merge"]) == 2
    assert [e.id for e in read_manifest(split / "manifest.shard-1-of-2.jsonl")] == ["u1"]
    assert main(["enhance", "--output", str(split), "--merge"]) == 0
    got = read_manifest(split / "manifest.jsonl")
    assert [e.id for e in got] == ["u0", "u1", "u2"] and all(Path(e.audio).is_file() for e in got)
    assert not list(split.glob("manifest.shard-*"))
    logged = [json.loads(x) for x in (split / "log.jsonl").read_text().splitlines()]
    counts = {k: v for r in logged for k, v in r.items() if k.endswith("files")}
    assert counts == {"enhance/shard_1/files": 1, "enhance/shard_0/files": 2, "enhance/files": 3}
    ddp = tmp_path / "ddp"
    proc = torchrun(
        29586, *base, "--output", str(ddp), "--samples", "2", "--best-of", "dnsmos_p808"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = read_manifest(ddp / "manifest.jsonl")
    assert [e.id for e in got] == ["u0", "u1", "u2"] and "best_of" in got[0].extra
    assert (ddp / "candidates.shard-1-of-2" / "sample.scores.jsonl").is_file()


def test_enhance_extra_sampler_options(setup, tmp_path, capsys):
    base = ["enhance", "--model", str(setup / "model0"), "--input", str(setup / "test.jsonl")]
    ok = [*base, "--output", str(tmp_path / "a"), "enhance.threads=1"]
    assert main([*ok, "enhance.extra={use_cache: false}"]) == 0  # an option of ARPolicy.sample
    bad = [*base, "--output", str(tmp_path / "b"), "enhance.threads=1", "enhance.extra={sde_a: 1}"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "enhance.extra" in err and "sde_a" in err and "use_cache" in err


def eval_model0(setup, out) -> list[str]:
    """``sealign eval`` arguments: the tiny model0 on the test manifest, scored by SI-SDR."""
    args = ["eval", "--model", str(setup / "model0"), "--manifest", str(setup / "test.jsonl")]
    return args + ["--output", str(out), "--threads", "1", "--metrics", "si_sdr", "--no-cache"]


def test_eval_samples_average_several_outputs_per_utterance(setup, tmp_path):
    out = tmp_path / "eval"
    args = eval_model0(setup, out)
    assert main([*args, "--samples", "2", "enhance.temperature=1.0", "n_boot=200"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["samples_per_utterance"] == 2
    per = []
    for tag in ("model0", "model0_sample1"):
        lines = (out / "scores" / f"{tag}.jsonl").read_text().splitlines()
        per.append({r["id"]: r["scores"]["si_sdr"] for r in map(json.loads, lines)})
    assert per[0] != per[1]  # seeds 0 and 1 give different outputs
    want = np.mean([(per[0][i] + per[1][i]) / 2 for i in per[0]])
    assert res["systems"]["model0"]["si_sdr"]["mean"] == pytest.approx(want)
    assert res["systems"]["model0"]["si_sdr"]["n"] == 3
    assert main([*args, "--samples", "0"]) == 2


def test_eval_best_of_keeps_the_best_sample_per_utterance(setup, tmp_path):
    out = tmp_path / "eval"
    args = [*eval_model0(setup, out), "--samples", "3", "enhance.temperature=1.0", "n_boot=200"]
    assert main([*args, "--best-of", "si_sdr"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["systems"]) == ["noisy", "model0", "model0_best", "clean"]
    assert list(res["diff_vs_noisy"]) == ["model0", "model0_best"]
    per = []
    for tag in ("model0", "model0_sample1", "model0_sample2"):
        lines = (out / "scores" / f"{tag}.jsonl").read_text().splitlines()
        per.append({r["id"]: r["scores"]["si_sdr"] for r in map(json.loads, lines)})
    want = np.mean([max(p[i] for p in per) for i in per[0]])
    assert res["systems"]["model0_best"]["si_sdr"]["mean"] == pytest.approx(want)
    assert (
        res["systems"]["model0_best"]["si_sdr"]["mean"] > res["systems"]["model0"]["si_sdr"]["mean"]
    )
    assert sum(res["best_of"]["selected"]["model0_best"].values()) == 3
    assert res["best_of"]["columns"] == {"si_sdr": "identity"}
    assert res["best_of"]["oracle"] == ["si_sdr"]  # SI-SDR reads the clean reference
    assert main([*eval_model0(setup, tmp_path / "e1"), "--best-of", "si_sdr"]) == 2  # one sample
    assert main([*args[:-4], "--output", str(tmp_path / "e2"), "--samples", "2",
                 "--best-of", "pesq_wb"]) == 2  # fmt: skip
    assert not (tmp_path / "e2").exists()  # an unknown column fails before any work


def test_best_of_samples_skips_incomplete_candidates():
    a = [{"id": "u1", "scores": {"wer": 0.5, "dnsmos_ovrl": 3.0}}, {"id": "u2", "scores": {}}]
    b = [{"id": "u2", "scores": {}}, {"id": "u1", "scores": {"wer": 0.1, "dnsmos_ovrl": 2.0}}]
    got = best_of_samples([a, b], {"wer": "error_rate", "dnsmos_ovrl": "mos"})
    # 1 - 0.5 + 0.5 = 1.0 against 1 - 0.1 + 0.25 = 1.15: the second sample wins u1
    assert got[0]["selected"] == 1 and got[0]["scores"]["wer"] == 0.1
    assert got[1]["selected"] == 0 and "best_of" in got[1]["skipped"]


def test_eval_sweep_enhances_once_per_value_and_plots(setup, tmp_path):
    out = tmp_path / "eval"
    args = eval_model0(setup, out)
    assert main([*args, "--sweep", "remix=0,0.5", "n_boot=200", "baseline=model0_remix0"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["systems"]) == {"noisy", "model0_remix0", "model0_remix0.5", "clean"}
    assert res["sweep"] == {"key": "remix", "values": [0, 0.5],
                            "systems": {"model0": ["model0_remix0", "model0_remix0.5"]}}  # fmt: skip
    assert res["sampling"]["model0_remix0.5"]["remix"] == 0.5
    # same seed, same samples: half of the noisy input mixed in raises SI-SDR towards noisy's
    sdr = {s: res["systems"][s]["si_sdr"]["mean"] for s in res["systems"]}
    assert sdr["model0_remix0"] < sdr["model0_remix0.5"] < sdr["noisy"]
    assert "model0_remix0.5" in res["diff_vs_model0_remix0"]
    assert (out / "sweep.png").stat().st_size > 1000
    both = [*eval_model0(setup, tmp_path / "both"), "--sweep", "remix=0,0.5", "--samples", "2"]
    assert main([*both, "--best-of", "si_sdr", "n_boot=200"]) == 0
    res = json.loads((tmp_path / "both" / "results.json").read_text())
    assert res["sweep"]["systems"]["model0, best of 2"] == ["model0_remix0_best",
                                                            "model0_remix0.5_best"]  # fmt: skip
    for bad in ("remix=0,2", "remix=", "colour=1,2", "remix=0,0", "top_k=1.5"):
        assert main([*eval_model0(setup, tmp_path / "bad"), "--sweep", bad]) == 2
    assert not (tmp_path / "bad").exists()


def test_mean_over_samples_keeps_missing_columns_and_skips():
    a = [
        {"id": "u1", "scores": {"x": 1.0, "y": 2.0}},
        {"id": "u2", "scores": {}, "skipped": {"x": "silent"}},
    ]
    b = [{"id": "u2", "scores": {"x": 4.0}}, {"id": "u1", "scores": {"x": 3.0}}]
    got = mean_over_samples([a, b])
    assert [r["id"] for r in got] == ["u1", "u2"]
    assert got[0]["scores"] == {"x": 2.0, "y": 2.0} and got[0]["samples"] == 2
    assert got[1]["scores"] == {"x": 4.0} and got[1]["skipped"] == {"x": "silent"}
    assert mean_over_samples([a]) is a


def test_checkpoint_sampling_defaults(tmp_path):
    cfg = EnhanceConfig(top_p=0.9)
    want = replace(cfg, temperature=0.3, top_k=0, top_p=0.9, fuse="none", dereverb="none")
    assert cfg.for_checkpoint(tmp_path) == want
    (tmp_path / "sampling.json").write_text(
        '{"temperature": 0.1, "top_k": 50, "top_p": 0.5, "fuse": "mask"}'
    )
    got = cfg.for_checkpoint(tmp_path)  # what the user sets wins over the checkpoint
    assert (got.temperature, got.top_k, got.top_p, got.fuse) == (0.1, 50, 0.9, "mask")
    assert replace(cfg, fuse="none").for_checkpoint(tmp_path).fuse == "none"
    assert got.sample_options() == {"top_k": 50, "top_p": 0.9}
    with pytest.raises(ValueError, match="for_checkpoint"):
        cfg.sample_options()
    for bad, match in [
        ('{"temp": 1}', "unknown keys"),
        ('{"top_k": 2.5}', "top_k must be an integer"),
        ('{"temperature": "hot"}', "temperature must be a number"),
        ('{"temperature": -1}', "temperature must be a positive number"),
        ('{"temperature": 0}', "temperature must be a positive number"),
        ('{"top_p": 1.5}', "top_p must be in"),
        ('{"top_k": -2}', "top_k must be a non-negative integer"),
        ('{"fuse": 1}', "fuse must be a string"),
        ('{"fuse": "wiener"}', "fuse must be one of"),
        ('{"dereverb": 0}', "dereverb must be a string"),
        ('{"dereverb": "dry"}', "dereverb must be one of"),
        ("[1]", "unknown keys"),
        ("{", "not valid JSON"),
    ]:
        (tmp_path / "sampling.json").write_text(bad)
        with pytest.raises(ValueError, match=match):
            EnhanceConfig().for_checkpoint(tmp_path)


def test_eval_cli_table_with_noisy_models_and_clean(setup, tmp_path, capsys):
    out = tmp_path / "eval"
    model1 = tmp_path / "model1"  # with recommended sampling settings
    shutil.copytree(setup / "model1", model1)
    (model1 / "sampling.json").write_text('{"temperature": 0.05, "top_k": 3}')
    args = ["eval", "--model", str(setup / "model0"), "--model", str(model1)]
    args += ["--manifest", str(setup / "test.jsonl"), "--output", str(out), "--threads", "1"]
    args += ["--metrics", "si_sdr,estoi", "--no-cache", "--chunk-seconds", "4", "n_boot=500"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[0]
    assert header == "| metric | noisy | model0 | model1 | clean |"
    assert "| Δ vs noisy | model0 | model1 |" in printed
    assert (out / "results.md").read_text().strip() == printed.strip()
    tex = (out / "results.tex").read_text()  # the same numbers as papers print them
    assert "SI-SDR$\\uparrow$ & ESTOI$\\uparrow$" in tex and tex.count("model") == 2
    res = json.loads((out / "results.json").read_text())
    assert set(res["systems"]) == {"noisy", "model0", "model1", "clean"}
    noisy_sdr = res["systems"]["noisy"]["si_sdr"]
    assert noisy_sdr["n"] == 3 and 3 < noisy_sdr["mean"] < 7
    assert res["systems"]["clean"]["estoi"]["mean"] == pytest.approx(1.0, abs=1e-3)
    d = res["diff_vs_noisy"]["model0"]["si_sdr"]
    assert d["n"] == 3 and d["low"] <= d["mean"] <= d["high"]
    # the difference is model minus noisy, paired by utterance
    per = {}
    for s in ("noisy", "model0"):
        lines = (out / "scores" / f"{s}.jsonl").read_text().splitlines()
        per[s] = {r["id"]: r["scores"]["si_sdr"] for r in map(json.loads, lines)}
    assert d["mean"] == pytest.approx(
        np.mean([per["model0"][i] - per["noisy"][i] for i in per["noisy"]])
    )
    assert res["models"]["model1"] == str(model1)
    assert res["sampling"] == {
        "model0": {"temperature": 0.3, "top_k": 0, "top_p": 1.0},
        "model1": {"temperature": 0.05, "top_k": 3, "top_p": 1.0},
    }
    assert len(read_manifest(out / "enhanced" / "model1" / "manifest.jsonl")) == 3
    assert (out / "config.yaml").is_file() and any((out / "tb").iterdir())
    # run again without --resume: refused, the results stay
    before = (out / "results.json").read_bytes()
    assert main(args) == 2
    assert "holds the results of an earlier run" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before
    # a table of one system's scores file is refused with a pointer to what to give
    assert main(["table", str(out / "scores" / "model0.jsonl")]) == 2
    assert "give a score run's folder" in capsys.readouterr().err
    # a missing model fails before any work
    assert main(["eval", "--model", str(tmp_path / "nope"), "--manifest", str(setup / "test.jsonl"),
                 "--output", str(tmp_path / "e2")]) == 2  # fmt: skip
    assert not (tmp_path / "e2").exists()
    # so does a metric whose model cannot load (NISQA without its weights): before enhancing
    assert main(["eval", "--model", str(setup / "model0"), "--manifest", str(setup / "test.jsonl"),
                 "--output", str(tmp_path / "e3"), "--metrics", "si_sdr,nisqa"]) == 2  # fmt: skip
    assert not (tmp_path / "e3").exists()


def test_eval_under_torchrun_splits_the_utterances_and_rank_zero_tables(setup, tmp_path, torchrun):
    args = ["eval", "--model", str(setup / "model0"), "--manifest", str(setup / "test.jsonl"),
            "--threads", "1", "--metrics", "si_sdr,estoi", "--no-cache", "--chunk-seconds", "4",
            "--samples", "2", "n_boot=200"]  # fmt: skip
    one, ddp = tmp_path / "one", tmp_path / "ddp"
    assert main([*args, "--output", str(one)]) == 0
    proc = torchrun(29587, *args, "--output", str(ddp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((d / "results.json").read_text()) for d in (one, ddp))
    assert set(b["systems"]) == {"noisy", "model0", "clean"}
    for system in ("noisy", "clean"):  # no sampling: the same numbers
        for col in ("si_sdr", "estoi"):
            x, y = a["systems"][system][col], b["systems"][system][col]
            assert (x["n"], x["mean"]) == (y["n"], pytest.approx(y["mean"], rel=1e-9))
    assert b["systems"]["model0"]["si_sdr"]["n"] == 3 and b["diff_vs_noisy"]["model0"]
    for tag in ("model0", "model0_sample1"):  # every rank's outputs, one manifest and scores
        assert len(read_manifest(ddp / "enhanced" / tag / "manifest.jsonl")) == 3
        assert len((ddp / "scores" / f"{tag}.jsonl").read_text().splitlines()) == 3
    assert not list(ddp.rglob("*.shard-*"))
    assert (ddp / "results.md").read_text().splitlines()[0] == "| metric | noisy | model0 | clean |"
    # as two jobs of a job array, then --merge: the same tables as under torchrun
    split = tmp_path / "split"
    for k in (1, 0):
        assert main([*args, "--output", str(split), "--shard", f"{k}/2"]) == 0
        if k == 1:
            assert main(["eval", "--output", str(split), "--merge"]) == 2
    assert not (split / "results.json").exists()
    assert main(["eval", "--output", str(split), "--merge"]) == 0
    c = json.loads((split / "results.json").read_text())
    assert c["systems"].keys() == b["systems"].keys() and c["sampling"] == b["sampling"]
    for system, cols in c["systems"].items():
        for col, v in cols.items():
            w = b["systems"][system][col]
            assert (v["n"], v["mean"]) == (w["n"], pytest.approx(w["mean"], rel=1e-9))
    assert not list(split.rglob("*.shard-*"))
    assert main(["eval", "--output", str(split), "--merge"]) == 2  # nothing left to merge


def test_export_cli_half_precision_and_sampling(setup, tmp_path):
    from safetensors.torch import load_file

    from sealign.models.registry import load_policy

    src, out = setup / "model1", tmp_path / "shipped"
    args = ["export", "--model", str(src), "--output", str(out), "--temperature", "0.2"]
    assert main(args + ["--top-k", "7", "--fuse", "mask", "--dereverb", "wpe"]) == 0
    weights = load_file(str(out / "model.safetensors"))
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    size = {d: (d / "model.safetensors").stat().st_size for d in (src, out)}
    assert size[out] < 0.6 * size[src]
    a, b = load_policy(src), load_policy(out)
    assert b.sampling_defaults == {
        "temperature": 0.2,
        "top_k": 7,
        "fuse": "mask",
        "dereverb": "wpe",
    }
    for k, v in a.state_dict().items():
        assert b.state_dict()[k].dtype == v.dtype  # loaded back as float32 parameters
        torch.testing.assert_close(b.state_dict()[k], v, rtol=1e-3, atol=1e-4)
    # the half-precision model scores tokens as the original does, to rounding
    cond = a.condition([np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1])
    roll = a.sample(cond, temperature=1.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lp_a, lp_b = a.step_log_probs(cond, roll)[0], b.step_log_probs(cond, roll)[0]
    assert (lp_a - lp_b).abs().max() < 1e-2
    assert main(args) == 2  # the output exists: refused, nothing overwritten
    assert load_policy(out).sampling_defaults["top_k"] == 7
    # bfloat16, with the largest change of a parameter as reported
    from sealign.commands.export import export_policy

    change = export_policy(src, tmp_path / "bf16", "bfloat16")
    bf = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert {v.dtype for v in bf.values() if v.is_floating_point()} == {torch.bfloat16}
    c = load_policy(tmp_path / "bf16")
    worst = max(float((c.state_dict()[k] - v).abs().max()) for k, v in a.state_dict().items())
    assert change == pytest.approx(worst) and 0 < change < 0.05
    bad = ["export", "--model", str(src), "--output", str(tmp_path / "x"), "--top-k", "-1"]
    assert main(bad) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
    assert main([*bad[:-2], "--temperature", "inf"]) == 2


def test_export_refuses_weights_that_half_precision_or_nan_would_break(setup, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    for value, why in ((1e6, "beyond float16's range"), (float("nan"), "NaN or inf")):
        src = tmp_path / f"m{value}"
        shutil.copytree(setup / "model1", src)
        state = load_file(str(src / "model.safetensors"))
        name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
        state[name] = state[name].clone()
        state[name].view(-1)[0] = value
        save_file(state, str(src / "model.safetensors"))
        out = tmp_path / f"out{value}"
        assert main(["export", "--model", str(src), "--output", str(out)]) == 2
        assert why in capsys.readouterr().err and not out.exists()
    # weights of another shape than config.json's: a clear error, not a traceback
    state = load_file(str(setup / "model1" / "model.safetensors"))
    name = next(k for k, v in state.items() if v.ndim == 2)
    state[name] = state[name][1:].clone()
    src = tmp_path / "misshapen"
    shutil.copytree(setup / "model1", src)
    save_file(state, str(src / "model.safetensors"))
    assert main(["export", "--model", str(src), "--output", str(tmp_path / "o")]) == 2
    assert "weights do not fit its config.json" in capsys.readouterr().err


def test_eval_settings_are_checked_before_any_enhancement(setup, tmp_path, capsys):
    out = tmp_path / "eval"
    args = eval_model0(setup, out)
    assert main([*args, "baseline=nosuch"]) == 2
    assert "baseline: 'nosuch' is not one of noisy, clean, model0" in capsys.readouterr().err
    assert not out.exists()
    no_manifest = [a for a in args if a not in ("--manifest", str(setup / "test.jsonl"))]
    assert main(no_manifest) == 2
    assert "give --manifest" in capsys.readouterr().err
    two = [*args, "--model", str(setup / "model1")]
    for names, error in (
        (["a", "a"], "two systems would be called 'a'"),
        (["clean", "b"], "two systems would be called 'clean'"),
        (["a", "a_sample1"], "two systems would be called 'a_sample1'"),  # with --samples 2
        (["../../escape", "b"], "cannot name a folder"),
    ):
        assert main([*two, "--samples", "2", *(x for n in names for x in ("--name", n))]) == 2
        assert error in capsys.readouterr().err
    assert main([*args, "--samples", "100000000"]) == 2
    assert "samples must be between 1 and 1000" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "escape").exists()
    best = [*args, "--samples", "2", "--best-of", "si_sdr", "n_boot=200"]
    assert main([*best, "baseline=model0_best"]) == 0  # a best-of system can be the baseline
    assert "diff_vs_model0_best" in json.loads((out / "results.json").read_text())


def test_eval_resume_enhances_and_scores_a_replaced_input_again(setup, tmp_path, capsys):
    rows = []
    for e in read_manifest(setup / "test.jsonl"):
        sf.write(tmp_path / f"{e.id}.wav", sf.read(e.audio)[0], SR)
        rows.append({**e.to_json(), "audio": str(tmp_path / f"{e.id}.wav")})
    write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "eval"
    args = ["eval", "--model", str(setup / "model0"), "--manifest", str(tmp_path / "m.jsonl"),
            "--output", str(out), "--threads", "1", "--metrics", "si_sdr", "--no-cache"]  # fmt: skip
    assert main(args) == 0
    first = json.loads((out / "results.json").read_text())
    wav = out / "enhanced" / "model0" / "u0.wav"
    stamp = wav.stat().st_mtime_ns
    sf.write(tmp_path / "u0.wav", sf.read(tmp_path / "u1.wav")[0], SR)  # replaced in place
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "inputs changed since these outputs were written" in capsys.readouterr().err
    assert wav.stat().st_mtime_ns != stamp
    again = json.loads((out / "results.json").read_text())
    assert again["systems"]["noisy"]["si_sdr"] != first["systems"]["noisy"]["si_sdr"]


def test_eval_resume_enhances_again_with_new_weights_or_settings(setup, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(setup / "model0", model)
    out = tmp_path / "eval"
    args = ["eval", "--model", str(model), "--name", "m", "--manifest", str(setup / "test.jsonl"),
            "--output", str(out), "--threads", "1", "--metrics", "si_sdr", "--no-cache"]  # fmt: skip
    assert main(args) == 0
    first = json.loads((out / "results.json").read_text())["systems"]["m"]["si_sdr"]
    # new weights in the same folder (a training run's newer checkpoint, a re-export)
    shutil.copyfile(setup / "model1" / "model.safetensors", model / "model.safetensors")
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "the model or its settings changed since these outputs" in capsys.readouterr().err
    again = json.loads((out / "results.json").read_text())["systems"]["m"]["si_sdr"]
    assert again != first
    # a run with other settings killed after it wrote its config, then resumed: the outputs
    # recorded with the first settings are not taken for the second's
    record = out / "enhanced" / "m" / "manifest.jsonl.done.json"
    rec = json.loads(record.read_text())
    rec["settings"]["temperature"] = 0.123
    record.write_text(json.dumps(rec))
    assert main([*args, "--resume"]) == 0
    assert "the model or its settings changed" in capsys.readouterr().err


def test_eval_resume_reuses_finished_outputs_and_scores(setup, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [*eval_model0(setup, out), "--samples", "2", "enhance.temperature=1.0", "n_boot=200"]
    assert main(args) == 0
    first = json.loads((out / "results.json").read_text())
    stamps = {p: p.stat().st_mtime_ns for p in (out / "enhanced" / "model0").glob("*.wav")}
    # a run killed while enhancing its second sample, after scoring part of the noisy column
    (out / "results.json").unlink()
    (out / "enhanced" / "model0_sample1" / "manifest.jsonl.done.json").unlink()
    noisy = out / "scores" / "noisy.jsonl"
    noisy.write_text(noisy.read_text().splitlines()[0] + "\n")
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "model0: its 3 outputs are complete" in err and "model0_sample1: its" not in err
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "enhanced" / "model0").glob("*.wav")}
    again = json.loads((out / "results.json").read_text())
    assert again["systems"] == first["systems"] and again["diff_vs_noisy"] == first["diff_vs_noisy"]
    # other settings are not a resume of this run
    assert main([*args, "--resume", "enhance.temperature=0.5"]) == 2
    assert "enhance differ from the run" in capsys.readouterr().err
    assert main([*eval_model0(setup, tmp_path / "new"), "--resume"]) == 2
    assert "nothing to continue" in capsys.readouterr().err


def test_eval_notes_a_model_that_could_not_enhance_some_utterances(setup, tmp_path):
    rows = [e.to_json() for e in read_manifest(setup / "test.jsonl")]
    sf.write(tmp_path / "quiet.wav", np.zeros(SR, np.float32), SR)
    rows.append({**rows[0], "id": "quiet", "audio": str(tmp_path / "quiet.wav")})
    write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "eval"
    args = ["eval", "--model", str(setup / "model0"), "--manifest", str(tmp_path / "m.jsonl"),
            "--output", str(out), "--threads", "1", "--metrics", "si_sdr", "--no-cache"]  # fmt: skip
    assert main(args) == 0
    assert set(json.loads((out / "results.json").read_text())["failed"]["model0"]) == {"quiet"}
    assert "Note: model0 could not enhance 1 utterance(s)" in (out / "results.md").read_text()


def test_eval_says_why_a_metric_scored_nothing(setup, tmp_path):
    rows = [{k: v for k, v in e.to_json().items() if k != "reference"}
            for e in read_manifest(setup / "test.jsonl")]  # fmt: skip
    write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "eval"
    args = ["eval", "--model", str(setup / "model0"), "--manifest", str(tmp_path / "m.jsonl"),
            "--output", str(out), "--threads", "1", "--metrics", "si_sdr", "--no-cache"]  # fmt: skip
    assert main(args) == 0
    assert "Note: si_sdr scored no utterance: no reference (6)" in (out / "results.md").read_text()


def test_a_whole_file_longer_than_the_model_takes_is_refused_before_dereverberation(
    setup, tmp_path, monkeypatch
):
    import dataclasses

    from sealign.infer import enhance as E
    from sealign.models.registry import load_policy

    policy = load_policy(setup / "model0")
    policy.config = dataclasses.replace(policy.config, max_frames=100)  # 2 s of 50-Hz frames
    sf.write(tmp_path / "long.wav", sine_ish(3.0), SR)
    sf.write(tmp_path / "short.wav", sine_ish(1.5), SR)
    dereverberated = []
    real = E.dereverb_input
    monkeypatch.setattr(E, "dereverb_input",
                        lambda w, sr, m: dereverberated.append(w.size) or real(w, sr, m))  # fmt: skip
    inputs = resolve_inputs(tmp_path)
    res = enhance_files(policy, inputs, tmp_path / "out", chunk_seconds=0, dereverb="wpe",
                        progress=False)  # fmt: skip
    assert [e.id for e in res.entries] == ["short"] and dereverberated == [int(1.5 * SR)]
    assert "more than the model's max_frames=100; enhance it in chunks" in res.failed["long"]
    chunked = enhance_files(policy, inputs, tmp_path / "out2", chunk_seconds=1.6,
                            overlap_seconds=0.5, progress=False)  # fmt: skip
    assert sorted(e.id for e in chunked.entries) == ["long", "short"] and not chunked.failed


def test_eval_does_not_enhance_inputs_too_long_to_score(setup, tmp_path, capsys):
    durations = {e.id: sf.info(e.audio).duration for e in read_manifest(setup / "test.jsonl")}
    limit = (durations["u2"] + max(durations["u0"], durations["u1"])) / 2  # u2 alone above
    out = tmp_path / "eval"
    args = ["eval", "--model", str(setup / "model0"), "--manifest", str(setup / "test.jsonl"),
            "--output", str(out), "--threads", "1", "--metrics", "si_sdr", "--no-cache",
            f"score.max_duration={limit}"]  # fmt: skip
    assert main(args) == 0
    assert "skipping u2: too long" in capsys.readouterr().err
    enhanced = read_manifest(out / "enhanced" / "model0" / "manifest.jsonl")
    assert [e.id for e in enhanced] == ["u0", "u1"]
    res = json.loads((out / "results.json").read_text())
    assert res["systems"]["noisy"]["si_sdr"]["n"] == 2
    assert list(res["failed"]["noisy"]) == ["u2"]
    assert "Note: 1 input(s) left out, too long to score" in (out / "results.md").read_text()
