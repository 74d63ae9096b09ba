"""Word and character error rate of an ASR transcript of the output against the utterance's text.

The recognizer is offline by default: Whisper-base (CTranslate2, float32, greedy, English, short
padding; see :class:`sealign.metrics.asr.WhisperASR`); ``asr="pocketsphinx"`` selects PocketSphinx.
Reference text and transcript are both normalized with
:func:`sealign.metrics.text_norm.normalize_text`.

With ``transcribe_reference_if_no_text=True`` an utterance without text but with a reference
signal is scored against the ASR transcript of the reference (and that transcript is cached by the
reference's content, since many outputs usually share one reference).

Each result's ``details`` hold the text scored against (``text``) and the ASR transcript
(``transcript``). Each instance carries its own ``info`` whose description names the ASR model;
:meth:`settings` lists everything that changes the numbers.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import numpy as np

from sealign.metrics.asr import ASR, METRIC_COMPUTE_TYPE, build_asr
from sealign.metrics.base import Metric, MetricInfo, Utterance
from sealign.metrics.text_norm import (
    NORMALIZER_VERSION,
    EditCounts,
    char_counts,
    normalize_text,
    word_counts,
)

_INF = float("inf")
_REF_CACHE_SIZE = 512


def _has_words(text: str | None) -> bool:
    """True if ``text`` has a word left after normalization (not only punctuation)."""
    return bool(text and normalize_text(text).strip())


class _ASRErrorRate(Metric):
    """Shared implementation of :class:`WER` and :class:`CER`."""

    info: MetricInfo
    _key: str

    def __init__(
        self,
        asr: str = "whisper",
        model: str | None = None,
        num_threads: int = 2,
        transcribe_reference_if_no_text: bool = False,
        compute_type: str = METRIC_COMPUTE_TYPE,
        beam_size: int = 1,
        pad_to_30s: bool = False,
        batch_size: int = 8,
        device: str = "cpu",
        **asr_options: Any,
    ) -> None:
        """``asr``: ``"whisper"`` or ``"pocketsphinx"``; ``model``: a local CTranslate2 Whisper
        directory or model name (default: offline Whisper-base), or a PocketSphinx acoustic-model
        directory. ``compute_type``, ``beam_size``, ``pad_to_30s``, ``batch_size``, ``device``
        and any extra ``asr_options`` go to :class:`~sealign.metrics.asr.WhisperASR`."""
        super().__init__(num_threads=num_threads, device=device)
        self.asr_kind = asr
        self.transcribe_reference_if_no_text = transcribe_reference_if_no_text
        self._ref_cache: OrderedDict[str, str] = OrderedDict()  # reference hash → transcript
        if asr == "whisper":
            asr_options = dict(
                compute_type=compute_type,
                beam_size=beam_size,
                pad_to_30s=pad_to_30s,
                batch_size=batch_size,
                device=device,
                **asr_options,
            )
        elif self.device != "cpu":
            raise ValueError(f"device: {asr} runs on the CPU only, not on {device!r}")
        self.asr: ASR = build_asr(asr, model=model, num_threads=num_threads, **asr_options)
        base = type(self).info
        self.info = replace(base, description=f"{base.description} ASR: {self.asr.describe()}.")

    def describe(self) -> str:
        """Metric name and the ASR model behind it."""
        return f"{self.info.name} ({self.asr.describe()})"

    def settings(self) -> dict[str, Any]:
        return {
            "asr": self.asr_kind,
            **self.asr.settings(),
            "normalizer": NORMALIZER_VERSION,
            "transcribe_reference_if_no_text": self.transcribe_reference_if_no_text,
        }

    def load(self) -> None:
        self.asr.load()

    def inputs_used(self) -> set[str]:
        # the reference's transcript is the text when there is none
        used = super().inputs_used()
        return used | {"reference"} if self.transcribe_reference_if_no_text else used

    def missing_requirement(self, utt: Utterance) -> str | None:
        if _has_words(utt.text):
            return None
        if self.transcribe_reference_if_no_text:
            return None if utt.reference is not None else "no text and no reference"
        # an error rate against no words would count every recognized word as an error
        return "no text" if not (utt.text and utt.text.strip()) else "text has no words"

    def _counts(self, ref: str, hyp: str) -> EditCounts:
        raise NotImplementedError

    def _score(self, utts: list[Utterance]) -> list[dict[str, Any]]:
        sr = self.info.sample_rate
        refs: list[str | None] = [u.text if _has_words(u.text) else None for u in utts]
        pending: dict[str, list[int]] = {}
        ref_wavs: dict[str, np.ndarray] = {}
        for k, u in enumerate(utts):
            if refs[k] is None:
                if u.reference is None:  # excluded by missing_requirement
                    raise ValueError("utterance has neither text nor reference")
                key = hashlib.blake2b(
                    np.ascontiguousarray(u.reference, np.float32).tobytes()
                ).hexdigest()
                cached = self._ref_cache.get(key)
                if cached is not None:
                    refs[k] = cached
                else:
                    pending.setdefault(key, []).append(k)
                    ref_wavs[key] = u.reference
        keys = list(pending)
        texts = self.asr.transcribe([u.audio for u in utts] + [ref_wavs[h] for h in keys], sr)
        hyps, ref_texts = texts[: len(utts)], texts[len(utts) :]
        for key, text in zip(keys, ref_texts, strict=True):
            self._remember(key, text)
            for k in pending[key]:
                refs[k] = text
        return [
            {
                self._key: self._counts(r or "", h).rate,
                "details": {"text": r or "", "transcript": h},
            }
            for r, h in zip(refs, hyps, strict=True)
        ]

    def _remember(self, key: str, text: str) -> None:
        cache = self._ref_cache
        cache[key] = text
        cache.move_to_end(key)
        while len(cache) > _REF_CACHE_SIZE:
            cache.popitem(last=False)


class WER(_ASRErrorRate):
    """Word error rate (lower is better; can exceed 1 when the transcript has many insertions)."""

    info = MetricInfo(
        name="wer",
        outputs=("wer",),
        higher_is_better=(False,),
        ranges=((0.0, _INF),),
        needs_text=True,
        description="Word error rate of an ASR transcript against the text (normalized).",
    )
    _key = "wer"

    def _counts(self, ref: str, hyp: str) -> EditCounts:
        return word_counts(ref, hyp)


class CER(_ASRErrorRate):
    """Character error rate (lower is better; spaces between words count as characters)."""

    info = MetricInfo(
        name="cer",
        outputs=("cer",),
        higher_is_better=(False,),
        ranges=((0.0, _INF),),
        needs_text=True,
        description="Character error rate of an ASR transcript against the text (normalized).",
    )
    _key = "cer"

    def _counts(self, ref: str, hyp: str) -> EditCounts:
        return char_counts(ref, hyp)
