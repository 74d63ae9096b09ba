"""SpeechBERTScore (Saeki et al., 2024): BERTScore over frame-level speech features.

Both signals are encoded into frame features; with ``S[i, j]`` the cosine similarity of output
frame ``i`` and reference frame ``j``, precision is the mean over output frames of
``max_j S[i, j]``, recall the mean over reference frames of ``max_i S[i, j]``, and the score is
their harmonic mean F1 (higher is better). Cosines lie in [-1, 1]; if precision or recall is not
positive (never seen with real encoders) F1 is reported as 0, so the range is [0, 1].

Encoders
--------
* ``encoder="whisper"`` (default, offline): the encoder of a CTranslate2 Whisper model, by default
  Whisper-base assembled from PyPI data packages. Only the frames covering the real audio are
  kept (20 ms each), never those of the silence padding. Padding follows
  :class:`sealign.metrics.asr.WhisperASR` (a short silence tail by default; ``pad_to_30s=True``
  for the standard 30-s window).
* ``encoder="hf"``: a HuBERT/WavLM/wav2vec2-style model loaded with ``transformers`` from the
  local directory ``model_path``; features are hidden state ``layer`` (0 = the input of the
  first transformer layer, ``None`` = last layer).

The score depends on the encoder, so the output is named after it: each instance builds its own
``info`` with the single output ``speechbertscore_<encoder>`` — ``speechbertscore_whisper_base``
for the default (which is also what the class-level ``info`` describes), otherwise
``speechbertscore_<model directory name>`` (lower-cased, non-alphanumerics → ``_``).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sealign.metrics.asr import METRIC_COMPUTE_TYPE
from sealign.metrics.base import (
    ATTENTION_MAX_SECONDS,
    Metric,
    MetricInfo,
    MetricUnavailable,
    Utterance,
    checked_max_seconds,
)
from sealign.utils.device import check_device

DEFAULT_OUTPUT = "speechbertscore_whisper_base"
_CACHE_SIZE = 256
_SIM_BLOCK = 2048  # rows of the similarity matrix computed at a time


def output_name(encoder_label: str) -> str:
    """``speechbertscore_<label>`` with the label lower-cased and non-alphanumerics → ``_``."""
    label = re.sub(r"[^0-9a-z]+", "_", encoder_label.lower()).strip("_")
    return f"speechbertscore_{label or 'model'}"


def bertscore_f1(out_feats: np.ndarray, ref_feats: np.ndarray) -> tuple[float, float, float]:
    """``(precision, recall, f1)`` of two frame-feature sequences ``(n, d)`` and ``(m, d)``."""
    a = np.asarray(out_feats, dtype=np.float64)
    b = np.asarray(ref_feats, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"bad feature shapes {a.shape} and {b.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    # the similarity matrix in row blocks: whole, it grows with the square of the length
    # (a 10-minute clip against its reference would hold 30 000² float64s, 7 GB)
    row_max = np.empty(len(a))
    col_max = np.full(len(b), -np.inf)
    for i in range(0, len(a), _SIM_BLOCK):
        sim = a[i : i + _SIM_BLOCK] @ b.T
        row_max[i : i + _SIM_BLOCK] = sim.max(axis=1)
        np.maximum(col_max, sim.max(axis=0), out=col_max)
    p = float(row_max.mean())
    r = float(col_max.mean())
    f1 = 2 * p * r / (p + r) if p > 0 and r > 0 else 0.0
    return p, r, min(1.0, f1)


class SpeechBERTScore(Metric):
    """SpeechBERTScore F1 of the output against the reference (see module docstring)."""

    info = MetricInfo(
        name="speechbertscore",
        outputs=(DEFAULT_OUTPUT,),
        higher_is_better=(True,),
        ranges=((0.0, 1.0),),
        needs_reference=True,
        description="SpeechBERTScore F1 (Saeki et al. 2024) on frame features of the output and "
        "the reference.",
    )

    def __init__(
        self,
        encoder: str = "whisper",
        model: str | None = None,
        model_path: str | None = None,
        layer: int | None = None,
        num_threads: int = 2,
        compute_type: str = METRIC_COMPUTE_TYPE,
        pad_to_30s: bool = False,
        batch_size: int = 8,
        device: str = "cpu",
        max_seconds: float | str | None = "auto",
    ) -> None:
        """``encoder``: ``"whisper"`` (``model``: a local CTranslate2 Whisper directory, default
        the offline Whisper-base; ``compute_type``, ``pad_to_30s``) or ``"hf"`` (``model_path``: a
        local transformers model directory; ``layer``: hidden-state index, default last).
        ``max_seconds``: longest clip scored (``auto``: 60 s for ``hf``, whose model attends
        over the whole clip, and no limit for Whisper, which encodes 30-s windows; null: no
        limit)."""
        super().__init__(num_threads=num_threads, device=device)
        if max_seconds == "auto":
            max_seconds = ATTENTION_MAX_SECONDS if encoder == "hf" else None
        self.max_seconds = checked_max_seconds(max_seconds, "speechbertscore")  # type: ignore[arg-type]
        self.encoder = encoder
        self.layer = layer
        self.batch_size = batch_size
        self._hf: Any = None
        self._hf_extractor: Any = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        if encoder == "whisper":
            from sealign.metrics.asr import WhisperASR

            self._whisper: Any = WhisperASR(
                model=model,
                compute_type=compute_type,
                cpu_threads=num_threads,
                pad_to_30s=pad_to_30s,
                batch_size=batch_size,
                device=device,
            )
            self.model_path = model
            label = self._whisper.name
            padding = "30-s padding" if pad_to_30s else "short padding"
            desc = (
                f"encoder: final encoder layer of {label} (CTranslate2 {compute_type}, {padding})"
            )
        elif encoder == "hf":
            check_device(device)
            if not model_path:
                raise ValueError(
                    "encoder='hf' needs model_path (a local transformers model directory)"
                )
            self.model_path = str(Path(model_path).expanduser())
            label = Path(self.model_path).name
            desc = f"encoder: transformers model {self.model_path}, hidden state {layer if layer is not None else 'last'}"
        else:
            raise ValueError(f"unknown encoder {encoder!r}; choose 'whisper' or 'hf'")
        key = DEFAULT_OUTPUT if encoder == "whisper" and model is None else output_name(label)
        self.info = replace(
            type(self).info, outputs=(key,), description=f"{type(self).info.description} {desc}."
        )

    def describe(self) -> str:
        """Output name and encoder."""
        return f"{self.info.outputs[0]} ({self.info.description})"

    def settings(self) -> dict[str, Any]:
        if self.encoder == "whisper":
            s = self._whisper.settings()
            return {
                "encoder": "whisper",
                "model": s["asr_model"],
                "compute_type": s["compute_type"],
                "pad_to_30s": s["pad_to_30s"],
                **({k: s[k] for k in ("tail_s", "bucket_s")} if not s["pad_to_30s"] else {}),
            }
        return {
            "encoder": "hf",
            "model": Path(self.model_path).name,
            "model_path": self.model_path,
            "layer": self.layer,
        }

    # -- encoders ------------------------------------------------------------------------------
    def load(self) -> None:
        if self.encoder == "whisper":
            self._whisper.load()
        elif self._hf is None:
            self._load_hf()

    def _load_hf(self) -> None:
        path = Path(self.model_path)
        if not (path / "config.json").is_file():
            raise MetricUnavailable(
                f"SpeechBERTScore encoder not found: {path} has no config.json; pass model_path= a "
                "local transformers HuBERT/WavLM directory (e.g. saved with save_pretrained)"
            )
        try:
            import torch  # noqa: F401
            from transformers import AutoFeatureExtractor, AutoModel
        except ImportError as err:
            raise MetricUnavailable("encoder='hf' needs torch and transformers") from err
        from sealign.utils.threads import set_torch_threads

        set_torch_threads(self.num_threads)
        try:
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except Exception as err:  # noqa: BLE001 - transformers raises many types
            raise MetricUnavailable(f"cannot load transformers model from {path}: {err}") from err
        n_layers = int(getattr(model.config, "num_hidden_layers", 0))
        if self.layer is not None and not -n_layers - 1 <= self.layer <= n_layers:
            raise ValueError(f"layer {self.layer} out of range for {path} ({n_layers} layers)")
        if (path / "preprocessor_config.json").is_file():
            self._hf_extractor = AutoFeatureExtractor.from_pretrained(
                str(path), local_files_only=True
            )
        self._hf = model.eval().to(self.device)

    def _hf_features(self, wav: np.ndarray) -> np.ndarray:
        import torch

        if self._hf is None:
            self._load_hf()
        x = np.asarray(wav, dtype=np.float32)
        if self._hf_extractor is not None:
            x = self._hf_extractor(x, sampling_rate=self.info.sample_rate, return_tensors="np")[
                "input_values"
            ][0]
        with torch.inference_mode():
            out = self._hf(
                torch.from_numpy(np.ascontiguousarray(x))[None].to(self.device),
                output_hidden_states=True,
            )
        hidden = out.hidden_states[-1 if self.layer is None else self.layer]
        return hidden[0].float().cpu().numpy()

    def features(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Frame features ``(frames, dim)`` of 16-kHz waveforms, with the configured encoder."""
        if self.encoder == "whisper":
            return self._whisper.encode(wavs, self.info.sample_rate)
        return [self._hf_features(w) for w in wavs]

    # -- scoring -------------------------------------------------------------------------------
    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        todo: dict[str, np.ndarray] = {}
        keys = []
        for u in utts:
            if u.reference is None:  # excluded by missing_requirement
                raise ValueError("utterance has no reference")
            key = hashlib.blake2b(
                np.ascontiguousarray(u.reference, np.float32).tobytes()
            ).hexdigest()
            keys.append(key)
            if key in self._cache:
                self._cache.move_to_end(key)
            else:
                todo[key] = u.reference
        new_keys = list(todo)
        feats = self.features([u.audio for u in utts] + [todo[k] for k in new_keys])
        for key, f in zip(new_keys, feats[len(utts) :], strict=True):
            self._cache[key] = f
        ref_feats = {k: self._cache[k] for k in keys}
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        name = self.info.outputs[0]
        return [
            {name: bertscore_f1(f, ref_feats[k])[2]}
            for f, k in zip(feats[: len(utts)], keys, strict=True)
        ]
