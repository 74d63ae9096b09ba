"""Data-parallel training under ``torchrun``, shared by the SFT, DPO and GSPO trainers.

With ``WORLD_SIZE > 1`` every process builds the same model, reads its own share of the data and
seeds its own random streams (rank 0 as a single process would); gradients are averaged across
ranks before each optimizer step, so every rank applies the same update and the weights stay
equal. Rank 0 logs, evaluates and saves; its checkpoint holds every rank's random state (and,
where ranks read different data, their data positions), so a resume with the same number of ranks
continues as an uninterrupted run would. Without ``torchrun`` all of this reduces to no-ops.
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sealign.train.checkpoint import TrainerState, set_rng_state

log = logging.getLogger(__name__)

RANK_SEED_STRIDE = 1000  # rank r seeds its random streams with seed + 1000 r


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # the process group was created here (and is destroyed at the end)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> str:
        """This process's device: a bare ``cuda`` becomes its own GPU when there are several
        processes (see :func:`rank_device`)."""
        return rank_device(device, self.local_rank) if self.world_size > 1 else device

    def seed(self, seed: int) -> int:
        """This rank's seed: ``seed`` on rank 0 (the same streams as a single process)."""
        return seed + RANK_SEED_STRIDE * self.rank


def rank_device(device: str, local_rank: int) -> str:
    """The device of one process of a multi-process run: a bare ``cuda`` becomes this
    process's own GPU (``cuda:<LOCAL_RANK>``, as NCCL needs); anything else is kept. A GPU
    index (``cuda:N``) is the user's choice with one process per machine, and an error when
    torchrun starts several on one machine (``LOCAL_WORLD_SIZE`` > 1): all would share it."""
    if device.startswith("cuda:") and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        raise ValueError(
            f"device: {device!r} would put all of this machine's torchrun processes on one "
            "GPU; give 'cuda' (each process takes the GPU of its LOCAL_RANK; choose the GPUs "
            "with CUDA_VISIBLE_DEVICES)"
        )
    return f"cuda:{local_rank}" if device == "cuda" else device


def process_device(device: str) -> str:
    """``device`` for this process of a job: under ``torchrun``, a bare ``cuda`` becomes its own
    GPU (``cuda:<LOCAL_RANK>``); otherwise ``device`` as given. For the jobs that split their
    inputs without a process group (``prefs``, ``score``, ``enhance``, ``eval``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    return rank_device(device, int(os.environ.get("LOCAL_RANK", "0")))


def main_process() -> bool:
    """Whether this process is rank 0 of a torchrun job (or not under torchrun): the one whose
    results (checkpoint paths, tables) are the job's."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def restarted_by_torchrun() -> bool:
    """Whether torchrun restarted this job's workers after a failure (``--max-restarts``): a
    restarted run resumes from its latest checkpoint, as ``--resume`` would."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


TIMEOUT_ENV = "SEALIGN_DIST_TIMEOUT_MIN"


def group_timeout() -> timedelta:
    """How long a rank waits for the others in a collective before the job fails: 120 minutes,
    or ``$SEALIGN_DIST_TIMEOUT_MIN``. Ranks wait while rank 0 evaluates or saves, and the
    shards of an offline job wait for the slowest at the end, so the backends' defaults (10 or
    30 minutes) are too short; a rank that died is noticed at once all the same."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        minutes = float(text) if text else 120.0
    except ValueError:
        minutes = math.nan
    if not 0 < minutes < math.inf:
        raise ValueError(f"${TIMEOUT_ENV}: {text!r} is not a number of minutes > 0")
    return timedelta(minutes=minutes)


JOIN_TIMEOUT = timedelta(minutes=15)


def init_group(backend: str) -> None:
    """Join this torchrun launch's process group. The ranks start together, so under gloo, which
    connects every pair of ranks as they join, all of them not having joined within
    :data:`JOIN_TIMEOUT` (or :func:`group_timeout`, if shorter) means one failed before it
    joined, on another machine, where torchrun does not stop the others: the join fails then,
    not after the collective timeout (two hours), which the group keeps afterwards. NCCL
    connects at the first collective, under the collective timeout."""
    import torch.distributed as dist
    from torch.distributed import distributed_c10d

    wait = group_timeout()
    # private helpers: without them the join waits as long as a collective
    set_timeout = getattr(distributed_c10d, "_set_pg_timeout", None)
    store = getattr(distributed_c10d, "_get_default_store", None)
    join = min(wait, JOIN_TIMEOUT) if backend == "gloo" and set_timeout and store else wait
    try:
        dist.init_process_group(backend, timeout=join)
    except Exception as err:  # noqa: BLE001 - the backends' errors have no common type
        waited = any(w in str(err).lower() for w in ("timeout", "timed out"))
        why = (f"the ranks of this torchrun launch did not all join within {join}: one failed "
               "before it joined (its log says why), or cannot reach MASTER_ADDR:MASTER_PORT"
               if waited else "this rank could not join the launch's process group")  # fmt: skip
        raise RuntimeError(f"{why} ({err})") from err
    if join != wait:
        set_timeout(wait)  # the group's collectives
        store().set_timeout(wait)  # and what later waits on the launch's store


def init_distributed(device: str) -> Dist:
    """Rank and world size from ``torchrun``'s environment; process group when > 1 (on
    ``cuda``, after selecting this process's GPU, see :func:`rank_device`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(rank_device(device, local)))
    owns = not dist.is_initialized()
    if owns:
        # the other ranks wait in their next collective while rank 0 evaluates or saves: give
        # that more than the backends' default (10 or 30 minutes)
        init_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local, owns)


def close_distributed(d: Dist) -> None:
    """Destroy the process group :func:`init_distributed` created, once every rank is done: a
    rank that exits while another still uses the group can abort ("terminate called without an
    active exception")."""
    if d.owns_group:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def collective_device() -> torch.device:
    """Where tensors must be for the process group's collectives: this process's GPU under
    NCCL (which has no CPU tensors), else the CPU."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _collective(t: torch.Tensor, run: Any) -> None:
    """``run(x)`` on ``t`` in place, through a copy on :func:`collective_device` if ``t`` is
    elsewhere (e.g. a statistic on the CPU under NCCL)."""
    dev = collective_device()
    if t.device == dev:
        run(t)
        return
    x = t.to(dev)
    run(x)
    t.copy_(x.to(t.device))


def any_rank(flag: bool, d: Dist) -> bool:
    """``flag`` OR-ed over the ranks (so that a decision like a time budget is taken by all)."""
    if d.world_size == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)])
    _collective(t, lambda x: dist.all_reduce(x, op=dist.ReduceOp.MAX))
    return bool(t.item())


def mean_over_ranks(values: dict[str, float], d: Dist) -> dict[str, float]:
    """Each value averaged over the ranks (every rank must pass the same keys)."""
    if d.world_size == 1 or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    _collective(t, lambda x: dist.all_reduce(x, op=dist.ReduceOp.SUM))
    return {k: float(v) / d.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def sum_over_ranks(values: list[float], d: Dist) -> list[float]:
    """Each value summed over the ranks (every rank passes as many)."""
    if d.world_size == 1 or not values:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    _collective(t, lambda x: dist.all_reduce(x, op=dist.ReduceOp.SUM))
    return t.tolist()


def mean_stats_over_ranks(stats: dict[str, float], d: Dist) -> dict[str, float]:
    """Each statistic averaged over the ranks that have a finite value of it (ranks may log
    different keys, e.g. no reward statistics on a rank whose samples all failed)."""
    if d.world_size == 1:
        return stats
    out: dict[str, list[float]] = {}
    for part in gather_to_all(stats, d):
        for k, v in part.items():
            out.setdefault(k, [])
            if math.isfinite(v):
                out[k].append(v)
    return {k: sum(v) / len(v) if v else float("nan") for k, v in out.items()}


def broadcast_weights(module: torch.nn.Module, d: Dist) -> None:
    """Give every rank rank 0's parameters and buffers (a freshly built model is initialized from
    each rank's own random stream)."""
    if d.world_size == 1:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in module.state_dict().values():
            _collective(t, lambda x: dist.broadcast(x, src=0))


GRAD_BUCKET_NUMEL = 25_000_000  # elements per gradient all-reduce (100 MB in float32)


def average_gradients(params: list[torch.nn.Parameter], d: Dist) -> None:
    """Replace each gradient by its mean over the ranks (a parameter without a gradient on
    this rank counts as zero)."""
    if d.world_size == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    # one all-reduce per bucket of same-device, same-dtype gradients, not per parameter
    buckets: dict[tuple[Any, Any], list[list[torch.Tensor]]] = {}
    filled: dict[tuple[Any, Any], int] = {}
    for p in params:
        g = p.grad
        assert g is not None
        key = (g.device, g.dtype)
        group = buckets.setdefault(key, [[]])
        if group[-1] and filled[key] + g.numel() > GRAD_BUCKET_NUMEL:
            group.append([])
            filled[key] = 0
        group[-1].append(g)
        filled[key] = filled.get(key, 0) + g.numel()
    for bucket in (b for group in buckets.values() for b in group):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        _collective(flat, lambda x: dist.all_reduce(x, op=dist.ReduceOp.SUM))
        flat /= d.world_size
        for g, part in zip(bucket, flat.split([g.numel() for g in bucket]), strict=True):
            g.copy_(part.view_as(g))


def gather_to_main(obj: Any, d: Dist) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (None on the others)."""
    if d.world_size == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * d.world_size if d.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def gather_to_all(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj`` as a list on every rank."""
    if d.world_size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def check_same_start(run: Path, ckpt: Path | None, d: Dist) -> None:
    """Raise on every rank unless all ranks start from the same checkpoint of ``run`` (or
    all from scratch): ranks that do not would run different step counts and wait for each
    other in a collective until the timeout. Collective."""
    seen = gather_to_all(None if ckpt is None else ckpt.name, d)
    if len(set(seen)) > 1:
        views = ", ".join(f"rank {r}: {c or 'no checkpoint'}" for r, c in enumerate(seen))
        raise ValueError(
            f"the ranks see different checkpoints in {run} ({views}): the output folder must be "
            "one folder every machine sees (a shared file system), with the same path on each"
        )


def store_rank_states(state: TrainerState, d: Dist, mine: dict[str, Any]) -> None:
    """Put every rank's ``mine`` (its random state, data position, ...) into
    ``state.extra["ranks"]`` on rank 0, before rank 0 saves ``state``. Collective: every rank
    calls it."""
    ranks = gather_to_main(mine, d)
    if d.main and d.world_size > 1:
        state.extra["ranks"] = ranks


def restore_rank_state(
    state: TrainerState, d: Dist, seed: int, generators: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """After ``load_checkpoint`` (which restores rank 0's random states on every rank): set this
    rank's own random streams (and ``generators``) from ``state.extra["ranks"]`` and return its
    entry (for the caller's data position). When the checkpoint has no entry per rank of this
    run, the rank reseeds from ``seed`` and the step instead and None is returned (logged: the
    run goes on, but not as an uninterrupted one would)."""
    ranks = state.extra.get("ranks")
    if d.world_size == 1 and not ranks:
        return None  # a single-process checkpoint: load_checkpoint restored everything
    if not ranks or len(ranks) != d.world_size:
        log.warning(
            "checkpoint holds the random state of %s rank(s), this run has %d: rank %d "
            "reseeds its random streams (the run continues, but not as an uninterrupted one)",
            len(ranks) if ranks else 1, d.world_size, d.rank,
        )  # fmt: skip
        seed_everything(seed + state.step)
        for g in (generators or {}).values():
            g.manual_seed(seed + state.step)
        return None
    mine = ranks[d.rank]
    set_rng_state(mine["rng"], generators)
    return mine
