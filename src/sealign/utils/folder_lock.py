"""One writer per output folder.

Every command that writes or resumes a run folder (records appended as it goes, checkpoints,
shard merges) holds an advisory lock on it (``<folder>/.sealign.lock``), so that a second
process started on the same folder (the same job launched twice, a ``--repair`` or ``--merge``
while the job still runs) stops with a message instead of interleaving its records with the
first one's. Shards of one job (:class:`~sealign.utils.shard.Shard`) write the folder side by
side: each holds the folder's lock and its layout's (``N``) shared and its own shard's lock
exclusively, and refuses to start beside the shards of another layout; a process without a
shard holds the folder exclusively. A reader (DPO reading a preference dataset) holds it shared
and refuses to start while shards write it.

The locks are ``flock`` locks: the operating system drops them when their process ends, however
it ends, so a killed run leaves no stale lock (only its empty lock file, which the next holder
removes when it ends). A process may take the lock of a folder it already holds (nested
commands, e.g. ``sealign demo``). A read-only folder, or a filesystem without locks, is used
unlocked, with a warning.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

LOCK_NAME = ".sealign.lock"
READERS_NAME = ".sealign.readers.lock"
_held: dict[Path, list[Any]] = {}  # lock file → [open file, how many holders in this process]
_command = ExitStack()  # the locks taken for the command being run (see :func:`command_scope`)


class FolderInUse(ValueError):
    """Another process holds the folder."""


def _me() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv[:4])}"[:300]


def _alive(line: str) -> bool:
    """Whether the process a ``pid N on HOST: ...`` line names still runs (another host's:
    assumed so)."""
    m = re.match(r"pid (\d+) on (\S+):", line)
    if m and m.group(2) == socket.gethostname():
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            return False
        except OSError:
            pass  # alive, another user's
    return True


def _holder(path: Path) -> str:
    """Who holds ``path``, as its last exclusive holder wrote it, unless that process is gone
    (then the shards of a job hold it, and they do not write their names there)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
    return f" ({text})" if text and _alive(text) else ""


def _readers(path: Path) -> list[str]:
    """The processes reading the folder, as each wrote itself into the readers' file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [line for line in dict.fromkeys(lines) if line.strip() and _alive(line)]


def _try_flock(f: IO[str], exclusive: bool) -> None:
    """``flock`` without blocking, tried five times 20 ms apart: another process's
    :func:`_busy` probe holds a lock file for microseconds, a holder for its whole run."""
    import fcntl

    for attempt in range(5):
        try:
            fcntl.flock(f.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == 4:
                raise
            time.sleep(0.02)


def _flock(path: Path, exclusive: bool, folder: Path) -> IO[str] | None:
    """Lock ``path`` (created if missing) or raise :class:`FolderInUse`; None where the
    filesystem or platform has no locks."""
    try:
        import fcntl  # noqa: F401 - POSIX only; used by _try_flock
    except ImportError:  # not a POSIX system
        return None
    for attempt in range(10):
        existed = path.exists()
        try:
            f = path.open("a+", encoding="utf-8")
        except OSError as err:  # a read-only folder (a dataset of another user): no lock
            log.warning("cannot lock %s (%s): make sure no other process writes to %s", path,
                        err, folder)  # fmt: skip
            return None
        try:
            _try_flock(f, exclusive)
        except BlockingIOError:
            f.close()
            raise FolderInUse(
                f"{folder} is in use by another process{_holder(path)}: wait for it to end, or "
                "use another folder"
            ) from None
        except OSError as err:  # a filesystem without locks
            f.close()
            if not existed:
                path.unlink(missing_ok=True)
            log.warning("cannot lock %s (%s): make sure no other process writes to %s", path,
                        err, folder)  # fmt: skip
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same or attempt == 9:  # (a filesystem whose inode numbers are not stable)
            break
        f.close()  # its last holder removed the file meanwhile: lock the one there now
    if exclusive:
        f.truncate(0)
        f.write(_me())
    elif path.name == READERS_NAME:  # readers sign in one line each
        f.write(_me() + "\n")
    f.flush()
    return f


def _unlock(path: Path, f: IO[str]) -> None:
    """Let go of ``path``, removing the file when no other process holds it (the check that
    :func:`_flock` makes keeps a process that opened it meanwhile from holding a removed file)."""
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except OSError:
        pass  # other shards still hold it
    f.close()


def _busy(path: Path) -> bool:
    """Whether another process holds a lock on ``path``."""
    try:
        with path.open("a+", encoding="utf-8") as f:
            _try_flock(f, exclusive=True)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


class FolderLock:
    """Hold ``folder`` (created if missing) for this process; ``shard`` is a
    :class:`~sealign.utils.shard.Shard` (or None for the whole job), ``reader`` holds it only
    against writers (several readers at once, no writer: DPO reading a preference dataset). Use
    as a context manager, or :meth:`acquire` / :meth:`release`."""

    def __init__(self, folder: str | Path, shard: Any = None, reader: bool = False) -> None:
        self.folder = Path(folder)
        self.sharded = bool(shard is not None and shard.sharded)
        self.reader = reader
        main = self.folder / LOCK_NAME
        self.layout: Path | None = None
        if reader:  # the readers' file tells shards, who share the folder's lock too, of them
            self.locks = [(main, False), (self.folder / READERS_NAME, False)]
        elif self.sharded:  # the job's layout, shared by its shards, then this shard's own
            self.layout = self.folder / f".sealign.layout-{shard.count}.lock"
            own = self.folder / f".sealign.shard-{shard.index}-of-{shard.count}.lock"
            self.locks = [(main, False), (self.layout, False), (own, True)]
        else:
            self.locks = [(main, True)]
        self._taken: list[Path] = []
        self._created: list[Path] = []

    def acquire(self) -> FolderLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"{self.folder} is a file, not a folder")
        # folders this lock creates are removed again if they are still empty at release (a
        # command that failed on its config leaves no trace)
        self._created = [d for d in (self.folder, *self.folder.parents) if not d.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            for path, exclusive in self.locks:
                key = path.resolve()
                if key in _held:
                    _held[key][1] += 1
                else:
                    try:
                        _held[key] = [_flock(path, exclusive, self.folder), 1]
                    except FolderInUse as err:
                        who = self._shards_holding() or self._readers_holding()
                        raise FolderInUse(f"{err}{who}") from None
                self._taken.append(key)
            self._check_other_writers()
        except BaseException:
            self.release()
            raise
        return self

    def _shards_holding(self) -> str:
        """Who holds the folder when its shards do (they leave the folder's lock unnamed)."""
        busy = [p for p in sorted(self.folder.glob(".sealign.shard-*.lock"))
                if p.resolve() not in _held and _busy(p)]  # fmt: skip
        return (
            f" (held by shards: {'; '.join(_holder(p)[2:-1] or p.name for p in busy)})"
            if busy
            else ""
        )

    def _readers_holding(self) -> str:
        """Who holds the folder when readers do (they share its lock and leave it unnamed)."""
        path = self.folder / READERS_NAME
        held = path.exists() and path.resolve() not in _held and _busy(path)
        names = _readers(path) if held else []
        return f" (read by: {'; '.join(names)})" if names else ""

    def _check_other_writers(self) -> None:
        """Shards of another layout (another job) must not write beside this one's, and a
        reader waits for no shard: both share the folder's lock with them."""
        if (
            not (self.reader or self.sharded)
            or _held.get(self.locks[0][0].resolve(), [None])[0] is None
        ):
            return
        patterns = ([".sealign.shard-*.lock"] if self.reader
                    else [".sealign.layout-*.lock", READERS_NAME])  # fmt: skip
        for other in sorted(o for pattern in patterns for o in self.folder.glob(pattern)):
            if other != self.layout and other.resolve() not in _held and _busy(other):
                what = ("being read by another process" + self._readers_holding()
                        if other.name == READERS_NAME
                        else "being written by the shards of "
                        + ("a job" if self.reader else "another job"))  # fmt: skip
                raise FolderInUse(
                    f"{self.folder} is {what} ({other.name}): wait for it to end, or use "
                    "another folder"
                )

    def release(self) -> None:
        while self._taken:
            key = self._taken.pop()
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                if entry[0] is not None:
                    if key.name == LOCK_NAME and not (self.sharded or self.reader):
                        # no shard can hold the folder now: drop the files killed ones left
                        for stale in key.parent.glob(".sealign.*.lock"):
                            if stale.name == LOCK_NAME:
                                continue
                            stale.unlink(missing_ok=True)
                    _unlock(key, entry[0])
        for d in self._created:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def hold_for_command(folder: str | Path, shard: Any = None, reader: bool = False) -> None:
    """Hold ``folder`` until the running CLI command ends (:func:`command_scope`)."""
    _command.enter_context(FolderLock(folder, shard, reader))


@contextmanager
def command_scope() -> Iterator[None]:
    """Release the locks :func:`hold_for_command` took when the command ends."""
    try:
        yield
    finally:
        _command.close()
