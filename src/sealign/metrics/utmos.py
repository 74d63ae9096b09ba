"""UTMOS22 strong learner (Saeki et al., 2022): speech naturalness MOS from a wav2vec 2.0 encoder.

Loads the public checkpoint in the layout of tarepan/SpeechMOS (``utmos22_strong_step7459_v1.pt``,
a plain state dict converted from the official sarulab-speech/UTMOS22 strong-learner weights). The
network is written here: a wav2vec 2.0 base encoder (conv feature extractor, weight-normalized
positional convolution, 12 post-norm transformer layers), a data-domain and a listener embedding
concatenated to every frame, a BLSTM, and a two-layer projection giving a score per frame. The
utterance score is the frame mean mapped to the MOS scale (``mean * 2 + 3``) and clipped to [1, 5].

No weights are shipped: set the ``checkpoint`` option or ``SEALIGN_UTMOS_CKPT``. Inputs at other
rates are resampled to 16 kHz by the metric base class (soxr); SpeechMOS uses torchaudio's
resampler there, so scores of non-16 kHz inputs can differ from it slightly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sealign.metrics.base import (
    ATTENTION_MAX_SECONDS,
    Metric,
    MetricInfo,
    MetricUnavailable,
    Utterance,
    checked_max_seconds,
)
from sealign.utils.device import check_device
from sealign.utils.threads import set_torch_threads

CKPT_NAME = "utmos22_strong_step7459_v1.pt"
CKPT_SOURCE = (
    "the SpeechMOS v1.0.0 release of tarepan/SpeechMOS on GitHub "
    f"(releases/download/v1.0.0/{CKPT_NAME}), converted from sarulab-speech/UTMOS22 (MIT)"
)

_W2V2_BASE_CONV: tuple[tuple[int, int, int], ...] = (
    ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
)


@dataclass(frozen=True)
class UTMOSArch:
    """Architecture hyper-parameters. The defaults are those of the public checkpoint; smaller
    values are only for tests."""

    conv_layers: tuple[tuple[int, int, int], ...] = _W2V2_BASE_CONV  # (channels, kernel, stride)
    ssl_dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    ffn_dim: int = 3072
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    domain_dim: int = 128
    judge_dim: int = 128
    rnn_hidden: int = 512
    proj_hidden: int = 2048

    @classmethod
    def from_options(cls, arch: UTMOSArch | Mapping[str, Any] | None) -> UTMOSArch:
        if arch is None:
            return cls()
        if isinstance(arch, UTMOSArch):
            return arch
        d = dict(arch)
        if "conv_layers" in d:
            d["conv_layers"] = tuple(tuple(int(v) for v in layer) for layer in d["conv_layers"])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown UTMOS architecture fields: {sorted(unknown)}")
        return cls(**d)

    def min_samples(self) -> int:
        """Shortest input giving one feature frame."""
        n = 1
        for _, k, s in reversed(self.conv_layers):
            n = (n - 1) * s + k
        return n


class _WeightNormConv1d(nn.Module):
    """Grouped Conv1d whose weight is ``weight_v`` scaled to norm ``weight_g`` per kernel tap
    (weight normalization over every axis but the last)."""

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.padding, self.groups = kernel // 2, groups
        v = torch.empty(channels, channels // groups, kernel)
        nn.init.normal_(v, std=(4.0 / (kernel * channels)) ** 0.5)
        self.weight_g = nn.Parameter(v.norm(dim=(0, 1), keepdim=True))
        self.weight_v = nn.Parameter(v)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))
        return F.conv1d(x, w, self.bias, padding=self.padding, groups=self.groups)


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, keep: Tensor | None) -> Tensor:
        """``x`` (B, T, E); ``keep`` (B, T) True at real (non-padded) key positions."""
        b, t, e = x.shape

        def split(y: Tensor) -> Tensor:
            return y.reshape(b, t, self.heads, e // self.heads).transpose(1, 2)

        mask = None if keep is None else keep[:, None, None, :]
        y = F.scaled_dot_product_attention(
            split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), attn_mask=mask
        )
        return self.out_proj(y.transpose(1, 2).reshape(b, t, e))


class _EncoderLayer(nn.Module):
    """Post-norm transformer layer with a GELU feed-forward block."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = _SelfAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, keep: Tensor | None) -> Tensor:
        x = self.self_attn_layer_norm(x + self.self_attn(x, keep))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class _Encoder(nn.Module):
    def __init__(self, a: UTMOSArch) -> None:
        super().__init__()
        self.pos_conv = nn.ModuleList(
            [_WeightNormConv1d(a.ssl_dim, a.pos_conv_kernel, a.pos_conv_groups)]
        )
        self.even_kernel = a.pos_conv_kernel % 2 == 0
        self.layer_norm = nn.LayerNorm(a.ssl_dim)
        self.layers = nn.ModuleList(
            _EncoderLayer(a.ssl_dim, a.n_heads, a.ffn_dim) for _ in range(a.n_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        pos = self.pos_conv[0](x.transpose(1, 2))
        if self.even_kernel:  # symmetric padding of an even kernel yields one extra frame
            pos = pos[:, :, :-1]
        x = self.layer_norm(x + F.gelu(pos).transpose(1, 2))
        # Frames are padded to an even count; the pad frame is masked out as a key.
        t = x.shape[1]
        keep = None
        if t % 2:
            x = F.pad(x, (0, 0, 0, 1))
            keep = torch.ones(x.shape[0], t + 1, dtype=torch.bool, device=x.device)
            keep[:, t:] = False
        for layer in self.layers:
            x = layer(x, keep)
        return x[:, :t]


class _Wav2Vec2(nn.Module):
    def __init__(self, a: UTMOSArch) -> None:
        super().__init__()
        blocks = []
        c_in = 1
        for i, (c, k, s) in enumerate(a.conv_layers):
            conv = nn.Conv1d(c_in, c, k, stride=s, bias=False)
            # Index layout (conv, dropout slot, [group norm], GELU) as in the checkpoint.
            norm = [nn.GroupNorm(c, c, affine=True)] if i == 0 else []
            blocks.append(nn.Sequential(conv, nn.Identity(), *norm, nn.GELU()))
            c_in = c
        self.feature_extractor = nn.Module()
        self.feature_extractor.conv_layers = nn.ModuleList(blocks)
        self.layer_norm = nn.LayerNorm(c_in)
        self.post_extract_proj = nn.Linear(c_in, a.ssl_dim)
        self.encoder = _Encoder(a)
        self.mask_emb = nn.Parameter(torch.zeros(a.ssl_dim))  # pre-training only; kept for keys

    def forward(self, wave: Tensor) -> Tensor:
        """(B, T) → (B, frames, ssl_dim)."""
        x = wave.unsqueeze(1)
        for block in self.feature_extractor.conv_layers:
            x = block(x)
        return self.encoder(self.post_extract_proj(self.layer_norm(x.transpose(1, 2))))


class UTMOS22Strong(nn.Module):
    """Waveform (B, T) at 16 kHz → MOS-scale score (B,) (unclipped)."""

    def __init__(self, arch: UTMOSArch | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        a = UTMOSArch.from_options(arch)
        self.arch = a
        self.wav2vec2 = _Wav2Vec2(a)
        self.domain_emb = nn.Parameter(torch.randn(1, a.domain_dim), requires_grad=False)
        self.judge_emb = nn.Parameter(torch.randn(1, a.judge_dim), requires_grad=False)
        self.blstm = nn.LSTM(
            a.ssl_dim + a.domain_dim + a.judge_dim,
            a.rnn_hidden,
            batch_first=True,
            bidirectional=True,
        )
        self.projection = nn.Sequential(
            nn.Linear(2 * a.rnn_hidden, a.proj_hidden), nn.ReLU(), nn.Linear(a.proj_hidden, 1)
        )

    def frame_scores(self, wave: Tensor) -> Tensor:
        """(B, T) → per-frame scores (B, frames) on the model's internal scale."""
        h = self.wav2vec2(wave)
        b, t, _ = h.shape
        cond = torch.cat([self.domain_emb, self.judge_emb], dim=1)[:, None, :].expand(b, t, -1)
        h = self.blstm(torch.cat([h, cond], dim=2))[0]
        return self.projection(h).squeeze(-1)

    def forward(self, wave: Tensor) -> Tensor:
        return self.frame_scores(wave).mean(dim=1) * 2.0 + 3.0


def _normalize_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Accept the positional-conv weight norm saved by torch's newer parametrization API too."""
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        k = k.replace("pos_conv.0.parametrizations.weight.original0", "pos_conv.0.weight_g")
        k = k.replace("pos_conv.0.parametrizations.weight.original1", "pos_conv.0.weight_v")
        out[k] = v
    return out


def load_utmos_checkpoint(
    path: str | Path, arch: UTMOSArch | Mapping[str, Any] | None = None
) -> UTMOS22Strong:
    """Build the model and load a SpeechMOS-format state dict strictly (every key and shape)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt file, or a pickle that is not just tensors
        raise MetricUnavailable(
            f"{path}: cannot be read as a plain state dict with torch.load(weights_only=True): {err}"
        ) from err
    if not isinstance(state, Mapping):
        raise MetricUnavailable(f"{path}: not a UTMOS22 strong state dict ({type(state).__name__})")
    model = UTMOS22Strong(arch)
    state = _normalize_keys(state)
    want = model.state_dict()

    def show(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f", … ({len(keys)} in all)" if len(keys) > 5 else "")

    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    resized = sorted(
        k for k in set(want) & set(state) if tuple(want[k].shape) != tuple(state[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {show(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {show(unexpected)}")
    if resized:
        k = resized[0]
        problems.append(
            f"size mismatch for {len(resized)} tensor(s), e.g. {k}: checkpoint "
            f"{tuple(state[k].shape)} vs model {tuple(want[k].shape)} (another architecture?)"
        )
    if problems:
        raise MetricUnavailable(
            f"{path}: not a UTMOS22 strong checkpoint in SpeechMOS format ({CKPT_NAME}): "
            + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


class UTMOS(Metric):
    """UTMOS22 strong-learner naturalness MOS (1–5) at 16 kHz."""

    info = MetricInfo(
        name="utmos",
        outputs=("utmos",),
        higher_is_better=(True,),
        ranges=((1.0, 5.0),),
        sample_rate=16000,
        version="22-strong",
        description="UTMOS22 strong learner (SpeechMOS checkpoint) naturalness MOS",
        user_weights="checkpoint",
    )
    weights_env = "SEALIGN_UTMOS_CKPT"

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        num_threads: int = 2,
        batch_size: int = 4,
        arch: UTMOSArch | Mapping[str, Any] | None = None,
        device: str = "cpu",
        max_seconds: float | None = ATTENTION_MAX_SECONDS,
    ) -> None:
        super().__init__(num_threads, device)
        check_device(device)
        self.max_seconds = checked_max_seconds(max_seconds, "utmos")
        self.checkpoint = checkpoint or os.environ.get(self.weights_env) or None
        self.batch_size = max(1, int(batch_size))
        self.arch = UTMOSArch.from_options(arch)
        self._model: UTMOS22Strong | None = None
        self._sha: str | None = None

    def _path(self) -> Path:
        hint = (
            f"Expected the UTMOS22 strong checkpoint '{CKPT_NAME}' from {CKPT_SOURCE}: download "
            f"it and pass the metric option checkpoint=/path/to/{CKPT_NAME} (on the command line "
            f"metric_options.utmos.checkpoint=...) or set {self.weights_env}."
        )
        if not self.checkpoint:
            raise MetricUnavailable(f"utmos: no checkpoint given. {hint}")
        p = Path(self.checkpoint).expanduser()
        if not p.is_file():
            raise MetricUnavailable(f"utmos: checkpoint not found: {p}. {hint}")
        return p

    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {"checkpoint": None, "sha256": None}
        if self.arch != UTMOSArch():
            s["arch"] = asdict(self.arch)
        if self.checkpoint and Path(self.checkpoint).expanduser().is_file():
            p = Path(self.checkpoint).expanduser()
            if self._sha is None:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                self._sha = h.hexdigest()[:16]
            s.update(checkpoint=p.name, sha256=self._sha)
        return s

    def load(self) -> None:
        if self._model is None:
            self._model = load_utmos_checkpoint(self._path(), self.arch).to(self.device)

    def predict(self, wavs: list[np.ndarray]) -> np.ndarray:
        """Unclipped MOS-scale scores of 16 kHz signals. Only equal-length signals share a batch,
        since padding would change the result (group norm, BLSTM and mean span the whole input)."""
        self.load()
        assert self._model is not None
        set_torch_threads(self.num_threads)
        need = self.arch.min_samples()
        for w in wavs:
            if len(w) < need:
                raise ValueError(f"signal too short for UTMOS: {len(w)} samples < {need}")
        out = np.zeros(len(wavs), dtype=np.float64)
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(wavs):
            groups.setdefault(len(w), []).append(i)
        with torch.inference_mode():
            for idx_all in groups.values():
                for s in range(0, len(idx_all), self.batch_size):
                    idx = idx_all[s : s + self.batch_size]
                    x = torch.from_numpy(np.stack([np.asarray(wavs[i], np.float32) for i in idx]))
                    out[idx] = self._model(x.to(self.device)).double().cpu().numpy()
        return out

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        raw = self.predict([u.audio for u in utts])
        return [{"utmos": float(v)} for v in np.clip(raw, 1.0, 5.0)]
