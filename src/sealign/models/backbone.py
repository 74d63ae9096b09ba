"""Settings shared by the built-in families' transformer backbones."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from sealign.codecs.base import Codec
from sealign.models.features import FeatureConfig


class LogitScale:
    """A learned inverse sampling temperature for a token model (mixed into its ``nn.Module``):
    ``logit_scale``, the log of a factor on every logit. It is 0 and frozen unless GSPO learns
    it (``temperature_lr``), and a checkpoint written before it existed loads with 0
    (``optional_weights``). Sampling at temperature T with ``logit_scale`` s samples the
    unscaled model at T·exp(−s)."""

    optional_weights: tuple[str, ...] = ("logit_scale",)
    logit_scale: nn.Parameter

    def _init_logit_scale(self) -> None:
        self.logit_scale = nn.Parameter(torch.zeros(()), requires_grad=False)

    def _scaled(self) -> bool:
        """Whether ``logit_scale`` changes the logits (it is learned, or not 0)."""
        return self.logit_scale.requires_grad or float(self.logit_scale) != 0.0

    def _scale_logits(self, logits: list[torch.Tensor]) -> list[torch.Tensor]:
        """``logits`` times exp(``logit_scale``); as given when that is 1 and not learned."""
        if not self._scaled():
            return logits
        factor = self.logit_scale.exp()
        # in float32: bf16 logits (autocast) times a 0-dim factor would stay bf16 and round twice
        return [lg.float() * factor for lg in logits]


@dataclass
class BackboneConfig:
    """Transformer size and conditioning of a built-in policy.

    ``mlp_hidden = 0`` means ``8/3 · dim`` rounded up to a multiple of 32. ``lookahead``: noisy
    frames on each side seen by the conditioning convolution. ``max_frames``: longest input in
    codec frames (60 s at 50 Hz).
    """

    dim: int = 192
    layers: int = 6
    heads: int = 4
    mlp_hidden: int = 0
    dropout: float = 0.0
    lookahead: int = 2
    max_frames: int = 3000
    rope_base: float = 10000.0
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        if isinstance(self.features, dict):
            self.features = FeatureConfig.from_dict(self.features)
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.heads} heads of even width")
        if self.lookahead < 0 or self.layers < 1 or self.max_frames < 1:
            raise ValueError("lookahead must be ≥ 0, layers and max_frames ≥ 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 32 * math.ceil(8 * self.dim / 3 / 32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def codec_features(codec: Codec, feats: dict[str, Any] | FeatureConfig | None) -> FeatureConfig:
    """Feature framing matching ``codec``'s sample and frame rates; ``feats`` may override
    :class:`FeatureConfig` fields (``frames_per_token`` (default 2), ``n_mels``...)."""
    if isinstance(feats, FeatureConfig):
        feats = feats.to_dict()
    feats = dict(feats or {})
    fixed = {k: feats.pop(k) for k in ("sample_rate", "hop_length") if k in feats}
    fpt = int(feats.pop("frames_per_token", 2))
    out = FeatureConfig.for_rates(codec.sample_rate, codec.frame_rate, fpt, **feats)
    for key, given in fixed.items():
        if given is not None and given != getattr(out, key):
            raise ValueError(f"features.{key}: {given}, but the codec's rates make it "
                             f"{getattr(out, key)} (the codec sets it: leave it unset)")  # fmt: skip
    return out


def check_framing(fc: FeatureConfig, codec: Codec) -> None:
    """Raise ``ValueError`` unless the feature framing matches the codec's rates."""
    if (
        fc.sample_rate != codec.sample_rate
        or abs(fc.token_samples * codec.frame_rate - codec.sample_rate) > 1e-6 * codec.sample_rate
    ):
        raise ValueError(
            f"feature framing ({fc.sample_rate} Hz, {fc.token_samples} samples per frame) "
            f"does not match the codec ({codec.sample_rate} Hz, {codec.frame_rate:g} frames/s)"
        )
