"""Small contracts of shared helpers that larger tests would not notice breaking."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from sealign.eval.tables import compare_stats, compare_table
from sealign.metrics.base import MetricInfo
from sealign.utils.jsonio import finite_or_null, tmp_name, write_json
from sealign.utils.logging import RunLogger

SIM = MetricInfo("sim", ("sim",), (True,), ((-1.0, 1.0),))


def _records(values):
    return [{"id": f"u{i}", "scores": {"sim": v}} for i, v in enumerate(values)]


def test_tables_cut_intervals_at_the_metrics_range():
    """Similarities bunched at the top with one outlier: the t interval would pass 1."""
    near_top = [0.999, 1.0, 1.0, 0.998, 0.6]
    systems = {"noisy": _records([0.5, 0.6, 0.55, 0.52, 0.4]), "model": _records(near_top)}
    stats = compare_stats(systems, {"sim": SIM}, ["model"], n_boot=200)
    ci = stats["systems"]["model"]["sim"]
    assert ci["high"] == 1.0 and ci["low"] < ci["mean"] < 1.0
    row = compare_table(systems, {"sim": SIM}).splitlines()[-1]
    assert row.split("|")[3].strip() == f"{ci['mean']:.3f} [{ci['low']:.3f}, 1.000]"
    assert "±" in row.split("|")[2]  # not cut: mean ± half-width


def test_strict_json_nulls_non_finite_numbers_at_any_depth(tmp_path):
    obj = {"a": [math.nan, np.float32(np.inf), (1.5, -math.inf)], "b": {"c": np.float64(2.0)}}
    assert finite_or_null(obj) == {"a": [None, None, [1.5, None]], "b": {"c": 2.0}}
    write_json(tmp_path / "r.json", obj, strict=True)

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    back = json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)
    assert back["a"] == [None, None, [1.5, None]]


def test_temporary_names_differ_across_processes_with_equal_pids(tmp_path, monkeypatch):
    monkeypatch.setattr("os.getpid", lambda: 7)  # containers on two nodes sharing a folder
    names = {tmp_name(tmp_path / "config.yaml") for _ in range(50)}
    assert len(names) == 50 and all(n.parent == tmp_path for n in names)


def test_restarts_by_torchrun_resume(monkeypatch):
    from sealign.train.distributed import restarted_by_torchrun

    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert not restarted_by_torchrun()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert not restarted_by_torchrun()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert restarted_by_torchrun()


def test_attention_metrics_refuse_long_references_too():
    from sealign.metrics.base import ATTENTION_MAX_SECONDS, Metric, Utterance
    from sealign.metrics.phoneme import PhonemeSimilarity

    assert PhonemeSimilarity(num_threads=1).max_seconds == ATTENTION_MAX_SECONDS == 60
    with pytest.raises(ValueError):
        PhonemeSimilarity(num_threads=1, max_seconds=0)

    class Attends(Metric):
        info = MetricInfo("attends", ("x",), (True,), ((0.0, 1.0),), needs_reference=True)
        max_seconds = 2.0

        def _score(self, utts):
            return [{"x": 0.5} for _ in utts]

    short = np.sin(np.arange(16000) / 9).astype(np.float32)
    res = Attends(num_threads=1).score_batch(
        [Utterance("u", short, 16000, reference=np.tile(short, 3)),
         Utterance("v", short, 16000, reference=short)]
    )  # fmt: skip
    assert res[0].error.startswith("reference too long for attends (3.0 s > max_seconds 2")
    assert res[1].ok


def test_a_shipped_name_and_its_folder_are_one_setting():
    from sealign.commands.common import _real_paths
    from sealign.models.shipped import shipped_checkpoint

    by_name = _real_paths({"model": "shipped:ar", "other": "shipped:nope"})
    assert by_name == _real_paths({"model": str(shipped_checkpoint("ar")), "other": "shipped:nope"})


@pytest.mark.parametrize(
    "tail", [b"", b"\n", b'{"step": 3, "lo', b'{"step": 3, "lo' + b"x" * 70000]
)
def test_a_torn_log_line_does_not_swallow_the_next_record(tmp_path, tail):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"step": 1}\n{"step": 2}\n' + tail)
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log({"x": 1.0}, step=4)
    logger.close()
    lines = log.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if line] == [1, 2, 4]
    log.write_bytes(b'{"step": 9')  # only a torn line
    RunLogger(tmp_path, tensorboard=False).close()
    assert log.read_bytes() == b""


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_logger_waits_for_another_writer_before_cutting_its_line(tmp_path):
    import fcntl
    import threading

    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"step": 1}\n{"step": 2, "half')  # another shard is writing this line
    other = log.open("ab")
    fcntl.flock(other.fileno(), fcntl.LOCK_EX)
    t = threading.Thread(target=lambda: RunLogger(tmp_path, tensorboard=False).log({}, step=3))
    t.start()
    t.join(0.5)
    assert t.is_alive()  # waiting for the other writer, its line not cut
    other.write(b'": 1}\n')
    other.flush()
    fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    other.close()
    t.join(10)
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == [1, 2, 3]
    # and each record waits for another writer's
    logger = RunLogger(tmp_path, tensorboard=False)
    other = log.open("ab")
    fcntl.flock(other.fileno(), fcntl.LOCK_EX)
    t = threading.Thread(target=lambda: logger.log({}, step=5))
    t.start()
    t.join(0.5)
    assert t.is_alive()
    other.write(b'{"step": 4}\n')
    other.flush()
    fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    other.close()
    t.join(10)
    logger.close()
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
