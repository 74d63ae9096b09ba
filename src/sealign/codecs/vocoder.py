"""A log-mel "latent codec" around a neural vocoder the user brings, for the flow-matching family.

``encode_latent`` computes log-mel frames with ``librosa`` at the vocoder's hop (the product of
its upsampling rates), ``decode_latent`` runs the vocoder. The vocoder is a ``transformers``
:class:`~transformers.SpeechT5HifiGan` loaded from a LOCAL folder (``config.json`` plus
``model.safetensors`` or ``pytorch_model.bin``, as written by ``save_pretrained``), or a
HiFi-GAN generator with residual blocks of type 2 (V3), which SpeechT5HifiGan cannot hold
(:class:`~sealign.codecs.hifigan_generator.HifiGanGenerator`, ``model_type: hifigan``,
``model.safetensors``, written by ``sealign codec import-hifigan``); nothing is downloaded.
An optional ``mel.json`` in the same folder overrides the analysis settings
(:class:`MelSettings`); keyword options to :meth:`MelVocoderCodec.load` (or ``?key=value`` in a
``mel_vocoder:DIR`` spec) override both.

Analysis defaults follow ``SpeechT5FeatureExtractor`` (what ``microsoft/speecht5_hifigan`` was
trained on): Hann window and FFT of 4 hops (1024 at 16 kHz), magnitude (not power) spectrum,
80–7600 Hz Slaney mel filterbank, ``log10(max(mel, 1e-10))``, frames centred on multiples of the
hop (reflect padding; ``center: false`` gives HiFi-GAN's framing, see
:mod:`sealign.codecs.hifigan`). An input of ``n`` samples gives ``ceil(n / hop)`` frames and the vocoder
returns ``frames · hop`` samples.

Latents are *standardized* log-mels, so that they are on the scale of the flow's Gaussian noise:
``(log_mel − mean) / std``. When the vocoder normalizes its own input (``normalize_before``, the
default of SpeechT5HifiGan) its per-bin ``mean`` / ``scale`` buffers are those statistics;
otherwise, and when those buffers hold the config's defaults (mean 0, scale 1: a vocoder created
or converted without them), the scalars ``latent_mean`` / ``latent_std`` of :class:`MelSettings`
are used.

A policy's checkpoint folder holds a copy of the vocoder (``policy/codec/``), so it loads
without the original folder; a large vocoder makes every checkpoint that much larger.

This codec has no discrete tokens: :meth:`MelVocoderCodec.encode` / :meth:`decode` raise
:class:`~sealign.codecs.base.CodecError` (use the ``fm`` family).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sealign.codecs.base import (
    CodecError,
    CodecUnavailable,
    check_latent,
    check_waveform,
    join_batch,
    split_batch,
)
from sealign.config import from_dict_strict

MEL_FILE = "mel.json"
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MODEL_TYPE = "speecht5_hifigan"
MODEL_TYPES = (MODEL_TYPE, "hifigan")  # the second: sealign.codecs.hifigan_generator


@dataclass
class MelSettings:
    """Log-mel analysis of a :class:`MelVocoderCodec`. ``n_fft`` / ``win_length`` of 0 mean four
    hops; ``fmax`` of 0 means ``min(7600, sample_rate / 2)``."""

    n_fft: int = 0
    win_length: int = 0
    fmin: float = 80.0
    fmax: float = 0.0
    mel_floor: float = 1e-10
    log_base: str = "10"  # "10" (SpeechT5) or "e"
    latent_mean: float = -4.0  # used only when the vocoder has no input statistics
    latent_std: float = 2.0
    min_duration: float = 0.05
    center: bool = True  # False: frames start at the input after (n_fft − hop) / 2 of padding

    def __post_init__(self) -> None:
        if self.log_base not in ("10", "e"):
            raise ValueError(f"log_base must be '10' or 'e', got {self.log_base!r}")
        if self.n_fft < 0 or self.win_length < 0 or not self.mel_floor > 0:
            raise ValueError("n_fft and win_length must be ≥ 0 and mel_floor > 0")
        if not self.latent_std > 0:
            raise ValueError(f"latent_std must be > 0, got {self.latent_std}")
        if not math.isfinite(self.latent_mean):
            raise ValueError(f"latent_mean must be finite, got {self.latent_mean}")
        if not (self.fmin >= 0 and self.fmax >= 0 and math.isfinite(self.fmax)):
            raise ValueError(f"fmin and fmax must be finite and ≥ 0, got {self.fmin}, {self.fmax}")
        if not self.min_duration > 0:
            raise ValueError(f"min_duration must be > 0 seconds, got {self.min_duration}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MelSettings:
        if "n_mels" in d:
            raise ValueError("mel settings: n_mels is the vocoder's own (model_in_dim in its "
                             "config.json), not a mel setting")  # fmt: skip
        return from_dict_strict(cls, d, "mel")


def _check_folder(directory: Path) -> dict[str, Any]:
    """The vocoder's ``config.json`` after checking the folder is complete (clear errors)."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"mel vocoder folder not found: {directory} (expected a local SpeechT5HifiGan folder "
            f"with {CONFIG_FILE} and {' or '.join(WEIGHT_FILES)}, or one written by sealign codec "
            "import-hifigan; nothing is downloaded)"
        )
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{directory}: missing {CONFIG_FILE} of the vocoder (SpeechT5HifiGan or HiFi-GAN)"
        )
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_path}: invalid JSON ({err})") from err
    # sealign's own generator is written as safetensors only
    weights = WEIGHT_FILES[:1] if isinstance(meta, dict) and meta.get("model_type") == "hifigan" \
        else WEIGHT_FILES  # fmt: skip
    if not any((directory / w).is_file() for w in weights):
        raise FileNotFoundError(f"{directory}: missing vocoder weights ({' or '.join(weights)})")
    if not isinstance(meta, dict) or meta.get("model_type") not in MODEL_TYPES:
        got = meta.get("model_type") if isinstance(meta, dict) else None
        raise ValueError(
            f"{cfg_path}: model_type {got!r} is not {MODEL_TYPE!r} (a transformers "
            "SpeechT5HifiGan vocoder) or 'hifigan' (a generator written by sealign codec "
            "import-hifigan)"
        )
    return meta


class MelVocoderCodec:
    """Log-mel latents decoded by a local SpeechT5HifiGan (see the module docstring). Build with
    :meth:`load` (or ``load_codec("mel_vocoder:DIR")``), or from a vocoder object directly."""

    num_codebooks = 0
    codebook_size: int | tuple[int, ...] = ()

    def __init__(
        self, vocoder: Any, settings: MelSettings | None = None, device: str = "cpu"
    ) -> None:
        import torch

        vc = getattr(vocoder, "config", None)
        need = ("sampling_rate", "upsample_rates", "model_in_dim", "normalize_before")
        missing = [k for k in need if not hasattr(vc, k)]
        if missing or not hasattr(vocoder, "save_pretrained"):
            raise TypeError(
                f"{type(vocoder).__name__}: a SpeechT5HifiGan-like vocoder is expected, with "
                f"save_pretrained() and a config holding {', '.join(need)}"
                + (f" (missing: {', '.join(missing)})" if missing else " (no save_pretrained)")
            )
        self.vocoder = vocoder.to(device).eval()
        self.settings = settings or MelSettings()
        self.device = torch.device(device)
        self.sample_rate = int(vc.sampling_rate)
        self.hop = int(math.prod(int(r) for r in vc.upsample_rates))
        self.frame_rate = self.sample_rate / self.hop
        self.latent_dim = int(vc.model_in_dim)
        s = self.settings
        self.n_fft = s.n_fft or 4 * self.hop
        self.win_length = s.win_length or self.n_fft
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} > n_fft {self.n_fft}")
        self.fmax = s.fmax or min(7600.0, self.sample_rate / 2)
        if not s.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"mel band {s.fmin:g}–{self.fmax:g} Hz must be non-empty and end at or below "
                f"the vocoder's Nyquist frequency ({self.sample_rate / 2:g} Hz)"
            )
        mean = vocoder.mean.detach().cpu().numpy().astype(np.float64) if vc.normalize_before else 0
        std = vocoder.scale.detach().cpu().numpy().astype(np.float64) if vc.normalize_before else 1
        if vc.normalize_before and not (np.all(mean == 0) and np.all(std == 1)):
            self._mean, self._std = mean, std
        else:  # no statistics, or a config's defaults (mean 0, scale 1) never filled in
            self._mean = np.full(self.latent_dim, s.latent_mean)
            self._std = np.full(self.latent_dim, s.latent_std)
        import librosa

        self._mel_basis = librosa.filters.mel(
            sr=self.sample_rate,
            n_fft=self.n_fft,
            n_mels=self.latent_dim,
            fmin=s.fmin,
            fmax=self.fmax,
            htk=False,
            norm="slaney",
        ).astype(np.float64)

    def __repr__(self) -> str:
        return (
            f"MelVocoderCodec(sample_rate={self.sample_rate}, frame_rate={self.frame_rate:g}, "
            f"latent_dim={self.latent_dim})"
        )

    # -- latents ------------------------------------------------------------------------
    def log_mel(self, wav: np.ndarray) -> np.ndarray:
        """``[n_mels, ceil(n / hop)]`` un-standardized log-mel of one waveform."""
        import librosa

        x = np.asarray(wav, dtype=np.float64)
        n = max(1, -(-x.size // self.hop))
        if not self.settings.center:  # HiFi-GAN's framing
            pad = (self.n_fft - self.hop) // 2
            x = np.pad(x, (pad, pad), mode="reflect")
        spec = np.abs(
            librosa.stft(
                x,
                n_fft=self.n_fft,
                hop_length=self.hop,
                win_length=self.win_length,
                window="hann",
                center=self.settings.center,
                pad_mode="reflect",
            )
        )
        mel = np.maximum(self._mel_basis @ spec, self.settings.mel_floor)
        logm = np.log10(mel) if self.settings.log_base == "10" else np.log(mel)
        if logm.shape[1] < n:
            logm = np.concatenate([logm, np.repeat(logm[:, -1:], n - logm.shape[1], 1)], axis=1)
        return logm[:, :n]

    def encode_latent(
        self, wavs: Sequence[np.ndarray] | np.ndarray
    ) -> list[np.ndarray] | np.ndarray:
        """Waveform(s) → standardized log-mels ``[latent_dim, ceil(n / hop)]`` float32."""
        items, single = split_batch(wavs, 1)
        out = []
        for i, w in enumerate(items):
            x = check_waveform(w, self.sample_rate, f"item {i}", self.settings.min_duration)
            z = (self.log_mel(x) - self._mean[:, None]) / self._std[:, None]
            out.append(z.astype(np.float32))
        return join_batch(out, single)

    def decode_latent(
        self, latents: Sequence[np.ndarray] | np.ndarray
    ) -> list[np.ndarray] | np.ndarray:
        """Latent(s) ``[latent_dim, T]`` → float32 waveform(s) of ``T · hop`` samples."""
        import torch

        items, single = split_batch(latents, 2)
        out = []
        for i, lat in enumerate(items):
            lat = check_latent(lat, self.latent_dim, f"item {i}")
            logm = (lat * self._std[:, None] + self._mean[:, None]).T  # [T, n_mels]
            spec = torch.as_tensor(logm, dtype=torch.float32, device=self.device)
            with torch.inference_mode():
                wav = self.vocoder(spec).reshape(-1).float().cpu().numpy()
            n = lat.shape[1] * self.hop
            wav = wav[:n] if wav.size >= n else np.pad(wav, (0, n - wav.size))
            out.append(np.ascontiguousarray(wav, dtype=np.float32))
        return join_batch(out, single)

    # -- no tokens ----------------------------------------------------------------------
    def encode(self, wavs: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray] | np.ndarray:
        raise CodecError(
            "the mel vocoder codec has continuous latents only (no tokens): use encode_latent "
            "and the fm family"
        )

    def decode(self, tokens: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray] | np.ndarray:
        raise CodecError(
            "the mel vocoder codec has continuous latents only (no tokens): use decode_latent "
            "and the fm family"
        )

    # -- persistence --------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the vocoder (``save_pretrained``: config.json + model.safetensors) and
        ``mel.json``: the folder is enough for :meth:`load`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.vocoder.save_pretrained(str(directory), safe_serialization=True)
        (directory / MEL_FILE).write_text(json.dumps(asdict(self.settings), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu", **options: Any) -> MelVocoderCodec:
        """Load a local SpeechT5HifiGan folder, or a HiFi-GAN generator folder written by
        ``sealign codec import-hifigan``; ``options`` are :class:`MelSettings` fields
        (overriding the folder's ``mel.json``)."""
        directory = Path(directory)
        meta = _check_folder(directory)
        mel: dict[str, Any] = {}
        if (directory / MEL_FILE).is_file():
            try:
                mel = json.loads((directory / MEL_FILE).read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{directory / MEL_FILE}: invalid JSON ({err})") from err
            if not isinstance(mel, dict):
                raise ValueError(f"{directory / MEL_FILE}: expected a JSON object of mel settings")
        settings = MelSettings.from_dict({**mel, **options})
        if meta["model_type"] == "hifigan":
            from sealign.codecs.hifigan_generator import HifiGanGenerator

            return cls(HifiGanGenerator.from_folder(directory), settings, device=device)
        try:
            from transformers import SpeechT5HifiGan
        except ImportError as err:
            raise CodecUnavailable(
                "the mel vocoder codec needs the 'transformers' package: pip install transformers"
            ) from err
        from sealign.codecs.neural import from_pretrained_checked

        vocoder = from_pretrained_checked(
            SpeechT5HifiGan, str(directory), MODEL_TYPE, "SpeechT5HifiGan"
        )
        return cls(vocoder, settings, device=device)
