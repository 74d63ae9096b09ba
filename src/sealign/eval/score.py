"""Score a manifest with a set of metrics: per-utterance JSONL (resumable) and a summary table."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sealign.audio.io import AudioError, AudioLimits, load_audio, resample
from sealign.data.manifest import Entry
from sealign.eval.stats import mean_ci
from sealign.metrics.base import Metric, MetricInfo, MetricResult, MetricUnavailable, Utterance
from sealign.metrics.cache import ScoreCache, open_score_cache, score_with_cache
from sealign.metrics.registry import build_metric, metric_info, metric_names
from sealign.utils.device import parse_device
from sealign.utils.jsonio import write_json
from sealign.utils.paths import cache_root
from sealign.utils.shard import SETTINGS_SUFFIX

log = logging.getLogger(__name__)

DEFAULT_METRICS = [
    "dnsmos",
    "distillmos",
    "wer",
    "spk_sim",
    "speechbertscore",
    "pesq_wb",
    "estoi",
    "si_sdr",
]
# names that stand for a paper's set of metrics in `metrics` lists
METRIC_PRESETS = {
    # the VoiceBank-DEMAND table: PESQ (wideband), CSIG / CBAK / COVL / segSNR, STOI, ESTOI, SI-SDR
    "vbdmd": ["pesq_wb", "composite", "stoi", "estoi", "si_sdr"],
}


def expand_presets(metrics: list[str]) -> list[str]:
    """``metrics`` with each preset name replaced by its metrics, duplicates dropped."""
    out = [m for name in metrics for m in METRIC_PRESETS.get(name, [name])]
    return list(dict.fromkeys(out))


@dataclass
class ScoreConfig:
    """Settings of ``sealign score``."""

    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # where metrics with a model run (cpu, cuda, cuda:N), for every metric that takes a device
    metric_device: str = "cpu"
    threads: int = 2
    # metrics scored side by side (threads), each backend on threads // workers threads (one
    # each when workers > threads): on a 2-core CPU the demo's seven metrics, two at a time on
    # one thread each in batches of 16, took 1.25x less time than one after another on two
    # threads in batches of 8, since small models use two threads poorly (docs/gspo_demo.md)
    workers: int = 1
    batch_size: int = 8
    # score cache (SQLite); None or "" turns it off
    cache: str | None = field(default_factory=lambda: str(cache_root() / "scores.sqlite"))
    min_duration: float = 0.1
    max_duration: float = 600.0

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        parse_device(self.metric_device, "metric_device")
        if not self.metrics:
            raise ValueError("metrics: give at least one metric (see `sealign metrics`)")
        self.metrics = expand_presets(list(self.metrics))
        if not 0 <= self.min_duration < self.max_duration:
            raise ValueError(
                f"need 0 <= min_duration < max_duration, got {self.min_duration} and "
                f"{self.max_duration}"
            )
        unknown = [m for m in self.metrics if m not in metric_names()]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; known: {', '.join(metric_names())}")
        unused = set(self.metric_options) - set(self.metrics)
        if unused:
            raise ValueError(f"metric_options given for metrics not selected: {sorted(unused)}")

    def on_cpu(self) -> ScoreConfig:
        """This config with every metric on the CPU (``device`` options dropped): for building
        metrics only to read their output columns, e.g. on a machine without the GPU they ran on."""
        options = {m: {k: v for k, v in o.items() if k != "device"}
                   for m, o in self.metric_options.items()}  # fmt: skip
        return dataclasses.replace(self, metric_device="cpu", metric_options=options)

    def metric_threads(self) -> int:
        """Threads of each metric backend: the ``threads`` shared by the ``workers``."""
        return max(1, self.threads // self.workers)


def column_name(metric: str, output: str) -> str:
    """Flat column name of a metric output: ``dnsmos_ovrl``, ``wer``, ``nisqa_mos``."""
    return output if output.startswith(metric) else f"{metric}_{output}"


def metrics_of_columns(columns: list[str]) -> list[str]:
    """Names of the registered metrics that output ``columns`` (in first-use order)."""
    owner = {column_name(m, out): m for m in metric_names() for out in metric_info(m).outputs}
    unknown = [c for c in columns if c not in owner]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; known: {', '.join(sorted(owner))}")
    return list(dict.fromkeys(owner[c] for c in columns))


def build_metrics(cfg: ScoreConfig) -> dict[str, Metric]:
    return {
        name: build_metric(
            name,
            num_threads=cfg.metric_threads(),
            metric_device=cfg.metric_device,
            **cfg.metric_options.get(name, {}),
        )
        for name in cfg.metrics
    }


def load_metrics(metrics: dict[str, Metric]) -> None:
    """Load every metric's model now: one that cannot load (missing weights, no network for a
    hub id) then stops the command before hours of enhancement or training, not after."""
    for m in metrics.values():
        m.load()


def entry_to_utterance(
    e: Entry, limits: AudioLimits, sr: int | None = None
) -> tuple[Utterance, dict[str, str]]:
    """Load an entry's audio, and ``{side input: error}`` for a reference or speaker reference
    that cannot be used (it is then left out, so only the metrics needing it skip the
    utterance). The speaker reference defaults to the clean reference, else the noisy input.
    An unusable ``audio`` raises :class:`AudioError`.

    The audio keeps its file's rate unless ``sr`` is given, and so do the side inputs: each
    metric resamples each signal once, from its own rate to the metric's, so a 48-kHz metric
    (NISQA) sees a 48-kHz file's full band, not a 16-kHz copy upsampled, and a 16-kHz
    reference of a 48-kHz output is not resampled up and down again."""
    audio, sr = load_audio(e.audio, sr, limits)
    problems: dict[str, str] = {}

    def side(key: str, path: str | None) -> tuple[np.ndarray | None, int | None]:
        if not path:
            return None, None
        try:
            x, rate = load_audio(path, None, limits)
        except AudioError as err:
            problems[key] = str(err)
            return None, None
        if rate > sr:  # (a reference above the audio's rate is not needed in full)
            x, rate = resample(x, rate, sr), sr
        return x, (rate if rate != sr else None)

    ref, ref_rate = side("reference", e.reference)
    spk_path = e.speaker_ref or (None if e.reference else e.noisy)
    spk, spk_rate = side("speaker_ref", spk_path)
    return Utterance(e.id, audio, sr, reference=ref, text=e.text, speaker_ref=spk,
                     reference_rate=ref_rate, speaker_ref_rate=spk_rate), problems  # fmt: skip


def _has_outcome(rec: dict[str, Any], name: str, metric: Metric) -> bool:
    """Whether ``rec`` says how ``metric`` went: its scores, a skip or an error (an unreadable
    audio file is an outcome for every metric)."""
    if name in rec["skipped"] or name in rec["errors"] or "audio" in rec["errors"]:
        return True
    return all(column_name(name, out) in rec["scores"] for out in metric.info.outputs)


def metric_settings(metrics: dict[str, Metric]) -> dict[str, Any]:
    """What determines each metric's scores besides its input: version and settings."""
    return {
        n: json.loads(json.dumps([m.info.version, m.settings()], sort_keys=True, default=str))
        for n, m in metrics.items()
    }


def _settings_file(path: Path) -> Path:
    return path.with_name(path.name + SETTINGS_SUFFIX)


def _recorded_settings(path: Path) -> dict[str, Any] | None:
    """The metric settings a scores file was written with (None: no readable record)."""
    try:
        before = json.loads(_settings_file(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return before if isinstance(before, dict) else None


def _changed_metrics(path: Path, metrics: dict[str, Metric]) -> list[str]:
    """Metrics whose version or settings differ from those a scores file was written with (a
    resume after an upgrade or with other options); every metric when the file has no
    readable record of them (written before sealign kept one)."""
    before = _recorded_settings(path)
    if before is None:
        return list(metrics)
    now = metric_settings(metrics)
    return [n for n in metrics if n in before and before[n] != now[n]]


def _done_records(
    path: Path, metrics: dict[str, Metric], inputs: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Records (by id) already in a scores file with an outcome for every one of ``metrics``;
    a truncated last line (killed run) is dropped, and so is a record that lacks one of the
    metrics (a resume with more metrics than before), which is then scored again (the score
    cache serves the metrics it had). Records of ids not in ``inputs`` (id → the entry's
    :meth:`~sealign.data.manifest.Entry.signature`) are dropped, and those whose input changed
    are scored again. When a metric's settings changed since the file was written, every
    record is scored again, so no column mixes two settings."""
    if not path.exists() or not path.read_text(encoding="utf-8").strip():
        return {}
    changed = _changed_metrics(path, metrics)
    if changed:
        log.warning("%s: the settings of %s are not those these scores were written with (or "
                    "were not recorded); scoring every utterance again (a score cache, when "
                    "on, serves what did not change)", path, ", ".join(changed))  # fmt: skip
        path.write_text("", encoding="utf-8")
        return {}
    good, ids, lacking, other, changed_input = [], {}, 0, 0, 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            complete = all(_has_outcome(rec, n, m) for n, m in metrics.items())
            rec_id = rec["id"]
            known = rec_id in inputs
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            log.warning("%s: dropping a truncated line from an interrupted run", path)
            continue
        if not known:
            other += 1
        elif rec.get("input", inputs[rec_id]) != inputs[rec_id]:  # written before: kept
            changed_input += 1
        elif complete:
            ids[rec_id] = rec
            good.append(line)
        else:
            lacking += 1
    if lacking:
        log.info("%s: %d utterances lack one of the metrics; scoring them again", path, lacking)
    if other:
        log.warning("%s: dropping %d records of utterances not in this run's input", path, other)
    if changed_input:
        log.warning("%s: the audio, reference or text of %d utterances changed since they were "
                    "scored; scoring them again", path, changed_input)  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(g + "\n" for g in good), encoding="utf-8")
    tmp.replace(path)
    return ids


def score_entries(
    entries: list[Entry],
    cfg: ScoreConfig,
    out_path: str | Path | None = None,
    resume: bool = False,
    metrics: dict[str, Metric] | None = None,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Score entries; returns one record per entry, in their order.

    A record is ``{"id", "scores": {column: value}, "skipped": {metric: reason},
    "errors": {metric: message}}``. With ``out_path`` every record is appended and flushed as soon
    as its batch is scored; ``resume`` keeps the records already there (see
    :func:`_done_records`) and scores the rest.
    """
    metrics = metrics if metrics is not None else build_metrics(cfg)
    limits = AudioLimits(min_duration=cfg.min_duration, max_duration=cfg.max_duration)
    cache = open_score_cache(cfg.cache)
    out_file = None
    done: dict[str, dict[str, Any]] = {}
    inputs = {e.id: e.signature() for e in entries}
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if resume:
            done = _done_records(out_path, metrics, inputs)
            if done:
                log.info("resuming: %d of %d utterances already scored", len(done), len(entries))
        # metrics left out of this run keep their entry: their columns stay in kept records
        before = (_recorded_settings(out_path) or {}) if resume else {}
        write_json(_settings_file(out_path), {**before, **metric_settings(metrics)})
        out_file = out_path.open("a" if resume else "w", encoding="utf-8")
    todo = [e for e in entries if e.id not in done]
    records: list[dict[str, Any]] = []
    pool = None
    seconds: dict[str, float] = {}
    try:
        if cfg.workers > 1 and len(metrics) > 1:
            load_metrics(metrics)  # here, not lazily in two threads at once
            pool = ThreadPoolExecutor(cfg.workers)
        bar = tqdm(total=len(todo), desc="scoring", unit="utt", disable=not progress)
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start : start + cfg.batch_size]
            recs = _score_batch(batch, metrics, limits, cache, pool, seconds)
            for rec in recs:
                rec["input"] = inputs[rec["id"]]
                if out_file is not None:
                    out_file.write(json.dumps(rec) + "\n")
                    out_file.flush()
                if on_record is not None:
                    on_record(rec)
            records.extend(recs)
            bar.update(len(batch))
        bar.close()
        if seconds:
            log.info(
                "seconds per metric: %s",
                ", ".join(f"{n} {seconds[n]:.1f}" for n in metrics if n in seconds),
            )
    finally:
        if pool is not None:  # on an error or Ctrl-C, the metrics not yet started do not run
            pool.shutdown(cancel_futures=True)
        if out_file is not None:
            out_file.close()
        if cache is not None:
            log.info("score cache: %d hits, %d misses", cache.hits, cache.misses)
            cache.close()
    if not done:
        return records
    by_id = {**done, **{r["id"]: r for r in records}}
    return [by_id[e.id] for e in entries if e.id in by_id]


def _score_batch(
    batch: list[Entry],
    metrics: dict[str, Metric],
    limits: AudioLimits,
    cache: ScoreCache | None,
    pool: ThreadPoolExecutor | None = None,
    seconds: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Records of one batch; with a ``pool``, its metrics side by side. ``seconds`` adds up each
    metric's time (the pool takes the slowest so far first, so that the last to end is short)."""
    recs = [{"id": e.id, "scores": {}, "skipped": {}, "errors": {}} for e in batch]
    utts: list[Utterance] = []
    where: list[int] = []
    for k, e in enumerate(batch):
        try:
            utt, problems = entry_to_utterance(e, limits)
        except AudioError as err:
            log.warning("skipping %s: %s", e.id, err)
            recs[k]["errors"]["audio"] = str(err)
            continue
        for key, msg in problems.items():
            log.warning("%s: %s unusable, metrics that need it skip it: %s", e.id, key, msg)
            recs[k]["errors"][key] = msg
        utts.append(utt)
        where.append(k)
    if not utts:
        return recs
    seconds = {} if seconds is None else seconds

    def score(name: str) -> list[MetricResult]:
        t0 = time.perf_counter()
        out = score_with_cache(metrics[name], utts, cache)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
        return out

    if pool is None:
        results = {name: score(name) for name in metrics}
    else:
        order = sorted(metrics, key=lambda n: -seconds.get(n, 0.0))
        futures = {name: pool.submit(score, name) for name in order}
        results = {name: futures[name].result() for name in metrics}
    for name in metrics:
        for k, res in zip(where, results[name], strict=True):
            _record(recs[k], name, res)
    return recs


def _record(rec: dict[str, Any], name: str, res: MetricResult) -> None:
    if res.skipped is not None:
        rec["skipped"][name] = res.skipped
    elif res.error is not None:
        rec["errors"][name] = res.error
    else:
        for out, v in res.values.items():
            rec["scores"][column_name(name, out)] = v


@dataclass
class SummaryRow:
    column: str
    mean: float
    low: float
    high: float
    n: int
    skipped: dict[str, int]
    errors: int
    higher_is_better: bool


def summarize(records: list[dict[str, Any]], infos: dict[str, MetricInfo]) -> list[SummaryRow]:
    """Mean, 95% CI, counts of scored / skipped (by reason) / failed per output column.

    ``infos`` maps metric name to the info of the instance used (outputs may depend on options).
    """
    values: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for c, v in r["scores"].items():
            values[c].append(v)
    rows = []
    for name, info in infos.items():
        skipped = Counter(r["skipped"][name] for r in records if name in r["skipped"])
        skipped.update("unusable audio" for r in records if "audio" in r["errors"])
        errors = sum(1 for r in records if name in r["errors"])
        for out, hib, span in zip(info.outputs, info.higher_is_better, info.ranges, strict=True):
            c = column_name(name, out)
            ci = mean_ci(values.get(c, []), bounds=span)
            rows.append(SummaryRow(c, ci.mean, ci.low, ci.high, ci.n, dict(skipped), errors, hib))
    return rows


def format_table(rows: list[SummaryRow]) -> str:
    """Markdown table of a summary (also readable on the console)."""
    lines = [
        "| metric | mean | 95% CI | n | skipped | errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        arrow = " ↑" if r.higher_is_better else " ↓"
        ci = "—" if not np.isfinite(r.low) else f"[{r.low:.3f}, {r.high:.3f}]"
        mean = "—" if not np.isfinite(r.mean) else f"{r.mean:.3f}"
        sk = ", ".join(f"{n} {why}" for why, n in r.skipped.items()) or "0"
        lines.append(f"| {r.column}{arrow} | {mean} | {ci} | {r.n} | {sk} | {r.errors} |")
    return "\n".join(lines)


def write_summary(rows: list[SummaryRow], out_dir: str | Path) -> None:
    """``summary.csv`` and ``summary.md`` in ``out_dir``, each written atomically."""
    out_dir = Path(out_dir)
    tmp = out_dir / "summary.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["metric", "mean", "ci_low", "ci_high", "n", "skipped", "errors", "higher_is_better"]
        )
        for r in rows:
            sk = "; ".join(f"{n} {why}" for why, n in r.skipped.items())
            w.writerow([r.column, r.mean, r.low, r.high, r.n, sk, r.errors, r.higher_is_better])
    tmp.replace(out_dir / "summary.csv")
    tmp = out_dir / "summary.md.tmp"
    tmp.write_text(format_table(rows) + "\n", encoding="utf-8")
    tmp.replace(out_dir / "summary.md")


def score_records(utts: list[Utterance], metrics: dict[str, Metric]) -> list[dict[str, Any]]:
    """``[{"id", "scores": {column: value}}]`` for each utterance; a metric that cannot load
    is dropped from ``metrics`` (logged)."""
    records: list[dict[str, Any]] = [{"id": u.id, "scores": {}} for u in utts]
    for name in list(metrics):
        try:
            results = metrics[name].score_batch(utts)
        except MetricUnavailable as err:
            log.warning("eval: dropping metric %s: %s", name, err)
            del metrics[name]
            continue
        for rec, r in zip(records, results, strict=True):
            for k, v in r.values.items():
                rec["scores"][column_name(name, k)] = v
    return records


def summarize_records(records: list[dict[str, Any]], prefix: str = "eval/") -> dict[str, float]:
    cols: dict[str, list[float]] = {}
    for r in records:
        for k, v in r["scores"].items():
            cols.setdefault(k, []).append(v)
    return {f"{prefix}{k}": float(np.mean(v)) for k, v in cols.items()}


def mean_over_samples(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Records of several sampled outputs of the same utterances (one list per sample, records as
    :func:`score_entries` writes them) → one record per utterance whose scores are the mean over
    the samples that have each column, in the first list's order. ``samples`` counts the
    outputs averaged; skips and errors of any sample are kept."""
    if len(runs) == 1:
        return runs[0]
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    order: list[str] = []
    for recs in runs:
        for r in recs:
            if r["id"] not in by_id:
                order.append(r["id"])
            by_id[r["id"]].append(r)
    out = []
    for uid in order:
        recs = by_id[uid]
        values: dict[str, list[float]] = defaultdict(list)
        skipped: dict[str, str] = {}
        errors: dict[str, str] = {}
        for r in recs:
            for col, v in r["scores"].items():
                values[col].append(v)
            skipped.update(r.get("skipped", {}))
            errors.update(r.get("errors", {}))
        scores = {col: float(np.mean(v)) for col, v in values.items()}
        out.append(
            {
                "id": uid,
                "scores": scores,
                "skipped": skipped,
                "errors": errors,
                "samples": len(recs),
            }
        )
    return out


def selection_columns(
    infos: dict[str, MetricInfo], columns: list[str]
) -> tuple[dict[str, str], list[str]]:
    """``{column: reward scale}`` for best-of-N selection by ``columns`` (each an output
    column of one of the metrics in ``infos``), and the columns that read the reference, the
    text or the speaker, which make the selection an oracle (logged as a warning)."""
    from sealign.rewards.composite import auto_scale

    known = {column_name(m, out): (info, out) for m, info in infos.items() for out in info.outputs}
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ValueError(f"best_of: {unknown} not among the scored columns {sorted(known)}")
    oracle = [c for c in columns if any(
        (known[c][0].needs_reference, known[c][0].needs_text, known[c][0].needs_speaker_ref))]  # fmt: skip
    if oracle:
        log.warning("best_of selects by %s, which read(s) the clean reference, text or speaker: "
                    "an oracle selection, not one a deployed system could make", oracle)  # fmt: skip
    return {c: auto_scale(*known[c]) for c in columns}, oracle


def best_of_samples(
    runs: list[list[dict[str, Any]]], scales: dict[str, str]
) -> list[dict[str, Any]]:
    """Records of several sampled outputs of the same utterances → per utterance, the record of
    the sample with the highest sum of the ``scales`` columns on the reward scale (MOS →
    (m − 1)/4, error rates → 1 − min(e, 1)); ``selected`` is its index. Samples missing a
    column are not candidates; an utterance with no candidate keeps sample 0, its reason in
    ``skipped["best_of"]``."""
    from sealign.rewards.composite import to_reward_scale

    by_id: dict[str, list[dict[str, Any] | None]] = defaultdict(lambda: [None] * len(runs))
    for k, recs in enumerate(runs):
        for r in recs:
            by_id[r["id"]][k] = r
    out = []
    for uid in [r["id"] for r in runs[0]]:
        recs = by_id[uid]
        value = [
            sum(to_reward_scale(r["scores"][c], s) for c, s in scales.items())
            if r is not None and all(c in r["scores"] for c in scales)
            else -np.inf
            for r in recs
        ]
        k = int(np.argmax(value))
        rec = dict(recs[0] if value[k] == -np.inf else recs[k])  # type: ignore[arg-type]
        if value[k] == -np.inf:
            k = 0
            rec["skipped"] = {**rec.get("skipped", {}), "best_of": "no sample has every column"}
        out.append({**rec, "selected": k})
    return out
