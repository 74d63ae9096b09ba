"""Transformer pieces shared by the model families: rotary position tables and a pre-norm
block (RMSNorm, self-attention through ``scaled_dot_product_attention``, SwiGLU MLP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rope_tables(
    length: int, head_dim: int, base: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    inv = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    ang = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``[B, H, T, hd]`` by position tables ``[T, hd/2]`` (rotate-half layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def unit_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS normalization without a gain (the gain is folded into the next matrix by
    :meth:`Block.fast_weights`)."""
    return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)


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
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor],
        pos: int,
        fast: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """One cached decoding step: ``x [B, dim]`` at position ``pos`` (``cos`` / ``sin``:
        that position's ``[hd/2]`` tables) → ``[B, dim]``. The same computation as
        :meth:`forward` with a cache, kept two-dimensional and with fused residual products,
        since at a few rows a step's cost is mostly per-operation overhead."""
        b, d = x.shape
        qkv = (unit_rms(x, float(self.norm1.eps)) @ fast["qkv"]).view(b, 3, self.heads, -1)
        qk = _rope(qkv[:, :2], cos, sin)  # RoPE of q and k
        kc, vc = cache
        kc[:, :, pos] = qk[:, 1]
        vc[:, :, pos] = qkv[:, 2]
        y = F.scaled_dot_product_attention(
            qk[:, 0].unsqueeze(2), kc[:, :, : pos + 1], vc[:, :, : pos + 1]
        )
        x = torch.addmm(x, y.view(b, d), fast["proj"])
        a, g = (unit_rms(x, float(self.norm2.eps)) @ fast["mlp_in"]).chunk(2, dim=-1)
        return torch.addmm(x, F.silu(g).mul_(a), fast["mlp_out"])

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
        x̂ @ (diag(g)·W)``: one decoding step runs two fewer norm kernels per block)."""
        out = {n: getattr(self, n).weight.detach().T.contiguous() for n in ("proj", "mlp_out")}
        for name, norm in (("qkv", self.norm1), ("mlp_in", self.norm2)):
            w = getattr(self, name).weight.detach().T
            out[name] = (w * norm.weight.detach()[:, None]).contiguous()
        return out
