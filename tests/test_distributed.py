"""Single-process behaviour of the data-parallel helpers (the multi-process runs are tested with
their trainers: test_train_sft, test_prefs_dpo, test_gspo)."""

from __future__ import annotations

import logging

import pytest
import torch

from sealign.train.checkpoint import TrainerState, rng_state
from sealign.train.distributed import (
    Dist,
    gather_to_all,
    init_distributed,
    mean_over_ranks,
    rank_device,
    restore_rank_state,
)


def test_each_rank_of_a_cuda_run_gets_its_own_gpu():
    assert rank_device("cuda", 3) == "cuda:3"
    assert rank_device("cuda:1", 3) == "cuda:1"  # an explicit index is the user's choice
    assert rank_device("cpu", 3) == "cpu"
    assert Dist(1, 2, local_rank=1).device("cuda") == "cuda:1"
    assert Dist().device("cuda") == "cuda"  # one process: the device as given


def test_rank_zero_seeds_as_a_single_process_and_the_others_apart():
    assert Dist().seed(7) == Dist(0, 4).seed(7) == 7
    assert len({Dist(r, 4).seed(7) for r in range(4)}) == 4


def test_without_torchrun_everything_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = init_distributed("cpu")
    assert (d.rank, d.world_size, d.main) == (0, 1, True)
    assert mean_over_ranks({"loss": 2.0}, d) == {"loss": 2.0}
    assert gather_to_all({"a": 1}, d) == [{"a": 1}]
    assert restore_rank_state(TrainerState(step=3), d, 0) is None


def test_a_rank_missing_from_the_checkpoint_reseeds_and_says_so(caplog):
    torch.manual_seed(0)
    saved = [{"rng": rng_state(), "epoch": 1, "index": 4}]  # a one-rank checkpoint
    g = torch.Generator().manual_seed(123)
    with caplog.at_level(logging.WARNING):
        got = restore_rank_state(
            TrainerState(step=5, extra={"ranks": saved}), Dist(1, 2), 10, {"g": g}
        )
    assert got is None and "reseeds" in caplog.text
    a = torch.rand(3, generator=g)
    assert torch.equal(a, torch.rand(3, generator=torch.Generator().manual_seed(15)))
    # with an entry per rank, the rank gets its own state back
    torch.manual_seed(1)
    mine = {"rng": rng_state(), "epoch": 2, "index": 1}
    want = torch.rand(2)
    torch.manual_seed(99)
    state = TrainerState(step=5, extra={"ranks": [saved[0], mine]})
    assert restore_rank_state(state, Dist(1, 2), 10) is mine
    assert torch.equal(torch.rand(2), want)


def test_commands_that_do_not_split_their_work_refuse_torchrun(monkeypatch, capsys, tmp_path):
    from sealign.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["metrics"]) == 2
    err = capsys.readouterr().err
    assert "sealign metrics runs as one process, not under torchrun (WORLD_SIZE=2)" in err
    assert main(["data", "import", "recordings", "--noisy", str(tmp_path), "--output",
                 str(tmp_path / "m.jsonl")]) == 2  # fmt: skip
    assert "sealign data import runs as one process" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(["metrics"]) == 0


def test_collectives_run_on_the_gpu_under_nccl(monkeypatch):
    # NCCL has no CPU tensors: statistics and flags made on the CPU go through this GPU
    import torch.distributed as dist

    from sealign.train.distributed import collective_device

    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert collective_device() == torch.device("cuda", 3)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    assert collective_device() == torch.device("cpu")


def test_each_process_of_a_split_job_gets_its_own_gpu(monkeypatch):
    from sealign.train.distributed import process_device

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert process_device("cuda") == "cuda"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert process_device("cuda") == "cuda:2" and process_device("cpu") == "cpu"
    assert process_device("cuda:0") == "cuda:0"  # one process per machine: the user's GPU
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="all of this machine's torchrun processes on one GPU"):
        process_device("cuda:0")
    assert process_device("cuda") == "cuda:2"


def test_cuda_rng_states_restore_onto_the_gpus_this_process_sees(monkeypatch):
    from sealign.train import checkpoint

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: calls.append((s, i)))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    state = rng_state()
    assert "cuda" not in state  # CUDA never started: nothing to save, and it is not started
    state["cuda"] = ["gpu0", "gpu1"]  # saved on a machine with two visible GPUs
    checkpoint.set_rng_state(state)
    assert calls == [("gpu0", 0)]


def test_gradients_are_averaged_in_buckets_back_into_their_own_parameters(monkeypatch, tmp_path):
    """Gradients go through one all-reduce per bucket and come back to the right parameter
    with the right shape; a parameter without a gradient counts as zero. A one-process group
    that says it is one of two halves every gradient."""
    import torch.distributed as dist

    from sealign.train import distributed as D

    monkeypatch.setattr(D, "GRAD_BUCKET_NUMEL", 10)  # several buckets
    calls = []
    real = dist.all_reduce
    monkeypatch.setattr(
        dist, "all_reduce", lambda x, **kw: calls.append(x.numel()) or real(x, **kw)
    )
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    try:
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.zeros(s)) for s in [(2, 3), (4,), (), (3, 3), (5,)]]
        grads = [torch.randn(p.shape, generator=g) for p in params]
        for p, gr in zip(params, grads, strict=True):
            p.grad = gr.clone()
        params[3].grad = None
        D.average_gradients(params, D.Dist(rank=0, world_size=2))
    finally:
        dist.destroy_process_group()
    for i, (p, gr) in enumerate(zip(params, grads, strict=True)):
        expect = torch.zeros_like(gr) if i == 3 else gr / 2
        assert p.grad is not None and p.grad.shape == p.shape
        torch.testing.assert_close(p.grad, expect, rtol=0, atol=0)
    assert calls == [10, 10, 5]  # 6 + 4, then 1 + 9, then 5 elements


def test_ranks_that_see_different_checkpoints_stop_with_a_message(monkeypatch, tmp_path):
    # e.g. two machines whose output folders are not one shared folder
    from sealign.train import distributed as D

    d = D.Dist(rank=0, world_size=2)
    monkeypatch.setattr(D, "gather_to_all", lambda obj, d: [obj, None])
    with pytest.raises(ValueError, match=r"rank 0: step_00000002, rank 1: no checkpoint"):
        D.check_same_start(tmp_path, tmp_path / "checkpoints" / "step_00000002", d)
    D.check_same_start(tmp_path, None, d)  # all from scratch
    monkeypatch.setattr(D, "gather_to_all", lambda obj, d: [obj, obj])
    D.check_same_start(tmp_path, tmp_path / "checkpoints" / "step_00000002", d)


def test_the_process_group_timeout_is_an_environment_setting(monkeypatch):
    from datetime import timedelta

    from sealign.train.distributed import TIMEOUT_ENV, group_timeout

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert group_timeout() == timedelta(hours=2)
    monkeypatch.setenv(TIMEOUT_ENV, "600")
    assert group_timeout() == timedelta(hours=10)
    for bad in ("0", "-5", "inf", "soon"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=TIMEOUT_ENV):
            group_timeout()


def test_a_metrics_own_cuda_device_is_this_ranks_gpu(monkeypatch):
    from sealign.metrics import registry

    seen = {}
    monkeypatch.setattr(registry, "metric_class", lambda name: lambda **kw: seen.update(kw))
    monkeypatch.setattr(registry, "_parameters", lambda factory: {})
    monkeypatch.setattr(registry, "check_device", lambda device: None)  # no GPU here
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    registry.build_metric("x", device="cuda")  # metric_options.<x>.device: cuda
    assert seen["device"] == "cuda:2"
    registry.build_metric("x", metric_device="cuda:2")  # the command's, already this rank's
    assert seen["device"] == "cuda:2"
    with pytest.raises(ValueError, match="all of this machine's torchrun processes"):
        registry.build_metric("x", device="cuda:0")
