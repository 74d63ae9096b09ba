"""Metrics scored in worker processes instead of threads of the calling process.

:class:`MetricWorkers` keeps ``n`` processes for a whole run. Each builds the metrics it is
asked for from their recipe (registry name and options, :func:`build_metric`) or from a pickled
:class:`Metric`, loads them once, and scores batches sent to it. A metric backend that crashes
its process (a segfault in a native library, an abort, ``os._exit`` in a user's metric) takes
down that worker, not the training run: the utterances it was scoring get an error result
(excluded from their group, logged) and the worker is started again. The backends' thread
pools and OpenMP runtimes also stay out of the trainer's process. It buys no speed on a
2-core CPU: the demo's scoring took 15.40 s a step in three processes against 14.75 s in three
threads (``benchmarks/gspo_step.py --steps 4 --workers 3p``, then ``--workers 3``).

Tasks go to an idle worker that has already loaded their metric if there is one, else to any
idle worker (which then loads it), so ``workers`` processes balance uneven metrics. The
processes are started with ``spawn`` (safe with CUDA and with threads already running) and run
``sealign``'s plug-ins (:func:`sealign.plugins.load_plugins`) before building anything.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import pickle
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from sealign.metrics.base import Metric, MetricResult, Utterance

log = logging.getLogger(__name__)

Recipe = tuple[str, dict[str, Any]] | bytes  # (registry name, build_metric options) | pickle


def _build(recipe: Recipe) -> Metric:
    if isinstance(recipe, bytes):
        return pickle.loads(recipe)
    from sealign.metrics.registry import build_metric

    name, options = recipe
    return build_metric(name, **options)


def _serve(conn: Connection, recipes: dict[str, Recipe], log_level: int) -> None:
    """A worker's loop: ``("load", name, None)`` or ``("score", name, utts)`` in, ``("ok",
    payload, seconds)`` or ``("error", exception, 0)`` out; ``None`` or a closed pipe ends it."""
    # Ctrl-C reaches the whole process group: the trainer handles it and stops the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(levelname)s [metric worker] %(message)s")
    try:
        from sealign.plugins import load_plugins

        load_plugins()
    except Exception as err:  # noqa: BLE001 - reported with the first task
        startup: Exception | None = err
    else:
        startup = None
    metrics: dict[str, Metric] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the trainer is gone
            return
        if msg is None:
            return
        kind, name, utts = msg
        t0 = time.perf_counter()
        try:
            if startup is not None:
                raise startup
            if name not in metrics:
                metric = _build(recipes[name])
                metric.load()
                metrics[name] = metric
            payload = metrics[name].score_batch(utts) if kind == "score" else None
            reply: tuple = ("ok", payload, time.perf_counter() - t0)
        except Exception as err:  # noqa: BLE001 - re-raised in the trainer
            reply = ("error", _picklable(err), 0.0)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


def _picklable(err: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - an exception type that cannot cross processes
        return RuntimeError(f"{type(err).__name__}: {err}")


@dataclass
class _Worker:
    process: Any
    conn: Connection
    loaded: set[str] = field(default_factory=set)


class MetricWorkers:
    """``n`` worker processes scoring the metrics named in ``recipes``.

    ``recipes``: metric name → ``(registry name, build_metric options)``, or a :class:`Metric`
    (sent pickled; it must be picklable before :meth:`Metric.load`).
    """

    def __init__(self, recipes: dict[str, Recipe | Metric], n: int) -> None:
        if n < 1:
            raise ValueError(f"metric workers must be >= 1, got {n}")
        self.recipes: dict[str, Recipe] = {}
        for name, r in recipes.items():
            if isinstance(r, Metric):
                try:
                    r = pickle.dumps(r)
                except Exception as err:  # noqa: BLE001
                    raise ValueError(
                        f"metric {name!r} cannot be sent to a worker process ({err}); register "
                        "it (sealign.metrics.register) so the workers build it by name, or "
                        "score in threads (reward.processes: false)"
                    ) from err
            self.recipes[name] = r
        self.n = n
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker | None] = [None] * n

    def _start(self, k: int) -> _Worker:
        ours, theirs = self._ctx.Pipe()
        p = self._ctx.Process(
            target=_serve,
            args=(theirs, self.recipes, logging.getLogger("sealign").getEffectiveLevel()),
            name=f"sealign-metric-worker-{k}",
            daemon=True,
        )
        p.start()
        theirs.close()
        w = _Worker(p, ours)
        self._workers[k] = w
        return w

    def _worker(self, k: int) -> _Worker:
        w = self._workers[k]
        return w if w is not None else self._start(k)

    def load(self) -> None:
        """Start the workers and load every metric now (metric ``i`` in worker ``i mod n``),
        so that a metric that cannot load fails before any work."""
        self.run([("load", name, None) for name in self.recipes], spread=True)

    def score(
        self, tasks: list[tuple[str, list[Utterance]]]
    ) -> list[tuple[list[MetricResult], float]]:
        """Score each ``(metric name, utterances)`` task; per task, the results and the seconds
        the worker spent on it. Tasks run side by side on the workers."""
        return self.run([("score", name, utts) for name, utts in tasks])

    def run(
        self, tasks: list[tuple[str, str, Any]], spread: bool = False
    ) -> list[tuple[Any, float]]:
        """Send each ``(kind, metric name, payload)`` task to a worker; their replies in order
        (a task that raised re-raises here, once all tasks are done)."""
        busy: dict[int, int] = {}  # worker → task
        try:
            return self._run(tasks, spread, busy)
        except BaseException:
            # interrupted (Ctrl-C, a task that cannot be sent, a worker lost while loading):
            # a busy worker's reply would otherwise be read as the answer to the next run's task
            for k in busy:
                self._stop(k)
            raise

    def _run(
        self, tasks: list[tuple[str, str, Any]], spread: bool, busy: dict[int, int]
    ) -> list[tuple[Any, float]]:
        out: list[tuple[Any, float] | None] = [None] * len(tasks)
        todo = deque(range(len(tasks)))
        errors: list[Exception] = []
        while todo or busy:
            while todo and len(busy) < self.n:
                i = todo.popleft()
                k = self._pick(tasks[i][1], set(busy), i if spread else None)
                w = self._worker(k)
                try:
                    w.conn.send(tasks[i])
                except (BrokenPipeError, OSError):
                    out[i] = self._lost(k, tasks[i])
                    continue
                busy[k] = i
            ready = wait([self._workers[k].conn for k in busy])  # type: ignore[union-attr]
            for k in [k for k in busy if self._workers[k].conn in ready]:  # type: ignore[union-attr]
                i = busy.pop(k)
                w = self._workers[k]
                assert w is not None
                try:
                    status, payload, seconds = w.conn.recv()
                except (EOFError, OSError):
                    out[i] = self._lost(k, tasks[i])
                    continue
                if status == "error":
                    errors.append(payload)
                    out[i] = (None, 0.0)
                else:
                    w.loaded.add(tasks[i][1])
                    out[i] = (payload, seconds)
        if errors:
            raise errors[0]
        return out  # type: ignore[return-value]

    def _pick(self, name: str, busy: set[int], spread: int | None) -> int:
        idle = [k for k in range(self.n) if k not in busy]
        if spread is not None and spread % self.n in idle:
            return spread % self.n
        has = [k for k in idle if (w := self._workers[k]) is not None and name in w.loaded]
        fresh = [k for k in idle if self._workers[k] is None or not self._workers[k].loaded]
        return (has or fresh or idle)[0]

    def _lost(self, k: int, task: tuple[str, str, Any]) -> tuple[Any, float]:
        """A worker died on ``task``: its utterances get an error result (a load raises), and
        the worker is started again when next needed."""
        w = self._workers[k]
        assert w is not None
        w.process.join(timeout=5)
        code = w.process.exitcode
        w.conn.close()
        self._workers[k] = None
        kind, name, utts = task
        why = f"the metric worker process died (exit code {code}) while scoring {name}"
        if kind == "load":
            raise RuntimeError(f"{why.replace('scoring', 'loading')}; see its messages above")
        log.warning("%s (%d utterances marked failed); starting it again", why, len(utts))
        return [MetricResult(error=why) for _ in utts], 0.0

    def _stop(self, k: int) -> None:
        """Stop worker ``k`` now (it is started again when next needed)."""
        w = self._workers[k]
        if w is None:
            return
        self._workers[k] = None
        if w.process.is_alive():
            w.process.terminate()
            w.process.join(timeout=5)
        w.conn.close()

    def close(self) -> None:
        """Stop the workers: each ends after its current task (10 s at most), side by side."""
        live = [k for k, w in enumerate(self._workers) if w is not None]
        for k in live:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._workers[k].conn.send(None)  # type: ignore[union-attr]
        for k in live:
            self._workers[k].process.join(timeout=10)  # type: ignore[union-attr]
            self._stop(k)

    def __del__(self) -> None:  # a reward dropped without close(): do not leave processes
        # no module globals here (contextlib.suppress): at interpreter shutdown they may be gone
        try:  # noqa: SIM105
            self.close()
        except Exception:  # noqa: BLE001
            pass
