"""HiFi-GAN's generator (Kong et al., 2020) with both of its residual block types, for vocoders
that ``transformers``' SpeechT5HifiGan cannot hold.

SpeechT5HifiGan has residual blocks of type 1 only (V1, V2). V3 uses type 2: per kernel size,
one dilated convolution per dilation, each added back after a leaky ReLU, instead of type 1's
pairs of a dilated and an undilated convolution. :class:`HifiGanGenerator` builds either, with
the original implementation's module names (``conv_pre``, ``ups``, ``resblocks.*.convs1`` /
``convs2`` or ``convs``, ``conv_post``) and plain weights (weight norms folded by
:func:`sealign.codecs.hifigan.fold_weight_norm`). It offers what
:class:`~sealign.codecs.vocoder.MelVocoderCodec` reads of a vocoder: a ``config`` with
``sampling_rate``, ``upsample_rates``, ``model_in_dim`` and ``normalize_before`` (always
false: it reads raw log-mels), ``save_pretrained`` and a forward from ``[frames, n_mels]``.
Its folder is ``config.json`` (``model_type: hifigan``) plus ``model.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

MODEL_TYPE = "hifigan"
RESBLOCKS = ("1", "2")
LRELU_SLOPE = 0.1  # inside the generator; the last activation uses torch's default 0.01


@dataclass
class HifiGanConfig:
    """The generator's shape, in the names SpeechT5HifiGanConfig uses where it has them."""

    model_in_dim: int = 80
    sampling_rate: int = 22050
    resblock: str = "1"
    upsample_initial_channel: int = 512
    upsample_rates: list[int] = field(default_factory=lambda: [8, 8, 2, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 16, 4, 4])
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(
        default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    )
    model_type: str = MODEL_TYPE
    normalize_before: bool = False

    def __post_init__(self) -> None:
        def positive(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        def positives(v: Any) -> bool:
            return isinstance(v, list) and bool(v) and all(positive(x) for x in v)

        bad = [k for k in ("model_in_dim", "sampling_rate", "upsample_initial_channel")
               if not positive(getattr(self, k))]  # fmt: skip
        bad += [k for k in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes")
                if not positives(getattr(self, k))]  # fmt: skip
        dil = self.resblock_dilation_sizes
        if not (isinstance(dil, list) and dil and all(positives(d) for d in dil)):
            bad.append("resblock_dilation_sizes")
        if bad:
            raise ValueError(
                f"not positive integers (or non-empty lists of them): {', '.join(bad)}"
            )
        self.resblock = str(self.resblock)
        if self.resblock not in RESBLOCKS:
            raise ValueError(f"resblock must be one of {RESBLOCKS}, got {self.resblock!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_dilation_sizes needs one list per resblock kernel size")
        if self.normalize_before:
            raise ValueError("HifiGanGenerator reads raw log-mels: normalize_before must be false")
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r}, got {self.model_type!r}")


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class _Block(nn.Module):
    """One residual block: type 1 (``convs1`` dilated, ``convs2`` not, in pairs) or type 2
    (``convs``, dilated)."""

    def __init__(self, kind: str, width: int, kernel: int, dilations: list[int]) -> None:
        super().__init__()
        self.kind = kind

        def conv(d: int) -> nn.Conv1d:
            return nn.Conv1d(width, width, kernel, 1, dilation=d, padding=_padding(kernel, d))

        if kind == "1":
            self.convs1 = nn.ModuleList(conv(d) for d in dilations)
            self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        else:
            self.convs = nn.ModuleList(conv(d) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "1":
            for c1, c2 in zip(self.convs1, self.convs2, strict=True):
                x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        else:
            for c in self.convs:
                x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x


class HifiGanGenerator(nn.Module):
    """HiFi-GAN's generator: log-mels ``[frames, n_mels]`` (or ``[batch, frames, n_mels]``) →
    waveform ``[frames · hop]`` (or ``[batch, frames · hop]``) in [−1, 1]."""

    def __init__(self, config: HifiGanConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        ch = c.upsample_initial_channel
        self.conv_pre = nn.Conv1d(c.model_in_dim, ch, 7, 1, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes, strict=True))
        )
        self.kernels = len(c.resblock_kernel_sizes)
        self.resblocks = nn.ModuleList(
            _Block(c.resblock, ch // 2 ** (i + 1), k, list(ds))
            for i in range(len(self.ups))
            for k, ds in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes, strict=True)
        )
        self.conv_post = nn.Conv1d(ch // 2 ** len(self.ups), 1, 7, 1, padding=3)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        single = spectrogram.dim() == 2
        x = self.conv_pre((spectrogram[None] if single else spectrogram).transpose(1, 2))
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.kernels : (i + 1) * self.kernels]
            x = sum(block(x) for block in blocks) / self.kernels
        wav = torch.tanh(self.conv_post(F.leaky_relu(x))).squeeze(1)
        return wav[0] if single else wav

    def save_pretrained(self, directory: str | Path, safe_serialization: bool = True) -> None:
        """``config.json`` and ``model.safetensors`` in ``directory`` (the signature of
        ``transformers``' method; the weights are always written as safetensors)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))

    @classmethod
    def from_folder(cls, directory: str | Path) -> HifiGanGenerator:
        """The generator saved in ``directory`` by :meth:`save_pretrained`. A config that does
        not describe a generator (unknown keys included), or weights that do not fit it, raise
        ``ValueError``; unreadable weights :class:`~sealign.codecs.base.CodecUnavailable`."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from sealign.codecs.base import CodecUnavailable

        directory = Path(directory)
        try:
            meta = json.loads((directory / "config.json").read_text())
            config = HifiGanConfig(**meta)
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{directory / 'config.json'}: not a HiFi-GAN generator config "
                             f"({err})") from err  # fmt: skip
        model = cls(config)
        weights = directory / "model.safetensors"
        try:
            state = load_file(str(weights))
        except (OSError, SafetensorError) as err:  # as transformers' loads report it
            raise CodecUnavailable(f"{weights}: the generator's weights are unreadable ({err}); "
                                   "write the folder again with sealign codec import-hifigan"
                                   ) from err  # fmt: skip
        load_state_checked(model, state, directory / "model.safetensors")
        return model.eval()


def load_state_checked(model: nn.Module, state: dict[str, Any], source: str | Path) -> None:
    """``model.load_state_dict(state)`` after naming the missing, unexpected and misshapen
    weights in a ``ValueError`` (buffers the model computes itself, ``mean`` / ``scale``, are
    kept from ``model`` when ``state`` lacks them)."""
    own = model.state_dict()
    kept = {k: own[k] for k in ("mean", "scale") if k in own and k not in state}
    expected = own.keys() - kept.keys()
    missing, extra = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or extra:
        raise ValueError(
            f"{source}: does not fit the generator its config describes "
            f"(missing: {', '.join(missing[:5]) or 'none'}; unexpected: "
            f"{', '.join(extra[:5]) or 'none'})"
        )
    wrong = [f"{k} {tuple(state[k].shape)} ≠ {tuple(own[k].shape)}" for k in sorted(expected)
             if state[k].shape != own[k].shape]  # fmt: skip
    if wrong:
        raise ValueError(f"{source}: shapes differ from its config's: {'; '.join(wrong[:3])}")
    with torch.no_grad():
        model.load_state_dict({**state, **kept})
