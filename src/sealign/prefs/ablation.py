"""The GenSR-Pref ablation for one model family, with one command.

From a base policy and its preference dataset (``sealign prefs``), with the same budget
(``max_steps`` × ``batch_size``) for every arm:

- ``multi-metric``: DPO on unanimous pairs;
- ``single:<column>``: DPO on each single-metric criterion;
- ``gt-winner``: DPO with the clean reference as the fixed winner;
- ``sft-gt`` / ``sft-winner``: supervised fine-tuning on the references / on unanimous winners;
- ``cross-family`` (optional): DPO on unanimous pairs sampled from another family's model.

Every arm and the base are evaluated on the test manifest (mean ± 95% CI, paired bootstrap CI of
the difference to the base). The preference-vector analysis reports the cosine similarity of the
parameter updates ``θ_arm − θ_base`` between arms: arms whose data push the model the same way
have similar update directions (GenSR-Pref explains why in-family data works best with it).
Finished arms are reused when the command is run again.
"""

from __future__ import annotations

import gc
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from sealign.config import config_changes, dump_config, load_config
from sealign.data.manifest import Entry, read_manifest
from sealign.eval.score import ScoreConfig, build_metrics, load_metrics, score_entries
from sealign.eval.tables import compare_stats, compare_table, diff_table
from sealign.infer.enhance import enhance_files
from sealign.models.shipped import model_path
from sealign.prefs.build import PrefsConfig
from sealign.rl.dpo import DPOConfig, train_dpo
from sealign.train.checkpoint import latest_checkpoint, load_checkpoint, policy_dir
from sealign.train.data import manifest_hashes
from sealign.train.sft import ModelConfig, OptimConfig
from sealign.utils.device import check_device, parse_device
from sealign.utils.jsonio import write_json, write_text
from sealign.utils.threads import set_torch_threads

log = logging.getLogger(__name__)


def _ablation_optim() -> OptimConfig:
    return OptimConfig(lr=1e-5, warmup_steps=5, min_lr_ratio=1.0, weight_decay=0.0)


@dataclass
class AblationConfig:
    """Settings of ``sealign pref-ablation``."""

    model: str = ""  # base policy
    family: str | None = None  # checked against the model
    dataset: str = ""  # preference dataset of the base model's family
    cross_dataset: str | None = None  # optional: pairs sampled by another family's model
    test: str = ""  # test manifest (audio = noisy, reference, text)
    output: str = ""
    arms: list[str] = field(default_factory=list)  # default: every arm (see the module doc)
    max_steps: int = 50
    batch_size: int = 4
    beta: float = 0.1
    noise_draws: int = 1  # DPO's draws of the family's randomness per pair (DPOConfig)
    optim: OptimConfig = field(default_factory=_ablation_optim)
    metrics: list[str] = field(
        default_factory=lambda: ["dnsmos", "distillmos", "speechbertscore", "spk_sim", "wer"]
    )
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric_device: str = "cpu"  # where metrics with a model run (cpu, cuda, cuda:N)
    device: str = "cpu"  # where the arms train and the test split is enhanced
    test_limit: int = 0
    temperature: float = 1.0
    sample_options: dict[str, Any] = field(default_factory=dict)  # e.g. {top_k: 50}
    n_boot: int = 2000
    seed: int = 0
    threads: int = 2

    def check(self) -> None:
        for key in ("model", "dataset", "test"):
            if not getattr(self, key) or not model_path(getattr(self, key)).exists():
                raise ValueError(f"{key}: not found: {getattr(self, key)!r}")
        if self.cross_dataset and not Path(self.cross_dataset).exists():
            raise ValueError(f"cross_dataset: not found: {self.cross_dataset}")
        if not self.output:
            raise ValueError("output is required")
        if self.test_limit < 0 or self.n_boot < 100:
            raise ValueError(f"test_limit must be >= 0 and n_boot >= 100, got {self.test_limit} "
                             f"and {self.n_boot}")  # fmt: skip
        if not Path(self.test).is_file():
            raise ValueError(f"test: {self.test} is not a manifest file")
        parse_device(self.metric_device, "metric_device")
        check_device(self.device)
        if not 0 < self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        known = set(self.default_arms())
        for arm in self.arms:
            if arm not in known:
                raise ValueError(f"arms: unknown arm {arm!r}; known: {', '.join(sorted(known))}")
        arm_config(self, "multi-metric", Path(self.output))  # DPO's own checks (beta, steps...)

    def default_arms(self) -> list[str]:
        pcfg = load_config(PrefsConfig, Path(self.dataset) / "config.yaml", [])
        arms = ["multi-metric", *[f"single:{c}" for c in pcfg.columns], "gt-winner"]
        arms += ["sft-gt", "sft-winner"]
        if self.cross_dataset:
            arms.append("cross-family")
        return arms


def arm_config(cfg: AblationConfig, arm: str, out: Path) -> DPOConfig:
    """The :class:`DPOConfig` of one arm."""
    criterion, objective, dataset = "unanimous", "dpo", cfg.dataset
    if arm.startswith("single:") or arm == "gt-winner":
        criterion = arm
    elif arm in ("sft-gt", "sft-winner"):
        objective = arm
    elif arm == "cross-family":
        dataset = cfg.cross_dataset or ""
    return DPOConfig(
        output_dir=str(out / "arms" / arm.replace(":", "_")),
        model=ModelConfig(init_from=cfg.model),
        family=cfg.family,
        dataset=dataset,
        criterion=criterion,
        objective=objective,
        beta=cfg.beta,
        noise_draws=cfg.noise_draws,
        batch_size=cfg.batch_size,
        optim=cfg.optim,
        max_steps=cfg.max_steps,
        save_steps=0,
        seed=cfg.seed,
        threads=cfg.threads,
        device=cfg.device,
    )


def _flat(path: str | Path) -> torch.Tensor:
    from sealign.models.registry import load_policy

    module: Any = load_policy(policy_dir(path))
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def update_cosines(base: str, arms: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Cosine similarity of the parameter updates of every pair of arms."""
    theta0 = _flat(base).double()  # float32 sums of millions of terms drift by ~1e-6
    deltas = {a: _flat(p).double() - theta0 for a, p in arms.items()}
    out: dict[str, dict[str, float]] = {}
    for a, da in deltas.items():
        out[a] = {}
        for b, db in deltas.items():
            denom = float(da.norm() * db.norm())
            out[a][b] = float(da @ db) / denom if denom > 0 else float("nan")
    return out


def cosine_table(cos: dict[str, dict[str, float]]) -> str:
    names = list(cos)
    lines = ["| cos(Δθ) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for a in names:
        lines.append(f"| {a} | " + " | ".join(f"{cos[a][b]:+.2f}" for b in names) + " |")
    return "\n".join(lines)


# settings an arm may be continued with (more steps: it resumes) or run elsewhere with
_PER_PROCESS_KEYS = frozenset({"threads", "device", "metric_device", "progress", "max_steps"})


def run_ablation(cfg: AblationConfig) -> dict[str, Any]:
    """Train every arm (reusing finished ones), evaluate, and write ``results.{md,json}``."""
    cfg.check()
    from sealign.models.policy import check_sample_options
    from sealign.models.registry import load_policy

    # the test split's sampling options must suit the model before any arm trains
    check_sample_options(load_policy(policy_dir(cfg.model)), cfg.sample_options, "sample_options")
    # the evaluation's metrics first: an unknown one or a device this machine lacks fails now
    score_cfg = ScoreConfig(
        metrics=list(cfg.metrics),
        metric_options=dict(cfg.metric_options),
        metric_device=cfg.metric_device,
        threads=cfg.threads,
    )
    metrics = build_metrics(score_cfg)
    load_metrics(metrics)  # one that cannot load fails before any arm is trained
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    arms = cfg.arms or cfg.default_arms()
    trained: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    set_torch_threads(cfg.threads)  # also when every arm is reused (sampling depends on it)
    for arm in arms:
        dcfg = arm_config(cfg, arm, out)
        ckpt = latest_checkpoint(dcfg.output_dir)
        if ckpt is not None:  # an arm of another ablation would be compared as this one's
            changed = config_changes(
                yaml.safe_load((ckpt / "config.yaml").read_text(encoding="utf-8")) or {},
                yaml.safe_load(dump_config(dcfg)), _PER_PROCESS_KEYS,
            )  # fmt: skip
            if int(ckpt.name[5:]) > cfg.max_steps:
                changed.append(f"{int(ckpt.name[5:])} steps trained, max_steps {cfg.max_steps}")
            trained_on = load_checkpoint(ckpt, restore_rng=False).extra.get("manifests") or {}
            pairs = Path(dcfg.dataset) / "pairs" / f"{dcfg.criterion.replace(':', '_')}.jsonl"
            if trained_on and trained_on != manifest_hashes([str(pairs)]):
                changed.append(f"its pairs ({pairs.name}) were formed again since")
            if changed:
                raise ValueError(f"arm {arm} in {dcfg.output_dir} was trained with other "
                                 f"settings ({'; '.join(changed[:4])}); use another output "
                                 "folder")  # fmt: skip
        if ckpt is not None and int(ckpt.name[5:]) >= cfg.max_steps:
            trained[arm] = ckpt
            continue
        log.info("arm %s: %s on %s", arm, dcfg.objective, dcfg.criterion)
        try:
            res = train_dpo(dcfg, resume=ckpt is not None)
        except ValueError as err:  # e.g. a criterion without pairs: the arm is reported, not fatal
            log.warning("arm %s skipped: %s", arm, err)
            skipped[arm] = str(err)
            continue
        trained[arm] = res.checkpoint  # type: ignore[assignment]
        gc.collect()
    if not trained:
        raise ValueError(
            "no arm could be trained: " + "; ".join(f"{a}: {why}" for a, why in skipped.items())
        )
    entries = read_manifest(cfg.test)
    if cfg.test_limit:
        entries = entries[: cfg.test_limit]
    systems_entries: dict[str, list[Entry]] = {}
    from sealign.models.registry import load_policy

    for name, path in {"base": model_path(cfg.model), **trained}.items():
        log.info("enhancing the test set with %s (%d utterances)", name, len(entries))
        policy = load_policy(policy_dir(path), map_location=cfg.device)
        res = enhance_files(
            policy, entries, out / "enhanced" / name.replace(":", "_"), batch_size=8,
            chunk_seconds=0.0, temperature=cfg.temperature, seed=cfg.seed, progress=False,
            sample_options=cfg.sample_options,
        )  # fmt: skip
        systems_entries[name] = res.entries
        del policy
    systems = {
        s: score_entries(
            e, score_cfg, out / "scores" / f"{s.replace(':', '_')}.jsonl", metrics=metrics
        )
        for s, e in systems_entries.items()
    }
    infos = {n: m.info for n, m in metrics.items()}
    names = list(trained)
    stats = compare_stats(systems, infos, names, cfg.n_boot, cfg.seed, baseline="base")
    cos = update_cosines(cfg.model, trained) if trained else {}
    text = (
        f"{compare_table(systems, infos)}\n\nPaired difference to the base (bootstrap 95% CI):\n\n"
        f"{diff_table(stats, names, baseline='base')}\n\n"
        f"Preference vectors: cosine similarity of the parameter updates θ_arm − θ_base:\n\n"
        f"{cosine_table(cos) if cos else '(no arm trained)'}\n"
    )
    if skipped:
        text += (
            "\nSkipped arms:\n" + "\n".join(f"- {a}: {why}" for a, why in skipped.items()) + "\n"
        )
    write_text(out / "results.md", text)
    result = {
        **stats,
        "update_cosines": cos,
        "skipped": skipped,
        "arms": {a: str(p) for a, p in trained.items()},
    }
    write_json(out / "results.json", result, strict=True)
    print(text)
    return result
