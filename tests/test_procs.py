"""Pool workers end when the command that owns the pool is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

PARENT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from sealign.utils.procs import pool_worker_init
pool = ProcessPoolExecutor(1, initializer=pool_worker_init, initargs=(time.sleep, 0))
print(pool.submit(os.getpid).result(), flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it has exited all the same
    stat = f"/proc/{pid}/stat"
    return not (os.path.exists(stat) and open(stat).read().split()[2] == "Z")


def test_pool_workers_exit_when_their_parent_is_killed():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, env=env,
                              text=True)  # fmt: skip
    worker = int(parent.stdout.readline())
    assert _alive(worker)
    parent.send_signal(signal.SIGKILL)  # skips the pool's shutdown, as an OOM kill would
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)
