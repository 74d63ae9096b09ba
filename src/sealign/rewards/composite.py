"""Metric rewards on a common scale and their weighted composite.

The reward contract is TRL's plain-function one: a reward function takes a batch of enhanced
:class:`~sealign.metrics.base.Utterance` objects (with the input's reference, text and speaker
reference attached) and returns one ``float`` or ``None`` per utterance. ``None`` means *not
applicable* (e.g. WER on an input without a transcript): the composite then averages the
remaining components, it never counts a missing score as 0.

Each :class:`RewardComponent` names either a metric of the suite (``metric`` + ``output``) or a
custom function (``function: package.module:name``). Metric outputs are mapped to a comparable
scale before weighting (``scale``):

- ``mos``: ``(m - 1) / 4`` for 1–5 opinion scores (DNSMOS, DistillMOS, UTMOS, NISQA);
- ``error_rate``: ``1 - min(e, 1)`` for WER / CER;
- ``identity``: the value as it is (similarities, ESTOI...);
- ``negated``: ``-v`` for distances without an upper bound (LSD, MCD);
- ``auto`` (default): the metric's declared ``reward_scale`` if it has one, else ``mos`` for
  outputs whose declared range runs from 1 to at most 5 (MOS and MOS-LQO such as PESQ's
  1–4.64), ``error_rate`` for lower-is-better outputs bounded below by 0, else ``identity``.
  An ``identity`` output whose range is much wider than the others' (SI-SDR in dB) is warned
  about: give it a weight that puts it beside them.

``credit: word`` on the WER component gives each rollout step of an AR policy the advantage of
its own reference word instead of the output's whole ``1 - WER``
(:mod:`sealign.rewards.word_credit`); the batch then carries ``word_credit``.

A metric that *fails* on a sample (exception, NaN/inf) marks the sample as failed: the GSPO
trainer excludes it from its group's advantage and logs it, the run goes on.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sealign.metrics.base import REWARD_SCALES, Metric, MetricInfo, MetricResult, Utterance
from sealign.metrics.cache import cache_key, open_score_cache, score_with_cache
from sealign.metrics.workers import MetricWorkers
from sealign.rewards.word_credit import ReferenceAligner, WordCredit, word_hits
from sealign.utils.device import parse_device
from sealign.utils.threads import torch_threads

log = logging.getLogger(__name__)

RewardFunction = Callable[[list[Utterance]], list[float | None]]
SCALES = REWARD_SCALES
CREDITS = ("sequence", "word")


def to_reward_scale(value: float, scale: str) -> float:
    """Map one metric value to the reward scale ``scale`` (not ``auto``)."""
    if scale == "mos":
        return (value - 1.0) / 4.0
    if scale == "error_rate":
        return 1.0 - min(value, 1.0)
    if scale == "identity":
        return value
    if scale == "negated":
        return -value
    raise ValueError(f"unknown reward scale {scale!r}; known: {', '.join(SCALES[1:])}")


def auto_scale(info: MetricInfo, output: str) -> str:
    """The scale ``auto`` resolves to for ``output`` of a metric (see the module doc)."""
    k = info.outputs.index(output)
    if info.reward_scale != "auto":
        return info.reward_scale
    lo, hi = info.ranges[k]
    if lo == 1.0 and 1.0 < hi <= 5.0:
        return "mos"
    if not info.higher_is_better[k] and lo == 0.0:
        return "error_rate"
    return "identity"


@dataclass
class RewardComponent:
    """One term of the composite reward."""

    metric: str = ""  # a metric of the suite (see `sealign metrics`) ...
    output: str = ""  # ... and its output (default: the metric's first output)
    function: str = ""  # ... or a custom reward function "package.module:name"
    weight: float = 1.0
    scale: str = "auto"
    name: str = ""  # log name (rewards/<name>/mean); default: the column or function name
    # "word": each rollout step is credited with the WER of its own reference word (metric wer
    # only; AR policies; sealign.rewards.word_credit)
    credit: str = "sequence"

    def __post_init__(self) -> None:
        if bool(self.metric) == bool(self.function):
            raise ValueError("a reward component needs exactly one of `metric` or `function`")
        if self.credit not in CREDITS:
            raise ValueError(f"reward credit {self.credit!r} unknown; known: {', '.join(CREDITS)}")
        if self.credit == "word" and self.metric != "wer":
            raise ValueError("credit: word is for the wer metric only")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"reward weight must be a finite number >= 0, got {self.weight}")
        if self.scale not in SCALES:
            raise ValueError(f"reward scale {self.scale!r} unknown; known: {', '.join(SCALES)}")


def _default_components() -> list[RewardComponent]:
    # the seed paper's DNSMOS + (1 - WER) + UTMOS, with DistillMOS for UTMOS (no UTMOS weights
    # ship in a package; set metric: utmos with a checkpoint to use it)
    return [
        RewardComponent(metric="dnsmos", output="ovrl"),
        RewardComponent(metric="wer", output="wer"),
        RewardComponent(metric="distillmos", output="distillmos"),
    ]


@dataclass
class RewardConfig:
    """The composite reward: components, aggregation and metric settings."""

    components: list[RewardComponent] = field(default_factory=_default_components)
    aggregation: str = "sum_then_normalize"  # or normalize_then_sum, rank
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache: str | None = None  # SQLite score cache path (None = no cache)
    workers: int = 1  # metrics scored concurrently (threads; ONNX / torch / CTranslate2 release
    # the GIL, so e.g. DNSMOS, Whisper and DistillMOS can overlap on separate cores)
    # with workers > 1: each metric's batch is scored in this many parts, separate tasks, so
    # that `workers` threads stay busy when the metrics are fewer than the threads or uneven
    parts: int = 1
    # score in `workers` worker processes instead of threads: the metrics' backends and Python
    # parts then run apart from each other and from the trainer, and a backend that crashes
    # takes down its worker only (sealign.metrics.workers); with `credit: word` the trainer
    # loads Whisper too, for the reference's word alignment
    processes: bool = False
    metric_threads: int = 0  # threads of each metric backend (0 = the command's `threads`)
    # where metrics with a model run: cpu, cuda (under torchrun: each rank's own GPU), cuda:N
    metric_device: str = "cpu"

    def __post_init__(self) -> None:
        from sealign.rewards.advantages import AGGREGATIONS

        self.components = [
            RewardComponent(**c) if isinstance(c, dict) else c for c in self.components
        ]
        if not self.components:
            raise ValueError("reward.components: give at least one component")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"reward.aggregation: {self.aggregation!r} unknown; known: {', '.join(AGGREGATIONS)}"
            )
        if self.workers < 1:
            raise ValueError(f"reward.workers must be >= 1, got {self.workers}")
        if self.parts < 1:
            raise ValueError(f"reward.parts must be >= 1, got {self.parts}")
        if self.metric_threads < 0:
            raise ValueError(f"reward.metric_threads must be >= 0, got {self.metric_threads}")
        parse_device(self.metric_device, "reward.metric_device")
        if sum(c.weight for c in self.components) <= 0:
            raise ValueError("reward.components: the weights sum to 0")
        names = [c.name for c in self.components if c.name]
        if len(set(names)) != len(names):
            raise ValueError(f"reward.components: duplicate names {names}")
        if sum(c.credit == "word" for c in self.components) > 1:
            raise ValueError("reward.components: at most one component can have credit: word")

    @property
    def word_credit(self) -> int | None:
        """Index of the component with ``credit: word``, if any."""
        return next((j for j, c in enumerate(self.components) if c.credit == "word"), None)

    def threads_per_metric(self, command_threads: int) -> int:
        """Threads of each metric backend: ``metric_threads``, else the command's."""
        return self.metric_threads or command_threads

    def check(self, prefix: str = "reward.") -> None:
        """Metric names and outputs exist; custom functions import (no model is loaded)."""
        from sealign.metrics.registry import metric_info, metric_names

        for i, c in enumerate(self.components):
            where = f"{prefix}components[{i}]"
            if c.function:
                _import_function(c.function, where)
                continue
            if c.metric not in metric_names():
                raise ValueError(
                    f"{where}.metric: unknown metric {c.metric!r}; known: {', '.join(metric_names())}"
                )
            outs = metric_info(c.metric).outputs
            if c.output and c.output not in outs:
                raise ValueError(
                    f"{where}.output: {c.metric} has outputs {', '.join(outs)}, not {c.output!r}"
                )
        used = {c.metric for c in self.components if c.metric}
        unused = sorted(set(self.metric_options) - used)
        if unused:
            raise ValueError(
                f"{prefix}metric_options: given for metrics not in the reward {unused} (a "
                f"config's options for its own metrics? clear them: '{prefix}metric_options={{}}')"
            )


def _import_function(path: str, where: str) -> RewardFunction:
    module, _, name = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name) if module and name else None
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{where}.function: cannot import {path!r}: {err}") from err
    if not callable(fn):
        raise ValueError(f"{where}.function: {path!r} must be 'package.module:callable'")
    return fn


@dataclass
class RewardBatch:
    """Scores of a batch of N utterances.

    ``values [N, C]``: scaled component rewards, NaN where not applicable or failed;
    ``failed [N]``: a component failed on the sample (exclude it); ``raw``: metric columns
    (``dnsmos_ovrl``...) before scaling, for logging; ``reasons``: why samples failed;
    ``seconds``: scoring time per metric; ``word_credit``: per sample, the reference words and
    which the output got right, for the ``credit: word`` component (else None).
    """

    names: list[str]
    values: np.ndarray
    failed: np.ndarray
    raw: dict[str, list[float | None]]
    reasons: dict[int, str]
    seconds: dict[str, float] = field(default_factory=dict)
    word_credit: list[WordCredit | None] | None = None
    weights: np.ndarray | None = None  # the components' weights

    def composite(self) -> np.ndarray:
        """``[N]`` one reward per utterance, for a trainer of your own: the weighted mean of its
        available terms (NaN when it failed), what GSPO normalizes within a group under
        ``sum_then_normalize``."""
        from sealign.rewards.advantages import weighted_mean

        w = np.ones(len(self.names)) if self.weights is None else self.weights
        out = weighted_mean(self.values, w)
        out[self.failed] = np.nan
        return out


def _add_reason(reasons: dict[int, str], i: int, why: str) -> None:
    reasons[i] = f"{reasons[i]}; {why}" if i in reasons else why


class CompositeReward:
    """Scores utterances with every component; metrics are built once and shared."""

    def __init__(
        self,
        cfg: RewardConfig,
        num_threads: int = 2,
        metrics: dict[str, Metric] | None = None,
        functions: dict[str, RewardFunction] | None = None,
        device: str | None = None,
    ) -> None:
        """``num_threads``: CPU threads for the metrics (split between them by
        ``cfg.workers``); ``metrics`` / ``functions``: already built metrics and reward
        functions by name, used instead of building them; ``device``: where the metrics run,
        overriding ``cfg.metric_device`` (e.g. a rank's own GPU)."""
        from sealign.eval.score import column_name
        from sealign.metrics.registry import build_metric

        cfg.check()
        self.cfg = cfg
        num_threads = cfg.threads_per_metric(num_threads)
        device = device or cfg.metric_device
        self.metrics: dict[str, Metric] = dict(metrics or {})
        self.functions: dict[str, RewardFunction] = dict(functions or {})
        self.outputs: list[str] = []
        self.scales: list[str] = []
        self.names: list[str] = []
        recipes: dict[str, Any] = dict(self.metrics)  # given metrics are sent pickled
        for i, c in enumerate(cfg.components):
            if c.function:
                fn = self.functions.get(c.function) or _import_function(
                    c.function, f"reward.components[{i}]"
                )
                self.functions[c.function] = fn
                self.outputs.append("")
                self.scales.append("identity" if c.scale == "auto" else c.scale)
                self.names.append(c.name or c.function.rpartition(":")[2])
                continue
            if c.metric not in self.metrics:
                opts = dict(cfg.metric_options.get(c.metric, {}))
                opts.update(num_threads=num_threads, metric_device=device)
                # built here too (not loaded): its info, settings and cache keys
                self.metrics[c.metric] = build_metric(c.metric, **opts)
                recipes[c.metric] = (c.metric, opts)
            info = self.metrics[c.metric].info
            out = c.output or info.outputs[0]
            self.outputs.append(out)
            self.scales.append(auto_scale(info, out) if c.scale == "auto" else c.scale)
            self.names.append(c.name or column_name(c.metric, out))
            lo, hi = info.ranges[info.outputs.index(out)]
            if (
                self.scales[-1] == "identity"
                and hi - lo > 2
                and len(cfg.components) > 1
                and cfg.aggregation == "sum_then_normalize"  # the others compare within a term
            ):
                log.warning("reward component %s enters on its own scale (%g to %g), beside "
                            "terms of about 0 to 1: its weight %g decides how much it counts",
                            self.names[-1], lo, hi, c.weight)  # fmt: skip
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"reward.components: two components share a name {self.names}")
        self.weights = np.array([c.weight for c in cfg.components], dtype=np.float64)
        self.cache = open_score_cache(cfg.cache)
        self._pool: Any = None
        self._workers = MetricWorkers(recipes, cfg.workers) if cfg.processes else None
        self._timing_lock = threading.Lock()
        self.word_credit = cfg.word_credit
        self._aligner = (
            ReferenceAligner(getattr(self.metrics["wer"], "asr", None))
            if self.word_credit is not None
            else None
        )

    def columns(self) -> set[str]:
        """Metric columns (``dnsmos_ovrl``...) the reward optimizes."""
        from sealign.eval.score import column_name

        return {
            column_name(c.metric, out)
            for c, out in zip(self.cfg.components, self.outputs, strict=True)
            if c.metric
        }

    def load(self) -> None:
        """Load every metric model now (so that a missing model fails before training)."""
        if self._workers is not None:
            self._workers.load()
            return
        with torch_threads():  # the trainer's thread count survives the backends' set-up
            for m in self.metrics.values():
                m.load()

    def __call__(self, utts: list[Utterance]) -> RewardBatch:
        """Score ``utts`` with every component (the score cache first); ``.composite()`` of the
        result is one reward per utterance. A sample a metric cannot judge is marked failed,
        with the reason, and never raises."""
        with torch_threads():
            return self._score(utts)

    def _score(self, utts: list[Utterance]) -> RewardBatch:
        from sealign.eval.score import column_name

        n, c = len(utts), len(self.cfg.components)
        values = np.full((n, c), np.nan)
        failed = np.zeros(n, dtype=bool)
        reasons: dict[int, str] = {}
        raw: dict[str, list[float | None]] = {}
        timings: dict[str, float] = {}
        credit: list[WordCredit | None] | None = None

        def score(name: str, part: slice = slice(None)) -> list:
            nonlocal credit
            t0 = time.perf_counter()
            if self._aligner is not None and name == "wer":  # transcripts are not cached
                out = self.metrics[name].score_batch(utts)
                credit = self._credit(utts, out)
            else:
                out = score_with_cache(self.metrics[name], utts[part], self.cache)
            with self._timing_lock:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
            return out

        if self._workers is not None:
            results = self._score_in_workers(utts, timings)
            if self._aligner is not None:
                credit = self._credit(utts, results["wer"])
        elif self.cfg.workers > 1 and (len(self.metrics) > 1 or self.cfg.parts > 1):
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                # kept for the whole run: each backend's thread pool (OpenMP, onnxruntime)
                # belongs to the thread that calls it, so fresh threads would build new ones
                self._pool = ThreadPoolExecutor(self.cfg.workers)
            # part by part, each part's metrics side by side (a metric's parts do not overlap
            # unless the pool has more threads than metrics)
            k = max(1, min(self.cfg.parts, n))
            bounds = [round(i * n / k) for i in range(k + 1)]
            tasks = [
                (name, self._pool.submit(score, name, slice(bounds[i], bounds[i + 1])))
                for i in range(k)
                for name in self.metrics
                if i == 0 or not (self._aligner is not None and name == "wer")
            ]
            results: dict[str, list] = {}
            for name, f in tasks:
                results.setdefault(name, []).extend(f.result())
        else:
            results = {name: score(name) for name in self.metrics}
        for j, comp in enumerate(self.cfg.components):
            if comp.function:
                scores = self._call_function(comp.function, utts)
            else:
                res, out = results[comp.metric], self.outputs[j]
                scores = []
                for i, r in enumerate(res):
                    if r.error is not None:
                        failed[i] = True
                        _add_reason(reasons, i, f"{comp.metric}: {r.error}")
                    scores.append(r.values.get(out) if r.ok else None)
            raw[column_name(comp.metric, self.outputs[j]) if comp.metric else self.names[j]] = (
                scores
            )
            for i, v in enumerate(scores):
                if v is None:
                    continue
                if not math.isfinite(v):
                    failed[i] = True
                    _add_reason(reasons, i, f"{self.names[j]}: non-finite reward {v}")
                    continue
                values[i, j] = to_reward_scale(float(v), self.scales[j])
        values[failed] = np.nan
        return RewardBatch(
            list(self.names), values, failed, raw, reasons, timings, credit, self.weights
        )

    def _score_in_workers(
        self, utts: list[Utterance], timings: dict[str, float]
    ) -> dict[str, list[MetricResult]]:
        """Every metric's results, the score cache's first, the rest from the worker processes
        (each metric's batch in ``parts`` tasks)."""
        assert self._workers is not None
        n = len(utts)
        k = max(1, min(self.cfg.parts, n))
        bounds = [round(i * n / k) for i in range(k + 1)]
        results: dict[str, list[MetricResult | None]] = {}
        keys: dict[str, list[str]] = {}
        for name, metric in self.metrics.items():
            # transcripts (for word credit) are not cached
            use_cache = self.cache is not None and not (self._aligner and name == "wer")
            keys[name] = [cache_key(metric, u) for u in utts] if use_cache else []
            results[name] = (
                [self.cache.get(key) for key in keys[name]]  # type: ignore[union-attr]
                if use_cache
                else [None] * n
            )
        tasks: list[tuple[str, list[int]]] = []  # (metric, utterance indices)
        for i in range(k):
            for name in self.metrics:
                whole = self._aligner is not None and name == "wer"  # one task, all of it
                if whole and i > 0:
                    continue
                span = range(n) if whole else range(bounds[i], bounds[i + 1])
                todo = [j for j in span if results[name][j] is None]
                if todo:
                    tasks.append((name, todo))
        # part by part, each part's metrics side by side (as the thread pool runs them)
        done = self._workers.score([(name, [utts[j] for j in idx]) for name, idx in tasks])
        timings.update({name: 0.0 for name in self.metrics})  # all cached: 0 s, as in threads
        for (name, idx), (res, seconds) in zip(tasks, done, strict=True):
            timings[name] = timings.get(name, 0.0) + seconds
            for j, r in zip(idx, res, strict=True):
                results[name][j] = r
                if keys[name]:
                    self.cache.put(keys[name][j], r)  # type: ignore[union-attr]
        return results  # type: ignore[return-value]

    def _credit(self, utts: list[Utterance], results: list) -> list[WordCredit | None]:
        assert self._aligner is not None
        out: list[WordCredit | None] = []
        for u, r in zip(utts, results, strict=True):
            spans = self._aligner(u) if r.ok and r.details else None
            hits = word_hits(spans.words, r.details["transcript"]) if spans else None
            out.append(WordCredit(spans, hits) if spans and spans.words else None)
        return out

    def _call_function(self, path: str, utts: list[Utterance]) -> list[float | None]:
        try:
            out = list(self.functions[path](utts))
        except Exception as err:  # noqa: BLE001 - a broken reward must not end the run
            log.warning("reward function %s failed on the batch: %s", path, err)
            return [float("nan")] * len(utts)
        if len(out) != len(utts):
            raise ValueError(f"reward function {path} returned {len(out)} values for {len(utts)}")
        return [self._number(path, v) for v in out]

    @staticmethod
    def _number(path: str, v: Any) -> float | None:
        """A reward function's value for one sample; one that is not a number is NaN (the
        sample is excluded from its group, logged), not the end of the run."""
        if v is None:
            return None
        try:
            return float(v)
        except (TypeError, ValueError) as err:
            log.warning("reward function %s gave %r for a sample (%s): excluding it", path,
                        str(v)[:40], err)  # fmt: skip
            return float("nan")

    def close(self) -> None:
        """Stop the scoring threads or worker processes and close the score cache."""
        if self._workers is not None:
            self._workers.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self.cache is not None:
            self.cache.close()
