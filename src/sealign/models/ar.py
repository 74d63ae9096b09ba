"""Autoregressive (``ar``) family: a decoder-only transformer over codec tokens.

Architecture: pre-norm blocks (RMSNorm, causal self-attention with rotary position embeddings
through ``scaled_dot_product_attention``, SwiGLU MLP), summed per-codebook token embeddings and
one output head per codebook (tied to the embeddings by default). With ``K`` codebooks one step
predicts all ``K`` tokens of a frame at once, each from its own head; a step's log-prob is the
sum over codebooks. By default the K tokens of a frame are independent given the history. With
``sequential_codebooks`` codebook ``k``'s head reads the hidden state plus embeddings of the
frame's tokens ``0..k-1`` (the token embeddings again, so no new weights; sampled one after
another within the step; a linear stand-in for a depth transformer): residual codebooks refine
the earlier ones, and sampling them independently can combine residuals that belong to
different first-stage choices.

Conditioning is frame-aligned. The noisy log-mels (:mod:`sealign.models.features`, framed so that
``frames_per_token`` feature frames make one codec frame) are stacked to the token rate,
projected and refined by one convolution that sees ``lookahead`` frames on each side, then added
to the embedding of the previous token at every position. Output token ``t`` therefore sees noisy
frames up to ``t + lookahead`` directly and all earlier ones through attention; the output has
exactly as many frames as the input, so no end-of-sequence token is needed. Why not a prefix
(the noisy features as a prompt before the tokens)? With a prefix the model must first discover
through attention that output position ``t`` belongs with input frame ``t`` before it can learn
the mapping itself, which is slow to emerge in a small model trained on little data. With
addition the alignment is given: the task starts as a near per-frame mapping (noisy spectrum →
clean codec symbol, smoothed by the token history), and a 2-layer model overfits a batch within
30 steps (see the tests). The cost is that input and output must share a frame rate, which every
codec-token SE setup here satisfies.

``encoder_layers > 0`` runs that many bidirectional blocks over the conditioning states before
they are added (an encoder–decoder whose cross-attention is replaced by the given alignment).
Every output frame then sees the whole noisy utterance, not just ``lookahead`` frames ahead,
which matters at low SNR where a frame alone is ambiguous. The states are computed once per
utterance, so decoding speed barely changes.

Exposure bias. Trained only on clean histories, the model leans on the previous frame's tokens
(consecutive 20-ms frames are alike) and drifts once it reads its own imperfect output: the
first demo model, trained that way, transcribes at WER 0.33 when each frame is predicted from
the clean history (argmax) but 0.86 when it runs on its own samples
(``benchmarks/ar_exposure_bias.py``). ``scheduled_sampling = p`` (parallel
scheduled sampling, Mihaylova & Martins 2019) replaces a random fraction ``p`` of the input
frames in SFT by tokens sampled from a first teacher-forced pass without gradients, while the
targets stay the clean tokens: the model learns to recover from its own mistakes from the noisy
conditioning. It costs one extra forward pass per step and changes nothing at inference; the
shipped demo model (``p = 0.5``) runs on its own samples at WER 0.60.

Temperature, top-k and top-p. ``sample`` stores in ``Rollout.logp`` the log-prob of each token
under the distribution it was actually drawn from: logits divided by the temperature, then
restricted to the top-k tokens, then to the top-p nucleus of what remains, renormalized. The
settings are stored per row in ``rollout.actions["sampling"]`` (``[N, 3]``: temperature, top_k,
top_p) and :meth:`ARPolicy.step_log_probs` applies the same transformation, so GSPO's ratio
``exp(mean(logp_new - logp_old))`` compares like with like and is 1 (up to float rounding)
for unchanged weights. When recomputing, the sampled token is always kept in the top-k / top-p set even if the
updated weights would have pushed it out (at unchanged weights it is in the set anyway): its
log-prob stays finite instead of becoming ``-inf``. The entropy returned next to it is that of the
same transformed distribution. ``preference_log_likelihood`` (DPO) uses temperature 1 (under the
model's ``logit_scale``, 0 unless GSPO learned it) and no filtering. Dropout is used only by
:meth:`ARPolicy.sft_loss` in training mode: sampling and both log-likelihoods are deterministic
functions of the weights.

Decoding speed: ``sample`` keeps a KV cache and runs under ``torch.inference_mode`` on
decoding copies of the weights (:meth:`~sealign.models.transformer.Block.decode_weights`:
transposed, with the RMSNorm gains and scales, the attention scale and a RoPE-friendly column
order folded in), so that a block's step
(:meth:`~sealign.models.transformer.Block.decode_step`) is a short chain of operations on
two-dimensional states: RMSNorm as a division by the L2 norm, RoPE as one complex product,
attention as two batched products over transposed keys, fused residual products. A frame's
summed embeddings are one ``embedding_bag``, all codebooks' logits one matrix product drawn
together (smaller vocabularies padded with ``-inf``), and with a top-k only the ``k + 1``
largest logits of a step are touched. At batch 1 a step is per-operation overhead plus reading
the weights once (about 15 MB for the demo model, 0.8 ms of a 1.7–2.3 ms step on this CPU), so
fewer operations is what makes the cache pay (``benchmarks/ar_sampling.py``).

Wrapping an external AR model (e.g. a ``transformers`` decoder) behind the same protocol is
described in ``docs/custom_models.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sealign.codecs.base import Codec, codebook_sizes
from sealign.config import from_dict_strict
from sealign.models.backbone import BackboneConfig, LogitScale, codec_features
from sealign.models.features import (
    compute_features,
    frame_conditioner_layers,
    frame_states,
)
from sealign.models.persist import PolicyFolder, fit_length
from sealign.models.policy import Conditioning, Rollout, Targets
from sealign.models.tokens import (
    check_sampling,
    check_vocab_sizes,
    decode_token_rows,
    encode_token_targets,
)
from sealign.models.transformer import (
    Block,
    drop,
    init_transformer_weights,
    l2_eps,
    rope_rotation,
    rope_tables,
    unit_l2,
)

FAMILY = "ar"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass
class ARConfig(BackboneConfig):
    """Size and behaviour of an :class:`ARPolicy`; stored in its ``config.json``.

    The defaults are the demo size (6 layers × 192 dims; ≈ 3.7 M parameters with the WORLD
    codec's ``mgm`` layout, ≈ 4.4 M with its 8192-symbol ``ar`` layout). See
    :class:`~sealign.models.backbone.BackboneConfig` for the shared fields.
    """

    vocab_sizes: list[int] = field(default_factory=lambda: [8192])
    tie_embeddings: bool = True
    label_smoothing: float = 0.0
    encoder_layers: int = 0  # bidirectional blocks over the noisy conditioning (0 = none)
    sequential_codebooks: bool = False  # a frame's codebooks conditioned on the earlier ones
    scheduled_sampling: float = 0.0  # SFT: fraction of input frames taken from the model's samples

    def __post_init__(self) -> None:
        super().__post_init__()
        self.vocab_sizes = [int(v) for v in self.vocab_sizes]
        if not self.vocab_sizes or min(self.vocab_sizes) < 2:
            raise ValueError(f"vocab_sizes must be ≥ 2 per codebook, got {self.vocab_sizes}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        if self.encoder_layers < 0:
            raise ValueError(f"encoder_layers must be ≥ 0, got {self.encoder_layers}")
        if not 0.0 <= self.scheduled_sampling <= 1.0:
            raise ValueError(f"scheduled_sampling must be in [0, 1], got {self.scheduled_sampling}")

    @property
    def num_codebooks(self) -> int:
        return len(self.vocab_sizes)

    @classmethod
    def for_codec(cls, codec: Codec, **overrides: Any) -> ARConfig:
        """A config matching ``codec`` (vocabularies, sample and frame rate). ``overrides`` are
        :class:`ARConfig` fields; ``features`` may be a dict of :class:`FeatureConfig` fields
        (``frames_per_token``, ``n_mels``...)."""
        features = codec_features(codec, overrides.pop("features", None))
        overrides.pop("vocab_sizes", None)
        return cls.from_dict(
            {**overrides, "vocab_sizes": list(codebook_sizes(codec)), "features": features}
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ARConfig:
        return from_dict_strict(cls, d, "AR")


# ---------------------------------------------------------------------------------------------
# sampling transformations


def sampling_settings(n: int, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """``[n, 3]`` rows of (temperature, top_k, top_p), as stored in ``actions["sampling"]``."""
    return torch.tensor([[float(temperature), float(top_k), float(top_p)]]).expand(n, 3).clone()


class SamplingTransform:
    """The sampling transformation for one codebook, from per-row ``settings [N, 3]``
    (temperature, top_k, top_p), parsed once per call of ``sample`` / ``step_log_probs``; reuse
    it in custom policies so that sampling and recomputation agree.

    Calling it on ``logits [N, ..., V]`` divides by the temperature, keeps the top-k, then the
    top-p nucleus of those, and renormalizes. ``force [N, ...]`` indexes tokens kept regardless.
    Returns ``(log_probs, keep)``; ``keep`` is None when nothing was filtered.
    """

    def __init__(self, settings: torch.Tensor, vocab: int, device: torch.device) -> None:
        s = settings.detach().to(device, torch.float32)
        self.temp, self.top_k, self.top_p = s[:, 0], s[:, 1].round().long(), s[:, 2]
        self.filt_k = (self.top_k > 0) & (self.top_k < vocab)
        self.filt_p = self.top_p < 1.0
        self.any_k, self.any_p = bool(self.filt_k.any()), bool(self.filt_p.any())
        # a nucleus over the whole vocabulary needs a full sort, else the k_max largest suffice
        self.full_sort = bool((self.filt_p & ~self.filt_k).any())
        self.k_max = int(self.top_k[self.filt_k].max()) if self.any_k else vocab
        self.unit_temp = bool((self.temp == 1.0).all())
        self.all_k = bool(self.filt_k.all())
        self.same_k = self.all_k and bool((self.top_k == self.k_max).all())
        self.kth_index = self.top_k[:, None] - 1
        self.vocab = vocab

    def __call__(
        self, logits: torch.Tensor, force: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        shape = (-1,) + (1,) * (logits.dim() - 1)
        z = logits if self.unit_temp else logits / self.temp.to(logits.dtype).view(shape)
        if not (self.any_k or self.any_p):
            return F.log_softmax(z, dim=-1), None
        with torch.no_grad():
            zd = z.detach()
            if self.full_sort:
                s = zd.sort(dim=-1, descending=True).values
            else:
                s = zd.topk(self.k_max, dim=-1).values
            neg_inf = torch.tensor(float("-inf"), dtype=s.dtype, device=s.device)
            k_idx = (self.top_k.clamp(1, s.shape[-1]) - 1).view(shape).expand(*s.shape[:-1], 1)
            keep_min = torch.where(self.filt_k.view(shape), s.gather(-1, k_idx), neg_inf)
            if self.any_p:
                p = F.softmax(s.masked_fill(s < keep_min, float("-inf")), dim=-1)
                keep_sorted = (p.cumsum(dim=-1) - p) < self.top_p.to(p.dtype).view(shape)
                n_keep = keep_sorted.sum(dim=-1, keepdim=True).clamp(min=1)
                thr_p = torch.where(self.filt_p.view(shape), s.gather(-1, n_keep - 1), neg_inf)
                keep_min = torch.maximum(keep_min, thr_p)
            keep = zd >= keep_min
            if force is not None:
                keep.scatter_(-1, force.unsqueeze(-1), True)
        return F.log_softmax(z.masked_fill(~keep, float("-inf")), dim=-1), keep

    def sample(self, logits: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one token per row of ``logits [N, V]`` with uniforms ``u [N]`` → ``(tokens [N],
        log-probs [N])``.

        When every row has a top-k, only the ``k_max + 1`` largest logits are touched (the same
        distribution as :meth:`__call__`, several times cheaper for large vocabularies); if a tie
        at a row's k-th value reaches past them, the step falls back to the full vocabulary.
        """
        if self.all_k and not self.full_sort and self.k_max < self.vocab:
            z = logits if self.unit_temp else logits / self.temp.to(logits.dtype)[:, None]
            vals, idx = z.topk(self.k_max + 1, dim=-1)
            kth = vals.gather(-1, self.kth_index)
            if not bool((vals[:, -1:] >= kth).any()):
                cand = vals[:, :-1]
                if not self.same_k:  # rows with a smaller k drop their extra candidates
                    cand = cand.masked_fill(cand < kth, float("-inf"))
                if self.any_p:
                    p = F.softmax(cand, dim=-1)
                    keep_sorted = (p.cumsum(dim=-1) - p) < self.top_p.to(p.dtype)[:, None]
                    n_keep = keep_sorted.sum(dim=-1, keepdim=True).clamp(min=1)
                    thr_p = torch.where(
                        self.filt_p[:, None], cand.gather(-1, n_keep - 1), float("-inf")
                    )
                    cand = cand.masked_fill(cand < thr_p, float("-inf"))
                lp = F.log_softmax(cand, dim=-1)
                j = _draw(lp, u).unsqueeze(-1)
                return idx.gather(-1, j).squeeze(-1), lp.gather(-1, j).squeeze(-1)
        lp, _ = self(logits)
        tok = _draw(lp, u)
        return tok, lp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)


def _entropy(logp: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    safe = logp if keep is None else logp.masked_fill(~keep, 0.0)
    return -(safe.exp() * safe).sum(dim=-1)


def _draw(logp: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling from ``logp [N, V]`` with uniforms ``u [N]`` (one per row, so the
    random stream does not depend on the vocabulary or on how logits were computed)."""
    cdf = logp.exp().cumsum(dim=-1)
    x = (u * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, x, right=True).squeeze(-1).clamp(max=logp.shape[-1] - 1)


# ---------------------------------------------------------------------------------------------
# the policy


class ARPolicy(LogitScale, PolicyFolder, nn.Module):
    """Codec-token language model for speech enhancement (family ``"ar"``); see the module
    docstring. Build with ``ARPolicy(codec, ARConfig.for_codec(codec, ...))`` or
    :func:`sealign.models.registry.build_policy`; load with :meth:`load`.

    ``codec_spec``: if given (e.g. ``"encodec:facebook/encodec_24khz?bandwidth=6.0"``),
    :meth:`save` records this spec instead of copying the codec into the checkpoint.
    """

    family = FAMILY
    format_version = FORMAT_VERSION
    config_class = ARConfig

    def __init__(
        self, codec: Codec, config: ARConfig | None = None, codec_spec: str | None = None
    ) -> None:
        super().__init__()
        cfg = config or ARConfig.for_codec(codec)
        check_vocab_sizes(codec, cfg.vocab_sizes)
        self._bind_codec(codec, cfg, codec_spec)
        fc = cfg.features
        d = cfg.dim
        self.embeds = nn.ModuleList(nn.Embedding(v + 1, d) for v in cfg.vocab_sizes)  # +BOS
        self.cond_in, self.cond_conv = frame_conditioner_layers(fc, d, cfg.lookahead)
        self.encoder = nn.ModuleList(
            Block(d, cfg.heads, cfg.hidden) for _ in range(cfg.encoder_layers)
        )
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.hidden) for _ in range(cfg.layers))
        self.norm = nn.RMSNorm(d, eps=1e-6)
        self.heads = (
            None
            if cfg.tie_embeddings
            else nn.ModuleList(nn.Linear(d, v, bias=False) for v in cfg.vocab_sizes)
        )
        self._init_logit_scale()
        self._init_weights()

    codec: Codec

    def _init_weights(self) -> None:
        init_transformer_weights(self, self.config.layers)
        nn.init.zeros_(self.cond_in.bias)

    @property
    def device(self) -> torch.device:
        return self.cond_in.weight.device

    @property
    def step_seconds(self) -> float:
        """Seconds of input one rollout step covers: step ``t`` is output frame ``t``, which is
        conditioned on (and decodes to) the input's frame ``t``."""
        return self.config.features.token_samples / self.sample_rate

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"codec={self.codec!r}, params={n / 1e6:.2f}M"

    # -- building blocks --------------------------------------------------------------------
    def _cond_states(
        self, cond: Conditioning, dropout: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning → per-token states ``[B, T, dim]`` and token mask ``[B, T]``; with
        ``encoder_layers`` the states first pass bidirectional blocks over the valid frames."""
        cfg = self.config
        c, m = frame_states(cond, cfg.features, cfg.max_frames, self.cond_in, self.cond_conv)
        if len(self.encoder):
            cos, sin = rope_tables(c.shape[1], cfg.dim // cfg.heads, cfg.rope_base, c.device)
            c = drop(c, dropout)
            for block in self.encoder:
                c = block(c, cos, sin, dropout=dropout, mask=m)
            c = c * m.unsqueeze(-1).to(c.dtype)
        return c, m

    def _embed(self, prev: torch.Tensor) -> torch.Tensor:
        """Sum of codebook embeddings of ``prev [B, K, T]`` → ``[B, T, dim]``."""
        x = self.embeds[0](prev[:, 0])
        for k in range(1, len(self.embeds)):
            x = x + self.embeds[k](prev[:, k])
        return x

    def _shifted(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inputs for teacher forcing: BOS then ``tokens[..., :-1]``."""
        bos = torch.tensor(self.config.vocab_sizes, device=tokens.device).view(1, -1, 1)
        return torch.cat([bos.expand(tokens.shape[0], -1, 1), tokens[..., :-1]], dim=-1)

    def _head_matrices(self) -> list[torch.Tensor]:
        """Output projections as contiguous ``[dim, V_k]`` matrices (for decoding steps)."""
        if self.heads is not None:
            mats = [head.weight.detach().T for head in self.heads]
        else:
            mats = [
                emb.weight.detach()[:v].T
                for emb, v in zip(self.embeds, self.config.vocab_sizes, strict=True)
            ]
        return [m.contiguous() for m in self._scale_logits(mats)]

    def _fast_heads(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All output heads as one ``[dim, K·V_max]`` matrix with the final norm's gain folded
        in, and a ``[1, K·V_max]`` bias that is ``-inf`` on the columns a smaller vocabulary lacks
        (None when all vocabularies have the same size). Decoding only."""
        sizes = self.config.vocab_sizes
        v_max, gain = max(sizes), self.norm.weight.detach()[:, None]
        cat = torch.zeros(self.config.dim, len(sizes), v_max, device=self.device)
        for k, mat in enumerate(self._head_matrices()):
            cat[:, k, : sizes[k]] = mat * gain
        if min(sizes) == v_max:
            return cat.view(self.config.dim, -1), None
        pad = torch.zeros(len(sizes), v_max, device=self.device)
        for k, v in enumerate(sizes):
            pad[k, v:] = float("-inf")
        return cat.view(self.config.dim, -1), pad.view(1, -1)

    def _fast_embedding(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The codebooks' embedding tables stacked (``[Σ(V_k + 1), dim]``) and each one's first
        row (``[K]``): a frame's summed embedding is one lookup. Decoding only."""
        table = torch.cat([emb.weight.detach() for emb in self.embeds])
        rows = torch.tensor([emb.num_embeddings for emb in self.embeds], device=self.device)
        return table, torch.cumsum(rows, 0) - rows

    def _joint_transform(self, settings: torch.Tensor) -> SamplingTransform | None:
        """One :class:`SamplingTransform` for all codebooks of a step (rows ``N·K``, logits
        padded to the largest vocabulary with ``-inf``), or None when the codebooks must be
        drawn one by one: ``sequential_codebooks``, or a top-k that filters some vocabularies
        and not others."""
        sizes = self.config.vocab_sizes
        top_k = settings[:, 1].round().long()
        if self.config.sequential_codebooks or not bool(
            ((top_k <= 0) | (top_k < min(sizes))).all()
        ):
            return None
        rows = settings.repeat_interleave(len(sizes), dim=0)
        return SamplingTransform(rows, min(sizes), self.device)

    def _head(
        self, hn: torch.Tensor, k: int, matrices: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Codebook ``k``'s logits from normalized states ``hn``."""
        if matrices is not None:
            return hn @ matrices[k]
        if self.heads is not None:
            return self.heads[k](hn)
        return F.linear(hn, self.embeds[k].weight[: self.config.vocab_sizes[k]])

    def _logits(self, h: torch.Tensor, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per-codebook logits at every position of ``h [B, T, dim]``; ``tokens [B, K, T]``
        are the frames' tokens (used by ``sequential_codebooks``: codebook ``k`` sees 0..k-1)."""
        n_books = self.config.num_codebooks
        if not self.config.sequential_codebooks:
            hn = self.norm(h)
            out = [self._head(hn, k) for k in range(n_books)]
        else:
            out = []
            for k in range(n_books):
                out.append(self._head(self.norm(h), k))
                if k < n_books - 1:
                    h = h + self.embeds[k](tokens[:, k])
        return self._scale_logits(out)

    def _run(
        self,
        x: torch.Tensor,
        dropout: float = 0.0,
        fast: list[dict[str, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        cos, sin = rope_tables(
            x.shape[1], self.config.dim // self.config.heads, self.config.rope_base, x.device
        )
        x = drop(x, dropout)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, dropout=dropout, fast=None if fast is None else fast[i])
        return x

    def _teacher_forced(
        self,
        cond: Conditioning,
        tokens: torch.Tensor,
        dropout: float = 0.0,
        targets: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Logits of every frame given ``tokens`` as the history; ``targets`` (default
        ``tokens``) are the frames' own tokens that ``sequential_codebooks`` heads read."""
        states, m = self._cond_states(cond, dropout)
        if tokens.shape[0] != states.shape[0] or tokens.shape[-1] != states.shape[1]:
            raise ValueError(
                f"tokens of shape {tuple(tokens.shape)} do not match the conditioning "
                f"({states.shape[0]} rows × {states.shape[1]} frames)"
            )
        tokens = tokens.to(self.device)
        x = self._embed(self._shifted(tokens)) + states
        targets = tokens if targets is None else targets.to(self.device)
        return self._logits(self._run(x, dropout), targets), m

    def _scheduled_inputs(self, cond: Conditioning, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` with a random ``scheduled_sampling`` fraction of frames replaced by the
        model's own samples (temperature 1) from a teacher-forced pass without gradients, so
        SFT also sees the kind of errors the model makes when it reads its own output."""
        # the conditioning states are recomputed in the second pass: < 1 % of a step without
        # encoder layers, and sharing them would tie this pass to the second one's dropout
        with torch.no_grad():
            logits, _ = self._teacher_forced(cond, tokens)
            own = torch.stack(
                [
                    torch.multinomial(lg.float().softmax(-1).flatten(0, 1), 1).view(lg.shape[:2])
                    for lg in logits
                ],
                dim=1,
            )
        pick = torch.rand(tokens.shape[0], 1, tokens.shape[-1], device=tokens.device)
        return torch.where(pick < self.config.scheduled_sampling, own, tokens)

    def _tokens3(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[N, T]`` (K = 1) or ``[N, K, T]`` → ``[N, K, T]`` long on the model's device."""
        tokens = tokens.to(self.device, torch.long)
        if tokens.dim() == 2:
            tokens = tokens.unsqueeze(1)
        if tokens.dim() != 3 or tokens.shape[1] != self.config.num_codebooks:
            raise ValueError(
                f"expected tokens [N, T] or [N, {self.config.num_codebooks}, T], "
                f"got {tuple(tokens.shape)}"
            )
        return tokens

    # -- Policy protocol ----------------------------------------------------------------------
    def condition(self, noisy: list[np.ndarray]) -> Conditioning:
        """Normalized log-mels of the noisy waveforms (at :attr:`sample_rate`), padded."""
        cfg = self.config
        cond = compute_features(noisy, cfg.features, cfg.max_frames, str(self.device))
        return cond.to(self.device)

    def encode_targets(self, clean: list[np.ndarray]) -> Targets:
        """Clean waveforms → codec tokens ``[B, K, T]`` (see
        :func:`~sealign.models.tokens.encode_token_targets`)."""
        cfg = self.config
        return encode_token_targets(self.codec, clean, cfg.features, cfg.num_codebooks, self.device)

    def sample(
        self,
        cond: Conditioning,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        top_k: int = 0,
        top_p: float = 1.0,
        use_cache: bool = True,
    ) -> Rollout:
        """Sample one token sequence per row of ``cond``, frame by frame (no gradients).

        ``top_k = 0`` and ``top_p = 1`` disable those filters. ``use_cache = False`` recomputes
        the whole prefix at every step (same tokens, slower; for benchmarks and tests). Returns a
        :class:`Rollout` with ``actions``: ``tokens`` (``[N, T]`` for one codebook, else
        ``[N, K, T]``; 0 past each row's length), ``sampling`` (``[N, 3]`` settings used by
        :meth:`step_log_probs`) and ``num_samples`` (``[N]`` input lengths, for :meth:`decode`).
        """
        check_sampling(temperature, top_k, top_p)
        settings = sampling_settings(len(cond), temperature, int(top_k), top_p).to(self.device)
        with torch.inference_mode():
            tokens, logp, m = self._generate(cond, settings, generator, use_cache)
        # clones made outside inference mode are ordinary tensors, usable in autograd later
        tokens, logp, m = tokens.clone(), logp.clone(), m.clone()
        mf = m.to(logp.dtype)
        tokens = tokens * m.unsqueeze(1)
        actions = {
            "tokens": tokens[:, 0] if self.config.num_codebooks == 1 else tokens,
            "sampling": settings,
            "num_samples": torch.tensor(cond.num_samples, dtype=torch.long, device=self.device),
        }
        return Rollout(actions, logp * mf, mf, torch.arange(len(cond), device=self.device))

    def _generate(
        self,
        cond: Conditioning,
        settings: torch.Tensor,
        generator: torch.Generator | None,
        use_cache: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoding loop of :meth:`sample` → ``tokens [N, K, T]``, ``logp [N, T]``, token
        mask ``[N, T]`` (values past each row's end are not cleared here)."""
        cfg = self.config
        states, m = self._cond_states(cond)
        n, t_max = m.shape
        k_books, hd = cfg.num_codebooks, cfg.dim // cfg.heads
        tokens = torch.zeros(n, k_books, t_max, dtype=torch.long, device=self.device)
        logp = torch.zeros(n, t_max, device=self.device)
        cos, sin = rope_tables(t_max, hd, cfg.rope_base, self.device)
        caches = (
            [block.decode_cache(n, t_max, self.device) for block in self.blocks]
            if use_cache
            else []
        )
        warps = [SamplingTransform(settings, v, self.device) for v in cfg.vocab_sizes]
        joint = self._joint_transform(settings)
        fast = [
            block.decode_weights() if use_cache else block.fast_weights() for block in self.blocks
        ]
        rot = rope_rotation(cos, sin)
        head = self._head_matrices()
        heads_cat, pad = self._fast_heads()
        # the final RMSNorm written as in Block.decode_step
        heads_cat, head_eps = heads_cat * cfg.dim**0.5, l2_eps(cfg.dim, self.norm.eps, self.device)
        table, offsets = self._fast_embedding()
        gen_device = generator.device if generator is not None else torch.device("cpu")
        prev = torch.tensor(cfg.vocab_sizes, device=self.device).view(1, -1).expand(n, -1)
        for t in range(t_max):
            if use_cache:
                x = F.embedding_bag(prev + offsets, table, mode="sum") + states[:, t]
                for block, cache, fw in zip(self.blocks, caches, fast, strict=True):
                    x = block.decode_step(x, rot[t], cache, t, fw)
            else:
                idx = self._shifted(tokens[..., : t + 1]) + offsets[:, None]
                x = table[idx].sum(dim=1) + states[:, : t + 1]
                x = self._run(x, fast=fast)[:, -1]
            u = torch.rand(n, k_books, generator=generator, device=gen_device).to(self.device)
            if joint is not None:  # all codebooks at once: one matrix product, one draw
                hn = unit_l2(x, head_eps)
                logits = hn @ heads_cat if pad is None else torch.addmm(pad, hn, heads_cat)
                tok, lp = joint.sample(logits.view(n * k_books, -1), u.view(-1))
                tokens[:, :, t] = tok.view(n, k_books)
                logp[:, t] = lp.view(n, k_books).sum(dim=1)
            else:
                hn = self.norm(x)
                for k in range(k_books):
                    tok, lp = warps[k].sample(self._head(hn, k, head), u[:, k])
                    tokens[:, k, t] = tok
                    logp[:, t] += lp
                    if cfg.sequential_codebooks and k < k_books - 1:
                        x = x + self.embeds[k](tok)
                        hn = self.norm(x)
            prev = tokens[:, :, t]
        return tokens, logp, m

    def step_log_probs(
        self, cond: Conditioning, rollout: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced ``[N, T]`` log-probs of the rollout's tokens under the sampling
        transformation stored in ``rollout.actions["sampling"]`` (temperature 1 and no filtering
        when absent), and the entropies of those distributions; both zero on padding."""
        tokens = self._tokens3(rollout.actions["tokens"])
        c = cond.select(rollout.source.cpu())
        settings = rollout.actions.get("sampling")
        if settings is None:
            settings = sampling_settings(len(rollout), 1.0, 0, 1.0)
        logits, _ = self._teacher_forced(c, tokens)
        settings = settings.to(self.device)
        logp = torch.zeros(tokens.shape[0], tokens.shape[2], device=self.device)
        ent = torch.zeros_like(logp)
        for k, lg in enumerate(logits):
            warp = SamplingTransform(settings, self.config.vocab_sizes[k], self.device)
            lp, keep = warp(lg.float(), force=tokens[:, k])  # bf16 logits would tie in top-k
            logp = logp + lp.gather(-1, tokens[:, k].unsqueeze(-1)).squeeze(-1)
            ent = ent + _entropy(lp, keep)
        mask = rollout.mask.to(self.device, logp.dtype)
        return logp * mask, ent * mask

    @torch.no_grad()
    def teacher_forced_argmax(self, cond: Conditioning, targets: Targets) -> Targets:
        """Each frame's most likely tokens given the *clean* history ``targets`` (a diagnostic:
        compared with free-running samples it shows how much the model's own errors cost)."""
        logits, m = self._teacher_forced(cond, self._tokens3(targets.values))
        return Targets(torch.stack([lg.argmax(-1) for lg in logits], dim=1), m)

    def decode(self, rollout: Rollout) -> list[np.ndarray]:
        """Waveforms of the sampled tokens, trimmed (or zero-padded) to the inputs' lengths."""
        tokens = self._tokens3(rollout.actions["tokens"]).cpu().numpy()
        lengths = rollout.mask.sum(dim=1).round().long().tolist()
        wavs = self._decode_tokens(tokens, lengths)
        num = rollout.actions.get("num_samples")
        if num is None:
            return wavs
        return [fit_length(w, n) for w, n in zip(wavs, num.tolist(), strict=True)]

    def decode_targets(self, targets: Targets) -> list[np.ndarray]:
        """Waveforms of targets; each covers its valid frames (``frames × token_samples``)."""
        lengths = targets.mask.sum(dim=1).long().tolist()
        return self._decode_tokens(targets.values.cpu().numpy(), lengths)

    def _decode_tokens(self, tokens: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
        return decode_token_rows(self.codec, tokens, lengths, self.config.features.token_samples)

    def targets_from_rollout(self, rollout: Rollout) -> Targets:
        """The rollout's tokens as :class:`Targets` (e.g. to store DPO winners and losers)."""
        return Targets(self._tokens3(rollout.actions["tokens"]), rollout.mask.bool())

    def sft_loss(self, cond: Conditioning, targets: Targets) -> torch.Tensor:
        """Token cross-entropy on valid frames, averaged over tokens and codebooks (label
        smoothing from the config; dropout when the module is in training mode)."""
        tokens = self._tokens3(targets.values)
        dropout = self.config.dropout if self.training else 0.0
        inputs = tokens
        if self.training and self.config.scheduled_sampling > 0:
            inputs = self._scheduled_inputs(cond, tokens)
        logits, m = self._teacher_forced(cond, inputs, dropout, targets=tokens)
        valid = targets.mask.to(self.device).bool()
        if not torch.equal(valid, m):
            raise ValueError(
                "target frames do not match the conditioning frames (clean and noisy inputs "
                "must have the same lengths)"
            )
        losses = [
            F.cross_entropy(
                lg[valid], tokens[:, k][valid], label_smoothing=self.config.label_smoothing
            )
            for k, lg in enumerate(logits)
        ]
        return torch.stack(losses).mean()

    def preference_noise(
        self, targets: Targets, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """The AR likelihood is exact: no shared randomness."""
        return {}

    def preference_log_likelihood(
        self, cond: Conditioning, targets: Targets, noise: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``[B]`` sequence log-prob of the targets (temperature 1 under the model's own
        ``logit_scale``, no filtering), summed over valid frames and codebooks."""
        tokens = self._tokens3(targets.values)
        logits, _ = self._teacher_forced(cond, tokens)
        total = torch.zeros(tokens.shape[0], tokens.shape[2], device=self.device)
        for k, lg in enumerate(logits):
            total = total + F.log_softmax(lg, dim=-1).gather(-1, tokens[:, k, :, None])[..., 0]
        return (total * targets.mask.to(self.device, total.dtype)).sum(dim=1)
