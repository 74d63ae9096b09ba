"""Splitting an offline job (``sealign prefs``, ``score``, ``enhance``, ``eval``, ``data synth``,
``data degrade``) over several processes or machines: shard ``K/N`` takes inputs ``K, K + N,
K + 2N, ...`` of the job's input list and writes its own records file beside the others
(``<name>.shard-K-of-N.jsonl``), so that shards never write to the same file, and a ``.done``
marker when it has finished; merging folds the parts back into one file in input order.

A shard comes from the job's ``--shard`` (``"2/8"``: 0-based index / count; for job arrays on
a cluster) or, when that is empty, from ``torchrun``'s ``RANK`` / ``WORLD_SIZE`` (the global
rank, so it holds across machines; their output folder must be one they all see).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sealign.utils.jsonio import read_jsonl, write_jsonl

log = logging.getLogger(__name__)
T = TypeVar("T")
Record = dict[str, Any]
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_LAYOUT_RE = re.compile(r"\.shard-\d+-of-(\d+)\.")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1
    # a rank of a torchrun launch (not an explicit K/N): the ranks meet in a process group
    torchrun: bool = field(default=False, compare=False)

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
        return cls(int(os.environ.get("RANK", "0")), world, True) if world > 1 else cls()

    def connect(self) -> Shard:
        """Join the process group of this torchrun launch's ranks now, before the command's
        slow set-up (models, metrics): a rank that fails later has joined, so the others see
        its connection close instead of waiting for it. Returns ``self``."""
        if self.torchrun:
            _join_launch()
        return self

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

    def begin(self, path: Path) -> None:
        """Remove this shard's marker left by an earlier run of the same job (its records file
        is being rewritten or extended now). The ranks of a torchrun launch then wait for each
        other, so that no rank's old marker outlives the start of the launch."""
        if self.sharded:
            self.done_marker(path).unlink(missing_ok=True)
        if self.torchrun:
            _launch_barrier("start")

    def mark_done(self, path: Path) -> None:
        """Record that this shard has finished writing ``self.path(path)`` (what ``--merge``
        checks)."""
        if self.sharded:
            self.done_marker(path).write_text("")

    def settle(self, path: Path, manual: bool, then: str) -> bool:
        """After this shard's work on ``path``: mark it done and say whether this process goes
        on to merge the shards. Only rank 0 of a torchrun launch does, once every rank is done
        (they meet in a process group; a rank that died is an error, not a wait); the other
        ranks, and each shard of a job array (``manual``: an explicit ``K/N``), log what
        completes the job (``then``) and stop. Without shards: True."""
        if not self.sharded:
            return True
        self.mark_done(path)
        if self.torchrun and not manual:
            _launch_barrier("end")  # every rank has written its part
            _leave_launch()
            if self.index != 0:
                log.info("shard %d/%d done; rank 0 merges the shards", self.index, self.count)
                return False
            self._see_every_part(path)
            return True
        log.info("shard %d/%d done; when every shard is: %s", self.index, self.count, then)
        return False

    def _see_every_part(self, path: Path, patience_s: float = 60.0) -> None:
        """Raise unless every rank's marker of ``path`` is visible here (after the ranks met):
        on several machines the output folder must be one they all see. A network file system
        may show another machine's new files some seconds late, hence ``patience_s``."""
        markers = [Shard(k, self.count).done_marker(path) for k in range(self.count)]
        deadline = time.monotonic() + patience_s
        while missing := [m.name for m in markers if not m.is_file()]:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{path.parent}: the other ranks finished, but their parts are not here "
                    f"(no {', '.join(missing)}): on several machines the output folder must be "
                    "one folder every machine sees (a shared file system), with the same path"
                )
            time.sleep(1.0)


_OWN_GROUP: list[bool] = []  # whether the process group of _launch_barrier was created here


def _launch_barrier(when: str) -> None:
    """Wait until every rank of this torchrun launch gets here, through a gloo process group
    (created on first use): unlike marker files, it cannot mistake an earlier launch's files
    for this one's, and a rank that died ends the wait with an error instead of a hang."""
    import torch.distributed as dist

    try:
        _join_launch()
        dist.barrier()
    except Exception as err:  # noqa: BLE001 - the backend's errors have no common type
        raise RuntimeError(
            f"a rank of this torchrun launch failed or stopped before the job's {when} ({err}); "
            "run the same command again (with --resume where it has one) to redo what is missing"
        ) from err


def _join_launch() -> None:
    import torch.distributed as dist

    from sealign.train.distributed import init_group

    if not dist.is_initialized():
        init_group("gloo")
        _OWN_GROUP.append(True)


def _leave_launch() -> None:
    if _OWN_GROUP:
        import torch.distributed as dist

        dist.destroy_process_group()
        _OWN_GROUP.clear()


# beside a scores file: the metrics' versions and settings it was written with (eval.score)
SETTINGS_SUFFIX = ".metrics.json"


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


def record_id(rec: Record) -> Hashable:
    """The ``id`` of a manifest or score record (their key and item for merging)."""
    return rec["id"]


def require_finished_shards(path: Path) -> None:
    """Before a merge: every shard of one of the job's layouts (the ``K/N`` its shard files and
    ``.done`` markers show) must have marked ``path`` done. Merging an unfinished job would
    leave the missing shards' inputs out, and a later merge of those shards would replace, not
    extend, the merged file."""
    names = [f.name for f in (*shard_files(path), *shard_files(path.with_suffix(".done")))]
    layouts = sorted({int(m.group(1)) for n in names if (m := _LAYOUT_RE.search(n))})
    missing = [f"{k}/{n}" for n in layouts for k in range(n)
               if not Shard(k, n).done_marker(path).is_file()]  # fmt: skip
    complete = [n for n in layouts if not any(m.endswith(f"/{n}") for m in missing)]
    if missing and not complete:  # (one complete layout covers every input; others add none)
        several = f" (files of {len(layouts)} shard layouts: " if len(layouts) > 1 else " ("
        raise ValueError(
            f"{path.parent}: shard {', '.join(missing)} has not finished{several}no "
            f"{Shard(*map(int, missing[0].split('/'))).done_marker(path).name}); run or resume "
            "it first: merging now would leave its inputs out"
        )


def merge_shard_files(
    path: Path,
    key: Callable[[Record], Hashable],
    item: Callable[[Record], Hashable],
    keep_existing: bool = True,
    warn_unfinished: bool = True,
) -> list[Record] | None:
    """Fold the shard files of ``path`` into ``path`` and remove them with their markers.

    Records already in ``path`` come first (or are replaced, without ``keep_existing``); then
    the shards' items (runs of consecutive records with the same ``item``) are interleaved,
    shard 0's first, shard 1's first, ..., which restores the job's input order; a record whose ``key`` is already there is dropped. Returns every
    record of ``path``, or None when there was nothing to merge. A shard without its ``.done``
    marker has not finished: what it wrote is merged, with a warning (``warn_unfinished=False``
    when the job's markers are on another file).
    """
    shards = shard_files(path)
    if not shards:
        return None
    for f in shards if warn_unfinished else []:
        if not f.with_suffix(".done").is_file():
            log.warning("%s: that shard has not finished; merging what it wrote", f.name)
    runs: list[list[list[Record]]] = []
    for f in shards:
        groups: list[list[Record]] = []
        for rec in read_jsonl(f):
            if groups and item(groups[-1][-1]) == item(rec):
                groups[-1].append(rec)
            else:
                groups.append([rec])
        runs.append(groups)
    merged = read_jsonl(path) if keep_existing and path.is_file() else []
    seen = {key(r) for r in merged}
    for i in range(max(len(g) for g in runs)):
        for groups in runs:
            for rec in groups[i] if i < len(groups) else []:
                if key(rec) not in seen:
                    seen.add(key(rec))
                    merged.append(rec)
    write_jsonl(path, merged)
    recorded = [f.with_name(f.name + SETTINGS_SUFFIX) for f in shards]
    texts = {r.read_text(encoding="utf-8") for r in recorded if r.is_file()}
    if len(texts) > 1:
        log.warning("%s: its shards were scored with different metric settings; the merged "
                    "file records shard 0's", path.name)  # fmt: skip
    if recorded[0].is_file():
        recorded[0].replace(path.with_name(path.name + SETTINGS_SUFFIX))
    remove_shard_files(path)
    log.info("merged %d shard files into %s", len(shards), path)
    return merged


def remove_shard_files(path: Path) -> None:
    """Delete the shard files of ``path``, their settings files and every shard's ``.done``
    marker."""
    for f in shard_files(path):
        f.unlink()
        f.with_name(f.name + SETTINGS_SUFFIX).unlink(missing_ok=True)
    for marker in shard_files(path.with_suffix(".done")):
        marker.unlink()
