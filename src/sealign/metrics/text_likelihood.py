"""How likely Whisper finds the utterance's text given the output: a smooth intelligibility score.

WER counts whole-word errors of one greedy transcript, so two outputs that Whisper reads with
different confidence often get the same WER, and a word flips between right and wrong on small
changes. The teacher-forced probability of the reference text moves with every token instead:
``text_prob`` is the mean per-token probability of ``" " + text`` (Whisper's tokenizer, the
text as given) after the transcription prompt, ``text_logprob`` the mean per-token
log-probability. Both are higher for more intelligible speech. The ASR model and its padding are
those of :class:`sealign.metrics.asr.WhisperASR` (default: offline Whisper-base, float32).

``asr_confidence`` needs no text: the mean per-token probability of Whisper's own greedy
transcript (0 when it recognizes no words), for data without transcripts and for choosing among
outputs at inference (``sealign eval --best-of``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from sealign.metrics.asr import METRIC_COMPUTE_TYPE, WhisperASR
from sealign.metrics.base import Metric, MetricInfo, Utterance


class TextLikelihood(Metric):
    """Mean per-token probability and log-probability of the text under Whisper given the audio."""

    info = MetricInfo(
        name="text_likelihood",
        outputs=("text_prob", "text_logprob"),
        higher_is_better=(True, True),
        ranges=((0.0, 1.0), (-float("inf"), 0.0)),
        needs_text=True,
        description="Teacher-forced Whisper probability of the reference text given the audio.",
    )

    def __init__(
        self,
        model: str | None = None,
        num_threads: int = 2,
        compute_type: str = METRIC_COMPUTE_TYPE,
        batch_size: int = 8,
        device: str = "cpu",
        **asr_options: Any,
    ) -> None:
        """``model``: a local CTranslate2 Whisper directory or model name (default: offline
        Whisper-base); the other options go to :class:`~sealign.metrics.asr.WhisperASR`."""
        super().__init__(num_threads=num_threads, device=device)
        self.asr = WhisperASR(
            model=model,
            compute_type=compute_type,
            cpu_threads=num_threads,
            batch_size=batch_size,
            device=device,
            **asr_options,
        )
        base = type(self).info
        self.info = replace(base, description=f"{base.description} ASR: {self.asr.describe()}.")

    def describe(self) -> str:
        return f"{self.info.name} ({self.asr.describe()})"

    def settings(self) -> dict[str, Any]:
        # Decoding options do not change a teacher-forced score; the model and padding do.
        s = self.asr.settings()
        keep = ("asr_model", "compute_type", "language", "pad_to_30s", "tail_s", "bucket_s")
        return {k: s[k] for k in keep if k in s}

    def load(self) -> None:
        self.asr.load()

    def missing_requirement(self, utt: Utterance) -> str | None:
        reason = super().missing_requirement(utt)
        if reason is None and utt.audio.size * 16000 > self.asr.window_samples() * utt.sample_rate:
            return "longer than one Whisper window (30 s)"
        return reason

    def _score(self, utts: list[Utterance]) -> list[dict[str, Any]]:
        texts = [u.text or "" for u in utts]
        logps = self.asr.text_logprobs([u.audio for u in utts], self.info.sample_rate, texts)
        out: list[dict[str, Any]] = []
        for lp in logps:
            if lp.size == 0:
                raise ValueError("the text has no tokens")
            out.append({"text_prob": float(np.exp(lp).mean()), "text_logprob": float(lp.mean())})
        return out


class ASRConfidence(TextLikelihood):
    """Whisper's confidence in its own transcript: a reference-free intelligibility score."""

    info = MetricInfo(
        name="asr_confidence",
        outputs=("asr_confidence",),
        higher_is_better=(True,),
        ranges=((0.0, 1.0),),
        description=(
            "Mean per-token probability of Whisper's greedy transcript given the audio "
            "(0 when it recognizes no words); needs no reference or text."
        ),
    )

    def settings(self) -> dict[str, Any]:
        return self.asr.settings()  # the transcript depends on the decoding options too

    def _score(self, utts: list[Utterance]) -> list[dict[str, Any]]:
        audio = [u.audio for u in utts]
        hyps = self.asr.transcribe(audio, self.info.sample_rate)
        said = [k for k, h in enumerate(hyps) if h.split()]
        out = [{"asr_confidence": 0.0} for _ in utts]
        if said:
            logps = self.asr.text_logprobs(
                [audio[k] for k in said], self.info.sample_rate, [hyps[k] for k in said]
            )
            for k, lp in zip(said, logps, strict=True):
                out[k] = {"asr_confidence": float(np.exp(lp).mean()) if lp.size else 0.0}
        return out
