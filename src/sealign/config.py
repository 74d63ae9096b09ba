"""Dataclass configs loaded from YAML and overridden from the command line with dotted keys.

    cfg = load_config(ScoreConfig, "run.yaml", ["threads=1", "metric_options.wer.asr=pocketsphinx"])

Values in overrides are parsed as YAML scalars (``1e-5`` → float, ``true`` → bool, ``[a, b]`` →
list). Unknown keys and values of the wrong type fail immediately with the dotted key in the
message, before any work starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sealign.utils.jsonio import tmp_name

log = logging.getLogger(__name__)

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid configuration; the message names the offending key."""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (list, tuple):
        if isinstance(value, str):  # "a,b" on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: a range
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {list(value)!r}")
            out = [
                _coerce(v, a, f"{key}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
            if any(isinstance(v, float) and not math.isfinite(v) for v in out):
                raise ConfigError(f"{key}: expected finite numbers, got {list(value)!r}")
            return tuple(out)
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None or math.isnan(number):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]} (valid: {', '.join(sorted(names))})"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        f = fields[k]
        if isinstance(v, dict) and f.default_factory is not dataclasses.MISSING:
            # a dataclass field whose default differs from its class's defaults (e.g. GSPO's
            # data settings): given keys are applied on top of that default
            default = f.default_factory()
            if dataclasses.is_dataclass(default):
                merged = to_dict(default)
                _merge(merged, v)
                v = merged
        kwargs[k] = _coerce(v, hints[k], prefix + k)
        if k == "seed" and isinstance(kwargs[k], int) and not 0 <= kwargs[k] < 2**32:
            # numpy and torch take seeds in [0, 2**32): say so before any work
            raise ConfigError(f"{prefix}seed must be in [0, 2**32), got {kwargs[k]}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err}") from err
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass."""
    return dataclasses.asdict(cfg)


_ABSENT = object()


def config_changes(
    before: Any, now: Any, skip: frozenset[str] = frozenset(), new_keys: bool = True
) -> list[str]:
    """``"key: old → new"`` for every setting (dotted key) that differs between two configs as
    YAML loads them (nested dicts), leaving out settings whose last key part is in ``skip``, and
    with ``new_keys=False`` settings that one of them lacks (an older or newer version's)."""

    def diff(a: Any, b: Any, key: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for k in sorted(set(a) | set(b), key=str)
                    for d in diff(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{key}{k}.")]  # fmt: skip
        name = key[:-1]
        if a == b or name.rsplit(".", 1)[-1] in skip:
            return []
        if _ABSENT in (a, b) and not new_keys:
            return []
        show = [None if x is _ABSENT else x for x in (a, b)]
        return [f"{name}: {show[0]!r} → {show[1]!r}"]

    return diff(before, now, "")


def warn_config_changes(saved_path: Path, cfg: Any) -> None:
    """Log the settings of ``cfg`` that differ from those saved in ``saved_path`` (a run
    resumed with them may not continue as it would have)."""
    if not saved_path.is_file():
        return
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return
    changes = config_changes(saved, yaml.safe_load(dump_config(cfg)))
    if changes:
        log.warning("resuming with changed settings: %s", "; ".join(changes))


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    out = []
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value")
        k, v = o.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"override {o!r} has an empty key")
        try:
            out.append((k, yaml.safe_load(v) if v.strip() else ""))
        except yaml.YAMLError as err:
            first = str(err).splitlines()[0]
            raise ConfigError(f"{k}: {v!r} is not a valid YAML value ({first})") from None
    return out


SHIPPED_CONFIG_PREFIX = "shipped:"


def shipped_configs() -> dict[str, Path]:
    """The configs that ship inside the package (the repository's ``configs/``), by name."""
    from importlib import resources

    folder = Path(str(resources.files("sealign") / "configs"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def config_file(path: str | Path) -> Path:
    """The YAML file ``path`` names: a file, or ``shipped:<name>`` for a config that ships
    inside the package (``shipped:gspo_demo`` is the repository's ``configs/gspo_demo.yaml``)."""
    text, shipped = str(path), shipped_configs()
    if text.startswith(SHIPPED_CONFIG_PREFIX):
        name = text[len(SHIPPED_CONFIG_PREFIX) :].removesuffix(".yaml")
        if name not in shipped:
            raise ConfigError(f"{text}: no such shipped config; there are: {', '.join(shipped)}")
        return shipped[name]
    p = Path(path)
    if not p.is_file():
        hint = ""
        if p.stem in shipped and p.suffix in ("", ".yaml"):
            hint = (
                f" (the package ships one by that name: --config {SHIPPED_CONFIG_PREFIX}{p.stem})"
            )
        raise ConfigError(f"config file not found: {p}{hint}")
    return p


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Defaults of ``cls`` ← YAML file ← dotted overrides; validated by building the dataclass.

    Only the keys given are passed to the dataclasses, so a config may have required fields
    that ``__post_init__`` checks.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = config_file(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        _merge(data, loaded)
    given = parse_overrides(overrides or [])
    for k, v in given:
        _set_dotted(data, k, v)
    try:
        return _build(cls, data)
    except ConfigError as err:
        m = re.match(r"unknown config key (\S+)|([\w.\[\]]+):", str(err))
        key = (m.group(1) or m.group(2)) if m else ""
        if path is None or not key or any(key.startswith(k) for k, _ in given):
            raise
        raise ConfigError(f"{path}: {err}") from None  # a key of the file, not of an override


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


CONFIG_HEADER = "# sealign "


def config_kind(text: str) -> str | None:
    """The settings class a saved ``config.yaml`` names on its first line (None: not named)."""
    first = text.split("\n", 1)[0]
    return first[len(CONFIG_HEADER) :].strip() or None if first.startswith(CONFIG_HEADER) else None


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically (processes of one sharded job may write
    the same file at once, hence a temporary file per process)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    # the first line names the settings' kind, which commands check before writing beside it
    tmp.write_text(f"{CONFIG_HEADER}{type(cfg).__name__}\n{dump_config(cfg)}")
    tmp.replace(path)
    return path


def from_dict_strict(cls: type[T], d: dict[str, Any], what: str) -> T:
    """``cls(**d)`` refusing unknown keys with a message naming them (``what`` names the config)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(
            f"unknown {what} config keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    # plain scalar fields are type-checked here, so a damaged or hand-edited config.json names
    # the key instead of failing inside the class's own checks
    hints = typing.get_type_hints(cls)
    scalars = (int, float, bool, str)
    d = {
        k: _coerce(v, hints[k], f"{what} config: {k}") if _scalar_hint(hints[k], scalars) else v
        for k, v in d.items()
    }
    try:
        return cls(**d)
    except TypeError as err:
        raise ValueError(f"{what} config: {err}") from err


def check_scalar(value: Any, tp: Any, key: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` if ``value`` does not fit ``tp`` when ``tp`` is
    ``int``, ``float``, ``bool`` or ``str`` (or one of them ``| None``); other types pass."""
    if _scalar_hint(tp, (int, float, bool, str)):
        _coerce(value, tp, key)


def _scalar_hint(tp: Any, scalars: tuple[type, ...]) -> bool:
    """True for ``int``, ``float``, ``bool``, ``str`` and their ``| None`` forms."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return len(args) == 1 and args[0] in scalars
    return tp in scalars
