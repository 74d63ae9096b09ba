"""Splitting an offline job (``sealign prefs``, ``sealign score``) over several processes or
machines: shard ``K/N`` takes inputs ``K, K + N, K + 2N, ...`` of the job's input list and writes
its own records file beside the others, so that shards never write to the same file.

A shard comes from the job's ``shard`` setting (``"2/8"``: 0-based index / count; for job
arrays on a cluster) or, when that is empty, from ``torchrun``'s ``RANK`` / ``WORLD_SIZE``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str, key: str = "shard") -> Shard:
        """``""`` → the whole job (or torchrun's rank, see :meth:`resolve`); ``"K/N"`` → shard K
        of N (0 <= K < N)."""
        if not text:
            return cls()
        m = _SHARD_RE.match(str(text))
        if not m or not int(m.group(1)) < int(m.group(2)):
            raise ValueError(f"{key}: {text!r} is not K/N with 0 <= K < N (e.g. 0/4)")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def resolve(cls, text: str, key: str = "shard") -> Shard:
        """The shard of ``text``, or under ``torchrun`` (``WORLD_SIZE`` > 1) this rank's."""
        if text:
            return cls.parse(text, key)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world) if world > 1 else cls()

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def take(self, items: Sequence[T]) -> list[T]:
        """This shard's items: every ``count``-th from ``index``."""
        return list(items[self.index :: self.count])

    def path(self, path: Path) -> Path:
        """This shard's version of ``path`` (``scores.jsonl`` → ``scores.shard-2-of-8.jsonl``)."""
        if not self.sharded:
            return path
        return path.with_name(f"{path.stem}.shard-{self.index}-of-{self.count}{path.suffix}")

    def done_marker(self, path: Path) -> Path:
        return self.path(path).with_suffix(".done")

    def mark_done(self, path: Path) -> None:
        """Record that this shard has finished writing ``self.path(path)``."""
        if self.sharded:
            self.done_marker(path).write_text("")

    def wait_for_all(self, path: Path, poll_seconds: float = 5.0, log=None) -> None:
        """Block until every shard of this job has marked ``path`` done."""
        markers = [Shard(k, self.count).done_marker(path) for k in range(self.count)]
        announced = False
        while not all(m.is_file() for m in markers):
            if log is not None and not announced:
                missing = [m.name for m in markers if not m.is_file()]
                log.info("waiting for the other shards (%s)", ", ".join(missing))
                announced = True
            time.sleep(poll_seconds)


def shard_files(path: Path) -> list[Path]:
    """The shard files of ``path`` that exist (``<stem>.shard-K-of-N<suffix>``), sorted."""
    pattern = re.compile(rf"^{re.escape(path.stem)}\.shard-(\d+)-of-(\d+){re.escape(path.suffix)}$")
    found = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            m = pattern.match(p.name)
            if m:
                found.append(((int(m.group(2)), int(m.group(1))), p))
    return [p for _, p in sorted(found)]
