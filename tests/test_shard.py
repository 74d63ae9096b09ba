"""Splitting offline jobs into shards: parsing, selection, file names, markers and merging."""

from __future__ import annotations

import json

import pytest

from sealign.utils.jsonio import read_jsonl, write_jsonl
from sealign.utils.shard import Shard, merge_shard_files, shard_files


def test_parse_resolve_and_take(monkeypatch):
    assert Shard.parse("") == Shard() and not Shard().sharded
    assert Shard.parse(" 2 / 4 ") == Shard(2, 4)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="is not K/N"):
            Shard.parse(bad)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    assert Shard.resolve("") == Shard(1, 3)  # torchrun's rank
    assert Shard.resolve("0/2") == Shard(0, 2)  # an explicit shard wins
    assert Shard(1, 3).take(list(range(8))) == [1, 4, 7]
    assert sorted(sum((Shard(k, 3).take(list(range(8))) for k in range(3)), [])) == list(range(8))


def test_paths_and_shard_files(tmp_path):
    path = tmp_path / "scores.jsonl"
    assert Shard().path(path) == path
    assert Shard(2, 8).path(path).name == "scores.shard-2-of-8.jsonl"
    assert Shard(2, 8).done_marker(path).name == "scores.shard-2-of-8.done"
    for k in (10, 2):
        Shard(k, 12).path(path).write_text("")
    (tmp_path / "scores.shard-x-of-2.jsonl").write_text("")
    assert [p.name for p in shard_files(path)] == [
        "scores.shard-2-of-12.jsonl",
        "scores.shard-10-of-12.jsonl",
    ]


def test_merge_interleaves_items_dedupes_and_cleans_up(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    assert merge_shard_files(path, lambda r: r["k"], lambda r: r["i"]) is None
    write_jsonl(path, [{"i": "a", "k": "a0"}])
    # shard 0 holds items a, c (two records each), shard 1 item b; a0 is already in the file
    write_jsonl(Shard(0, 2).path(path), [{"i": "a", "k": "a0"}, {"i": "a", "k": "a1"},
                                         {"i": "c", "k": "c0"}, {"i": "c", "k": "c1"}])  # fmt: skip
    write_jsonl(Shard(1, 2).path(path), [{"i": "b", "k": "b0"}])
    Shard(0, 2).mark_done(path)
    merged = merge_shard_files(path, lambda r: r["k"], lambda r: r["i"])
    assert [r["k"] for r in merged] == ["a0", "a1", "b0", "c0", "c1"]
    assert [r["k"] for r in read_jsonl(path)] == ["a0", "a1", "b0", "c0", "c1"]
    assert "c.shard-1-of-2.jsonl: that shard has not finished" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]
    # without keep_existing, the shards replace what was there
    write_jsonl(Shard(0, 2).path(path), [{"i": "z", "k": "z0"}])
    merged = merge_shard_files(path, lambda r: r["k"], lambda r: r["i"], keep_existing=False)
    assert [r["k"] for r in merged] == ["z0"]
    (tmp_path / "cut.jsonl").write_text(json.dumps({"k": 1}) + "\n" + '{"k": 2')  # killed writer
    assert read_jsonl(tmp_path / "cut.jsonl") == [{"k": 1}]


def test_ranks_of_a_launch_meet_in_a_process_group_not_at_marker_files(tmp_path, monkeypatch):
    """Rank 0 merges once every rank has passed the launch's barriers at its start (each
    removes its old marker first) and end, and it finds every rank's marker of this launch
    in the folder. A one-process group stands in for the launch of two."""
    import torch.distributed as dist

    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29591"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    shard = Shard.resolve("")
    assert shard == Shard(0, 2) and shard.torchrun and not Shard.resolve("0/2").torchrun
    path = tmp_path / "m.jsonl"
    Shard(1, 2).done_marker(path).write_text("an earlier launch")
    monkeypatch.setenv("WORLD_SIZE", "1")  # the group: this process alone
    barriers = []
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: barriers.append(dist.get_world_size()))
    assert shard.connect() is shard and dist.is_initialized()  # joined before the set-up
    shard.begin(path)
    assert barriers == [1]
    # rank 1 removed its old marker at its start (another process in a real launch), and if
    # it writes its part into a folder of its own machine, rank 0 says so instead of merging
    Shard(1, 2).done_marker(path).unlink()
    shard.mark_done(path)
    with pytest.raises(RuntimeError, match="no m.shard-1-of-2.done.*folder every machine"):
        shard._see_every_part(path, patience_s=0.1)
    Shard(1, 2).mark_done(path)  # rank 1 of this launch, in the shared folder
    assert shard.settle(path, manual=False, then="")  # rank 0 merges ...
    assert barriers == [1, 1] and not dist.is_initialized()  # ... after the second barrier
    assert shard.done_marker(path).exists()
    # a job array's shard (an explicit K/N) only marks itself done
    assert not Shard(0, 2).settle(path, manual=True, then="merge")


def test_a_rank_that_died_is_an_error_not_a_wait(monkeypatch, tmp_path):
    import torch.distributed as dist

    from sealign.utils import shard as S

    def dead_peer(*a, **k):
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", dead_peer)
    with pytest.raises(RuntimeError, match="a rank of this torchrun launch failed or stopped"):
        S._launch_barrier("end")


def test_a_merge_waits_for_a_complete_layout(tmp_path):
    from sealign.utils.shard import require_finished_shards

    path = tmp_path / "scores.jsonl"
    for k, n in ((0, 2), (0, 3), (1, 3)):
        write_jsonl(Shard(k, n).path(path), [{"id": f"{k}-{n}"}])
        Shard(k, n).mark_done(path)
    with pytest.raises(ValueError, match="shard 1/2, 2/3 has not finished"):
        require_finished_shards(path)
    write_jsonl(Shard(2, 3).path(path), [{"id": "2-3"}])
    Shard(2, 3).mark_done(path)
    require_finished_shards(path)  # layout 3 covers every input: 0/2's abandoned twin is not needed
