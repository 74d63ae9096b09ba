"""Metrics scored in worker processes (``reward.processes``)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sealign.metrics.base import Metric, MetricInfo, MetricUnavailable, Utterance
from sealign.metrics.workers import MetricWorkers
from sealign.rewards import CompositeReward, RewardConfig


class Peak(Metric):
    """Peak level; ends its process on an utterance named ``crash``."""

    info = MetricInfo(
        name="peak_test", outputs=("peak",), higher_is_better=(True,), ranges=((0.0, None),)
    )

    def _score(self, utts):
        if any(u.id == "crash" for u in utts):
            os._exit(3)  # a native library's abort, as the worker sees it
        return [
            {"peak": float(np.abs(u.audio).max()), "details": {"pid": os.getpid()}} for u in utts
        ]


class Slow(Peak):
    """Peak level, after a second."""

    def _score(self, utts):
        import time

        time.sleep(1.0)
        return super()._score(utts)


class Unloadable(Metric):
    info = MetricInfo(
        name="unloadable_test", outputs=("x",), higher_is_better=(True,), ranges=((0.0, 1.0),)
    )

    def load(self):
        raise MetricUnavailable("weights not found: give model=PATH")


def _utts(speech, n=4):
    clean = speech(0)
    rng = np.random.default_rng(0)
    return [
        Utterance(
            f"u#{j}", clean + 0.02 * j * rng.standard_normal(clean.size), 16000, reference=clean
        )
        for j in range(n)
    ]


def test_rewards_from_worker_processes_equal_those_from_threads(speech, tmp_path):
    utts = _utts(speech)
    comps = [{"metric": "si_sdr"}, {"metric": "estoi"}, {"metric": "pesq_wb"}]
    threads = CompositeReward(RewardConfig(components=comps, workers=2), num_threads=1)(utts)
    cfg = RewardConfig(
        components=comps, workers=2, parts=3, processes=True, cache=str(tmp_path / "c.db")
    )
    reward = CompositeReward(cfg, num_threads=1)
    try:
        reward.load()
        first = reward(utts)
        again = reward(utts)  # from the score cache
    finally:
        reward.close()
    for batch in (first, again):
        np.testing.assert_allclose(batch.values, threads.values, rtol=1e-9)
        assert batch.raw.keys() == threads.raw.keys()
        for name, col in batch.raw.items():  # BLAS sums may differ in the last bit
            np.testing.assert_allclose(col, threads.raw[name], rtol=1e-9)
    assert set(first.seconds) == set(again.seconds) == {"si_sdr", "estoi", "pesq_wb"}
    assert min(first.seconds.values()) > 0 and max(again.seconds.values()) == 0


def test_a_worker_that_dies_fails_its_utterances_and_is_started_again(speech):
    utts = _utts(speech, 2)
    workers = MetricWorkers({"peak_test": Peak(num_threads=1)}, 1)
    try:
        ((ok, _),) = workers.score([("peak_test", utts)])
        pid = ok[0].details["pid"]
        assert pid != os.getpid() and all(r.ok for r in ok)
        ((dead, _),) = workers.score([("peak_test", [Utterance("crash", utts[0].audio, 16000)])])
        assert "died (exit code 3)" in dead[0].error
        ((back, _),) = workers.score([("peak_test", utts)])
        assert [r.values for r in back] == [r.values for r in ok]
        assert back[0].details["pid"] != pid  # a new process
    finally:
        workers.close()


def test_a_metric_that_cannot_load_fails_at_load_with_its_own_message():
    workers = MetricWorkers({"unloadable_test": Unloadable(num_threads=1)}, 2)
    try:
        with pytest.raises(MetricUnavailable, match="give model=PATH"):
            workers.load()
    finally:
        workers.close()


def test_a_metric_that_cannot_cross_processes_is_named():
    metric = Peak(num_threads=1)
    metric.handle = open(os.devnull)  # noqa: SIM115 - unpicklable on purpose
    try:
        with pytest.raises(ValueError, match="'peak_test' cannot be sent to a worker process"):
            MetricWorkers({"peak_test": metric}, 1)
    finally:
        metric.handle.close()


def test_a_run_interrupted_mid_task_leaves_no_reply_for_the_next_one(speech):
    import signal

    class Interrupted(Exception):
        pass

    def interrupt(*_):
        raise Interrupted

    utts = _utts(speech, 2)
    quiet = [Utterance("q", 0.1 * utts[0].audio, 16000)]
    workers = MetricWorkers({"peak_test": Slow(num_threads=1)}, 1)
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        workers.load()
        signal.setitimer(signal.ITIMER_REAL, 0.3)  # Ctrl-C, as the trainer sees it
        with pytest.raises(Interrupted):
            workers.score([("peak_test", utts)])
        ((res, _),) = workers.score([("peak_test", quiet)])
        assert res[0].values["peak"] == pytest.approx(float(np.abs(quiet[0].audio).max()))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        workers.close()
