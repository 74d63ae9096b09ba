"""DistillMOS: a compact speech-quality MOS predictor distilled from an XLS-R based SQA model.

This is sealign's offline default *naturalness/quality MOS* metric. It is reported as
``distillmos`` and is not UTMOS (see :mod:`sealign.metrics.utmos` for that).
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np

from sealign.metrics.base import Metric, MetricInfo, MetricUnavailable, Utterance
from sealign.utils.threads import torch_threads


def _import_distillmos():
    """Import ``distillmos`` although its module-level ``import torchaudio`` fails with torch 2.13.

    torchaudio is used there only by a file-list CLI helper we never call, so when torchaudio is
    not importable an empty module stands in for it during the import and is removed afterwards.
    """
    try:
        return importlib.import_module("distillmos")
    except ModuleNotFoundError as err:
        if err.name == "distillmos" or err.name == "xls_r_sqa":
            raise MetricUnavailable(
                "distillmos is not installed: pip install --no-deps distillmos==0.9.1 xls-r-sqa==0.1.0"
            ) from err
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
    )

    def __init__(self, num_threads: int = 2, batch_size: int = 8) -> None:
        super().__init__(num_threads)
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
        self._model = model.eval()

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        import torch

        self.load()
        out: list[dict[str, float]] = []
        # One clip at a time: the model pads shorter clips to 7.68 s, and stacking padded clips
        # was measured slower on CPU (2.6-2.8 s vs 2.4 s for 16 clips on 2 threads).
        with torch_threads(self.num_threads), torch.inference_mode():
            for u in utts:
                x = torch.from_numpy(np.ascontiguousarray(u.audio, dtype=np.float32))[None]
                out.append({"distillmos": float(self._model(x).reshape(-1)[0])})
        return out
