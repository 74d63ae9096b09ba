"""ASR-based metrics: offline Whisper assets, text normalization, edit distance, WER/CER."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import SENTENCES
from sealign.metrics import MetricUnavailable, Utterance, build_metric
from sealign.metrics.text_norm import (
    cer,
    char_counts,
    edit_counts,
    normalize_text,
    number_to_words,
    wer,
    word_counts,
)
from sealign.metrics.whisper_assets import (
    WHISPER_BASE_DIRNAME,
    WHISPER_BASE_SHA256,
    WhisperAssetError,
    default_whisper_dir,
    ensure_whisper_base,
    sha256_file,
)

# ---------------------------------------------------------------------------------------------
# Whisper assets


def _fake_parts(root: Path, a: bytes = b"first half|", b: bytes = b"second half") -> tuple:
    src1, src2 = root / "p1", root / "p2"
    src1.mkdir()
    src2.mkdir()
    (src1 / "model.bin.part1").write_bytes(a)
    (src2 / "model.bin.part2").write_bytes(b)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (src1 / name).write_text(f"{name} contents")
    return (src1, src2), hashlib.sha256(a + b).hexdigest()


def test_default_whisper_model_matches_pinned_sha256():
    d = ensure_whisper_base()
    assert d.name == WHISPER_BASE_DIRNAME
    assert sha256_file(d / "model.bin") == WHISPER_BASE_SHA256
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (d / name).is_file()
    assert ensure_whisper_base(verify=True) == d


def test_assembly_concatenates_parts_and_is_idempotent(tmp_path):
    sources, sha = _fake_parts(tmp_path)
    d = ensure_whisper_base(tmp_path / "cache", sources=sources, sha256=sha)
    assert (d / "model.bin").read_bytes() == b"first half|second half"
    assert (d / "vocabulary.txt").read_text() == "vocabulary.txt contents"
    before = (d / "model.bin").stat().st_mtime_ns
    assert ensure_whisper_base(tmp_path / "cache", sources=sources, sha256=sha) == d
    assert (d / "model.bin").stat().st_mtime_ns == before
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [WHISPER_BASE_DIRNAME]


def test_assembly_refuses_corrupt_parts_and_cleans_up(tmp_path):
    sources, _ = _fake_parts(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(WhisperAssetError, match="SHA-256"):
        ensure_whisper_base(cache, sources=sources, sha256=WHISPER_BASE_SHA256)
    assert list(cache.iterdir()) == []  # no target, no temporary directory left behind
    assert issubclass(WhisperAssetError, MetricUnavailable)


def test_assembly_is_safe_under_concurrent_callers(tmp_path):
    sources, sha = _fake_parts(tmp_path, a=b"x" * 300_000, b=b"y" * 300_000)
    cache = tmp_path / "cache"
    results: list[Path] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(ensure_whisper_base(cache, sources=sources, sha256=sha))
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert [p.name for p in cache.iterdir()] == [WHISPER_BASE_DIRNAME]
    assert sha256_file(results[0] / "model.bin") == sha


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SEALIGN_CACHE", str(tmp_path))
    assert default_whisper_dir() == tmp_path / WHISPER_BASE_DIRNAME


# ---------------------------------------------------------------------------------------------
# Text normalization and edit distance


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello,   World!", "hello world"),
        ("I have 42 apples.", "i have forty two apples"),
        ("It was 1984.", "it was nineteen eighty four"),
        ("in 2005 and 1905", "in two thousand five and nineteen oh five"),
        ("1,500 people", "one thousand five hundred people"),
        ("the 1st and 22nd and 103rd", "the first and twenty second and one hundred third"),
        ("3.5 percent", "three point five percent"),
        ("50% off", "fifty percent off"),
        ("$3.50", "three dollars fifty cents"),
        ("at 7:05", "at seven oh five"),
        ("the 1990s", "the nineteen nineties"),
        ("Mr. Smith's dog—isn't it “great”?", "mister smith's dog is not it great"),
        (
            "It's 5 o'clock, OK? We'll see; John's won't",
            "it is five o'clock okay we will see john's will not",
        ),
        ("$.99 and the 100,000th", "ninety nine cents and the one hundred thousandth"),
        ("rock & roll", "rock and roll"),
        ("Café", "cafe"),
        ("the neighbours' harbour", "the neighbors harbor"),
        ("twenty-one", "twenty one"),
        ("  ...  ", ""),
    ],
)
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(115) == "one hundred fifteen"
    assert number_to_words(2_000_017) == "two million seventeen"


def test_edit_counts():
    assert edit_counts([], []).errors == 0
    c = edit_counts(["a", "b", "c", "d"], ["a", "x", "c", "d", "e"])
    assert (c.substitutions, c.deletions, c.insertions, c.ref_len) == (1, 0, 1, 4)
    c = edit_counts(["a", "b", "c"], ["a", "c"])
    assert (c.substitutions, c.deletions, c.insertions) == (0, 1, 0)
    assert edit_counts(list("kitten"), list("sitting")).errors == 3
    assert edit_counts([], ["a", "b"]).rate == 2.0


def test_wer_and_cer():
    assert wer("The cat sat.", "the cat sat") == 0.0
    assert wer("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(1 / 6)
    assert wer("I have 42 apples", "I have forty-two apples") == 0.0
    assert wer("a b", "a b c d") == pytest.approx(1.0)  # insertions can push WER to 1 and beyond
    assert cer("abc", "abd") == pytest.approx(1 / 3)
    assert char_counts("ab cd", "abcd").deletions == 1  # the space is a character
    assert word_counts("A", "a", normalize=False).substitutions == 1


# ---------------------------------------------------------------------------------------------
# WER / CER metrics


@pytest.fixture(scope="module")
def wer_metric():
    m = build_metric("wer", num_threads=2)
    m.load()
    return m


def test_wer_info_names_the_asr_model(wer_metric):
    assert wer_metric.info.outputs == ("wer",)
    assert wer_metric.info.higher_is_better == (False,)
    assert "whisper-base" in wer_metric.describe()
    assert "whisper-base" in wer_metric.info.description
    s = wer_metric.settings()
    assert s["asr_model"].startswith("whisper-base@") and s["pad_to_30s"] is False


@pytest.mark.slow
def test_wer_clean_below_noisy(wer_metric, speech, noisy):
    clean = [Utterance(f"c{i}", speech(i), 16000, text=SENTENCES[i]) for i in range(4)]
    dirty = [
        Utterance(f"n{i}", noisy(speech(i), 0.0, seed=i), 16000, text=SENTENCES[i])
        for i in range(4)
    ]
    res = wer_metric(clean + dirty)
    assert all(r.ok for r in res)
    w = np.array([r.values["wer"] for r in res])
    assert w[:4].mean() < 0.25
    assert w[:4].mean() < w[4:].mean()


def test_wer_skips_without_text(wer_metric, speech):
    (r,) = wer_metric([Utterance("u", speech(0), 16000, reference=speech(0))])
    assert r.skipped == "no text"


@pytest.mark.slow
def test_wer_transcribes_reference_when_asked(speech):
    m = build_metric("wer", transcribe_reference_if_no_text=True)
    x = speech(1)
    a, b = m([Utterance("a", x, 16000, reference=x), Utterance("b", x, 16000)])
    assert a.values == {"wer": 0.0}  # same audio → same transcript
    assert b.skipped == "no text and no reference"
    assert m.settings()["transcribe_reference_if_no_text"] is True


@pytest.mark.slow
def test_cer_metric(speech):
    m = build_metric("cer")
    (r,) = m([Utterance("u", speech(3), 16000, text=SENTENCES[3])])
    assert r.ok and 0.0 <= r.values["cer"] < 0.2


@pytest.mark.slow
def test_short_padding_is_per_clip_and_matches_standard_padding(wer_metric, speech):
    asr = wer_metric.asr
    n = speech(0).size
    frames = asr.padded_frames(n)
    assert frames % 2 == 0 and n / 160 + asr.tail_s * 100 <= frames <= 3000
    assert build_metric("wer", pad_to_30s=True).asr.padded_frames(n) == 3000
    # Same clip alone or batched with a longer one: identical transcript.
    x, y = speech(3), np.concatenate([speech(1), speech(2)])
    alone = asr.transcribe([x], 16000)[0]
    assert asr.transcribe([y, x], 16000)[1] == alone
    standard = build_metric("wer", pad_to_30s=True).asr.transcribe([x], 16000)[0]
    assert wer(SENTENCES[3], alone) <= wer(SENTENCES[3], standard) + 0.1


@pytest.mark.slow
def test_pocketsphinx_transcribes_something(speech):
    m = build_metric("wer", asr="pocketsphinx")
    assert "pocketsphinx-en-us" in m.describe()
    (text,) = m.asr.transcribe([speech(0)], 16000)
    assert isinstance(text, str) and len(text.split()) >= 2
    (r,) = m([Utterance("u", speech(0), 16000, text=SENTENCES[0])])
    assert r.ok and r.values["wer"] >= 0.0


def test_unknown_whisper_model_is_unavailable(speech):
    m = build_metric("wer", model="no-such-whisper-model-xyz")
    with pytest.raises(MetricUnavailable, match="no-such-whisper-model-xyz"):
        m([Utterance("u", speech(0), 16000, text="x")])


def test_compression_ratio_flags_repetition_loops():
    from sealign.metrics.asr import compression_ratio

    once = "She reports that you did not call the dentist."
    assert compression_ratio(once) < 1.8
    assert compression_ratio(" ".join([once] * 3)) > 1.8
    assert compression_ratio("") == 0.0


def test_a_sentence_read_twice_is_decoded_again_with_the_30s_window(monkeypatch):
    from sealign.metrics.asr import _MAX_FRAMES, WhisperASR, compression_ratio, repeats_words

    twice = "Max and Beatrice worry that I am going to dust. Max and Beatrice worry that I am"
    assert compression_ratio(twice) < 1.8 and repeats_words(twice, 4)
    assert not repeats_words("I think that I think that the cat sat on the mat.", 4)
    assert not repeats_words("no no no no no", 4)  # overlapping runs are not a repeat

    asr = WhisperASR()
    asr._fw = object()  # nothing is loaded: _decode is replaced below
    calls = []

    def decode(wavs, frames):
        calls.append(frames)
        return ["Max and Beatrice worry." if frames == _MAX_FRAMES else twice for _ in wavs]

    monkeypatch.setattr(asr, "_decode", decode)
    clip = np.zeros(16000, np.float32)
    assert asr.transcribe([clip], 16000) == ["Max and Beatrice worry."]
    assert calls[-1] == _MAX_FRAMES and len(calls) == 2
    asr.fallback_repeat_words = None  # off: the looping transcript stands
    assert asr.transcribe([clip], 16000) == [twice]


# ---------------------------------------------------------------------------------------------
# Tokenizer repair and the text likelihood


def _byte_bpe(merges: list[str]):
    """A byte-level BPE whose merged tokens have ids 256 + rank of the full merge list."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    full = ["Ġ t", "h e", "Ġt he", "Ġ a"]
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({m.replace(" ", ""): 256 + r for r, m in enumerate(full)})
    tok = Tokenizer(models.BPE(vocab, [tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok, full


def test_repair_restores_a_dropped_first_merge_and_keeps_complete_tokenizers():
    from sealign.metrics.asr import repair_bpe_merges

    complete, full = _byte_bpe(["Ġ t", "h e", "Ġt he", "Ġ a"])
    broken, _ = _byte_bpe(full[1:])
    assert broken.encode(" the a").tokens == ["Ġ", "t", "he", "Ġa"]
    fixed = repair_bpe_merges(broken)
    assert fixed.encode(" the a").tokens == ["Ġthe", "Ġa"]
    assert fixed.encode(" the a").ids == complete.encode(" the a").ids
    assert repair_bpe_merges(complete) is complete


def test_whisper_tokenizer_encodes_the_as_one_token(wer_metric):
    wer_metric.load()
    tok = wer_metric.asr._tokenizer
    assert [tok.decode([i]) for i in tok.encode(" the cat")] == [" the", " cat"]


@pytest.fixture(scope="module")
def text_ll():
    m = build_metric("text_likelihood", num_threads=2)
    m.load()
    return m


def test_text_likelihood_prefers_the_spoken_text_and_clean_speech(text_ll, speech, noisy):
    assert text_ll.info.needs_text and "whisper-base" in text_ll.describe()
    x = speech(0)
    right, wrong, dirty, none = text_ll(
        [
            Utterance("r", x, 16000, text=SENTENCES[0]),
            Utterance("w", x, 16000, text=SENTENCES[2]),
            Utterance("n", noisy(x, -5.0), 16000, text=SENTENCES[0]),
            Utterance("t", x, 16000),
        ]
    )
    assert none.skipped == "no text"
    assert right.values["text_prob"] > 0.7 > 0.2 > wrong.values["text_prob"]
    assert right.values["text_prob"] > dirty.values["text_prob"]
    assert (
        right.values["text_logprob"] > dirty.values["text_logprob"] > wrong.values["text_logprob"]
    )
    assert text_ll.settings()["asr_model"].startswith("whisper-base@")


def test_text_likelihood_matches_greedy_decoding_scores(text_ll, speech):
    """Differential: on the tokens greedy decoding chose, the teacher-forced probabilities equal
    the softmax of the decoder's own logits at each generated step (a separate CTranslate2 path)."""
    import ctranslate2

    asr = text_ll.asr
    x = speech(1)
    ((_, enc),) = asr._encoded_batches([x])
    tok = asr._tokenizer
    (res,) = asr.whisper.model.generate(
        enc, [[*tok.sot_sequence, tok.no_timestamps]], beam_size=1, max_length=120,
        return_logits_vocab=True, suppress_blank=False,
    )  # fmt: skip
    ids = res.sequences_ids[0]
    logits = np.array(res.logits[0], dtype=np.float64)[: len(ids)]
    logits -= logits.max(axis=1, keepdims=True)
    want = logits[np.arange(len(ids)), ids] - np.log(np.exp(logits).sum(axis=1))
    text = tok.decode(ids)
    assert tok.encode(" " + " ".join(text.split())) == ids
    (got,) = asr.text_logprobs([x], 16000, [text])
    assert isinstance(enc, ctranslate2.StorageView) and got.shape == want.shape
    # the two CTranslate2 paths round differently: up to 0.016 apart in float32 (the metrics'
    # default), 0.024 in int8 on an AVX2-only EPYC; a token off by one position would differ by
    # far more (neighbouring probabilities above range from 0.3 to 0.99)
    diff = np.abs(np.exp(got[:-1]) - np.exp(want[:-1]))
    assert diff.max() < 0.05 and diff.mean() < 0.015, diff


def test_asr_confidence_needs_no_text_and_drops_with_noise(speech, noisy):
    m = build_metric("asr_confidence", num_threads=2)
    info = m.info
    assert not (info.needs_text or info.needs_reference or info.needs_speaker_ref)
    x = speech(0)
    clean, dirty, buried, silent = m(
        [
            Utterance("c", x, 16000, text="ignored"),
            Utterance("d", noisy(x, 0.0), 16000),
            Utterance("b", noisy(x, -15.0, seed=3), 16000),
            Utterance("s", np.zeros(16000, dtype=np.float32), 16000),
        ]
    )
    c, d, b = (r.values["asr_confidence"] for r in (clean, dirty, buried))
    assert c > 0.4 and c > d > b, (c, d, b)
    assert silent.error == "digitally silent audio (every sample 0)"  # not a guessed word
    # equal to the text likelihood of its own transcript
    hyp = m.asr.transcribe([x], 16000)[0]
    (tl,) = build_metric("text_likelihood", num_threads=2)([Utterance("c", x, 16000, text=hyp)])
    assert c == pytest.approx(tl.values["text_prob"], abs=1e-5)  # float32 sums by batch shape
    m.asr.transcribe = lambda wavs, sr: [""] * len(wavs)  # no words recognized → 0
    assert m([Utterance("e", x, 16000)])[0].values == {"asr_confidence": 0.0}


def test_text_likelihood_skips_clips_longer_than_a_window(text_ll):
    long = np.zeros(16000 * 31, dtype=np.float32)
    (r,) = text_ll([Utterance("l", long, 16000, text="hello")])
    assert r.skipped == "longer than one Whisper window (30 s)"


def test_whisper_metrics_default_to_float32_and_the_demo_reward_to_int8():
    # int8 kernels round differently on each instruction set: metrics stay comparable across
    # machines in float32; the demo's reward takes the faster int8 (docs/demo_checkpoint.md)
    from sealign.commands.demo import DemoConfig

    for name in ("wer", "cer", "text_likelihood", "asr_confidence", "speechbertscore"):
        assert build_metric(name).settings()["compute_type"] == "float32", name
    reward = DemoConfig().gspo.reward
    assert reward.metric_options["wer"]["compute_type"] == "int8"
    assert build_metric("wer", **reward.metric_options["wer"]).settings()["compute_type"] == "int8"
