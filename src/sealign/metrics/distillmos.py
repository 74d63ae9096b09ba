"""DistillMOS: a compact speech-quality MOS predictor distilled from an XLS-R based SQA model.

This is sealign's offline default *naturalness/quality MOS* metric. It is reported as
``distillmos`` and is not UTMOS (see :mod:`sealign.metrics.utmos` for that).

The model zero-pads clips shorter than 7.68 s to 7.68 s before its convolutional front end
(80% of its time). Over the padding that front end's input is exactly zero, so its output
columns there are one constant column, except for the last few that reach the sequence end;
both depend on the weights only. :class:`DistillMOS` therefore runs the convolutions over the
clip plus their receptive field and fills in the rest from columns computed once on silence
(:class:`_PaddedFrontEnd`). The transformer still sees all 384 columns, so the score is the
model's own (≤ 5e-7 from ``distillmos``'s forward on clips of 1 sample to 8.1 s; the test
allows 1e-5).
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from typing import Any

import numpy as np

from sealign.metrics.base import Metric, MetricInfo, MetricUnavailable, Utterance
from sealign.utils.device import check_device
from sealign.utils.threads import torch_threads

DISTILLMOS_INSTALL = "pip install --no-deps distillmos==0.9.1 xls-r-sqa==0.1.0"


def _import_distillmos():
    """Import ``distillmos`` although its module-level ``import torchaudio`` fails with torch 2.13.

    torchaudio is used there only by a file-list CLI helper we never call, so when torchaudio is
    not importable an empty module stands in for it during the import and is removed afterwards.
    """
    try:
        return importlib.import_module("distillmos")
    except ModuleNotFoundError as err:
        if err.name == "distillmos" or err.name == "xls_r_sqa":
            raise MetricUnavailable(f"distillmos is not installed: {DISTILLMOS_INSTALL}") from err
    except (ImportError, OSError):
        pass  # a broken torchaudio install: fall through to the stand-in
    placeholder = types.ModuleType("torchaudio")
    placeholder.__doc__ = "not available; distillmos's file-list helper cannot be used"
    saved = sys.modules.get("torchaudio")
    sys.modules["torchaudio"] = placeholder
    try:
        sys.modules.pop("distillmos.sqa", None)
        sys.modules.pop("distillmos", None)
        return importlib.import_module("distillmos")
    finally:
        if saved is None:
            sys.modules.pop("torchaudio", None)
        else:
            sys.modules["torchaudio"] = saved


class _PaddedFrontEnd:
    """The model's front end (compressed STFT + CNN) for one clip zero-padded to its window.

    ``features(x)`` equals ``model.cnn(x)`` for ``x`` of shape (1, window) whose samples from
    ``n`` on are zero, computing the convolutions over the first frames only.
    """

    def __init__(self, cnn, window: int, compress) -> None:
        import torch

        self.cnn = cnn
        self.compress = compress  # distillmos's compressed complex STFT
        convs = [m for m in cnn.cnn if isinstance(m, torch.nn.Conv2d)]
        # time is the last axis; every layer has kernel 3 and padding 1 there, stride 1 except
        # the last (stride 2), as in distillmos 0.9.1; anything else takes the plain path
        self.ok = (
            len(convs) >= 1
            and all(c.kernel_size[1] == 3 and c.padding[1] == 1 for c in convs)
            and all(c.stride[1] == 1 for c in convs[:-1])
            and convs[-1].stride[1] == 2
        )
        # input frames on each side that one output column sees (an upper bound: the last
        # layer's stride makes the true reach one frame less)
        self.reach = len(convs)
        self.frames = window + 2 * ((cnn.win_length - cnn.hop_length) // 2) - cnn.win_length
        self.frames = self.frames // cnn.hop_length + 1
        self.columns = (self.frames - 1) // 2 + 1
        self._silence = None
        self._window = window

    def _silent_columns(self):
        """(constant interior column, last ``reach + 1`` columns) of the CNN on silence."""
        import torch

        if self._silence is None:
            device = next(self.cnn.parameters()).device
            out = self.cnn.cnn(self._spectrum(torch.zeros(1, self._window, device=device)))
            self._silence = (out[..., self.columns // 2], out[..., -(self.reach + 1) :])
        return self._silence

    def _spectrum(self, x):
        return self.compress(x, self.cnn.hop_length, self.cnn.win_length).permute(0, 3, 1, 2)

    def features(self, x, n: int):
        import torch

        hop = self.cnn.hop_length
        # frame j holds samples [hop·j − (win − hop)/2, …); all frames from `first_zero` on
        # hold only padding
        first_zero = -(-(n + (self.cnn.win_length - self.cnn.hop_length) // 2) // hop)
        keep = (first_zero + self.reach + 1) // 2 + 1  # columns from here on see only zeros
        used = 2 * keep + 2 * self.reach + 2  # input frames that give the first `keep` columns
        tail = self.reach + 1
        if not self.ok or keep + tail >= self.columns or used >= self.frames:
            return self.cnn(x)
        head = self.cnn.cnn(self._spectrum(x)[..., :used])[..., :keep]
        const, end = self._silent_columns()
        middle = const[..., None].expand(*const.shape, self.columns - keep - tail)
        out = torch.cat([head, middle, end], dim=-1)
        return torch.flatten(out, 1, -2)


class DistillMOS(Metric):
    """Quality MOS (1–5) from the ``distillmos`` wheel's bundled weights (variant 7)."""

    info = MetricInfo(
        name="distillmos",
        outputs=("distillmos",),
        higher_is_better=(True,),
        ranges=((1.0, 5.0),),
        sample_rate=16000,
        version="0.9.1",
        description="DistillMOS v7 quality MOS (Stahl & Gamper 2025), weights shipped in the wheel",
        packages=("distillmos", "xls_r_sqa"),
        install=DISTILLMOS_INSTALL,
    )

    def __init__(self, num_threads: int = 2, batch_size: int = 8, device: str = "cpu") -> None:
        super().__init__(num_threads, device)
        check_device(device)
        self.batch_size = batch_size
        self._model = None

    def load(self) -> None:
        if self._model is not None:
            return
        import torch

        mod = _import_distillmos()
        model = mod.ConvTransformerSQAModel(load_weights=False)
        ckpt = mod.sqa.DEFAULT_WEIGHTS_CHKPT
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        self._model = model.eval().to(self.device)
        self._window = int(mod.sqa.SEQ_LEN)
        self._hop = int(mod.sqa.MAX_HOP_LEN)
        self._front = _PaddedFrontEnd(model.cnn, self._window, mod.sqa._complex_compressed)

    def predict(self, audio: np.ndarray) -> float:
        """The model's MOS for one 16 kHz clip (``model(x)``, with the padded front end)."""
        import torch

        self.load()
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1))
        x, n = x.to(self.device), x.shape[1]
        with torch.inference_mode():
            if n >= self._window:
                return self._predict_long(x)
            x = torch.nn.functional.pad(x, (0, self._window - n))
            x = x / (x.abs().max(dim=1, keepdim=True).values + 1e-8)
            feat = self._front.features(x, n).permute(0, 2, 1)
            return float(1 + 4 * self._model.transformer_pool_attn(feat).reshape(-1)[0])

    def _predict_long(self, x: Any) -> float:
        """``model(x)`` for a clip of at least one window: the mean MOS of windows spread evenly
        over it at most a second apart (as the wheel places them), run ``batch_size`` windows
        at a time so that memory does not grow with the clip (the wheel runs all at once:
        about 63 MB a second of audio)."""
        import torch

        over = x.shape[1] - self._window
        starts = [int(c * over) for c in np.linspace(0, 1, math.ceil(over / self._hop) + 1)]
        total = 0.0
        for i in range(0, len(starts), self.batch_size):
            w = torch.cat([x[:, a : a + self._window] for a in starts[i : i + self.batch_size]])
            w = w / (w.abs().max(dim=1, keepdim=True).values + 1e-8)
            q = self._model.transformer_pool_attn(self._model.cnn(w).permute(0, 2, 1))
            total += float(q.sum())
        return 1 + 4 * total / len(starts)

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        import torch

        self.load()
        out: list[dict[str, float]] = []
        # One clip at a time: stacking padded clips was measured slower on CPU (2.6-2.8 s vs
        # 2.4 s for 16 clips on 2 threads), and each clip's front end stops where its audio does.
        with torch_threads(self.num_threads), torch.inference_mode():
            for u in utts:
                out.append({"distillmos": self.predict(u.audio)})
        return out
