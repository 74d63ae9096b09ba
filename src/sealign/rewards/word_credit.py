"""Word-level credit for the WER term of the reward (``credit: word`` on a reward component).

A single advantage per output cannot say which frames lost a word: on the shipped AR base a
sample's mean token log-prob correlates with its ``1 - WER`` at Spearman +0.45 across inputs
but only +0.05 within a group (``benchmarks/reward_vs_logprob.py``), so the sequence-level WER
advantage is mostly noise for the frames it is spread over. With word credit:

1. each input's clean reference is force-aligned to its text once (Whisper's alignment heads,
   :meth:`~sealign.metrics.asr.WhisperASR.word_times`; cached), giving every normalized
   reference word a time span. An enhancement model keeps the input's timing, so the outputs
   of a group share these spans;
2. each output's transcript is aligned to the text by edit distance: a reference word is a hit
   when it was recognized; a substitution or deletion is a miss, and an inserted word makes the
   reference word before it a miss (the first word, for insertions before any);
3. each rollout step inside a word's span takes that word's hit (1 or 0) as its WER reward
   instead of the output's ``1 - WER``; steps outside every word take no WER term (not
   applicable); the configured group aggregation then runs once per word (and once for the
   gaps), so each step gets the advantage of its own word (:func:`step_advantages`).

This needs a policy whose rollout steps run along time (``step_seconds``: the AR family) and a
loss with per-step advantages (``gspo_token`` or ``grpo``). On the demo it did not move WER
either: one rollout batch's gradient is mostly noise with either credit
(``benchmarks/reward_gradient_snr.py``; ``docs/gspo_demo.md``, "Word credit for the WER term").
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from sealign.metrics.base import Utterance
from sealign.metrics.text_norm import edit_alignment, normalize_text
from sealign.rewards.advantages import group_advantages

log = logging.getLogger(__name__)

_CACHE_SIZE = 4096


@dataclass
class WordSpans:
    """Normalized reference words and their ``[start, end)`` times in seconds."""

    words: list[str]
    starts: np.ndarray
    ends: np.ndarray


@dataclass
class WordCredit:
    """The reference words of one output's input and whether the output got each right."""

    spans: WordSpans
    hits: np.ndarray  # [W] 1.0 = recognized, 0.0 = missed


def normalized_spans(text: str, aligned: list[tuple[str, float, float]]) -> WordSpans:
    """Spans of the words of ``normalize_text(text)`` from a forced alignment of ``text``.

    Each aligned word is normalized on its own (``"Dr."`` → ``"doctor"``, ``"3"`` → ``"three"``,
    punctuation → nothing) and its span shared evenly by the words it yields; where normalizing
    word by word differs from normalizing the whole text, words are matched by edit distance and
    an unmatched reference word takes the gap between its neighbours' spans.
    """
    words = normalize_text(text).split()
    pieces: list[tuple[str, float, float]] = []
    for raw, start, end in aligned:
        parts = normalize_text(raw).split()
        step = (end - start) / max(1, len(parts))
        pieces += [(p, start + k * step, start + (k + 1) * step) for k, p in enumerate(parts)]
    starts = np.full(len(words), np.nan)
    ends = np.full(len(words), np.nan)
    for _, i, j in edit_alignment(words, [p[0] for p in pieces]):
        if i is not None and j is not None:
            starts[i], ends[i] = pieces[j][1], pieces[j][2]
    last = 0.0
    for i in range(len(words)):  # unmatched: from the previous word's end ...
        if np.isnan(starts[i]):
            starts[i] = last
        last = ends[i] if np.isfinite(ends[i]) else starts[i]
    nxt = last
    for i in reversed(range(len(words))):  # ... to the next word's start
        if np.isnan(ends[i]):
            ends[i] = max(starts[i], nxt)
        nxt = starts[i]
    return WordSpans(words, starts, ends)


def word_hits(words: list[str], transcript: str) -> np.ndarray:
    """1.0 for each reference word (normalized) the transcript got right, else 0.0 (see the
    module doc for how substitutions, deletions and insertions are charged)."""
    hits = np.zeros(len(words))
    charged: list[int] = []  # reference words an insertion is charged to
    last = 0
    for op, i, _ in edit_alignment(words, normalize_text(transcript).split()):
        if i is None:
            charged.append(last)
            continue
        hits[i] = float(op == "=")
        last = i
    if words:
        hits[charged] = 0.0
    return hits


class ReferenceAligner:
    """Word spans of each utterance's clean reference, aligned to its text by an ASR with a
    ``word_times(wav, sr, text)`` method (Whisper); cached by reference content and text."""

    def __init__(self, asr: object) -> None:
        if not callable(getattr(asr, "word_times", None)):
            raise ValueError(
                f"word credit needs an ASR that aligns words to audio (Whisper); "
                f"{type(asr).__name__} cannot"
            )
        self.asr = asr
        self._cache: OrderedDict[str, WordSpans] = OrderedDict()

    def __call__(self, utt: Utterance) -> WordSpans | None:
        """Spans of ``utt.text`` in ``utt.reference`` (None without either, or if it fails)."""
        if utt.reference is None or not (utt.text and utt.text.strip()):
            return None
        h = hashlib.blake2b(np.ascontiguousarray(utt.reference, np.float32).tobytes())
        h.update(utt.text.encode())
        key = f"{utt.sample_rate}:{h.hexdigest()}"
        spans = self._cache.get(key)
        if spans is None:
            try:
                aligned = self.asr.word_times(utt.reference, utt.sample_rate, utt.text)  # type: ignore[attr-defined]
            except Exception as err:  # noqa: BLE001 - fall back to sequence credit for it
                log.warning("cannot align the reference of %s to its text: %s", utt.id, err)
                return None
            spans = normalized_spans(utt.text, aligned)
            self._cache[key] = spans
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return spans


def step_advantages(
    values: np.ndarray,
    group: np.ndarray,
    weights: np.ndarray,
    aggregation: str,
    valid: np.ndarray,
    column: int,
    credit: list[WordCredit | None],
    num_steps: int,
    step_seconds: float,
) -> tuple[np.ndarray, float]:
    """Per-step advantages ``[N, num_steps]`` with word credit for component ``column`` (see
    the module doc), and the fraction of (group, word) pairs whose hits differ within the
    group (the words that carry a learning signal).

    A sample without credit (no transcript or no alignment) keeps its sequence-level value of
    the component on every step; invalid samples get 0. A group whose outputs were aligned to
    different spans (different references) falls back to sequence-level credit."""
    n = values.shape[0]
    adv = np.zeros((n, num_steps))
    centres = (np.arange(num_steps) + 0.5) * step_seconds
    spread, pairs = 0, 0
    for g in np.unique(group):
        idx = np.flatnonzero((group == g) & valid)
        if idx.size == 0:
            continue
        own = [credit[i] for i in idx]
        spans = next((c.spans for c in own if c is not None), None)
        if spans is not None and any(c is not None and c.spans is not spans for c in own):
            spans = None
        vals = values[idx]
        segments: list[tuple[np.ndarray, np.ndarray]] = []  # (step mask, WER column)
        inside = np.zeros(num_steps, dtype=bool)
        if spans is not None:
            for w in range(len(spans.words)):
                steps = (centres >= spans.starts[w]) & (centres < spans.ends[w]) & ~inside
                col = np.array(
                    [vals[k, column] if c is None else c.hits[w] for k, c in enumerate(own)]
                )
                hit = col[[c is not None for c in own]]
                pairs += 1
                spread += bool(hit.size and hit.max() != hit.min())
                if steps.any():
                    segments.append((steps, col))
                    inside |= steps
        gap = np.array([np.nan if c is not None else vals[k, column] for k, c in enumerate(own)])
        if spans is None:
            gap = vals[:, column]
        segments.append((~inside, gap))
        for steps, col in segments:
            v = vals.copy()
            v[:, column] = col
            a = group_advantages(v, np.zeros(idx.size, dtype=int), weights, aggregation)
            adv[np.ix_(idx, np.flatnonzero(steps))] = a.advantages[:, None]
    return adv, spread / pairs if pairs else 0.0
