"""Levenshtein phoneme similarity (LPS; Pirklbauer et al. 2023), as the URGENT challenges score it.

A CTC phoneme recognizer transcribes both the output and its clean reference (greedy: the
argmax token per frame, repeats merged, blanks dropped, phone delimiters removed), and

    LPS = 1 - levenshtein(output phonemes, reference phonemes) / len(reference phonemes)

over the characters of the two phoneme strings. 1 = the same phonemes; it falls below 0 when
the output has more errors than the reference has phonemes. Unlike WER it needs no transcript and
no language model, and it judges pronunciation rather than words.

The recognizer is any ``transformers`` CTC model with its tokenizer and feature extractor, from a
local ``save_pretrained`` folder or a hub id: by default ``facebook/wav2vec2-lv-60-espeak-cv-ft``,
the one URGENT uses (numbers are comparable to theirs only with it). Each utterance is recognized
alone (a result never depends on its batch), in 30-s pieces when longer, and reference
transcripts are cached by content, since many outputs (a GSPO group, the models of an
evaluation) share one reference.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from sealign.audio.io import resample
from sealign.metrics.base import (
    ATTENTION_MAX_SECONDS,
    Metric,
    MetricInfo,
    MetricUnavailable,
    Utterance,
    checked_max_seconds,
)
from sealign.metrics.text_norm import edit_counts
from sealign.utils.device import check_device
from sealign.utils.threads import torch_threads

DEFAULT_MODEL = "facebook/wav2vec2-lv-60-espeak-cv-ft"
_MIN_SAMPLES = 400  # the wav2vec2 CNN front end's receptive field at 16 kHz
_REF_CACHE_SIZE = 512
_CHUNK_SECONDS = 30.0


def phoneme_similarity(output: str, reference: str) -> float:
    """``1 - edit distance / len(reference)`` over the characters of two phoneme strings
    (spaces ignored). Raises :class:`ValueError` for an empty reference (LPS is undefined)."""
    out, ref = output.replace(" ", ""), reference.replace(" ", "")
    if not ref:
        raise ValueError("no phonemes recognized in the reference: LPS is undefined")
    return 1.0 - edit_counts(list(ref), list(out)).errors / len(ref)


class PhonemeSimilarity(Metric):
    """Levenshtein phoneme similarity of the output to its clean reference (see module doc)."""

    info = MetricInfo(
        name="lps",
        outputs=("lps",),
        higher_is_better=(True,),
        ranges=((float("-inf"), 1.0),),
        sample_rate=16000,
        needs_reference=True,
        description="Levenshtein phoneme similarity to the reference (URGENT's LPS; a CTC "
        f"phoneme recognizer, {DEFAULT_MODEL} unless model= is given)",
        user_weights="model",
    )

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        num_threads: int = 2,
        device: str = "cpu",
        max_seconds: float | None = ATTENTION_MAX_SECONDS,
    ):
        super().__init__(num_threads, device)
        check_device(device)
        self.max_seconds = checked_max_seconds(max_seconds, "lps")
        if not model:
            raise ValueError("lps: model must be a local folder or a hub id")
        self.model = str(model)
        self._net: Any = None
        self._ref_cache: OrderedDict[str, str] = OrderedDict()
        self._settings: dict[str, Any] | None = None

    def settings(self) -> dict:
        """The model, and for a local folder its files (name, size, modification time): new
        weights under the same path must not reuse cached scores."""
        if self._settings is None:
            folder = Path(self.model).expanduser()
            if not folder.is_dir():
                self._settings = {"model": self.model}  # a hub id: its revision is the cache's
            else:
                h = hashlib.sha256()
                for f in sorted(p for p in folder.rglob("*") if p.is_file()):
                    st = f.stat()
                    h.update(f"{f.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                self._settings = {"model": folder.name, "files": h.hexdigest()[:16]}
        return dict(self._settings)

    def load(self) -> None:
        if self._net is not None:
            return
        from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

        try:
            with torch_threads(self.num_threads):
                self._extractor = AutoFeatureExtractor.from_pretrained(self.model)
                self._tokenizer = AutoTokenizer.from_pretrained(self.model)
                net = AutoModelForCTC.from_pretrained(self.model)
        except (OSError, ValueError, TypeError) as err:  # TypeError: no tokenizer files
            raise MetricUnavailable(
                f"lps: cannot load the phoneme recognizer {self.model!r} ({err}). Download "
                f"{DEFAULT_MODEL} (or another CTC model with its tokenizer and feature extractor) "
                "where you have internet, e.g. `hf download "
                f"{DEFAULT_MODEL} --local-dir DIR`, then pass metric option model=DIR"
            ) from err
        self._net = net.float().eval().to(self.device)

    def phonemes(self, audio: np.ndarray) -> str:
        """The recognizer's greedy phoneme string of 16-kHz ``audio``; audio longer than
        ``_CHUNK_SECONDS`` is recognized in equal pieces (self-attention over a whole long
        recording would need memory quadratic in its length) whose strings are joined."""
        self.load()
        a = np.asarray(audio, dtype=np.float32).reshape(-1)
        pieces = np.array_split(a, max(1, int(np.ceil(a.size / (_CHUNK_SECONDS * 16000)))))
        return " ".join(t for t in map(self._recognize, pieces) if t)

    def _recognize(self, a: np.ndarray) -> str:
        import torch

        a = np.pad(a, (0, max(0, _MIN_SAMPLES - a.size)))
        x = self._extractor(a, sampling_rate=16000, return_tensors="pt").input_values
        with torch_threads(self.num_threads), torch.inference_mode():
            logits = self._net(x.to(self.device)).logits
        return self._tokenizer.batch_decode(logits.argmax(-1).cpu())[0]

    def _reference_phonemes(self, ref: np.ndarray) -> str:
        key = hashlib.sha1(np.ascontiguousarray(ref, dtype=np.float32).tobytes()).hexdigest()
        if key in self._ref_cache:
            self._ref_cache.move_to_end(key)
            return self._ref_cache[key]
        text = self._ref_cache[key] = self.phonemes(ref)
        if len(self._ref_cache) > _REF_CACHE_SIZE:
            self._ref_cache.popitem(last=False)
        return text

    def missing_requirement(self, utt: Utterance) -> str | None:
        reason = super().missing_requirement(utt)
        if reason is None:
            ref = resample(utt.reference, utt.sample_rate, 16000)
            if not self._reference_phonemes(ref).replace(" ", ""):
                return "no phonemes recognized in the reference (LPS is undefined)"
        return reason

    def _score(self, utts: list[Utterance]) -> list[dict[str, Any]]:
        out = []
        for u in utts:
            hyp, ref = self.phonemes(u.audio), self._reference_phonemes(u.reference)
            out.append(
                {
                    "lps": phoneme_similarity(hyp, ref),
                    "details": {"phonemes": hyp, "reference": ref},
                }
            )
        return out
