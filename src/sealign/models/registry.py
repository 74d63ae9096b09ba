"""Build or load a policy of any family from its name or a checkpoint folder.

A checkpoint folder holds ``config.json`` whose ``family`` field picks the built-in class
(:data:`BUILTIN`: a family's module, policy class and config class; a family whose module or
classes do not exist yet raises ``NotImplementedError``). A checkpoint of a custom policy (see
``docs/custom_models.md``) may name its class instead, as ``"class": "package.module:Name"``;
that class's ``load(directory, map_location=...)`` is then used. A loaded policy carries the
folder's ``sampling.json`` as ``sampling_defaults`` (see :mod:`sealign.models.persist`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from sealign.codecs.base import Codec
from sealign.models.persist import checkpoint_sampling
from sealign.models.policy import FAMILIES, Policy
from sealign.models.shipped import model_path

CONFIG_FILE = "config.json"


BUILTIN: dict[str, tuple[str, str, str]] = {
    "ar": ("sealign.models.ar", "ARPolicy", "ARConfig"),
    "mgm": ("sealign.models.mgm", "MGMPolicy", "MGMConfig"),
    "fm": ("sealign.models.fm", "FMPolicy", "FMConfig"),
}


def _not_implemented(family: str) -> NotImplementedError:
    available = [f for f, (mod, _, _) in BUILTIN.items() if importlib.util.find_spec(mod)]
    return NotImplementedError(
        f"model family {family!r} is not implemented yet (available: {', '.join(available)})"
    )


def _family_classes(family: str) -> tuple[Any, Any]:
    """``(policy class, config class)`` of a built-in family."""
    if family not in BUILTIN:
        if family in FAMILIES:
            raise NotImplementedError(f"model family {family!r} has no built-in implementation")
        raise ValueError(f"unknown model family {family!r}; known families: {', '.join(FAMILIES)}")
    module, policy_name, config_name = BUILTIN[family]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name == module:
            raise _not_implemented(family) from None
        raise
    try:
        return getattr(mod, policy_name), getattr(mod, config_name)
    except AttributeError:
        raise _not_implemented(family) from None


def _family_class(family: str) -> Any:
    return _family_classes(family)[0]


def _custom_class(path: str, family: str) -> Any:
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"policy class {path!r} must look like package.module:ClassName")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        hint = ""
        if isinstance(err, ModuleNotFoundError) and err.name == module.split(".")[0]:
            hint = (f"; put the folder holding {module.split('.')[0]} on PYTHONPATH or "
                    "install its package")  # fmt: skip
        raise ValueError(f"cannot import policy class {path!r}: {err}{hint}") from err
    if getattr(cls, "family", None) != family or not hasattr(cls, "load"):
        raise ValueError(
            f"policy class {path!r} must have family = {family!r} and a load() classmethod"
        )
    return cls


def build_policy(
    family: str, codec: Codec, config_dict: dict[str, Any] | None = None, **kwargs: Any
) -> Policy:
    """A freshly initialized policy of ``family`` for ``codec``. ``config_dict`` overrides the
    family's config fields (AR: :class:`~sealign.models.ar.ARConfig`, FM:
    :class:`~sealign.models.fm.FMConfig`; unknown keys are an error); ``kwargs`` go to the policy
    constructor (e.g. ``codec_spec``)."""
    cls, config_cls = _family_classes(family)
    return cls(codec, config_cls.for_codec(codec, **dict(config_dict or {})), **kwargs)


def read_meta(path_or_dir: str | Path) -> tuple[dict[str, Any], Path]:
    """``(config.json contents, checkpoint folder)`` of a checkpoint folder or its config file."""
    path = model_path(path_or_dir)
    directory = path.parent if path.name == CONFIG_FILE and path.is_file() else path
    cfg = directory / CONFIG_FILE
    if not cfg.is_file():
        raise FileNotFoundError(f"{path}: not a policy checkpoint (no {CONFIG_FILE})")
    try:
        meta = json.loads(cfg.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg}: invalid JSON ({err})") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("family"), str):
        raise ValueError(f"{cfg}: no 'family' field; is this a policy checkpoint?")
    return meta, directory


def load_policy(path_or_dir: str | Path, map_location: str = "cpu") -> Policy:
    """Load a checkpoint written by a policy's ``save`` (its folder or its ``config.json``)."""
    meta, directory = read_meta(path_or_dir)
    family = meta["family"]
    custom = meta.get("class")
    cls = _custom_class(custom, family) if custom else _family_class(family)
    policy = cls.load(directory, map_location=map_location)
    policy.sampling_defaults = checkpoint_sampling(directory)
    return policy


def reconfigure(policy: Policy, overrides: dict[str, Any]) -> Policy:
    """A copy of a built-in ``policy`` whose config fields ``overrides`` replace the saved ones,
    with the same weights (e.g. fine-tune with another dropout or FM prior). Fields that change
    the parameters' shapes (``dim``, ``layers``...) fail when the weights are loaded."""
    if not overrides:
        return policy
    family = getattr(policy, "family", None)
    cls, config_cls = _family_classes(str(family))
    if type(policy) is not cls:
        raise ValueError(
            f"config overrides need a built-in {family} policy, not {type(policy).__name__}"
        )
    merged = {**policy.config.to_dict(), **dict(overrides)}  # type: ignore[attr-defined]
    try:
        new = cls(policy.codec, config_cls.from_dict(merged), codec_spec=policy.codec_spec)  # type: ignore[attr-defined]
        new.load_state_dict(policy.state_dict())  # type: ignore[attr-defined]
        new.sampling_defaults = dict(getattr(policy, "sampling_defaults", {}))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"cannot apply config overrides {sorted(overrides)}: {err}") from err
    return new.to(policy.device)  # type: ignore[attr-defined]
