"""The codec contract shared by the built-in WORLD codec and the neural-codec adapters.

A codec turns mono waveforms at :attr:`Codec.sample_rate` into discrete tokens, int64 arrays of
shape ``[K, T]`` (``K`` codebooks, ``T`` frames at :attr:`Codec.frame_rate` frames per second),
and back. Calls are batched: a list (or a 2-D array ``[B, samples]``) in gives a list out; a single
1-D waveform in gives a single ``[K, T]`` array out, and the same for :meth:`Codec.decode`.

Codecs with a continuous representation also implement :class:`LatentCodec`
(``encode_latent`` → float32 ``[D, T]``, ``decode_latent``), which flow-matching models use.

:func:`load_codec` builds a codec from a spec string such as ``"world:runs/codec"``,
``"world:runs/codec?layout=mgm"``, ``"encodec:path/or/hub-id?bandwidth=6.0"`` or
``"dac:path/to/DacModel/folder"``; :func:`register_codec` adds kinds of your own.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sealign.audio.io import AudioError, AudioLimits, validate_audio


class CodecError(ValueError):
    """Input a codec cannot handle (silent, too short, wrong shape, out-of-range tokens...)."""


class CodecUnavailable(RuntimeError):
    """The codec's package or weights cannot be loaded; the message says what is missing and how
    to provide it."""


@runtime_checkable
class Codec(Protocol):
    """Discrete audio codec. See the module docstring for the batching convention."""

    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int | tuple[int, ...]

    def encode(self, wavs: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray] | np.ndarray:
        """Waveform(s) at :attr:`sample_rate` → int64 token array(s) ``[K, T]``."""
        ...

    def decode(self, tokens: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray] | np.ndarray:
        """Token array(s) ``[K, T]`` → float32 waveform(s) at :attr:`sample_rate`."""
        ...

    def save(self, directory: str | Path) -> Path:
        """Write everything needed to rebuild the codec (safetensors arrays + JSON config)."""
        ...


@runtime_checkable
class LatentCodec(Codec, Protocol):
    """A codec that also has a continuous per-frame representation ``[D, T]``."""

    latent_dim: int

    def encode_latent(
        self, wavs: Sequence[np.ndarray] | np.ndarray
    ) -> list[np.ndarray] | np.ndarray:
        """Waveform(s) → float32 latent(s) ``[latent_dim, T]`` at :attr:`frame_rate`."""
        ...

    def decode_latent(
        self, latents: Sequence[np.ndarray] | np.ndarray
    ) -> list[np.ndarray] | np.ndarray:
        """Latent(s) ``[latent_dim, T]`` → float32 waveform(s)."""
        ...


def codebook_sizes(codec: Codec) -> tuple[int, ...]:
    """Per-codebook vocabulary sizes of ``codec`` (expands a scalar ``codebook_size``)."""
    cs = codec.codebook_size
    return tuple(cs) if isinstance(cs, tuple | list) else (int(cs),) * codec.num_codebooks


def split_batch(
    x: Sequence[np.ndarray] | np.ndarray, item_ndim: int
) -> tuple[list[np.ndarray], bool]:
    """Normalize a batched argument: returns ``(items, single)``.

    ``item_ndim`` is the rank of one item (1 for waveforms, 2 for ``[K, T]`` arrays). An array of
    that rank is a single item; an array of one more rank is a batch along axis 0; a list or
    tuple is a batch.
    """
    if isinstance(x, np.ndarray):
        if x.ndim == item_ndim:
            return [x], True
        if x.ndim == item_ndim + 1:
            if item_ndim == 1 and x.shape[1] <= 8 < x.shape[0]:
                raise CodecError(
                    f"an array of shape {x.shape} looks like [samples, channels] audio (as "
                    "soundfile reads it); pass mono audio, e.g. wav.mean(axis=1), or a list "
                    "of waveforms for a batch"
                )
            return list(x), False
        raise CodecError(f"expected an array of rank {item_ndim} or {item_ndim + 1}, got {x.shape}")
    if isinstance(x, list | tuple):
        return [np.asarray(v) for v in x], False
    raise CodecError(f"expected a numpy array or a list of arrays, got {type(x).__name__}")


def join_batch(items: list[np.ndarray], single: bool) -> list[np.ndarray] | np.ndarray:
    """Inverse of :func:`split_batch` for results."""
    return items[0] if single else items


def check_waveform(wav: np.ndarray, sr: int, name: str, min_duration: float) -> np.ndarray:
    """Validate one mono waveform (1-D, finite, not silent, long enough); return it as float64.

    Raises :class:`CodecError` naming ``name`` and the problem.
    """
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise CodecError(f"{name}: expected mono 1-D audio, got shape {wav.shape}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise CodecError(f"{name}: expected float audio in [-1, 1], got {wav.dtype} (scale "
                         "integer PCM first, e.g. int16 / 32768)")  # fmt: skip
    try:
        validate_audio(wav, sr, name=name, limits=AudioLimits(min_duration=min_duration))
    except AudioError as err:
        raise CodecError(str(err)) from err
    if float(np.max(np.abs(wav))) < 1e-4:
        raise CodecError(f"{name}: audio is silent (peak below -80 dBFS)")
    return wav.astype(np.float64)


def check_latent(latent: np.ndarray, dim: int, name: str) -> np.ndarray:
    """Validate one ``[dim, T]`` continuous latent (non-empty, finite); return it as float64."""
    latent = np.asarray(latent, dtype=np.float64)
    if latent.ndim != 2 or latent.shape[0] != dim or latent.shape[1] == 0:
        raise CodecError(f"{name}: expected a latent of shape [{dim}, T], got {latent.shape}")
    if not np.all(np.isfinite(latent)):
        raise CodecError(f"{name}: latent contains NaN or inf")
    return latent


def check_tokens(tokens: np.ndarray, sizes: Sequence[int], name: str) -> np.ndarray:
    """Validate one ``[K, T]`` token array against per-codebook ``sizes``; return it as int64."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] != len(sizes):
        raise CodecError(f"{name}: expected tokens of shape [{len(sizes)}, T], got {tokens.shape}")
    if tokens.shape[1] == 0:
        raise CodecError(f"{name}: empty token sequence")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise CodecError(f"{name}: tokens must be integers, got {tokens.dtype}")
    tokens = tokens.astype(np.int64)
    for k, size in enumerate(sizes):
        row = tokens[k]
        if row.min() < 0 or row.max() >= size:
            raise CodecError(
                f"{name}: codebook {k} has tokens outside [0, {size}) "
                f"(min {row.min()}, max {row.max()})"
            )
    return tokens


def parse_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """Split ``"kind:location?key=value&..."`` into ``(kind, location, options)``.

    Option values that parse as int or float become numbers; ``true``/``false`` become booleans.
    """
    if ":" not in spec:
        raise ValueError(
            f"codec spec {spec!r} must look like KIND:LOCATION (e.g. world:runs/codec)"
        )
    kind, rest = spec.split(":", 1)
    location, _, query = rest.partition("?")
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"codec spec {spec!r}: option {part!r} needs KEY=VALUE")
        options[key] = _coerce(value)
    return kind.strip().lower(), location, options


def _coerce(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


_KINDS = {
    "world": "sealign.codecs.world:WorldCodec",
    "encodec": "sealign.codecs.neural:EncodecCodec",
    "dac": "sealign.codecs.neural:DacCodec",
    "mel_vocoder": "sealign.codecs.vocoder:MelVocoderCodec",
}
_USER_KINDS: dict[str, type] = {}


def register_codec(kind: str, cls: type) -> None:
    """Make ``kind:<location>`` specs build ``cls.load(location, **options)`` (a user codec).

    ``cls`` implements :class:`Codec` and a classmethod ``load(location, **options)`` that
    rebuilds what ``save(directory)`` wrote; policies saved with it then record ``kind`` and
    load again in any process that registered it (see :mod:`sealign.plugins`)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
        raise ValueError(f"codec kind {kind!r} must be lowercase letters, digits or _")
    if kind in _KINDS or kind in _USER_KINDS:
        raise ValueError(f"codec kind {kind!r} is already registered")
    if not callable(getattr(cls, "load", None)):
        raise ValueError(f"{cls.__name__} needs a classmethod load(location, **options)")
    _USER_KINDS[kind] = cls


def codec_kinds() -> list[str]:
    """Every kind :func:`load_codec` accepts: the built-in ones, then registered ones."""
    return [*_KINDS, *_USER_KINDS]


def codec_class(kind: str) -> type:
    """The class behind codec ``kind``; :class:`ValueError` for an unknown kind."""
    if kind in _USER_KINDS:
        return _USER_KINDS[kind]
    if kind not in _KINDS:
        raise ValueError(
            f"unknown codec kind {kind!r}; known: {', '.join(codec_kinds())} "
            "(register your own with sealign.codecs.register_codec in a module named in $SEALIGN_PLUGINS)"
        )
    module, cls = _KINDS[kind].split(":")
    return getattr(importlib.import_module(module), cls)


def kind_of(codec: Codec) -> str | None:
    """The registered kind of ``codec``'s class, or None."""
    target = f"{type(codec).__module__}:{type(codec).__qualname__}"
    for kind, where in _KINDS.items():
        if where == target:
            return kind
    for kind, cls in _USER_KINDS.items():
        if type(codec) is cls:
            return kind
    return None


def load_codec(spec: str, **options: Any) -> Codec:
    """Build a codec from ``spec`` (``world:<dir>``, ``encodec:<path-or-hub-id>``,
    ``dac:<DacModel folder or hub id>``, or a registered kind); ``?key=value`` options in the
    spec and keyword ``options`` are passed to the codec's ``load`` (keywords win)."""
    kind, location, opts = parse_spec(spec)
    try:
        factory = codec_class(kind)
    except ValueError as err:
        raise ValueError(f"codec spec {spec!r}: {err}") from None
    if not location:
        raise ValueError(f"codec spec {spec!r} has no location after '{kind}:'")
    merged = {**opts, **options}
    params = list(inspect.signature(factory.load).parameters.values())[1:]  # after the location
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        unknown = sorted(set(merged) - {p.name for p in params})
        if unknown:
            known = ", ".join(p.name for p in params) or "none"
            raise ValueError(
                f"codec spec {spec!r}: unknown option {unknown[0]!r} ({kind} takes: {known})"
            )
    return factory.load(location, **merged)
