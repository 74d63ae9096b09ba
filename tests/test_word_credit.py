"""Word-level credit for the WER reward term: alignment, hits, spans and per-step advantages."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SENTENCES
from sealign.metrics.base import Utterance
from sealign.metrics.registry import build_metric
from sealign.metrics.text_norm import edit_alignment, edit_counts, normalize_text
from sealign.rewards import CompositeReward, RewardConfig, group_advantages
from sealign.rewards.word_credit import (
    WordCredit,
    WordSpans,
    normalized_spans,
    step_advantages,
    word_hits,
)


def test_edit_alignment_is_a_minimal_alignment_consistent_with_the_counts():
    rng = np.random.default_rng(0)
    for _ in range(300):
        ref = list(rng.choice(list("abc"), rng.integers(0, 7)))
        hyp = list(rng.choice(list("abc"), rng.integers(0, 7)))
        steps = edit_alignment(ref, hyp)
        assert [i for _, i, _ in steps if i is not None] == list(range(len(ref)))
        assert [j for _, _, j in steps if j is not None] == list(range(len(hyp)))
        for op, i, j in steps:
            if op in "=S":
                assert (ref[i] == hyp[j]) == (op == "=")
        c = edit_counts(ref, hyp)
        assert c.errors == sum(op != "=" for op, _, _ in steps)
    assert edit_alignment(list("abc"), list("axc")) == [("=", 0, 0), ("S", 1, 1), ("=", 2, 2)]


def test_word_hits_charge_substitutions_deletions_and_insertions():
    words = ["the", "cat", "sat", "on", "the", "mat"]
    assert word_hits(words, "The cat sat on the mat.").tolist() == [1, 1, 1, 1, 1, 1]
    assert word_hits(words, "the cat on a mat").tolist() == [1, 1, 0, 1, 0, 1]
    # a word inserted after "mat" is charged to "mat", one before everything to "the"
    assert word_hits(words, "the cat sat on the mat again").tolist() == [1, 1, 1, 1, 1, 0]
    assert word_hits(words, "so the cat sat on the mat").tolist() == [0, 1, 1, 1, 1, 1]
    assert word_hits(words, "").tolist() == [0] * 6
    assert word_hits([], "anything").tolist() == []


def test_normalized_spans_follow_the_normalizer():
    text = "Dr. Smith paid $5, at noon."
    aligned = [(" Dr.", 0.0, 0.3), (" Smith", 0.3, 0.6), (" paid", 0.6, 0.9), (" $5,", 0.9, 1.3),
               (" at", 1.3, 1.4), (" noon.", 1.4, 2.0)]  # fmt: skip
    s = normalized_spans(text, aligned)
    assert s.words == normalize_text(text).split()
    assert s.words[3:5] == ["five", "dollars"]  # one aligned word, two normalized ones
    assert np.allclose(s.starts, [0, 0.3, 0.6, 0.9, 1.1, 1.3, 1.4])
    assert np.allclose(s.ends, [0.3, 0.6, 0.9, 1.1, 1.3, 1.4, 2.0])
    # a word the alignment lacks takes the gap between its neighbours
    s = normalized_spans("one two three", [(" one", 0.0, 0.5), (" three", 1.0, 1.5)])
    assert s.words == ["one", "two", "three"]
    assert np.allclose(s.starts, [0, 0.5, 1.0]) and np.allclose(s.ends, [0.5, 1.0, 1.5])


def _credit(spans: WordSpans, *hits: list[int]) -> list[WordCredit]:
    return [WordCredit(spans, np.array(h, dtype=float)) for h in hits]


def test_each_step_gets_the_advantage_of_its_own_word():
    spans = WordSpans(["a", "b"], np.array([0.0, 0.4]), np.array([0.4, 0.8]))
    # one group of three; component 0 = a MOS-like term with spread, component 1 = WER
    values = np.array([[0.2, 0.5], [0.4, 0.5], [0.6, 0.0]])
    credit = _credit(spans, [1, 0], [0, 0], [1, 1])
    w = np.array([1.0, 1.0])
    adv, spread = step_advantages(
        values, np.zeros(3, int), w, "normalize_then_sum", np.ones(3, bool), 1, credit, 10, 0.1
    )
    assert adv.shape == (3, 10) and spread == 1.0
    word_a = group_advantages(np.c_[values[:, 0], [1, 0, 1]], np.zeros(3), w, "normalize_then_sum")
    word_b = group_advantages(np.c_[values[:, 0], [0, 0, 1]], np.zeros(3), w, "normalize_then_sum")
    gap = group_advantages(np.c_[values[:, 0], [np.nan] * 3], np.zeros(3), w, "normalize_then_sum")
    assert np.allclose(adv[:, :4], word_a.advantages[:, None])  # steps centred in [0, 0.4)
    assert np.allclose(adv[:, 4:8], word_b.advantages[:, None])
    assert np.allclose(adv[:, 8:], gap.advantages[:, None])  # after the last word
    # the second sample missed "a" where the others got it: its steps there rank lowest
    assert adv[1, 0] < adv[0, 0] and adv[1, 0] < adv[2, 0]


def test_word_credit_falls_back_per_sample_and_per_group():
    spans = WordSpans(["a"], np.array([0.0]), np.array([1.0]))
    other = WordSpans(["a"], np.array([0.0]), np.array([1.0]))
    values = np.array([[0.1, 1.0], [0.3, 0.0], [0.2, 0.0], [0.5, 1.0], [0.6, 0.0], [0.9, 0.0]])
    group = np.array([0, 0, 0, 1, 1, 1])
    w = np.array([1.0, 2.0])
    credit = [*_credit(spans, [1], [1]), None, *_credit(spans, [1]), *_credit(other, [0], [0])]
    valid = np.array([True, True, True, True, True, False])
    adv, spread = step_advantages(values, group, w, "sum_then_normalize", valid, 1, credit, 5, 0.2)
    # group 0: the sample without credit keeps its sequence-level WER value (0.0) in word steps
    expect = group_advantages(np.c_[values[:3, 0], [1, 1, 0]], np.zeros(3), w)
    assert np.allclose(adv[:3], expect.advantages[:, None])
    # group 1: two different spans objects -> sequence-level credit; invalid sample -> 0
    seq = group_advantages(values[3:5], np.zeros(2), w)
    assert np.allclose(adv[3:5], seq.advantages[:, None]) and not adv[5].any()
    assert spread == 0.0


class _FakeASR:
    """Transcribes a clip whose first sample is k / 10 as transcript k; aligns words evenly."""

    name = "fake"

    def __init__(self, transcripts: dict[int, str]) -> None:
        self.transcripts = transcripts
        self.aligned = 0

    def transcribe(self, wavs, sr):
        return [self.transcripts[int(round(w[0] * 10))] for w in wavs]

    def word_times(self, wav, sr, text):
        self.aligned += 1
        words = text.split()
        d = wav.size / sr / len(words)
        return [(" " + t, k * d, (k + 1) * d) for k, t in enumerate(words)]

    def settings(self):
        return {"asr_model": "fake"}

    def describe(self):
        return "fake"

    def load(self):
        pass


def test_composite_reward_returns_word_credit_without_caching_transcripts(tmp_path):
    wer = build_metric("wer", asr="pocketsphinx")
    wer.asr = _FakeASR({1: "the cat sat", 2: "the bat sat", 3: "a cat"})
    comps = [{"metric": "wer", "credit": "word"}]
    reward = CompositeReward(
        RewardConfig(components=comps, cache=str(tmp_path / "c.sqlite")), metrics={"wer": wer}
    )
    ref = np.zeros(16000, np.float32)
    utts = [
        Utterance(f"u#{k}", np.full(16000, k / 10, np.float32), 16000, ref, "The cat sat.")
        for k in (1, 2, 3)
    ]
    for _ in range(2):  # the second time every score is in the cache but credit still comes
        batch = reward(utts)
        assert [c.hits.tolist() for c in batch.word_credit] == [[1, 1, 1], [1, 0, 1], [0, 1, 0]]
        assert np.allclose(batch.values[:, 0], [1, 2 / 3, 1 / 3])
    assert wer.asr.aligned == 1  # one reference, aligned once
    s = batch.word_credit[0].spans
    assert s.words == ["the", "cat", "sat"] and np.allclose(s.ends, [1 / 3, 2 / 3, 1])
    reward.close()


@pytest.mark.parametrize(
    "comps, match",
    [
        ([{"metric": "dnsmos", "credit": "word"}], "wer metric only"),
        ([{"metric": "wer", "credit": "token"}], "credit 'token' unknown"),
        ([{"metric": "wer", "credit": "word"}, {"metric": "wer", "credit": "word", "name": "w2"}],
         "at most one"),
    ],
)  # fmt: skip
def test_word_credit_config_errors(comps, match):
    with pytest.raises(ValueError, match=match):
        RewardConfig(components=comps)


def test_pocketsphinx_cannot_give_word_credit():
    cfg = RewardConfig(components=[{"metric": "wer", "credit": "word"}],
                       metric_options={"wer": {"asr": "pocketsphinx"}})  # fmt: skip
    with pytest.raises(ValueError, match="aligns words to audio"):
        CompositeReward(cfg, num_threads=1)


def test_whisper_aligns_the_reference_text_in_order(speech):
    wer = build_metric("wer", num_threads=1)
    wav = speech(0)
    aligned = wer.asr.word_times(wav, 16000, SENTENCES[0])
    spans = normalized_spans(SENTENCES[0], aligned)
    assert spans.words == normalize_text(SENTENCES[0]).split()
    assert np.all(np.diff(spans.starts) >= 0) and np.all(spans.ends >= spans.starts)
    assert spans.ends[-1] <= wav.size / 16000 + 0.05
    # the sentence is spoken at an even pace: "fox" (4th of 9 words) is in the first half
    fox = spans.words.index("fox")
    assert spans.starts[fox] < 0.5 * wav.size / 16000 < spans.starts[-1]


def test_ar_steps_cover_the_input_at_step_seconds(tiny_setup, speech):
    import torch

    from sealign.models.registry import load_policy

    policy = load_policy(tiny_setup / "base")
    wav = speech(1)[: 16000 + 123]  # 1.0077 s
    rollout = policy.sample(policy.condition([wav]), generator=torch.Generator().manual_seed(0))
    steps = int(rollout.mask.sum())
    assert steps == rollout.logp.shape[1]
    assert (steps - 1) * policy.step_seconds < wav.size / 16000 <= steps * policy.step_seconds
    assert policy.decode(rollout)[0].size == wav.size
