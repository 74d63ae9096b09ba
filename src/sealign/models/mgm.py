"""Masked generative (``mgm``) family: a bidirectional transformer over codec tokens
(MaskSR / AnyEnhance style), decoded by iterative parallel decoding.

Every codec frame holds ``K`` tokens (one per codebook, e.g. the built-in WORLD codec's
``layout=mgm``: four residual spectral codebooks and one F0 codebook). The input at a frame is the
sum of the codebook embeddings of its tokens — a masked token uses its codebook's extra ``MASK``
embedding — plus the frame-aligned noisy conditioning (the same layers as the AR family, see
:func:`~sealign.models.features.frame_states`). Attention is bidirectional over the valid
frames; one output head per codebook predicts every position.

Training (:meth:`MGMPolicy.sft_loss`): per row a mask ratio ``r = cos(π/2 · u)``, ``u ~ U(0,1)``
(the cosine schedule), ``ceil(r · n)`` of the row's ``n = K · T`` tokens masked uniformly at
random, cross-entropy on the masked tokens.

Decoding (:meth:`MGMPolicy.sample`, MaskGIT): all tokens start masked. At iteration
``s = 1..S`` the model predicts every masked token, one candidate is sampled per masked token
(temperature / top-k / top-p through :class:`~sealign.models.ar.SamplingTransform`), and the
most confident candidates are committed so that ``floor(n · cos(π/2 · s/S))`` tokens stay
masked; the rest are re-masked and predicted again next iteration. Confidence is the candidate's
log-prob plus Gumbel noise scaled by ``choice_temperature · (1 − s/S)`` (diversity early,
greedy late).

The rollout records, for every token, the iteration that committed it (``commit_step``). Its
per-step log-probs (``Rollout.logp [N, K·T]``, one entry per token, codebook-major) are those of
each committed token under the model's distribution *given the partially masked state of its
iteration*. :meth:`MGMPolicy.step_log_probs` rebuilds each iteration's state from
``commit_step`` and recomputes them under new weights (one forward pass per iteration), so the
trajectory log-prob of GSPO is the sum over iterations of the committed tokens' log-probs, as in
``../shared/notes/algorithms.md`` §3. The choice of *which* positions to commit is part of the
environment, not of the likelihood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sealign.codecs.base import Codec, codebook_sizes
from sealign.config import from_dict_strict
from sealign.models.ar import SamplingTransform, _entropy, sampling_settings
from sealign.models.backbone import BackboneConfig, LogitScale, codec_features
from sealign.models.features import (
    compute_features,
    frame_conditioner_layers,
    frame_states,
)
from sealign.models.persist import PolicyFolder, fit_length
from sealign.models.policy import Conditioning, Rollout, Targets, sampling_steps
from sealign.models.tokens import (
    check_sampling,
    check_vocab_sizes,
    decode_token_rows,
    encode_token_targets,
)
from sealign.models.transformer import Block, drop, init_transformer_weights, rope_tables

FAMILY = "mgm"
FORMAT_VERSION = 1


@dataclass
class MGMConfig(BackboneConfig):
    """Size and decoding defaults of an :class:`MGMPolicy`; stored in its ``config.json``.

    ``decode_steps``: parallel-decoding iterations; ``choice_temperature``: scale of the Gumbel
    noise added to confidences (0 = pure confidence order). Shared fields: see
    :class:`~sealign.models.backbone.BackboneConfig`.
    """

    vocab_sizes: list[int] = field(default_factory=lambda: [1024, 1024, 1024, 1024, 256])
    decode_steps: int = 8
    choice_temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.vocab_sizes = [int(v) for v in self.vocab_sizes]
        if not self.vocab_sizes or min(self.vocab_sizes) < 2:
            raise ValueError(f"vocab_sizes must be ≥ 2 per codebook, got {self.vocab_sizes}")
        if self.decode_steps < 1 or self.choice_temperature < 0:
            raise ValueError("decode_steps must be ≥ 1 and choice_temperature ≥ 0")

    @property
    def num_codebooks(self) -> int:
        return len(self.vocab_sizes)

    @classmethod
    def for_codec(cls, codec: Codec, **overrides: Any) -> MGMConfig:
        """A config matching ``codec`` (see :meth:`ARConfig.for_codec
        <sealign.models.ar.ARConfig.for_codec>`)."""
        features = codec_features(codec, overrides.pop("features", None))
        overrides.pop("vocab_sizes", None)
        return cls.from_dict(
            {**overrides, "vocab_sizes": list(codebook_sizes(codec)), "features": features}
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MGMConfig:
        return from_dict_strict(cls, d, "MGM")


def cosine_mask_count(n: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Tokens to mask: ``ceil(ratio · n)`` clamped to ``[1, n]`` (rows with n = 0 give 0)."""
    return torch.minimum(torch.ceil(ratio * n).clamp(min=1), n).long()


class MGMPolicy(LogitScale, PolicyFolder, nn.Module):
    """Masked generative token model for speech enhancement (family ``"mgm"``); see the module
    docstring."""

    family = FAMILY
    format_version = FORMAT_VERSION
    config_class = MGMConfig

    def __init__(
        self, codec: Codec, config: MGMConfig | None = None, codec_spec: str | None = None
    ) -> None:
        super().__init__()
        cfg = config or MGMConfig.for_codec(codec)
        check_vocab_sizes(codec, cfg.vocab_sizes)
        self._bind_codec(codec, cfg, codec_spec)
        fc = cfg.features
        d = cfg.dim
        self.embeds = nn.ModuleList(nn.Embedding(v + 1, d) for v in cfg.vocab_sizes)  # + MASK
        self.cond_in, self.cond_conv = frame_conditioner_layers(fc, d, cfg.lookahead)
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.hidden) for _ in range(cfg.layers))
        self.norm = nn.RMSNorm(d, eps=1e-6)
        self.heads = nn.ModuleList(nn.Linear(d, v, bias=False) for v in cfg.vocab_sizes)
        self._init_logit_scale()
        init_transformer_weights(self, cfg.layers)
        nn.init.zeros_(self.cond_in.bias)

    codec: Codec

    @property
    def device(self) -> torch.device:
        return self.cond_in.weight.device

    @property
    def mask_ids(self) -> torch.Tensor:
        return torch.tensor(self.config.vocab_sizes, device=self.device)

    # -- network -------------------------------------------------------------------------------
    def _forward(
        self, states: torch.Tensor, m: torch.Tensor, tokens: torch.Tensor, dropout: float = 0.0
    ) -> list[torch.Tensor]:
        """Logits per codebook ``[B, T, V_k]`` for ``tokens [B, K, T]`` (MASK ids allowed)."""
        x = states
        for k, emb in enumerate(self.embeds):
            x = x + emb(tokens[:, k])
        cos, sin = rope_tables(
            x.shape[1], self.config.dim // self.config.heads, self.config.rope_base, x.device
        )
        x = drop(x, dropout)
        # a row with no valid frame would attend to nothing: let it see itself (its output is unused)
        attn = m | ~m.any(dim=1, keepdim=True)
        for block in self.blocks:
            x = block(x, cos, sin, dropout=dropout, mask=attn)
        h = self.norm(x)
        return self._scale_logits([head(h) for head in self.heads])

    def _cond(self, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        return frame_states(cond, cfg.features, cfg.max_frames, self.cond_in, self.cond_conv)

    def _tokens3(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.device, torch.long)
        if tokens.dim() != 3 or tokens.shape[1] != self.config.num_codebooks:
            raise ValueError(
                f"expected tokens [N, {self.config.num_codebooks}, T], got {tuple(tokens.shape)}"
            )
        return tokens

    def _masked_input(self, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        return torch.where(masked, self.mask_ids.view(1, -1, 1), tokens)

    # -- Policy protocol -----------------------------------------------------------------------
    def condition(self, noisy: list[np.ndarray]) -> Conditioning:
        """Normalized log-mels of the noisy waveforms, padded."""
        cfg = self.config
        return compute_features(noisy, cfg.features, cfg.max_frames, str(self.device)).to(
            self.device
        )

    def encode_targets(self, clean: list[np.ndarray]) -> Targets:
        """Clean waveforms → codec tokens ``[B, K, T]``."""
        cfg = self.config
        return encode_token_targets(self.codec, clean, cfg.features, cfg.num_codebooks, self.device)

    def sample(
        self,
        cond: Conditioning,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        top_k: int = 0,
        top_p: float = 1.0,
        steps: int | None = None,
    ) -> Rollout:
        """Iterative parallel decoding of one token grid per row (no gradients). ``actions``:
        ``tokens [N, K, T]``, ``commit_step [N, K, T]`` (iteration of each token, -1 on
        padding), ``sampling [N, 3]``, ``num_samples [N]``; ``logp``/``mask`` ``[N, K·T]``."""
        check_sampling(temperature, top_k, top_p)
        n_steps = sampling_steps(steps, self.config.decode_steps)
        settings = sampling_settings(len(cond), temperature, int(top_k), top_p).to(self.device)
        with torch.inference_mode():
            tokens, commit, logp, valid = self._decode(cond, settings, n_steps, generator)
        tokens, commit, logp, valid = tokens.clone(), commit.clone(), logp.clone(), valid.clone()
        n = tokens.shape[0]
        actions = {
            "tokens": tokens,
            "commit_step": commit,
            "sampling": settings,
            "num_samples": torch.tensor(cond.num_samples, dtype=torch.long, device=self.device),
        }
        mask = valid.reshape(n, -1).to(logp.dtype)
        return Rollout(
            actions, logp.reshape(n, -1) * mask, mask, torch.arange(n, device=self.device)
        )

    def _decode(
        self,
        cond: Conditioning,
        settings: torch.Tensor,
        n_steps: int,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        states, m = self._cond(cond)
        b, t = m.shape
        k_books = cfg.num_codebooks
        valid = m.unsqueeze(1).expand(b, k_books, t)
        n_valid = valid.reshape(b, -1).sum(dim=1)
        tokens = torch.zeros(b, k_books, t, dtype=torch.long, device=self.device)
        commit = torch.full((b, k_books, t), -1, dtype=torch.long, device=self.device)
        logp = torch.zeros(b, k_books, t, device=self.device)
        masked = valid.clone()
        per_pos = settings.repeat_interleave(t, dim=0)  # one row per (row, frame)
        warps = [SamplingTransform(per_pos, v, self.device) for v in cfg.vocab_sizes]
        gen_device = generator.device if generator is not None else torch.device("cpu")
        for s in range(n_steps):
            logits = self._forward(states, m, self._masked_input(tokens, masked))
            cand = torch.zeros_like(tokens)
            cand_lp = torch.zeros_like(logp)
            u = torch.rand(b, k_books, t, generator=generator, device=gen_device).to(self.device)
            for k, lg in enumerate(logits):
                tok, lp = warps[k].sample(lg.reshape(b * t, -1), u[:, k].reshape(-1))
                cand[:, k], cand_lp[:, k] = tok.view(b, t), lp.view(b, t)
            remain = torch.floor(n_valid * math.cos(math.pi / 2 * (s + 1) / n_steps)).long()
            if s == n_steps - 1:
                remain = torch.zeros_like(remain)
            n_commit = masked.reshape(b, -1).sum(dim=1) - remain
            conf = cand_lp.reshape(b, -1).clone()
            scale = cfg.choice_temperature * (1.0 - (s + 1) / n_steps)
            if scale > 0:
                g = torch.rand(conf.shape, generator=generator, device=gen_device).to(self.device)
                conf = conf + scale * -torch.log(-torch.log(g.clamp(1e-10, 1 - 1e-10)))
            conf = conf.masked_fill(~masked.reshape(b, -1), float("-inf"))
            order = conf.argsort(dim=1, descending=True)
            rank = torch.empty_like(order)
            rank.scatter_(
                1, order, torch.arange(order.shape[1], device=self.device).expand_as(order)
            )
            chosen = (rank < n_commit.unsqueeze(1)).view(b, k_books, t) & masked
            tokens = torch.where(chosen, cand, tokens)
            logp = torch.where(chosen, cand_lp, logp)
            commit = torch.where(chosen, torch.full_like(commit, s), commit)
            masked = masked & ~chosen
        return tokens, commit, logp, valid

    def step_log_probs(
        self, cond: Conditioning, rollout: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token ``[N, K·T]`` log-probs of the committed tokens given the masked state of
        their iteration (one forward pass per iteration), and the entropies; 0 where
        ``rollout.mask`` is 0. An iteration none of whose tokens is in the mask is skipped."""
        tokens = self._tokens3(rollout.actions["tokens"])
        commit = rollout.actions["commit_step"].to(self.device)
        c = cond.select(rollout.source.cpu())
        states, m = self._cond(c)
        settings = rollout.actions.get("sampling")
        if settings is None:
            settings = sampling_settings(len(rollout), 1.0, 0, 1.0)
        settings = settings.to(self.device)
        warps = [SamplingTransform(settings, v, self.device) for v in self.config.vocab_sizes]
        logp = torch.zeros(tokens.shape, device=self.device)
        ent = torch.zeros(tokens.shape, device=self.device)
        live = rollout.mask.to(self.device).view(tokens.shape) > 0
        n_steps = int(commit.max()) + 1 if commit.numel() else 0
        for s in range(n_steps):
            at = (commit == s) & live
            if not bool(at.any()):  # e.g. an iteration left out by the trainer's step_fraction
                continue
            logits = self._forward(states, m, self._masked_input(tokens, commit >= s))
            for k, lg in enumerate(logits):
                lp, keep = warps[k](lg.float(), force=tokens[:, k])  # bf16 would tie in top-k
                tok_lp = lp.gather(-1, tokens[:, k].unsqueeze(-1)).squeeze(-1)
                logp[:, k] = torch.where(at[:, k], tok_lp, logp[:, k])
                ent[:, k] = torch.where(at[:, k], _entropy(lp, keep), ent[:, k])
        n = tokens.shape[0]
        mask = rollout.mask.to(self.device, logp.dtype)
        return logp.reshape(n, -1) * mask, ent.reshape(n, -1) * mask

    def step_passes(self, rollout: Rollout) -> torch.Tensor:
        """``[N, K·T]`` decoding iteration of each step (-1 where ``rollout.mask`` is 0): the
        steps that :meth:`step_log_probs` computes in one forward pass share an index."""
        commit = rollout.actions["commit_step"].reshape(len(rollout), -1)
        return torch.where(rollout.mask.to(commit.device) > 0, commit, -1)

    def decode(self, rollout: Rollout) -> list[np.ndarray]:
        """Waveforms of the decoded token grids, trimmed to the inputs' lengths."""
        tokens = self._tokens3(rollout.actions["tokens"])
        valid = rollout.actions["commit_step"] >= 0
        lengths = valid[:, 0].sum(dim=1).tolist()
        wavs = decode_token_rows(
            self.codec, tokens.cpu().numpy(), lengths, self.config.features.token_samples
        )
        num = rollout.actions.get("num_samples")
        if num is None:
            return wavs
        return [fit_length(w, n) for w, n in zip(wavs, num.tolist(), strict=True)]

    def decode_targets(self, targets: Targets) -> list[np.ndarray]:
        lengths = targets.mask.sum(dim=1).long().tolist()
        return decode_token_rows(
            self.codec, targets.values.cpu().numpy(), lengths, self.config.features.token_samples
        )

    def targets_from_rollout(self, rollout: Rollout) -> Targets:
        """The decoded tokens as :class:`Targets` (e.g. to store DPO winners and losers)."""
        return Targets(
            self._tokens3(rollout.actions["tokens"]), rollout.actions["commit_step"][:, 0] >= 0
        )

    def random_mask(
        self, targets: Targets, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A cosine-schedule mask ``[B, K, T]`` over the valid tokens of ``targets``."""
        valid = targets.mask.to(self.device).unsqueeze(1).expand(-1, self.config.num_codebooks, -1)
        b = valid.shape[0]
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(b, generator=generator, device=gen_device).to(self.device)
        n_mask = cosine_mask_count(
            valid.reshape(b, -1).sum(dim=1).float(), torch.cos(math.pi / 2 * u)
        )
        score = torch.rand(valid.shape, generator=generator, device=gen_device).to(self.device)
        score = score.masked_fill(~valid, 2.0).reshape(b, -1)
        rank = score.argsort(dim=1).argsort(dim=1)
        return (rank < n_mask.unsqueeze(1)).view(valid.shape) & valid

    def _masked_log_probs(
        self, cond: Conditioning, tokens: torch.Tensor, masked: torch.Tensor, dropout: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        states, m = self._cond(cond)
        if tokens.shape[0] != states.shape[0] or tokens.shape[-1] != states.shape[1]:
            raise ValueError(
                f"tokens of shape {tuple(tokens.shape)} do not match the conditioning "
                f"({states.shape[0]} rows × {states.shape[1]} frames)"
            )
        logits = self._forward(states, m, self._masked_input(tokens, masked), dropout)
        lp = torch.stack(
            [
                F.log_softmax(lg, dim=-1).gather(-1, tokens[:, k].unsqueeze(-1)).squeeze(-1)
                for k, lg in enumerate(logits)
            ],
            dim=1,
        )
        return lp, m

    def sft_loss(self, cond: Conditioning, targets: Targets) -> torch.Tensor:
        """Cross-entropy on the tokens of a random cosine-schedule mask (torch's global RNG)."""
        tokens = self._tokens3(targets.values)
        masked = self.random_mask(targets)
        dropout = self.config.dropout if self.training else 0.0
        lp, m = self._masked_log_probs(cond, tokens, masked, dropout)
        if not torch.equal(targets.mask.to(self.device).bool(), m):
            raise ValueError(
                "target frames do not match the conditioning frames (clean and noisy inputs "
                "must have the same lengths)"
            )
        return -(lp * masked).sum() / masked.sum().clamp(min=1)

    def preference_noise(
        self, targets: Targets, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """A shared cosine-schedule mask ``[B, K, T]`` (same for winner, loser and reference)."""
        return {"mask": self.random_mask(targets, generator)}

    def preference_log_likelihood(
        self, cond: Conditioning, targets: Targets, noise: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``[B]`` masked conditional log-prob ``Σ_i m_i log p(y_i | y_masked, x)``."""
        tokens = self._tokens3(targets.values)
        masked = noise["mask"].to(self.device).bool()
        lp, _ = self._masked_log_probs(cond, tokens, masked)
        return (lp * masked).sum(dim=(1, 2))
