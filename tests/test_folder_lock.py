"""One writer per output folder (sealign.utils.folder_lock)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from sealign.cli import main
from sealign.utils.folder_lock import FolderInUse, FolderLock
from sealign.utils.shard import Shard

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock locks are POSIX")


def hold_in_another_process(folder, shard: str = "", reader: bool = False) -> subprocess.Popen:
    """A process that holds ``folder`` (as shard ``K/N`` when given, or as a reader) until it
    is killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from sealign.utils.folder_lock import FolderLock
        from sealign.utils.shard import Shard
        FolderLock({str(folder)!r}, Shard.parse({shard!r}), {reader!r}).acquire()
        print("held", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def can_hold_elsewhere(folder, shard: str = "") -> bool:
    code = (
        "from sealign.utils.folder_lock import FolderLock, FolderInUse\n"
        "from sealign.utils.shard import Shard\n"
        f"try: FolderLock({str(folder)!r}, Shard.parse({shard!r})).acquire().release()\n"
        "except FolderInUse: raise SystemExit(3)\n"
    )
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_folder_has_one_writer_and_a_killed_one_leaves_no_lock(tmp_path):
    folder = tmp_path / "run"
    proc = hold_in_another_process(folder)
    try:
        with pytest.raises(
            FolderInUse, match=rf"{folder} is in use by another process \(pid {proc.pid} on "
        ):
            FolderLock(folder).acquire()
        with pytest.raises(FolderInUse):  # nor may a shard of a job write beside it
            FolderLock(folder, Shard(1, 2)).acquire()
    finally:
        proc.kill()  # SIGKILL: the operating system drops its lock
        proc.wait()
    with FolderLock(folder):
        with FolderLock(folder):  # a process may take a folder it holds again
            pass
        assert not can_hold_elsewhere(folder)  # still held by the outer one
    assert can_hold_elsewhere(folder)
    assert not list(folder.glob(".sealign*"))  # the last holder removes the lock file


def test_shards_of_one_job_write_side_by_side_but_not_twice(tmp_path):
    folder = tmp_path / "run"
    dead = hold_in_another_process(folder)  # its lock file keeps its name once it is killed
    dead.kill()
    dead.wait()
    proc = hold_in_another_process(folder, "0/2")
    try:
        with FolderLock(folder, Shard(1, 2)):  # the other shard
            pass
        with pytest.raises(FolderInUse, match="in use by another process"):
            FolderLock(folder, Shard(0, 2)).acquire()  # the same shard again
        with pytest.raises(FolderInUse) as err:  # the whole job, or a merge, while a shard writes
            FolderLock(folder).acquire()
        assert f"pid {dead.pid}" not in str(err.value)  # not named as the holder, the shard is
        assert f"held by shards: pid {proc.pid} on" in str(err.value)
    finally:
        proc.kill()
        proc.wait()


def test_commands_refuse_a_folder_in_use_and_release_theirs(tmp_path, capsys):
    folder = tmp_path / "enhanced"
    proc = hold_in_another_process(folder, "1/2")
    try:
        assert main(["enhance", "--merge", "--output", str(folder)]) == 2
        assert "in use by another process" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()
    assert main(["enhance", "--merge", "--output", str(folder)]) == 2  # now: nothing to merge
    assert "no shard manifests" in capsys.readouterr().err
    assert can_hold_elsewhere(folder)  # the command let go of the folder when it ended
    assert not list(folder.iterdir())  # and removed the lock files the killed holder left


def test_shards_of_two_jobs_and_a_reader_beside_shards_are_refused(tmp_path):
    folder = tmp_path / "run"
    proc = hold_in_another_process(folder, "0/2")
    try:
        with pytest.raises(FolderInUse, match="being written by the shards of another job"):
            FolderLock(folder, Shard(0, 3)).acquire()  # same index, another layout
        with pytest.raises(FolderInUse, match="being written by the shards of a job"):
            FolderLock(folder, reader=True).acquire()
    finally:
        proc.kill()
        proc.wait()
    with FolderLock(folder, reader=True):  # readers share the folder
        assert can_hold_elsewhere(folder, "") is False  # but keep writers out
        with FolderLock(folder, reader=True):
            pass
    with FolderLock(folder, Shard(0, 3)):  # the killed job's layout is stale now
        pass
    proc = hold_in_another_process(folder, reader=True)
    try:  # nor do shards start writing what a reader reads; both refusals name the reader
        reader = rf"read by: pid {proc.pid} on "
        with pytest.raises(FolderInUse, match="being read by another process.*" + reader):
            FolderLock(folder, Shard(0, 2)).acquire()
        with pytest.raises(FolderInUse, match="in use by another process.*" + reader):
            FolderLock(folder).acquire()
    finally:
        proc.kill()
        proc.wait()


def test_dpo_does_not_read_a_dataset_that_prefs_still_writes(tiny_setup, tmp_path, capsys):
    data = tmp_path / "prefs"
    data.mkdir()
    (data / "candidates.jsonl").write_text("")
    proc = hold_in_another_process(data)  # as `sealign prefs` does while it samples
    try:
        args = ["dpo", "--init-from", str(tiny_setup / "base"), "--dataset", str(data),
                "--output", str(tmp_path / "dpo")]  # fmt: skip
        assert main(args) == 2
        assert f"{data} is in use by another process" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "dpo").exists()


def test_a_probe_holding_a_lock_file_for_an_instant_does_not_refuse_a_shard(tmp_path):
    import fcntl
    import threading
    import time

    folder = tmp_path / "run"
    folder.mkdir()
    layout = folder / ".sealign.layout-2.lock"
    held, done = threading.Event(), threading.Event()

    def probe():  # what _busy does from another process: an exclusive lock for an instant
        with layout.open("a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.set()
            time.sleep(0.01)
        done.set()

    t = threading.Thread(target=probe)
    t.start()
    held.wait()
    with FolderLock(folder, Shard(0, 2)):
        assert done.is_set()
    t.join()
