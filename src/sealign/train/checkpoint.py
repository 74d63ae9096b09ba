"""Training checkpoints shared by every trainer (SFT, GSPO, DPO).

A checkpoint is a folder ``<run_dir>/checkpoints/step_<N>/`` holding

* ``policy/``      — the policy as written by ``policy.save`` (loadable with ``load_policy``),
  with the ``sampling.json`` it was loaded with (``policy.sampling_defaults``), if any,
* ``trainer.pt``   — optimizer and LR-scheduler state, RNG states (python, numpy, torch and any
  named ``torch.Generator`` / ``numpy.random.Generator``), the data position and the step,
* ``adapters.safetensors`` — with LoRA (``model.lora``) only: the adapters, unmerged, which a
  resumed run puts back on its base policy (``policy/`` holds them merged),
* ``config.yaml``  — the resolved run config,
* ``meta.json``    — step and format version, written last.

Writes are atomic: everything goes to a hidden ``.tmp-step_<N>-<pid>`` folder that is renamed into
place, so a crash leaves either the previous checkpoints or a temp folder that
:func:`latest_checkpoint` ignores (and the next save removes). Only the last ``keep_last``
checkpoints are kept. ``trainer.pt`` holds only tensors and plain Python values, so it loads
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sealign.config import save_config
from sealign.models.lora import adapter_state
from sealign.models.persist import write_sampling
from sealign.models.shipped import model_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp-"
_META = "meta.json"
_TRAINER = "trainer.pt"
_POLICY = "policy"
_ADAPTERS = "adapters.safetensors"

RandomGenerator = torch.Generator | np.random.Generator


@dataclass
class TrainerState:
    """Where a run is: optimizer step, data position and trainer-specific scalars."""

    step: int = 0
    epoch: int = 0
    index: int = 0  # examples of the epoch's shuffled (sharded) order already consumed
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def _checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temp folders and partial ones are ignored)."""
    root = _checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / _META).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of ``run_dir``, or None."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def policy_dir(path: str | Path) -> Path:
    """The saved-policy folder for a run dir (its latest checkpoint), a checkpoint or a policy dir."""
    p = model_path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path}: model not found")
    if (p / CHECKPOINT_DIR).is_dir():
        ckpt = latest_checkpoint(p)
        if ckpt is None:
            raise FileNotFoundError(f"{p}: run has no complete checkpoint")
        p = ckpt
    return p / _POLICY if (p / _META).is_file() else p


# ----------------------------------------------------------------------------------- RNG states


def _np_state(state: dict[str, Any]) -> dict[str, Any]:
    """numpy bit-generator state with arrays as lists (keeps trainer.pt weights_only-loadable)."""
    return {
        k: (_np_state(v) if isinstance(v, dict) else v.tolist() if isinstance(v, np.ndarray) else v)
        for k, v in state.items()
    }


def _np_restore(state: dict[str, Any]) -> dict[str, Any]:
    out = {k: _np_restore(v) if isinstance(v, dict) else v for k, v in state.items()}
    if isinstance(out.get("key"), list):  # MT19937
        out["key"] = np.asarray(out["key"], dtype=np.uint32)
    return out


def rng_state(generators: dict[str, RandomGenerator] | None = None) -> dict[str, Any]:
    """States of the global python / numpy / torch RNGs and of named generators."""
    pyv, pykey, pygauss = random.getstate()
    state: dict[str, Any] = {
        "python": [pyv, list(pykey), pygauss],
        "numpy": _np_state(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
        "generators": {},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # a CPU run never starts CUDA
        state["cuda"] = torch.cuda.get_rng_state_all()
    for name, g in (generators or {}).items():
        if isinstance(g, torch.Generator):
            state["generators"][name] = {"torch": g.get_state()}
        else:
            state["generators"][name] = {"numpy": _np_state(g.bit_generator.state)}
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, RandomGenerator] | None = None):
    """Restore what :func:`rng_state` captured; every named generator must be in ``state``."""
    pyv, pykey, pygauss = state["python"]
    random.setstate((pyv, tuple(pykey), pygauss))
    np.random.set_state(_np_restore(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # as many GPUs as this process sees now (a run resumed with fewer visible GPUs)
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    for name, g in (generators or {}).items():
        saved = state["generators"].get(name)
        if saved is None:
            raise KeyError(f"checkpoint has no state for generator {name!r}")
        if isinstance(g, torch.Generator):
            g.set_state(saved["torch"])
        else:
            g.bit_generator.state = _np_restore(saved["numpy"])


# -------------------------------------------------------------------------------- save / load


def save_checkpoint(
    run_dir: str | Path,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainerState,
    config: Any = None,
    generators: dict[str, RandomGenerator] | None = None,
    keep_last: int = 3,
) -> Path:
    """Write ``step_<state.step>`` atomically and prune to the newest ``keep_last`` checkpoints.

    ``policy`` is anything with ``save(dir)`` (a :class:`~sealign.models.policy.Policy`);
    ``scheduler`` anything with ``state_dict()`` (or None). Returns the checkpoint folder.
    """
    root = _checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(_TMP_PREFIX + "*"):  # left by a crash during an earlier save
        log.warning("removing incomplete checkpoint %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    name = checkpoint_name(state.step)
    tmp = root / f"{_TMP_PREFIX}{name}-{os.getpid()}"
    tmp.mkdir()
    policy.save(tmp / _POLICY)
    write_sampling(tmp / _POLICY, getattr(policy, "sampling_defaults", None))
    adapters = adapter_state(policy) if isinstance(policy, torch.nn.Module) else {}
    if adapters:
        from safetensors.torch import save_file

        save_file(adapters, str(tmp / _ADAPTERS))
    trainer = {
        "format_version": FORMAT_VERSION,
        "state": {
            "step": state.step,
            "epoch": state.epoch,
            "index": state.index,
            "extra": state.extra,
        },
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(generators),
    }
    torch.save(trainer, tmp / _TRAINER)
    if config is not None:
        save_config(config, tmp / "config.yaml")
    meta = {"format_version": FORMAT_VERSION, "step": state.step, "policy": _POLICY}
    (tmp / _META).write_text(json.dumps(meta, indent=1) + "\n")
    _fsync_dir(tmp)
    final = root / name
    if final.exists():  # re-saving a step (e.g. after a resume): swap, then delete the old one
        old = root / f"{_TMP_PREFIX}old-{name}-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    _fsync_dir(root)
    for stale in list_checkpoints(run_dir)[: -max(1, keep_last)]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    for p in [*path.rglob("*"), path]:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def load_checkpoint(
    checkpoint: str | Path,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    generators: dict[str, RandomGenerator] | None = None,
    restore_rng: bool = True,
) -> TrainerState:
    """Restore optimizer, scheduler and RNG states from ``checkpoint``; return its state.

    The policy itself is rebuilt from :func:`policy_dir` by the caller (``load_policy``), before
    the optimizer is created over its parameters.
    """
    ckpt = Path(checkpoint)
    if not (ckpt / _META).is_file():
        raise FileNotFoundError(f"{ckpt}: not a complete checkpoint (no {_META})")
    try:
        data = torch.load(ckpt / _TRAINER, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several kinds for a damaged file
        raise ValueError(f"{ckpt / _TRAINER}: cannot be read ({type(err).__name__}: {err}); "
                         "resume from an earlier checkpoint or start again") from None  # fmt: skip
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        version = data.get("format_version") if isinstance(data, dict) else None
        raise ValueError(f"{ckpt}: unsupported checkpoint format {version}")
    if optimizer is not None:
        optimizer.load_state_dict(data["optimizer"])
    if scheduler is not None and data["scheduler"] is not None:
        scheduler.load_state_dict(data["scheduler"])
    if restore_rng:
        set_rng_state(data["rng"], generators)
    s = data["state"]
    return TrainerState(int(s["step"]), int(s["epoch"]), int(s["index"]), dict(s["extra"]))


def load_adapters(checkpoint: str | Path) -> dict[str, torch.Tensor] | None:
    """The LoRA adapters a checkpoint holds (None when it was trained without them)."""
    path = Path(checkpoint) / _ADAPTERS
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - a damaged file raises several kinds
        raise ValueError(
            f"{path}: cannot be read ({err}); resume from an earlier checkpoint"
        ) from None
