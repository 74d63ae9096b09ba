"""Transformer pieces shared by the model families: rotary position tables and a pre-norm
block (RMSNorm, self-attention through ``scaled_dot_product_attention``, SwiGLU MLP)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def init_transformer_weights(module: nn.Module, layers: int) -> None:
    """GPT-2 style initialization of every matrix in ``module``: N(0, 0.02), residual output
    projections scaled by ``1 / sqrt(2 · layers)``. Vectors (biases, norms) and the
    conditioning convolution (``cond_conv``) keep PyTorch's defaults."""
    out_std = 0.02 / math.sqrt(2 * layers)
    for name, p in module.named_parameters():
        if p.dim() < 2 or name.startswith("cond_conv"):
            continue
        std = out_std if name.endswith(("proj.weight", "mlp_out.weight")) else 0.02
        nn.init.normal_(p, std=std)


def rope_tables(
    length: int, head_dim: int, base: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    inv = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    ang = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def rope_rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The tables of :func:`rope_tables` as unit complex numbers ``cos + i·sin`` (the rotation
    that :meth:`Block.decode_step` multiplies interleaved query / key pairs by)."""
    return torch.complex(cos, sin)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``[B, H, T, hd]`` by position tables ``[T, hd/2]`` (rotate-half layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def unit_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS normalization without a gain (the gain is folded into the next matrix by
    :meth:`Block.fast_weights`)."""
    return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)


def unit_l2(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``x / sqrt(‖x‖² + eps²)`` over the last dimension: :func:`unit_rms` divided by
    ``sqrt(dim)`` in three operations instead of five, when ``eps = sqrt(dim · rms_eps)``
    (see :func:`l2_eps`); decoding weights carry the ``sqrt(dim)``."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).hypot(eps)


def l2_eps(dim: int, rms_eps: float, device: torch.device) -> torch.Tensor:
    """The ``eps`` of :func:`unit_l2` that matches RMSNorm's epsilon ``rms_eps``."""
    return torch.tensor((dim * float(rms_eps)) ** 0.5, device=device)


def drop(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.dropout(x, p, True) if p > 0 else x


class Block(nn.Module):
    """Pre-norm transformer block: self-attention with RoPE (causal unless a padding ``mask`` is
    given), then a SwiGLU MLP."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm1 = nn.RMSNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm2 = nn.RMSNorm(dim, eps=1e-6)
        self.mlp_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.mlp_out = nn.Linear(hidden, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        pos: int = 0,
        dropout: float = 0.0,
        fast: dict[str, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x [B, T, dim]``. Without ``cache``: causal over the T positions. With ``cache``
        (``[B, H, T_max, hd]`` keys and values): one new position ``pos`` (T = 1). ``fast``:
        weights from :meth:`fast_weights` (inference only). ``mask [B, T]`` (True = real
        position): bidirectional attention over the real positions (masked and flow models)."""
        b, t, d = x.shape
        qkv = self._lin("qkv", self._norm(self.norm1, x, fast), fast)
        qkv = qkv.view(b, t, 3, self.heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # [3, B, H, T, hd]
        qk, v = _rope(qkv[:2], cos, sin), qkv[2]
        q, k = qk[0], qk[1]
        if mask is not None:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask[:, None, None, :], dropout_p=dropout
            )
        elif cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            kc, vc = cache
            kc[:, :, pos : pos + t] = k
            vc[:, :, pos : pos + t] = v
            y = F.scaled_dot_product_attention(q, kc[:, :, : pos + t], vc[:, :, : pos + t])
        x = x + drop(self._lin("proj", y.transpose(1, 2).reshape(b, t, d), fast), dropout)
        a, g = self._lin("mlp_in", self._norm(self.norm2, x, fast), fast).chunk(2, dim=-1)
        return x + drop(self._lin("mlp_out", F.silu(g) * a, fast), dropout)

    def decode_step(
        self,
        x: torch.Tensor,
        rot: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor],
        pos: int,
        dw: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """One cached decoding step: ``x [B, dim]`` at position ``pos`` → ``[B, dim]``, with
        weights from :meth:`decode_weights`, a cache from :meth:`decode_cache` and ``rot``, that
        position's rotation (:func:`rope_rotation`). The same function as :meth:`forward` with a
        cache, written for as few operations as possible, since at a few rows a step's cost is
        mostly per-operation overhead: two-dimensional states, fused residual products, RoPE as
        one complex product, RMSNorm as a division by the L2 norm (its ``sqrt(dim)`` and gain
        are in the weights) and attention as two batched products over keys stored
        transposed (the ``1/sqrt(hd)`` scale is in the query weights)."""
        b, d = x.shape
        eps = dw["eps"]
        qkv = unit_l2(x, eps) @ dw["qkv"]
        qkv = qkv.view(b, 3, self.heads, self.head_dim)
        qk = torch.view_as_complex(qkv[:, :2].unflatten(-1, (-1, 2))) * rot
        qk = torch.view_as_real(qk).flatten(-2)  # RoPE of q and k, [B, 2, H, hd]
        keys_t, values = cache
        keys_t[..., pos] = qk[:, 1]
        values[:, :, pos] = qkv[:, 2]
        scores = qk[:, 0].unsqueeze(2) @ keys_t[..., : pos + 1]  # [B, H, 1, pos + 1]
        y = torch.softmax(scores, dim=-1) @ values[:, :, : pos + 1]
        x = torch.addmm(x, y.view(b, d), dw["proj"])
        a, g = (unit_l2(x, eps) @ dw["mlp_in"]).chunk(2, dim=-1)
        return torch.addmm(x, F.silu(g).mul_(a), dw["mlp_out"])

    def decode_cache(
        self, batch: int, length: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Empty key / value cache for :meth:`decode_step`: keys ``[B, H, hd, T]`` (transposed,
        so that scores are a plain batched product), values ``[B, H, T, hd]``."""
        keys_t = torch.zeros(batch, self.heads, self.head_dim, length, device=device)
        return keys_t, torch.zeros(batch, self.heads, length, self.head_dim, device=device)

    def _lin(
        self, name: str, x: torch.Tensor, fast: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        return getattr(self, name)(x) if fast is None else x @ fast[name]

    @staticmethod
    def _norm(
        norm: nn.RMSNorm, x: torch.Tensor, fast: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        return norm(x) if fast is None else unit_rms(x, float(norm.eps))

    def fast_weights(self) -> dict[str, torch.Tensor]:
        """Inference copies of the linear weights as contiguous ``[in, out]`` matrices (``x @ W``
        is about twice as fast as ``F.linear`` for the few rows of a decoding step), with the
        RMSNorm gains folded into the matrices that read the normalized states (``(x̂·g) @ W =
        x̂ @ (diag(g)·W)``). :meth:`forward` takes them as ``fast``; :meth:`decode_weights`
        builds on them."""
        out = {n: getattr(self, n).weight.detach().T.contiguous() for n in ("proj", "mlp_out")}
        for name, norm in (("qkv", self.norm1), ("mlp_in", self.norm2)):
            w = getattr(self, name).weight.detach().T
            out[name] = (w * norm.weight.detach()[:, None]).contiguous()
        return out

    def decode_weights(self) -> dict[str, torch.Tensor]:
        """:meth:`fast_weights` for :meth:`decode_step`: the matrices that read normalized
        states also carry RMSNorm's ``sqrt(dim)``, and the query and key columns of each head
        are reordered from the rotate-half layout ``(x1, x2)`` to interleaved pairs ``(x1[0],
        x2[0], x1[1], ...)``, so that RoPE is a complex product (attention scores are unchanged,
        since queries and keys are reordered alike); the query columns carry ``1/sqrt(hd)``."""
        out = self.fast_weights()
        dim, device = out["qkv"].shape[0], out["qkv"].device
        half = self.head_dim // 2
        pairs = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()
        order = torch.arange(3 * dim).view(3, self.heads, self.head_dim)
        order[:2] = order[:2, :, pairs]
        scale = torch.ones(3, self.heads, self.head_dim, device=device)
        scale[0] = self.head_dim**-0.5  # attention's scale, on the queries
        out["qkv"] = (out["qkv"][:, order.flatten()] * scale.view(1, -1) * dim**0.5).contiguous()
        out["mlp_in"] = out["mlp_in"].mul(dim**0.5).contiguous()
        out["eps"] = l2_eps(dim, self.norm1.eps, device)  # norm1 and norm2 share eps
        return out
