"""DPO on a preference dataset (``sealign prefs``) for any family, and the SFT baselines.

    pairs (input, winner, loser) → noisy features, winner / loser targets, shared noise
      → policy.preference_log_likelihood (AR: sequence log-prob; MGM: masked conditional
        log-prob under a shared mask; FM: −single-step flow-matching error under a shared t and
        noise) → −log σ(β [(ℓ_w − ℓ_w^ref) − (ℓ_l − ℓ_l^ref)]) (+ λ · SFT loss on winners)

Candidates sampled from another family's model (cross-family preference data) are re-encoded
from their audio into this policy's output space. The randomness a family needs (MGM mask, FM t
and noise) is drawn from ``(seed, pair index, draw)`` and shared by winner, loser, policy and
reference, so the reference log-likelihoods can be computed once before training
(``precompute_ref``) and the reference model freed; ``noise_draws`` > 1 gives each pass over the
pairs the next of that many draws. Objectives: ``dpo``; ``sft-gt`` (fine-tune on the clean
references of the same inputs) and ``sft-winner`` (fine-tune on the winners) with the same budget.

Logs (TRL names): ``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``, ``grad_norm``, ``lr``.

Under ``torchrun`` it runs data-parallel (:mod:`sealign.train.distributed`): every rank walks
the same stream of pairs and takes its own ``batch_size`` of each step's pairs, so N ranks
compute what one process accumulating N batches would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sealign.audio.io import load_audio
from sealign.config import load_config, save_config, warn_config_changes
from sealign.models.lora import BaseView
from sealign.models.policy import Conditioning, Policy, Targets
from sealign.models.shipped import model_path
from sealign.prefs.build import (
    SPACE_PROBE,
    PrefsConfig,
    load_targets,
    output_space_probe,
    read_candidates,
    same_output_space,
    warn_unfinished,
)
from sealign.prefs.pairs import GT
from sealign.rl.evaluation import HeldOut, RLEvalConfig
from sealign.train.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    policy_dir,
    rng_state,
    save_checkpoint,
)
from sealign.train.data import DataConfig, follow_manifests
from sealign.train.distributed import (
    broadcast_weights,
    check_same_start,
    close_distributed,
    gather_to_all,
    init_distributed,
    mean_over_ranks,
    restarted_by_torchrun,
    restore_rank_state,
    seed_everything,
    store_rank_states,
)
from sealign.train.sft import (
    DivergenceGuard,
    ModelConfig,
    OptimConfig,
    base_view_reference,
    collate_targets,
    finish_step,
    init_policy,
    make_optimizer,
    make_scheduler,
    reference_config,
    start_policy,
    targets_to,
)
from sealign.utils.device import autocast, check_device, check_precision, parse_device
from sealign.utils.jsonio import write_json
from sealign.utils.logging import RunLogger
from sealign.utils.paths import folder_fingerprint
from sealign.utils.threads import set_torch_threads

log = logging.getLogger(__name__)

OBJECTIVES = ("dpo", "sft-gt", "sft-winner")
# encoded clean targets kept for reuse, least recently used dropped first: encoding (the WORLD
# analysis) costs more than a pass of the model, but every input of a large corpus would not fit
CLEAN_CACHE_BYTES = 1 << 30


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sigmoid DPO loss (mean over pairs) from ``[B]`` log-likelihoods, and its statistics."""
    r_c = chosen - ref_chosen.detach()
    r_l = rejected - ref_rejected.detach()
    loss = -F.logsigmoid(beta * (r_c - r_l)).mean()
    with torch.no_grad():
        stats = {
            "rewards/chosen": float((beta * r_c).mean()),
            "rewards/rejected": float((beta * r_l).mean()),
            "rewards/margins": float((beta * (r_c - r_l)).mean()),
            "rewards/accuracies": float((r_c > r_l).float().mean()),
            "logps/chosen": float(chosen.mean()),
            "logps/rejected": float(rejected.mean()),
        }
    return loss, stats


def _dpo_optim() -> OptimConfig:
    return OptimConfig(lr=1e-5, warmup_steps=10, min_lr_ratio=1.0, weight_decay=0.0)


@dataclass
class DPOConfig:
    """Settings of ``sealign dpo``."""

    output_dir: str = "runs/dpo"
    model: ModelConfig = field(default_factory=ModelConfig)
    family: str | None = None  # if set, the model's family must match
    reference_model: str | None = None  # default: the initial policy
    dataset: str = ""  # a `sealign prefs` folder
    criterion: str = "unanimous"  # which pairs/<criterion>.jsonl to train on
    objective: str = "dpo"  # dpo | sft-gt | sft-winner
    beta: float = 0.1
    sft_weight: float = 0.0  # SFT regularizer on winners (added to the DPO loss)
    precompute_ref: bool = True
    # distinct draws of the family's randomness (FM t and noise, MGM mask) per pair, used in
    # turn, one per pass over the pairs; the reference is precomputed for each
    noise_draws: int = 1
    batch_size: int = 4  # pairs per batch
    # batches whose gradients are summed into each optimizer step (pairs per step: batch_size
    # × this, with one batch's activations in memory)
    gradient_accumulation_steps: int = 1
    precision: str = "fp32"  # "bf16": forward passes under bfloat16 autocast (see SFT)
    optim: OptimConfig = field(default_factory=_dpo_optim)
    eval: RLEvalConfig = field(default_factory=lambda: RLEvalConfig(steps=0))
    eval_temperature: float | None = None
    max_steps: int = 100
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    metric_device: str = "cpu"  # where the held-out metrics run (e.g. cuda; torchrun: per rank)

    def __post_init__(self) -> None:
        check_device(self.device)
        parse_device(self.metric_device, "metric_device")
        check_precision(self.precision)
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"objective: {self.objective!r} unknown; known: {', '.join(OBJECTIVES)}"
            )
        if not 0 < self.beta < math.inf or not 0 <= self.sft_weight < math.inf:
            raise ValueError(f"beta must be a finite number > 0 and sft_weight a finite number "
                             f">= 0, got {self.beta}, {self.sft_weight}")  # fmt: skip
        for key in ("batch_size", "max_steps", "logging_steps", "threads", "save_total_limit",
                    "gradient_accumulation_steps", "noise_draws"):  # fmt: skip
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.save_steps < 0:
            raise ValueError("save_steps must be >= 0")

    def check(self) -> None:
        self.model.check("model.")
        if not self.dataset or not (Path(self.dataset) / "candidates.jsonl").is_file():
            raise ValueError(
                f"dataset: no candidates.jsonl in {self.dataset!r} (run sealign prefs)"
            )
        if self.reference_model and not model_path(self.reference_model).exists():
            raise ValueError(f"reference_model: not found: {self.reference_model}")
        self.optim.check("optim.")
        self.eval.check("eval.")
        if self.eval_temperature is not None and not 0 < self.eval_temperature < math.inf:
            raise ValueError(f"eval_temperature must be a finite number > 0, got "
                             f"{self.eval_temperature}")  # fmt: skip


# -------------------------------------------------------------------------------------- data


@dataclass
class PairItem:
    index: int
    input_id: str
    noisy: np.ndarray
    chosen: Targets
    rejected: Targets


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """The pairs of a ``pairs/<criterion>.jsonl`` file; a damaged line is an error naming it."""
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            p = json.loads(line)
            if not all(isinstance(p.get(k), str) for k in ("input_id", "winner", "loser")):
                raise ValueError("needs string input_id, winner and loser")
            if p["winner"] == p["loser"]:
                raise ValueError("its winner is its loser")
        except (ValueError, AttributeError) as err:
            raise ValueError(f"{path}:{n}: not a pair record ({err})") from None
        pairs.append(p)
    return pairs


class PairData:
    """The pairs of one criterion with their inputs and stored targets."""

    def __init__(self, cfg: DPOConfig, policy: Policy) -> None:
        root = Path(cfg.dataset)
        self.root, self.policy = root, policy
        warn_unfinished(root)
        recs = read_candidates(root)
        self.cands = {}
        for r in recs:
            if not (isinstance(r, dict) and all(isinstance(r.get(k), str)
                    for k in ("input_id", "cand_id", "noisy"))):  # fmt: skip
                raise ValueError(f"{root}/candidates.jsonl: a record without string input_id, "
                                 f"cand_id and noisy: {str(r)[:120]}")  # fmt: skip
            key = (r["input_id"], r["cand_id"])
            if key in self.cands and self.cands[key] != r:
                raise ValueError(f"{root}/candidates.jsonl: two different records of candidate "
                                 f"{key[0]}/{key[1]}")  # fmt: skip
            self.cands[key] = r
        self.inputs = {r["input_id"]: r for r in recs}
        path = root / "pairs" / f"{cfg.criterion.replace(':', '_')}.jsonl"
        if not path.is_file():
            from sealign.metrics.registry import build_metric
            from sealign.prefs.build import (
                pair_dataset,
                require_pairs,
                settings_fingerprints,
                stale_scores,
            )

            pcfg = load_config(PrefsConfig, root / "config.yaml", [])
            metrics = {m: build_metric(m, **pcfg.metric_options.get(m, {})) for m in pcfg.metrics}
            stale = stale_scores(recs, settings_fingerprints(metrics))
            if pcfg.rescore and any(stale.values()):
                counts = ", ".join(f"{n} ({len(i)})" for n, i in stale.items() if i)
                raise ValueError(
                    f"{root}: forming {cfg.criterion} pairs needs scores of the dataset's current "
                    f"metric settings, and those of {counts} candidates were computed otherwise "
                    f"(another version or settings, or before settings were recorded); run "
                    f"`sealign prefs --output {root} --repair` first, which scores them again"
                )
            require_pairs(pair_dataset(pcfg, metrics, cfg.criterion))
        self.pairs_path = path
        self.pairs = read_pairs(path)
        missing = [
            (p["input_id"], c)
            for p in self.pairs
            for c in (p["winner"], p["loser"])
            if c != GT and (p["input_id"], c) not in self.cands
        ]
        if missing:
            raise ValueError(
                f"{path}: {len(missing)} pair members have no candidate record in "
                f"{root / 'candidates.jsonl'} (first: {missing[0]}); the dataset is damaged: "
                "re-run `sealign prefs` on it (it redoes inputs whose records are missing and "
                "forms the pairs again)"
            )
        if cfg.objective == "sft-gt":  # one item per input with a reference
            self.pairs = [
                {"input_id": i, "winner": GT, "loser": GT}
                for i in sorted({p["input_id"] for p in self.pairs})
                if self.inputs[i].get("reference")
            ]
        if not self.pairs:
            others = sorted(f"{f.stem} ({sum(1 for line in f.open() if line.strip())})"
                            for f in path.parent.glob("*.jsonl") if f != path)  # fmt: skip
            raise ValueError(
                f"{path}: no pairs to train on (criterion {cfg.criterion}); other criteria "
                f"formed: {', '.join(others) or 'none yet'}. Give criterion=weighted or "
                "single:<column> (or more candidates per input: sealign prefs --n)"
            )
        self._clean: OrderedDict[str, tuple[Targets, int]] = OrderedDict()
        self._clean_bytes = 0
        # candidates of this family but another codec (or config) are re-encoded like those of
        # another family: their stored targets are not in this policy's output space
        self.foreign_space = False
        probe = root / SPACE_PROBE
        if probe.is_file():
            with np.load(probe) as stored:
                self.foreign_space = not same_output_space(
                    stored["targets"], output_space_probe(policy)
                )
            if self.foreign_space:
                log.warning("%s was sampled by a model with another output space (codec) than "
                            "this policy's; its candidates are encoded again from their audio",
                            root)  # fmt: skip

    def __len__(self) -> int:
        return len(self.pairs)

    def targets(self, input_id: str, cand: str) -> Targets:
        if cand != GT:
            rec = self.cands[(input_id, cand)]
            if self.foreign_space or rec.get("family", self.policy.family) != self.policy.family:
                # cross-family data: the candidate's audio in this family's output space
                audio, _ = load_audio(self.root / rec["audio"], self.policy.sample_rate)
                return self.policy.encode_targets([audio])
            t = load_targets(self.root, rec)
            dev = self.policy_device
            return Targets(t.values.to(dev), t.mask.to(dev))
        if input_id in self._clean:
            self._clean.move_to_end(input_id)
            return targets_to(self._clean[input_id][0], self.policy_device)
        clean, _ = load_audio(self.inputs[input_id]["reference"], self.policy.sample_rate)
        # kept in host memory: a device would hold every input's targets for the run
        t = targets_to(self.policy.encode_targets([clean]), "cpu", True)
        size = sum(x.nbytes for x in (t.values, t.mask, *t.extra.values()))
        self._clean[input_id] = (t, size)
        self._clean_bytes += size
        while self._clean_bytes > CLEAN_CACHE_BYTES and len(self._clean) > 1:
            self._clean_bytes -= self._clean.popitem(last=False)[1][1]
        return targets_to(t, self.policy_device)

    @property
    def policy_device(self) -> torch.device:
        return next(self.policy.parameters()).device  # type: ignore[attr-defined]

    def item(self, index: int) -> PairItem:
        p = self.pairs[index]
        noisy, _ = load_audio(self.inputs[p["input_id"]]["noisy"], self.policy.sample_rate)
        return PairItem(
            index, p["input_id"], noisy,
            self.targets(p["input_id"], p["winner"]), self.targets(p["input_id"], p["loser"]),
        )  # fmt: skip


def _collate_noise(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack per-pair noise tensors, zero-padding every non-batch dimension to the max."""
    out = {}
    for key in items[0] if items else []:
        ts = [d[key] for d in items]
        shape = [max(t.shape[i] for t in ts) for i in range(1, ts[0].dim())]
        padded = []
        for t in ts:
            pad = []
            for i in reversed(range(1, t.dim())):
                pad += [0, shape[i - 1] - t.shape[i]]
            padded.append(F.pad(t, pad) if pad else t)
        out[key] = torch.cat(padded)
    return out


def pair_noise(policy: Policy, item: PairItem, seed: int, draw: int = 0) -> dict[str, torch.Tensor]:
    """The randomness of ``item``'s ``draw``-th use, from ``(seed, pair index, draw)`` only."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + item.index + draw * 1_000_000_007)
    return policy.preference_noise(item.chosen, gen)


@dataclass
class Batch:
    items: list[PairItem]
    cond: Conditioning
    chosen: Targets
    rejected: Targets
    noise: dict[str, torch.Tensor]


def make_batch(
    policy: Policy,
    items: list[PairItem],
    seed: int,
    draws: list[int] | None = None,
    cond: Conditioning | None = None,
) -> Batch:
    """The batch of ``items`` with the noise of ``draws`` (default: draw 0 for each);
    ``cond``: the items' conditioning when already computed."""
    if cond is None:
        cond = policy.condition([it.noisy for it in items])
    draws = draws or [0] * len(items)
    noise = _collate_noise(
        [pair_noise(policy, it, seed, d) for it, d in zip(items, draws, strict=True)]
    )
    return Batch(
        items,
        cond,
        collate_targets([it.chosen for it in items]),
        collate_targets([it.rejected for it in items]),
        noise,
    )


@torch.no_grad()
def reference_log_likelihoods(
    ref: Policy,
    data: PairData,
    seed: int,
    batch_size: int,
    draws: int = 1,
    indices: Sequence[int] | None = None,
    progress: bool = True,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict[int, list[tuple[float, float]]]:
    """``{pair index: [(winner, loser) reference log-likelihood per draw]}`` for the pairs
    ``indices`` (default: all), computed under the training's ``precision`` (so that at step
    0, with equal weights, the policy's log-likelihoods equal these)."""
    todo = list(range(len(data)) if indices is None else indices)
    out: dict[int, list[tuple[float, float]]] = {}
    starts = range(0, len(todo), batch_size)
    for start in tqdm(starts, desc="reference", unit="batch", disable=not progress):
        items = [data.item(i) for i in todo[start : start + batch_size]]
        cond = ref.condition([it.noisy for it in items])
        for d in range(draws):
            b = make_batch(ref, items, seed, [d] * len(items), cond)
            with autocast(device, precision):
                lw = ref.preference_log_likelihood(b.cond, b.chosen, b.noise).float()
                ll = ref.preference_log_likelihood(b.cond, b.rejected, b.noise).float()
            for it, w, l_ in zip(items, lw.tolist(), ll.tolist(), strict=True):
                out.setdefault(it.index, []).append((w, l_))
    return out


def _reference_key(cfg: DPOConfig, data: PairData, ref: ModelConfig) -> str:
    """What the reference log-likelihoods depend on: the pairs (by content), the dataset and
    how its candidates are read, the reference model (its files' sizes and times) and config,
    and the noise, batching and precision they were computed with."""
    parts = [str(Path(cfg.dataset).resolve()), cfg.criterion, cfg.objective, data.pairs,
             data.foreign_space, *folder_fingerprint(policy_dir(ref.init_from or "")),
             ref.config, cfg.seed, cfg.batch_size, cfg.precision]  # fmt: skip
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _read_reference_cache(
    path: Path, draws: int, key: str
) -> dict[int, list[tuple[float, float]]] | None:
    """The cached reference log-likelihoods if they were computed for ``key`` (see
    :func:`_reference_key`) and cover ``draws`` draws; None otherwise (computed again)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("key") != key:
            return None
        out = {int(k): [tuple(x) for x in v] for k, v in raw["values"].items()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None  # missing, damaged, or from before caches were keyed
    return out if all(len(v) >= draws for v in out.values()) else None


# ----------------------------------------------------------------------------------- trainer


@dataclass
class DPOResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    history: list[dict[str, Any]]
    evals: dict[int, list[dict[str, Any]]]


def train_dpo(
    cfg: DPOConfig, run_dir: str | Path | None = None, resume: bool = False, progress: bool = True
) -> DPOResult:
    """Train ``cfg.objective`` on the pairs of ``cfg.criterion`` for ``cfg.max_steps`` steps."""
    cfg.check()
    run = Path(run_dir or cfg.output_dir)
    cfg = dataclasses.replace(cfg, output_dir=str(run))
    ckpt = latest_checkpoint(run)
    resume = resume or restarted_by_torchrun()
    if ckpt is not None and not resume:
        raise ValueError(f"{run} already holds checkpoints; pass --resume or use a new output_dir")
    d = init_distributed(cfg.device)
    check_same_start(run, ckpt, d)
    device = d.device(cfg.device)
    set_torch_threads(cfg.threads)
    seed = d.seed(cfg.seed)
    seed_everything(seed)
    policy = start_policy(cfg.model, ckpt, device, cfg.seed)
    if cfg.family and policy.family != cfg.family:
        raise ValueError(f"family: the model is {policy.family!r}, not {cfg.family!r}")
    module: torch.nn.Module = policy  # type: ignore[assignment]
    broadcast_weights(module, d)
    data = PairData(cfg, policy)
    run.mkdir(parents=True, exist_ok=True)
    ref_ll: dict[int, list[tuple[float, float]]] = {}
    ref: Policy | None = None
    if cfg.objective == "dpo":
        ref_path = cfg.reference_model or cfg.model.init_from
        if ref_path is None:
            raise ValueError("model.init_from or reference_model is required for DPO")
        cache = run / "reference_loglik.json"
        ref_cfg = reference_config(cfg.model, ref_path)
        key = _reference_key(cfg, data, ref_cfg)
        cached = _read_reference_cache(cache, cfg.noise_draws, key) if cfg.precompute_ref else None
        if cached is not None:
            ref_ll = cached
        else:
            if base_view_reference(cfg.model, cfg.reference_model, policy):
                module.eval()  # as a loaded reference computes (dropout off)
                ref = BaseView(policy)  # type: ignore[assignment]  # the base, no second copy
            else:
                ref = init_policy(ref_cfg, device)
                if ref.family != policy.family or not same_output_space(
                    output_space_probe(ref), output_space_probe(policy)
                ):
                    raise ValueError(f"reference model {ref_path}: its output space "
                                     f"({ref.family}, codec) is not the policy's")  # fmt: skip
                ref_module: torch.nn.Module = ref  # type: ignore[assignment]
                ref_module.eval().requires_grad_(False)
            if cfg.precompute_ref:  # each rank computes a share of the pairs
                mine = reference_log_likelihoods(
                    ref, data, cfg.seed, cfg.batch_size, cfg.noise_draws,
                    range(d.rank, len(data), d.world_size), progress and d.main,
                    device, cfg.precision,
                )  # fmt: skip
                ref_ll = {k: v for part in gather_to_all(mine, d) for k, v in part.items()}
                if d.main:
                    write_json(cache, {"key": key, "values": ref_ll})
                ref = None  # freed: only the numbers are needed
    optimizer = make_optimizer(module, cfg.optim)
    scheduler = make_scheduler(optimizer, cfg.optim, cfg.max_steps)
    state = TrainerState()
    if ckpt is not None:
        if d.main:
            warn_config_changes(ckpt / "config.yaml", cfg)
        state = load_checkpoint(ckpt, optimizer, scheduler)
        restore_rank_state(state, d, seed)  # dropout of the SFT objectives
        log.info("resumed from %s (step %d)", ckpt, state.step)
    follow_manifests(state, [str(data.pairs_path)])  # pairs formed again since: warned
    if d.main:  # after the checkpoint loaded: a resume that fails leaves the run's config
        save_config(cfg, run / "config.yaml")
    eval_cfg = cfg.eval
    if cfg.eval_temperature is not None:
        eval_cfg = dataclasses.replace(eval_cfg, temperature=cfg.eval_temperature)
    held = (
        HeldOut(eval_cfg, DataConfig(), policy.sample_rate, cfg.seed, cfg.threads, run,
                sample_options={}, device=d.device(cfg.metric_device))
        if d.main
        else None
    )  # fmt: skip
    if held is not None:  # evaluations after the checkpoint (all, from scratch) are run again
        held.start(state.step if ckpt is not None else -1)
    log.info(
        "%s on %d %s pairs (%s policy), %d steps of %d pairs",
        cfg.objective, len(data), cfg.criterion, policy.family, cfg.max_steps,
        cfg.batch_size * d.world_size,
    )  # fmt: skip
    logger = RunLogger(run, resume_step=state.step) if d.main else None
    history: list[dict[str, Any]] = []
    params = [p for p in module.parameters() if p.requires_grad]

    def batch_loss() -> tuple[torch.Tensor, dict[str, float]]:
        """Draw the next batch of pairs and return its loss (and statistics). Every rank walks
        the same stream of pairs and keeps its own consecutive share of batch_size pairs."""
        idx, draws = [], []
        while len(idx) < cfg.batch_size * d.world_size:
            order = np.random.default_rng([cfg.seed, state.epoch]).permutation(len(data))
            if state.index >= len(order):
                state.epoch, state.index = state.epoch + 1, 0
                continue
            idx.append(int(order[state.index]))
            draws.append(state.epoch % cfg.noise_draws)
            state.index += 1
        share = slice(d.rank * cfg.batch_size, (d.rank + 1) * cfg.batch_size)
        idx, draws = idx[share], draws[share]
        # features outside autocast, as for the reference log-likelihoods (same inputs)
        batch = make_batch(policy, [data.item(i) for i in idx], cfg.seed, draws)
        module.train(cfg.objective != "dpo")  # dropout only for the SFT objectives
        with autocast(cfg.device, cfg.precision):
            loss, stats = pair_loss(batch, idx, draws)
        module.eval()
        return loss, stats

    def pair_loss(batch: Any, idx: list[int], draws: list[int]) -> tuple[torch.Tensor, dict]:
        stats: dict[str, float] = {}
        if cfg.objective == "dpo":
            lw = policy.preference_log_likelihood(batch.cond, batch.chosen, batch.noise)
            ll = policy.preference_log_likelihood(batch.cond, batch.rejected, batch.noise)
            if ref is not None:
                with torch.no_grad():
                    rw = ref.preference_log_likelihood(batch.cond, batch.chosen, batch.noise)
                    rl = ref.preference_log_likelihood(batch.cond, batch.rejected, batch.noise)
            else:
                ref_pairs = [ref_ll[i][d] for i, d in zip(idx, draws, strict=True)]
                rw = torch.tensor([w for w, _ in ref_pairs], device=lw.device)
                rl = torch.tensor([l_ for _, l_ in ref_pairs], device=lw.device)
            loss, stats = dpo_loss(lw, ll, rw, rl, cfg.beta)
            if cfg.sft_weight:
                sft = policy.sft_loss(batch.cond, batch.chosen)
                stats["sft_loss"] = float(sft.detach())
                loss = loss + cfg.sft_weight * sft
        else:
            loss = policy.sft_loss(batch.cond, batch.chosen)
        return loss, stats

    def evaluate(step: int) -> None:
        if held is not None:
            held.evaluate(policy, step, logger)

    def save() -> Path | None:
        store_rank_states(state, d, {"rng": rng_state()})
        if not d.main:
            return None
        return save_checkpoint(
            run, policy, optimizer, scheduler, state, cfg, None, cfg.save_total_limit
        )

    evaluate(0)
    last_ckpt, saved_step = ckpt, state.step
    saved_any = ckpt is not None  # the same on every rank (only rank 0 gets a path back)
    bar = tqdm(
        total=cfg.max_steps,
        initial=state.step,
        desc=cfg.objective,
        disable=not (progress and d.main),
    )
    try:
        guard = DivergenceGuard()
        while state.step < cfg.max_steps:
            t0 = time.perf_counter()
            accum = cfg.gradient_accumulation_steps
            optimizer.zero_grad(set_to_none=True)
            loss_value, stats = 0.0, {}
            for _ in range(accum):  # each batch's mean loss weighs 1/accum in the step
                loss, part = batch_loss()
                (loss / accum).backward()
                loss_value += float(loss.detach()) / accum
                for key, v in part.items():
                    stats[key] = stats.get(key, 0.0) + v / accum
            lr = scheduler.get_last_lr()[0]
            loss_value, grad_norm = finish_step(
                loss_value, params, optimizer, scheduler, cfg.optim.max_grad_norm, d, guard
            )
            state.step += 1
            stats = mean_over_ranks(stats, d)
            stats.update(loss=loss_value, grad_norm=grad_norm, lr=lr)
            stats["time/step"] = time.perf_counter() - t0
            history.append({"step": state.step, **stats})
            bar.update(1)
            if logger is not None and state.step % cfg.logging_steps == 0:
                logger.log(stats, step=state.step)
            if cfg.eval.steps and state.step % cfg.eval.steps == 0:
                evaluate(state.step)
            if cfg.save_steps and state.step % cfg.save_steps == 0:
                last_ckpt, saved_step, saved_any = save(), state.step, True
        if saved_step != state.step or not saved_any:
            last_ckpt = save()
        evaluate(state.step)
    finally:
        bar.close()
        if logger is not None:
            logger.close()
    close_distributed(d)
    return DPOResult(run, state.step, last_ckpt, history, held.evals if held else {})
