"""Codec-token helpers shared by the token families (``ar``, ``mgm``)."""

from __future__ import annotations

import math

import numpy as np
import torch

from sealign.codecs.base import Codec, codebook_sizes
from sealign.models.features import FeatureConfig
from sealign.models.persist import fit_length
from sealign.models.policy import Targets


def check_vocab_sizes(codec: Codec, vocab_sizes: list[int]) -> None:
    """Raise ``ValueError`` unless the config's ``vocab_sizes`` are the codec's codebooks."""
    sizes = list(codebook_sizes(codec))
    if sizes != list(vocab_sizes):
        raise ValueError(f"config vocab_sizes {vocab_sizes} do not match the codec's {sizes}")


def encode_token_targets(
    codec: Codec,
    clean: list[np.ndarray] | np.ndarray,
    fc: FeatureConfig,
    num_codebooks: int,
    device: torch.device,
) -> Targets:
    """Clean waveforms → codec tokens ``[B, K, T]`` with ``T = ceil(n / token_samples)``
    frames each (codec output trimmed or edge-padded to that), padded with 0."""
    if isinstance(clean, np.ndarray) and clean.ndim == 1:
        clean = [clean]
    items = [np.asarray(w, dtype=np.float32) for w in clean]
    if not items:
        raise ValueError("no clean targets given")
    toks = codec.encode(items)
    lengths = [fc.num_tokens(w.size) for w in items]
    values = torch.zeros(len(items), num_codebooks, max(lengths), dtype=torch.long)
    mask = torch.zeros(len(items), max(lengths), dtype=torch.bool)
    for i, (tok, n) in enumerate(zip(toks, lengths, strict=True)):
        tok = np.asarray(tok, dtype=np.int64)
        if tok.shape[1] < n:
            tok = np.concatenate([tok, np.repeat(tok[:, -1:], n - tok.shape[1], 1)], axis=1)
        values[i, :, :n] = torch.from_numpy(np.ascontiguousarray(tok[:, :n]))
        mask[i, :n] = True
    return Targets(values.to(device), mask.to(device))


def decode_token_rows(
    codec: Codec, tokens: np.ndarray, lengths: list[int], token_samples: int
) -> list[np.ndarray]:
    """Waveforms of ``tokens [N, K, T]`` cut to each row's ``lengths`` frames."""
    items = [np.ascontiguousarray(tokens[i, :, :n]) for i, n in enumerate(lengths)]
    return [
        fit_length(w, n * token_samples) for w, n in zip(codec.decode(items), lengths, strict=True)
    ]


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """Raise ``ValueError`` for invalid sampling settings."""
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    if int(top_k) != top_k or top_k < 0:
        raise ValueError(f"top_k must be a non-negative integer, got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
