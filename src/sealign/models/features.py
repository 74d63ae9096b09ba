"""Conditioning features of noisy audio, shared by every model family: log-mel frames, and
optionally a speech encoder's content features (:mod:`sealign.models.content`).

Framing is aligned to the codec: with ``hop = sample_rate / frame_rate / frames_per_token`` a
signal of ``n`` samples gives ``frames_per_token * ceil(n / token_samples)`` feature frames, i.e.
exactly ``frames_per_token`` feature frames per codec frame (the last one zero-padded), and
feature frame ``i`` is centred on the middle of its hop ``[i·hop, (i+1)·hop)``. A model can then
reshape ``[T_c, D]`` to ``[T, frames_per_token · D]`` and add it to the token stream frame by
frame.

The power spectrum (``torch.stft``, Hann window) goes through a ``librosa`` mel filterbank and a
natural log floored at ``log_floor`` times the utterance's loudest mel value (70 dB below it by
default; a relative floor keeps features exactly invariant to the input gain). Per-utterance normalization (``normalize="utterance"``, default) subtracts
one scalar mean and divides by one scalar standard deviation over all valid frames and bins: this
removes the input gain but keeps the spectral shape of speech and noise, which the model needs to
tell them apart. ``"bin"`` normalizes every mel bin separately (cepstral-mean style) and
``"none"`` keeps raw log-mels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from sealign.audio.io import AudioError, AudioLimits, validate_audio
from sealign.config import from_dict_strict
from sealign.models.policy import Conditioning

NORMALIZATIONS = ("utterance", "bin", "none")


class FeatureError(ValueError):
    """Noisy input that cannot be turned into features (silent, too short, not mono...)."""


@dataclass
class FeatureConfig:
    """Log-mel settings. ``frames_per_token`` feature frames make one codec frame."""

    sample_rate: int = 16000
    hop_length: int = 160
    frames_per_token: int = 2
    n_mels: int = 80
    n_fft: int = 512
    win_length: int = 400
    fmin: float = 0.0
    fmax: float | None = None
    log_floor: float = 1e-7  # relative to the utterance's largest mel power
    normalize: str = "utterance"
    min_duration: float = 0.1  # seconds; shorter input is an error
    # Content features appended to every feature frame (sealign.models.content): "none",
    # "whisper" (encoder frames of `content_model`, default the offline Whisper-base) or "ssl"
    # (hidden layer `content_layer` of the transformers speech encoder `content_model`, e.g.
    # WavLM); both need 20-ms codec frames. `content_dim` is the encoder's width (512 for
    # Whisper-base, 768 / 1024 for base / large SSL models).
    content: str = "none"
    content_model: str | None = None
    content_layer: int = -1
    content_dim: int = 512
    content_threads: int = 1
    content_cache_gb: float = 2.0

    def __post_init__(self) -> None:
        from sealign.models.content import CONTENT_ENCODERS, CONTENT_FRAME_SECONDS

        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.content not in CONTENT_ENCODERS:
            raise ValueError(f"content must be one of {CONTENT_ENCODERS}, got {self.content!r}")
        frame = self.hop_length * self.frames_per_token / self.sample_rate
        if self.content != "none" and abs(frame - CONTENT_FRAME_SECONDS) > 1e-9:
            raise ValueError(
                f"content={self.content!r} gives one frame per 20 ms, but a codec frame here is "
                f"{frame * 1000:g} ms; use a 50-Hz codec or content: none"
            )
        if self.content == "ssl" and not self.content_model:
            raise ValueError(
                "content: ssl needs content_model, a local folder (save_pretrained) or hub id "
                "of a transformers speech encoder such as microsoft/wavlm-large"
            )
        if self.content != "none" and (self.content_dim < 1 or self.content_threads < 1):
            raise ValueError("content_dim and content_threads must be >= 1")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} > n_fft {self.n_fft}")
        if self.hop_length <= 0 or self.frames_per_token <= 0:
            raise ValueError("hop_length and frames_per_token must be positive")
        if self.n_mels < 1 or self.n_fft < 1 or self.win_length < 1 or self.sample_rate < 1:
            raise ValueError("n_mels, n_fft, win_length and sample_rate must be >= 1")
        nyquist = self.sample_rate / 2
        if not 0 <= self.fmin < (self.fmax or nyquist) <= nyquist:
            raise ValueError(f"need 0 <= fmin < fmax <= {nyquist:g} (sample_rate / 2), got "
                             f"fmin {self.fmin}, fmax {self.fmax}")  # fmt: skip
        if not self.min_duration > 0 or not self.log_floor > 0:
            raise ValueError("min_duration and log_floor must be > 0")

    @property
    def token_samples(self) -> int:
        return self.hop_length * self.frames_per_token

    @property
    def dim(self) -> int:
        """Width of one feature frame: the log-mels, then the content features if any."""
        return self.n_mels + (self.content_dim if self.content != "none" else 0)

    def num_tokens(self, num_samples: int) -> int:
        """Codec frames covering ``num_samples``: ``ceil(num_samples / token_samples)``."""
        return max(1, -(-int(num_samples) // self.token_samples))

    def num_frames(self, num_samples: int) -> int:
        return self.num_tokens(num_samples) * self.frames_per_token

    @classmethod
    def for_rates(
        cls, sample_rate: int, frame_rate: float, frames_per_token: int = 2, **overrides: Any
    ) -> FeatureConfig:
        """Settings whose hop puts ``frames_per_token`` feature frames in one codec frame."""
        token = sample_rate / frame_rate
        hop = token / frames_per_token
        if abs(hop - round(hop)) > 1e-6:
            raise ValueError(
                f"a codec frame of {token:g} samples cannot be split into {frames_per_token} "
                "whole feature hops; choose another frames_per_token"
            )
        hop = int(round(hop))
        n_fft = overrides.pop("n_fft", 1 << max(8, math.ceil(math.log2(2.5 * hop))))
        win = overrides.pop("win_length", min(n_fft, int(round(2.5 * hop))))
        return cls(
            sample_rate=int(sample_rate),
            hop_length=hop,
            frames_per_token=int(frames_per_token),
            n_fft=int(n_fft),
            win_length=int(win),
            **overrides,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        return from_dict_strict(cls, d, "feature")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> torch.Tensor:
    import librosa

    fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return torch.from_numpy(np.asarray(fb, dtype=np.float32))


@functools.lru_cache(maxsize=8)
def _window(win_length: int) -> torch.Tensor:
    return torch.hann_window(win_length, periodic=True, dtype=torch.float32)


def check_noisy(wav: np.ndarray, cfg: FeatureConfig, name: str) -> np.ndarray:
    """Validate one noisy waveform (mono, finite, audible, long enough) → float32."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise FeatureError(f"{name}: expected mono 1-D audio, got shape {wav.shape}")
    if wav.dtype.kind != "f":
        raise FeatureError(
            f"{name}: expected float samples in [-1, 1], got {wav.dtype} (e.g. x / 32768 for int16)"
        )
    try:
        validate_audio(
            wav, cfg.sample_rate, name=name, limits=AudioLimits(min_duration=cfg.min_duration)
        )
    except AudioError as err:
        raise FeatureError(str(err)) from err
    if float(np.max(np.abs(wav))) < 1e-4:
        raise FeatureError(f"{name}: audio is silent (peak below -80 dBFS)")
    return wav.astype(np.float32)


def log_mel(wav: np.ndarray | torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """``[frames, n_mels]`` un-normalized log-mel of one waveform (no validation)."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    n_frames = cfg.num_frames(x.numel())
    hop, n_fft = cfg.hop_length, cfg.n_fft
    left = n_fft // 2 - hop // 2
    total = (n_frames - 1) * hop + n_fft
    x = torch.nn.functional.pad(x, (left, max(0, total - left - x.numel())))[:total]
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop,
        win_length=cfg.win_length,
        window=_window(cfg.win_length),
        center=False,
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()  # [F, frames]
    mel = _mel_basis(cfg.sample_rate, n_fft, cfg.n_mels, cfg.fmin, cfg.fmax) @ power
    floor = cfg.log_floor * torch.clamp(mel.max(), min=1e-20)
    return torch.log(mel + floor).T.contiguous()


def normalize(feats: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-utterance normalization of ``[frames, D]`` (see the module docstring)."""
    if mode == "none":
        return feats
    if mode == "utterance":
        mean, std = feats.mean(), feats.std(unbiased=False)
    else:
        mean, std = feats.mean(dim=0), feats.std(dim=0, unbiased=False)
    return (feats - mean) / torch.clamp(std, min=1e-5)


def compute_features(
    noisy: Sequence[np.ndarray],
    cfg: FeatureConfig,
    max_frames: int | None = None,
    device: str = "cpu",
) -> Conditioning:
    """Batched, padded, normalized log-mels of ``noisy`` → :class:`Conditioning` (on the CPU).

    ``features [B, T_c, n_mels]`` (zeros past each item's end), ``mask [B, T_c]`` (True = valid),
    ``num_samples``. ``max_frames`` bounds the codec frames per item (a clear error beyond).
    ``device``: the policy's, where content features are computed if the encoder can run there.
    """
    if isinstance(noisy, np.ndarray) and noisy.ndim == 1:
        noisy = [noisy]
    if len(noisy) == 0:
        raise FeatureError("no noisy inputs given")
    items = [check_noisy(w, cfg, f"noisy item {i}") for i, w in enumerate(noisy)]
    if max_frames is not None:
        for i, w in enumerate(items):
            t = cfg.num_tokens(w.size)
            if t > max_frames:
                raise FeatureError(
                    f"noisy item {i}: {w.size / cfg.sample_rate:.1f} s is {t} codec frames, more "
                    f"than the model's max_frames={max_frames}; split the input into chunks"
                )
    feats = [normalize(log_mel(w, cfg), cfg.normalize) for w in items]
    if cfg.content != "none":
        feats = [
            torch.cat([f, c], dim=1)
            for f, c in zip(feats, content_frames(items, cfg, device), strict=True)
        ]
    t_max = max(f.shape[0] for f in feats)
    out = torch.zeros(len(feats), t_max, cfg.dim)
    mask = torch.zeros(len(feats), t_max, dtype=torch.bool)
    for i, f in enumerate(feats):
        out[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = True
    return Conditioning(out, mask, [int(w.size) for w in items])


def content_frames(
    items: Sequence[np.ndarray], cfg: FeatureConfig, device: str = "cpu"
) -> list[torch.Tensor]:
    """Content features of each waveform, repeated for each feature frame of a codec frame:
    ``[num_frames, content_dim]`` (computed on the policy's ``device`` where possible)."""
    from sealign.models.content import encoder_for

    enc = encoder_for(cfg, str(device))
    out = []
    for frames in enc(items, cfg.sample_rate):
        if frames.shape[1] != cfg.content_dim:
            raise FeatureError(
                f"content encoder {enc.name} gives {frames.shape[1]}-dim frames but the model "
                f"was built for content_dim={cfg.content_dim}"
            )
        out.append(torch.from_numpy(frames).repeat_interleave(cfg.frames_per_token, dim=0))
    return out


def drop_content(
    cond: Conditioning, fc: FeatureConfig, rows: torch.Tensor | None = None
) -> Conditioning:
    """A copy of ``cond`` whose content-feature columns are zero in ``rows`` (a bool ``[B]``;
    None = every row): the "no content" condition that classifier-free guidance contrasts with.
    The log-mels and ``extra`` are kept."""
    if fc.content == "none":
        raise ValueError("this model has no content features to drop (features.content: none)")
    feats = cond.features.clone()
    dropped = feats.new_ones(len(feats)) if rows is None else rows.to(feats.device, feats.dtype)
    feats[..., fc.n_mels :] *= (1.0 - dropped)[:, None, None]
    return Conditioning(feats, cond.mask, list(cond.num_samples), dict(cond.extra))


def frame_conditioner_layers(
    fc: FeatureConfig, dim: int, lookahead: int
) -> tuple[torch.nn.Linear, torch.nn.Conv1d | None]:
    """The layers :func:`frame_states` uses: a projection of ``frames_per_token`` stacked
    feature frames to ``dim``, and a convolution seeing ``lookahead`` frames on each side."""
    proj = torch.nn.Linear(fc.frames_per_token * fc.dim, dim)
    conv = torch.nn.Conv1d(dim, dim, 2 * lookahead + 1, padding=lookahead) if lookahead else None
    return proj, conv


def frame_states(
    cond: Conditioning,
    fc: FeatureConfig,
    max_frames: int,
    proj: torch.nn.Linear,
    conv: torch.nn.Conv1d | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy features → one state per codec frame ``[B, T, dim]`` and the frame mask ``[B, T]``
    (a frame is valid when all its feature frames are)."""
    device = proj.weight.device
    f = cond.features.to(device, torch.float32)
    b, tc, dim = f.shape
    s = fc.frames_per_token
    if dim != fc.dim or tc % s:
        raise FeatureError(
            f"conditioning of shape {tuple(f.shape)} does not fit this model (expects "
            f"{fc.dim} features and a multiple of {s} frames); build it with condition()"
        )
    t = tc // s
    if t > max_frames:
        raise FeatureError(f"{t} codec frames exceed max_frames={max_frames}")
    m = cond.mask.to(device).view(b, t, s).all(dim=-1)
    mf = m.unsqueeze(-1).to(f.dtype)
    c = proj(f.reshape(b, t, s * dim)) * mf
    if conv is not None:
        c = c + conv(torch.nn.functional.gelu(c).transpose(1, 2)).transpose(1, 2) * mf
    return c, m
