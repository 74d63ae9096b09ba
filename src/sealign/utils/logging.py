"""Run logging to three sinks: the console, a JSONL file and TensorBoard."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def setup_console_logging(level: str = "INFO") -> None:
    """Console logging; under ``torchrun`` each line names its rank (``[rank 1]``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = f"[rank {os.environ.get('RANK', '0')}] " if world > 1 else ""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {rank}%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("numba", "matplotlib", "urllib3", "faster_whisper", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def truncate_log(path: Path, step: int) -> None:
    """Drop the records of ``path`` logged after ``step`` (by a run that was killed after its
    checkpoint: they are redone), and lines cut by the kill."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except (json.JSONDecodeError, AttributeError, TypeError):
            pass  # a line cut by the kill
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    tmp.replace(path)


@contextmanager
def _locked(f: IO[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the open file ``f`` (where the platform and filesystem
    have one): the shards of a job append to one ``log.jsonl``, and one cutting a torn tail must
    not cut another's record half written."""
    try:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    except (ImportError, OSError):
        yield
        return
    try:
        yield
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line left without its newline (a write cut by a kill)."""
    try:
        f = path.open("rb+")
    except FileNotFoundError:
        return
    with f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - (1 << 16))
            f.seek(start)
            block = f.read(pos - start)
            if pos == end and block.endswith(b"\n"):
                return
            cut = block.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            pos = start
        f.truncate(0)


class RunLogger:
    """Scalars to ``<dir>/log.jsonl`` (one JSON object per call) and TensorBoard ``<dir>/tb``.

    ``resume_step``: a training run (re)starting at this step (0 = from scratch): what an
    earlier, killed run logged after it is dropped from both, so that it is not shown twice.
    """

    def __init__(
        self, run_dir: str | Path, tensorboard: bool = True, resume_step: int | None = None
    ) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:  # from scratch: step-0 records (held-out) go too
            truncate_log(self.dir / "log.jsonl", resume_step if resume_step > 0 else -1)
        self._jsonl = (self.dir / "log.jsonl").open("a", encoding="utf-8")
        with _locked(self._jsonl):
            _cut_torn_tail(self.dir / "log.jsonl")  # else the next record joins a killed write
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = None if resume_step is None else (resume_step + 1 if resume_step else 0)
                self._tb = SummaryWriter(str(self.dir / "tb"), purge_step=purge)
            except ImportError:
                logging.getLogger(__name__).warning(
                    "tensorboard not installed; TensorBoard logging off"
                )

    def log(self, scalars: dict[str, float], step: int = 0, **extra: Any) -> None:
        rec = {"time": time.time(), "step": step, **extra, **scalars}
        with _locked(self._jsonl):
            self._jsonl.write(json.dumps(rec, default=float) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                if isinstance(v, int | float):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
