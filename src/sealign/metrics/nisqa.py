"""NISQA v2 (Mittag et al., 2021): non-intrusive speech quality (MOS + 4 dimensions) and TTS
naturalness, from the official ``.tar`` checkpoints.

The network is rebuilt here from the hyper-parameters stored in the checkpoint (``args``) so that
its ``model_state_dict`` loads strictly: mel-spectrogram → overlapping 15-frame segments → a
framewise CNN → time-dependency model (self-attention or BLSTM) → pooling head(s).

The official weights are licensed CC BY-NC-SA 4.0 and are *not* shipped with sealign: point the
``weights`` option (or ``SEALIGN_NISQA_WEIGHTS`` / ``SEALIGN_NISQA_TTS_WEIGHTS``) at your own copy.

Sample rate: the official CLI computes the mel spectrogram at the file's own rate (``ms_sr`` is
``None`` in both checkpoints); hop and window are given in seconds. sealign resamples every input to
``sample_rate`` (default 48 kHz, the rate of the NISQA training corpus), so a score equals the
official CLI's on the input resampled to that rate.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sealign.metrics.base import Metric, MetricInfo, MetricUnavailable, Utterance
from sealign.utils.device import check_device
from sealign.utils.threads import set_torch_threads

log = logging.getLogger(__name__)

NISQA_URL = "https://github.com/gabrielmittag/NISQA (folder weights/)"
LICENSE_NOTE = (
    "The NISQA weights are licensed CC BY-NC-SA 4.0 and are not distributed with sealign; "
    f"download them yourself from the NISQA repository: {NISQA_URL}."
)


# --------------------------------------------------------------------------------------------
# Framewise models: one (1, n_mels, seg_length) mel segment → a feature vector
# --------------------------------------------------------------------------------------------


def _pair(k: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(k), int(k)) if isinstance(k, int) else (int(k[0]), int(k[1]))


class _AdaptCNN(nn.Module):
    """Six conv layers with adaptive max-pooling to fixed sizes (any segment size)."""

    def __init__(
        self,
        c1: int,
        c2: int,
        c3: int,
        kernel: tuple[int, int],
        pools: tuple[tuple[int, int], tuple[int, int], tuple[int, int]],
        fc_out_h: int | None,
    ) -> None:
        super().__init__()
        self.pools = pools
        pad = (1, 0) if kernel[1] == 1 else (1, 1)
        last_kernel = (kernel[0], pools[2][1])  # collapses the width to one
        chans = [(1, c1), (c1, c2), (c2, c3), (c3, c3), (c3, c3)]
        for i, (cin, cout) in enumerate(chans, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel, padding=pad))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
        self.conv6 = nn.Conv2d(c3, c3, last_kernel, padding=(1, 0))
        self.bn6 = nn.BatchNorm2d(c3)
        self.flat = c3 * pools[2][0]
        self.fc = nn.Linear(self.flat, fc_out_h) if fc_out_h else None
        self.fan_out = fc_out_h or self.flat

    def _block(self, i: int, x: Tensor) -> Tensor:
        return F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_max_pool2d(self._block(1, x), self.pools[0])
        x = F.adaptive_max_pool2d(self._block(2, x), self.pools[1])
        x = F.adaptive_max_pool2d(self._block(4, self._block(3, x)), self.pools[2])
        x = self._block(6, self._block(5, x)).reshape(-1, self.flat)
        return self.fc(x) if self.fc is not None else x


class _StandardCNN(nn.Module):
    """Six conv layers with fixed 2×2 max-pooling; needs 48 mel bands × 15 frames."""

    def __init__(self, c1: int, c2: int, c3: int, kernel: tuple[int, int], fc_out_h: int | None):
        super().__init__()
        chans = [(1, c1), (c1, c2), (c2, c3), (c3, c3), (c3, c3), (c3, c3)]
        for i, (cin, cout) in enumerate(chans, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel, padding=1))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
        self.pool_first = nn.MaxPool2d(2, stride=2, padding=(0, 1))
        self.pool = nn.MaxPool2d(2, stride=2)
        self.flat = c3 * 6 * 2  # 48 × 15 pooled three times
        self.fc_out = nn.Linear(self.flat, fc_out_h) if fc_out_h else None
        self.fan_out = fc_out_h or self.flat

    def _block(self, i: int, x: Tensor) -> Tensor:
        return F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool_first(self._block(1, x))
        x = self.pool(self._block(2, x))
        x = self.pool(self._block(4, self._block(3, x)))
        x = self._block(6, self._block(5, x)).reshape(-1, self.flat)
        return self.fc_out(x) if self.fc_out is not None else x


class _SkipCNN(nn.Module):
    """No framewise network: batch-normalized, flattened segment (optionally projected)."""

    def __init__(self, seg_length: int, n_mels: int, fc_out_h: int | None) -> None:
        super().__init__()
        self.fan_in = seg_length * n_mels
        self.bn = nn.BatchNorm2d(1)
        self.linear = nn.Linear(self.fan_in, fc_out_h) if fc_out_h is not None else nn.Identity()
        self.fan_out = fc_out_h if fc_out_h is not None else self.fan_in

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.bn(x).reshape(-1, self.fan_in))


class _DFF(nn.Module):
    """Deep feed-forward framewise baseline (four dense layers)."""

    def __init__(self, seg_length: int, n_mels: int, fc_out_h: int) -> None:
        super().__init__()
        self.fan_in = seg_length * n_mels
        self.fan_out = fc_out_h
        self.lin1 = nn.Linear(self.fan_in, fc_out_h)
        self.lin2 = nn.Linear(fc_out_h, fc_out_h)
        self.lin3 = nn.Linear(fc_out_h, fc_out_h)
        self.lin4 = nn.Linear(fc_out_h, fc_out_h)
        self.bn1 = nn.BatchNorm2d(1)
        for i in range(2, 6):
            setattr(self, f"bn{i}", nn.BatchNorm1d(fc_out_h))

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(x).reshape(-1, self.fan_in)
        for i in range(1, 5):
            x = F.relu(getattr(self, f"bn{i + 1}")(getattr(self, f"lin{i}")(x)))
        return x


class _Framewise(nn.Module):
    """Runs the framewise model on the valid segments of a padded batch."""

    def __init__(self, args: dict[str, Any]) -> None:
        super().__init__()
        kind = args.get("cnn_model")
        k = _pair(args.get("cnn_kernel_size") or 3)
        c1, c2, c3 = args["cnn_c_out_1"], args["cnn_c_out_2"], args["cnn_c_out_3"]
        fc = args.get("cnn_fc_out_h")
        if kind == "adapt":
            pools = tuple(_pair(args[f"cnn_pool_{i}"]) for i in (1, 2, 3))
            self.model: nn.Module = _AdaptCNN(c1, c2, c3, k, pools, fc)  # type: ignore[arg-type]
        elif kind == "standard":
            if args["ms_n_mels"] != 48 or args["ms_seg_length"] != 15 or k != (3, 3):
                raise ValueError("NISQA 'standard' CNN needs 48 mel bands, 15-frame segments, 3×3")
            self.model = _StandardCNN(c1, c2, c3, k, fc)
        elif kind == "dff":
            self.model = _DFF(args["ms_seg_length"], args["ms_n_mels"], fc)
        elif kind in (None, "skip"):
            self.model = _SkipCNN(args["ms_seg_length"], args["ms_n_mels"], fc)
        else:
            raise ValueError(f"unknown NISQA framewise model {kind!r}")
        self.fan_out: int = self.model.fan_out

    def forward(self, x: Tensor, n_wins: Tensor) -> Tensor:
        """``x`` (B, L, 1, H, W) with ``n_wins`` valid segments each → (B, max n_wins, F)."""
        b, length = x.shape[:2]
        # the valid segments' rows, from the lengths on the CPU (no data-dependent op on x)
        rows = torch.cat([torch.arange(int(n)) + i * length for i, n in enumerate(n_wins)])
        rows = rows.to(x.device)
        feats = self.model(x.flatten(0, 1).index_select(0, rows))
        out = feats.new_zeros(b * length, feats.shape[-1]).index_copy(0, rows, feats)
        return out.view(b, length, -1)[:, : int(n_wins.max())]


# --------------------------------------------------------------------------------------------
# Time-dependency models
# --------------------------------------------------------------------------------------------


def _padding_mask(n_wins: Tensor, length: int, device: torch.device) -> Tensor:
    """True at padded time steps, (B, length), on ``device`` (``n_wins`` stays on the CPU)."""
    return (torch.arange(length)[None, :] >= n_wins[:, None]).to(device)


class _PositionalEncoding(nn.Module):
    """Sinusoidal positional encoding added to (T, B, E) inputs."""

    def __init__(self, d_model: int, max_len: int = 3000) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(1e4) / d_model)
        )
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("pe", pe[:, None, :])

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pe[: x.shape[0]]


class _SALayer(nn.Module):
    """Post-norm transformer encoder layer (ReLU feed-forward)."""

    def __init__(self, d_model: int, nhead: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, hidden)
        self.linear2 = nn.Linear(hidden, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        x = self.norm1(x + self.self_attn(x, x, x, key_padding_mask=pad, need_weights=False)[0])
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class _SelfAttention(nn.Module):
    def __init__(
        self, input_size: int, d_model: int, nhead: int, layers: int, hidden: int, pos_enc: bool
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(input_size, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.layers = nn.ModuleList(_SALayer(d_model, nhead, hidden) for _ in range(layers))
        self.pos_encoder = _PositionalEncoding(d_model) if pos_enc else nn.Identity()

    def forward(self, x: Tensor, n_wins: Tensor) -> Tensor:
        h = self.pos_encoder(self.norm1(self.linear(x).transpose(0, 1)))  # (T, B, E)
        pad = _padding_mask(n_wins, h.shape[0], h.device)
        for layer in self.layers:
            h = layer(h, pad)
        return h.transpose(0, 1)


class _LSTM(nn.Module):
    def __init__(self, input_size: int, hidden: int, layers: int, bidirectional: bool) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_size, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional
        )
        self.fan_out = hidden * (2 if bidirectional else 1)

    def forward(self, x: Tensor, n_wins: Tensor) -> Tensor:
        packed = pack_padded_sequence(x, n_wins, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(
            self.lstm(packed)[0], batch_first=True, total_length=int(n_wins.max())
        )
        return out


class _TimeDependency(nn.Module):
    def __init__(self, args: dict[str, Any], prefix: str, input_size: int) -> None:
        super().__init__()
        kind = args.get(prefix)

        def a(name: str) -> Any:
            return args.get(f"{prefix}_{name}")

        self.model: nn.Module | None
        if kind == "self_att":
            self.model = _SelfAttention(
                input_size,
                a("sa_d_model"),
                a("sa_nhead"),
                a("sa_num_layers"),
                a("sa_h"),
                bool(a("sa_pos_enc")),
            )
            self.fan_out = int(a("sa_d_model"))
        elif kind == "lstm":
            lstm = _LSTM(
                input_size, a("lstm_h"), a("lstm_num_layers"), bool(a("lstm_bidirectional"))
            )
            self.model, self.fan_out = lstm, lstm.fan_out
        elif kind in (None, "skip"):
            self.model, self.fan_out = None, input_size
        else:
            raise ValueError(f"unknown NISQA time-dependency model {kind!r}")

    def forward(self, x: Tensor, n_wins: Tensor) -> Tensor:
        return x if self.model is None else self.model(x, n_wins)


# --------------------------------------------------------------------------------------------
# Pooling heads: (B, T, F) → (B, 1)
# --------------------------------------------------------------------------------------------


def _attention_pool(logits: Tensor, x: Tensor, n_wins: Tensor) -> Tensor:
    pad = _padding_mask(n_wins, x.shape[1], x.device)
    logits = logits.squeeze(-1).masked_fill(pad, float("-inf"))
    return torch.bmm(torch.softmax(logits, dim=1).unsqueeze(1), x).squeeze(1)


class _PoolAtt(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d, 1)
        self.linear2 = nn.Linear(d, 1)

    def forward(self, x: Tensor, n_wins: Tensor) -> Tensor:
        return self.linear2(_attention_pool(self.linear1(x), x, n_wins))


class _PoolAttFF(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d, hidden)
        self.linear2 = nn.Linear(hidden, 1)
        self.linear3 = nn.Linear(d, 1)

    def forward(self, x: Tensor, n_wins: Tensor) -> Tensor:
        logits = self.linear2(F.relu(self.linear1(x)))
        return self.linear3(_attention_pool(logits, x, n_wins))


class _PoolLinear(nn.Module):
    """Average, max, last-step or bidirectional last-step pooling followed by a linear layer."""

    def __init__(self, d: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.linear = nn.Linear(d, 1)

    def forward(self, x: Tensor, n_wins: Tensor) -> Tensor:
        pad = _padding_mask(n_wins, x.shape[1], x.device).unsqueeze(-1)
        last = (n_wins.long() - 1).to(x.device)
        rows = torch.arange(x.shape[0], device=x.device)
        if self.mode == "avg":
            v = x.masked_fill(pad, 0.0).sum(1) / n_wins[:, None].to(x)
        elif self.mode == "max":
            v = x.masked_fill(pad, float("-inf")).max(1)[0]
        elif self.mode == "last_step":
            v = x[rows, last]
        else:  # last_step_bi: forward direction at the last valid step, backward at the first
            half = x.shape[-1] // 2
            v = torch.cat((x[rows, last, :half], x[:, 0, half:]), dim=1)
        return self.linear(v)


class _Pooling(nn.Module):
    def __init__(self, args: dict[str, Any], d: int) -> None:
        super().__init__()
        kind = args.get("pool")
        if kind == "att":
            h = args.get("pool_att_h")
            self.model: nn.Module = _PoolAtt(d) if h is None else _PoolAttFF(d, h)
        elif kind in ("avg", "max", "last_step", "last_step_bi"):
            self.model = _PoolLinear(d, kind)
        else:
            raise ValueError(f"unknown NISQA pooling {kind!r}")

    def forward(self, x: Tensor, n_wins: Tensor) -> Tensor:
        return self.model(x, n_wins)


# --------------------------------------------------------------------------------------------
# Full models
# --------------------------------------------------------------------------------------------


class NisqaNet(nn.Module):
    """NISQA (one output) or NISQA_DIM (MOS, NOI, DIS, COL, LOUD), built from checkpoint ``args``.

    Input: mel segments (B, L, 1, n_mels, seg_length), padded, on the model's device, with
    ``n_wins`` (B,) valid segments per item, on the CPU. Output: (B, n_outputs).
    """

    def __init__(self, args: dict[str, Any]) -> None:
        super().__init__()
        kind = args.get("model", "NISQA")
        if kind not in ("NISQA", "NISQA_DIM"):
            raise ValueError(f"unsupported NISQA model {kind!r} (only single-ended models)")
        self.dim = kind == "NISQA_DIM"
        self.cnn = _Framewise(args)
        self.time_dependency = _TimeDependency(args, "td", self.cnn.fan_out)
        d = self.time_dependency.fan_out
        if self.dim:
            pool = _Pooling(args, d)
            self.pool_layers = nn.ModuleList(copy.deepcopy(pool) for _ in range(5))
        else:
            self.time_dependency_2 = _TimeDependency(args, "td_2", d)
            self.pool = _Pooling(args, self.time_dependency_2.fan_out)

    @property
    def n_outputs(self) -> int:
        return 5 if self.dim else 1

    def forward(self, x: Tensor, n_wins: Tensor) -> Tensor:
        h = self.time_dependency(self.cnn(x, n_wins), n_wins)
        if self.dim:
            return torch.cat([p(h, n_wins) for p in self.pool_layers], dim=1)
        return self.pool(self.time_dependency_2(h, n_wins), n_wins)


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def nisqa_melspec(wav: np.ndarray, sr: int, args: dict[str, Any]) -> np.ndarray:
    """Log-mel spectrogram (n_mels, frames) in dB, with the checkpoint's settings at rate ``sr``."""
    import librosa

    with warnings.catch_warnings():
        # fmax above Nyquist (e.g. 20 kHz at 16 kHz) leaves empty top bands, as in the original.
        warnings.filterwarnings("ignore", message="Empty filters detected")
        warnings.filterwarnings("ignore", message="n_fft=.* is too large")  # short 16 kHz clips
        spec = librosa.feature.melspectrogram(
            y=np.asarray(wav, dtype=np.float32),
            sr=sr,
            n_fft=int(args["ms_n_fft"]),
            hop_length=int(sr * args["ms_hop_length"]),
            win_length=int(sr * args["ms_win_length"]),
            window="hann",
            center=True,
            pad_mode="reflect",
            power=1.0,
            n_mels=int(args["ms_n_mels"]),
            fmin=0.0,
            fmax=args["ms_fmax"],
            htk=False,
            norm="slaney",
        )
    return librosa.amplitude_to_db(spec, ref=1.0, amin=1e-4, top_db=80.0)


def segment_melspec(spec: np.ndarray, seg_length: int, seg_hop: int) -> Tensor:
    """(n_mels, frames) → (n_segments, 1, n_mels, seg_length): every ``seg_hop``-th window of
    ``seg_length`` consecutive frames."""
    if seg_length % 2 == 0:
        raise ValueError(f"NISQA segment length must be odd, got {seg_length}")
    x = torch.from_numpy(np.ascontiguousarray(spec, dtype=np.float32))
    if x.shape[1] < seg_length:
        raise ValueError(f"signal too short for NISQA: {x.shape[1]} frames < {seg_length}")
    segs = x.unfold(1, seg_length, 1).permute(1, 0, 2)  # (n, n_mels, seg_length)
    return segs[::seg_hop].unsqueeze(1).contiguous()


# --------------------------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------------------------


def load_nisqa_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, Any]:
    """Read an official NISQA ``.tar`` (a dict with ``args`` and ``model_state_dict``).

    Uses ``torch.load(weights_only=True)``; full unpickling (which can run code from the file) is
    used only when ``trust_pickle`` is set.
    """
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - restricted unpickler refused something
        if not trust_pickle:
            raise MetricUnavailable(
                f"{path}: cannot be read with torch.load(weights_only=True) ({err}). If you trust "
                "this file, pass trust_pickle=True to allow full unpickling."
            ) from err
        log.warning("%s: loading with weights_only=False (trusted by option)", path)
        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as err2:  # noqa: BLE001 - corrupt or foreign file
            raise MetricUnavailable(f"{path}: not a readable NISQA checkpoint ({err2})") from err2
    if not isinstance(ckpt, dict) or "args" not in ckpt or "model_state_dict" not in ckpt:
        raise MetricUnavailable(
            f"{path}: not a NISQA checkpoint (needs 'args' and 'model_state_dict')"
        )
    return ckpt


def build_nisqa(ckpt: dict[str, Any]) -> NisqaNet:
    """Build the network described by ``ckpt['args']`` and load its weights strictly."""
    try:
        net = NisqaNet(dict(ckpt["args"]))
    except (KeyError, TypeError, ValueError) as err:
        raise MetricUnavailable(f"unsupported NISQA checkpoint args: {err!r}") from err
    try:
        net.load_state_dict(ckpt["model_state_dict"], strict=True)
    except RuntimeError as err:
        raise MetricUnavailable(f"NISQA checkpoint does not match its own args: {err}") from err
    return net.eval()


def _sha256(path: Path, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


class NISQA(Metric):
    """NISQA v2 speech quality: overall MOS plus noisiness, discontinuity, coloration, loudness."""

    info = MetricInfo(
        name="nisqa",
        outputs=("nisqa_mos", "nisqa_noi", "nisqa_dis", "nisqa_col", "nisqa_loud"),
        higher_is_better=(True,) * 5,
        ranges=((1.0, 5.0),) * 5,
        sample_rate=48000,
        version="2.0",
        description="NISQA v2.0 speech quality MOS and dimensions (official nisqa.tar weights)",
        user_weights="weights",
    )
    weights_env = "SEALIGN_NISQA_WEIGHTS"
    weights_file = "nisqa.tar"
    n_outputs = 5

    def __init__(
        self,
        weights: str | Path | None = None,
        num_threads: int = 2,
        batch_size: int = 8,
        sample_rate: int | None = None,
        trust_pickle: bool = False,
        device: str = "cpu",
    ) -> None:
        super().__init__(num_threads, device)
        check_device(device)
        self.weights = weights or os.environ.get(self.weights_env) or None
        self.batch_size = max(1, int(batch_size))
        self.trust_pickle = trust_pickle
        if sample_rate is not None and sample_rate != self.info.sample_rate:
            self.info = replace(type(self).info, sample_rate=int(sample_rate))
        self._net: NisqaNet | None = None
        self._args: dict[str, Any] = {}
        self._sha: str | None = None

    def _path(self) -> Path:
        if not self.weights:
            raise MetricUnavailable(
                f"{self.info.name}: no weights given. Expected the official NISQA checkpoint "
                f"'{self.weights_file}': pass the metric option weights=/path/to/{self.weights_file} "
                f"(on the command line metric_options.{self.info.name}.weights=...) or set "
                f"{self.weights_env}. {LICENSE_NOTE}"
            )
        p = Path(self.weights).expanduser()
        if not p.is_file():
            raise MetricUnavailable(
                f"{self.info.name}: weights file not found: {p} (expected the official NISQA "
                f"checkpoint '{self.weights_file}'; set weights=... or {self.weights_env}). "
                f"{LICENSE_NOTE}"
            )
        return p

    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {"sample_rate": self.info.sample_rate, "weights": None, "sha256": None}
        if self.weights and Path(self.weights).expanduser().is_file():
            p = Path(self.weights).expanduser()
            if self._sha is None:
                self._sha = _sha256(p)
            s.update(weights=p.name, sha256=self._sha)
        return s

    def load(self) -> None:
        if self._net is not None:
            return
        path = self._path()
        ckpt = load_nisqa_checkpoint(path, self.trust_pickle)
        net = build_nisqa(ckpt)
        if net.n_outputs != self.n_outputs:
            raise MetricUnavailable(
                f"{self.info.name}: {path} has {net.n_outputs} output(s) "
                f"({ckpt['args'].get('model')}); this metric needs '{self.weights_file}' "
                f"with {self.n_outputs}"
            )
        self._args = dict(ckpt["args"])
        self._net = net.to(self.device)

    def features(self, wav: np.ndarray, sr: int) -> Tensor:
        """Mel segments of one signal, as the official pipeline builds them."""
        a = self._args
        seg_length, hop = int(a["ms_seg_length"]), int(sr * a["ms_hop_length"])
        if len(wav) < (seg_length - 1) * hop:
            raise ValueError(
                f"signal too short for NISQA: {len(wav) / sr:.3f} s < {(seg_length - 1) * hop / sr} s"
            )
        segs = segment_melspec(
            nisqa_melspec(wav, sr, a), seg_length, int(a.get("ms_seg_hop_length") or 1)
        )
        max_segs = a.get("ms_max_segments")
        if max_segs is not None and segs.shape[0] > int(max_segs):
            sec = int(max_segs) * int(a.get("ms_seg_hop_length") or 1) * float(a["ms_hop_length"])
            raise ValueError(
                f"signal too long for NISQA: {segs.shape[0]} segments > {max_segs} (≈{sec:.0f} s)"
            )
        return segs

    def predict(self, wavs: list[np.ndarray], sr: int | None = None) -> np.ndarray:
        """Unclipped model outputs, (N, n_outputs), for signals at ``sr`` (default: metric rate)."""
        self.load()
        assert self._net is not None
        set_torch_threads(self.num_threads)
        sr = int(sr or self.info.sample_rate)
        feats = [self.features(w, sr) for w in wavs]
        out = np.zeros((len(wavs), self.n_outputs), dtype=np.float64)
        # Longest first so that batches hold similar lengths (less padding).
        order = sorted(range(len(feats)), key=lambda i: -feats[i].shape[0])
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                n_wins = torch.tensor([feats[i].shape[0] for i in idx])
                x = feats[idx[0]].new_zeros((len(idx), int(n_wins.max()), *feats[idx[0]].shape[1:]))
                for j, i in enumerate(idx):
                    x[j, : feats[i].shape[0]] = feats[i]
                out[idx] = self._net(x.to(self.device), n_wins).double().cpu().numpy()
        return out

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        raw = self.predict([u.audio for u in utts])
        vals = np.clip(raw, 1.0, 5.0)
        return [dict(zip(self.info.outputs, map(float, row), strict=True)) for row in vals]


class NISQATTS(NISQA):
    """NISQA-TTS naturalness MOS of synthetic (or enhanced) speech."""

    info = MetricInfo(
        name="nisqa_tts",
        outputs=("nisqa_tts",),
        higher_is_better=(True,),
        ranges=((1.0, 5.0),),
        sample_rate=48000,
        version="1.0",
        description="NISQA-TTS v1 naturalness MOS (official nisqa_tts.tar weights)",
        user_weights="weights",
    )
    weights_env = "SEALIGN_NISQA_TTS_WEIGHTS"
    weights_file = "nisqa_tts.tar"
    n_outputs = 1
