"""Content features of the noisy input: a speech encoder's frames, one per 20-ms codec frame.

Generative SE models at small scale render clean-sounding speech but lose words: the content has
to be inferred from noisy, reverberant log-mels. Speech-LM enhancers (GenSE, LLaSE-G1, SELM)
condition on a noise-robust speech encoder instead. Two encoders (``features.content``):

* ``whisper``: Whisper's encoder (default: the offline Whisper-base, int8, via
  CTranslate2), on the policy's GPU when CTranslate2 can use it (:func:`content_device`);
* ``ssl``: a self-supervised speech encoder from ``transformers`` (WavLM, HuBERT, wav2vec 2.0,
  data2vec-audio: what LLaSE-G1, GenSE and SELM read), from ``features.content_model``, a local
  folder written by ``save_pretrained`` or a hub id, at hidden layer ``features.content_layer``
  (:class:`SSLEncoder`), in torch on the policy's device.

Both give 50-Hz frames that line up with a 50-Hz codec frame by frame. Features are rounded to
float16 (cached or not, so a cache never changes a result) and kept in a bounded in-memory cache
keyed by the waveform's bytes, because SFT with ``data.draw_cycle`` shows the same noisy crops
again every few epochs.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
CONTENT_ENCODERS = ("none", "whisper", "ssl")
CONTENT_FRAME_SECONDS = 0.02  # Whisper encoder frame, and the 320-sample hop of 16-kHz SSL models


class SSLEncoder:
    """Hidden states ``[frames, hidden]`` of a wav2vec2-style ``transformers`` speech encoder
    (WavLM, HuBERT, wav2vec 2.0, data2vec-audio: a CNN front end with ``conv_stride``) at
    ``hidden_states[layer]`` (0 = the transformer's input, the projected CNN features with
    the positional convolution added; -1 = the last layer), one utterance at a time so a frame
    never depends on its batch. Weights run in float32 whatever the checkpoint stores."""

    def __init__(self, model: str | None, layer: int = -1, device: str = "cpu") -> None:
        if not model:
            raise ValueError(
                "features.content: ssl needs features.content_model: a local folder written by "
                "save_pretrained, or a hub id such as microsoft/wavlm-large"
            )
        from transformers import AutoFeatureExtractor, AutoModel

        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(model)
            self.model = AutoModel.from_pretrained(model).float().eval().to(device)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"cannot load the content encoder {model!r} ({err}); features.content_model "
                "must be a local folder with config.json, preprocessor_config.json and weights "
                "(save_pretrained), or a hub id when online"
            ) from err
        self.rate = int(self.extractor.sampling_rate)
        strides = getattr(self.model.config, "conv_stride", None)
        inputs = getattr(self.extractor, "model_input_names", ["input_values"])
        if not strides or "input_values" not in inputs:
            raise ValueError(
                f"content encoder {model!r} ({type(self.model).__name__}) is not a wav2vec2-style "
                "model reading raw waveforms (no conv_stride / input_values); use WavLM, HuBERT, "
                "wav2vec 2.0 or data2vec-audio"
            )
        stride = math.prod(strides)
        if abs(stride / self.rate - CONTENT_FRAME_SECONDS) > 1e-9:
            raise ValueError(
                f"content encoder {model!r} gives one frame per {stride} samples at {self.rate} "
                f"Hz, not per {CONTENT_FRAME_SECONDS * 1000:g} ms"
            )
        n_layers = int(self.model.config.num_hidden_layers)
        if not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(f"features.content_layer {layer}: {model!r} has layers 0..{n_layers}")
        self.layer, self.device = layer, device
        self.name = f"{type(self.model).__name__} {model} (layer {layer})"
        width = self.model.config.hidden_size
        log.info("content features: %s, %d-dim, on %s", self.name, width, device)

    def encode(self, wavs: Sequence[np.ndarray], sr: int) -> list[np.ndarray]:
        """Float32 frames of each waveform (about one per 20 ms; the caller fits the count)."""
        import torch

        from sealign.audio.io import resample

        out = []
        for w in wavs:
            a = resample(np.asarray(w, dtype=np.float32).reshape(-1), sr, self.rate)
            # the CNN front end needs a receptive field's worth of samples (400 at 16 kHz)
            a = np.pad(a, (0, max(0, 400 - a.size)))
            x = self.extractor(a, sampling_rate=self.rate, return_tensors="pt").input_values
            with torch.inference_mode():
                hidden = self.model(x.to(self.device), output_hidden_states=True).hidden_states
            out.append(hidden[self.layer][0].float().cpu().numpy())
        return out


class ContentEncoder:
    """Content frames ``[ceil(n / token), dim]`` of 1-D waveforms from the encoder ``kind``
    (``whisper`` or ``ssl``), cached."""

    def __init__(
        self,
        model: str | None = None,
        threads: int = 1,
        cache_gb: float = 2.0,
        device: str = "cpu",
        kind: str = "whisper",
        layer: int = -1,
    ) -> None:
        if kind == "ssl":
            self.asr: Any = SSLEncoder(model, layer, device)
        elif kind == "whisper":
            from sealign.metrics.asr import WhisperASR

            # One CTranslate2 thread: on two, its OpenMP runtime halves the speed of torch's
            # two-thread kernels in the same process (docs/gspo_demo.md, "Why one thread per
            # metric").
            self.asr = WhisperASR(model=model, cpu_threads=threads, device=device)
        else:
            raise ValueError(f"content encoder must be one of {CONTENT_ENCODERS[1:]}, not {kind!r}")
        self.cache_bytes = int(cache_gb * 2**30)
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.asr.name

    def __call__(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """Float32 frames per waveform, ``ceil(len / (sample_rate · 0.02))`` of them."""
        keys = [hashlib.blake2b(np.ascontiguousarray(w, np.float32).tobytes(), digest_size=16)
                .digest() + int(sample_rate).to_bytes(4, "little") for w in wavs]  # fmt: skip
        out: list[np.ndarray | None] = [None] * len(wavs)
        with self._lock:
            for i, k in enumerate(keys):
                if k in self._cache:
                    self._cache.move_to_end(k)
                    out[i] = self._cache[k]
        todo = [i for i, o in enumerate(out) if o is None]
        if todo:
            encoded = self.asr.encode([wavs[i] for i in todo], sample_rate)
            token = sample_rate * CONTENT_FRAME_SECONDS
            for i, f in zip(todo, encoded, strict=True):
                n = max(1, int(np.ceil(len(wavs[i]) / token - 1e-9)))
                f = f[:n] if len(f) >= n else np.concatenate([f, np.repeat(f[-1:], n - len(f), 0)])
                out[i] = f.astype(np.float16)
                self._remember(keys[i], out[i])
        return [np.asarray(o, dtype=np.float32) for o in out]

    def _remember(self, key: bytes, value: np.ndarray) -> None:
        if value.nbytes > self.cache_bytes:
            return
        with self._lock:
            self._cache[key] = value
            self._held += value.nbytes
            while self._held > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._held -= old.nbytes


@functools.lru_cache(maxsize=4)
def content_encoder(
    model: str | None,
    threads: int,
    cache_gb: float,
    device: str = "cpu",
    kind: str = "whisper",
    layer: int = -1,
) -> ContentEncoder:
    """One shared encoder (and cache) per setting in a process."""
    return ContentEncoder(model, threads, cache_gb, device, kind, layer)


def encoder_for(fc: Any, policy_device: str) -> ContentEncoder:
    """The shared encoder of a :class:`~sealign.models.features.FeatureConfig`'s content
    settings for a policy on ``policy_device`` (Whisper when ``content`` is ``none``: the FM's
    representation alignment reads clean content without conditioning on it)."""
    kind = "whisper" if fc.content == "none" else fc.content
    threads = fc.content_threads
    if kind == "ssl":  # torch's own threads: content_threads only sets CTranslate2's
        where, threads = (policy_device if policy_device.startswith("cuda") else "cpu"), 1
    else:
        where = content_device(policy_device)
    return content_encoder(
        fc.content_model,
        threads,
        fc.content_cache_gb,
        where,
        kind,
        fc.content_layer,
    )


@functools.lru_cache(maxsize=8)
def content_device(policy_device: str) -> str:
    """Where the content encoder of a policy on ``policy_device`` runs: that GPU when
    CTranslate2 can use it, else the CPU (logged once; the features are the same up to rounding)."""
    from sealign.utils.device import ct2_device

    if not policy_device.startswith("cuda"):
        return "cpu"
    try:
        kind, index = ct2_device(policy_device)
    except ValueError as err:
        log.warning("content features on the CPU: %s", err)
        return "cpu"
    return f"{kind}:{index}"
