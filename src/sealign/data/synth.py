"""Synthesize a clean multi-speaker English corpus offline: 16 kHz wavs + one JSONL manifest per split.

Speakers are (engine, voice) pairs, e.g. ``kokoro:af_bella+af_sarah@0.3`` or ``espeak:en-us+m3``.
Each speaker belongs to exactly one split, so splits are speaker-disjoint (test gets at least
``min_test_speakers`` speakers never heard in training). Every utterance is a pure function of
``(seed, split, index)``: its sentence comes from :func:`sealign.data.text.sentence_for` and its
prosody from a seed derived from the same key, so results do not depend on the number of
workers or on the order in which they finish. An utterance whose trimmed duration falls outside
``[min_duration, max_duration]`` is redone with the next sentence for its key (with a word-count
range narrowed from the last try).

Post-processing of each utterance: resampled to ``sample_rate`` (16 kHz); leading and trailing
silence trimmed (frames more than 40 dB below the loudest 20-ms frame, keeping up to 0.1 s
margin); loudness normalized so that the RMS over active frames is ``target_dbfs`` (-26 dBFS),
then scaled down if needed so the peak does not exceed 0.99.

Resumable: an utterance whose wav and sidecar ``.json`` already exist, match the plan and the
processing settings, and read back as valid audio is not synthesized again.

Layout::

    out_dir/corpus.json                 settings, speakers per split, counts
    out_dir/{split}.jsonl               manifest (paths relative to out_dir)
    out_dir/{split}/wav/{id}.wav        16-bit PCM
    out_dir/{split}/wav/{id}.json       sidecar (the manifest line + settings digest)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import random
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sealign.audio.io import resample, write_audio
from sealign.data.manifest import Entry, write_manifest
from sealign.data.text import WORD_RANGE, count_words, sentence_for
from sealign.utils.jsonio import write_json
from sealign.utils.procs import pool_worker_init
from sealign.utils.shard import Shard, remove_shard_files

log = logging.getLogger(__name__)

CORPUS = "corpus.json"

SPLIT_NAMES = ("train", "valid", "test")
TRIM_DB = 40.0
TRIM_MARGIN_S = 0.1
PEAK_LIMIT = 0.99
_FRAME_S, _HOP_S = 0.02, 0.01


@dataclass(frozen=True, order=True)
class Speaker:
    engine: str
    voice: str

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.voice}"


@dataclass(frozen=True)
class UtterancePlan:
    id: str
    split: str
    index: int
    speaker: Speaker


@dataclass
class CorpusResult:
    """What :func:`synthesize_corpus` produced."""

    out_dir: Path
    manifests: dict[str, Path]
    counts: dict[str, int]
    speakers: dict[str, list[str]]
    synthesized: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# Planning


def split_counts(
    n: int, splits: Sequence[float | int] | Mapping[str, float | int]
) -> dict[str, int]:
    """Utterances per split from fractions (summing to 1) or integer counts (summing to n)."""
    if not isinstance(splits, Mapping) and len(splits) != len(SPLIT_NAMES):
        raise ValueError(f"splits needs {len(SPLIT_NAMES)} values (train, valid, test)")
    items = (
        dict(splits) if isinstance(splits, Mapping) else dict(zip(SPLIT_NAMES, splits, strict=True))
    )
    vals = list(items.values())
    if any(v < 0 for v in vals):
        raise ValueError(f"negative split size in {items}")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vals) and sum(vals) == n:
        return {k: int(v) for k, v in items.items()}
    total = float(sum(vals))
    if total <= 0 or abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1 (or counts to {n}); got {items}")
    raw = {k: n * v / total for k, v in items.items()}
    counts = {k: int(math.floor(r)) for k, r in raw.items()}
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], list(raw).index(k)))[
        : n - sum(counts.values())
    ]:
        counts[k] += 1
    return counts


def assign_speakers(
    speakers: Sequence[Speaker],
    fractions: Mapping[str, float],
    seed: int,
    min_speakers: Mapping[str, int] | None = None,
) -> dict[str, list[Speaker]]:
    """Partition speakers into splits (disjoint), per engine in proportion to ``fractions``.

    Each engine's speakers are shuffled by ``seed`` and split by largest remainder (a lone
    speaker goes to the largest split); then ``min_speakers`` per split is enforced by moving
    speakers out of the split with the most, taking from its best-represented engine.
    """
    names = [k for k, v in fractions.items() if v > 0]
    if not names:
        raise ValueError("no split has a positive size")
    mins = {k: (min_speakers or {}).get(k, 1) for k in names}
    if len(set(speakers)) < sum(mins.values()):
        raise ValueError(
            f"{len(set(speakers))} speakers cannot fill splits needing at least {mins} "
            "disjoint speakers; add engines/voices or lower min_test_speakers"
        )
    rng = random.Random(f"sealign-speakers:{seed}")
    by_engine: dict[str, list[Speaker]] = {}
    for s in sorted(set(speakers)):
        by_engine.setdefault(s.engine, []).append(s)
    largest = max(names, key=lambda k: fractions[k])
    out: dict[str, list[Speaker]] = {k: [] for k in names}
    total = sum(fractions[k] for k in names)
    for engine in sorted(by_engine):
        group = by_engine[engine]
        rng.shuffle(group)
        if len(group) == 1:
            out[largest] += group
            continue
        raw = {k: len(group) * fractions[k] / total for k in names}
        cnt = {k: int(math.floor(r)) for k, r in raw.items()}
        for k in sorted(names, key=lambda k: (cnt[k] - raw[k], names.index(k)))[
            : len(group) - sum(cnt.values())
        ]:
            cnt[k] += 1
        i = 0
        for k in names:
            out[k] += group[i : i + cnt[k]]
            i += cnt[k]
    for k in names:
        while len(out[k]) < mins[k]:
            donors = [d for d in names if d != k and len(out[d]) > mins[d]]
            donor = max(donors, key=lambda d: (len(out[d]), -names.index(d)))
            counts: dict[str, int] = {}
            for s in out[donor]:
                counts[s.engine] = counts.get(s.engine, 0) + 1
            engine = max(sorted(counts), key=lambda e: counts[e])
            pick = [s for s in out[donor] if s.engine == engine][-1]
            out[donor].remove(pick)
            out[k].append(pick)
    return out


def plan_corpus(
    counts: Mapping[str, int], speakers: Mapping[str, Sequence[Speaker]], seed: int
) -> list[UtterancePlan]:
    """Utterance ``j`` of a split goes to speaker ``j mod n`` of that split's shuffled list."""
    plans = []
    for split, n in counts.items():
        if n <= 0:
            continue
        order = sorted(speakers[split])
        random.Random(f"sealign-order:{seed}:{split}").shuffle(order)
        for j in range(n):
            plans.append(UtterancePlan(f"{split}-{j:06d}", split, j, order[j % len(order)]))
    return plans


# --------------------------------------------------------------------------------------------
# Signal processing


def _frame_db(wav: np.ndarray, sr: int) -> tuple[np.ndarray, int, int]:
    frame, hop = max(1, int(_FRAME_S * sr)), max(1, int(_HOP_S * sr))
    if wav.size < frame:
        return np.array([10 * np.log10(np.mean(wav**2) + 1e-12)]), frame, hop
    n = 1 + (wav.size - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    power = np.mean(wav[idx].astype(np.float64) ** 2, axis=1)
    return 10 * np.log10(power + 1e-12), frame, hop


def trim_and_normalize(
    wav: np.ndarray,
    sr: int,
    target_dbfs: float = -26.0,
    trim_db: float = TRIM_DB,
    margin_s: float = TRIM_MARGIN_S,
    peak_limit: float = PEAK_LIMIT,
) -> np.ndarray:
    """Trim leading/trailing silence and set the active-frame RMS to ``target_dbfs``."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if wav.size == 0 or not np.any(wav):
        return wav
    db, frame, hop = _frame_db(wav, sr)
    active = db > max(db.max() - trim_db, -80.0)
    first, last = int(np.argmax(active)), int(len(active) - 1 - np.argmax(active[::-1]))
    margin = int(margin_s * sr)
    start = max(0, first * hop - margin)
    end = min(wav.size, last * hop + frame + margin)
    wav = wav[start:end]
    act_power = float(np.mean(10 ** (db[first : last + 1][active[first : last + 1]] / 10)))
    gain = 10 ** (target_dbfs / 20) / math.sqrt(act_power + 1e-12)
    wav = wav * gain
    peak = float(np.max(np.abs(wav)))
    if peak > peak_limit:
        wav = wav * (peak_limit / peak)
    return wav.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Workers

_WORKER_ENGINES: dict[str, Any] = {}
_WORKER_OPTIONS: dict[str, dict[str, Any]] = {}


def _init_worker(engine_options: dict[str, dict[str, Any]]) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    _WORKER_OPTIONS.clear()
    _WORKER_OPTIONS.update(engine_options)


def _engine(name: str) -> Any:
    if name not in _WORKER_ENGINES:
        from sealign.data.tts import get_engine

        opts = {"threads": 1} if name in ("kokoro", "piper") else {}
        opts.update(_WORKER_OPTIONS.get(name, {}))
        eng = get_engine(name, **opts)
        if hasattr(eng, "load"):
            eng.load()
        _WORKER_ENGINES[name] = eng
    return _WORKER_ENGINES[name]


def _derive_seed(*key: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:4], "little")


def _settings_digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _reuse(task: dict[str, Any]) -> dict[str, Any] | None:
    wav_path, meta_path = Path(task["wav"]), Path(task["meta"])
    if not (wav_path.is_file() and meta_path.is_file()):
        return None
    try:
        import soundfile as sf

        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        info = sf.info(str(wav_path))
    except Exception:  # noqa: BLE001 - unreadable means "redo it"
        return None
    dur = info.frames / info.samplerate if info.samplerate else 0.0
    ok = (
        meta.get("settings") == task["digest"]
        and meta.get("entry", {}).get("speaker") == task["speaker"]
        and info.samplerate == task["sample_rate"]
        and info.channels == 1
        and task["min_duration"] <= dur <= task["max_duration"]
    )
    return meta["entry"] if ok else None


def _synth_one(task: dict[str, Any]) -> dict[str, Any]:
    """Synthesize (or reuse) one planned utterance; returns a result record."""
    reused = _reuse(task)
    if reused is not None:
        return {"id": task["id"], "entry": reused, "reused": True}
    eng = _engine(task["engine"])
    lo, hi = task["word_range"]
    lo_min, hi_max = lo, hi
    tried = []
    for attempt in range(task["max_attempts"]):
        key = (task["seed"], task["split"], task["index"], attempt)
        text = sentence_for(key, lo, hi)
        wav, sr = eng.synthesize(text, task["voice"], speed=1.0, seed=_derive_seed("tts", *key))
        if sr != task["sample_rate"]:
            wav = resample(wav, sr, task["sample_rate"])
        wav = trim_and_normalize(wav, task["sample_rate"], task["target_dbfs"])
        dur = wav.size / task["sample_rate"]
        tried.append(round(dur, 2))
        n = count_words(text)
        if not np.all(np.isfinite(wav)) or not np.any(wav):
            continue
        if dur > task["max_duration"]:
            hi = max(lo_min, min(hi, n - 1, math.floor(n * task["max_duration"] / dur)))
            lo = min(lo, hi)
            continue
        if dur < task["min_duration"]:
            need = math.ceil(n * task["min_duration"] / max(dur, 1e-3))
            lo = min(hi_max, max(lo, n + 1, need))
            hi = max(hi, lo)
            continue
        write_audio(task["wav"], wav, task["sample_rate"])
        entry = {
            "id": task["id"],
            "audio": task["rel_wav"],
            "reference": task["rel_wav"],
            "text": text,
            "speaker": task["speaker"],
            "engine": task["engine"],
            "voice": task["voice"],
            "duration": round(dur, 3),
        }
        meta = {"entry": entry, "settings": task["digest"], "attempt": attempt}
        tmp = Path(task["meta"] + ".tmp")
        tmp.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        tmp.replace(task["meta"])
        return {"id": task["id"], "entry": entry, "reused": False}
    return {"id": task["id"], "entry": None, "reused": False, "durations": tried}


# --------------------------------------------------------------------------------------------
# Driver


def synthesize_corpus(
    out_dir: str | Path,
    n_utterances: int,
    engines: Sequence[str] = ("espeak",),
    seed: int = 0,
    workers: int = 1,
    splits: Sequence[float | int] | Mapping[str, float | int] = (0.8, 0.1, 0.1),
    min_duration: float = 2.0,
    max_duration: float = 8.0,
    sample_rate: int = 16000,
    target_dbfs: float = -26.0,
    min_test_speakers: int = 6,
    voices: Mapping[str, Sequence[str]] | None = None,
    engine_options: Mapping[str, Mapping[str, Any]] | None = None,
    word_range: tuple[int, int] = WORD_RANGE,
    max_attempts: int = 12,
    progress: bool = True,
    shard: Shard | None = None,
) -> CorpusResult:
    """Synthesize ``n_utterances`` clean utterances into ``out_dir``; see the module docstring.

    With ``shard`` only that shard's share of the planned utterances is synthesized (the plan,
    speakers and sentences are those of the whole corpus) and no manifest is written: a later
    run without ``shard`` reuses every finished utterance and writes the manifests.

    ``engines``: names for :func:`sealign.data.tts.get_engine`. ``voices``: optional engine ->
    voices to use (default: each engine's ``voices()``). ``splits``: (train, valid, test)
    fractions or counts, or a mapping split -> size. ``engine_options``: engine -> keyword
    options (kokoro/piper default to 1 onnxruntime thread per worker).
    """
    from sealign.data.tts import TTSUnavailable, engine_unavailable_reason, get_engine

    if not engines:
        raise ValueError("no TTS engine given")
    for name in dict.fromkeys(engines):
        reason = engine_unavailable_reason(name, **dict((engine_options or {}).get(name, {})))
        if reason is not None:
            raise TTSUnavailable(f"TTS engine {name!r} cannot run here: {reason}")
    if min_duration >= max_duration:
        raise ValueError(f"min_duration {min_duration} >= max_duration {max_duration}")
    out = Path(out_dir)
    options = {k: dict(v) for k, v in (engine_options or {}).items()}
    counts = split_counts(n_utterances, splits)
    speakers = [
        Speaker(name, v)
        for name in dict.fromkeys(engines)
        for v in ((voices or {}).get(name) or get_engine(name, **options.get(name, {})).voices())
    ]
    # Speakers follow the requested proportions (not the rounded counts), so the assignment
    # does not change with n_utterances (unless a split gets no utterances: it takes no
    # speakers) and a larger run can resume a smaller one.
    requested = (
        dict(splits) if isinstance(splits, Mapping) else dict(zip(SPLIT_NAMES, splits, strict=True))
    )
    total = float(sum(requested.values()))
    # a split without utterances takes no speakers (nor test's minimum of speakers)
    fractions = {k: float(requested[k]) / total if counts[k] > 0 else 0.0 for k in counts}
    for k in counts:
        if requested[k] > 0 and counts[k] == 0:
            log.warning("split %s: %g of %d utterances rounds to none; it is left out", k,
                        requested[k], n_utterances)  # fmt: skip
    mins = {"test": min_test_speakers}
    by_split = assign_speakers(speakers, fractions, seed, mins)
    plans = plan_corpus(counts, by_split, seed)
    settings = {
        "sample_rate": sample_rate,
        "target_dbfs": target_dbfs,
        "trim_db": TRIM_DB,
        "trim_margin_s": TRIM_MARGIN_S,
        "peak_limit": PEAK_LIMIT,
        "min_duration": min_duration,
        "max_duration": max_duration,
        "word_range": list(word_range),
        "seed": seed,
        "engine_options": options,
    }
    digest = _settings_digest(settings)
    tasks = []
    for p in plans:
        rel = f"{p.split}/wav/{p.id}.wav"
        (out / p.split / "wav").mkdir(parents=True, exist_ok=True)
        tasks.append(
            {
                "id": p.id, "split": p.split, "index": p.index, "seed": seed,
                "engine": p.speaker.engine, "voice": p.speaker.voice, "speaker": p.speaker.id,
                "wav": str(out / rel), "meta": str(out / p.split / "wav" / f"{p.id}.json"),
                "rel_wav": rel, "sample_rate": sample_rate, "target_dbfs": target_dbfs,
                "min_duration": min_duration, "max_duration": max_duration,
                "word_range": tuple(word_range), "max_attempts": max_attempts, "digest": digest,
            }
        )  # fmt: skip
    shard = shard or Shard()
    if shard.sharded:
        tasks = shard.take(tasks)
    # written again when every file is there: a run killed before then must not leave an
    # earlier run's manifests over audio this one replaced (another seed, other sentences)
    for split in SPLIT_NAMES:
        (out / f"{split}.jsonl").unlink(missing_ok=True)
    results = _run_tasks(tasks, workers, options, progress)
    entries: dict[str, list[Entry]] = {k: [] for k in counts}
    res = CorpusResult(out, {}, {}, {k: [s.id for s in sorted(v)] for k, v in by_split.items()})
    for task, r in zip(tasks, results, strict=True):
        if r["entry"] is None:
            res.failed.append(r["id"])
            log.warning(
                "%s (%s): no sentence within %.1f-%.1f s after %d tries (durations %s)",
                r["id"], task["speaker"], min_duration, max_duration, max_attempts,
                r.get("durations"),
            )  # fmt: skip
            continue
        e = dict(r["entry"])
        res.reused += int(r["reused"])
        res.synthesized += int(not r["reused"])
        res.audio_seconds += float(e["duration"])
        entries[task["split"]].append(
            Entry(
                id=e.pop("id"), audio=e.pop("audio"), reference=e.pop("reference"),
                text=e.pop("text"), extra=e,
            )
        )  # fmt: skip
    for split, items in entries.items():
        res.counts[split] = len(items)
        if items and not shard.sharded:
            res.manifests[split] = write_manifest(out / f"{split}.jsonl", items)
        elif not items and not shard.sharded and (out / f"{split}.jsonl").exists():
            # an earlier run's: its speakers may now belong to another split
            (out / f"{split}.jsonl").unlink()
            log.warning("removed %s: this run has no %s utterances", out / f"{split}.jsonl", split)
    summary = {
        "settings": settings,
        "engines": list(dict.fromkeys(engines)),
        "requested": counts,
        "counts": res.counts,
        "speakers": res.speakers,
        "failed": res.failed,
        "loudness": f"active-frame RMS {target_dbfs} dBFS, peak <= {PEAK_LIMIT}",
    }
    if not shard.sharded:
        write_json(out / CORPUS, summary)
        remove_shard_files(out / CORPUS)  # the shards' markers
    return res


def _run_tasks(
    tasks: list[dict[str, Any]],
    workers: int,
    options: dict[str, dict[str, Any]],
    progress: bool,
) -> list[dict[str, Any]]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="synthesize", unit="utt", disable=not progress)
    results: list[dict[str, Any]] = []
    try:
        if workers <= 1:
            _init_worker(options)
            for t in tasks:
                results.append(_synth_one(t))
                bar.update(1)
            return results
        # Group by engine so a worker mostly meets one engine; map keeps the task order.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=pool_worker_init, initargs=(_init_worker, options)
        ) as pool:
            order = sorted(range(len(tasks)), key=lambda i: (tasks[i]["engine"], i))
            chunk = max(1, min(16, len(tasks) // (4 * workers) or 1))
            got: dict[int, dict[str, Any]] = {}
            ordered = [tasks[i] for i in order]
            for i, r in zip(order, pool.map(_synth_one, ordered, chunksize=chunk), strict=True):
                got[i] = r
                bar.update(1)
            results = [got[i] for i in range(len(tasks))]
        return results
    finally:
        bar.close()


def corpus_summary(result: CorpusResult) -> dict[str, Any]:
    """JSON-friendly summary of a :class:`CorpusResult`."""
    d = asdict(result)
    d["out_dir"] = str(result.out_dir)
    d["manifests"] = {k: str(v) for k, v in result.manifests.items()}
    return d
