"""Argument and run-directory helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, TypeVar

from sealign.config import config_changes, config_kind, dump_config, load_config, save_config
from sealign.models.shipped import SHIPPED_PREFIX, model_path
from sealign.utils.folder_lock import hold_for_command

T = TypeVar("T")
log = logging.getLogger("sealign")


def add_config_arguments(p: argparse.ArgumentParser, example: str) -> None:
    """``--config`` and ``KEY=VALUE`` overrides; ``example``: one of the command's own keys."""
    p.add_argument("--config", help="YAML config file (fields of the command's config dataclass)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted config overrides of the command's config keys (see the resolved config it "
        f"logs), e.g. {example}",
    )


def add_run_arguments(
    p: argparse.ArgumentParser, steps: str, example: str, default_output: str
) -> None:
    """The flags every training command shares (``steps`` says what ``--max-steps`` counts),
    then the config arguments; :func:`run_flags` maps them to config keys."""
    p.add_argument("--output", help=f"run folder (output_dir; default {default_output})")
    p.add_argument("--max-steps", type=int, help=f"{steps} (max_steps)")
    p.add_argument("--device", help="torch device (device)")
    p.add_argument("--threads", type=int, help="torch threads (threads)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in --output"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p, example)


def run_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys of :func:`add_run_arguments`' flags (for :func:`resolve_flags`)."""
    return {
        "output_dir": args.output,
        "max_steps": args.max_steps,
        "device": args.device,
        "threads": args.threads,
    }


def flag(key: str, value: Any) -> str:
    """A ``KEY=VALUE`` override that the config parser reads back as exactly ``value``.

    Overrides are YAML, so a raw path such as ``runs/a #2``, ``yes`` or ``[x`` would be cut,
    turned into a boolean or rejected; JSON (strings, numbers, booleans, lists) is YAML too."""
    return f"{key}={json.dumps(value)}"


def flags_of(
    args: argparse.Namespace, names: list[str] | tuple[str, ...], prefix: str = ""
) -> list[str]:
    """:func:`flag` overrides ``<prefix><name>`` for each of ``args``' ``names`` that is set."""
    return [flag(prefix + n, getattr(args, n)) for n in names if getattr(args, n, None) is not None]


def split_list(value: str) -> list[str]:
    """``"a, b,c"`` → ``["a", "b", "c"]`` (comma-separated command-line lists)."""
    return [v.strip() for v in value.split(",") if v.strip()]


def resolve_config(cls: type[T], args: argparse.Namespace, extra: list[str] | None = None) -> T:
    """Defaults ← --config ← explicit flags (``extra``) ← positional overrides; printed to the log."""
    cfg = load_config(cls, args.config, [*(extra or []), *args.overrides])
    log.info("resolved config:\n%s", dump_config(cfg).rstrip())
    return cfg


def reuse_run_config(args: argparse.Namespace, when: bool) -> None:
    """When continuing a run (``when``, e.g. ``--resume``) without ``--config``, take the run's
    saved ``config.yaml`` from ``--output`` as the config file."""
    if when and not args.config and args.output:
        saved = Path(args.output) / "config.yaml"
        if saved.is_file():
            log.info("using the run's config %s", saved)
            args.config = str(saved)
        else:
            log.warning("%s holds no run to continue (no config.yaml): the settings come from "
                        "the command line alone", args.output)  # fmt: skip


def resolve_flags(cls: type[T], args: argparse.Namespace, flags: dict[str, Any]) -> T:
    """:func:`resolve_config` with explicit flags given as ``{dotted key: value or None}``."""
    return resolve_config(cls, args, [flag(k, v) for k, v in flags.items() if v is not None])


# settings that may differ between the machines (or processes) running shards of one job
_PER_PROCESS = frozenset(
    {"shard", "threads", "device", "metric_device", "workers", "cache", "progress", "output"}
)


def _real_paths(value: Any) -> Any:
    """A loaded config with every string naming an existing file or folder resolved, so that
    two spellings of one path (relative, absolute, through a link) compare equal."""
    if isinstance(value, dict):
        return {k: _real_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_real_paths(v) for v in value]
    if isinstance(value, str) and value.startswith(SHIPPED_PREFIX):
        with contextlib.suppress(ValueError):
            return os.path.realpath(model_path(value))
    if isinstance(value, str) and value and os.path.exists(value):
        return os.path.realpath(value)
    return value


def check_same_job(out: Path, cfg: Any, shard: Any = None, fixed: tuple[str, ...] = ()) -> None:
    """Refuse to write into a folder holding another command's run (its ``config.yaml`` would
    be replaced and its resume broken), a continuation that changes one of the ``fixed``
    settings its results were made with (the caller passes them once there are results), and
    a shard whose job settings differ from those the other shards of the folder's job were
    started with (their records would be merged as one)."""
    import yaml

    try:
        text = (out / "config.yaml").read_text(encoding="utf-8")
        before = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return
    if not isinstance(before, dict) or not before:
        return
    kind = config_kind(text)
    if kind is not None and kind != type(cfg).__name__:
        raise ValueError(
            f"{out} holds the run of another command (its config.yaml holds {kind} settings, "
            f"this command's are {type(cfg).__name__}): write to another folder"
        )
    now = yaml.safe_load(dump_config(cfg))
    if kind is None and len(set(before) & set(now)) < len(before) / 2:  # an older run
        raise ValueError(
            f"{out} holds the run of another command (its config.yaml has "
            f"{', '.join(list(before)[:4])}, ...): write to another folder"
        )
    b, n = _real_paths(before), _real_paths(now)
    differ = [f"{k}: {b[k]!r} → {n.get(k)!r}" for k in fixed if k in b and b[k] != n.get(k)]
    if differ:
        raise ValueError(
            f"{out} holds results made with other settings ({'; '.join(differ)}), which a "
            "continuation would mix with new ones: give the same settings, or write to "
            "another folder"
        )
    under_way = any(not f.name.startswith(".sealign") for f in out.rglob("*.shard-*-of-*"))
    if shard is None or not shard.sharded or not under_way:
        return  # no sharded job under way here (a finished one's settings may change on resume)
    changed = config_changes(_real_paths(before), _real_paths(now), _PER_PROCESS, new_keys=False)
    if changed:
        raise ValueError(
            f"shard {shard.index}/{shard.count}: {'; '.join(changed[:5])} differ from the "
            f"settings in {out / 'config.yaml'}, which the job's other shards were started with; "
            "give every shard the same settings, or write to another folder"
        )


def prepare_run_dir(path: str | Path, cfg: Any, shard: Any = None) -> Path:
    """Create the output folder ``path`` (an existing file there is an error), hold it for the
    command (:mod:`sealign.utils.folder_lock`; ``shard``: this process's part of a sharded job)
    and save ``cfg``."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} is a file, not a folder")
    hold_for_command(out, shard)
    check_same_job(out, cfg, shard)
    save_config(cfg, out / "config.yaml")
    return out


def refuse_earlier_results(out: str | Path, files: list[Path], resume: bool) -> None:
    """Refuse to start afresh in ``out`` while it holds one of ``files`` (an earlier run's
    merged results, non-empty; the shards of a job write other names until they are merged),
    as the trainers refuse a folder with checkpoints, unless the run is a ``--resume``."""
    if resume:
        return
    held = [f for f in files if f.is_file() and f.stat().st_size > 0]
    if held:
        raise ValueError(
            f"{out} holds the results of an earlier run, or of one still running "
            f"({Path(held[0]).relative_to(out)}"
            f"{f' and {len(held) - 1} more' if len(held) > 1 else ''}); pass --resume to "
            "continue it, or write to another folder (or delete it first)"
        )


def log_run_scalars(
    run_dir: str | Path, scalars: dict[str, float], step: int = 0, replace: bool = False
) -> None:
    """Record a command's summary numbers in ``run_dir``/log.jsonl and TensorBoard (with
    ``replace``, instead of what earlier runs of it recorded there)."""
    from sealign.utils.logging import RunLogger

    logger = RunLogger(run_dir, resume_step=0 if replace else None)
    logger.log(scalars, step=step)
    logger.close()
