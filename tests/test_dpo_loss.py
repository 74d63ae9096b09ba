"""``sealign.rl.dpo.dpo_loss`` against TRL's ``DPOTrainer`` sigmoid loss, plus TRL-free properties.

TRL 1.16 has no standalone ``dpo_loss``: the map from (chosen, rejected, ref chosen, ref rejected)
sequence log-probs to the loss and the ``rewards/*`` / ``logps/*`` metrics is inline in
``DPOTrainer._compute_loss``, after the model's forward pass. The differential tests run that real
method (the pinned ``trl`` of the ``dev`` extra) on seeded float64 log-probs: the trainer is made
with ``object.__new__(DPOTrainer)`` (no model, tokenizer or dataset set-up), its ``args`` is a real
``DPOConfig`` and the attributes ``_compute_loss`` reads are copied from it as
``DPOTrainer.__init__`` does. The ``model`` passed in is a stub whose output holds per-token
log-probs built from our ``chosen`` / ``rejected`` leaves (one completion token per sequence, so
TRL's sum over tokens is the sequence log-prob itself); with ``precompute_ref_log_probs=False``
the reference forward is a stub too. Everything after the forward passes is TRL's arithmetic.
Loss values, gradients w.r.t. the chosen / rejected log-probs and the logged statistics must agree
to 1e-6.

Without TRL installed only the TRL-free tests run (the fixture ``trl_dpo`` skips the rest).
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sealign.rl.dpo import dpo_loss

torch.set_num_threads(1)

# transformers' TrainingArguments may warn about its own renamed fields on every config.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`gradient_checkpointing` is deprecated:FutureWarning"
)

B = 7
BETAS = [0.1, 0.5]
# Policy-minus-reference margins (r_c - r_l) of the 7 pairs: positive (one large enough that
# beta * margin saturates the sigmoid), negative (one saturating the other way) and exactly zero
# (one of them with policy == reference on both sides).
MARGINS = [3.25, 0.125, 40.0, -0.5, -37.5, 0.0, 0.0]
STAT_KEYS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)
TRL_SKIP = (
    "trl is not installed: `pip install -e .[dev]` installs the pinned version needed for the "
    "differential test against TRL's DPOTrainer loss"
)


def _q(x: torch.Tensor) -> torch.Tensor:
    """Round to a multiple of 2**-10: sums and differences of such numbers are exact in float64,
    so the margins are exactly ``MARGINS`` (in particular the zero ones)."""
    return torch.round(x * 1024) / 1024


def _pairs(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded float64 ``[B]`` sequence log-probs whose margins are ``MARGINS``."""
    g = torch.Generator().manual_seed(seed)
    ref_chosen = _q(-5.0 - 45.0 * torch.rand(B, generator=g, dtype=torch.float64))
    ref_rejected = _q(-5.0 - 45.0 * torch.rand(B, generator=g, dtype=torch.float64))
    r_c = _q(2.0 * torch.randn(B, generator=g, dtype=torch.float64))
    r_c[-1] = 0.0  # the last pair: policy == reference for both responses
    r_l = r_c - torch.tensor(MARGINS, dtype=torch.float64)
    b = dict(
        chosen=ref_chosen + r_c,
        rejected=ref_rejected + r_l,
        ref_chosen=ref_chosen,
        ref_rejected=ref_rejected,
    )
    margins = (b["chosen"] - b["ref_chosen"]) - (b["rejected"] - b["ref_rejected"])
    assert margins.tolist() == MARGINS  # exact, including the ties
    return b


def _ours(b, beta):
    chosen = b["chosen"].clone().requires_grad_(True)
    rejected = b["rejected"].clone().requires_grad_(True)
    loss, stats = dpo_loss(chosen, rejected, b["ref_chosen"], b["ref_rejected"], beta)
    loss.backward()
    return loss.detach(), chosen.grad, rejected.grad, stats


# --- TRL differential tests -------------------------------------------------------------------


class _SingleProcess:
    """The parts of ``accelerate.Accelerator`` that ``_compute_loss`` uses, for one process."""

    device = torch.device("cpu")
    num_processes = 1

    def gather(self, x):
        return x

    gather_for_metrics = gather


@pytest.fixture(scope="module")
def trl_dpo():
    pytest.importorskip("trl", reason=TRL_SKIP)
    from trl import DPOConfig, DPOTrainer

    return DPOConfig, DPOTrainer


def _forward_stub(logps: torch.Tensor, input_ids: torch.Tensor):
    """A causal LM's forward as ``_compute_loss`` consumes it: per-token log-probs of the shifted
    labels (``[2B, 1]``: one completion token), plus the tensors it logs."""

    def forward(input_ids=None, attention_mask=None, labels=None, fused_lm_head=None, **kw):
        assert fused_lm_head is True and kw == {"use_cache": False}
        assert torch.equal(input_ids, expected_ids) and attention_mask.shape == input_ids.shape
        assert (labels[:, 0] == -100).all() and torch.equal(labels[:, 1], input_ids[:, 1])
        col = logps[:, None]
        return SimpleNamespace(
            log_probs=col,
            entropy=torch.zeros_like(col),
            mean_logits=torch.zeros_like(col),
            is_top1=torch.zeros_like(col, dtype=torch.bool),
        )

    expected_ids = input_ids
    return forward


def _trl(trl_dpo, tmp_path, b, beta, precompute_ref=True):
    """Loss, gradients w.r.t. chosen / rejected log-probs and logged metrics from TRL's
    ``DPOTrainer._compute_loss`` (loss_type "sigmoid")."""
    DPOConfig, DPOTrainer = trl_dpo
    args = DPOConfig(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        beta=beta,
        loss_type="sigmoid",
        precompute_ref_log_probs=precompute_ref,
    )
    assert args.loss_type == ["sigmoid"] and args.f_divergence_type == "reverse_kl"
    t = object.__new__(DPOTrainer)
    # What DPOTrainer.__init__ derives from args and _compute_loss reads.
    t.args = args
    t.beta = args.beta
    t.precompute_ref_logps = args.precompute_ref_log_probs
    t.loss_types = args.loss_type
    t.loss_weights = args.loss_weights or [1.0] * len(t.loss_types)
    t.ld_alpha = args.ld_alpha
    t.f_divergence_type = args.f_divergence_type
    t.f_alpha_divergence_coef = args.f_alpha_divergence_coef
    t.label_smoothing = args.label_smoothing
    t.use_weighting = args.use_weighting
    t.aux_loss_enabled = False
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    t._total_train_tokens = 0
    t._tp_size = 1
    t.accelerator = _SingleProcess()
    t.model = nn.Module()  # `.training` (True: "train" mode); is_peft_model -> False
    t.model.is_gradient_checkpointing = False  # read by disable_gradient_checkpointing

    chosen = b["chosen"].clone().requires_grad_(True)
    rejected = b["rejected"].clone().requires_grad_(True)
    # Batch layout [chosen; rejected], a one-token prompt and a one-token completion each.
    input_ids = torch.arange(1, 4 * B + 1).reshape(2 * B, 2)
    completion_mask = torch.tensor([[0, 1]]).expand(2 * B, 2).clone()
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "completion_mask": completion_mask,
    }
    ref = torch.cat([b["ref_chosen"], b["ref_rejected"]])
    if precompute_ref:
        inputs["ref_chosen_logps"] = b["ref_chosen"]
        inputs["ref_rejected_logps"] = b["ref_rejected"]
        t.ref_model = None
    else:
        t.ref_model = _forward_stub(ref, input_ids)
    model = _forward_stub(torch.cat([chosen, rejected]), input_ids)
    loss = t._compute_loss(model, inputs, return_outputs=False)
    loss.backward()
    metrics = {k: v[-1] for k, v in t._metrics["train"].items()}
    return loss.detach(), chosen.grad, rejected.grad, metrics


@pytest.mark.parametrize("precompute_ref", [True, False], ids=["precomputed-ref", "ref-forward"])
@pytest.mark.parametrize("beta", BETAS)
def test_loss_grads_and_stats_match_trl(trl_dpo, tmp_path, beta, precompute_ref):
    b = _pairs()
    ref_loss, ref_gc, ref_gr, metrics = _trl(trl_dpo, tmp_path, b, beta, precompute_ref)
    loss, gc, gr, stats = _ours(b, beta)
    assert ref_loss.dtype == torch.float64  # TRL computed in float64 too
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(gc, ref_gc, atol=1e-6, rtol=0)
    torch.testing.assert_close(gr, ref_gr, atol=1e-6, rtol=0)
    assert (gc.abs() > 0).all() and (gr.abs() > 0).all()
    for k in STAT_KEYS:
        assert stats[k] == pytest.approx(metrics[k], abs=1e-6), k
    assert metrics["rewards/accuracies"] == pytest.approx(3 / 7)  # ties count as wrong in TRL too


def test_trl_gradient_sanity(trl_dpo, tmp_path):
    """The differential test is not vacuous: TRL's loss depends on beta and on the pairs."""
    b = _pairs()
    l1, g1, _, _ = _trl(trl_dpo, tmp_path, b, BETAS[0])
    l2, g2, _, _ = _trl(trl_dpo, tmp_path, b, BETAS[1])
    l3, _, _, _ = _trl(trl_dpo, tmp_path, _pairs(seed=1) | {"chosen": b["rejected"]}, BETAS[0])
    assert not torch.allclose(l1, l2) and not torch.allclose(g1, g2)
    assert not torch.allclose(l1, l3)


# --- TRL-free properties ----------------------------------------------------------------------


@pytest.mark.parametrize("beta", BETAS)
def test_loss_is_log2_when_policy_equals_reference(beta):
    b = _pairs()
    loss, gc, gr, stats = _ours(
        dict(b, chosen=b["ref_chosen"].clone(), rejected=b["ref_rejected"].clone()), beta
    )
    assert float(loss) == pytest.approx(math.log(2), abs=1e-12)
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert stats[k] == 0.0, k
    assert stats["logps/chosen"] == pytest.approx(float(b["ref_chosen"].mean()))
    assert stats["logps/rejected"] == pytest.approx(float(b["ref_rejected"].mean()))
    # At the reference every pair pulls equally: d/dchosen = -beta / (2 B).
    torch.testing.assert_close(gc, torch.full_like(gc, -beta / (2 * B)), atol=1e-12, rtol=0)
    torch.testing.assert_close(gr, -gc, atol=1e-12, rtol=0)


@pytest.mark.parametrize("beta", BETAS)
def test_accuracy_counts_strict_improvements(beta):
    b = _pairs()
    _, _, _, stats = _ours(b, beta)
    # MARGINS: 3 positive, 2 negative, 2 exact ties -> ties are not improvements.
    assert stats["rewards/accuracies"] == pytest.approx(3 / 7)
    # A tiny positive margin counts, an exact tie does not.
    z = torch.zeros(2, dtype=torch.float64)
    _, tie = dpo_loss(z, z, z, z, beta)
    assert tie["rewards/accuracies"] == 0.0
    _, win = dpo_loss(torch.tensor([2.0**-20, 0.0], dtype=torch.float64), z, z, z, beta)
    assert win["rewards/accuracies"] == 0.5
    # Improvement is relative to the reference, not the raw log-probs: the chosen response
    # is less likely than the rejected one under the policy, yet gained more.
    c, r = torch.tensor([-10.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    _, rel = dpo_loss(c, r, c - 1.0, r, beta)
    assert rel["rewards/accuracies"] == 1.0 and rel["rewards/margins"] == pytest.approx(beta)


@pytest.mark.parametrize("beta", BETAS)
def test_gradient_signs(beta):
    b = _pairs()
    loss, gc, gr, _ = _ours(b, beta)
    assert (gc < 0).all()  # raising a chosen log-prob lowers the loss, for every pair
    assert (gr > 0).all()  # raising a rejected log-prob raises it
    torch.testing.assert_close(gr, -gc, atol=1e-15, rtol=0)
    # Saturated pairs (|beta * margin| large) get much smaller gradients than wrong ones.
    assert gc[2].abs() < gc[4].abs()


def test_reference_gets_no_gradient():
    b = _pairs()
    ref_c = b["ref_chosen"].clone().requires_grad_(True)
    ref_r = b["ref_rejected"].clone().requires_grad_(True)
    chosen = b["chosen"].clone().requires_grad_(True)
    loss, _ = dpo_loss(chosen, b["rejected"], ref_c, ref_r, 0.1)
    loss.backward()
    assert ref_c.grad is None and ref_r.grad is None and chosen.grad is not None
