"""Supervised fine-tuning (SFT) of any :class:`~sealign.models.policy.Policy` on (noisy, clean)
pairs: one explicit loop, nothing hidden.

    batch → policy.condition(noisy), policy.encode_targets(clean) → policy.sft_loss
          → backward → clip → AdamW step → LR schedule (linear warmup, cosine decay)

Every ``logging_steps`` it logs ``train/loss``, ``train/lr``, ``train/grad_norm`` and
``train/seconds_per_step`` (console, ``log.jsonl``, TensorBoard); every ``eval_steps`` the
validation loss ``eval/loss`` and metrics of a few decoded validation utterances
(``eval/<column>``, e.g. ``eval/dnsmos_ovrl``); every ``save_steps`` a checkpoint
(:mod:`sealign.train.checkpoint`). ``resume=True`` continues from the latest checkpoint and
reproduces the losses of an uninterrupted run exactly: weights, optimizer, scheduler, RNGs and
the data position are restored, and the data stream is a pure function of that position.
Under ``torchrun`` it runs data-parallel (:mod:`sealign.train.distributed`): rank r reads
examples r, r + N, ... of each epoch's order, gradients and losses are averaged over the ranks,
rank 0 validates, logs and saves.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm import tqdm

from sealign.audio.io import as_written, write_audio
from sealign.config import save_config, warn_config_changes
from sealign.metrics.base import Metric, Utterance
from sealign.models.lora import (
    LoRAConfig,
    apply_lora,
    check_merged,
    count_trainable,
    load_adapter_state,
)
from sealign.models.policy import FAMILIES, Conditioning, Policy, Targets
from sealign.models.shipped import model_path
from sealign.train.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_adapters,
    load_checkpoint,
    policy_dir,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sealign.train.data import DataConfig, DataError, Example, PairDataset, follow_manifests
from sealign.train.distributed import (
    Dist,
    average_gradients,
    broadcast_weights,
    check_same_start,
    close_distributed,
    init_distributed,
    mean_over_ranks,
    restarted_by_torchrun,
    restore_rank_state,
    seed_everything,
    store_rank_states,
)
from sealign.utils.device import autocast, check_device, check_precision, parse_device
from sealign.utils.logging import RunLogger
from sealign.utils.threads import set_torch_threads

log = logging.getLogger(__name__)
T = TypeVar("T")


# ----------------------------------------------------------------------------------- config


@dataclass
class ModelConfig:
    """Start from a saved policy (``init_from``, whose saved config fields ``config`` may
    replace, e.g. ``dropout``; see :func:`~sealign.models.registry.reconfigure`) or build a new
    one (``family`` + ``codec`` + ``config``)."""

    init_from: str | None = None  # run dir (latest checkpoint), checkpoint dir or policy dir
    family: str | None = None  # one of FAMILIES
    codec: str | None = None  # codec spec, e.g. "world:runs/codec"
    config: dict[str, Any] = field(default_factory=dict)  # the family's model config fields
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # rank > 0: train low-rank adapters

    def check(self, prefix: str = "model.") -> None:
        if self.lora.enabled and not self.init_from:
            raise ValueError(f"{prefix}lora: adapters train on top of a trained policy; set "
                             f"{prefix}init_from")  # fmt: skip
        if self.init_from:
            if self.codec:
                raise ValueError(
                    f"{prefix}init_from: give either init_from or family + codec, not both"
                )
            if not model_path(self.init_from).exists():
                raise ValueError(f"{prefix}init_from: not found: {self.init_from}")
            return
        if self.family not in FAMILIES:
            raise ValueError(
                f"{prefix}family: expected one of {', '.join(FAMILIES)} (or set "
                f"{prefix}init_from), got {self.family!r}"
            )
        if not self.codec:
            raise ValueError(f"{prefix}codec: a codec spec is required to build a new model")
        from sealign.codecs.base import parse_spec

        parse_spec(self.codec)


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``min_lr_ratio * lr`` at ``max_steps``."""

    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.01  # on matrices only (not on norms, biases)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0  # 0 = no clipping (the norm is still logged)

    def check(self, prefix: str = "optim.") -> None:
        for key in ("lr", "eps", "weight_decay", "min_lr_ratio", "max_grad_norm", "betas"):
            values = getattr(self, key)
            if not all(math.isfinite(v) for v in (values if key == "betas" else [values])):
                raise ValueError(f"{prefix}{key} must be finite, got {values}")
        if not self.lr > 0:
            raise ValueError(f"{prefix}lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"{prefix}betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or self.eps <= 0:
            raise ValueError(f"{prefix}weight_decay must be >= 0 and eps > 0")
        if self.warmup_steps < 0:
            raise ValueError(f"{prefix}warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"{prefix}min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_grad_norm < 0:
            raise ValueError(f"{prefix}max_grad_norm must be >= 0, got {self.max_grad_norm}")


@dataclass
class EvalConfig:
    """Validation: loss over the valid manifests, metrics on a few decoded utterances."""

    max_batches: int = 0  # valid-loss batches per evaluation; 0 = the whole valid set
    num_samples: int = 4  # valid utterances sampled, decoded and scored
    temperature: float = 0.3
    metrics: list[str] = field(default_factory=lambda: ["dnsmos"])
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric_device: str = "cpu"  # where metrics with a model run (cpu, cuda, cuda:N)
    save_audio: bool = True  # decoded samples → <run>/samples/step_<N>/ (also without metrics)

    def check(self, prefix: str = "eval.") -> None:
        from sealign.metrics.registry import metric_names

        if self.max_batches < 0 or self.num_samples < 0:
            raise ValueError(f"{prefix}max_batches and {prefix}num_samples must be >= 0")
        if not self.temperature > 0:
            raise ValueError(f"{prefix}temperature must be > 0, got {self.temperature}")
        parse_device(self.metric_device, f"{prefix}metric_device")
        for m in self.metrics:
            if m not in metric_names():
                raise ValueError(
                    f"{prefix}metrics: unknown metric {m!r}; known: {', '.join(metric_names())}"
                )
        unused = sorted(set(self.metric_options) - set(self.metrics))
        if unused:
            raise ValueError(f"{prefix}metric_options: given for unselected metrics {unused}")


@dataclass
class SFTConfig:
    """Settings of ``sealign train`` (supervised fine-tuning)."""

    output_dir: str = "runs/sft"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    max_steps: int = 1000
    # batches (of data.batch_size) whose gradients are summed into each optimizer step: an
    # effective batch of data.batch_size × this, with one batch's activations in memory
    gradient_accumulation_steps: int = 1
    # "bf16": forward passes under bfloat16 autocast (GPUs with bf16 support, recent CPUs);
    # weights, gradients and optimizer state stay float32
    precision: str = "fp32"
    # stop (with a checkpoint) after this step, 0 = at max_steps; the lr schedule still runs to
    # max_steps, so `--resume max_steps=N` afterwards reproduces a run shortened on the way
    stop_at: int = 0
    logging_steps: int = 10
    eval_steps: int = 200  # 0 = only at the end
    save_steps: int = 200  # 0 = only at the end
    save_total_limit: int = 3
    seed: int = 0
    threads: int = 2
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ValueError("output_dir is required")
        for key in ("max_steps", "logging_steps", "threads", "save_total_limit",
                    "gradient_accumulation_steps"):  # fmt: skip
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("eval_steps", "save_steps", "stop_at"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        check_device(self.device)
        check_precision(self.precision)

    def check(self) -> None:
        """Checks that touch the file system (manifests, init checkpoint, codec spec)."""
        self.model.check("model.")
        self.data.check("data.")
        self.optim.check("optim.")
        self.eval.check("eval.")


# --------------------------------------------------------------------------- model and optim


def reference_config(model: ModelConfig, source: str) -> ModelConfig:
    """The frozen reference of a post-training run loaded from ``source``: the model's own config
    overrides apply when it starts from that same checkpoint."""
    same = model.init_from is not None and source == model.init_from
    return ModelConfig(init_from=source, config=dict(model.config) if same else {})


def base_view_reference(model: ModelConfig, reference_model: str | None, policy: Any) -> bool:
    """Whether a post-training run's reference is its ``policy`` with the adapters off
    (:class:`~sealign.models.lora.BaseView`, no second copy; the modules trained in full seen as
    their frozen copies): with LoRA, no other reference model, and no module trained in full
    tied to a layer outside it (then the base is loaded, and the log says why)."""
    from sealign.models.lora import TIED_ATTR, base_is_at_hand

    if not model.lora.enabled or reference_model:
        return False
    if not base_is_at_hand(policy):
        log.info("the reference is the base loaded again: a module in lora.modules_to_save "
                 "shares weights with %s", getattr(policy, TIED_ATTR))  # fmt: skip
        return False
    return True


def init_policy(cfg: ModelConfig, device: str | torch.device = "cpu") -> Policy:
    """A policy from ``init_from`` or a new one of ``family`` over ``codec``."""
    from sealign.models.registry import build_policy, load_policy, reconfigure

    if cfg.init_from:
        policy = reconfigure(load_policy(policy_dir(cfg.init_from)), dict(cfg.config))
        if cfg.family and cfg.family != policy.family:
            raise ValueError(f"model.family: {cfg.family}, but model.init_from "
                             f"{cfg.init_from} holds a {policy.family} policy")  # fmt: skip
    else:
        from sealign.codecs.base import load_codec

        codec = load_codec(cfg.codec)  # type: ignore[arg-type]
        try:
            policy = build_policy(cfg.family, codec, dict(cfg.config))  # type: ignore[arg-type]
        except (TypeError, ValueError) as err:
            raise ValueError(f"model.config: {err}") from err
    return policy.to(device)  # type: ignore[attr-defined]


def start_policy(
    cfg: ModelConfig, ckpt: Path | None, device: str | torch.device, seed: int
) -> Policy:
    """The policy a run trains: ``cfg``'s, or its latest checkpoint ``ckpt``'s weights when it
    resumes. With ``cfg.lora``, the base policy (``init_from``) with adapters drawn from
    ``seed``, replaced by the checkpoint's own when it resumes (its ``policy/`` holds them
    merged, for use; the run goes on from the unmerged parts, exactly)."""
    saved = load_adapters(ckpt) if ckpt is not None else None
    if not cfg.lora.enabled:
        if saved is not None:
            raise ValueError(f"{ckpt} was trained with LoRA adapters: resume with the run's "
                             "model.lora (its config.yaml)")  # fmt: skip
        return init_policy(ModelConfig(init_from=str(ckpt)) if ckpt else cfg, device)
    if ckpt is not None and saved is None:
        raise ValueError(f"{ckpt} was trained without LoRA adapters: resume without model.lora")
    if ckpt is not None:
        _check_same_adapters_base(ckpt, cfg)
    policy = init_policy(cfg, device)
    module: torch.nn.Module = policy  # type: ignore[assignment]
    # the same adapters on every rank without a broadcast (broadcast_weights sends the merged
    # state dict): one base file, A drawn from the run's seed, B zero or the checkpoint's
    n = apply_lora(module, cfg.lora, seed)
    if saved is not None:
        load_adapter_state(module, saved)
        check_merged(module, policy_dir(ckpt))  # type: ignore[arg-type]
    trainable, total = count_trainable(module)
    log.info("LoRA rank %d on %d layers (%s)%s: %.2fM of %.2fM parameters train", cfg.lora.rank,
             n, ", ".join(cfg.lora.targets),
             "".join(f", {m} in full" for m in cfg.lora.modules_to_save),
             trainable / 1e6, total / 1e6)  # fmt: skip
    return policy


def _check_same_adapters_base(ckpt: Path, cfg: ModelConfig) -> None:
    """Adapters resume on the base and with the settings they were trained with."""
    import yaml

    try:
        before = yaml.safe_load((ckpt / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return
    model = before.get("model") or {}
    old_base, old_lora = model.get("init_from"), model.get("lora") or {}
    same_base = old_base == cfg.init_from or (
        old_base and cfg.init_from
        and model_path(old_base).resolve() == model_path(cfg.init_from).resolve()
    )  # fmt: skip
    now, default = dataclasses.asdict(cfg.lora), dataclasses.asdict(LoRAConfig())
    if not same_base or {k: old_lora.get(k, default[k]) for k in now} != now:
        raise ValueError(
            f"{ckpt}: its LoRA adapters were trained on {old_base} with model.lora={old_lora}; "
            f"resume with those (now {cfg.init_from}, {now}), or use another output folder"
        )


def make_optimizer(
    policy: torch.nn.Module,
    cfg: OptimConfig,
    own_lr: dict[torch.nn.Parameter, float] | None = None,
    outside: Iterable[torch.nn.Parameter] = (),
) -> torch.optim.AdamW:
    """AdamW with weight decay on ≥ 2-D parameters only (nanoGPT convention); ``own_lr``:
    parameters trained at their own learning rate, without weight decay, one group each;
    ``outside``: trainable parameters left out (stepped by :func:`finish_step`'s ``plain``)."""
    own = own_lr or {}
    apart = {id(p) for p in (*own, *outside)}
    params = [p for p in policy.parameters() if p.requires_grad and id(p) not in apart]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        *({"params": [p], "lr": lr, "weight_decay": 0.0} for p, lr in own.items()),
    ]
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)


def lr_factor(step: int, warmup: int, max_steps: int, min_ratio: float) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def fn(step: int) -> float:
        return lr_factor(step, cfg.warmup_steps, max_steps, cfg.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


@dataclass
class DivergenceGuard:
    """Ends a run whose updates have been skipped for a non-finite loss or gradient ``limit``
    updates in a row (the weights or the data are broken; going on would only save copies)."""

    limit: int = 25
    streak: int = 0

    def __call__(self, loss_value: float, grad_norm: float) -> None:
        if math.isfinite(loss_value) and math.isfinite(grad_norm):
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= self.limit:
            raise ValueError(
                f"training diverged: {self.streak} updates in a row with a non-finite loss or "
                "gradient; resume from an earlier checkpoint with a lower optim.lr, or check "
                "the model's weights and the data"
            )


def finish_step(
    loss_value: float,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    max_grad_norm: float,
    d: Dist | None = None,
    guard: DivergenceGuard | None = None,
    plain: dict[torch.nn.Parameter, float] | None = None,
) -> tuple[float, float]:
    """One optimizer step once the gradients are in ``params`` (the caller's backward passes,
    accumulated over micro-batches): gradients and loss averaged over the ranks of ``d`` (so
    that every rank takes the same decision and update), clip, AdamW step (skipped, with a
    warning, when the loss or gradient is not finite), LR schedule step. ``plain``: parameters
    of ``params`` outside the optimizer that take a plain gradient step at their own rate
    times the schedule's factor, outside the clipping (its norm is the other parameters'; NaN
    when a ``plain`` gradient is not finite). Returns ``(loss_value, grad_norm)``."""
    if d is not None and d.world_size > 1:
        average_gradients(params, d)
        loss_value = mean_over_ranks({"loss": loss_value}, d)["loss"]
    own = {p: p.grad for p in plain or {}}
    for p in own:
        p.grad = None
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf")))
    if not all(g is None or bool(torch.isfinite(g).all()) for g in own.values()):
        grad_norm = math.nan  # so that the guard counts the skipped update
    if math.isfinite(loss_value) and math.isfinite(grad_norm):
        optimizer.step()
        factor = scheduler.get_last_lr()[0] / scheduler.base_lrs[0]
        with torch.no_grad():
            for p, g in own.items():
                if g is not None:
                    p.sub_(g, alpha=plain[p] * factor)  # type: ignore[index]
    else:
        log.warning("non-finite loss or gradient: update skipped")
    scheduler.step()
    if guard is not None:
        guard(loss_value, grad_norm)
    return loss_value, grad_norm


# ----------------------------------------------------------------------------------- batches


def _keep_working(
    items: list[T], fn: Callable[[list[T]], Any], name: Callable[[T], str]
) -> tuple[list[T], Any]:
    """``fn(items)``; if it raises ``ValueError``, drop the items that fail alone (logged)."""
    try:
        return items, fn(items)
    except ValueError:
        keep = []
        for it in items:
            try:
                fn([it])
                keep.append(it)
            except ValueError as err:
                log.warning("skipping %s: %s", name(it), err)
        return keep, (fn(keep) if keep else None)


def split_targets(t: Targets) -> list[Targets]:
    """One unpadded :class:`Targets` per row (time is the last axis of integer token values,
    axis 1 of float latents, as the protocol defines)."""
    axis = t.values.dim() - 1 if not t.values.is_floating_point() else 1
    out = []
    for i in range(t.values.shape[0]):
        n = int(t.mask[i].sum())
        extra = {k: v[i : i + 1, :n] for k, v in t.extra.items()}
        out.append(Targets(t.values[i : i + 1].narrow(axis, 0, n), t.mask[i : i + 1, :n], extra))
    return out


def collate_targets(rows: Sequence[Targets]) -> Targets:
    """Inverse of :func:`split_targets`: pad with zeros along the time axis."""
    v0 = rows[0].values
    axis = v0.dim() - 1 if not v0.is_floating_point() else 1
    t_max = max(r.mask.shape[1] for r in rows)
    values, masks = [], []
    extra: dict[str, list[torch.Tensor]] = {k: [] for k in rows[0].extra}
    for r in rows:
        pad = t_max - r.mask.shape[1]
        shape = list(r.values.shape)
        shape[axis] = pad
        values.append(torch.cat([r.values, r.values.new_zeros(shape)], dim=axis))
        masks.append(torch.cat([r.mask, r.mask.new_zeros(1, pad)], dim=1))
        for k, v in r.extra.items():
            extra[k].append(torch.cat([v, v.new_zeros(1, pad, *v.shape[2:])], dim=1))
    return Targets(torch.cat(values), torch.cat(masks), {k: torch.cat(v) for k, v in extra.items()})


def enable_analysis_cache(
    policy: Policy, train_ds: PairDataset, valid_ds: PairDataset | None
) -> None:
    """Size the codec's analysis cache for every draw of a ``draw_cycle`` (noisy and clean side).

    A codec without ``set_analysis_cache`` (the neural ones: their encoders run per batch) still
    gets repeated draws, only without the lookup.
    """
    codec = getattr(policy, "codec", None)
    setter = getattr(codec, "set_analysis_cache", None)
    if setter is None:
        log.info("data.draw_cycle: %s has no analysis cache; draws repeat uncached", codec)
        return
    n = 2 * (len(train_ds) * train_ds.cfg.draw_cycle + (len(valid_ds) if valid_ds else 0))
    # WORLD features take ~27 KB per second of audio; whole files are assumed to be ~10 s
    per_item = 27_000 * (train_ds.cfg.crop_seconds or 10.0)
    cap = int(train_ds.cfg.analysis_cache_gb * 1e9 // per_item)
    if n > cap:
        log.warning(
            "data.draw_cycle %d: %d draws need ~%.1f GB of analyses; caching %d only, so most "
            "draws are analysed again (raise data.analysis_cache_gb or lower draw_cycle)",
            train_ds.cfg.draw_cycle, n, n * per_item / 1e9, cap,
        )  # fmt: skip
        n = cap
    setter(n)
    log.info(
        "data.draw_cycle %d: codec analysis cache of %d waveforms (up to ~%.1f GB)",
        train_ds.cfg.draw_cycle, n, n * per_item / 1e9,
    )  # fmt: skip


class TargetEncoder:
    """``policy.encode_targets`` with a per-utterance cache for clean sides that never change
    (whole files, no on-the-fly degradation). With the cache on, every batch goes through
    :func:`split_targets` / :func:`collate_targets`, so results do not depend on what is cached.
    Cached rows are compact copies in CPU memory (a view would keep its whole padded batch
    alive, on the GPU when training there), moved to the batch's device when used.
    """

    def __init__(self, policy: Policy, enabled: bool = True) -> None:
        self.policy, self.enabled = policy, enabled
        self.cache: dict[str, Targets] = {}

    def __call__(self, batch: list[Example]) -> Targets:
        if not self.enabled:
            return self.policy.encode_targets([ex.clean for ex in batch])
        todo = [ex for ex in batch if not (ex.fixed_clean and ex.id in self.cache)]
        fresh: dict[int, Targets] = {}
        device = None
        if todo:
            rows = split_targets(self.policy.encode_targets([ex.clean for ex in todo]))
            device = rows[0].values.device
            for ex, row in zip(todo, rows, strict=True):
                fresh[id(ex)] = row
                if ex.fixed_clean:
                    self.cache[ex.id] = targets_to(row, "cpu", copy=True)
        if device is None:
            device = next(self.policy.parameters()).device  # type: ignore[attr-defined]
        return collate_targets(
            [fresh.get(id(ex)) or targets_to(self.cache[ex.id], device) for ex in batch]
        )


def targets_to(t: Targets, device: torch.device | str, copy: bool = False) -> Targets:
    """``t`` with every tensor on ``device`` (``copy``: always new, compact tensors)."""

    def move(x: torch.Tensor) -> torch.Tensor:
        return x.to(device, copy=True).contiguous() if copy else x.to(device)

    return Targets(move(t.values), move(t.mask), {k: move(v) for k, v in t.extra.items()})


def prepare_batch(
    policy: Policy, batch: list[Example], encode: Callable[[list[Example]], Targets]
) -> tuple[list[Example], Conditioning, Targets] | None:
    """Conditioning and targets of a batch; examples the policy rejects are dropped (logged)."""
    batch, cond = _keep_working(batch, lambda b: policy.condition([e.noisy for e in b]), _eid)
    if not batch:
        return None
    kept, targets = _keep_working(batch, encode, _eid)
    if not kept:
        return None
    if len(kept) != len(batch):
        cond = policy.condition([e.noisy for e in kept])
    return kept, cond, targets


def _eid(ex: Example) -> str:
    return ex.id


# -------------------------------------------------------------------------------- evaluation


def build_eval_metrics(cfg: EvalConfig, threads: int) -> dict[str, Metric]:
    from sealign.metrics.registry import build_metric

    return {
        name: build_metric(
            name,
            num_threads=threads,
            metric_device=cfg.metric_device,
            **cfg.metric_options.get(name, {}),
        )
        for name in cfg.metrics
    }


@torch.no_grad()
def evaluate(
    policy: Policy,
    valid: PairDataset,
    cfg: SFTConfig,
    metrics: dict[str, Metric],
    step: int,
    encode: Callable[[list[Example]], Targets],
    samples_dir: Path | None = None,
) -> dict[str, float]:
    """Validation loss, and metrics of decoded samples (written to ``samples_dir`` when given,
    with or without metrics). Global RNGs are left untouched."""
    module: torch.nn.Module = policy  # type: ignore[assignment]
    was_training = module.training
    module.eval()
    out: dict[str, float] = {}
    saved_rng = rng_state()
    try:
        torch.manual_seed(cfg.seed + 1)  # same draws (masks, noise) at every evaluation
        total, count = 0.0, 0
        limit = cfg.eval.max_batches * cfg.data.batch_size or None
        for batch in valid.iter_batches(limit):
            prepared = prepare_batch(policy, batch, encode)
            if prepared is None:
                continue
            kept, cond, targets = prepared
            total += float(policy.sft_loss(cond, targets)) * len(kept)
            count += len(kept)
        if count:
            out["eval/loss"] = total / count
        if cfg.eval.num_samples and (metrics or samples_dir is not None):
            out.update(_score_samples(policy, valid, cfg, metrics, step, samples_dir))
    finally:
        set_rng_state(saved_rng)
        module.train(was_training)
    return out


def _score_samples(
    policy: Policy,
    valid: PairDataset,
    cfg: SFTConfig,
    metrics: dict[str, Metric],
    step: int,
    samples_dir: Path | None,
) -> dict[str, float]:
    from sealign.eval.score import score_records, summarize_records

    examples = [ex for b in valid.iter_batches(cfg.eval.num_samples) for ex in b]
    examples, cond = _keep_working(examples, lambda b: policy.condition([e.noisy for e in b]), _eid)
    if not examples:
        return {}
    gen = torch.Generator().manual_seed(cfg.seed)
    wavs = policy.decode(policy.sample(cond, temperature=cfg.eval.temperature, generator=gen))
    sr = policy.sample_rate
    utts = [
        Utterance(ex.id, as_written(w, ex.id), sr, reference=ex.clean, text=ex.text)
        for ex, w in zip(examples, wavs, strict=True)
    ]
    if samples_dir is not None:
        for u in utts:
            write_audio(samples_dir / f"step_{step:08d}" / f"{_safe(u.id)}.wav", u.audio, sr)
    return summarize_records(score_records(utts, metrics)) if metrics else {}


def _safe(utt_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in utt_id)[:120] or "utt"


# ------------------------------------------------------------------------------------- train


@dataclass
class SFTResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    history: list[dict[str, Any]]  # records logged by this invocation


def train_sft(
    cfg: SFTConfig, run_dir: str | Path | None = None, resume: bool = False, progress: bool = True
) -> SFTResult:
    """Train ``cfg.model`` on ``cfg.data`` for ``cfg.max_steps`` steps into ``run_dir``
    (default ``cfg.output_dir``); see the module docstring."""
    cfg.check()
    run = Path(run_dir or cfg.output_dir)
    cfg = dataclasses.replace(cfg, output_dir=str(run))  # the saved config names the real run
    ckpt = latest_checkpoint(run)
    resume = resume or restarted_by_torchrun()
    if ckpt is not None and not resume:
        raise ValueError(f"{run} already holds checkpoints; pass --resume or use a new output_dir")
    if resume and ckpt is None:
        log.info("resume: no checkpoint in %s yet, starting from scratch", run)
    d = init_distributed(cfg.device)
    check_same_start(run, ckpt, d)
    if ckpt is not None and d.main:
        warn_config_changes(ckpt / "config.yaml", cfg)
    set_torch_threads(cfg.threads)
    seed = d.seed(cfg.seed)
    seed_everything(seed)
    # weights from the checkpoint (RNGs are restored further down)
    policy = start_policy(cfg.model, ckpt, d.device(cfg.device), cfg.seed)
    module: torch.nn.Module = policy  # type: ignore[assignment]
    broadcast_weights(module, d)
    module.train()
    train_ds = PairDataset(
        cfg.data.train, cfg.data, policy.sample_rate, cfg.seed, True, d.rank, d.world_size
    )
    # rank 0 validates on the whole validation split
    valid_ds = (
        PairDataset(cfg.data.valid, cfg.data, policy.sample_rate, cfg.seed, train=False)
        if cfg.data.valid and d.main
        else None
    )
    metrics = build_eval_metrics(cfg.eval, cfg.threads) if valid_ds is not None else {}
    for m in metrics.values():
        m.load()  # a validation metric that cannot load fails before training, not at step N
    if cfg.data.draw_cycle:
        enable_analysis_cache(policy, train_ds, valid_ds)
    run.mkdir(parents=True, exist_ok=True)  # everything above can fail on a bad config
    optimizer = make_optimizer(module, cfg.optim)
    scheduler = make_scheduler(optimizer, cfg.optim, cfg.max_steps)
    state = TrainerState()
    if ckpt is not None:
        state = load_checkpoint(ckpt, optimizer, scheduler)
        mine = restore_rank_state(state, d, seed)
        train_ds.load_state_dict(mine or {"epoch": state.epoch, "index": state.index})
        log.info("resumed from %s (step %d, epoch %d)", ckpt, state.step, state.epoch)
        if 0 < cfg.stop_at <= state.step:  # its job is done: `--resume max_steps=N` goes on
            log.info("stop_at=%d was reached before this resume: training on to max_steps=%d",
                     cfg.stop_at, cfg.max_steps)  # fmt: skip
            cfg = dataclasses.replace(cfg, stop_at=0)
    follow_manifests(state, [*cfg.data.train, *(cfg.data.valid or [])])
    if d.main:  # after the checkpoint loaded: a resume that fails leaves the run's config
        save_config(cfg, run / "config.yaml")
    n_params = sum(p.numel() for p in module.parameters())
    log.info(
        "SFT %s policy (%.2fM params): %d train / %d valid utterances, %d steps%s",
        policy.family,
        n_params / 1e6,
        len(train_ds),
        len(valid_ds) if valid_ds is not None else 0,
        cfg.max_steps,
        f" on {d.world_size} ranks of {cfg.data.batch_size} examples" if d.world_size > 1 else "",
    )
    encode = TargetEncoder(policy, cfg.data.cache_targets)
    encode_valid = TargetEncoder(policy, cfg.data.cache_targets)
    logger = RunLogger(run, resume_step=state.step) if d.main else None
    history: list[dict[str, Any]] = []
    acc = state.extra.setdefault("window", {"loss": 0.0, "grad_norm": 0.0, "n": 0, "secs": 0.0})
    last_ckpt: Path | None = ckpt
    params = [p for p in module.parameters() if p.requires_grad]
    rejected = 0  # consecutive batches the policy could not use at all
    end = min(cfg.stop_at, cfg.max_steps) if cfg.stop_at else cfg.max_steps
    bar = tqdm(
        total=end, initial=state.step, desc="sft", unit="step", disable=not (progress and d.main)
    )
    try:
        guard = DivergenceGuard()
        while state.step < end:
            t0 = time.perf_counter()
            accum = cfg.gradient_accumulation_steps
            optimizer.zero_grad(set_to_none=True)
            loss_value, done = 0.0, 0
            while done < accum:  # each batch's mean loss weighs 1/accum in the step
                prepared = prepare_batch(policy, train_ds.next_batch(), encode)
                if prepared is None:
                    rejected += 1
                    if rejected > max(10, len(train_ds)):
                        raise DataError(f"the model rejected every example of {rejected} batches")
                    continue
                rejected = 0
                _, cond, targets = prepared
                with autocast(cfg.device, cfg.precision):
                    loss = policy.sft_loss(cond, targets) / accum
                loss.backward()
                loss_value += float(loss.detach())
                done += 1
            lr = scheduler.get_last_lr()[0]
            loss_value, grad_norm = finish_step(
                loss_value, params, optimizer, scheduler, cfg.optim.max_grad_norm, d, guard
            )
            state.step += 1
            state.epoch, state.index = train_ds.epoch, train_ds.index
            acc["loss"] += loss_value
            acc["grad_norm"] += grad_norm
            acc["n"] += 1
            acc["secs"] += time.perf_counter() - t0
            bar.update(1)
            last = state.step == cfg.max_steps
            if state.step % cfg.logging_steps == 0 or last:
                n = acc["n"]
                rec = {
                    "train/loss": acc["loss"] / n,
                    "train/lr": lr,
                    "train/grad_norm": acc["grad_norm"] / n,
                    "train/seconds_per_step": acc["secs"] / n,
                    "train/epoch": state.epoch + state.index / max(1, len(train_ds.order(0))),
                }
                acc.update(loss=0.0, grad_norm=0.0, n=0, secs=0.0)
                if logger is not None:
                    logger.log(rec, step=state.step)
                history.append({"step": state.step, **rec})
                bar.set_postfix(loss=f"{rec['train/loss']:.4f}", lr=f"{lr:.2e}")
            if valid_ds is not None and (
                (cfg.eval_steps and state.step % cfg.eval_steps == 0) or last
            ):
                samples = run / "samples" if cfg.eval.save_audio else None
                rec = evaluate(policy, valid_ds, cfg, metrics, state.step, encode_valid, samples)
                if logger is not None:
                    logger.log(rec, step=state.step)
                history.append({"step": state.step, **rec})
                if rec:
                    log.info("step %d: %s", state.step,
                             ", ".join(f"{k}={v:.4f}" for k, v in rec.items()))  # fmt: skip
                else:
                    log.warning("step %d: no validation example could be used (their skips are "
                                "logged above)", state.step)  # fmt: skip
            if (cfg.save_steps and state.step % cfg.save_steps == 0) or state.step == end:
                # every rank's random state and data position go into rank 0's checkpoint
                store_rank_states(state, d, {"rng": rng_state(), **train_ds.state_dict()})
                if d.main:
                    last_ckpt = save_checkpoint(
                        run, policy, optimizer, scheduler, state, cfg,
                        keep_last=cfg.save_total_limit,
                    )  # fmt: skip
    finally:
        bar.close()
        if logger is not None:
            logger.close()
    close_distributed(d)
    if train_ds.skipped:
        log.info("skipped %d unusable training utterances (reasons logged above)",
                 len(train_ds.skipped))  # fmt: skip
    if train_ds.failed_draws:
        log.info("dropped %d examples whose crop or degradation failed in one epoch (logged "
                 "above)", train_ds.failed_draws)  # fmt: skip
    if d.main:
        log.info("done: step %d, checkpoint %s", state.step, last_ckpt)
    return SFTResult(run, state.step, last_ckpt, history)
