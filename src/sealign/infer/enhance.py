"""Enhance audio files with a policy: batched, long files cut into overlapping chunks.

A file longer than ``chunk_seconds`` is cut into chunks of that length whose starts are spread
evenly so that neighbours overlap by at least ``overlap_seconds``. Each chunk is enhanced on its
own and the outputs are stitched with a crossfade of ``overlap_seconds`` centred in each overlap:
``"linear"`` (raised-cosine gains that sum to 1, right when the two versions are alike) or
``"equal_power"`` (gains whose squares sum to 1, right for unrelated signals). Gains are
normalized by their sum (or root sum of squares) everywhere, so any overlap pattern is safe.

Outputs are written atomically to ``<output_dir>/<id>.wav`` with a ``manifest.jsonl`` in which
``audio`` is the enhanced file, ``noisy`` the input and ``reference`` / ``text`` /
``speaker_ref`` / extra fields are carried over. Unusable inputs are skipped with a logged reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sealign.audio.io import (
    SILENCE_PEAK,
    AudioError,
    AudioLimits,
    load_audio,
    mono_float,
    within_full_scale,
    write_audio,
)
from sealign.data.manifest import Entry, ManifestError, read_manifest, relocate, write_manifest
from sealign.infer.dereverb import DEREVERBS, dereverb_input
from sealign.infer.fusion import FUSIONS, mask_fusion
from sealign.models.persist import SAMPLING_FILE, checkpoint_sampling
from sealign.models.policy import Policy
from sealign.utils.device import check_device
from sealign.utils.jsonio import write_json
from sealign.utils.paths import folder_fingerprint

log = logging.getLogger(__name__)

CROSSFADES = ("linear", "equal_power")
MANIFEST = "manifest.jsonl"


SAMPLING_FALLBACK: dict[str, Any] = {
    "temperature": 0.3,
    "top_k": 0,
    "top_p": 1.0,
    "fuse": "none",
    "dereverb": "none",
}
# see EnhanceConfig.with_setting
SWEEPABLE = ("temperature", "top_k", "top_p", "remix", "fuse", "fuse_smooth_hz", "dereverb", "seed")
CHOICES = {"fuse": FUSIONS, "dereverb": DEREVERBS}


@dataclass
class EnhanceConfig:
    """Settings of ``sealign enhance`` (and of the enhancement step of ``sealign eval``).

    ``temperature``, ``top_k``, ``top_p``, ``fuse`` and ``dereverb`` left unset (``None``) take
    the checkpoint's ``sampling.json`` (:func:`checkpoint_sampling`), else 0.3, 0 (off), 1.0,
    ``"none"`` and ``"none"``: see :meth:`for_checkpoint`."""

    batch_size: int = 4  # chunks per forward pass
    chunk_seconds: float = 10.0  # 0 = never chunk
    overlap_seconds: float = 1.0
    crossfade: str = "linear"
    temperature: float | None = None
    top_k: int | None = None  # token families only; 0 = off
    top_p: float | None = None
    # family-specific options of Policy.sample, e.g. {method: sde, sde_a: 0.3} for flow matching
    extra: dict[str, Any] = field(default_factory=dict)
    # weight of the noisy input mixed back into each output (observation adding): 0 = off
    remix: float = 0.0
    # "mask": the output only masks the noisy input (sealign.infer.fusion); box of the smoothing
    fuse: str | None = None
    fuse_smooth_hz: float = 280.0
    fuse_smooth_ms: float = 24.0
    # "wpe": dereverberate each chunk of the input first (sealign.infer.dereverb); the model,
    # the mask and the remix then all see the dereverberated input
    dereverb: str | None = None
    seed: int = 0
    threads: int = 2
    device: str = "cpu"

    def for_checkpoint(self, directory: str | Path) -> EnhanceConfig:
        """A copy whose unset sampling settings are filled from the policy folder
        ``directory`` (its ``sampling.json``), then from the built-in fallbacks."""
        saved = {**SAMPLING_FALLBACK, **checkpoint_sampling(directory)}
        filled = {k: saved[k] if getattr(self, k) is None else getattr(self, k) for k in saved}
        try:
            return replace(self, **filled)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{Path(directory) / SAMPLING_FILE}: {err}") from err

    def with_setting(self, key: str, value: Any) -> EnhanceConfig:
        """A copy with one setting changed: a field of :data:`SWEEPABLE` or ``extra.<option>``
        (an option of the model's sampler). Raises ``ValueError`` on an unknown key or a bad
        value."""
        if key.startswith("extra.") and len(key) > 6:
            return replace(self, extra={**self.extra, key[6:]: value})
        if key not in SWEEPABLE:
            raise ValueError(f"unknown setting {key!r}: one of {SWEEPABLE} or extra.<option>")
        if key in CHOICES:
            if value not in CHOICES[key]:
                raise ValueError(f"{key} must be one of {CHOICES[key]}, got {value!r}")
            return replace(self, **{key: value})
        kind = float if key in ("temperature", "top_p", "remix", "fuse_smooth_hz") else int
        if isinstance(value, bool) or not isinstance(value, int | float) or kind(value) != value:
            raise ValueError(f"{key} must be {'a number' if kind is float else 'an integer'}")
        return replace(self, **{key: kind(value)})

    def sample_options(self) -> dict[str, Any]:
        """Token filters for ``policy.sample`` (only those that are switched on) and ``extra``."""
        if None in (self.temperature, self.top_k, self.top_p, self.fuse, self.dereverb):
            raise ValueError("sampling settings unset: call EnhanceConfig.for_checkpoint first")
        out: dict[str, Any] = dict(self.extra)
        if self.top_k:
            out["top_k"] = self.top_k
        if self.top_p < 1.0:
            out["top_p"] = self.top_p
        return out

    def file_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`enhance_files` (all but ``seed``) for these settings."""
        return {
            "batch_size": self.batch_size,
            "chunk_seconds": self.chunk_seconds,
            "overlap_seconds": self.overlap_seconds,
            "temperature": self.temperature,
            "sample_options": self.sample_options(),
            "crossfade": self.crossfade,
            "remix": self.remix,
            "fuse": self.fuse,
            "fuse_smooth": (self.fuse_smooth_hz, self.fuse_smooth_ms),
            "dereverb": self.dereverb,
        }

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.chunk_seconds < 0 or self.overlap_seconds < 0:
            raise ValueError("chunk_seconds and overlap_seconds must be >= 0")
        if self.chunk_seconds and self.overlap_seconds * 2 > self.chunk_seconds:
            raise ValueError(
                f"overlap_seconds ({self.overlap_seconds}) must be at most half of "
                f"chunk_seconds ({self.chunk_seconds})"
            )
        if self.crossfade not in CROSSFADES:
            raise ValueError(f"crossfade must be one of {CROSSFADES}, got {self.crossfade!r}")
        if self.temperature is not None and not 0 < self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not 0 <= self.remix < 1:
            raise ValueError(f"remix must be in [0, 1), got {self.remix}")
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in (None, *allowed):
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.fuse_smooth_hz < 0 or self.fuse_smooth_ms < 0:
            raise ValueError("fuse_smooth_hz and fuse_smooth_ms must be >= 0")
        check_device(self.device)


# -------------------------------------------------------------------------------- stitching


def chunk_bounds(n: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` covering ``n`` samples with chunks of ``chunk`` samples that overlap
    by at least ``overlap`` (starts spread evenly; one chunk when ``n <= chunk`` or chunk is 0)."""
    if chunk <= 0 or n <= chunk:
        return [(0, n)]
    hop = chunk - overlap
    if hop <= 0:
        raise ValueError(f"overlap ({overlap}) must be shorter than the chunk ({chunk})")
    m = 1 + int(np.ceil((n - chunk) / hop))
    starts = np.round(np.linspace(0, n - chunk, m)).astype(int)
    return [(int(s), int(s) + chunk) for s in starts]


def _ramp(length: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Fade-in and fade-out gains of ``length`` samples."""
    x = (np.arange(length) + 0.5) / length
    if kind == "linear":
        up = 0.5 - 0.5 * np.cos(np.pi * x)
        return up, 1.0 - up
    return np.sin(0.5 * np.pi * x), np.cos(0.5 * np.pi * x)


def stitch(
    segments: list[np.ndarray],
    bounds: list[tuple[int, int]],
    n: int,
    overlap: int,
    kind: str = "linear",
) -> np.ndarray:
    """Join chunk outputs placed at ``bounds`` into ``n`` samples with crossfades of (at most)
    ``overlap`` samples centred in each overlap; see the module docstring."""
    if kind not in CROSSFADES:
        raise ValueError(f"crossfade must be one of {CROSSFADES}, got {kind!r}")
    if len(segments) == 1:
        return _fit(segments[0], n)
    acc = np.zeros(n, np.float32)  # float32 and one chunk's gains at a time: a 3-h file
    norm = np.zeros(n, np.float32)  # needs about 3x its samples' float32 size, not 7x
    for i, (seg, (a, b)) in enumerate(zip(segments, bounds, strict=True)):
        g = np.ones(b - a, np.float32)
        if i > 0:
            _fade(g, bounds[i - 1][1] - a, overlap, kind, rising=True)
        if i + 1 < len(bounds):
            _fade(g, b - bounds[i + 1][0], overlap, kind, rising=False)
        acc[a:b] += g * _fit(seg, b - a)
        norm[a:b] += g if kind == "linear" else g * g
    if kind != "linear":
        np.sqrt(norm, out=norm)
    return acc / np.maximum(norm, np.float32(1e-8))


def _fade(g: np.ndarray, shared: int, overlap: int, kind: str, rising: bool) -> None:
    """Apply, in place, the crossfade over the ``shared`` samples that chunk gains ``g`` share
    with the previous (``rising``) or the next chunk."""
    if shared <= 0:
        return
    length = max(1, min(overlap, shared))
    up, down = _ramp(length, kind)
    if rising:  # the shared part is the chunk's head
        start = (shared - length) // 2
        g[start : start + length] *= up
        g[:start] = 0.0
    else:  # the shared part is the chunk's tail
        start = g.size - shared + (shared - length) // 2
        g[start : start + length] *= down
        g[start + length :] = 0.0


def _fit(wav: np.ndarray, n: int) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    return wav[:n] if wav.size >= n else np.pad(wav, (0, n - wav.size))


# ------------------------------------------------------------------------------------ inputs


def resolve_inputs(path: str | Path, exclude: str | Path | None = None) -> list[Entry]:
    """Entries of a JSONL manifest, or of every audio file in a folder (id = relative path),
    leaving out the folder ``exclude`` (an output folder inside the input folder)."""
    p = Path(path)
    if p.is_file():
        from sealign.audio.io import AUDIO_EXTENSIONS

        if p.suffix.lower() in AUDIO_EXTENSIONS:  # one file: its name without suffix is its id
            return [Entry(id=p.stem, audio=str(p))]
        return read_manifest(p)
    if p.is_dir():
        from sealign.audio.io import AUDIO_EXTENSIONS

        skip = Path(exclude).resolve() if exclude is not None else None
        files = sorted(
            f
            for f in p.rglob("*")
            if f.suffix.lower() in AUDIO_EXTENSIONS
            and not (skip is not None and f.resolve().is_relative_to(skip))
        )
        if not files:
            raise ManifestError(f"{p}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
        from sealign.data.importers import file_ids

        return [Entry(id=k, audio=str(f)) for f, k in zip(files, file_ids(files, p), strict=True)]
    raise FileNotFoundError(f"{p}: input not found")


def output_name(utt_id: str) -> str:
    """File-system-safe, collision-free file stem for an utterance id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", utt_id).strip("._")[:100] or "utt"
    if safe != utt_id:
        safe += "-" + hashlib.sha1(utt_id.encode("utf-8")).hexdigest()[:8]
    return safe


# --------------------------------------------------------------------------------- enhancing


@dataclass
class _File:
    entry: Entry
    num_samples: int
    bounds: list[tuple[int, int]]
    outputs: list[np.ndarray | None]

    @property
    def done(self) -> bool:
        return all(o is not None for o in self.outputs)


@dataclass
class EnhanceResult:
    entries: list[Entry]  # enhanced, in input order
    manifest: Path
    failed: dict[str, str] = field(default_factory=dict)  # id → reason
    audio_seconds: float = 0.0
    seconds: float = 0.0
    resumed: bool = False  # read back from an earlier run's finished outputs

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else float("nan")


MAX_SAMPLES = 1000  # sampled outputs per input: a bound that catches a mistyped count


def sample_tags(name: str, samples: int) -> list[str]:
    """Names of a model's ``samples`` outputs per input: ``name``, ``name_sample1``, ..."""
    return [name] + [f"{name}_sample{i}" for i in range(1, samples)]


def enhance_samples(
    policy: Policy,
    inputs: list[Entry],
    output_root: str | Path,
    name: str,
    samples: int = 1,
    seed: int = 0,
    record: bool = False,
    resume: bool = False,
    model: str | Path | None = None,
    **options: Any,
) -> dict[str, EnhanceResult]:
    """Enhance ``inputs`` ``samples`` times, with seeds ``seed``, ``seed + 1``, ..., into
    ``output_root/<tag>`` for each tag of :func:`sample_tags`; ``options`` go to
    :func:`enhance_files`. With ``record`` each finished tag gets a record beside its manifest
    (``<manifest>.done.json``: the inputs, the settings and the files of ``model``, the
    policy's folder); with ``resume``, a tag whose record lists the same inputs and settings
    is read back instead of enhanced again (its result has ``resumed`` set)."""
    manifest = options.get("manifest", MANIFEST)
    ids = [e.id for e in inputs]
    signatures = [e.signature() for e in inputs]
    kept = {k: v for k, v in options.items() if k not in ("progress", "manifest")}
    out = {}
    for i, tag in enumerate(sample_tags(name, samples)):
        folder = Path(output_root) / tag
        done = folder / f"{manifest}.done.json"
        # JSON's view of the settings, as the record reads back (tuples become lists)
        settings = json.loads(json.dumps(
            {**kept, "seed": seed + i, "model": folder_fingerprint(model) if model else None},
            default=str,
        ))  # fmt: skip
        res = (
            finished_outputs(folder / manifest, done, ids, signatures, settings) if resume else None
        )
        if res is None:
            done.unlink(missing_ok=True)  # an interrupted run leaves no record of completion
            res = enhance_files(policy, inputs, folder, seed=seed + i, **options)
            if record:
                write_json(done, {"inputs": ids, "signatures": signatures, "settings": settings,
                                  "failed": res.failed})  # fmt: skip
        else:
            log.info("%s: its %d outputs are complete; not enhancing again", tag, len(res.entries))
        out[tag] = res
    return out


def finished_outputs(
    manifest: Path,
    done: Path,
    ids: list[str],
    signatures: list[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> EnhanceResult | None:
    """The result an earlier :func:`enhance_samples` recorded in ``done`` for the inputs
    ``ids`` (whose :meth:`~sealign.data.manifest.Entry.signature` are ``signatures``) enhanced
    with ``settings``, or None when it is missing, unreadable, for other or changed inputs or
    settings, or its files are gone."""
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
        entries = read_manifest(manifest, check_files=True)
    except (OSError, ValueError, ManifestError):
        return None
    if not isinstance(record, dict) or record.get("inputs") != ids:
        return None
    if signatures is not None and record.get("signatures", signatures) != signatures:
        log.warning("%s: inputs changed since these outputs were written; enhancing again",
                    manifest.parent)  # fmt: skip
        return None
    if settings is not None and record.get("settings") != settings:
        log.warning("%s: the model or its settings changed since these outputs were written; "
                    "enhancing again", manifest.parent)  # fmt: skip
        return None
    return EnhanceResult(entries, manifest, dict(record.get("failed", {})), resumed=True)


def enhance_files(
    policy: Policy,
    inputs: list[Entry] | str | Path,
    output_dir: str | Path,
    batch_size: int = 4,
    chunk_seconds: float = 10.0,
    overlap_seconds: float = 1.0,
    temperature: float = 0.3,
    seed: int = 0,
    crossfade: str = "linear",
    progress: bool = True,
    sample_options: dict[str, Any] | None = None,
    remix: float = 0.0,
    fuse: str = "none",
    fuse_smooth: tuple[float, float] = (280.0, 24.0),
    dereverb: str = "none",
    manifest: str = MANIFEST,
) -> EnhanceResult:
    """Enhance ``inputs`` (entries, a manifest or a folder) into ``output_dir``, listed in its
    ``manifest``.

    Chunks of all files are batched together in input order, drawing from one random stream;
    results are deterministic for a given ``seed``, ``batch_size`` and list of inputs. A file
    enhanced among other files (another manifest, a shard of it) gets other draws from the same
    distribution: compare systems on outputs made in one layout. ``sample_options`` go to
    ``policy.sample`` (e.g. AR ``top_k`` / ``top_p``). ``dereverb="wpe"`` dereverberates each
    chunk before the model sees it (:mod:`sealign.infer.dereverb`), and what follows uses that
    chunk as the input.
    ``fuse="mask"`` writes the input masked by the output
    (:func:`~sealign.infer.fusion.mask_fusion`, smoothed over ``fuse_smooth`` = (Hz, ms));
    then ``remix`` > 0 writes ``(1 - remix) * out + remix * noisy`` (:func:`remix_noisy`).
    """
    t0 = time.perf_counter()
    _check_processing(fuse, dereverb)  # before the output folder is made
    entries = resolve_inputs(inputs) if isinstance(inputs, str | Path) else list(inputs)
    out = Path(output_dir)
    sources = {Path(e.audio).resolve() for e in entries}
    clash = [e.id for e in entries if (out / f"{output_name(e.id)}.wav").resolve() in sources]
    if clash:
        raise ValueError(
            f"{out}: writing the output of {clash[0]!r} would overwrite an input file "
            f"({len(clash)} such inputs); give another output folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    sr = policy.sample_rate
    limits = AudioLimits(max_duration=float("inf"))
    written: dict[str, Entry] = {}
    failed: dict[str, str] = {}
    audio_seconds = 0.0

    def read() -> Any:
        nonlocal audio_seconds
        for e in entries:
            try:
                wav, _ = load_audio(e.audio, sr, limits)
            except AudioError as err:
                log.warning("skipping %s: %s", e.id, err)
                failed[e.id] = str(err)
                yield e, None
                continue
            audio_seconds += wav.size / sr
            yield e, wav

    def finish(e: Entry, wav: np.ndarray) -> None:
        name = output_name(e.id) + ".wav"
        write_audio(out / name, wav, sr)
        written[e.id] = Entry(
            id=e.id, audio=str(out / name), reference=e.reference, text=e.text,
            speaker_ref=e.speaker_ref, noisy=e.audio, extra=dict(e.extra),
        )  # fmt: skip

    _enhance_stream(
        policy, read(), finish, failed, batch_size=batch_size, chunk_seconds=chunk_seconds,
        overlap_seconds=overlap_seconds, temperature=temperature, seed=seed, crossfade=crossfade,
        progress=progress, sample_options=sample_options, remix=remix, fuse=fuse,
        fuse_smooth=fuse_smooth, dereverb=dereverb, total=len(entries),
    )  # fmt: skip
    done = [written[e.id] for e in entries if e.id in written]
    path = write_manifest(out / manifest, relocate(done, out / manifest))
    return EnhanceResult(done, path, failed, audio_seconds, time.perf_counter() - t0)


def enhance_audio(
    policy: Policy, wavs: list[np.ndarray], **settings: Any
) -> list[np.ndarray | None]:
    """Enhance waveforms in memory as :func:`enhance_files` enhances files (the same chunks,
    batches, random draws and processing; mono float arrays at ``policy.sample_rate``;
    ``settings``: its keyword arguments, ``seed``, ``temperature``, ``fuse`` ...), so
    ``enhance_audio(p, wavs, **EnhanceConfig().for_checkpoint(folder).file_options())`` gives what
    ``sealign enhance`` writes, before its 16-bit rounding. None for an input the model
    rejected (the warning says why)."""
    outs: dict[int, np.ndarray] = {}
    failed: dict[str, str] = {}
    items = [
        (Entry(id=str(i), audio=""), mono_float(w, f"input {i}").astype(np.float32))
        for i, w in enumerate(wavs)
    ]
    settings = {"progress": False, **settings}
    _enhance_stream(policy, items, lambda e, w: outs.__setitem__(int(e.id), w), failed,
                    total=len(items), **settings)  # fmt: skip
    for uid, why in failed.items():
        log.warning("input %s not enhanced: %s", uid, why)
    return [outs.get(i) for i in range(len(wavs))]


def _enhance_stream(
    policy: Policy,
    inputs: Any,  # (entry, waveform or None when it could not be read) pairs
    finish: Any,  # finish(entry, output waveform)
    failed: dict[str, str],
    *,
    batch_size: int = 4,
    chunk_seconds: float = 10.0,
    overlap_seconds: float = 1.0,
    temperature: float = 0.3,
    seed: int = 0,
    crossfade: str = "linear",
    progress: bool = True,
    sample_options: dict[str, Any] | None = None,
    remix: float = 0.0,
    fuse: str = "none",
    fuse_smooth: tuple[float, float] = (280.0, 24.0),
    dereverb: str = "none",
    total: int | None = None,
) -> None:
    """The loop behind :func:`enhance_files` and :func:`enhance_audio`: chunks of every input
    batched in input order, one random stream, outputs stitched and handed to ``finish``."""
    _check_processing(fuse, dereverb)
    sr = policy.sample_rate
    chunk = int(round(chunk_seconds * sr))
    overlap = int(round(overlap_seconds * sr))
    gen = torch.Generator().manual_seed(int(seed))
    module: Any = policy
    was_training = bool(getattr(module, "training", False))
    if hasattr(module, "eval"):
        module.eval()
    chunk_checked = False
    queue: list[tuple[_File, int, np.ndarray]] = []
    open_files: list[_File] = []
    bar = tqdm(total=total, desc="enhance", unit="file", disable=not progress)

    def flush(items: list[tuple[_File, int, np.ndarray]]) -> None:
        outs = _run_batch(policy, [w for _, _, w in items], temperature, gen, sample_options)
        for (f, k, w), y in zip(items, outs, strict=True):
            if y is None:
                # a silent chunk of a long file stays silent; any other rejection fails the file
                if len(f.bounds) == 1 or np.max(np.abs(w), initial=0.0) >= SILENCE_PEAK:
                    part = "" if len(f.bounds) == 1 else f"chunk {k + 1} of {len(f.bounds)} of "
                    failed[f.entry.id] = (
                        f"the model rejected {part}the input (see the warning above)"
                    )
                y = np.zeros_like(w)
            else:
                y = mask_fusion(y, w, sr, *fuse_smooth) if fuse == "mask" else y
                y = remix_noisy(y, w, remix) if remix else y
            f.outputs[k] = y
        chunked = [f for f, _, _ in items if len(f.bounds) > 1]
        if chunked:  # a long file's progress, chunk by chunk
            f = chunked[-1]
            n_done = sum(o is not None for o in f.outputs)
            bar.set_postfix_str(f"{f.entry.id}: chunk {n_done}/{len(f.bounds)}")
        else:
            bar.set_postfix_str("")
        for f in [f for f in open_files if f.done]:
            open_files.remove(f)
            if f.entry.id not in failed:
                finish(f.entry, _stitched(f, overlap, crossfade))
            bar.update(1)

    try:
        for e, wav in inputs:
            if wav is None:
                bar.update(1)
                continue
            bounds = chunk_bounds(wav.size, chunk, overlap)
            if len(bounds) > 1 and not chunk_checked:
                _check_chunk_length(policy, bounds[0][1] - bounds[0][0], chunk_seconds)
                chunk_checked = True
            if len(bounds) == 1 and (why := _too_long_for_model(policy, wav.size)):
                # refused before the dereverberation, whose memory grows with the file
                log.warning("skipping %s: %s", e.id, why)
                failed[e.id] = why
                bar.update(1)
                continue
            f = _File(e, wav.size, bounds, [None] * len(bounds))
            open_files.append(f)
            for k, (a, b) in enumerate(bounds):  # the same batches as queueing the whole file
                queue.append((f, k, dereverb_input(wav[a:b], sr, dereverb)))
                if len(queue) >= batch_size:
                    flush(queue[:batch_size])
                    queue = queue[batch_size:]
        if queue:
            flush(queue)
    finally:
        bar.close()
        if hasattr(module, "train"):
            module.train(was_training)


def _check_processing(fuse: str, dereverb: str) -> None:
    for key, value in (("fuse", fuse), ("dereverb", dereverb)):
        if value not in CHOICES[key]:
            raise ValueError(f"{key} must be one of {CHOICES[key]}, got {value!r}")


def remix_noisy(enhanced: np.ndarray, noisy: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * enhanced + weight * noisy``: a little of the input mixed back into the
    output ("observation adding", Iwamoto et al., Interspeech 2022). Recognizers stumble more
    on an enhancer's artifacts than on the noise it removes; the input's own speech, faint under
    the output, gives back some of the phonetic detail the output lost, at some cost in the
    noise removed. Both are at the input's sample rate and length."""
    if enhanced.shape != noisy.shape:
        raise ValueError(f"shapes differ: enhanced {enhanced.shape}, noisy {noisy.shape}")
    out = (1.0 - weight) * enhanced.astype(np.float64) + weight * noisy.astype(np.float64)
    return out.astype(np.float32)


def _too_long_for_model(policy: Policy, n: int) -> str | None:
    """Why a whole input of ``n`` samples is more than the model takes at once (the built-in
    families' ``max_frames``), or None (also for models that do not say)."""
    cfg = getattr(policy, "config", None)
    features, most = getattr(cfg, "features", None), getattr(cfg, "max_frames", None)
    if not isinstance(most, int) or not hasattr(features, "num_tokens"):
        return None
    frames = features.num_tokens(n)
    if frames <= most:
        return None
    return (f"{n / policy.sample_rate:.1f} s is {frames} codec frames, more than the model's "
            f"max_frames={most}; enhance it in chunks (--chunk-seconds)")  # fmt: skip


def _check_chunk_length(policy: Policy, n: int, chunk_seconds: float) -> None:
    """Refuse a chunk length the model cannot take (before any file is cut into such chunks)."""
    probe = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.01
    try:
        policy.condition([probe])
    except ValueError as err:
        short = "too short" in str(err)
        raise ValueError(
            f"chunk_seconds={chunk_seconds:g}: the model cannot take chunks this "
            f"{'short' if short else 'long'} ({err}); give a "
            f"{'longer' if short else 'shorter'} --chunk-seconds"
        ) from None


@torch.no_grad()
def _run_batch(
    policy: Policy,
    wavs: list[np.ndarray],
    temperature: float,
    gen: torch.Generator,
    options: dict[str, Any] | None = None,
) -> list[np.ndarray | None]:
    """Enhanced waveforms of one batch; an input the policy rejects gives None (logged)."""
    try:
        cond = policy.condition(wavs)
    except ValueError:
        keep = []
        for i, w in enumerate(wavs):
            try:
                policy.condition([w])
                keep.append(i)
            except ValueError as err:
                log.warning("cannot enhance a chunk: %s", err)
        outs: list[np.ndarray | None] = [None] * len(wavs)
        if keep:
            ys = _run_batch(policy, [wavs[i] for i in keep], temperature, gen, options)
            for i, y in zip(keep, ys, strict=True):
                outs[i] = y
        return outs
    rollout = policy.sample(cond, temperature=temperature, generator=gen, **(options or {}))
    return [_fit(y, w.size) for y, w in zip(policy.decode(rollout), wavs, strict=True)]


def _stitched(f: _File, overlap: int, crossfade: str) -> np.ndarray:
    wav = stitch(f.outputs, f.bounds, f.num_samples, overlap, crossfade)  # type: ignore[arg-type]
    return within_full_scale(wav, f.entry.id)
