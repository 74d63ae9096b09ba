"""Held-out evaluation during RL, and the reward-hacking alarm.

The held-out set is enhanced with fixed seeds (the same draws at every evaluation) and scored on
every metric of the evaluation set, including metrics that are not in the reward. A metric
*not* in the reward that got significantly worse than at the first evaluation (step 0, the base
model) raises the alarm: the policy is probably gaming the rewarded metrics at the expense of
what they do not see. "Significantly": a one-sided paired t-test per metric, utterances paired
by id, with Holm's correction across the metrics at a family-wise level of 5%, so that a policy
that changed nothing those metrics see raises a false alarm about 5% of the time however many
metrics are watched (`benchmarks/hacking_alarm.py` measures it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from sealign.audio.io import as_written, write_audio
from sealign.eval.score import column_name, metric_settings, score_records, summarize_records
from sealign.eval.stats import mean_ci
from sealign.infer.fusion import fuse_outputs
from sealign.metrics.base import Metric, Utterance
from sealign.models.policy import Policy
from sealign.train.checkpoint import rng_state, set_rng_state
from sealign.train.data import DataConfig, Example, PairDataset
from sealign.utils.jsonio import write_json
from sealign.utils.logging import RunLogger

log = logging.getLogger(__name__)


@torch.no_grad()
def enhance_examples(
    policy: Policy,
    examples: list[Example],
    temperature: float,
    seed: int,
    batch_size: int = 8,
    **options: Any,
) -> list[np.ndarray]:
    """One sampled enhancement per example (seeded per batch, so results do not depend on
    what ran before)."""
    out: list[np.ndarray] = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        cond = policy.condition([e.noisy for e in batch])
        gen = torch.Generator().manual_seed(seed + start)
        rollout = policy.sample(cond, temperature=temperature, generator=gen, **options)
        out.extend(policy.decode(rollout))
    return out


@dataclass
class Alarm:
    column: str
    diff: float
    low: float  # 95% t-interval of the mean paired difference
    high: float
    p: float  # Holm-adjusted one-sided p-value

    def __str__(self) -> str:
        return (
            f"{self.column} changed by {self.diff:+.3f} "
            f"(95% CI [{self.low:+.3f}, {self.high:+.3f}], Holm-adjusted p = {self.p:.3g})"
        )


def _p_worse(d: np.ndarray, higher_is_better: bool) -> float:
    """One-sided paired t-test p-value for "the mean of ``d`` is on the bad side of zero"."""
    if not higher_is_better:
        d = -d
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return 0.0 if mean < 0 else 1.0
    return float(stats.t.cdf(mean / (sd / np.sqrt(d.size)), d.size - 1))


def hacking_alarms(
    baseline: list[dict[str, Any]],
    current: list[dict[str, Any]],
    higher_is_better: dict[str, bool],
    rewarded: set[str],
    alpha: float = 0.05,
) -> list[Alarm]:
    """Non-rewarded columns significantly worse than ``baseline`` (paired by id): one-sided
    paired t-tests, Holm–Bonferroni across the tested columns at family-wise level ``alpha``."""
    base = {r["id"]: r["scores"] for r in baseline}
    tested: list[tuple[str, np.ndarray, float]] = []
    for col, hib in higher_is_better.items():
        if col in rewarded:
            continue
        d = np.array(
            [
                r["scores"][col] - base[r["id"]][col]
                for r in current
                if r["id"] in base and col in base[r["id"]] and col in r["scores"]
            ],
            dtype=np.float64,
        )
        d = d[np.isfinite(d)]
        if d.size >= 2:
            tested.append((col, d, _p_worse(d, hib)))
    alarms = []
    m = len(tested)
    adjusted = 0.0
    for k, (col, d, p) in enumerate(sorted(tested, key=lambda x: x[2])):
        adjusted = max(adjusted, min(1.0, (m - k) * p))  # Holm's step-down adjustment
        if adjusted > alpha:
            break
        ci = mean_ci(d)
        alarms.append(Alarm(col, ci.mean, ci.low, ci.high, adjusted))
    return alarms


def metric_directions(metrics: dict[str, Metric]) -> dict[str, bool]:
    """``{column: higher_is_better}`` of every output of ``metrics``."""
    return {
        column_name(n, o): h
        for n, m in metrics.items()
        for o, h in zip(m.info.outputs, m.info.higher_is_better, strict=True)
    }


@dataclass
class RLEvalConfig:
    """Held-out evaluation: every ``steps`` steps (0 = only at the start and the end)."""

    manifests: list[str] = field(default_factory=list)
    num_samples: int = 8  # held-out utterances (0 = all)
    steps: int = 50
    temperature: float = 1.0
    metrics: list[str] = field(
        default_factory=lambda: ["dnsmos", "distillmos", "wer", "spk_sim", "pesq_wb", "estoi"]
    )
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    save_audio: bool = True

    def check(self, prefix: str = "eval.") -> None:
        from sealign.metrics.registry import metric_names

        for m in self.manifests:
            if not Path(m).is_file():
                raise ValueError(f"{prefix}manifests: not found: {m}")
        if self.num_samples < 0 or self.steps < 0:
            raise ValueError(f"{prefix}num_samples and {prefix}steps must be >= 0")
        if not 0 < self.temperature < math.inf:
            raise ValueError(f"{prefix}temperature must be a finite number > 0, got "
                             f"{self.temperature}")  # fmt: skip
        for m in self.metrics:
            if m not in metric_names():
                raise ValueError(f"{prefix}metrics: unknown metric {m!r}")
        unused = sorted(set(self.metric_options) - set(self.metrics))
        if unused:
            raise ValueError(f"{prefix}metric_options: given for metrics not in "
                             f"{prefix}metrics {unused}")  # fmt: skip


class HeldOut:
    """Held-out evaluation of a run: examples, metrics, and the records of every evaluated step
    (``<run>/eval/step_<N>.json``, reloaded on resume so a step is never evaluated twice)."""

    def __init__(
        self,
        cfg: RLEvalConfig,
        data: DataConfig,
        sample_rate: int,
        seed: int,
        threads: int,
        run: Path,
        rewarded: set[str] | None = None,
        sample_options: dict[str, Any] | None = None,
        fuse: str = "none",
        device: str = "cpu",
    ) -> None:
        from sealign.metrics.registry import build_metric

        self.cfg, self.seed, self.run = cfg, seed, Path(run)
        self.rewarded = set(rewarded or ())
        self.sample_options = dict(sample_options or {})
        self.fuse = fuse  # post-processing of each output (sealign.infer.fusion)
        self.examples: list[Example] = []
        if cfg.manifests:
            d = dataclasses.replace(data, degrade=False, batch_size=8, crop_seconds=0.0)
            ds = PairDataset(cfg.manifests, d, sample_rate, seed, train=False)
            self.examples = [ex for b in ds.iter_batches(cfg.num_samples or None) for ex in b]
        self.metrics = {
            n: build_metric(
                n, num_threads=threads, metric_device=device, **cfg.metric_options.get(n, {})
            )
            for n in cfg.metrics
        }
        self.evals: dict[int, list[dict[str, Any]]] = {}
        for p in sorted((self.run / "eval").glob("step_*.json")):
            self.evals[int(p.stem[5:])] = json.loads(p.read_text(encoding="utf-8"))
        self.directions = metric_directions(self.metrics)

    def start(self, step: int) -> None:
        """Set up for a run starting at ``step``: drop the evaluations stored after it (a run
        resumed from its checkpoint at ``step``, whose log was cut there; −1, a fresh start,
        drops all), which are run and logged again when reached. A metric whose settings
        changed since step 0 was scored (a resume with other options, or after an upgrade) is
        not compared with step 0: its alarm is off for the run."""
        for s in [s for s in self.evals if s > step]:
            del self.evals[s]
            (self.run / "eval" / f"step_{s:08d}.json").unlink(missing_ok=True)
        record, now = self.run / "eval" / "metrics.json", metric_settings(self.metrics)
        before: dict[str, Any] = {}
        if self.evals and record.is_file():
            with contextlib.suppress(json.JSONDecodeError):
                before = json.loads(record.read_text(encoding="utf-8"))
        changed = sorted(n for n in now if isinstance(before, dict) and n in before
                         and before[n] != now[n])  # fmt: skip
        if changed:
            log.warning("held-out metrics %s changed settings since step 0: no reward-hacking "
                        "alarm on them in this run", ", ".join(changed))  # fmt: skip
        self.directions = metric_directions(
            {n: m for n, m in self.metrics.items() if n not in changed}
        )
        if self.examples:
            write_json(record, {**now, **(before if isinstance(before, dict) else {})})

    def records(self, policy: Policy, step: int) -> list[dict[str, Any]]:
        """Enhance and score the held-out examples (global RNGs untouched)."""
        module: torch.nn.Module = policy  # type: ignore[assignment]
        saved = rng_state()
        try:
            wavs = enhance_examples(
                policy, self.examples, self.cfg.temperature, self.seed + 12345,
                **self.sample_options,
            )  # fmt: skip
        finally:
            set_rng_state(saved)
            module.eval()
        sr = policy.sample_rate
        wavs = fuse_outputs(wavs, [ex.noisy for ex in self.examples], sr, self.fuse)
        wavs = [as_written(w, ex.id) for ex, w in zip(self.examples, wavs, strict=True)]
        utts = [
            Utterance(ex.id, w, sr, reference=ex.clean, text=ex.text, speaker_ref=ex.clean)
            for ex, w in zip(self.examples, wavs, strict=True)
        ]
        if self.cfg.save_audio:
            for u in utts:
                write_audio(self.run / "samples" / f"step_{step:08d}" / f"{u.id}.wav", u.audio, sr)
        return score_records(utts, self.metrics)

    def evaluate(self, policy: Policy, step: int, logger: RunLogger | None) -> list[str]:
        """Evaluate at ``step`` unless done; log ``eval/<column>``; return alarm messages."""
        if not self.examples or step in self.evals:
            return []
        t = time.perf_counter()
        recs = self.records(policy, step)
        self.evals[step] = recs
        write_json(self.run / "eval" / f"step_{step:08d}.json", recs)
        scalars = summarize_records(recs)
        scalars["time/eval"] = time.perf_counter() - t
        alarms = []
        if 0 in self.evals and step > 0:
            for a in hacking_alarms(self.evals[0], recs, self.directions, self.rewarded):
                msg = f"step {step}: reward-hacking alarm: non-rewarded {a}"
                log.warning(msg)
                alarms.append(msg)
                scalars[f"alarm/{a.column}"] = a.diff
        shown = ", ".join(f"{k[5:]}={v:.3f}" for k, v in scalars.items() if k.startswith("eval/"))
        log.info("step %d eval: %s", step, shown)
        if logger is not None:
            logger.log(scalars, step=step)
        return alarms
