"""Checkpoint folders shared by every built-in family: ``model.safetensors`` (weights),
``config.json`` (family, format version, model config, codec entry) and ``codec/`` (the codec,
unless it is referred to by a spec such as ``encodec:facebook/encodec_24khz``), and optionally
``sampling.json``: the sampling settings recommended for the checkpoint. A loaded policy carries
them as ``sampling_defaults`` and every checkpoint trained from it writes them again, so a base
and the models fine-tuned or aligned from it are evaluated at the same settings."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from sealign.codecs.base import Codec, load_codec
from sealign.models.backbone import check_framing
from sealign.utils.paths import share_file

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CODEC_DIR = "codec"
SAMPLING_FILE = "sampling.json"
SAMPLING_KEYS = ("temperature", "top_k", "top_p", "fuse", "dereverb")


def fit_length(wav: np.ndarray, n: int) -> np.ndarray:
    """``wav`` as float32, cut or zero-padded to ``n`` samples."""
    wav = np.asarray(wav, dtype=np.float32)
    return wav[:n] if wav.size >= n else np.pad(wav, (0, n - wav.size))


def checkpoint_sampling(directory: str | Path) -> dict[str, Any]:
    """A policy folder's recommended sampling settings: its optional ``sampling.json`` (any
    of ``temperature``, ``top_k``, ``top_p``, ``fuse`` (the post-processing of
    :mod:`sealign.infer.fusion`) and ``dereverb`` (the pre-processing of
    :mod:`sealign.infer.dereverb`)), e.g. ``{"temperature": 0.1}`` chosen on a validation split;
    ``{}`` when the file is absent."""
    path = Path(directory) / SAMPLING_FILE
    if not path.is_file():
        return {}
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    unknown = set(d) - set(SAMPLING_KEYS) if isinstance(d, dict) else {"<not an object>"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; allowed: {SAMPLING_KEYS}")
    types = {"temperature": float, "top_k": int, "top_p": float}
    for k, v in d.items():
        if k in ("fuse", "dereverb"):
            if not isinstance(v, str):
                raise ValueError(f"{path}: {k} must be a string, got {v!r}")
            continue
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or types[k](v) != v
            or not math.isfinite(v)
        ):
            kind = "an integer" if types[k] is int else "a number"
            raise ValueError(f"{path}: {k} must be {kind}, got {v!r}")
    out = {k: types[k](v) if k in types else v for k, v in d.items()}
    from sealign.infer.dereverb import DEREVERBS
    from sealign.infer.fusion import FUSIONS
    from sealign.models.tokens import check_sampling

    try:
        check_sampling(out.get("temperature", 1.0), out.get("top_k", 0), out.get("top_p", 1.0))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    for k, known in (("fuse", FUSIONS), ("dereverb", DEREVERBS)):
        if out.get(k, known[0]) not in known:
            raise ValueError(f"{path}: {k} must be one of {known}, got {out[k]!r}")
    return out


def write_sampling(directory: str | Path, settings: dict[str, Any] | None) -> None:
    """Write ``settings`` as the folder's ``sampling.json`` (nothing when empty or None)."""
    if settings:
        path = Path(directory) / SAMPLING_FILE
        path.write_text(json.dumps(dict(settings), indent=1) + "\n", encoding="utf-8")


def codec_kind(codec: Codec) -> tuple[str, dict[str, Any]]:
    """The :func:`load_codec` kind of a built-in or registered codec object, and options to
    restore it."""
    from sealign.codecs import base

    kind = base.kind_of(codec)
    if kind is None:
        raise ValueError(
            f"{type(codec).__name__} is not a registered codec kind "
            f"({', '.join(base.codec_kinds())}); "
            "register it with sealign.codecs.register_codec in a module named in $SEALIGN_PLUGINS, or pass "
            "codec_spec=... to the policy so the checkpoint can refer to it"
        )
    layout = getattr(codec, "layout", None)
    return kind, ({"layout": layout} if layout is not None else {})


def _unshared(state: dict[str, Any]) -> dict[str, Any]:
    """CPU copies of ``state`` in which no two tensors share memory: safetensors refuses tied
    weights (an LM head tied to its embeddings), and loading writes each copy into the same
    tied parameter."""
    out: dict[str, Any] = {}
    seen: set[int] = set()
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen and v.numel() else v
        seen.add(ptr)
    return out


def save_policy_dir(
    directory: str | Path,
    module: torch.nn.Module,
    family: str,
    config: dict[str, Any],
    codec: Codec,
    codec_spec: str | None,
    format_version: int,
    policy_class: str | None = None,
) -> Path:
    """Write a policy folder (see the module doc). ``policy_class`` (``"package.module:Name"``)
    names a custom policy's class, which :func:`~sealign.models.registry.load_policy` then
    imports and loads the folder with."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if codec_spec is not None:
        codec_entry: dict[str, Any] = {"spec": codec_spec}
    else:
        kind, options = codec_kind(codec)
        codec.save(directory / CODEC_DIR)  # type: ignore[attr-defined]
        codec_entry = {"kind": kind, "path": CODEC_DIR, "options": options}
    save_file(_unshared(module.state_dict()), str(directory / WEIGHTS_FILE))
    share_file(directory / WEIGHTS_FILE)
    meta = {
        "family": family,
        "format_version": format_version,
        "config": config,
        "codec": codec_entry,
    }
    if policy_class is not None:
        meta["class"] = policy_class
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def read_policy_dir(
    directory: str | Path, family: str, format_version: int, map_location: str | torch.device
) -> tuple[dict[str, Any], Codec, str | None, dict[str, torch.Tensor]]:
    """``(model config dict, codec, codec spec or None, weights)`` of a policy folder."""
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(
            f"{directory}: not a policy checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    try:
        meta = json.loads(cfg_path.read_text())
        entry = meta["codec"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{cfg_path}: not a valid policy config ({err!r})") from err
    if meta.get("family") != family:
        raise ValueError(f"{cfg_path}: family {meta.get('family')!r} is not {family!r}")
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{cfg_path}: 'config' must be an object of model settings")
    if not isinstance(entry, dict) or not (
        isinstance(entry.get("spec"), str)
        or (isinstance(entry.get("kind"), str) and isinstance(entry.get("path"), str))
    ):
        raise ValueError(
            f'{cfg_path}: \'codec\' must be {{"spec": ...}} or {{"kind": ..., "path": ...}}'
        )
    if int(meta.get("format_version", 0)) > format_version:
        raise ValueError(
            f"{cfg_path}: format version {meta['format_version']} is newer than this "
            f"sealign supports ({format_version})"
        )
    spec = entry.get("spec")
    if spec is not None:
        codec = load_codec(spec)
    else:
        codec = load_codec(
            f"{entry['kind']}:{directory / entry['path']}", **(entry.get("options") or {})
        )
    try:
        weights = load_file(str(w_path), device=str(map_location))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{w_path}: cannot read the weights ({err})") from err
    return meta["config"], codec, spec, weights


_P = TypeVar("_P", bound="PolicyFolder")


class PolicyFolder:
    """:meth:`save` and :meth:`load` for a built-in family, mixed into its ``nn.Module``.

    The family class sets ``family``, ``format_version`` and ``config_class`` (a config with
    ``from_dict``); its constructor is ``(codec, config, codec_spec=None)`` and it binds
    them with :meth:`_bind_codec`. ``optional_weights`` names weights added after checkpoints
    were first written: a folder without them loads with their initial values."""

    family: str
    format_version: int
    config_class: Any
    optional_weights: tuple[str, ...] = ()
    codec: Codec
    codec_spec: str | None

    def _bind_codec(self, codec: Codec, config: Any, codec_spec: str | None) -> None:
        check_framing(config.features, codec)
        self.__dict__["codec"] = codec  # not a submodule: its weights are not trained or saved
        self.codec_spec = codec_spec
        self.config = config
        self.sample_rate = int(codec.sample_rate)

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors``, ``config.json`` and the codec (``codec/``, unless a
        ``codec_spec`` was given): the folder is enough for :meth:`load`. A subclass of a
        built-in family is named in ``config.json`` (``"class"``), so that it loads as itself."""
        return save_policy_dir(
            directory, self, self.family, self.config.to_dict(), self.codec, self.codec_spec,
            self.format_version, self._subclass_name(),
        )  # type: ignore[arg-type]  # fmt: skip

    def _subclass_name(self) -> str | None:
        """``"module:Name"`` of this object's class when it subclasses the built-in one."""
        from sealign.models.registry import _family_class

        cls = type(self)
        if cls is _family_class(self.family):
            return None
        if "<locals>" in cls.__qualname__:
            log.warning("%s is defined inside a function: its checkpoints load as the built-in "
                        "%s policy; define it at a module's top level", cls.__qualname__,
                        self.family)  # fmt: skip
            return None
        return f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def load(cls: type[_P], directory: str | Path, map_location: str | torch.device = "cpu") -> _P:
        """Load a folder written by :meth:`save`."""
        cfg, codec, spec, state = read_policy_dir(
            directory, cls.family, cls.format_version, map_location
        )
        policy = cls(codec, cls.config_class.from_dict(cfg), codec_spec=spec)  # type: ignore[call-arg]
        own = policy.state_dict()  # type: ignore[attr-defined]
        state = {**{k: own[k] for k in cls.optional_weights if k not in state}, **state}
        try:
            policy.load_state_dict(state)  # type: ignore[attr-defined]
        except RuntimeError as err:  # missing, unexpected or misshapen weights
            detail = str(err).split("\n\t")[1:3]
            raise ValueError(f"{directory}: its weights do not fit its config.json "
                             f"({'; '.join(detail) or err})") from None  # fmt: skip
        return policy.to(map_location)  # type: ignore[attr-defined]
