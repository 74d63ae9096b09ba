"""Content-addressed score cache: rescoring identical audio with identical settings is free.

Key = sha256 over metric name, metric version, its settings, and the bytes of every input the
metric reads (audio, and reference / text / speaker reference when declared). Stored in SQLite,
which makes each write atomic and lets several processes share one cache file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from pathlib import Path

import numpy as np

from sealign.metrics.base import Metric, MetricResult, Utterance


def _hash_array(h: hashlib._Hash, x: np.ndarray | None) -> None:
    if x is None:
        h.update(b"\0none")
        return
    a = np.ascontiguousarray(x, dtype=np.float32)
    h.update(str(a.shape).encode())
    h.update(a.tobytes())


def cache_key(metric: Metric, utt: Utterance) -> str:
    """Hash of everything that determines ``metric``'s output on ``utt``."""
    info = metric.info
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [info.name, info.version, metric.settings()], sort_keys=True, default=str
        ).encode()
    )
    h.update(str(utt.sample_rate).encode())
    _hash_array(h, utt.audio)
    # Only inputs the metric can read enter the key, so e.g. DNSMOS hits regardless of text.
    used = metric.inputs_used()
    if "reference" in used:
        _hash_array(h, utt.reference)
        if utt.reference_rate:  # (keys of references at the audio's rate stay as they were)
            h.update(f"\0rate{utt.reference_rate}".encode())
    if "speaker_ref" in used:
        _hash_array(h, utt.speaker_ref)
        if utt.speaker_ref_rate:
            h.update(f"\0rate{utt.speaker_ref_rate}".encode())
    if "text" in used:
        h.update(b"\0text" + (utt.text or "").encode())
    return h.hexdigest()


log = logging.getLogger("sealign")


class ScoreCache:
    """SQLite-backed map from :func:`cache_key` to a stored :class:`MetricResult` (errors are not cached)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        self._db.commit()
        self.hits = 0
        self.misses = 0
        self.broken = False  # damaged under us: the run goes on uncached

    def _failed(self, err: Exception) -> None:
        if not self.broken:
            log.warning("score cache %s is damaged (%s); scoring goes on without it (delete "
                        "the file to start a new one)", self.path, err)  # fmt: skip
        self.broken = True

    def get(self, key: str) -> MetricResult | None:
        row = None
        if not self.broken:
            try:
                with self._lock:
                    row = self._db.execute(
                        "SELECT value FROM scores WHERE key = ?", (key,)
                    ).fetchone()
            except sqlite3.DatabaseError as err:
                self._failed(err)
        with self._lock:  # scorers may share the cache from several threads
            if row is None:
                self.misses += 1
            else:
                self.hits += 1
        return None if row is None else MetricResult.from_json(json.loads(row[0]))

    def put(self, key: str, result: MetricResult) -> None:
        if result.error is not None or self.broken:
            return
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO scores (key, value) VALUES (?, ?)",
                    (key, json.dumps(result.to_json())),
                )
                self._db.commit()
        except sqlite3.DatabaseError as err:
            self._failed(err)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def score_with_cache(
    metric: Metric, utts: list[Utterance], cache: ScoreCache | None
) -> list[MetricResult]:
    """``metric.score_batch`` that looks every utterance up in ``cache`` first."""
    if cache is None:
        return metric.score_batch(utts)
    keys = [cache_key(metric, u) for u in utts]
    results: list[MetricResult | None] = [cache.get(k) for k in keys]
    todo = [i for i, r in enumerate(results) if r is None]
    if todo:
        fresh = metric.score_batch([utts[i] for i in todo])
        for i, r in zip(todo, fresh, strict=True):
            results[i] = r
            cache.put(keys[i], r)
    return results  # type: ignore[return-value]


def open_score_cache(path: str | Path | None) -> ScoreCache | None:
    """The score cache at ``path``, or None (no path, or a cache that cannot be opened: a
    damaged file, a folder in the way, no permission; logged, and scoring goes on uncached)."""
    if not path:
        return None
    path = Path(path).expanduser()
    try:
        return ScoreCache(path)
    except (sqlite3.DatabaseError, OSError) as err:
        log.warning(
            "score cache %s cannot be used (%s); scoring without it (delete the file, or set "
            "another path with cache=...)",
            path,
            err,
        )
        return None
