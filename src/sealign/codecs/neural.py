"""Adapters that give real neural codecs the :class:`~sealign.codecs.base.Codec` interface.

* :class:`EncodecCodec` — EnCodec through ``transformers`` (``EncodecModel``); a local folder
  (``save_pretrained`` layout) or a hub id already in the local Hugging Face cache. ``bandwidth``
  (kbps, one of the model's ``target_bandwidths``) sets the number of codebooks. Continuous latent:
  the encoder output before quantization.
* :class:`DacCodec` — Descript Audio Codec through ``transformers`` (``DacModel``): a local
  folder or a cached hub id. An original ``.pth`` checkpoint is refused with how to convert it
  (the ``descript-audio-codec`` package that reads it pins ``torchaudio`` and an old
  ``protobuf``). ``n_quantizers`` sets the number of codebooks. Continuous latent: the
  encoder output before quantization.

Waveforms must already be at the codec's :attr:`sample_rate` (e.g. 24 kHz for EnCodec 24 kHz);
resample with :func:`sealign.audio.io.resample`. Items of a batch are coded one at a time, so the
tokens of an item do not depend on the other items' lengths.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sealign.codecs.base import (
    CodecUnavailable,
    check_latent,
    check_tokens,
    check_waveform,
    join_batch,
    split_batch,
)
from sealign.utils.threads import default_threads, set_torch_threads

_SEALIGN_FILE = "sealign_codec.json"


def _looks_like_path(location: str) -> bool:
    """Hub ids look like ``org/name``; anything else path-like is treated as a local path."""
    return (
        location.startswith((".", "/", "~"))
        or location.endswith((".pth", ".pt", ".safetensors", ".bin", ".json"))
        or location.count("/") > 1
        or (os.sep != "/" and os.sep in location)
    )


def from_pretrained_checked(
    model_cls: Any, where: str, model_type: str, what: str, hint: str = ""
) -> Any:
    """``model_cls.from_pretrained`` (no downloads), refusing a folder of another model or one
    missing weights: transformers would otherwise build the model with random weights. Any
    failure to load (no config, a damaged weights file) is a :class:`CodecUnavailable`, with
    ``hint`` on what to pass instead."""
    config = Path(where) / "config.json"
    if Path(where).is_dir() and not config.is_file():
        raise CodecUnavailable(f"{where}: no config.json; expected a folder written by "
                               f"transformers' save_pretrained of a {what} model")  # fmt: skip
    if config.is_file():
        try:
            found = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError):
            found = None
        if found != model_type:
            raise CodecUnavailable(f"{where} holds a {found!r} model, not {what} "
                                   f"(model_type {model_type!r})")  # fmt: skip
    try:
        model, info = model_cls.from_pretrained(
            where, local_files_only=True, output_loading_info=True
        )
    except Exception as err:  # noqa: BLE001 - safetensors, torch and transformers raise their own
        raise CodecUnavailable(
            f"{what} weights could not be loaded from {where!r} ({type(err).__name__}: {err}). "
            f"{hint}".rstrip()
        ) from err
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise CodecUnavailable(f"{where}: {len(missing)} of the {what} model's weights are "
                               f"missing (e.g. {missing[0]}); it would run with random ones")  # fmt: skip
    return model


def _resolve(location: str, what: str) -> str:
    """A local folder/file, or a hub id (only from the local cache: no downloads here)."""
    path = Path(location).expanduser()
    if path.exists():
        return str(path)
    if _looks_like_path(location):
        raise CodecUnavailable(f"{what} weights not found: {location} does not exist")
    return location


class _TorchCodec:
    """Shared batching, validation and thread handling of the torch-based adapters."""

    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int
    latent_dim: int
    hop_length: int
    min_duration: float = 0.01

    def __init__(self, num_threads: int | None = None) -> None:
        set_torch_threads(num_threads or default_threads())

    def _tensor(self, wav: np.ndarray, name: str) -> Any:
        import torch

        x = check_waveform(wav, self.sample_rate, name, self.min_duration).astype(np.float32)
        return torch.from_numpy(x)[None, None, :]

    def _frames(self, num_samples: int) -> int:
        return max(1, math.ceil(num_samples / self.hop_length))

    def encode(self, wavs: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray] | np.ndarray:
        """Waveform(s) at :attr:`sample_rate` → int64 tokens ``[num_codebooks, T]``."""
        import torch

        items, single = split_batch(wavs, 1)
        out = []
        with torch.inference_mode():
            for i, w in enumerate(items):
                codes = self._encode_one(self._tensor(w, f"item {i}"))
                out.append(codes[:, : self._frames(len(w))].astype(np.int64))
        return join_batch(out, single)

    def decode(self, tokens: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray] | np.ndarray:
        """Tokens ``[num_codebooks, T]`` → float32 waveform(s) of ``T * hop_length`` samples."""
        import torch

        items, single = split_batch(tokens, 2)
        sizes = (self.codebook_size,) * self.num_codebooks
        out = []
        with torch.inference_mode():
            for i, tok in enumerate(items):
                tok = check_tokens(tok, sizes, f"item {i}")
                wav = self._decode_one(torch.from_numpy(tok)[None])
                out.append(self._fit(wav, tok.shape[1] * self.hop_length))
        return join_batch(out, single)

    def encode_latent(
        self, wavs: Sequence[np.ndarray] | np.ndarray
    ) -> list[np.ndarray] | np.ndarray:
        """Waveform(s) → float32 encoder output(s) ``[latent_dim, T]`` (before quantization)."""
        import torch

        items, single = split_batch(wavs, 1)
        out = []
        with torch.inference_mode():
            for i, w in enumerate(items):
                z = self._encoder(self._tensor(w, f"item {i}"))[0]
                out.append(z[:, : self._frames(len(w))].numpy().astype(np.float32))
        return join_batch(out, single)

    def decode_latent(
        self, latents: Sequence[np.ndarray] | np.ndarray
    ) -> list[np.ndarray] | np.ndarray:
        """Latent(s) ``[latent_dim, T]`` → float32 waveform(s)."""
        import torch

        items, single = split_batch(latents, 2)
        out = []
        with torch.inference_mode():
            for i, z in enumerate(items):
                z = check_latent(z, self.latent_dim, f"item {i}").astype(np.float32)
                wav = self._decoder(torch.from_numpy(z)[None])
                out.append(self._fit(wav, z.shape[1] * self.hop_length))
        return join_batch(out, single)

    @staticmethod
    def _fit(wav: Any, n: int) -> np.ndarray:
        y = wav.reshape(-1).float().numpy()[:n]
        if len(y) < n:
            y = np.pad(y, (0, n - len(y)))
        return y.astype(np.float32)

    # subclasses: torch [1, 1, L] → numpy [K, T]; torch [1, K, T] → waveform tensor
    def _encode_one(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def _decode_one(self, codes: Any) -> Any:
        raise NotImplementedError

    def _encoder(self, x: Any) -> Any:
        raise NotImplementedError

    def _decoder(self, z: Any) -> Any:
        raise NotImplementedError


class EncodecCodec(_TorchCodec):
    """EnCodec (``transformers.EncodecModel``) as a :class:`~sealign.codecs.base.Codec`."""

    def __init__(self, model: Any, bandwidth: float | None = None, num_threads: int | None = None):
        super().__init__(num_threads)
        cfg = model.config
        if cfg.chunk_length_s is not None or cfg.normalize:
            raise CodecUnavailable(
                "chunked / loudness-normalized EnCodec models (e.g. encodec_48khz) need per-chunk "
                "scales that a token sequence cannot carry; use a model without chunking "
                "(e.g. facebook/encodec_24khz)"
            )
        if cfg.audio_channels != 1:
            raise CodecUnavailable(
                f"only mono EnCodec models are supported ({cfg.audio_channels} ch)"
            )
        bandwidths = [float(b) for b in cfg.target_bandwidths]
        self.bandwidth = float(bandwidth) if bandwidth is not None else min(bandwidths)
        if self.bandwidth not in bandwidths:
            raise ValueError(f"bandwidth {self.bandwidth} not in the model's {bandwidths}")
        self.model = model.eval()
        self.sample_rate = int(cfg.sampling_rate)
        self.hop_length = int(np.prod(cfg.upsampling_ratios))
        self.frame_rate = self.sample_rate / self.hop_length
        self.codebook_size = int(cfg.codebook_size)
        self.num_codebooks = int(model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth))
        if self.num_codebooks < 1:
            raise ValueError(f"bandwidth {self.bandwidth} kbps is below one codebook of this model")
        self.latent_dim = int(cfg.hidden_size)

    def __repr__(self) -> str:
        return (
            f"EncodecCodec(sample_rate={self.sample_rate}, frame_rate={self.frame_rate:g}, "
            f"bandwidth={self.bandwidth}, num_codebooks={self.num_codebooks})"
        )

    @classmethod
    def load(
        cls,
        location: str | Path,
        bandwidth: float | None = None,
        num_threads: int | None = None,
    ) -> EncodecCodec:
        """Load from a local ``save_pretrained`` folder or a cached hub id (no downloads)."""
        try:
            from transformers import EncodecModel
        except ImportError as err:  # pragma: no cover - transformers is a dependency
            raise CodecUnavailable(
                "EnCodec needs 'transformers': pip install transformers"
            ) from err
        where = _resolve(str(location), "EnCodec")
        if bandwidth is None:
            bandwidth = _saved_option(where, "bandwidth")
        model = from_pretrained_checked(
            EncodecModel, where, "encodec", "EnCodec",
            "Pass a local folder written by EncodecModel.save_pretrained, or a hub id already in "
            "the local Hugging Face cache (nothing is downloaded)",
        )  # fmt: skip
        return cls(model, bandwidth=bandwidth, num_threads=num_threads)

    def save(self, directory: str | Path) -> Path:
        """``save_pretrained`` (safetensors + config.json) plus the chosen bandwidth."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        _write_options(directory, {"kind": "encodec", "bandwidth": self.bandwidth})
        return directory

    def _encode_one(self, x: Any) -> np.ndarray:
        out = self.model.encode(x, bandwidth=self.bandwidth, return_dict=True)
        return out.audio_codes[0, 0].numpy()

    def _decode_one(self, codes: Any) -> Any:
        return self.model.decode(codes[None], [None], return_dict=True).audio_values

    def _encoder(self, x: Any) -> Any:
        return self.model.encoder(x)

    def _decoder(self, z: Any) -> Any:
        return self.model.decoder(z)


class DacCodec(_TorchCodec):
    """Descript Audio Codec (``transformers.DacModel``) as a :class:`~sealign.codecs.base.Codec`."""

    def __init__(
        self, model: Any, n_quantizers: int | None = None, num_threads: int | None = None
    ) -> None:
        super().__init__(num_threads)
        cfg = model.config
        self.model = model.eval()
        total = int(cfg.n_codebooks)
        self.num_codebooks = int(n_quantizers) if n_quantizers is not None else total
        if not 1 <= self.num_codebooks <= total:
            raise ValueError(f"n_quantizers must be in 1..{total}, got {n_quantizers}")
        self.sample_rate = int(cfg.sampling_rate)
        self.hop_length = int(cfg.hop_length)
        self.frame_rate = self.sample_rate / self.hop_length
        self.codebook_size = int(cfg.codebook_size)
        self.latent_dim = int(cfg.hidden_size)

    def __repr__(self) -> str:
        return (
            f"DacCodec(sample_rate={self.sample_rate}, frame_rate={self.frame_rate:g}, "
            f"num_codebooks={self.num_codebooks})"
        )

    @classmethod
    def load(
        cls,
        location: str | Path,
        n_quantizers: int | None = None,
        num_threads: int | None = None,
    ) -> DacCodec:
        """Load a ``transformers`` DacModel folder or cached hub id (an original ``.pth`` is
        refused with how to convert it)."""
        where = _resolve(str(location), "DAC")
        if n_quantizers is None:
            n_quantizers = _saved_option(where, "n_quantizers")
        if where.endswith((".pth", ".pt")):
            raise CodecUnavailable(_dac_pth_message(where))
        try:
            from transformers import DacModel
        except ImportError as err:  # pragma: no cover - transformers is a dependency
            raise CodecUnavailable("DAC needs 'transformers': pip install transformers") from err
        model = from_pretrained_checked(
            DacModel, where, "dac", "DAC",
            "Pass a local folder written by transformers' DacModel.save_pretrained, or a cached "
            "hub id such as descript/dac_16khz",
        )  # fmt: skip
        return cls(model, n_quantizers=n_quantizers, num_threads=num_threads)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.model.save_pretrained(directory)
        _write_options(directory, {"kind": "dac", "n_quantizers": self.num_codebooks})
        return directory

    def _tensor(self, wav: np.ndarray, name: str) -> Any:
        import torch.nn.functional as F

        x = super()._tensor(wav, name)
        pad = (-x.shape[-1]) % self.hop_length  # DAC's encoder wants whole hops
        return F.pad(x, (0, pad)) if pad else x

    def _encode_one(self, x: Any) -> np.ndarray:
        out = self.model.encode(x, n_quantizers=self.num_codebooks, return_dict=True)
        return out.audio_codes[0, : self.num_codebooks].numpy()

    def _decode_one(self, codes: Any) -> Any:
        return self.model.decode(audio_codes=codes, return_dict=True).audio_values

    def _encoder(self, x: Any) -> Any:
        return self.model.encoder(x)

    def _decoder(self, z: Any) -> Any:
        return self.model.decoder(z)


def _dac_pth_message(path: str) -> str:
    return (
        f"{path}: original DAC .pth checkpoints need the 'descript-audio-codec' package, whose "
        "metadata requires torchaudio and protobuf<3.20 (not installable next to this torch). "
        "Use the transformers copy of the weights instead: a folder written by "
        "transformers' DacModel.save_pretrained (convert a .pth once with transformers' "
        "models/dac/convert_dac_checkpoint.py), or a cached hub id such as descript/dac_16khz"
    )


def _write_options(directory: Path, options: dict[str, Any]) -> None:
    (directory / _SEALIGN_FILE).write_text(json.dumps(options, indent=2) + "\n")


def _saved_option(where: str, key: str) -> Any:
    path = Path(where) / _SEALIGN_FILE
    if path.is_file():
        return json.loads(path.read_text()).get(key)
    return None
