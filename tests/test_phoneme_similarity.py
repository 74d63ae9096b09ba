"""LPS on a randomly initialized CTC phoneme recognizer saved as a user's local checkpoint."""

import json

import numpy as np
import pytest
import torch

from sealign.metrics import MetricUnavailable, Utterance, build_metric
from sealign.metrics.phoneme import phoneme_similarity

PHONES = ["<pad>", "<s>", "</s>", "<unk>", "a", "b", "d", "i", "k", "tʃ", "aɪ", "ə", "ʃ", "ŋ"]


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    """A 2-layer wav2vec2 CTC model (random weights) with a phoneme vocabulary, its phoneme
    tokenizer and feature extractor, as `save_pretrained` writes them."""
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2PhonemeCTCTokenizer,
    )

    out = tmp_path_factory.mktemp("phoneme_ctc")
    (out / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(PHONES)}))
    Wav2Vec2PhonemeCTCTokenizer(str(out / "vocab.json"), do_phonemize=False).save_pretrained(out)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(out)
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        vocab_size=len(PHONES), pad_token_id=0,
    )  # fmt: skip
    Wav2Vec2ForCTC(cfg).save_pretrained(out)
    return out


def _levenshtein(a: str, b: str) -> int:
    """Textbook two-row edit distance (independent of sealign's alignment code)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _lps_reference(model_dir, ref: np.ndarray, out: np.ndarray) -> float:
    """URGENT's recipe spelled out: processor, batch argmax, tokenizer decode, spaces removed."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2PhonemeCTCTokenizer

    fe = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    tok = Wav2Vec2PhonemeCTCTokenizer.from_pretrained(model_dir)
    net = Wav2Vec2ForCTC.from_pretrained(model_dir).eval()

    def phones(x):
        with torch.no_grad():
            logits = net(fe(x, sampling_rate=16000, return_tensors="pt").input_values).logits
        return tok.batch_decode(torch.argmax(logits, dim=-1))[0].replace(" ", "")

    r, o = phones(ref), phones(out)
    return 1 - _levenshtein(o, r) / len(r)


def test_lps_equals_the_reference_recipe(recognizer, speech, noisy):
    x = speech(0)
    m = build_metric("lps", model=str(recognizer), num_threads=1)
    outs = [x, noisy(x, 5), noisy(x, -5), speech(1)[: x.size]]
    res = m.score_batch([Utterance(f"u{k}", y, 16000, reference=x) for k, y in enumerate(outs)])
    assert res[0].values["lps"] == 1.0
    ref_phones = res[0].details["reference"]
    assert ref_phones.replace(" ", "")  # (special tokens included, as the reference decodes)
    for y, r in zip(outs, res, strict=True):
        assert r.ok, r.error
        assert r.values["lps"] == pytest.approx(_lps_reference(recognizer, x, y), abs=1e-12)
    assert len({r.values["lps"] for r in res}) > 1  # the random recognizer still tells them apart


def test_lps_alone_equals_in_a_batch_and_caches_references(recognizer, speech, noisy):
    x, z = speech(2), speech(3)
    m = build_metric("lps", model=str(recognizer), num_threads=1)
    batch = [
        Utterance("a", noisy(x, 0), 16000, reference=x),
        Utterance("b", noisy(z, 0)[:8000], 16000, reference=z),
        Utterance("c", noisy(x, 10), 16000, reference=x),
    ]
    together = [r.values["lps"] for r in m.score_batch(batch)]
    assert len(m._ref_cache) == 2  # x is recognized once for a and c
    alone = [
        build_metric("lps", model=str(recognizer)).score_batch([u])[0].values["lps"] for u in batch
    ]
    assert together == alone


def test_lps_edge_cases(recognizer, speech):
    m = build_metric("lps", model=str(recognizer), num_threads=1)
    x = speech(4)
    (skip,) = m.score_batch([Utterance("n", x, 16000)])
    assert skip.skipped == "no reference"
    (tiny,) = m.score_batch([Utterance("t", x[:100], 16000, reference=x)])
    assert tiny.ok and tiny.values["lps"] <= 1.0  # shorter than the CNN's receptive field: padded
    assert phoneme_similarity("a b k", "a b d") == pytest.approx(2 / 3)
    assert phoneme_similarity("a b d i k ə", "a") == -4.0  # below 0: more errors than phonemes
    with pytest.raises(ValueError, match="undefined"):
        phoneme_similarity("a", " ")
    # a reference in which the recognizer hears no phoneme: a skip, not an error
    quiet = np.full(8000, 1e-4, dtype=np.float32)
    m._ref_cache.clear()
    m._recognize = lambda a: "" if np.abs(a).max() < 1e-3 else "a b"
    none, fine = m.score_batch(
        [Utterance("q", x, 16000, reference=quiet), Utterance("x", x, 16000, reference=x)]
    )
    assert none.skipped == "no phonemes recognized in the reference (LPS is undefined)"
    assert fine.values["lps"] == 1.0


def test_lps_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # fail fast, no retries
    for model in (str(tmp_path / "missing"), "facebook/wav2vec2-lv-60-espeak-cv-ft"):
        m = build_metric("lps", model=model)
        with pytest.raises(MetricUnavailable, match="model=DIR"):
            m.load()
    with pytest.raises(ValueError, match="model"):
        build_metric("lps", model="")


def test_lps_runs_on_its_device(recognizer, on_meta, speech):
    m = build_metric("lps", model=str(recognizer), num_threads=1)
    on_meta(m, lambda m: m.phonemes(speech(0)))


def test_long_audio_is_recognized_in_pieces(recognizer, speech, monkeypatch):
    from sealign.metrics import phoneme

    m = build_metric("lps", model=str(recognizer), num_threads=1)
    x = speech(5)
    whole = m.phonemes(x)
    monkeypatch.setattr(phoneme, "_CHUNK_SECONDS", x.size / 16000 / 2)  # two pieces
    halves = np.array_split(x, 2)
    want = " ".join(t for t in (m._recognize(halves[0]), m._recognize(halves[1])) if t)
    assert m.phonemes(x) == want != whole


def test_lps_cache_key_follows_the_models_files(recognizer, tmp_path):
    import os
    import shutil

    from sealign.metrics.phoneme import PhonemeSimilarity

    shutil.copytree(recognizer, tmp_path / "m")
    before = PhonemeSimilarity(model=str(tmp_path / "m")).settings()
    weights = next((tmp_path / "m").glob("*.safetensors"))
    os.utime(weights, ns=(1, 1))  # other weights under the same path
    assert PhonemeSimilarity(model=str(tmp_path / "m")).settings() != before
    assert PhonemeSimilarity(model="org/name").settings() == {"model": "org/name"}
