"""Thread-count control: the machine may be shared, so every backend takes an explicit count."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_budget: int | None = None  # the process's thread count, as the running command set it


def set_torch_threads(n: int) -> None:
    """Limit torch intra-op threads (inter-op can only be set once per process) and numpy's
    BLAS threads (metrics' products; WPE dereverberation always takes one) to ``n``; ``n`` also
    becomes the :func:`thread_budget` of numpy-side work (WORLD analysis and synthesis)."""
    import torch
    from threadpoolctl import threadpool_limits

    global _budget
    _budget = max(1, int(n))
    torch.set_num_threads(_budget)
    # OpenBLAS otherwise starts one thread per core, whatever the command was told: on a
    # shared or busy machine its spinning threads made WPE 5-45x slower at --threads 1
    threadpool_limits(limits=_budget, user_api="blas")
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # BLAS libraries loaded later
        os.environ[var] = str(_budget)


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: whatever it sets), then restore
    the calling thread's count.

    The count is the calling thread's OpenMP setting, which other backends sharing the OpenMP
    runtime may also set (loading a CTranslate2 Whisper with one thread was seen to leave torch
    at one): without this, a metric could change the thread count of every later training step.
    """
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def thread_budget() -> int:
    """Threads the running command may use (its ``threads`` setting, else the default)."""
    return _budget or default_threads()


def map_threads(fn: Callable[[T], R], items: Sequence[T], threads: int | None = None) -> list[R]:
    """``[fn(x) for x in items]``, spread over up to ``threads`` (default: the budget) threads.

    Only worth it for functions that release the GIL (compiled code); results keep their order.
    """
    n = min(len(items), threads or thread_budget())
    if n < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, items))


def ort_session_options(n: int):
    """onnxruntime session options with ``n`` intra-op threads and one inter-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(n))
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle worker threads sleep instead of spinning, so they leave the cores to whatever runs
    # next or beside (generation, other metrics): -10% GSPO step time with metrics run side by side
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def default_threads() -> int:
    return int(os.environ.get("SEALIGN_THREADS", min(2, os.cpu_count() or 1)))
