"""``examples/hf_decoder_policy.py``: a ``transformers`` decoder behind the Policy protocol,
checked like the built-in AR policy and run through every command that takes a policy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fit_batch
from sealign.cli import main
from sealign.codecs.base import load_codec
from sealign.models.conformance import check_policy, format_checks
from sealign.models.policy import Policy
from sealign.models.registry import load_policy
from sealign.train.checkpoint import latest_checkpoint, policy_dir

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 512,
    "vocab_size": 4,  # the decoder's own token table is unused: inputs arrive as embeddings
}


@pytest.fixture(scope="module")
def hf_module():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import hf_decoder_policy

        yield hf_decoder_policy
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.fixture(scope="module")
def hf_base(hf_module, tiny_setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "base"
    args = ["--codec", f"world:{tiny_setup / 'codec'}", "--backbone", json.dumps(LLAMA)]
    assert hf_module.main([*args, "--features", '{"n_mels": 20}', "--output", str(out)]) == 0
    return out


def _inputs(tiny_setup, policy, n=2):
    import soundfile as sf

    noisy = [sf.read(tiny_setup / f"n{k}.wav", dtype="float32")[0] for k in range(n)]
    noisy[1] = noisy[1][:12000]  # rows of different lengths
    return policy.condition(noisy), noisy


def test_sampled_log_probs_equal_teacher_forced_ones(hf_module, hf_base, tiny_setup):
    policy = load_policy(hf_base)
    assert isinstance(policy, hf_module.HFDecoderPolicy) and isinstance(policy, Policy)
    assert json.loads((hf_base / "config.json").read_text())["class"] == (
        "hf_decoder_policy:HFDecoderPolicy"
    )
    cond, noisy = _inputs(tiny_setup, policy)
    group = cond.select([0, 0, 1, 1])
    g = torch.Generator().manual_seed(0)
    roll = policy.sample(group, temperature=0.8, generator=g, top_k=6, top_p=0.9)
    again = policy.sample(group, temperature=0.8, generator=torch.Generator().manual_seed(0),
                          top_k=6, top_p=0.9)  # fmt: skip
    assert torch.equal(roll.actions["tokens"], again.actions["tokens"])
    assert roll.mask[2:].sum(1).tolist() == [38.0, 38.0]  # 0.75 s at 50 frames/s, rounded up
    logp, entropy = policy.step_log_probs(group, roll)
    torch.testing.assert_close(logp, roll.logp, atol=1e-4, rtol=0)
    assert (entropy[roll.mask > 0] > 0).all() and (logp[roll.mask == 0] == 0).all()
    assert [w.size for w in policy.decode(roll)] == [16000, 16000, 12000, 12000]
    # at temperature 1 without filtering, DPO's likelihood is the summed step log-prob
    plain = policy.sample(cond, generator=g)
    targets = policy.targets_from_rollout(plain)
    seq = policy.preference_log_likelihood(cond, targets, policy.preference_noise(targets))
    torch.testing.assert_close(seq, policy.step_log_probs(cond, plain)[0].sum(1), atol=1e-4, rtol=0)
    checks = check_policy(policy, noisy, noisy, group_size=3)  # every protocol property
    assert all(c.ok for c in checks), format_checks(checks)
    # reloading gives the same function
    twice = load_policy(hf_base)
    torch.testing.assert_close(twice.step_log_probs(group, roll)[0], logp, atol=0, rtol=0)


def test_sft_learns_the_targets(hf_base, tiny_setup):
    policy = load_policy(hf_base).train()
    cond, noisy = _inputs(tiny_setup, policy)
    import soundfile as sf

    clean = [sf.read(tiny_setup / f"c{k}.wav", dtype="float32")[0] for k in range(2)]
    clean[1] = clean[1][:12000]
    targets = policy.encode_targets(clean)
    assert [w.size for w in policy.decode_targets(targets)] == [16000, 12160]
    losses = fit_batch(policy, cond, targets, 30)
    assert losses[-1] < 0.5 * losses[0]


def test_commands_train_align_and_enhance_it(hf_module, hf_base, tiny_setup, tmp_path):
    common = ["threads=1", "logging_steps=1"]
    sft = tmp_path / "sft"
    assert main(["train", "--no-progress", f"output_dir={sft}", f"model.init_from={hf_base}",
                 f"data.train=[{tiny_setup / 'train.jsonl'}]", "data.batch_size=2",
                 "max_steps=2", "eval_steps=0", *common]) == 0  # fmt: skip
    gspo = tmp_path / "gspo"
    assert main(["gspo", "--no-progress", f"output_dir={gspo}", f"model.init_from={sft}",
                 f"data.train=[{tiny_setup / 'train.jsonl'}]", "data.batch_size=2",
                 "sampling.group_size=3", "reward.components=[{metric: si_sdr}]",
                 "eval.manifests=[]", "max_steps=2", "beta=0.1", "optim.lr=1e-3",
                 *common]) == 0  # fmt: skip
    aligned = load_policy(policy_dir(latest_checkpoint(gspo)))
    assert isinstance(aligned, hf_module.HFDecoderPolicy)
    steps = {r["step"]: r for r in map(json.loads, (gspo / "log.jsonl").read_text().splitlines())}
    assert sorted(steps) == [1, 2] and all(np.isfinite(r["loss"]) for r in steps.values())
    assert steps[1]["ratio/mean"] == pytest.approx(1.0, abs=1e-2)
    prefs, dpo = tmp_path / "prefs", tmp_path / "dpo"
    assert main(["prefs", "--model", str(sft), "--manifest", str(tiny_setup / "train.jsonl"),
                 "--output", str(prefs), "--n", "3", "metrics=[si_sdr, estoi]",
                 "columns=[si_sdr, estoi]", "criterion=single:si_sdr", "threads=1"]) == 0  # fmt: skip
    assert main(["dpo", "--no-progress", "--init-from", str(sft), "--dataset", str(prefs),
                 "--output", str(dpo), "--threads", "1", "criterion=single:si_sdr",
                 "batch_size=3", "max_steps=2", "logging_steps=1"]) == 0  # fmt: skip
    first = json.loads((dpo / "log.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(np.log(2), abs=1e-4)  # policy = reference at step 1
    shipped = tmp_path / "shipped"
    assert main(["export", "--model", str(dpo), "--output", str(shipped), "--dtype", "float16",
                 "--temperature", "0.5"]) == 0  # fmt: skip
    assert isinstance(load_policy(shipped), hf_module.HFDecoderPolicy)
    out = tmp_path / "enhanced"
    assert main(["enhance", "--model", str(shipped), "--input", str(tiny_setup / "test.jsonl"),
                 "--output", str(out), "--threads", "1"]) == 0  # fmt: skip
    assert len(list(out.glob("*.wav"))) == 3


def test_a_pretrained_decoder_loads_from_a_local_folder(hf_module, tiny_setup, tmp_path):
    torch.manual_seed(1)
    decoder = hf_module.build_decoder(LLAMA).to(torch.bfloat16)  # as most checkpoints are stored
    decoder.save_pretrained(tmp_path / "llama")
    codec = load_codec(f"world:{tiny_setup / 'codec'}")
    policy = hf_module.HFDecoderPolicy(codec, str(tmp_path / "llama"), {"n_mels": 20})
    for k, v in decoder.state_dict().items():
        w = policy.decoder.state_dict()[k]
        assert w.dtype == torch.float32 and torch.equal(w, v.float()), k
    cond, _ = _inputs(tiny_setup, policy)
    assert (
        policy.sample(cond, generator=torch.Generator().manual_seed(0)).logp.dtype == torch.float32
    )


def test_the_check_catches_a_conditioning_width_taken_from_the_rows(
    hf_module, hf_base, tiny_setup, monkeypatch
):
    """The bug sealign check's minibatch check exists for: a minibatch of a group's shorter
    inputs is narrower than the rollout it recomputes."""

    def width_from_rows(self, cond):
        fpt = self.features.frames_per_token
        lengths = [self.features.num_tokens(n) for n in cond.num_samples]
        t = max(lengths)
        x = cond.features[:, : t * fpt].reshape(len(cond), t, -1)
        valid = torch.arange(t) < torch.tensor(lengths)[:, None]
        return self.cond(x), valid

    policy = load_policy(hf_base)
    _, noisy = _inputs(tiny_setup, policy)
    monkeypatch.setattr(hf_module.HFDecoderPolicy, "_frames", width_from_rows)
    checks = {c.name: c for c in check_policy(policy, noisy, noisy, group_size=1)}
    assert checks["step_log_probs = sampled log-probs"].ok
    assert checks["log-probs independent of the minibatch"].ok is False


def test_bad_settings_fail_clearly(hf_module, tiny_setup, tmp_path):
    codec = load_codec(f"world:{tiny_setup / 'codec'}")
    with pytest.raises(ValueError, match="no_such_model' not found"):
        hf_module.HFDecoderPolicy(codec, str(tmp_path / "no_such_model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="save_pretrained"):
        hf_module.HFDecoderPolicy(codec, str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="model_type"):
        hf_module.HFDecoderPolicy(codec, {"hidden_size": 32})
    policy = hf_module.HFDecoderPolicy(codec, LLAMA, {"n_mels": 20})
    cond, _ = _inputs(tiny_setup, policy)
    with pytest.raises(ValueError, match="temperature"):
        policy.sample(cond, temperature=0.0)


def test_the_check_catches_padding_leaking_through_the_lookahead(
    hf_module, hf_base, tiny_setup, monkeypatch
):
    """Without zeroing the projected states past a row's end, the lookahead convolution mixes
    the padding (the projection's bias) into a shorter input's last frames: its log-probs then
    depend on what it was batched with."""

    def unmasked(self, cond):
        b, tc, _ = cond.features.shape
        t = tc // self.features.frames_per_token
        lengths = torch.tensor([self.features.num_tokens(n) for n in cond.num_samples])
        states = self.cond(cond.features.reshape(b, t, -1))
        states = states + self.context(states.transpose(1, 2)).transpose(1, 2)
        return states, torch.arange(t) < lengths[:, None]

    policy = load_policy(hf_base)
    assert policy.lookahead == 2
    _, noisy = _inputs(tiny_setup, policy)
    assert all(c.ok for c in check_policy(policy, noisy, noisy))
    monkeypatch.setattr(hf_module.HFDecoderPolicy, "_frames", unmasked)
    checks = {c.name: c for c in check_policy(policy, noisy, noisy)}
    assert checks["log-probs independent of the minibatch"].ok  # the same padded width
    assert checks["an input alone = in a padded batch"].ok is False


def test_policy_folders_save_tied_weights(tmp_path):
    # decoders whose LM head shares its embedding table (GPT-2, Llama 3.2, Qwen2 by default)
    from safetensors.torch import load_file

    from sealign.models.persist import save_policy_dir

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 3)
            self.head = torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.emb.weight

    torch.manual_seed(0)
    m = Tied()
    save_policy_dir(tmp_path, m, "custom", {}, None, "world:nowhere", 1)  # type: ignore[arg-type]
    state = load_file(str(tmp_path / "model.safetensors"))
    assert torch.equal(state["emb.weight"], m.emb.weight) and torch.equal(
        state["head.weight"], m.emb.weight
    )
    fresh = Tied()
    fresh.load_state_dict(state)
    assert fresh.head.weight is fresh.emb.weight and torch.equal(fresh.emb.weight, m.emb.weight)


def test_a_policy_class_off_the_path_says_how_to_reach_it(hf_base, tmp_path):
    import shutil

    folder = tmp_path / "p"
    shutil.copytree(hf_base, folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["class"] = "lab_policies.decoder:Policy"
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="put the folder holding lab_policies on PYTHONPATH"):
        load_policy(folder)


def _check_adapters(base: Path, targets: list[str], layers: int, tiny_setup, tmp_path) -> None:
    """Adapters on ``targets`` of the policy at ``base`` (``layers`` of them): its KV-cached
    sampling and teacher forcing both see them, and its own save writes them merged. In eval
    mode, as the trainers compute (GPT-2 has dropout)."""
    from sealign.models.lora import LoRAConfig, LoRALinear, apply_lora

    policy = load_policy(base).eval()
    assert apply_lora(policy, LoRAConfig(rank=2, targets=targets)) == layers
    with torch.no_grad():
        for m in policy.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    cond, _ = _inputs(tiny_setup, policy)
    roll = policy.sample(cond, temperature=0.8, generator=torch.Generator().manual_seed(0))
    lp, _ = policy.step_log_probs(cond, roll)
    torch.testing.assert_close(lp, roll.logp, atol=1e-4, rtol=0)
    assert (lp - load_policy(base).eval().step_log_probs(cond, roll)[0]).abs().max() > 1e-3
    policy.save(tmp_path / "merged")
    merged = load_policy(tmp_path / "merged").eval()
    torch.testing.assert_close(merged.step_log_probs(cond, roll)[0], lp, atol=1e-5, rtol=0)


def test_lora_on_the_wrapped_decoder_keeps_sampled_and_recomputed_log_probs(hf_base, tiny_setup,
                                                                             tmp_path):  # fmt: skip
    """On a wrapped model's own layer names (Llama's q_proj / v_proj)."""
    _check_adapters(hf_base, ["q_proj", "v_proj"], 2 * LLAMA["num_hidden_layers"], tiny_setup,
                    tmp_path)  # fmt: skip


def test_lora_on_gpt2_conv1d_layers(hf_module, tiny_setup, tmp_path):
    """GPT-2's attention and MLP layers are ``Conv1D`` (weights stored [in, out])."""
    gpt2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 512,
            "vocab_size": 4}  # fmt: skip
    base = tmp_path / "gpt2"
    args = ["--codec", f"world:{tiny_setup / 'codec'}", "--backbone", json.dumps(gpt2)]
    assert hf_module.main([*args, "--features", '{"n_mels": 20}', "--output", str(base)]) == 0
    _check_adapters(base, ["c_attn", "c_fc"], 4, tiny_setup, tmp_path)
