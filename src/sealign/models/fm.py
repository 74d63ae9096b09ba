"""Flow-matching (``fm``) family: a bidirectional transformer predicting a velocity field over a
codec's continuous latents.

Convention (F5-TTS / FlowSE style). Time ``s`` runs from ``0`` (noise) to ``1`` (data):
``x_s = (1 − s)·x0 + s·x1`` with ``x0 ~ N(0, I)`` and ``x1`` the clean latents
(``codec.encode_latent``, ``[T, D]`` per utterance), and the model regresses the target velocity
``u = x1 − x0`` (rectified flow). Sampling integrates ``dx = v_θ(x, s) ds`` from ``s = 0`` to ``1``
and decodes the result with ``codec.decode_latent``.

Prior (``FMConfig.prior``). By default ``x0 ~ N(0, σ²I)`` (``σ = prior_std = 1``): the flow
creates the clean latents from noise, guided only by the conditioning. With ``prior="noisy"``
(FlowSE's choice) ``x0 ~ N(μ, σ²I)`` where ``μ`` holds the codec latents of the noisy input
itself (``condition`` computes them; ``extra["prior"]``): the flow only has to move the noisy
latents to clean ones, so what the input already gets right (the speaker's envelope and pitch
at good SNR, timing) need not be generated. Every formula below holds with ``x0 − μ`` in place
of ``x0`` and ``σ²`` scaling the score; ``temperature`` multiplies ``σ``.

Architecture. The noisy latents are projected to ``dim`` and the conditioning is added frame by
frame exactly as in the AR family (:func:`~sealign.models.features.frame_states`: stacked noisy
log-mels, a projection and a convolution seeing ``lookahead`` frames on each side), then
:class:`~sealign.models.transformer.Block` runs with the padding mask, i.e. bidirectional
attention over the valid frames, and a linear head gives the velocity ``[B, T, D]`` (zero on
padding). Time enters through a sinusoidal embedding (``s·1000``) and an MLP. It is *added* to
every frame at the input and also *modulates* the output norm (AdaLN: ``norm(h)·(1 + a) + b``
from the embedding, zero-initialized, as in DiT's final layer). Why not AdaLN in every block?
The transformer block is shared by all families and takes no modulation input; additive input
conditioning already lets every layer see ``s``, and the output modulation lets the read-out
rescale with ``s`` directly (the optimal velocity changes character from ``E[x1] − x0`` near the
noise end to a small correction near the data end). That is enough for the small models here;
a per-block AdaLN would be a new block type, not a change to this file alone.

Training (:meth:`FMPolicy.sft_loss`): per row a random ``s`` (``time_sampling``: ``"uniform"`` or
``"logit_normal"`` = sigmoid of a standard normal) and Gaussian noise, MSE between ``v_θ`` and
``u`` averaged over valid frames and latent dims. Dropout only in training mode.

Samplers (:meth:`FMPolicy.sample`):

* ``method="ode"`` (the default of a plain call, used by ``enhance`` / ``eval``): deterministic
  Euler with ``ode_steps`` uniform steps. ``temperature`` scales the initial noise
  (``x0 = temperature·ε``); lower is closer to the mode. Rollout ``logp`` / ``mask`` are zero:
  deterministic steps have no log-density, and :meth:`FMPolicy.step_log_probs` refuses them.
* ``method="sde"`` (RL; see :meth:`FMPolicy.rl_sample_options`): Flow-GRPO's Euler–Maruyama
  sampler with the same marginals as the ODE, translated to this convention. Flow-GRPO writes
  (``t = 1`` noise) ``dx = [v + σ_t²/(2t)·(x + (1 − t)·v)] dt + σ_t dw`` with
  ``σ_t = a·√(t / (1 − t))``; with ``s = 1 − t`` (so ``v_here = −v_there`` and ``ds = −dt``) the
  forward-in-``s`` SDE is

      dx = [v − g(s)² / (2(1 − s)) · (x − s·v)] ds + g(s) dw,     g(s) = a·√((1 − s) / s).

  ``−(x − s·v)/(1 − s)`` is the score of ``p_s`` under this convention (``−(x − s·v −
  μ)/((1 − s)·σ²)`` with a prior ``N(μ, σ²I)``), so the drift is ``v + g²/2 · score`` and the
  marginals match the ODE for *any* diffusion ``g``. Step ``k``
  (``s_k → s_{k+1}``, ``Δ = s_{k+1} − s_k``, uniform grid of ``sde_steps``) is the Gaussian
  ``N(x_k + drift·Δ, g_k²·Δ·I)``.

  Endpoints. ``g`` is infinite at ``s = 0`` (the noise end) and zero at ``s = 1``. Steps are taken
  *from* ``s_0 … s_{S−1}``, so ``s = 1`` is never a step's start, and ``s = 0`` is handled by
  evaluating ``g`` at ``max(s, s_1)`` (``s_1`` = the first grid point after 0, as Flow-GRPO
  replaces ``σ`` at its noise end by the next one). Because the score term uses the exact score
  with that same finite ``g``, the clamped step is still marginal-preserving. ``1/(1 − s)`` is
  finite at every step start (``s ≤ 1 − Δ``). Hence **all S steps are stochastic**, each has a
  finite log-density, and ``Rollout.mask`` is all ones. ``temperature`` scales the initial noise
  only (the transitions, and so their log-probs, do not depend on it); the SDE noise level is
  ``sde_a`` (config default ≈ 0.7, per-call ``sde_a=``), stored per row.

  A step's log-prob is the Gaussian log-density of ``x_{k+1}`` given ``x_k`` over the valid
  frames and latent dims, averaged per element by default (``logp_reduction="mean"``, as
  Flow-GRPO does: summed, one step's log-prob is thousands of nats and one optimizer step moves
  GSPO's sequence ratio by percents, a hundred times its clip range; averaged, it moves like a
  token log-prob) or summed (``"sum"``, the exact density). It is computed in float64: it is a
  sum of thousands of terms, and in
  float32 its rounding (≈ 1e-3 at magnitudes of a few thousand) would already exceed GSPO's clip
  range. ``Rollout.logp`` and :meth:`FMPolicy.step_log_probs` therefore return float64 tensors.
  The per-step entropy is the closed-form Gaussian entropy ``n·(½·log(2πe) + log σ)`` (per
  element with ``"mean"``; independent of the weights).

Classifier-free guidance on the content features (``content_dropout`` / ``guidance``). A model
conditioned on a speech encoder's content frames (``features.content``) and trained with
``content_dropout = p`` sees a fraction ``p`` of its training rows with those frames zeroed, so
it also learns ``v_∅``, the velocity given the log-mels (and prior) alone. Sampling with
``guidance = w`` follows ``v_c + w·(v_c − v_∅)``: ``w > 0`` extrapolates along what the content
frames add, the phonetic detail, as F5-TTS and Voicebox guide their text conditioning. Both
samplers use the guided velocity (the SDE's score is derived from it, so its step log-probs are
those of the guided steps); DPO's single-step error uses ``v_c``.

Representation alignment with clean content (``repa_layer`` / ``repa_weight``; REPA, Yu et al.
2024, with a speech encoder in place of DINOv2). With ``repa_layer = L > 0`` SFT adds
``repa_weight ·`` mean over valid frames of ``1 − cos(proj(h_L), z)``: block ``L``'s hidden
states, through a small MLP (``repa_proj``), should point the way the Whisper encoder frames
``z`` of the *clean* reference do (``encode_targets`` computes them, ``Targets.extra
["content"]``). The model conditions on the noisy input's encoder frames; this asks its early
layers to carry what a clean reading of the same speech would give, the part of the content
that noise and reverberation hide from the encoder. The MLP is used in training only (it is
saved with the weights; loading a checkpoint without it initializes it afresh).

Rollout ``actions``: ``states [N, S+1, T, D]`` (``x_0 … x_S``; zero on padding), ``times
[N, S+1]``, ``sde_a [N]`` (0 for ODE rollouts), ``guidance [N]``, ``frame_mask [N, T]`` and
``num_samples [N]``.

DPO (:meth:`FMPolicy.preference_log_likelihood`): minus the single-step flow-matching error
``‖v_θ(x_s, s) − u‖²`` summed over valid frames and dims, with ``s`` and ``x0`` from
:meth:`FMPolicy.preference_noise` shared between winner and loser and between policy and
reference (GenSR-Pref's flow-matching proxy, in this convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sealign.codecs.base import Codec
from sealign.config import from_dict_strict
from sealign.models.backbone import BackboneConfig, codec_features
from sealign.models.features import (
    compute_features,
    drop_content,
    frame_conditioner_layers,
    frame_states,
)
from sealign.models.persist import PolicyFolder, fit_length
from sealign.models.policy import Conditioning, Rollout, Targets, sampling_steps
from sealign.models.transformer import Block, drop, init_transformer_weights, rope_tables

FAMILY = "fm"
FORMAT_VERSION = 1
TIME_SAMPLING = ("uniform", "logit_normal")
METHODS = ("ode", "sde")
PRIORS = ("gaussian", "noisy")
_LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass
class FMConfig(BackboneConfig):
    """Size and behaviour of an :class:`FMPolicy`; stored in its ``config.json``.

    ``latent_dim``: width of the codec's latents (set by :meth:`for_codec`). ``mlp_hidden = 0``
    means ``8/3 · dim`` rounded up to a multiple of 32. ``lookahead``: noisy frames on each side
    seen by the conditioning convolution. ``max_frames``: longest input in codec frames.
    ``prior``: law of the flow's starting point ``x0``: ``"gaussian"`` (``N(0, σ²I)``) or
    ``"noisy"`` (``N(μ, σ²I)`` with ``μ`` the codec latents of the noisy input, FlowSE style;
    ``condition`` then encodes the input with the codec), ``σ = prior_std``.
    ``time_freqs``: sinusoidal frequencies of the time embedding. ``time_sampling``: law of the
    training time (``"uniform"`` or ``"logit_normal"``). ``ode_steps`` / ``sde_steps``: default
    Euler steps of the two samplers; ``sde_a``: Flow-GRPO's noise level ``a``.
    ``content_dropout``: probability that SFT zeroes a training row's content features (the
    "no content" condition of classifier-free guidance); ``guidance``: the samplers' default
    guidance scale ``w`` on the content features (0 = none; see :meth:`FMPolicy.sample`).
    ``repa_layer``: block whose output SFT aligns with the clean reference's content-encoder
    frames (0 = off; see the module docstring), with weight ``repa_weight``.
    """

    latent_dim: int = 68
    prior: str = "gaussian"  # "gaussian": x0 ~ N(0, σ²I); "noisy": x0 ~ N(latent of the input, σ²I)
    prior_std: float = 1.0  # σ of the prior
    time_freqs: int = 64
    time_sampling: str = "uniform"
    ode_steps: int = 16
    sde_steps: int = 10
    sde_a: float = 0.7
    logp_reduction: str = "mean"  # per-step log-density: "mean" per valid element or "sum"
    content_dropout: float = 0.0
    guidance: float = 0.0
    repa_layer: int = 0
    repa_weight: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.latent_dim < 1 or self.time_freqs < 1:
            raise ValueError("latent_dim and time_freqs must be ≥ 1")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if not (self.prior_std > 0 and math.isfinite(self.prior_std)):
            raise ValueError(f"prior_std must be a positive number, got {self.prior_std}")
        if self.logp_reduction not in ("mean", "sum"):
            raise ValueError(f"logp_reduction must be 'mean' or 'sum', got {self.logp_reduction!r}")
        if self.time_sampling not in TIME_SAMPLING:
            raise ValueError(
                f"time_sampling must be one of {TIME_SAMPLING}, got {self.time_sampling!r}"
            )
        if self.ode_steps < 1 or self.sde_steps < 2:
            raise ValueError("ode_steps must be ≥ 1 and sde_steps ≥ 2 (one SDE step has no noise)")
        if not self.sde_a > 0:
            raise ValueError(f"sde_a must be > 0, got {self.sde_a}")
        if not 0.0 <= self.content_dropout < 1.0:
            raise ValueError(f"content_dropout must be in [0, 1), got {self.content_dropout}")
        if not math.isfinite(self.guidance):
            raise ValueError(f"guidance must be a finite number, got {self.guidance}")
        if not 0 <= self.repa_layer <= self.layers:
            raise ValueError(
                f"repa_layer must be in [0, layers={self.layers}], got {self.repa_layer}"
            )
        if not (self.repa_weight >= 0 and math.isfinite(self.repa_weight)):
            raise ValueError(f"repa_weight must be a number >= 0, got {self.repa_weight}")
        if (self.content_dropout or self.guidance) and self.features.content == "none":
            raise ValueError(
                "content_dropout and guidance act on content features, but features.content "
                "is 'none'"
            )

    @classmethod
    def for_codec(cls, codec: Codec, **overrides: Any) -> FMConfig:
        """A config matching ``codec`` (latent width, sample and frame rate). ``overrides`` are
        :class:`FMConfig` fields; ``features`` may be a dict of :class:`FeatureConfig` fields
        (``frames_per_token``, ``n_mels``...)."""
        latent_dim = _latent_dim(codec)
        features = codec_features(codec, overrides.pop("features", None))
        given = overrides.pop("latent_dim", None)
        if given is not None and int(given) != latent_dim:
            raise ValueError(f"latent_dim: {given}, but the codec's latents have {latent_dim} "
                             "dimensions (the codec sets it: leave it unset)")  # fmt: skip
        return cls.from_dict({**overrides, "latent_dim": latent_dim, "features": features})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FMConfig:
        return from_dict_strict(cls, d, "FM")


def _latent_dim(codec: Codec) -> int:
    if not all(hasattr(codec, a) for a in ("latent_dim", "encode_latent", "decode_latent")):
        raise ValueError(
            f"{type(codec).__name__} has no continuous latents (encode_latent / decode_latent / "
            "latent_dim of the LatentCodec protocol); the fm family needs them (e.g. the WORLD "
            "codec or the mel_vocoder codec)"
        )
    return int(codec.latent_dim)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# pieces shared by the sampler, the log-prob recomputation and tests


def timestep_embedding(t: torch.Tensor, freqs: int) -> torch.Tensor:
    """Sinusoidal embedding ``[B, 2·freqs]`` of times ``t [B]`` in ``[0, 1]`` (scaled by 1000)."""
    k = torch.arange(freqs, device=t.device, dtype=torch.float32)
    w = torch.exp(-math.log(10000.0) * k / freqs)
    ang = 1000.0 * t.to(torch.float32)[:, None] * w[None, :]
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


def time_grid(steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform grid ``s_0 = 0 < … < s_S = 1`` (``[S + 1]``, float32)."""
    return torch.linspace(0.0, 1.0, steps + 1, device=device)


def sde_step(
    x: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    s_next: torch.Tensor,
    a: torch.Tensor,
    s_min: torch.Tensor,
    prior_mean: torch.Tensor | None = None,
    prior_std: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[..., T, D]`` and standard deviation ``[...]`` (float64) of one Euler–Maruyama step
    of the Flow-GRPO SDE in this module's convention (see the module docstring):

        g² = a²·(1 − s̃)/s̃ with s̃ = max(s, s_min),
        mean = x + (v − g²/2 · (x − s·v − μ)/((1 − s)·σ²))·Δ,  std = g·√Δ,  Δ = s_next − s.

    ``x``, ``v``: ``[..., T, D]``; ``s``, ``s_next``, ``a``, ``s_min``: ``[...]``. ``μ``
    (``prior_mean``, broadcastable to ``x``; None = 0) and ``σ`` (``prior_std``) describe the
    prior ``x0 ~ N(μ, σ²I)``: ``x − s·v = E[x0 | x]``, so ``−(x − s·v − μ)/((1 − s)·σ²)`` is the
    score of ``p_s``."""
    x64, v64 = x.to(torch.float64), v.to(torch.float64)
    s64, sn64 = s.to(torch.float64), s_next.to(torch.float64)
    st = torch.maximum(s64, s_min.to(torch.float64))
    g2 = a.to(torch.float64) ** 2 * (1.0 - st) / st
    dt = sn64 - s64
    e = (...,) + (None, None)
    resid = x64 - s64[e] * v64
    if prior_mean is not None:
        resid = resid - prior_mean.to(torch.float64)
    drift = v64 - (g2 / (2.0 * (1.0 - s64) * prior_std**2))[e] * resid
    return x64 + drift * dt[e], torch.sqrt(g2 * dt)


def gaussian_log_prob(
    x_next: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    frame_mask: torch.Tensor,
    per_element: bool = False,
) -> torch.Tensor:
    """``log N(x_next; mean, std²·I)`` summed over valid frames and dims (divided by their
    number when ``per_element``) → ``[...]`` float64.

    ``x_next``, ``mean``: ``[..., T, D]``; ``std``: ``[...]``; ``frame_mask``: ``[..., T]``."""
    e = (...,) + (None, None)
    z = (x_next.to(torch.float64) - mean) / std[e]
    m = frame_mask.to(torch.float64)
    n = m.sum(dim=-1) * x_next.shape[-1]
    quad = (z.square().sum(dim=-1) * m).sum(dim=-1)
    lp = -0.5 * quad - n * (torch.log(std) + 0.5 * _LOG_2PI)
    return lp / n.clamp(min=1) if per_element else lp


def gaussian_entropy(
    std: torch.Tensor, frame_mask: torch.Tensor, dim: int, per_element: bool = False
) -> torch.Tensor:
    """Entropy of ``N(·, std²·I)`` over the valid frames × ``dim`` dims (per element when
    ``per_element``) → ``[...]`` float64."""
    n = frame_mask.to(torch.float64).sum(dim=-1) * dim
    h = 0.5 * (_LOG_2PI + 1.0) + torch.log(std)
    return h if per_element else n * h


# ---------------------------------------------------------------------------------------------
# the policy


class FMPolicy(PolicyFolder, nn.Module):
    """Flow-matching speech enhancement over continuous codec latents (family ``"fm"``); see the
    module docstring. Build with ``FMPolicy(codec, FMConfig.for_codec(codec, ...))`` or
    :func:`sealign.models.registry.build_policy`; load with :meth:`load`. ``codec`` must be a
    :class:`~sealign.codecs.base.LatentCodec`.

    ``codec_spec``: if given, :meth:`save` records this spec instead of copying the codec.
    """

    family = FAMILY
    format_version = FORMAT_VERSION
    config_class = FMConfig

    def __init__(
        self, codec: Codec, config: FMConfig | None = None, codec_spec: str | None = None
    ) -> None:
        super().__init__()
        cfg = config or FMConfig.for_codec(codec)
        latent_dim = _latent_dim(codec)
        if latent_dim != cfg.latent_dim:
            raise ValueError(
                f"config latent_dim {cfg.latent_dim} does not match the codec's {latent_dim}"
            )
        self._bind_codec(codec, cfg, codec_spec)
        fc = cfg.features
        d = cfg.dim
        self.x_in = nn.Linear(cfg.latent_dim, d)
        self.cond_in, self.cond_conv = frame_conditioner_layers(fc, d, cfg.lookahead)
        self.time_mlp = nn.Sequential(nn.Linear(2 * cfg.time_freqs, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.hidden) for _ in range(cfg.layers))
        self.norm_out = nn.RMSNorm(d, eps=1e-6, elementwise_affine=False)
        self.out_mod = nn.Linear(d, 2 * d)
        self.head = nn.Linear(d, cfg.latent_dim)
        self.repa_proj = (
            nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, fc.content_dim))
            if cfg.repa_layer
            else None
        )
        self._init_weights()

    codec: Codec

    def _init_weights(self) -> None:
        init_transformer_weights(self, self.config.layers)
        for lin in (self.x_in, self.cond_in, self.head):
            nn.init.zeros_(lin.bias)
        if self.repa_proj is not None:
            for lin in self.repa_proj[0::2]:
                nn.init.zeros_(lin.bias)
        nn.init.zeros_(self.out_mod.weight)  # AdaLN-zero: starts as a plain norm
        nn.init.zeros_(self.out_mod.bias)

    @property
    def device(self) -> torch.device:
        return self.cond_in.weight.device

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"codec={self.codec!r}, params={n / 1e6:.2f}M"

    def rl_sample_options(self) -> dict[str, Any]:
        """Options RL trainers (GSPO) must pass to :meth:`sample`: the stochastic sampler, whose
        steps have log-probs (a plain ``sample`` call uses the deterministic ODE)."""
        return {"method": "sde"}

    # -- building blocks --------------------------------------------------------------------
    def _cond_states(self, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning → per-frame states ``[B, T, dim]`` and frame mask ``[B, T]``."""
        return frame_states(
            cond, self.config.features, self.config.max_frames, self.cond_in, self.cond_conv
        )

    def _velocity(
        self,
        states: torch.Tensor,
        m: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        dropout: float = 0.0,
        hidden: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``v_θ(x, t)`` ``[B, T, D]`` (zero on padding) from precomputed conditioning states;
        block ``repa_layer``'s output is appended to ``hidden`` when a list is given."""
        cfg = self.config
        temb = self.time_mlp(timestep_embedding(t.to(self.device), cfg.time_freqs))
        h = self.x_in(x.to(self.device, torch.float32)) + states + temb[:, None]
        cos, sin = rope_tables(h.shape[1], cfg.dim // cfg.heads, cfg.rope_base, h.device)
        h = drop(h, dropout)
        for i, block in enumerate(self.blocks, 1):
            h = block(h, cos, sin, dropout=dropout, mask=m)
            if hidden is not None and i == cfg.repa_layer:
                hidden.append(h)
        scale, shift = self.out_mod(F.silu(temb)).chunk(2, dim=-1)
        h = self.norm_out(h) * (1.0 + scale[:, None]) + shift[:, None]
        return self.head(h) * m.unsqueeze(-1).to(h.dtype)

    def _guided_states(
        self, cond: Conditioning, guidance: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Conditioning states, frame mask and, when any row's ``guidance [B]`` is non-zero,
        the states of the same inputs without content features."""
        states, m = self._cond_states(cond)
        if not bool((guidance != 0).any()):
            return states, m, None
        null, _ = self._cond_states(drop_content(cond, self.config.features))
        return states, m, null

    def _guided_velocity(
        self,
        states: torch.Tensor,
        null: torch.Tensor | None,
        m: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        guidance: torch.Tensor,
    ) -> torch.Tensor:
        """Classifier-free guided velocity ``v_c + w·(v_c − v_∅)`` (``v_∅``: no content
        features; ``w = guidance [B]``), both evaluated in one batch; ``v_c`` when ``null``
        is None."""
        if null is None:
            return self._velocity(states, m, x, t)
        v = self._velocity(
            torch.cat([states, null]), torch.cat([m, m]), torch.cat([x, x]), torch.cat([t, t])
        )
        vc, vu = v.chunk(2)
        return vc + guidance.to(vc.dtype)[:, None, None] * (vc - vu)

    def velocity(self, cond: Conditioning, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity field ``v_θ(x, t)`` ``[B, T, D]`` for latents ``x [B, T, D]`` at times
        ``t [B]`` (zero on padding frames)."""
        states, m = self._cond_states(cond)
        self._check_frames(x, m)
        return self._velocity(states, m, x, t)

    def _check_frames(self, x: torch.Tensor, m: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[:2] != m.shape or x.shape[2] != self.config.latent_dim:
            raise ValueError(
                f"latents of shape {tuple(x.shape)} do not match the conditioning "
                f"({m.shape[0]} rows × {m.shape[1]} frames × {self.config.latent_dim} dims)"
            )

    def _sample_times(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` training times following ``time_sampling`` (on the generator's device)."""
        dev = generator.device if generator is not None else torch.device("cpu")
        if self.config.time_sampling == "logit_normal":
            return torch.sigmoid(torch.randn(n, generator=generator, device=dev))
        return torch.rand(n, generator=generator, device=dev)

    # -- Policy protocol ----------------------------------------------------------------------
    def condition(self, noisy: list[np.ndarray]) -> Conditioning:
        """Normalized log-mels of the noisy waveforms (at :attr:`sample_rate`), padded; with
        ``prior="noisy"`` also their codec latents (``extra["prior"]``, ``[B, T, D]``), the
        mean of the flow's starting point."""
        cfg = self.config
        cond = compute_features(noisy, cfg.features, cfg.max_frames, str(self.device))
        if self.config.prior == "noisy":
            cond.extra["prior"] = self._latents(noisy)[0].cpu()
        return cond.to(self.device)

    def _prior_mean(self, cond: Conditioning) -> torch.Tensor | None:
        """``μ`` of the prior for the rows of ``cond`` (``[B, T, D]``), or None for ``N(0, σ²I)``."""
        if self.config.prior == "gaussian":
            return None
        mu = cond.extra.get("prior")
        if mu is None:
            raise ValueError(
                "this flow starts from the noisy input's latents (prior='noisy'), but the "
                "conditioning has none: build it with policy.condition(noisy)"
            )
        return mu.to(self.device, torch.float32)

    def _start(self, cond: Conditioning, eps: torch.Tensor, mf: torch.Tensor) -> torch.Tensor:
        """``x0 = μ + σ·eps`` on the valid frames (zero on padding)."""
        x0 = eps * self.config.prior_std
        mu = self._prior_mean(cond)
        return (x0 if mu is None else x0 + mu) * mf

    def encode_targets(self, clean: list[np.ndarray]) -> Targets:
        """Clean waveforms → codec latents ``[B, T, D]`` float32 with ``T = ceil(n /
        token_samples)`` frames each (codec output trimmed or edge-padded to that), padded
        with 0, and the frame mask ``[B, T]``; with ``repa_layer`` also their content-encoder
        frames (``extra["content"]``)."""
        if isinstance(clean, np.ndarray) and clean.ndim == 1:
            clean = [clean]
        items = [np.asarray(w, dtype=np.float32) for w in clean]
        if not items:
            raise ValueError("no clean targets given")
        values, mask = self._latents(items)
        extra = {}
        if self.repa_proj is not None:
            extra["content"] = self._clean_content(items, values.shape[1]).to(self.device)
        return Targets(values.to(self.device), mask.to(self.device), extra)

    def _latents(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Codec latents ``[B, T, D]`` (see :meth:`encode_targets`) and frame mask ``[B, T]``."""
        items = [np.asarray(w, dtype=np.float32) for w in wavs]
        lats = self.codec.encode_latent(items)  # type: ignore[attr-defined]
        fc = self.config.features
        lengths = [fc.num_tokens(w.size) for w in items]
        d = self.config.latent_dim
        values = torch.zeros(len(items), max(lengths), d)
        mask = torch.zeros(len(items), max(lengths), dtype=torch.bool)
        for i, (lat, n) in enumerate(zip(lats, lengths, strict=True)):
            lat = np.asarray(lat, dtype=np.float32)
            if lat.ndim != 2 or lat.shape[0] != d or lat.shape[1] == 0:
                raise ValueError(f"item {i}: codec latent of shape {lat.shape}, expected [{d}, T]")
            if lat.shape[1] < n:
                lat = np.concatenate([lat, np.repeat(lat[:, -1:], n - lat.shape[1], 1)], axis=1)
            values[i, :n] = torch.from_numpy(np.ascontiguousarray(lat[:, :n].T))
            mask[i, :n] = True
        return values, mask

    def _clean_content(self, items: list[np.ndarray], t_max: int) -> torch.Tensor:
        """Content-encoder frames of clean waveforms, one per codec frame, ``[B, T, C]``
        (zero-padded), the targets of representation alignment."""
        from sealign.models.content import encoder_for

        fc = self.config.features
        enc = encoder_for(fc, str(self.device))
        out = torch.zeros(len(items), t_max, fc.content_dim)
        for i, f in enumerate(enc(items, self.sample_rate)):
            if f.shape[1] != fc.content_dim:
                raise ValueError(
                    f"content encoder {enc.name} gives {f.shape[1]}-dim frames, but repa_proj "
                    f"was built for content_dim={fc.content_dim}"
                )
            n = min(t_max, len(f))
            out[i, :n] = torch.from_numpy(f[:n])
        return out

    def sample(
        self,
        cond: Conditioning,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        method: str = "ode",
        steps: int | None = None,
        sde_a: float | None = None,
        sde_mean_last: bool = False,
        guidance: float | None = None,
        **ignored: Any,
    ) -> Rollout:
        """One latent trajectory per row of ``cond`` (no gradients).

        ``method="ode"`` (default): deterministic Euler, ``steps`` defaulting to ``ode_steps``;
        ``logp`` and ``mask`` are zero. ``method="sde"``: Flow-GRPO Euler–Maruyama with
        ``sde_steps`` steps and noise level ``sde_a``; ``logp [N, S]`` (float64) holds each
        transition's Gaussian log-density, ``mask`` is all ones. ``temperature`` scales the
        initial noise. ``sde_mean_last``: the last SDE step lands on its mean (no noise left in
        the output; that step has no log-prob and its ``mask`` is 0). ``guidance``: scale ``w``
        of classifier-free guidance on the content features, ``v = v_c + w·(v_c − v_∅)``
        (default ``config.guidance``; a model trained with ``content_dropout`` knows ``v_∅``;
        each step then costs two velocity evaluations); stored per row so
        :meth:`step_log_probs` recomputes the same guided steps. Other sampling options of
        token families (``top_k``, ``top_p``...) are
        accepted and ignored. ``actions``: see the module docstring.
        """
        del ignored  # top_k, top_p, use_cache...: meaningless for a flow
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        cfg = self.config
        sde = method == "sde"
        # the SDE's noise level g² vanishes at its first grid point, s_min = 1 with one step
        n_steps = sampling_steps(steps, cfg.sde_steps if sde else cfg.ode_steps, 2 if sde else 1)
        a = float(cfg.sde_a if sde_a is None else sde_a) if sde else 0.0
        if sde and not a > 0:
            raise ValueError(f"sde_a must be > 0, got {sde_a}")
        w = float(cfg.guidance if guidance is None else guidance)
        if not math.isfinite(w):
            raise ValueError(f"guidance must be a finite number, got {guidance}")
        if w and cfg.features.content == "none":
            raise ValueError("guidance acts on content features, but this model has none")
        with torch.inference_mode():
            states, logp, m, grid = self._integrate(
                cond, temperature, generator, n_steps, a, sde and sde_mean_last, w
            )
        # clones made outside inference mode are ordinary tensors, usable in autograd later
        states, logp, m = states.clone(), logp.clone(), m.clone()
        n = states.shape[0]
        actions = {
            "states": states,
            "times": grid.clone().unsqueeze(0).expand(n, -1).contiguous(),
            "sde_a": torch.full((n,), a, device=self.device),
            "guidance": torch.full((n,), w, device=self.device),
            "frame_mask": m,
            "num_samples": torch.tensor(cond.num_samples, dtype=torch.long, device=self.device),
        }
        mask = torch.full((n, n_steps), 1.0 if sde else 0.0, device=self.device)
        if sde and sde_mean_last:
            mask[:, -1] = 0.0
        return Rollout(actions, logp, mask, torch.arange(n, device=self.device))

    def _integrate(
        self,
        cond: Conditioning,
        temperature: float,
        generator: torch.Generator | None,
        n_steps: int,
        a: float,
        mean_last: bool = False,
        guidance: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The sampling loop → ``states [N, S+1, T, D]``, ``logp [N, S]`` (float64), frame mask
        ``[N, T]`` and the time grid ``[S+1]``. ``a = 0`` is the ODE."""
        w = torch.full((len(cond),), guidance, device=self.device)
        states, m, null = self._guided_states(cond, w)
        n, t_max = m.shape
        d = self.config.latent_dim
        gen_device = generator.device if generator is not None else torch.device("cpu")
        mf = m.unsqueeze(-1).to(torch.float32)

        def noise() -> torch.Tensor:
            eps = torch.randn(n, t_max, d, generator=generator, device=gen_device)
            return eps.to(self.device) * mf

        grid = time_grid(n_steps, self.device)
        traj = torch.zeros(n, n_steps + 1, t_max, d, device=self.device)
        logp = torch.zeros(n, n_steps, dtype=torch.float64, device=self.device)
        x = self._start(cond, noise() * temperature, mf)
        mu = self._prior_mean(cond)
        traj[:, 0] = x
        a_t = torch.full((n,), a, device=self.device)
        s_min = grid[1].expand(n)
        for k in range(n_steps):
            s = grid[k].expand(n)
            v = self._guided_velocity(states, null, m, x, s, w)
            if a > 0:
                mean, std = sde_step(
                    x, v, s, grid[k + 1].expand(n), a_t, s_min, mu, self.config.prior_std
                )
                if mean_last and k == n_steps - 1:
                    x_next = mean.to(torch.float32) * mf  # no log-prob: masked out
                else:
                    eps = noise().to(torch.float64)
                    x_next = (mean + std[:, None, None] * eps).to(torch.float32) * mf
                    logp[:, k] = gaussian_log_prob(x_next, mean, std, m, self._per_element)
            else:
                x_next = (x + v * (grid[k + 1] - grid[k])) * mf
            traj[:, k + 1] = x_next
            x = x_next
        return traj, logp, m, grid

    @property
    def _per_element(self) -> bool:
        return self.config.logp_reduction == "mean"

    def step_log_probs(
        self, cond: Conditioning, rollout: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, S]`` float64 Gaussian log-densities of the rollout's stored SDE transitions
        under the current weights (with gradients), and the per-step Gaussian entropies (which
        do not depend on the weights); zero where ``rollout.mask`` is 0. The steps go through
        the model in one batch of ``N·S`` rows, leaving out a step that is masked in every row
        (e.g. by the trainer's ``step_fraction``)."""
        act = rollout.actions
        states = act["states"].to(self.device, torch.float32)
        times = act["times"].to(self.device, torch.float32)
        a = act["sde_a"].to(self.device, torch.float32)
        if not bool((a > 0).all()):
            raise ValueError(
                "rollout was sampled with the deterministic ODE (no step log-probs); sample "
                "with method='sde' (see rl_sample_options())"
            )
        n, s1, t_max, d = states.shape
        if times.dim() == 1:
            times = times.unsqueeze(0).expand(n, -1)
        mask = rollout.mask.to(self.device, torch.float64)
        sel = torch.nonzero(mask.any(dim=0)).squeeze(1)  # steps some row needs
        k = sel.numel()
        c = cond.select(rollout.source.cpu())
        w = act.get("guidance", torch.zeros(n)).to(self.device, torch.float32)
        cstates, m, null = self._guided_states(c, w)
        self._check_frames(states[:, 0], m)
        x0, t0, t1 = states[:, sel], times[:, sel], times[:, sel + 1]

        def rows(z: torch.Tensor) -> torch.Tensor:
            return z.repeat_interleave(k, dim=0)

        v = self._guided_velocity(
            rows(cstates), None if null is None else rows(null), rows(m),
            x0.reshape(n * k, t_max, d), t0.reshape(n * k), rows(w),
        ).view(n, k, t_max, d)  # fmt: skip
        s_min = times[:, 1:2].expand(n, k)
        mu = self._prior_mean(c)
        mean, std = sde_step(
            x0, v, t0, t1, a[:, None].expand(n, k), s_min,
            None if mu is None else mu.unsqueeze(1), self.config.prior_std,
        )  # fmt: skip
        fm = m.unsqueeze(1).expand(n, k, t_max)
        logp = mask.new_zeros(n, s1 - 1)
        ent = mask.new_zeros(n, s1 - 1)
        logp[:, sel] = gaussian_log_prob(states[:, sel + 1], mean, std, fm, self._per_element)
        ent[:, sel] = gaussian_entropy(std, fm, d, self._per_element).to(ent.dtype)
        return logp * mask, ent * mask

    def step_passes(self, rollout: Rollout) -> torch.Tensor:
        """``[N, S]`` SDE step index of each step (-1 where ``rollout.mask`` is 0)."""
        n, s = rollout.mask.shape
        steps = torch.arange(s, device=rollout.mask.device).expand(n, s)
        return torch.where(rollout.mask > 0, steps, -1)

    def decode(self, rollout: Rollout) -> list[np.ndarray]:
        """Waveforms of the final latents ``x_S``, trimmed (or zero-padded) to the inputs'
        lengths."""
        final = rollout.actions["states"][:, -1]
        fm = rollout.actions.get("frame_mask")
        num = rollout.actions.get("num_samples")
        if fm is not None:
            lengths = fm.sum(dim=1).long().tolist()
        elif num is not None:
            lengths = [self.config.features.num_tokens(k) for k in num.tolist()]
        else:
            lengths = [final.shape[1]] * final.shape[0]
        wavs = self._decode_latents(final, lengths)
        if num is None:
            return wavs
        return [fit_length(w, k) for w, k in zip(wavs, num.tolist(), strict=True)]

    def decode_targets(self, targets: Targets) -> list[np.ndarray]:
        """Waveforms of targets; each covers its valid frames (``frames × token_samples``)."""
        return self._decode_latents(targets.values, targets.mask.sum(dim=1).long().tolist())

    def _decode_latents(self, latents: torch.Tensor, lengths: list[int]) -> list[np.ndarray]:
        lat = latents.detach().to("cpu", torch.float32).numpy()
        items = [np.ascontiguousarray(lat[i, :n].T) for i, n in enumerate(lengths)]
        ts = self.config.features.token_samples
        wavs = self.codec.decode_latent(items)  # type: ignore[attr-defined]
        return [fit_length(w, n * ts) for w, n in zip(wavs, lengths, strict=True)]

    def targets_from_rollout(self, rollout: Rollout) -> Targets:
        """The rollout's final latents as :class:`Targets` (e.g. to store DPO winners)."""
        final = rollout.actions["states"][:, -1].to(self.device, torch.float32)
        fm = rollout.actions.get("frame_mask")
        if fm is None:
            fm = torch.ones(final.shape[:2], dtype=torch.bool, device=self.device)
        return Targets(final, fm.to(self.device).bool())

    def _targets_and_mask(
        self, cond: Conditioning, targets: Targets
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        states, m = self._cond_states(cond)
        x1 = targets.values.to(self.device, torch.float32)
        self._check_frames(x1, m)
        if not torch.equal(targets.mask.to(self.device).bool(), m):
            raise ValueError(
                "target frames do not match the conditioning frames (clean and noisy inputs "
                "must have the same lengths)"
            )
        return states, m, x1

    def sft_loss(self, cond: Conditioning, targets: Targets) -> torch.Tensor:
        """Rectified-flow loss: MSE between ``v_θ(x_s, s)`` and ``u = x1 − x0`` over valid frames
        and dims, with one random ``s`` per row and ``x0`` from the prior (global torch RNG;
        dropout when the module is in training mode; then also ``content_dropout``)."""
        p = self.config.content_dropout
        if self.training and p > 0:
            cond = drop_content(cond, self.config.features, torch.rand(len(cond)) < p)
        states, m, x1 = self._targets_and_mask(cond, targets)
        mf = m.unsqueeze(-1).to(x1.dtype)
        t = self._sample_times(x1.shape[0]).to(self.device)
        x0 = self._start(cond, torch.randn(x1.shape).to(self.device), mf)
        x1 = x1 * mf
        xt = (1.0 - t)[:, None, None] * x0 + t[:, None, None] * x1
        dropout = self.config.dropout if self.training else 0.0
        hidden: list[torch.Tensor] = []
        v = self._velocity(states, m, xt, t, dropout, hidden)
        err = (v - (x1 - x0)).square() * mf
        loss = err.sum() / (mf.sum() * x1.shape[-1])
        z = targets.extra.get("content")
        if self.repa_proj is None or z is None:
            return loss
        z = z.to(self.device, torch.float32)
        if z.shape[:2] != m.shape:
            raise ValueError(f"content targets {tuple(z.shape)} do not match {tuple(m.shape)}")
        cos = F.cosine_similarity(self.repa_proj(hidden[0]), z, dim=-1, eps=1e-6)
        align = ((1.0 - cos) * m).sum() / m.sum().clamp(min=1)
        return loss + self.config.repa_weight * align

    def preference_noise(
        self, targets: Targets, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """A time ``t [B]`` (``time_sampling``) and noise ``[B, T, D]`` (zero on padding) to share
        between winner and loser and between policy and reference."""
        b, t_max, d = targets.values.shape
        dev = generator.device if generator is not None else torch.device("cpu")
        t = self._sample_times(b, generator)
        noise = torch.randn(b, t_max, d, generator=generator, device=dev)
        mf = targets.mask.to(dev).unsqueeze(-1).to(noise.dtype)
        return {"t": t.to(self.device), "noise": (noise * mf).to(self.device)}

    def preference_log_likelihood(
        self, cond: Conditioning, targets: Targets, noise: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``[B]`` minus the single-step flow-matching error ``‖v_θ(x_t, t) − u‖²`` summed over
        valid frames and dims, with ``x_t = (1 − t)·x0 + t·x1``, ``u = x1 − x0`` and ``x0 = μ +
        σ·noise`` (the prior's starting point built from the shared standard noise)."""
        states, m, x1 = self._targets_and_mask(cond, targets)
        mf = m.unsqueeze(-1).to(x1.dtype)
        t = noise["t"].to(self.device, torch.float32)
        eps = noise["noise"].to(self.device, torch.float32)
        if eps.shape != x1.shape:
            raise ValueError(f"noise {tuple(eps.shape)} does not match targets {tuple(x1.shape)}")
        x0, x1 = self._start(cond, eps, mf), x1 * mf
        xt = (1.0 - t)[:, None, None] * x0 + t[:, None, None] * x1
        v = self._velocity(states, m, xt, t)
        return -((v - (x1 - x0)).square() * mf).sum(dim=(1, 2))

    # -- persistence ----------------------------------------------------------------------------
    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """As :meth:`torch.nn.Module.load_state_dict`, except that the training-only
        ``repa_proj`` may be absent (it keeps its fresh initialization) or superfluous (it is
        dropped), so a checkpoint trained with or without it loads either way."""
        state = {k: v for k, v in state_dict.items() if not k.startswith("repa_proj.")}
        if self.repa_proj is not None:
            mine = {f"repa_proj.{k}": v for k, v in self.repa_proj.state_dict().items()}
            state.update({k: state_dict.get(k, v) for k, v in mine.items()})
        return super().load_state_dict(state, strict=strict, assign=assign)
