"""``sealign check``: the protocol checks pass on the built-in families and name the broken
property of a policy with a classic wrapping bug."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sealign.cli import main
from sealign.models.ar import ARPolicy, sampling_settings
from sealign.models.conformance import check_policy, format_checks, probe_audio
from sealign.models.persist import fit_length
from sealign.models.registry import build_policy, load_policy

TINY = {"dim": 32, "layers": 1, "heads": 2, "features": {"n_mels": 20}}


def outcome(checks) -> dict[str, bool | None]:
    return {c.name: c.ok for c in checks}


@pytest.mark.parametrize("family, extra", [("mgm", {"decode_steps": 2}), ("fm", {"sde_steps": 3})])
def test_every_check_passes_on_the_built_in_families(family, extra, tiny_setup):
    from sealign.codecs.base import load_codec

    torch.manual_seed(0)
    policy = build_policy(family, load_codec(f"world:{tiny_setup / 'codec'}"), {**TINY, **extra})
    checks = check_policy(policy)
    assert all(c.ok for c in checks), format_checks(checks)
    assert len(checks) == 12


@pytest.mark.parametrize("family", ["ar", "mgm", "fm"])
def test_the_shipped_checkpoints_keep_the_contract(family):
    from sealign.commands.demo import shipped_checkpoint

    checks = check_policy(load_policy(shipped_checkpoint(family)))
    assert all(c.ok for c in checks), format_checks(checks)


def test_the_cli_prints_the_table_and_exits_0(tiny_setup, capsys, tmp_path):
    args = ["check", "--model", str(tiny_setup / "base"), "--threads", "1"]
    assert main([*args, "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert out.count("| pass |") == 12 and "ARPolicy" in out
    saved = json.loads((tmp_path / "c.json").read_text())
    assert [c["ok"] for c in saved["checks"]] == [True] * 12
    args = ["check", "--model", str(tiny_setup / "base"), "--manifest"]
    assert main([*args, str(tiny_setup / "valid.jsonl"), "--group-size", "3"]) == 0
    assert main(["check", "--model", str(tiny_setup / "nope")]) == 2


class IgnoresSettings(ARPolicy):
    """Recomputes log-probs at temperature 1 without top-k: not the distribution sampled from."""

    def step_log_probs(self, cond, rollout):
        plain = sampling_settings(len(rollout), 1.0, 0, 1.0)
        actions = {**rollout.actions, "sampling": plain}
        return super().step_log_probs(cond, type(rollout)(actions, *_rest(rollout)))


class IgnoresSource(ARPolicy):
    """Indexes the conditioning by position instead of by ``rollout.source``."""

    def step_log_probs(self, cond, rollout):
        first = cond.select(list(range(len(rollout))))
        arange = torch.arange(len(rollout))
        fixed = type(rollout)(rollout.actions, rollout.logp, rollout.mask, arange)
        return super().step_log_probs(first, fixed)


class ScaledLikelihood(ARPolicy):
    """DPO's sequence log-prob on another scale than the step log-probs GSPO uses."""

    def preference_log_likelihood(self, cond, targets, noise):
        return 0.5 * super().preference_log_likelihood(cond, targets, noise)


class IgnoresScale(ARPolicy):
    """Has a logit_scale that its logits never see: GSPO's temperature_lr would train nothing."""

    def _scale_logits(self, logits):
        return logits


class ShortAudio(ARPolicy):
    def decode(self, rollout):
        return [fit_length(w, w.size // 2) for w in super().decode(rollout)]


def _rest(rollout):
    return rollout.logp, rollout.mask, rollout.source


@pytest.mark.parametrize(
    "cls, broken, message",
    [
        (IgnoresSettings, "step_log_probs = sampled log-probs", "ratio is not 1"),
        (IgnoresSource, "log-probs independent of the minibatch", "rollout.source"),
        (ShortAudio, "decode", "decoded lengths"),
        (ScaledLikelihood, "preference log-likelihood", "summed step log-probs"),
        (IgnoresScale, "learned temperature (logit_scale)", "does not reach the log-probs"),
    ],
)
def test_a_broken_policy_fails_the_check_that_names_its_bug(cls, broken, message, tiny_setup):
    base = load_policy(tiny_setup / "base")
    policy = cls(base.codec, base.config)
    policy.load_state_dict(base.state_dict())
    checks = {c.name: c for c in check_policy(policy)}
    assert checks[broken].ok is False and message in checks[broken].detail
    assert checks["condition"].ok and checks["sample"].ok


def test_probe_audio_is_noisy_speech_like_and_of_two_lengths():
    noisy, clean = probe_audio(16000)
    assert [w.size for w in noisy] == [20800, 14400] == [w.size for w in clean]
    for n, c in zip(noisy, clean, strict=True):
        snr = 10 * np.log10(
            np.sum(c.astype(np.float64) ** 2) / np.sum((n - c).astype(np.float64) ** 2)
        )
        assert snr == pytest.approx(5.0, abs=1e-3)


# ------------------------------------------------------------------------------------ codecs


def test_the_world_codec_passes_in_both_layouts(tiny_setup, capsys):
    from sealign.codecs.base import load_codec
    from sealign.models.conformance import check_codec

    for spec in (f"world:{tiny_setup / 'codec'}", f"world:{tiny_setup / 'codec'}?layout=mgm"):
        checks = check_codec(load_codec(spec))
        assert all(c.ok for c in checks), format_checks(checks)
    assert main(["check", "--codec", f"world:{tiny_setup / 'codec'}", "--threads", "1"]) == 0
    assert capsys.readouterr().out.count("| pass |") == 7


class EnergyCodec:
    """A codec with two classic bugs: NaN input encodes to garbage tokens instead of raising,
    and decode returns half the samples."""

    sample_rate, frame_rate, num_codebooks, codebook_size, hop = 16000, 50.0, 1, 16, 320

    def encode(self, wavs):
        from sealign.codecs.base import join_batch, split_batch

        items, single = split_batch(wavs, 1)
        out = []
        for w in items:
            frames = np.resize(w, -(-len(w) // self.hop) * self.hop).reshape(-1, self.hop)
            db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
            out.append(np.clip(np.nan_to_num((db + 60) / 4), 0, 15).astype(np.int64)[None])
        return join_batch(out, single)

    def decode(self, tokens):
        from sealign.codecs.base import join_batch, split_batch

        items, single = split_batch(tokens, 2)
        out = [np.zeros(t.shape[1] * self.hop // 2, np.float32) for t in items]
        return join_batch(out, single)

    def save(self, directory):
        Path(directory).mkdir(parents=True)
        return Path(directory)


def test_a_broken_codec_fails_the_checks_that_name_its_bugs():
    from sealign.models.conformance import check_codec

    checks = {c.name: c for c in check_codec(EnergyCodec())}
    assert checks["encode"].ok and checks["batching"].ok
    assert checks["decode"].ok is False and "decoded lengths" in checks["decode"].detail
    assert checks["bad input raises ValueError"].ok is False
    assert "NaN audio was encoded" in checks["bad input raises ValueError"].detail
    assert "no continuous latent" in checks["continuous latent"].detail
    assert checks["save and load"].ok is False and "not a registered codec kind" in (
        checks["save and load"].detail
    )


# ----------------------------------------------------------------------------------- metrics


def test_a_built_in_metric_passes_and_the_cli_checks_it(capsys):
    from sealign.metrics.registry import build_metric
    from sealign.models.conformance import check_metric

    checks = check_metric(build_metric("si_sdr"))
    assert all(c.ok for c in checks), format_checks(checks)
    assert "skipped (no reference)" in checks[4].detail
    assert main(["check", "--metric", "estoi", "--threads", "1"]) == 0
    assert capsys.readouterr().out.count("| pass |") == 6
    assert main(["check", "--metric", "nosuch"]) == 2
    assert main(["check", "--metric", "si_sdr", "--metric-options", "{a: [1"]) == 2
    assert "--metric-options is not YAML" in capsys.readouterr().err


def test_check_names_bad_codec_specs_and_flags(capsys, tmp_path):
    import shutil

    codec = "world:src/sealign/assets/fm_demo/codec"
    frozen = tmp_path / "frozen"  # sampling.json settings enhance would refuse
    shutil.copytree("src/sealign/assets/fm_demo", frozen)
    (frozen / "sampling.json").write_text('{"temperature": 0}')
    for args, why in (
        (["--model", str(frozen)], "sampling.json: temperature must be a positive number"),
        (["--codec", f"{codec}?foo=1"], "unknown option 'foo' (world takes: layout)"),
        (["--codec", "encodec:/no/such/dir"], "EnCodec weights not found"),
        (["--codec", codec, "--threads", "0"], "--threads must be >= 1"),
        (["--model", "src/sealign/assets/ar_demo", "--temperature", "inf"], "--temperature"),
    ):
        assert main(["check", *args]) == 2
        assert why in capsys.readouterr().err


def _metric(name, score, **info):
    from sealign.metrics.base import Metric, MetricInfo

    class Probe(Metric):
        pass

    Probe.info = MetricInfo(name, ("x",), (True,), ((0.0, 1.0),), **info)
    Probe._score = lambda self, utts: score(utts)
    return Probe()


def test_a_broken_metric_fails_the_check_that_names_its_bug():
    from sealign.models.conformance import check_metric

    def batch_mean(utts):  # a value that depends on the rest of the batch
        m = float(np.mean([np.abs(u.audio).mean() for u in utts]))
        return [{"x": m} for _ in utts]

    checks = {c.name: c for c in check_metric(_metric("batchy", batch_mean))}
    assert checks["scores within the declared ranges"].ok
    bad = checks["the same alone, in a batch and on a repeat"]
    assert bad.ok is False and "depends on the utterance only" in bad.detail

    too_big = _metric("loud", lambda utts: [{"x": 3.0} for _ in utts])
    checks = {c.name: c for c in check_metric(too_big)}
    bad = checks["scores within the declared ranges"]
    assert bad.ok is False and "outside its range [0.0, 1.0]" in bad.detail

    def needs_ref(utts):
        return [{"x": float(np.corrcoef(u.audio, u.reference)[0, 1] ** 2)} for u in utts]

    silent_about_it = _metric("ref", needs_ref)  # uses the reference without declaring it
    checks = {c.name: c for c in check_metric(silent_about_it)}
    bad = checks["missing inputs give a skip"]
    assert bad.ok is False and "audio alone" in bad.detail
    declared = _metric("ref2", needs_ref, needs_reference=True)
    assert all(c.ok for c in check_metric(declared))


def test_a_reference_free_metric_is_checked_on_recordings_without_references(tmp_path, capsys):
    import soundfile as sf

    from sealign.models.conformance import probe_audio

    noisy, _ = probe_audio(16000)
    rows = []
    for i, w in enumerate(noisy):
        sf.write(tmp_path / f"r{i}.wav", w, 16000)
        rows.append(json.dumps({"id": f"r{i}", "audio": str(tmp_path / f"r{i}.wav")}))
    (tmp_path / "m.jsonl").write_text("\n".join(rows) + "\n")
    assert main(["check", "--metric", "estoi", "--manifest", str(tmp_path / "m.jsonl")]) == 2
    assert "needs two entries with a reference" in capsys.readouterr().err
    # a metric of the audio alone: scored on the recordings, no clean-vs-noisy hint
    args = [
        "check",
        "--metric",
        "dnsmos",
        "--threads",
        "1",
        "--manifest",
        str(tmp_path / "m.jsonl"),
    ]
    assert main(args) == 0
    assert "no clean version of the audio given" in capsys.readouterr().out
