"""LoRA adapters (``model.lora``): what trains, what a checkpoint holds, exact resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sealign.cli import main
from sealign.models.lora import (
    BaseView,
    LoRAConfig,
    LoRALinear,
    adapter_state,
    adapters_off,
    apply_lora,
    base_is_at_hand,
)
from sealign.models.registry import load_policy
from sealign.train.sft import ModelConfig, base_view_reference
from test_gspo import logged, overrides


def test_adapters_start_at_the_base_and_merge_into_a_plain_checkpoint(tiny_setup, tmp_path):
    base = load_policy(tiny_setup / "base")
    policy = load_policy(tiny_setup / "base")
    assert apply_lora(policy, LoRAConfig(rank=4, alpha=8), seed=0) == 4  # one block's 4 layers
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable == {f"blocks.0.{k}.lora_{m}" for k in ("qkv", "proj", "mlp_in", "mlp_out")
                         for m in "ab"}  # fmt: skip
    assert policy.state_dict().keys() == base.state_dict().keys()
    cond = policy.condition([torch.randn(16000).numpy() * 0.1])
    gen = torch.Generator().manual_seed(0)
    r = base.sample(cond, generator=gen, top_k=20)
    torch.testing.assert_close(policy.step_log_probs(cond, r)[0], r.logp, atol=1e-4, rtol=0)
    with torch.no_grad():  # a trained adapter
        for m in policy.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0, 0.05, generator=gen)
    qkv = policy.blocks[0].qkv
    merged = qkv.base.weight + 2.0 * qkv.lora_b @ qkv.lora_a
    torch.testing.assert_close(policy.state_dict()["blocks.0.qkv.weight"], merged.detach())
    # sampling (fast decoding weights read .weight) and teacher forcing see the adapted layers
    r2 = policy.sample(cond, generator=torch.Generator().manual_seed(1), top_k=20)
    lp, _ = policy.step_log_probs(cond, r2)
    torch.testing.assert_close(lp, r2.logp, atol=1e-4, rtol=0)
    assert (lp - base.step_log_probs(cond, r2)[0]).abs().max() > 1e-3
    policy.save(tmp_path / "merged")  # loads as the plain policy it is
    plain = load_policy(tmp_path / "merged")
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    torch.testing.assert_close(plain.step_log_probs(cond, r2)[0], lp, atol=1e-5, rtol=0)
    assert set(adapter_state(policy)) == {f"blocks.0.{k}.lora_{m}" for k in
                                          ("qkv", "proj", "mlp_in", "mlp_out") for m in "ab"}  # fmt: skip
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(policy, LoRAConfig(rank=2))
    with pytest.raises(
        ValueError, match=r"targets: vproj name no linear or ungrouped 1-D conv.* named .*qkv"
    ):
        apply_lora(load_policy(tiny_setup / "base"), LoRAConfig(rank=2, targets=["qkv", "vproj"]))


def test_gspo_with_lora_resumes_exactly_and_trains_only_the_adapters(tiny_setup, tmp_path, capsys):
    """With a learned temperature too: it trains beside the adapters and resumes with them."""
    full, part = tmp_path / "full", tmp_path / "part"
    base = tmp_path / "base"
    shutil.copytree(tiny_setup / "base", base)  # rewritten below
    kw = {"eval.manifests": "[]", "save_steps": 2, "model.lora": "{rank: 4, alpha: 8}",
          "optim.lr": 3e-2, "beta": 0.1, "temperature_lr": 0.2, "model.init_from": str(base)}  # fmt: skip
    assert main(["gspo", "--no-progress", *overrides(tiny_setup, full, max_steps=4, **kw)]) == 0
    assert main(["gspo", "--no-progress", *overrides(tiny_setup, part, max_steps=2, **kw)]) == 0
    args = ["gspo", "--no-progress", "--resume", *overrides(tiny_setup, part, max_steps=4, **kw)]
    assert main(args) == 0
    for key in ("loss", "kl", "temperature_factor"):
        a, b = logged(full, key), logged(part, key)
        assert a[4] == pytest.approx(b[4], rel=1e-6, abs=1e-9)
    assert logged(full, "kl")[4] > 0 and logged(full, "temperature_factor")[4] != 1.0
    # the KL reference is the policy with its adapters off: the same numbers as a copy of the base
    copy = tmp_path / "copy"
    kw_copy = {**kw, "reference_model": str(tiny_setup / "base")}
    assert (
        main(["gspo", "--no-progress", *overrides(tiny_setup, copy, max_steps=4, **kw_copy)]) == 0
    )
    for key in ("loss", "kl"):
        assert logged(copy, key) == logged(full, key)
    ckpt = full / "checkpoints" / "step_00000004"
    adapters = load_file(ckpt / "adapters.safetensors")
    assert adapters["blocks.0.qkv.lora_b"].abs().max() > 0  # B left zero: they trained
    merged = load_file(ckpt / "policy" / "model.safetensors")
    base_weights = load_file(base / "model.safetensors")
    assert merged.keys() == base_weights.keys()
    changed = {k for k in base_weights if not torch.equal(base_weights[k], merged[k])}
    assert changed == {f"blocks.0.{k}.weight" for k in ("qkv", "proj", "mlp_in", "mlp_out")} | {
        "logit_scale"
    }
    assert "logit_scale" in adapters
    assert "lora" not in json.loads((ckpt / "policy" / "config.json").read_text())["config"]
    capsys.readouterr()
    assert main([*args, "max_steps=5", "model.lora={rank: 4, alpha: 16}"]) == 2
    assert "resume with those" in capsys.readouterr().err  # another alpha: another scale
    no_lora = [a for a in args if not a.startswith("model.lora=")]
    assert main([*no_lora, "max_steps=5"]) == 2
    assert "was trained with LoRA adapters: resume with the run's model.lora" in (
        capsys.readouterr().err
    )
    # the base changed under the run: its adapters are not put back on other weights
    base_weights["blocks.0.qkv.weight"] += 0.01
    save_file(base_weights, str(base / "model.safetensors"))
    assert main([*args, "max_steps=5"]) == 2
    assert "blocks.0.qkv.weight is not the base's with these adapters" in capsys.readouterr().err


def test_sft_takes_lora_and_refuses_it_without_a_base(tiny_setup, tmp_path, capsys):
    from test_train_sft import overrides as sft_overrides

    run = tmp_path / "sft"
    args = sft_overrides(tiny_setup, run, max_steps=2, eval_steps=0, save_steps=0)
    assert main(["train", "--no-progress", *args, "model.lora={rank: 2}"]) == 2
    assert "adapters train on top of a trained policy; set model.init_from" in (
        capsys.readouterr().err
    )
    base_args = [a for a in args if not a.startswith(("model.family", "model.codec",
                                                      "model.config"))]  # fmt: skip
    assert main(["train", "--no-progress", *base_args, f"model.init_from={tiny_setup / 'base'}",
                 "model.lora={rank: 2, targets: [qkv]}"]) == 0  # fmt: skip
    ckpt = run / "checkpoints" / "step_00000002"
    merged = load_file(ckpt / "policy" / "model.safetensors")
    base = load_file(tiny_setup / "base" / "model.safetensors")
    assert {k for k in base if not torch.equal(base[k], merged[k])} == {"blocks.0.qkv.weight"}
    assert set(load_file(ckpt / "adapters.safetensors")) == {"blocks.0.qkv.lora_a",
                                                             "blocks.0.qkv.lora_b"}  # fmt: skip


def test_modules_to_save_train_in_full_beside_the_adapters_and_resume(tiny_setup, tmp_path,
                                                                      capsys):  # fmt: skip
    from test_train_sft import overrides as sft_overrides

    def run(out, steps, *extra):
        args = sft_overrides(tiny_setup, out, max_steps=steps, eval_steps=0, save_steps=2)
        args = [a for a in args if not a.startswith(("model.family", "model.codec",
                                                     "model.config"))]  # fmt: skip
        lora = "model.lora={rank: 2, targets: [qkv], modules_to_save: [norm]}"
        return main(["train", "--no-progress", *args, f"model.init_from={tiny_setup / 'base'}",
                     lora, *extra])  # fmt: skip

    full, part = tmp_path / "full", tmp_path / "part"
    assert run(full, 3) == 0
    ckpt = full / "checkpoints" / "step_00000003"
    merged = load_file(ckpt / "policy" / "model.safetensors")
    base = load_file(tiny_setup / "base" / "model.safetensors")
    assert {k for k in base if not torch.equal(base[k], merged[k])} == {
        "blocks.0.qkv.weight", "norm.weight"}  # fmt: skip
    assert set(load_file(ckpt / "adapters.safetensors")) == {
        "blocks.0.qkv.lora_a", "blocks.0.qkv.lora_b", "norm.weight"}  # fmt: skip
    assert "norm in full" in capsys.readouterr().err
    assert run(part, 2) == 0 and run(part, 3, "--resume") == 0
    a, b = logged(full, "train/loss"), logged(part, "train/loss")
    assert a[3] == pytest.approx(b[3], rel=1e-6)


def test_modules_to_save_are_checked_by_name():
    policy = torch.nn.Sequential()
    policy.add_module("body", torch.nn.Sequential(torch.nn.Linear(3, 3)))
    policy.add_module("head", torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"modules_to_save: tail name no module .* body, head"):
        apply_lora(policy, LoRAConfig(rank=1, targets=["0"], modules_to_save=["tail"]))
    with pytest.raises(ValueError, match="cannot hold adapted layers"):
        apply_lora(policy, LoRAConfig(rank=1, targets=["0"], modules_to_save=["body"]))
    assert apply_lora(policy, LoRAConfig(rank=1, targets=["0"], modules_to_save=["head"])) == 1
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == {
        "body.0.lora_a", "body.0.lora_b", "head.weight", "head.bias"}  # fmt: skip


def test_gpt2_conv1d_layers_take_adapters_in_their_own_layout():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    layer = Conv1D(5, 3)  # 3 in, 5 out, weight [3, 5]
    wrapped = LoRALinear(layer, rank=2, alpha=4, generator=torch.Generator().manual_seed(0))
    assert (wrapped.in_features, wrapped.out_features) == (3, 5)
    with torch.no_grad():
        wrapped.lora_b.normal_()
    x = torch.randn(4, 3)
    expect = x @ (layer.weight + 2.0 * (wrapped.lora_b @ wrapped.lora_a).T) + layer.bias
    torch.testing.assert_close(wrapped(x), expect)
    assert wrapped.weight.shape == layer.weight.shape
    torch.testing.assert_close(x @ wrapped.weight + wrapped.bias, expect)
    state = wrapped.state_dict()
    assert set(state) == {"weight", "bias"} and state["weight"].shape == (3, 5)


def test_modules_trained_in_full_are_seen_as_their_frozen_copies_by_the_reference(
    tiny_setup, tmp_path
):
    """With ``modules_to_save``, GSPO's KL reference is the policy with its adapters off and
    those modules swapped for their frozen copies: the same numbers as loading the base as
    ``reference_model``."""
    kw = {"eval.manifests": "[]", "optim.lr": 3e-2, "beta": 0.1,
          "model.lora": "{rank: 4, alpha: 8, modules_to_save: [norm]}"}  # fmt: skip
    own, named = tmp_path / "own", tmp_path / "named"
    assert main(["gspo", "--no-progress", *overrides(tiny_setup, own, max_steps=3, **kw)]) == 0
    kw["reference_model"] = str(tiny_setup / "base")
    assert main(["gspo", "--no-progress", *overrides(tiny_setup, named, max_steps=3, **kw)]) == 0
    assert logged(own, "kl")[3] > 0
    for key in ("loss", "kl"):
        assert logged(own, key) == logged(named, key)


def test_adapters_off_restores_the_base_of_modules_trained_in_full(tiny_setup):
    base = load_policy(tiny_setup / "base")
    policy = load_policy(tiny_setup / "base")
    apply_lora(policy, LoRAConfig(rank=2, alpha=4, targets=["qkv"], modules_to_save=["norm"]))
    assert policy.state_dict().keys() == base.state_dict().keys()  # the copy is not a submodule
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == {
        "blocks.0.qkv.lora_a", "blocks.0.qkv.lora_b", "norm.weight"}  # fmt: skip
    with torch.no_grad():  # trained adapters and a trained final norm
        policy.norm.weight.mul_(1.5)
        policy.blocks[0].qkv.lora_b.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    trained_norm = policy.norm
    cond = policy.condition([torch.randn(16000).numpy() * 0.1])
    r = base.sample(cond, generator=torch.Generator().manual_seed(0), top_k=20)
    ref = base.step_log_probs(cond, r)[0]
    assert (policy.step_log_probs(cond, r)[0] - ref).abs().max() > 1e-3
    with adapters_off(policy):
        torch.testing.assert_close(policy.step_log_probs(cond, r)[0], ref, atol=1e-5, rtol=0)
        assert policy.norm is not trained_norm and not policy.norm.weight.requires_grad
    assert policy.norm is trained_norm  # swapped back, trained weights intact
    torch.testing.assert_close(policy.norm.weight, base.norm.weight * 1.5)
    view = BaseView(policy)
    torch.testing.assert_close(view.step_log_probs(cond, r)[0], ref, atol=1e-5, rtol=0)
    sampled = view.sample(cond, generator=torch.Generator().manual_seed(0), top_k=20)
    torch.testing.assert_close(sampled.actions["tokens"], r.actions["tokens"])
    torch.testing.assert_close(sampled.logp, r.logp, atol=1e-5, rtol=0)


def test_one_dimensional_convolutions_take_adapters():
    """An ``nn.Conv1d`` (stride, padding, dilation, a non-zero padding mode) is adapted as its
    ``[out, in · kernel]`` matrix: the unmerged forward equals the convolution with the merged
    weight, which is what its state dict holds; a grouped one is refused by name."""
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("conv", torch.nn.Conv1d(3, 5, 4, stride=2, padding=3, dilation=2,
                                             padding_mode="reflect"))  # fmt: skip
    model.add_module("dw", torch.nn.Conv1d(5, 5, 3, groups=5))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 40)
    before = model.conv(x)
    assert apply_lora(model, LoRAConfig(rank=2, alpha=4, targets=["conv"])) == 1
    conv = model.conv
    assert isinstance(conv, LoRALinear) and (conv.in_features, conv.out_features) == (12, 5)
    torch.testing.assert_close(conv(x), before)  # B starts at zero
    with torch.no_grad():
        conv.lora_b.normal_(0, 0.3)
    merged = base["conv.weight"] + 2.0 * (conv.lora_b @ conv.lora_a).view(5, 3, 4)
    padded = torch.nn.functional.pad(x, (3, 3), mode="reflect")
    expect = torch.nn.functional.conv1d(padded, merged, base["conv.bias"], stride=2, dilation=2)
    torch.testing.assert_close(conv(x), expect, atol=1e-5, rtol=1e-5)
    assert (conv(x) - before).abs().max() > 1e-2
    state = model.state_dict()
    assert state.keys() == base.keys()
    torch.testing.assert_close(state["conv.weight"], merged.detach())
    with adapters_off(model):
        torch.testing.assert_close(conv(x), before)
    holder = torch.nn.Module()
    holder.add_module("dw", torch.nn.Conv1d(5, 5, 3, groups=5))
    with pytest.raises(ValueError, match=r"\(dw: grouped convolutions and Conv1d subclasses"):
        apply_lora(holder, LoRAConfig(rank=2, targets=["dw"]))
    # code that reads a convolution's settings still finds them on the wrapped layer
    assert (conv.kernel_size, conv.stride, conv.padding, conv.dilation) == ((4,), (2,), (3,), (2,))
    assert conv.in_channels == 3 and conv.padding_mode == "reflect"
    with pytest.raises(AttributeError):
        _ = conv.not_a_setting


def test_layers_whose_merged_weight_cannot_be_written_are_refused_by_name():
    class Causal(torch.nn.Conv1d):  # its own forward: the low-rank path would not repeat it
        def forward(self, x):
            return super().forward(torch.nn.functional.pad(x, (2, 0)))

    holder = torch.nn.Module()
    holder.add_module("causal", Causal(3, 3, 3))
    holder.add_module("wn", torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(3, 3)))
    holder.add_module("lin", torch.nn.Linear(3, 3))
    for name, why in (("causal", "Conv1d subclasses with their own forward"),
                      ("wn", "weight-normalized layers take no adapters")):  # fmt: skip
        with pytest.raises(ValueError, match=rf"\({name}: .*{why}"):
            apply_lora(holder, LoRAConfig(rank=2, targets=[name]))
    # a weight-normalized module may still train in full
    assert apply_lora(holder, LoRAConfig(rank=2, targets=["lin"], modules_to_save=["wn"])) == 1


def test_tied_modules_trained_in_full_load_the_reference_and_copies_keep_the_mode():
    tied = torch.nn.Module()
    tied.add_module("emb", torch.nn.Embedding(5, 3))
    tied.add_module("head", torch.nn.Linear(3, 5, bias=False))
    tied.add_module("mid", torch.nn.Linear(3, 3))
    tied.head.weight = tied.emb.weight
    cfg = LoRAConfig(rank=2, targets=["mid"], modules_to_save=["head"])
    apply_lora(tied, cfg)
    # the embedding trains with the head: swapping in the head's copy would not give the base,
    # so a run loads the base as its reference instead
    assert tied.emb.weight.requires_grad and not base_is_at_hand(tied)
    model_cfg = ModelConfig(init_from="base", lora=cfg)
    assert not base_view_reference(model_cfg, None, tied)
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.add_module("proj", torch.nn.Linear(4, 4))
    model.add_module("post", torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(4)))
    apply_lora(model, LoRAConfig(rank=2, targets=["proj"], modules_to_save=["post"]))
    assert base_is_at_hand(model)
    assert base_view_reference(ModelConfig(init_from="base", lora=LoRAConfig(rank=2)), None, model)
    model.eval()
    x = torch.randn(6, 4)
    with adapters_off(model):
        assert not model.post.training  # the copy follows the policy's mode
        a, b = model.post(model.proj(x)), model.post(model.proj(x))
        with adapters_off(model):  # nested: leaves the outer block's state
            pass
        assert (
            not model.proj.enabled
            and model.post is not model.__dict__["_lora_frozen_modules"][0][2]
        )
    torch.testing.assert_close(a, b)  # no dropout, no running statistics updated
    assert model.proj.enabled and model.post is model.__dict__["_lora_frozen_modules"][0][2]
