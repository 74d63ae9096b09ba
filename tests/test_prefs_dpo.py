"""Preference pairs (criteria, yields), `sealign prefs` and `sealign dpo` on tiny policies."""

from __future__ import annotations

import collections
import json
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from sealign.cli import main
from sealign.codecs.base import load_codec
from sealign.config import load_config
from sealign.models.registry import build_policy
from sealign.prefs.build import PrefsConfig, load_targets, read_candidates
from sealign.prefs.pairs import Candidate, make_pairs, no_pairs_message
from sealign.rl import dpo as dpo_mod

torch.set_num_threads(1)

COLS = ["a", "b", "wer"]
HIB = {"a": True, "b": True, "wer": False}
SCALES = {"a": "identity", "b": "identity", "wer": "error_rate"}


def cands(rows):
    return [Candidate("x", f"c{i}", dict(zip(COLS, r, strict=True))) for i, r in enumerate(rows)]


def test_unanimous_needs_every_metric_and_respects_direction_and_margins():
    c = cands([(0.9, 0.9, 0.1), (0.5, 0.5, 0.3), (0.95, 0.4, 0.0)])
    rep = make_pairs(c, COLS, HIB, SCALES, "unanimous")
    assert {(p.winner, p.loser) for p in rep.pairs} == {("c0", "c1")}
    rep = make_pairs(c, COLS, HIB, SCALES, "unanimous", margins={"a": 0.5})
    assert rep.pairs == []
    assert "a" in no_pairs_message(rep) and "no pairs" in no_pairs_message(rep)
    empty = make_pairs([], COLS, HIB, SCALES, "unanimous")
    assert "every input was skipped" in no_pairs_message(empty)


def test_single_weighted_and_gt_winner():
    c = cands([(0.9, 0.9, 0.1), (0.5, 0.5, 0.3), (0.95, 0.4, 0.0)])
    single = make_pairs(c, COLS, HIB, SCALES, "single:wer")
    assert {(p.winner, p.loser) for p in single.pairs} == {("c2", "c0"), ("c2", "c1"), ("c0", "c1")}
    weighted = make_pairs(c, COLS, HIB, SCALES, "weighted", weighted_margin=0.1)
    # composites 0.9, 0.567, 0.783
    assert {(p.winner, p.loser) for p in weighted.pairs} == {
        ("c0", "c1"),
        ("c2", "c1"),
        ("c0", "c2"),
    }
    gt = make_pairs(c, COLS, HIB, SCALES, "gt-winner")
    assert {p.winner for p in gt.pairs} == {"clean"} and len(gt.pairs) == 3
    best = make_pairs(c, COLS, HIB, SCALES, "single:wer", max_pairs_per_input=1)
    assert len(best.pairs) == 1 and best.pairs[0].margin == max(p.margin for p in single.pairs)
    with pytest.raises(ValueError, match="not a scored column"):
        make_pairs(c, COLS, HIB, SCALES, "single:pesq")


def test_candidates_missing_scores_are_excluded_and_counted():
    c = cands([(0.9, 0.9, 0.1), (0.5, 0.5, 0.3)])
    c.append(Candidate("x", "c9", {"a": 1.0, "b": 1.0}))
    rep = make_pairs(c, COLS, HIB, SCALES, "unanimous")
    assert rep.excluded_candidates == 1 and len(rep.pairs) == 1
    assert rep.summary()["inputs_with_pairs"] == 1
    # a score that is null or text (a hand-edited file) is missing too, not a crash
    c.append(Candidate("x", "c8", {"a": None, "b": "0.2", "wer": 0.1}))
    assert make_pairs(c, COLS, HIB, SCALES, "unanimous").excluded_candidates == 2
    # single:<column> and gt-winner need only what they compare
    assert make_pairs(c, COLS, HIB, SCALES, "single:a").excluded_candidates == 1
    gt = make_pairs(c, COLS, HIB, SCALES, "gt-winner")
    assert gt.excluded_candidates == 0 and len(gt.pairs) == 4
    no_ref = [Candidate("x", k.cand_id, k.scores, {"reference": None}) for k in c]
    assert make_pairs(no_ref, COLS, HIB, SCALES, "gt-winner").pairs == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"columns": []}, "at least one metric column"),
        ({"margins": {"a": -1.0}}, "margins.a must be a finite number >= 0"),
        ({"margins": {"aa": 0.1}}, r"margins: \['aa'\] not among the columns"),
        ({"weights": {"b": -2.0}}, "weights.b must be a finite number > 0"),
        ({"weighted_margin": -0.5}, "weighted_margin"),
        ({"max_pairs_per_input": -1}, "max_pairs_per_input"),
    ],
)
def test_pairing_settings_that_would_give_contradictory_pairs_are_refused(kwargs, match):
    c = cands([(0.9, 0.9, 0.1), (0.5, 0.5, 0.3)])
    columns = kwargs.pop("columns", COLS)
    with pytest.raises(ValueError, match=match):
        make_pairs(c, columns, HIB, SCALES, "unanimous", **kwargs)


def _prefs_args(model, manifest, out, *extra):
    return [
        "prefs",
        "--model",
        str(model),
        "--manifest",
        str(manifest),
        "--output",
        str(out),
        "--n",
        "3",
        "metrics=[si_sdr, estoi, pesq_wb]",
        "columns=[si_sdr, estoi, pesq_wb]",
        "criterion=single:si_sdr",
        "threads=1",
        *extra,
    ]


@pytest.fixture(scope="module")
def prefs_ar(tiny_setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("prefs") / "ar"
    assert main(_prefs_args(tiny_setup / "base", tiny_setup / "train.jsonl", out)) == 0
    return out


def test_prefs_writes_candidates_pairs_and_yields(prefs_ar, tiny_setup, capsys):
    lines = (prefs_ar / "candidates.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 3
    rec = json.loads(lines[0])
    assert set(rec["scores"]) == {"si_sdr", "estoi", "pesq_wb"}
    assert (prefs_ar / rec["audio"]).is_file() and (prefs_ar / rec["targets"]).is_file()
    y = json.loads((prefs_ar / "yield.json").read_text())
    assert set(y["criteria"]) == {
        "unanimous",
        "single:si_sdr",
        "single:estoi",
        "single:pesq_wb",
        "weighted",
        "gt-winner",
    }
    assert y["criteria"]["gt-winner"]["pairs"] == 12
    assert y["criteria"]["single:si_sdr"]["pairs"] == 4 * 3  # 3 ordered-distinct pairs per input
    assert (prefs_ar / "pairs" / "single_si_sdr.jsonl").is_file()
    assert (prefs_ar / "yield.md").read_text().startswith("| criterion")
    # resuming samples nothing new
    assert main(_prefs_args(tiny_setup / "base", tiny_setup / "train.jsonl", prefs_ar)) == 0
    assert len((prefs_ar / "candidates.jsonl").read_text().splitlines()) == 12


def test_prefs_samples_again_an_input_a_cut_write_left_incomplete(
    prefs_ar, tiny_setup, tmp_path, capsys
):
    copy = tmp_path / "cut"
    shutil.copytree(prefs_ar, copy)
    cands = copy / "candidates.jsonl"
    lines = cands.read_text().splitlines()
    cands.write_text("\n".join(lines[:4]) + "\n" + lines[4][:30])  # killed in input 2's 2nd
    (copy / "candidates.unfinished").touch()  # as the killed run left it
    capsys.readouterr()
    assert main(["prefs", "--output", str(copy), "--repair"]) == 0  # pairs of what is there
    assert "its sampling run did not finish" in capsys.readouterr().err
    cands.write_text("\n".join(lines[:4]) + "\n" + lines[4][:30])  # (the repair tidied it)
    assert main(_prefs_args(tiny_setup / "base", tiny_setup / "train.jsonl", copy)) == 0
    assert not (copy / "candidates.unfinished").exists()
    recs = [json.loads(x) for x in cands.read_text().splitlines()]  # every line whole
    count = collections.Counter(r["input_id"] for r in recs)
    assert len(count) == 4 and set(count.values()) == {3}
    # a rerun sampling otherwise (more candidates, another model) would mix two datasets
    more = _prefs_args(tiny_setup / "base", tiny_setup / "train.jsonl", copy)
    more[more.index("--n") + 1] = "4"
    assert main(more) == 2
    assert "num_candidates: 3 → 4" in capsys.readouterr().err
    assert main([*more[:-1], "threads=1", "--n", "3", "temperature=0.5"]) == 2
    assert "temperature: 1.0 → 0.5" in capsys.readouterr().err
    assert cands.read_text().splitlines() == [json.dumps(r) for r in recs]
    assert main([*more, "--n", "0"]) == 2  # not taken for "no flag"
    assert "num_candidates must be >= 2" in capsys.readouterr().err


def test_prefs_refuses_inputs_and_settings_before_writing(tiny_setup, tmp_path, capsys):
    rows = [json.loads(x) for x in (tiny_setup / "train.jsonl").read_text().splitlines()]
    for bad_id in ("../escape", "/abs/id"):
        m = tmp_path / "m.jsonl"
        m.write_text(json.dumps({**rows[0], "id": bad_id}) + "\n")
        assert main(_prefs_args(tiny_setup / "base", m, tmp_path / "out")) == 2
        assert "cannot name a folder of the dataset" in capsys.readouterr().err
    args = _prefs_args(tiny_setup / "base", tiny_setup / "train.jsonl", tmp_path / "out")
    assert main([*args, "temperature=0"]) == 2
    assert "temperature must be a finite number > 0" in capsys.readouterr().err
    assert main([*args, "margins.si_sdrr=0.5"]) == 2
    assert "margins: ['si_sdrr'] not among the columns" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_damaged_targets_file_names_itself(prefs_ar, tmp_path):
    rec = json.loads((prefs_ar / "candidates.jsonl").read_text().splitlines()[0])
    copy = tmp_path / rec["targets"]
    copy.parent.mkdir(parents=True)
    data = (prefs_ar / rec["targets"]).read_bytes()
    for damaged in (data[: len(data) // 2], b"", b"not a zip"):
        copy.write_bytes(damaged)
        with pytest.raises(ValueError, match="cannot read candidate"):
            load_targets(tmp_path, rec)


def _candidate_ids(root):
    return sorted((r["input_id"], r["cand_id"]) for r in read_candidates(root))


def test_prefs_shards_merge_into_one_dataset(prefs_ar, tiny_setup, tmp_path, capsys):
    out = tmp_path / "sharded"
    args = _prefs_args(tiny_setup / "base", tiny_setup / "train.jsonl", out)
    assert main([*args, "--shard", "1/2"]) == 0
    assert (out / "candidates.shard-1-of-2.jsonl").is_file() and not (out / "pairs").exists()
    assert {i for i, _ in _candidate_ids(out)} == {"u1", "u3"}  # inputs 1 and 3 of 4
    assert main([*args, "--shard", "0/2"]) == 0
    assert main(["prefs", "--output", str(out), "--repair"]) == 0
    assert not list(out.glob("candidates.shard-*"))  # merged, markers removed
    assert _candidate_ids(out) == _candidate_ids(prefs_ar)  # the unsharded run's candidates
    y = json.loads((out / "yield.json").read_text())
    assert y["criteria"]["gt-winner"]["pairs"] == 12
    # the shards sampled with their own seeds: different audio from the unsharded run for u1
    a = sf.read(out / "audio" / "u1" / "c0.wav")[0]
    b = sf.read(prefs_ar / "audio" / "u1" / "c0.wav")[0]
    assert a.shape != b.shape or not np.allclose(a, b)
    assert load_config(PrefsConfig, out / "config.yaml").shard == ""  # the whole job's config
    assert main([*args, "--shard", "2/2"]) == 2
    assert "shard: '2/2' is not K/N" in capsys.readouterr().err


def test_a_repair_merging_a_killed_shard_leaves_its_cut_input_to_be_sampled(
    prefs_ar, tiny_setup, tmp_path
):
    out = tmp_path / "sharded"
    args = _prefs_args(tiny_setup / "base", tiny_setup / "train.jsonl", out)
    assert main([*args, "--shard", "0/2"]) == 0
    assert main([*args, "--shard", "1/2"]) == 0
    part = out / "candidates.shard-1-of-2.jsonl"  # killed during its second input
    part.write_text("".join(part.read_text().splitlines(keepends=True)[:5]))
    part.with_suffix(".done").unlink()
    assert main(["prefs", "--output", str(out), "--repair"]) == 0
    assert main([*args, "--shard", "1/2"]) == 0
    assert main(["prefs", "--output", str(out), "--repair"]) == 0
    count = collections.Counter(i for i, _ in _candidate_ids(out))
    assert count == dict.fromkeys(["u0", "u1", "u2", "u3"], 3)


def test_prefs_under_torchrun_splits_the_inputs_and_rank_zero_pairs(tiny_setup, tmp_path, torchrun):
    out = tmp_path / "ddp"
    args = _prefs_args(tiny_setup / "base", tiny_setup / "train.jsonl", out)
    args[args.index("--n")] = "--num-candidates"  # torchrun's parser takes --n for its own
    proc = torchrun(29584, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_candidate_ids(out)) == 12 and not list(out.glob("candidates.shard-*"))
    assert (out / "pairs" / "single_si_sdr.jsonl").is_file()


def test_prefs_criterion_without_pairs_stops_with_the_reason(prefs_ar, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(prefs_ar, copy)
    args = ["prefs", "--output", str(copy), "--repair", "criterion=unanimous"]
    assert main([*args, "margins={si_sdr: 1000}"]) == 2
    err = capsys.readouterr().err
    assert "produced no pairs" in err and "disagreed" in err
    (tmp_path / "empty").mkdir()
    assert main(["prefs", "--output", str(tmp_path / "empty"), "--repair"]) == 2
    assert "holds no `sealign prefs` run" in capsys.readouterr().err


def _dpo_args(tiny_setup, dataset, run, *extra):
    """Options first, then KEY=VALUE overrides (argparse wants positionals together)."""
    overrides = [x for x in extra if "=" in x and not x.startswith("--")]
    options = [x for x in extra if x not in overrides]
    return [
        "dpo",
        "--no-progress",
        "--init-from",
        str(tiny_setup / "base"),
        "--dataset",
        str(dataset),
        "--output",
        str(run),
        "--threads",
        "1",
        *options,
        "criterion=single:si_sdr",
        "batch_size=3",
        "optim.lr=1e-3",
        "logging_steps=1",
        *overrides,
    ]


def _logged(run, key):
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in recs if key in r}


def test_dpo_trains_logs_and_resumes_exactly(prefs_ar, tiny_setup, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(_dpo_args(tiny_setup, prefs_ar, full, "--max-steps", "6", "--family", "ar")) == 0
    acc = _logged(full, "rewards/accuracies")
    assert sorted(acc) == [1, 2, 3, 4, 5, 6]
    assert _logged(full, "rewards/margins")[1] == pytest.approx(0.0, abs=1e-6)  # θ = ref
    assert _logged(full, "loss")[6] < _logged(full, "loss")[1]
    assert (full / "reference_loglik.json").is_file()
    assert main(_dpo_args(tiny_setup, prefs_ar, part, "--max-steps", "3", "save_steps=3")) == 0
    args = _dpo_args(tiny_setup, prefs_ar, part, "--max-steps", "6", "save_steps=3", "--resume")
    assert main(args) == 0
    a, b = _logged(full, "loss"), _logged(part, "loss")
    for s in (4, 5, 6):
        assert a[s] == pytest.approx(b[s], rel=1e-6)


def test_dpo_with_lora_starts_at_the_reference_and_resumes_exactly(prefs_ar, tiny_setup, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    lora = ("model.lora={rank: 2, alpha: 4}", "optim.lr=3e-2")
    assert main(_dpo_args(tiny_setup, prefs_ar, full, "--max-steps", "4", *lora)) == 0
    assert _logged(full, "rewards/margins")[1] == pytest.approx(0.0, abs=1e-6)  # B = 0: θ = ref
    assert _logged(full, "rewards/margins")[4] != pytest.approx(0.0, abs=1e-6)
    assert main(_dpo_args(tiny_setup, prefs_ar, part, "--max-steps", "2", "save_steps=2",
                          *lora)) == 0  # fmt: skip
    args = _dpo_args(tiny_setup, prefs_ar, part, "--max-steps", "4", "save_steps=2", "--resume",
                     *lora)  # fmt: skip
    assert main(args) == 0
    a, b = _logged(full, "loss"), _logged(part, "loss")
    for s in (3, 4):
        assert a[s] == pytest.approx(b[s], rel=1e-6)


def test_dpo_with_lora_takes_the_base_as_reference_without_a_copy(
    prefs_ar, tiny_setup, tmp_path, monkeypatch
):
    import sealign.rl.dpo as dpo

    def no_copy(*_a, **_k):
        raise AssertionError("the reference was loaded as a second model")

    monkeypatch.setattr(dpo, "init_policy", no_copy)
    lora = ("model.lora={rank: 2, alpha: 4}", "optim.lr=3e-2", "--max-steps", "4")
    pre, live = tmp_path / "pre", tmp_path / "live"
    assert main(_dpo_args(tiny_setup, prefs_ar, pre, *lora)) == 0
    assert main(_dpo_args(tiny_setup, prefs_ar, live, "precompute_ref=false", *lora)) == 0
    # adapters switched off each step give the log-likelihoods precomputed before training
    a, b = _logged(pre, "rewards/margins"), _logged(live, "rewards/margins")
    assert a[4] != pytest.approx(0.0, abs=1e-6)
    for s in (1, 2, 3, 4):
        assert a[s] == pytest.approx(b[s], rel=1e-4, abs=1e-6)


def test_dpo_gradient_accumulation_equals_the_larger_batch(prefs_ar, tiny_setup, tmp_path):
    big, acc = tmp_path / "big", tmp_path / "acc"
    steps = ("--max-steps", "3")
    assert main(_dpo_args(tiny_setup, prefs_ar, big, *steps, "batch_size=4")) == 0
    args = _dpo_args(tiny_setup, prefs_ar, acc, *steps, "batch_size=2")
    assert main([*args, "gradient_accumulation_steps=2"]) == 0
    for key in ("loss", "grad_norm", "rewards/margins"):
        a, b = _logged(big, key), _logged(acc, key)
        for s in (1, 2, 3):
            assert a[s] == pytest.approx(b[s], rel=1e-3, abs=1e-6), (key, s)


def test_two_rank_dpo_equals_one_process_accumulating(prefs_ar, tiny_setup, tmp_path, torchrun):
    """Under torchrun both ranks walk the same stream of pairs, each taking its own batch:
    two ranks of two pairs = one process accumulating two batches of two. The reference
    log-likelihoods are computed half on each rank and gathered."""
    ddp, acc = tmp_path / "ddp", tmp_path / "acc"
    steps = ("--max-steps", "3")
    proc = torchrun(29583, *_dpo_args(tiny_setup, prefs_ar, ddp, *steps, "batch_size=2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    args = _dpo_args(tiny_setup, prefs_ar, acc, *steps, "batch_size=2")
    assert main([*args, "gradient_accumulation_steps=2"]) == 0
    cached = [json.loads((run / "reference_loglik.json").read_text()) for run in (ddp, acc)]
    assert cached[0]["key"] == cached[1]["key"]
    ref = [c["values"] for c in cached]
    assert ref[0].keys() == ref[1].keys() and len(ref[0]) == 12
    for k, v in ref[0].items():
        np.testing.assert_allclose(v, ref[1][k], rtol=1e-5)
    for key in ("loss", "grad_norm", "rewards/margins", "rewards/accuracies"):
        a, b = _logged(ddp, key), _logged(acc, key)
        for s in (1, 2, 3):
            assert a[s] == pytest.approx(b[s], rel=1e-3, abs=1e-6), (key, s)


def test_dpo_runs_under_bf16_autocast(prefs_ar, tiny_setup, tmp_path, monkeypatch):
    import sealign.rl.dpo as dpo

    run, ref = tmp_path / "bf16", tmp_path / "fp32"
    assert main(_dpo_args(tiny_setup, prefs_ar, ref, "--max-steps", "2")) == 0
    under_autocast = []
    make_batch = dpo.make_batch

    def spy(*args, **kwargs):  # the policy's features as the reference's: outside autocast
        under_autocast.append(torch.is_autocast_enabled("cpu"))
        return make_batch(*args, **kwargs)

    monkeypatch.setattr(dpo, "make_batch", spy)
    assert main(_dpo_args(tiny_setup, prefs_ar, run, "--max-steps", "2", "precision=bf16")) == 0
    assert under_autocast and not any(under_autocast)
    a, b = _logged(ref, "loss"), _logged(run, "loss")
    assert np.isfinite(b[2]) and a[1] == pytest.approx(b[1], rel=5e-2)


def test_sft_baselines_and_the_sft_term(prefs_ar, tiny_setup, tmp_path):
    losses = {}
    for objective in ("sft-gt", "sft-winner"):
        run = tmp_path / objective
        args = _dpo_args(tiny_setup, prefs_ar, run, "--max-steps", "2", f"objective={objective}")
        assert main(args) == 0
        losses[objective] = _logged(run, "loss")
        assert set(losses[objective]) == {1, 2}
    # the clean references and the winners are other targets: other losses
    assert losses["sft-gt"][1] != pytest.approx(losses["sft-winner"][1])
    # a clean-target cache too small for two inputs keeps one and gives the same losses
    held = []
    original = dpo_mod.PairData.targets

    def spy(self, input_id, cand):
        out = original(self, input_id, cand)
        held.append((len(self._clean), self._clean_bytes, input_id))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dpo_mod, "CLEAN_CACHE_BYTES", 1)
        mp.setattr(dpo_mod.PairData, "targets", spy)
        run = tmp_path / "sft-gt-small-cache"
        assert (
            main(_dpo_args(tiny_setup, prefs_ar, run, "--max-steps", "2", "objective=sft-gt")) == 0
        )
    assert max(n for n, _, _ in held) == 1 and all(b > 0 for _, b, _ in held)
    assert len({i for _, _, i in held}) > 1  # several inputs went through a cache of one
    assert _logged(run, "loss") == pytest.approx(losses["sft-gt"], rel=1e-6)
    # DPO plus sft_weight × the winners' SFT loss; at the first step the policy is its
    # reference, so the DPO term is log 2
    run = tmp_path / "dpo_sft"
    assert main(_dpo_args(tiny_setup, prefs_ar, run, "--max-steps", "1", "sft_weight=0.5")) == 0
    sft = _logged(run, "sft_loss")[1]
    assert sft > 0 and _logged(run, "loss")[1] == pytest.approx(math.log(2) + 0.5 * sft, rel=1e-4)


def test_family_mismatch_and_bad_config_fail_early(prefs_ar, tiny_setup, tmp_path, capsys):
    run = tmp_path / "x"
    assert main(_dpo_args(tiny_setup, prefs_ar, run, "--family", "mgm")) == 2
    assert "family" in capsys.readouterr().err
    assert main(_dpo_args(tiny_setup, prefs_ar, run, "objective=ipo")) == 2
    assert "objective" in capsys.readouterr().err
    assert main(_dpo_args(tiny_setup, prefs_ar, run, "beta=.inf")) == 2
    assert "beta must be a finite number" in capsys.readouterr().err
    before = (prefs_ar / "config.yaml").read_text()
    assert main(_dpo_args(tiny_setup, prefs_ar, prefs_ar)) == 2  # --output = the dataset
    assert "holds the run of another command" in capsys.readouterr().err
    assert (prefs_ar / "config.yaml").read_text() == before
    # damaged datasets: a pair of one candidate with itself, a candidate record twice
    copy = tmp_path / "damaged"
    shutil.copytree(prefs_ar, copy)
    pairs = copy / "pairs" / "single_si_sdr.jsonl"
    first = json.loads(pairs.read_text().splitlines()[0])
    pairs.write_text(json.dumps({**first, "loser": first["winner"]}) + "\n")
    assert main(_dpo_args(tiny_setup, copy, run, "criterion=single:si_sdr")) == 2
    assert "its winner is its loser" in capsys.readouterr().err
    cands = copy / "candidates.jsonl"
    line = json.loads(cands.read_text().splitlines()[0])
    with cands.open("a") as f:
        f.write(json.dumps({**line, "noisy": "/elsewhere.wav"}) + "\n")
    assert main(_dpo_args(tiny_setup, copy, run)) == 2
    assert "two different records of candidate" in capsys.readouterr().err


def test_dpo_does_not_pair_scores_of_other_metric_settings(prefs_ar, tiny_setup, tmp_path, capsys):
    copy = tmp_path / "old"
    shutil.copytree(prefs_ar, copy)
    (copy / "pairs" / "single_si_sdr.jsonl").unlink()  # DPO forms these pairs itself
    cands = copy / "candidates.jsonl"
    recs = [json.loads(line) for line in cands.read_text().splitlines()]
    for r in recs[:2]:
        r["metric_settings"]["estoi"] = "from another version"
    cands.write_text("".join(json.dumps(r) + "\n" for r in recs))
    run = tmp_path / "run"
    assert main(_dpo_args(tiny_setup, copy, run, "max_steps=1")) == 2
    err = capsys.readouterr().err
    assert "estoi (2)" in err and f"sealign prefs --output {copy} --repair" in err
    assert main(["prefs", "--output", str(copy), "--repair"]) == 0
    assert main(_dpo_args(tiny_setup, copy, run, "max_steps=1")) == 0


def test_dpo_computes_the_reference_again_for_other_pairs(prefs_ar, tiny_setup, tmp_path):
    run = tmp_path / "run"
    tiny = ["--max-steps", "1", "optim.lr=1e-12"]  # the policy stays its reference
    assert main(_dpo_args(tiny_setup, prefs_ar, run, *tiny)) == 0
    shutil.rmtree(run / "checkpoints")  # a run killed before its first checkpoint, restarted
    (run / "log.jsonl").unlink()  # on other pairs: its cache must not be reused
    assert main(_dpo_args(tiny_setup, prefs_ar, run, *tiny, "criterion=single:estoi")) == 0
    assert _logged(run, "rewards/margins")[1] == pytest.approx(0.0, abs=1e-4)
    assert _logged(run, "loss")[1] == pytest.approx(math.log(2), abs=1e-4)


def test_mgm_prefs_and_dpo(tiny_setup, tmp_path):
    codec = load_codec(f"world:{tiny_setup / 'codec'}?layout=mgm")
    torch.manual_seed(0)
    cfg = {"dim": 32, "layers": 1, "heads": 2, "features": {"n_mels": 20}, "decode_steps": 3}
    build_policy("mgm", codec, cfg).save(tmp_path / "mgm")
    data = tmp_path / "prefs"
    assert main(_prefs_args(tmp_path / "mgm", tiny_setup / "valid.jsonl", data)) == 0
    run = tmp_path / "dpo"
    args = _dpo_args(tiny_setup, data, run, "--max-steps", "2", "--family", "mgm")
    args[args.index("--init-from") + 1] = str(tmp_path / "mgm")
    assert main(args) == 0
    assert _logged(run, "rewards/margins")[1] == pytest.approx(0.0, abs=1e-5)


def test_pref_ablation_trains_arms_evaluates_and_compares_updates(
    prefs_ar, tiny_setup, tmp_path, capsys
):
    codec = load_codec(f"world:{tiny_setup / 'codec'}?layout=mgm")
    torch.manual_seed(1)
    cfg = {"dim": 32, "layers": 1, "heads": 2, "features": {"n_mels": 20}, "decode_steps": 2}
    build_policy("mgm", codec, cfg).save(tmp_path / "mgm")
    cross = tmp_path / "prefs_mgm"
    assert main(_prefs_args(tmp_path / "mgm", tiny_setup / "train.jsonl", cross)) == 0
    prefs_ar = shutil.copytree(prefs_ar, tmp_path / "prefs_ar")  # its pairs are edited below
    out = tmp_path / "abl"
    args = [
        "pref-ablation",
        "--family",
        "ar",
        "--model",
        str(tiny_setup / "base"),
        "--dataset",
        str(prefs_ar),
        "--cross-dataset",
        str(cross),
        "--test",
        str(tiny_setup / "test.jsonl"),
        "--output",
        str(out),
        "arms=[single:si_sdr, gt-winner, sft-gt, cross-family]",
        "max_steps=2",
        "batch_size=2",
        "optim.lr=1e-3",
        "metrics=[si_sdr, estoi]",
        "threads=1",
    ]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    # cross-family and sft-gt use unanimous pairs, which a random model may not produce: then
    # they are skipped (whether the tiny base yields any depends on its float rounding)
    assert {"single:si_sdr", "gt-winner"} <= set(res["arms"])
    pairs = prefs_ar / "pairs" / "unanimous.jsonl"
    assert ("sft-gt" in res["arms"]) == (pairs.is_file() and bool(pairs.read_text().strip()))
    assert set(res["arms"]) | set(res["skipped"]) == {
        "single:si_sdr",
        "gt-winner",
        "sft-gt",
        "cross-family",
    }
    cos = res["update_cosines"]
    assert cos["gt-winner"]["gt-winner"] == pytest.approx(1.0)
    assert set(cos) == set(res["arms"])  # skipped arms have no update to compare
    assert all(-1.0 <= cos["single:si_sdr"][arm] <= 1.0 + 1e-6 for arm in res["arms"])
    assert res["diff_vs_base"]["gt-winner"]["si_sdr"]["n"] == 3
    assert "Preference vectors" in capsys.readouterr().out
    # its arms are not reused by an ablation of other settings
    assert main([*args, "beta=0.5"]) == 2
    assert "was trained with other settings (beta: 0.1 → 0.5" in capsys.readouterr().err
    # nor after its pairs were formed again (e.g. `prefs --repair` with other margins)
    single = prefs_ar / "pairs" / "single_si_sdr.jsonl"
    single.write_text("".join(single.read_text().splitlines(keepends=True)[1:]))
    assert main(args) == 2
    assert "its pairs (single_si_sdr.jsonl) were formed again since" in capsys.readouterr().err


def test_fm_dpo_noise_draws_share_the_reference(tiny_setup, tmp_path):
    """With ``noise_draws`` 2 each pass over the pairs uses its own (t, noise); the precomputed
    reference must match the policy's log-likelihood under every draw (θ = ref: margin 0)."""
    from sealign.models.policy import Targets
    from sealign.rl.dpo import PairItem, _read_reference_cache, pair_noise

    codec = load_codec(f"world:{tiny_setup / 'codec'}")
    torch.manual_seed(0)
    cfg = {"dim": 32, "layers": 1, "heads": 2, "features": {"n_mels": 20}, "ode_steps": 2}
    policy = build_policy("fm", codec, cfg)
    policy.save(tmp_path / "fm")
    data = tmp_path / "prefs"
    assert main(_prefs_args(tmp_path / "fm", tiny_setup / "valid.jsonl", data)) == 0
    run = tmp_path / "dpo"
    # 6 pairs, 3 a step: steps 1-2 use draw 0, steps 3-4 draw 1; lr so small that θ stays ref
    extra = ["--max-steps", "4", "--family", "fm", "noise_draws=2", "optim.lr=1e-12"]
    args = _dpo_args(tiny_setup, data, run, *extra)
    args[args.index("--init-from") + 1] = str(tmp_path / "fm")
    assert main(args) == 0
    margins = _logged(run, "rewards/margins")
    assert sorted(margins) == [1, 2, 3, 4]
    for step in margins:
        assert margins[step] == pytest.approx(0.0, abs=1e-4)
    key = json.loads((run / "reference_loglik.json").read_text())["key"]
    cache = _read_reference_cache(run / "reference_loglik.json", 2, key)
    assert cache is not None and all(len(v) == 2 for v in cache.values())
    assert all(v[0] != v[1] for v in cache.values())  # the two draws differ
    assert _read_reference_cache(run / "reference_loglik.json", 3, key) is None  # too few
    assert _read_reference_cache(run / "reference_loglik.json", 2, "other") is None
    x = Targets(torch.zeros(1, 5, policy.config.latent_dim), torch.ones(1, 5, dtype=torch.bool))
    item = PairItem(3, "u", None, x, x)
    a, b = pair_noise(policy, item, 0, 0), pair_noise(policy, item, 0, 1)
    assert torch.equal(a["noise"], pair_noise(policy, item, 0, 0)["noise"])  # seeded
    assert not torch.equal(a["noise"], b["noise"])


def test_prefs_reads_several_manifests_and_rejects_repeated_ids(tiny_setup, tmp_path, capsys):
    both = f"{tiny_setup / 'train.jsonl'},{tiny_setup / 'valid.jsonl'}"
    out = tmp_path / "both"
    assert main(_prefs_args(tiny_setup / "base", both, out)) == 0
    ids = {json.loads(x)["input_id"] for x in (out / "candidates.jsonl").read_text().splitlines()}
    assert ids == {f"u{k}" for k in range(6)}
    twice = f"{tiny_setup / 'valid.jsonl'},{tiny_setup / 'valid.jsonl'}"
    assert main(_prefs_args(tiny_setup / "base", twice, tmp_path / "twice")) == 2
    assert "more than once: u4, u5" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_prefs_and_ablation_check_their_devices_first(prefs_ar, tiny_setup, tmp_path, capsys):
    out = tmp_path / "p"
    gpu = ("--device", "cuda")
    assert main(_prefs_args(tiny_setup / "base", tiny_setup / "train.jsonl", out, *gpu)) == 2
    assert "device: 'cuda' requested but CUDA is not available" in capsys.readouterr().err
    assert not (out / "candidates.jsonl").exists()
    abl = tmp_path / "abl"
    args = ["pref-ablation", "--family", "ar", "--model", str(tiny_setup / "base"), "--dataset",
            str(prefs_ar), "--test", str(tiny_setup / "test.jsonl"), "--output", str(abl),
            "--metric-device", "cuda", "metrics=[dnsmos, si_sdr]"]  # fmt: skip
    assert main(args) == 2
    assert "metric 'dnsmos': device: 'cuda'" in capsys.readouterr().err
    assert not (abl / "arms").exists()  # no arm was trained
    assert main([*args[:-3], "metrics=[si_sdr, nisqa]"]) == 2  # NISQA without its weights
    assert "nisqa: no weights given" in capsys.readouterr().err
    assert not (abl / "arms").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("temperature=0", "temperature must be a finite number > 0"),
        ("sample_options.bogus=1", "sample_options"),
        ("beta=0", "beta must be a finite number > 0"),
        ("noise_draws=0", "noise_draws must be >= 1"),
    ],
)
def test_pref_ablation_checks_its_settings_before_training(
    prefs_ar, tiny_setup, tmp_path, capsys, setting, message
):
    abl = tmp_path / "abl"
    args = ["pref-ablation", "--family", "ar", "--model", str(tiny_setup / "base"), "--dataset",
            str(prefs_ar), "--test", str(tiny_setup / "test.jsonl"), "--output", str(abl),
            "metrics=[si_sdr]", "threads=1", setting]  # fmt: skip
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (abl / "arms").exists()


def test_prefs_scores_again_what_other_metric_settings_scored(prefs_ar, tiny_setup, tmp_path):
    out, fresh = tmp_path / "resumed", tmp_path / "fresh"
    shutil.copytree(prefs_ar, out)
    args = _prefs_args(tiny_setup / "base", tiny_setup / "train.jsonl", out)
    with_lsd = "metrics=[si_sdr, estoi, pesq_wb, lsd]"

    def scores(root):
        return {(r["input_id"], r["cand_id"]): r["scores"] for r in read_candidates(root)}

    def same(a, b):  # ESTOI's sums depend on the batch to the last bit
        return a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-9) for k in a)

    # a metric added on resume is scored for every stored candidate
    assert main([*args, with_lsd]) == 0
    assert all("lsd" in s for s in scores(out).values())
    before = scores(out)
    # other settings of it: every candidate is scored again, as a fresh run scores it
    assert main([*args, with_lsd, "metric_options.lsd.gain=rms"]) == 0
    fresh_args = _prefs_args(tiny_setup / "base", tiny_setup / "train.jsonl", fresh)
    assert main([*fresh_args, with_lsd, "metric_options.lsd.gain=rms"]) == 0
    assert same(scores(out), scores(fresh))
    assert any(scores(out)[k]["lsd"] != before[k]["lsd"] for k in before)
    # a candidate written before candidates recorded their settings is scored again too
    path = out / "candidates.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    del recs[0]["metric_settings"]
    recs[0]["scores"]["si_sdr"] = 99.0
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["prefs", "--output", str(out), "--repair"]) == 0
    assert same(scores(out), scores(fresh))
    # rescore=false pairs stored scores as they are
    repair = ["prefs", "--output", str(out), "--repair"]
    assert main([*repair, "metric_options.lsd.gain=least_squares", "rescore=false"]) == 0
    assert same(scores(out), scores(fresh))
    # a candidate that cannot be read loses only its stale metric's score, until it is back
    wav = out / "audio" / "u0" / "c0.wav"
    wav.rename(wav.with_suffix(".bak"))
    repair.append("rescore=true")  # the run's config keeps the last run's settings
    assert main([*repair, "metric_options.lsd.gain=least_squares"]) == 0
    lost = next(r for r in read_candidates(out) if (r["input_id"], r["cand_id"]) == ("u0", "c0"))
    assert "lsd" not in lost["scores"] and "not scored again" in lost["skipped"]["lsd"]
    assert lost["scores"]["si_sdr"] == pytest.approx(scores(fresh)[("u0", "c0")]["si_sdr"])
    wav.with_suffix(".bak").rename(wav)
    assert main([*repair, "metric_options.lsd.gain=rms"]) == 0
    assert same(scores(out), scores(fresh))


def test_dpo_encodes_candidates_of_another_codec_again_and_refuses_such_a_reference(
    prefs_ar, tiny_setup, speech, tmp_path, capsys
):
    from conftest import TINY_AR, TINY_CODEC
    from sealign.codecs.world import WorldCodecConfig, train_world_codec

    clean = [speech(i, "en-us+m3")[:16000] for i in range(3)]
    codec = train_world_codec(
        clean, tmp_path / "codec32", WorldCodecConfig(**{**TINY_CODEC, "ar_spec_k": 32})
    )
    torch.manual_seed(1)
    build_policy("ar", codec, dict(TINY_AR)).save(tmp_path / "other")
    args = _dpo_args(tiny_setup, prefs_ar, tmp_path / "run", "--max-steps", "1")
    args[args.index("--init-from") + 1] = str(tmp_path / "other")
    assert main(args) == 0
    assert "another output space" in capsys.readouterr().err
    ref = _dpo_args(tiny_setup, prefs_ar, tmp_path / "run2", "--max-steps", "1",
                    f"reference_model={tmp_path / 'other'}")  # fmt: skip
    assert main(ref) == 2
    assert "output space" in capsys.readouterr().err


def test_ties_disagreement_weights_and_single_margins():
    # equal candidates are no pair, either way (strictly better on every metric)
    tie = cands([(0.5, 0.5, 0.2), (0.5, 0.5, 0.2), (0.9, 0.9, 0.1)])
    rep = make_pairs(tie, COLS, HIB, SCALES, "unanimous")
    assert sorted((p.winner, p.loser) for p in rep.pairs) == [("c2", "c0"), ("c2", "c1")]
    # "a" alone prefers c0 while b and wer prefer c1: "a" disagrees with the others on the
    # one pair, b and wer do not
    split = cands([(0.9, 0.1, 0.5), (0.1, 0.9, 0.1)])
    assert make_pairs(split, COLS, HIB, SCALES, "unanimous").disagreement == {
        "a": 1.0,
        "b": 0.0,
        "wer": 0.0,
    }
    # weights move the weighted composite: c0 wins on a, c1 on b
    two = cands([(0.9, 0.1, 0.0), (0.1, 0.8, 0.0)])
    win = {w: [(p.winner, p.loser) for p in make_pairs(two, COLS, HIB, SCALES, "weighted",
                                                      weights={"a": w}).pairs]
           for w in (1.0, 0.1)}  # fmt: skip
    assert win == {1.0: [("c0", "c1")], 0.1: [("c1", "c0")]}
    # a margin applies under single:<column> too
    near = cands([(0.50, 0.5, 0.0), (0.45, 0.5, 0.0)])
    assert len(make_pairs(near, COLS, HIB, SCALES, "single:a").pairs) == 1
    assert make_pairs(near, COLS, HIB, SCALES, "single:a", margins={"a": 0.1}).pairs == []
