"""Content features of the noisy input: Whisper encoder frames, one per 20-ms codec frame.

Generative SE models at small scale render clean-sounding speech but lose words: the content has
to be inferred from noisy, reverberant log-mels. Speech-LM enhancers (GenSE, LLaSE-G1, SELM)
condition on a noise-robust speech encoder instead. Here the encoder is Whisper's (default: the
offline Whisper-base that WER uses, int8): its 50-Hz frames line up with a 50-Hz codec frame by
frame. Features are rounded to float16 (cached or not, so a cache never changes a result) and
kept in a bounded in-memory cache keyed by the waveform's bytes, because SFT with
``data.draw_cycle`` shows the same noisy crops again every few epochs. The encoder runs on the
policy's GPU when CTranslate2 can use it (:func:`content_device`), else on the CPU.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)
CONTENT_ENCODERS = ("none", "whisper")
CONTENT_FRAME_SECONDS = 0.02  # Whisper encoder frame


class ContentEncoder:
    """Whisper encoder frames ``[ceil(n / token), d_model]`` of 1-D waveforms, cached."""

    def __init__(
        self,
        model: str | None = None,
        threads: int = 1,
        cache_gb: float = 2.0,
        device: str = "cpu",
    ) -> None:
        from sealign.metrics.asr import WhisperASR

        # One CTranslate2 thread: on two, its OpenMP runtime halves the speed of torch's
        # two-thread kernels in the same process (docs/gspo_demo.md, "Why one thread per metric").
        self.asr = WhisperASR(model=model, cpu_threads=threads, device=device)
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
    model: str | None, threads: int, cache_gb: float, device: str = "cpu"
) -> ContentEncoder:
    """One shared encoder (and cache) per setting in a process."""
    return ContentEncoder(model, threads, cache_gb, device)


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
