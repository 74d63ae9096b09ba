"""GSPO (and GRPO) post-training of any :class:`~sealign.models.policy.Policy` on a composite
perceptual reward. One explicit loop, no critic:

    B noisy inputs → condition → each repeated G times → policy.sample (old log-probs)
      → policy.decode → reward (metrics, batched, cached) → group-relative advantages
      → K minibatch updates: policy.step_log_probs → clipped surrogate (+ k3 KL) → AdamW

Per step it logs ``reward``, ``reward_std``, ``rewards/<name>/mean|std|frac_zero_std`` (the
last: the share of groups in which that term has no spread), ``frac_reward_zero_std``,
``num_excluded``, ``frac_words_with_spread`` (with word credit), ``clip_ratio/*``, ``kl``,
``entropy``, ``loss``, ``grad_norm``, ``lr``, ``completions/mean_length`` and
``time/{generate,decode,score,update,step}`` (console, ``log.jsonl``, TensorBoard). Every ``eval.steps`` steps (and at step 0) the held-out set is
enhanced and scored on every evaluation metric; see :mod:`sealign.rl.evaluation` for the
reward-hacking alarm. Checkpoints restore weights, optimizer, scheduler, RNGs and the data
position, so a resumed run repeats the losses of an uninterrupted one.

Distributed: with ``WORLD_SIZE > 1`` (``torchrun``) each rank draws its own shard of inputs and
its own seeds; a group never spans ranks, so group normalization is local and exact; gradients
are averaged across ranks before each optimizer step; rank 0 logs and saves, and its checkpoint
holds every rank's sampling RNG and data position, so a resume with the same number of ranks
continues exactly; stopping on the time budget is agreed by all ranks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sealign.audio.io import as_written
from sealign.config import save_config, warn_config_changes
from sealign.infer.fusion import FUSIONS, fuse_outputs
from sealign.metrics.base import Utterance
from sealign.models.lora import BaseView
from sealign.models.policy import (
    Policy,
    Rollout,
    check_sample_options,
    keep_passes,
    step_passes,
)
from sealign.models.shipped import model_path
from sealign.rewards import (
    CompositeReward,
    RewardConfig,
    component_zero_spread,
    group_advantages,
)
from sealign.rewards.word_credit import step_advantages
from sealign.rl.evaluation import HeldOut, RLEvalConfig
from sealign.rl.losses import DEFAULT_EPS, LOSSES, policy_loss
from sealign.train.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
)
from sealign.train.data import DataConfig, DataError, Example, PairDataset, follow_manifests
from sealign.train.distributed import (
    Dist,
    any_rank,
    broadcast_weights,
    check_same_start,
    close_distributed,
    init_distributed,
    mean_stats_over_ranks,
    restarted_by_torchrun,
    restore_rank_state,
    seed_everything,
    store_rank_states,
    sum_over_ranks,
)
from sealign.train.sft import (
    DivergenceGuard,
    ModelConfig,
    OptimConfig,
    _keep_working,
    base_view_reference,
    finish_step,
    init_policy,
    make_optimizer,
    make_scheduler,
    reference_config,
    start_policy,
)
from sealign.utils.device import autocast, check_device, check_precision
from sealign.utils.logging import RunLogger
from sealign.utils.paths import replace_dir
from sealign.utils.threads import set_torch_threads

log = logging.getLogger(__name__)
TEMPERATURE_OPTIMIZERS = ("sgd", "adamw", "probe")


def _gspo_data() -> DataConfig:
    return DataConfig(batch_size=2, crop_seconds=0.0, max_seconds=10.0)


def _gspo_optim() -> OptimConfig:
    return OptimConfig(lr=1e-5, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0)


@dataclass
class SamplingConfig:
    """How the G outputs of a group are sampled."""

    group_size: int = 4
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    # family-specific options of Policy.sample, e.g. {sde_a: 0.3} for the flow-matching SDE
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, prefix: str = "sampling.") -> None:
        if self.group_size < 2:
            raise ValueError(f"{prefix}group_size must be >= 2, got {self.group_size}")
        if not 0 < self.temperature < math.inf:
            raise ValueError(f"{prefix}temperature must be a finite number > 0, got "
                             f"{self.temperature}")  # fmt: skip
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"{prefix}top_k must be >= 0 and top_p in (0, 1]")

    def options(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "top_p": self.top_p, **self.extra}


@dataclass
class GSPOConfig:
    """Settings of ``sealign gspo``. The defaults are the GSPO paper's loss settings."""

    output_dir: str = "runs/gspo"
    model: ModelConfig = field(default_factory=ModelConfig)
    reference_model: str | None = None  # frozen π_ref for the KL (default: the initial policy)
    data: DataConfig = field(default_factory=_gspo_data)  # batch_size = inputs per step (B)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    loss: str = "gspo"  # gspo | gspo_token | grpo
    # clipping range of the ratio; null: the loss's own (3e-4 / 4e-4 for gspo and gspo_token,
    # 0.2 / 0.2 for grpo: see sealign.rl.losses.DEFAULT_EPS)
    epsilon_low: float | None = None
    epsilon_high: float | None = None
    beta: float = 0.0  # weight of the k3 KL to the reference policy
    # > 0: an entropy bonus (exploration); < 0: an entropy penalty (entropy minimization: the
    # sampler sharpens, as a lower temperature would; measured in docs/gspo_demo.md)
    entropy_coef: float = 0.0
    # > 0: learn the policy's sampling temperature (its ``logit_scale``, the log of a factor
    # on every logit; the ar and mgm families have one) at this rate (following the weights'
    # schedule), beside the weights; the KL reference samples at the same learned
    # temperature, so only entropy_coef acts against it (docs/gspo_demo.md, "A learned
    # temperature")
    temperature_lr: float = 0.0
    # how: "sgd", plain gradient steps outside the weights' clipping (a step as large as the
    # gradient, so that a noisy estimate moves it little); "adamw", a group of its own in the
    # weights' AdamW (whose first steps are ±temperature_lr whatever the gradient's size);
    # "probe", plain steps on the reward's slope measured directly: each input's samples come
    # in two groups, at the temperature times e^+δ and e^−δ (δ = temperature_probe), and the
    # difference of their mean composite rewards over 2δ estimates d reward / d log temperature
    # (antithetic finite differences; far less noisy than the loss's gradient on the
    # temperature: docs/gspo_demo.md, "Probing the temperature"). Each group keeps its own
    # advantages, so the weights see no temperature contrast; a step has 2 · B · G samples.
    temperature_optimizer: str = "sgd"
    temperature_probe: float = 0.25
    # scale of below-average samples' advantages: 1 = GSPO; 0 reinforces only the better
    # samples of each group (positive sample reinforcement; measured in docs/gspo_demo.md)
    negative_advantage_scale: float = 1.0
    steps_per_generation: int = 4  # minibatch updates per pass over a rollout batch (K)
    num_iterations: int = 1  # passes over each rollout batch (μ): K·μ optimizer steps
    # share of a rollout's model passes (MGM decoding iterations, FM SDE steps) whose steps
    # enter each minibatch's loss, drawn at random: < 1 makes those families' updates cheaper
    # (Flow-GRPO's timestep fraction); AR policies compute every step in one pass anyway
    step_fraction: float = 1.0
    # rollouts per forward/backward pass within a minibatch (0 = the whole minibatch at once):
    # gradients are accumulated over the micro-batches before the one optimizer step, so the
    # update is the same, with the activations of only this many rollouts in memory at a time
    micro_batch_size: int = 0
    # "bf16": the update's forward passes under bfloat16 autocast; the rollouts' old log-probs
    # are then recomputed by the same bf16 forward before the update, so that the ratio
    # compares like with like (sampled fp32 log-probs differ from bf16 ones by more than ε)
    precision: str = "fp32"
    # post-processing of each decoded output before it is scored, in rollouts and held-out
    # evaluation ("mask": the output masks its noisy input, sealign.infer.fusion), so the
    # reward judges what `sealign enhance` writes with the same setting
    fuse: str = "none"
    optim: OptimConfig = field(default_factory=_gspo_optim)
    eval: RLEvalConfig = field(default_factory=RLEvalConfig)
    max_steps: int = 100  # rollout steps
    max_minutes: float = 0.0  # stop (and save) after this much wall time; 0 = no limit
    logging_steps: int = 1
    save_steps: int = 25
    save_total_limit: int = 2
    seed: int = 0
    threads: int = 2
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_device(self.device)
        check_precision(self.precision)
        if self.loss not in LOSSES:
            raise ValueError(f"loss: {self.loss!r} unknown; known: {', '.join(LOSSES)}")
        low, high = DEFAULT_EPS[self.loss]
        low = low if self.epsilon_low is None else self.epsilon_low
        high = high if self.epsilon_high is None else self.epsilon_high
        if not (0 <= low < 1 and high >= 0):
            raise ValueError("epsilon_low must be in [0, 1) and epsilon_high >= 0")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if not math.isfinite(self.entropy_coef):
            raise ValueError(f"entropy_coef must be finite, got {self.entropy_coef}")
        if not 0 <= self.temperature_lr < math.inf:
            raise ValueError(f"temperature_lr must be >= 0 and finite, got {self.temperature_lr}")
        if self.temperature_optimizer not in TEMPERATURE_OPTIMIZERS:
            raise ValueError(f"temperature_optimizer must be one of {TEMPERATURE_OPTIMIZERS}, "
                             f"got {self.temperature_optimizer!r}")  # fmt: skip
        if not 0 < self.temperature_probe <= 2:
            raise ValueError(f"temperature_probe (δ, a log-temperature offset) must be in "
                             f"(0, 2], got {self.temperature_probe}")  # fmt: skip
        if not 0 <= self.negative_advantage_scale <= 1:
            raise ValueError(
                f"negative_advantage_scale must be in [0, 1], got {self.negative_advantage_scale}"
            )
        for key in ("steps_per_generation", "num_iterations", "max_steps", "logging_steps",
                    "threads"):  # fmt: skip
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.fuse not in FUSIONS:
            raise ValueError(f"fuse must be one of {FUSIONS}, got {self.fuse!r}")
        if self.micro_batch_size < 0:
            raise ValueError(f"micro_batch_size must be >= 0, got {self.micro_batch_size}")
        if not 0 < self.step_fraction <= 1:
            raise ValueError(f"step_fraction must be in (0, 1], got {self.step_fraction}")
        if self.save_steps < 0 or self.max_minutes < 0 or self.save_total_limit < 1:
            raise ValueError("save_steps and max_minutes must be >= 0, save_total_limit >= 1")

    def check(self) -> None:
        """Checks touching files and the metric registry (before any work)."""
        self.model.check("model.")
        if self.reference_model and not model_path(self.reference_model).exists():
            raise ValueError(f"reference_model: not found: {self.reference_model}")
        self.data.check("data.")
        if self.data.crop_seconds:
            raise ValueError(
                "data.crop_seconds must be 0 for RL: a crop would not match the transcript"
            )
        self.sampling.check("sampling.")
        self.reward.check("reward.")
        self.optim.check("optim.")
        self.eval.check("eval.")
        j = self.reward.word_credit
        if j is not None and self.loss == "gspo":
            raise ValueError(
                f"reward.components[{j}].credit: word gives each step its own advantage, which "
                "the gspo loss cannot take (one per sequence); use loss: gspo_token (or grpo)"
            )
        n = self.data.batch_size * self.sampling.group_size
        if self.steps_per_generation > n:
            raise ValueError(
                f"steps_per_generation ({self.steps_per_generation}) exceeds the "
                f"{n} samples of a rollout batch (data.batch_size x sampling.group_size)"
            )


# ------------------------------------------------------------------------------------- steps


@dataclass
class RolloutBatch:
    """One step's samples: conditioning of the N = B·G rows, the rollout, and its scores."""

    examples: list[Example]
    cond: Any
    rollout: Rollout
    group: np.ndarray
    advantages: np.ndarray  # [N], or [N, S] per step with word credit
    valid: np.ndarray
    stats: dict[str, float]
    composite: np.ndarray | None = None  # [N] weighted reward on the common scale, NaN if unusable
    # temperature_optimizer probe: (sum over inputs of hotter − cooler mean composite reward,
    # number of inputs with a usable reward in both groups)
    probe: tuple[float, int] | None = None


def _utterances(examples: list[Example], group: np.ndarray, wavs: list[np.ndarray], sr: int):
    out = []
    for j, (g, w) in enumerate(zip(group.tolist(), wavs, strict=True)):
        ex = examples[g]
        out.append(
            Utterance(f"{ex.id}#{j}", w, sr, reference=ex.clean, text=ex.text, speaker_ref=ex.clean)
        )
    return out


def rl_options(policy: Policy, cfg: GSPOConfig) -> dict[str, Any]:
    """Sampling options for rollouts: the config's, plus what the family needs to return step
    log-probs (``rl_sample_options()``, e.g. the flow-matching SDE sampler)."""
    extra = getattr(policy, "rl_sample_options", None)
    return {**cfg.sampling.options(), **(extra() if callable(extra) else {})}


def probing(cfg: GSPOConfig) -> float | None:
    """δ when the run learns its temperature by probes (``temperature_optimizer: probe``)."""
    learns = cfg.temperature_lr > 0 and cfg.temperature_optimizer == "probe"
    return cfg.temperature_probe if learns else None


def concat_rollouts(parts: list[Rollout], sizes: list[int]) -> Rollout:
    """The rows of ``parts`` in order, each sampled from its own slice of one conditioning (in
    the same order, ``sizes`` rows each): sources shifted to index the whole. Actions must have
    the same shape beyond the rows (the same padded conditioning width)."""
    offsets = np.cumsum([0, *sizes[:-1]]).tolist()
    actions = {}
    for k in parts[0].actions:
        shapes = {tuple(p.actions[k].shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise ValueError(f"rollout actions[{k!r}] differ in shape between samplings: {shapes}")
        actions[k] = torch.cat([p.actions[k] for p in parts])
    return Rollout(
        actions,
        torch.cat([p.logp for p in parts]),
        torch.cat([p.mask for p in parts]),
        torch.cat([p.source + o for p, o in zip(parts, offsets, strict=True)]),
    )


def _probe_differences(composite: np.ndarray, group: np.ndarray, n: int) -> tuple[float, int]:
    """(sum over inputs ``i`` of group ``i``'s (at T·e^δ) mean reward minus group ``i + n``'s
    (at T·e^−δ), how many inputs have a usable reward in both). Samples without a reward drop
    out of their group's mean, as they do from its advantages."""
    total, count = 0.0, 0
    for i in range(n):
        hi, lo = composite[group == i], composite[group == i + n]
        hi, lo = hi[np.isfinite(hi)], lo[np.isfinite(lo)]
        if hi.size and lo.size:
            total, count = total + float(hi.mean() - lo.mean()), count + 1
    return total, count


def generate_and_score(
    policy: Policy,
    examples: list[Example],
    cfg: GSPOConfig,
    reward: CompositeReward,
    generator: torch.Generator,
) -> RolloutBatch | None:
    """Sample G outputs per input, decode, score and compute group advantages (with
    ``temperature_optimizer: probe``, two groups per input at two temperatures)."""
    g = cfg.sampling.group_size
    t0 = time.perf_counter()
    examples, cond = _keep_working(
        examples, lambda b: policy.condition([e.noisy for e in b]), lambda e: e.id
    )
    if not examples:
        return None
    n, delta = len(examples), probing(cfg)
    if delta is not None:
        examples = examples + examples  # input i's groups: i (hotter) and i + n (cooler)
    group = np.repeat(np.arange(len(examples)), g)
    cond = cond.select(torch.as_tensor(group % n))
    options = rl_options(policy, cfg)
    if delta is None:
        rollout = policy.sample(
            cond, temperature=cfg.sampling.temperature, generator=generator, **options
        )
    else:
        half = n * g
        rollout = concat_rollouts([
            policy.sample(cond.select(torch.arange(lo, lo + half)), generator=generator,
                          temperature=cfg.sampling.temperature * math.exp(sign * delta), **options)
            for lo, sign in ((0, 1), (half, -1))
        ], [half, half])  # fmt: skip
    t1 = time.perf_counter()
    wavs = policy.decode(rollout)
    wavs = fuse_outputs(wavs, [examples[k].noisy for k in group], policy.sample_rate, cfg.fuse)
    wavs = [as_written(w) for w in wavs]  # the reward judges what enhance writes and tables read
    t2 = time.perf_counter()
    scores = reward(_utterances(examples, group, wavs, policy.sample_rate))
    t3 = time.perf_counter()
    adv = group_advantages(
        scores.values, group, reward.weights, cfg.reward.aggregation, scores.failed
    )
    advantages, words_with_signal = adv.advantages, None
    if scores.word_credit is not None and reward.word_credit is not None:
        advantages, words_with_signal = step_advantages(
            scores.values, group, reward.weights, cfg.reward.aggregation, adv.valid,
            reward.word_credit, scores.word_credit, rollout.logp.shape[1],
            policy.step_seconds,  # type: ignore[attr-defined]
        )  # fmt: skip
    if cfg.negative_advantage_scale != 1:
        advantages = np.where(advantages < 0, advantages * cfg.negative_advantage_scale, advantages)
    for i, why in scores.reasons.items():
        log.warning("excluding sample %s#%d from its group: %s", examples[group[i]].id, i, why)
    if not adv.valid.any() and not scores.reasons:
        log.warning("no sample of this batch has a reward: the components (%s) gave no value for "
                    "any of them (not applicable)", ", ".join(scores.names))  # fmt: skip
    stats: dict[str, float] = {
        "time/generate": t1 - t0,
        "time/decode": t2 - t1,
        "time/score": t3 - t2,
        "frac_reward_zero_std": adv.frac_reward_zero_std,
        "num_excluded": float((~adv.valid).sum()),
        "completions/mean_length": float(rollout.lengths.float().mean()),
        **{f"time/score/{k}": v for k, v in scores.seconds.items()},
    }
    if words_with_signal is not None:
        stats["frac_words_with_spread"] = words_with_signal
    comp = adv.composite[adv.valid]
    if comp.size:
        stats["reward"] = float(comp.mean())
        stats["reward_std"] = float(comp.std())
    flat = component_zero_spread(scores.values, group, adv.valid)
    for j, name in enumerate(scores.names):
        col = scores.values[:, j]
        col = col[np.isfinite(col)]
        if col.size:
            stats[f"rewards/{name}/mean"] = float(col.mean())
            stats[f"rewards/{name}/std"] = float(col.std())
        stats[f"rewards/{name}/frac_zero_std"] = float(flat[j])
    # with probes, reward statistics mix the two temperatures (the central one lies between)
    probe = _probe_differences(adv.composite, group, n) if delta is not None else None
    return RolloutBatch(
        examples, cond, rollout, group, advantages, adv.valid, stats, adv.composite, probe
    )


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 when autocast made it lower; float64 (the FM's Gaussian log-densities)
    stays float64, whose sums over a sequence float32 would round by about ε."""
    return x if x.dtype == torch.float64 else x.float()


def _micro_loss(
    policy: Policy,
    ref: Policy | None,
    cond: Any,
    mb: Any,
    advantages: torch.Tensor,
    cfg: GSPOConfig,
) -> Any:
    """The policy loss (and its statistics) of the rollouts ``mb``."""
    with autocast(cfg.device, cfg.precision):
        logp, ent = policy.step_log_probs(cond, mb)
        ref_logp = None
        if ref is not None:
            with torch.no_grad():
                ref_logp, _ = ref.step_log_probs(cond, mb)
    logp, ent = _full_precision(logp), _full_precision(ent)
    ref_logp = _full_precision(ref_logp) if ref_logp is not None else None
    return policy_loss(
        logp,
        mb.logp.to(logp.device),
        advantages.to(logp.device),
        mb.mask.to(logp.device),
        cfg.loss,
        cfg.epsilon_low,
        cfg.epsilon_high,
        ref_logp=ref_logp,
        beta=cfg.beta,
        entropy=ent,
        entropy_coef=cfg.entropy_coef,
    )


def recompute_old_logp(cfg: GSPOConfig) -> bool:
    """Whether the update recomputes the sampler's log-probs with its own forward pass: under
    bf16, and off the CPU, where the sampler's kernels (KV cache, other batch shapes) need not
    round like the update's and ε is ~3e-4."""
    return cfg.precision != "fp32" or torch.device(cfg.device).type != "cpu"


@torch.no_grad()
def _recompute_old_logp(policy: Policy, cond: Any, rollout: Rollout, cfg: GSPOConfig) -> Rollout:
    """``rollout`` with its log-probs recomputed by the update's own (autocast) forward pass."""
    size = cfg.micro_batch_size or len(rollout)
    parts = []
    for lo in range(0, len(rollout), size):
        part = rollout.select(torch.arange(lo, min(lo + size, len(rollout))))
        with autocast(cfg.device, cfg.precision):
            logp, _ = policy.step_log_probs(cond, part)
        if logp.shape != part.logp.shape:
            raise ValueError(
                f"step_log_probs gave {tuple(logp.shape)} for {tuple(part.logp.shape)}"
            )
        parts.append(
            _full_precision(logp).to(rollout.logp.device) * part.mask.to(rollout.logp.device)
        )
    return Rollout(rollout.actions, torch.cat(parts), rollout.mask, rollout.source)


def update(
    policy: Policy,
    ref: Policy | None,
    batch: RolloutBatch,
    cfg: GSPOConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    d: Dist,
    guard: DivergenceGuard | None = None,
) -> dict[str, float]:
    """μ passes of K minibatch updates on the valid samples of ``batch`` (reshuffled with
    ``generator`` for each pass); ``guard`` ends a run whose updates keep being skipped.

    Under DDP every rank takes the same μ·K optimizer steps, whatever its number of valid
    samples: a minibatch's gradient is the mean over the valid samples of all ranks, a rank
    with none contributes zero, and a minibatch empty on every rank is skipped by all."""
    module: torch.nn.Module = policy  # type: ignore[assignment]
    params = [p for p in module.parameters() if p.requires_grad]
    idx = np.flatnonzero(batch.valid)
    k = cfg.steps_per_generation
    sums: dict[str, float] = {}
    chunks = []
    for _ in range(cfg.num_iterations):
        perm = torch.randperm(idx.size, generator=generator).numpy() if idx.size else idx
        chunks += np.array_split(idx[perm], k)
    totals = sum_over_ranks([float(c.size) for c in chunks], d)
    if not any(totals):
        log.warning("no valid sample in this rollout batch: no update")
    adv_all = torch.as_tensor(batch.advantages, dtype=torch.float32)
    rollout = batch.rollout
    slope = None
    if batch.probe is not None:  # every rank's inputs, so that every rank takes the same step
        total, count = sum_over_ranks(list(batch.probe), d)
        slope = total / count / (2 * cfg.temperature_probe) if count else 0.0
    if recompute_old_logp(cfg) and idx.size:
        rollout = _recompute_old_logp(policy, batch.cond, rollout, cfg)
    done, mine = 0, 0  # optimizer steps taken; those with samples of this rank
    stats_sums: dict[str, float] = {}
    for rows, total in zip(chunks, totals, strict=True):
        if not total:
            scheduler.step()
            continue
        done += 1
        # this rank's share of the minibatch, so that averaging over ranks weighs every sample
        # alike (1 in a single process)
        weight = d.world_size * rows.size / total
        optimizer.zero_grad(set_to_none=True)
        loss_value, stats = 0.0, {}
        if rows.size:  # else this rank adds zero gradients to the others'
            mine += 1
            if ref is not None:
                tie_temperature(policy, ref)
            mb = rollout.select(torch.as_tensor(rows))
            if cfg.step_fraction < 1:
                mb = keep_passes(mb, step_passes(policy, mb), cfg.step_fraction, generator)
            # the loss is a mean over sequences, so micro-batch losses weighted by their share
            # of the rows add up to the minibatch's loss, and so do their gradients
            size = cfg.micro_batch_size or len(rows)
            for lo in range(0, len(rows), size):
                part = torch.arange(lo, min(lo + size, len(rows)))
                share = len(part) / len(rows)
                micro = mb if size >= len(rows) else mb.select(part)
                adv = adv_all[rows[part.numpy()]]
                out = _micro_loss(policy, ref, batch.cond, micro, adv, cfg)
                (out.loss * (share * weight)).backward()
                loss_value += float(out.loss.detach()) * share * weight
                for key, v in out.stats.items():
                    stats[key] = stats.get(key, 0.0) + v * share
            scale = getattr(policy, "logit_scale", None)
            if slope is None and scale is not None and scale.grad is not None:
                # d loss / d logit_scale on this rank's rows (< 0: sharpen the sampler)
                stats["logit_scale_grad"] = float(scale.grad) / weight
        if slope is not None:
            # probes replace the loss's gradient on the temperature: d(−reward)/ds is the
            # measured slope d reward / d log T (s = −log of the temperature's factor), spread
            # over the rollout batch's optimizer steps; the same on every rank, so averaging
            # gradients over the ranks keeps it
            scale = policy.logit_scale  # type: ignore[attr-defined]
            scale.grad = torch.full_like(scale, slope / len(chunks))
        loss_value, grad_norm = finish_step(
            loss_value, params, optimizer, scheduler, cfg.optim.max_grad_norm, d, guard,
            plain_steps(policy, cfg),
        )  # fmt: skip
        for key, v in {"loss": loss_value, "grad_norm": grad_norm}.items():
            sums[key] = sums.get(key, 0.0) + v
        for key, v in stats.items():
            stats_sums[key] = stats_sums.get(key, 0.0) + v
    # loss, grad_norm and temperature_slope are the same on every rank; the others this rank's
    return {
        **{k: v / done for k, v in sums.items()},
        **{k: v / mine for k, v in stats_sums.items()},
        **({} if slope is None else {"temperature_slope": slope}),
    }


# ------------------------------------------------------------------------------------ runner


@dataclass
class GSPOResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    history: list[dict[str, Any]]
    evals: dict[int, list[dict[str, Any]]]  # step → held-out records
    alarms: list[str]


UNREWARDED_LIMIT = 10


def learned_temperature(policy: Policy, lr: float) -> torch.nn.Parameter | None:
    """The policy's ``logit_scale``, made trainable, when ``temperature_lr`` (``lr``) > 0."""
    if lr <= 0:
        return None
    param = getattr(policy, "logit_scale", None)
    if not isinstance(param, torch.nn.Parameter) or param.numel() != 1:
        raise ValueError(
            f"temperature_lr: a {policy.family} policy has no learned temperature (a scalar "
            "parameter `logit_scale` that multiplies its logits by exp(logit_scale); the ar and "
            "mgm families have one); set temperature_lr: 0"
        )
    return param.requires_grad_(True)


def plain_steps(policy: Policy, cfg: GSPOConfig) -> dict[torch.nn.Parameter, float]:
    """The parameters :func:`finish_step` steps by plain gradient descent, with their rates: the
    learned temperature with ``temperature_optimizer: sgd`` or ``probe``."""
    if cfg.temperature_lr <= 0 or cfg.temperature_optimizer == "adamw":
        return {}
    return {policy.logit_scale: cfg.temperature_lr}  # type: ignore[attr-defined]


def tie_temperature(policy: Policy, ref: Policy) -> None:
    """Give the KL reference the policy's learned temperature (``logit_scale``), when the
    policy has one that is learned or not 0: the KL then measures how the model's distributions
    changed, not how sharply it samples."""
    scale = getattr(policy, "logit_scale", None)
    if scale is None or not (scale.requires_grad or float(scale.detach()) != 0.0):
        return
    ref_scale = getattr(ref, "logit_scale", None)
    if ref_scale is None:
        raise ValueError(
            f"the KL reference ({ref.family} policy) has no logit_scale to sample at the "
            "policy's learned temperature; use a reference of the policy's own class or beta=0"
        )
    with torch.no_grad():
        ref_scale.copy_(scale)


def _check_same_base(saved: Path, cfg: GSPOConfig) -> None:
    """A resumed run continues its own weights against its own KL reference: another base or
    reference model given now would be reported as if it had been trained from."""
    import yaml

    try:
        before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return
    was = {"model.init_from": (before.get("model") or {}).get("init_from"),
           "reference_model": before.get("reference_model")}  # fmt: skip
    now = {"model.init_from": cfg.model.init_from, "reference_model": cfg.reference_model}
    for key, old in was.items():
        new = now[key]
        same = old == new or (
            old and new and model_path(old).resolve() == model_path(new).resolve()
        )
        if not same:
            raise ValueError(f"{key}: {new} now, but the run in {saved.parent.parent.parent} was "
                             f"started from {old}; continue it with its own, or use another "
                             "output folder")  # fmt: skip
    # the rate is fixed for a run (with adamw, its optimizer group is in the checkpoint)
    started = float(before.get("temperature_lr") or 0)
    if started != cfg.temperature_lr:
        raise ValueError(
            f"temperature_lr: {cfg.temperature_lr:g} now, but the run in "
            f"{saved.parent.parent.parent} was started with {started:g}; a run keeps the "
            "temperature learning rate it started with (continue it with that, or use another "
            "output folder)"
        )
    how = before.get("temperature_optimizer", "adamw")  # runs before the key had adamw
    if started and how != cfg.temperature_optimizer:
        raise ValueError(
            f"temperature_optimizer: {cfg.temperature_optimizer} now, but the run in "
            f"{saved.parent.parent.parent} was started with {how}; a run keeps the "
            f"temperature's optimizer it started with (continue it with "
            f"temperature_optimizer={how}, or use another output folder)"
        )


def train_gspo(
    cfg: GSPOConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    reward: CompositeReward | None = None,
) -> GSPOResult:
    """Run GSPO for ``cfg.max_steps`` rollout steps (or ``cfg.max_minutes``) into ``run_dir``."""
    cfg.check()
    run = Path(run_dir or cfg.output_dir)
    cfg = dataclasses.replace(cfg, output_dir=str(run))
    ckpt = latest_checkpoint(run)
    resume = resume or restarted_by_torchrun()
    if ckpt is not None and not resume:
        raise ValueError(f"{run} already holds checkpoints; pass --resume or use a new output_dir")
    if ckpt is not None:
        _check_same_base(ckpt / "config.yaml", cfg)
    d = init_distributed(cfg.device)
    check_same_start(run, ckpt, d)
    # this process's devices (the saved config keeps them as given)
    device, metric_device = d.device(cfg.device), d.device(cfg.reward.metric_device)
    set_torch_threads(cfg.threads)
    cudnn_tf32 = torch.backends.cudnn.allow_tf32  # restored at the end
    if device.startswith("cuda") and cfg.precision == "fp32":
        # the ratio compares sampled and recomputed log-probs to ~1e-4 (ε = 3e-4): cuDNN's
        # default TF32 convolutions, whose algorithm depends on the batch shape, differ by more
        torch.backends.cudnn.allow_tf32 = False
    seed = d.seed(cfg.seed)
    seed_everything(seed)
    policy = start_policy(cfg.model, ckpt, device, cfg.seed)
    module: torch.nn.Module = policy  # type: ignore[assignment]
    broadcast_weights(module, d)
    module.eval()  # sampling and log-prob recomputation must see the same function
    j = cfg.reward.word_credit
    if j is not None and getattr(policy, "step_seconds", None) is None:
        raise ValueError(
            f"reward.components[{j}].credit: word needs a policy whose rollout steps run along "
            f"the input's time axis (the ar family); a {policy.family} policy's do not"
        )
    temperature = learned_temperature(policy, cfg.temperature_lr)
    if temperature is not None and cfg.entropy_coef and probing(cfg) is None:
        log.warning(
            "entropy_coef %g also acts on the learned temperature, which the KL does not "
            "restrain (its reference samples at the same temperature)",
            cfg.entropy_coef,
        )
    check_sample_options(policy, cfg.sampling.extra, "sampling.extra")
    # rollouts always pass top_k and top_p: a sampler without them fails here, not mid-run
    filters = {"top_k": cfg.sampling.top_k, "top_p": cfg.sampling.top_p}
    check_sample_options(policy, filters, "sampling.top_k / top_p (rollouts pass them)", False)
    ref: Policy | None = None
    if cfg.beta > 0 and base_view_reference(cfg.model, cfg.reference_model, policy):
        ref = BaseView(policy)  # type: ignore[assignment]  # the base, without a second copy
    elif cfg.beta > 0:
        # a fresh model: its initial weights, kept in the run, are the reference
        ref_src = cfg.reference_model or cfg.model.init_from
        ref_src = ref_src or str(_initial_reference(run, policy, ckpt, d))
        ref = init_policy(reference_config(cfg.model, ref_src), device)
        ref_module: torch.nn.Module = ref  # type: ignore[assignment]
        ref_module.eval().requires_grad_(False)
    if reward is None:
        reward = CompositeReward(cfg.reward, num_threads=cfg.threads, device=metric_device)
        reward.load()  # a metric that cannot load fails now, not after the first rollout
    train_ds = PairDataset(
        cfg.data.train, cfg.data, policy.sample_rate, cfg.seed, True, d.rank, d.world_size
    )
    if len(train_ds.order(0)) < cfg.data.batch_size:
        log.warning("data.batch_size %d exceeds the %d training inputs of this process: a "
                    "rollout batch repeats inputs as separate groups", cfg.data.batch_size,
                    len(train_ds.order(0)))  # fmt: skip
    rewarded = reward.columns()
    # held-out metrics get the reward's per-metric threads: a two-thread Whisper there would
    # slow every later generation step (see reward.metric_threads)
    metric_threads = cfg.reward.threads_per_metric(cfg.threads)
    held = (
        HeldOut(cfg.eval, cfg.data, policy.sample_rate, cfg.seed, metric_threads, run, rewarded,
                cfg.sampling.options(), cfg.fuse, metric_device)
        if d.main
        else None
    )  # fmt: skip
    run.mkdir(parents=True, exist_ok=True)
    plain = plain_steps(policy, cfg)
    own_lr = {} if temperature is None or plain else {temperature: cfg.temperature_lr}
    optimizer = make_optimizer(module, cfg.optim, own_lr, plain)
    n_updates = cfg.max_steps * cfg.steps_per_generation * cfg.num_iterations
    scheduler = make_scheduler(optimizer, cfg.optim, n_updates)
    gen = torch.Generator().manual_seed(seed)
    guard = DivergenceGuard()
    unrewarded = 0  # rollout steps in a row without one rewarded sample
    state = TrainerState()
    if ckpt is not None:
        if d.main:
            warn_config_changes(ckpt / "config.yaml", cfg)
        state = load_checkpoint(ckpt, optimizer, scheduler, generators={"sample": gen})
        train_ds.load_state_dict({"epoch": state.epoch, "index": state.index})
        mine = restore_rank_state(state, d, seed, {"sample": gen})
        if mine is not None:
            train_ds.load_state_dict(mine)
        log.info("resumed from %s (step %d)", ckpt, state.step)
    follow_manifests(state, list(cfg.data.train))
    if d.main:  # after the checkpoint loaded: a resume that fails leaves the run's config
        save_config(cfg, run / "config.yaml")
    if held is not None:  # from scratch: a killed earlier run's evaluations are not this run's
        held.start(state.step if ckpt is not None else -1)
    log.info(
        "GSPO (%s) on a %s policy: %d inputs x %s%d samples per step, %d steps, reward = %s",
        cfg.loss,
        policy.family,
        cfg.data.batch_size,
        "" if probing(cfg) is None else "2 temperatures x ",
        cfg.sampling.group_size,
        cfg.max_steps,
        " + ".join(f"{w:g}·{n}" for w, n in zip(reward.weights, reward.names, strict=True)),
    )
    logger = RunLogger(run, resume_step=state.step) if d.main else None
    history: list[dict[str, Any]] = []
    alarms: list[str] = []

    def evaluate(step: int) -> None:
        if held is not None:
            alarms.extend(held.evaluate(policy, step, logger))

    start_time = time.perf_counter()
    elapsed0 = float(state.extra.get("elapsed", 0.0))
    evaluate(0)
    last_ckpt, saved_step = ckpt, state.step
    saved_any = ckpt is not None  # the same on every rank (only rank 0 gets a path back)
    bar = tqdm(
        total=cfg.max_steps, initial=state.step, desc="gspo", unit="step", disable=not progress
    )
    try:
        while state.step < cfg.max_steps:
            over = (
                cfg.max_minutes
                and elapsed0 + time.perf_counter() - start_time > 60 * cfg.max_minutes
            )
            if any_rank(bool(over), d):  # every rank stops at the same step
                log.info("time budget of %.1f min reached at step %d", cfg.max_minutes, state.step)
                break
            t0 = time.perf_counter()
            batch = generate_and_score(policy, train_ds.next_batch(), cfg, reward, gen)
            if batch is None:
                raise DataError("the policy rejected every input of a batch")
            t1 = time.perf_counter()
            upd = update(policy, ref, batch, cfg, optimizer, scheduler, gen, d, guard)
            unrewarded = unrewarded + 1 if not any_rank(bool(batch.valid.any()), d) else 0
            if unrewarded >= UNREWARDED_LIMIT:
                raise ValueError(
                    f"no sample of the last {unrewarded} rollout batches had a usable reward (each "
                    "failed, was not applicable or not finite; see the warnings above), so "
                    "nothing was trained: check reward.components"
                )
            state.step += 1
            state.epoch, state.index = train_ds.epoch, train_ds.index
            stats = {**batch.stats, **upd, "time/update": time.perf_counter() - t1}
            if temperature is not None:  # what the sampling temperature is multiplied by
                stats["temperature_factor"] = math.exp(-float(temperature.detach()))
            stats["time/step"] = time.perf_counter() - t0
            stats = mean_stats_over_ranks(stats, d)  # every rank's samples, not rank 0's
            stats["lr"] = scheduler.get_last_lr()[0]
            history.append({"step": state.step, **stats})
            bar.update(1)
            bar.set_postfix(reward=f"{stats.get('reward', float('nan')):.3f}")
            if logger is not None and state.step % cfg.logging_steps == 0:
                logger.log(stats, step=state.step)
            if cfg.eval.steps and state.step % cfg.eval.steps == 0:
                evaluate(state.step)
            if cfg.save_steps and state.step % cfg.save_steps == 0:
                elapsed = elapsed0 + time.perf_counter() - start_time
                last_ckpt = _save(
                    run, policy, optimizer, scheduler, state, cfg, gen, train_ds, d, elapsed
                )
                saved_step, saved_any = state.step, True
        if saved_step != state.step or not saved_any:
            elapsed = elapsed0 + time.perf_counter() - start_time
            last_ckpt = _save(
                run, policy, optimizer, scheduler, state, cfg, gen, train_ds, d, elapsed
            )
        evaluate(state.step)
    finally:
        bar.close()
        if logger is not None:
            logger.close()
        reward.close()
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    close_distributed(d)
    evals = held.evals if held is not None else {}
    return GSPOResult(run, state.step, last_ckpt, history, evals, alarms)


def _initial_reference(run: Path, policy: Policy, ckpt: Path | None, d: Dist) -> Path:
    """``<run>/reference``: the initial weights of a run from a fresh model, the frozen KL
    reference, written when the run starts so that a resumed run measures its KL against them
    too (not against its checkpoint)."""
    where = run / "reference"
    if ckpt is None:
        if d.main:
            tmp = run / "reference.new"
            shutil.rmtree(tmp, ignore_errors=True)
            policy.save(tmp)
            replace_dir(tmp, where)
        any_rank(False, d)  # the other ranks wait for it
    elif not where.is_dir():
        raise ValueError(
            f"{run} has no reference/ folder with its initial weights (a run from before it was "
            "kept), so its KL reference cannot be restored: set reference_model or beta=0"
        )
    return where


def _save(
    run: Path,
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainerState,
    cfg: GSPOConfig,
    gen: torch.Generator,
    train_ds: PairDataset,
    d: Dist,
    elapsed: float,
) -> Path | None:
    # every rank's sampling RNG and data position go into rank 0's checkpoint
    store_rank_states(state, d, {"rng": rng_state({"sample": gen}), **train_ds.state_dict()})
    if not d.main:
        return None
    state.extra["elapsed"] = elapsed
    return save_checkpoint(
        run, policy, optimizer, scheduler, state, cfg, {"sample": gen}, cfg.save_total_limit
    )
