"""Best-of-N enhancement: sample N outputs per input, keep the one the selection metrics prefer.

The classic inference-time use of a reward (and the baseline an aligned model should beat):
it needs no training but N times the sampling, plus scoring. Selection uses reference-free
columns only (e.g. DNSMOS OVRL, DistillMOS, ``asr_confidence``), summed on the reward scale
(:func:`sealign.eval.score.best_of_samples`); to *measure* an oracle selection by WER or PESQ on
a test set, use ``sealign eval --samples N --best-of COLS``. The candidates stay in
``<output>/candidates/`` with their scores.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sealign.data.manifest import Entry, relocate, write_manifest
from sealign.eval.score import (
    ScoreConfig,
    best_of_samples,
    build_metrics,
    load_metrics,
    metrics_of_columns,
    score_entries,
    selection_columns,
)
from sealign.infer.enhance import MANIFEST, EnhanceResult, enhance_samples
from sealign.metrics.registry import metric_info
from sealign.models.policy import Policy


def selection_metrics(columns: list[str], threads: int = 2) -> tuple[ScoreConfig, dict[str, str]]:
    """The scoring settings and ``{column: reward scale}`` of a reference-free selection by
    ``columns``; raises ``ValueError`` for unknown columns or ones that need a reference."""
    cfg = ScoreConfig(metrics=metrics_of_columns(columns), threads=threads)
    scales, oracle = selection_columns({m: metric_info(m) for m in cfg.metrics}, columns)
    if oracle:
        raise ValueError(
            f"best_of: {oracle} need a reference, text or speaker; best-of-N enhancement selects "
            "by reference-free columns (measure an oracle with `sealign eval --best-of`)"
        )
    return cfg, scales


def enhance_best_of(
    policy: Policy,
    inputs: list[Entry],
    output_dir: str | Path,
    n: int,
    columns: list[str],
    seed: int = 0,
    threads: int = 2,
    manifest: str = MANIFEST,
    candidates: str = "candidates",
    **options: Any,
) -> EnhanceResult:
    """Enhance ``inputs`` ``n`` times (seeds ``seed`` … ``seed + n - 1``, into
    ``output_dir/<candidates>``), score the outputs by ``columns`` and write the best one per
    input to ``output_dir`` with its ``manifest`` (``extra.best_of``: the chosen sample and its
    scores). ``options`` go to :func:`~sealign.infer.enhance.enhance_files`."""
    t0 = time.perf_counter()
    score_cfg, scales = selection_metrics(columns, threads)
    out, cand = Path(output_dir), Path(output_dir) / candidates
    metrics = build_metrics(score_cfg)
    load_metrics(metrics)  # a metric that cannot load stops the command before any sampling
    results = enhance_samples(policy, inputs, cand, "sample", n, seed, **options)
    runs = [
        score_entries(r.entries, score_cfg, cand / f"{tag}.scores.jsonl", metrics=metrics)
        for tag, r in results.items()
    ]
    tags = list(results)
    by_tag = {tag: {e.id: e for e in r.entries} for tag, r in results.items()}
    chosen = {r["id"]: r for r in best_of_samples(runs, scales)}
    written = []
    for e in results[tags[0]].entries:
        rec = chosen[e.id]
        src = by_tag[tags[rec["selected"]]][e.id]
        dst = out / Path(src.audio).name
        tmp = dst.with_name(dst.name + ".partial")
        shutil.copyfile(src.audio, tmp)
        tmp.replace(dst)
        picked = {"selected": rec["selected"], **{c: rec["scores"].get(c) for c in scales}}
        written.append(replace(src, audio=str(dst), extra={**src.extra, "best_of": picked}))
    path = write_manifest(out / manifest, relocate(written, out / manifest))
    failed = {uid: why for r in results.values() for uid, why in r.failed.items()}
    first = results[tags[0]]
    return EnhanceResult(written, path, failed, first.audio_seconds, time.perf_counter() - t0)
