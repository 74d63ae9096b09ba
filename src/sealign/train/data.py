"""(noisy, clean) waveform pairs from JSONL manifests, for every trainer.

Manifest entries give the noisy input in ``audio`` and the clean target in ``reference``. With
``degrade: true`` the manifests hold clean speech (``reference``, else ``audio``) and the noisy
side is made on the fly with :func:`sealign.data.degrade.degrade`.

Everything random is a pure function of ``(seed, epoch, index)``: the epoch's shuffled order comes
from ``(seed, epoch)`` and each example's crop offset and degradation from ``(seed, epoch,
dataset index)`` (``epoch`` modulo ``draw_cycle`` when that is set). So the position
``(epoch, index)`` — index = examples of this rank's shard of the order already consumed — is
all a checkpoint needs to resume the exact same stream.
Unreadable manifest lines and unusable audio are skipped with a logged reason, never raised.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sealign.audio.io import AudioLimits, load_audio
from sealign.data.degrade import DegradationConfig, RirBank, build_noise_bank, degrade
from sealign.data.manifest import Entry, ManifestError, _parse_line
from sealign.data.noise import NoiseBank, SampleContext
from sealign.infer.dereverb import DEREVERBS, dereverb_input

log = logging.getLogger(__name__)

MIN_PEAK = 1e-4  # crops quieter than this (-80 dBFS) are treated as silence
CROP_TRIES = 4


class DataError(ValueError):
    """No usable training data; the message names the manifests and the skip reasons."""


@dataclass
class DataConfig:
    """Manifests and how examples are cut from them."""

    train: list[str] = field(default_factory=list)  # JSONL manifests (audio=noisy, reference=clean)
    valid: list[str] = field(default_factory=list)
    batch_size: int = 8
    crop_seconds: float = 4.0  # random crop length; 0 = whole utterances
    min_seconds: float = 0.5  # shorter files are skipped
    max_seconds: float = 60.0  # longer files are skipped
    max_length_mismatch: float = 0.05  # seconds noisy and clean may differ (then trimmed)
    degrade: bool = False  # make the noisy side on the fly from clean speech
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    cache_targets: bool = True  # reuse encoded targets whose clean side never changes
    # > 0: each example's crop and degradation repeat every draw_cycle epochs (the order still
    # reshuffles), so a codec with an analysis cache analyses each draw once
    draw_cycle: int = 0
    analysis_cache_gb: float = 6.0  # memory the codec may use to cache those draws' analyses
    # "wpe": dereverberate each noisy example before the model sees it (sealign.infer.dereverb)
    dereverb: str = "none"

    def check(self, prefix: str = "data.") -> None:
        """Raise ``ValueError`` naming the first invalid key (with ``prefix``)."""
        if not self.train:
            raise ValueError(f"{prefix}train: give at least one training manifest")
        for key in ("train", "valid"):
            for m in getattr(self, key):
                if not Path(m).is_file():
                    hint = ("; `sealign data demo` builds the demo corpus there"
                            if Path(m).parent == Path("data/demo") else "")  # fmt: skip
                    raise ValueError(f"{prefix}{key}: manifest not found: {m}{hint}")
        if self.batch_size < 1:
            raise ValueError(f"{prefix}batch_size must be >= 1, got {self.batch_size}")
        if self.crop_seconds < 0:
            raise ValueError(f"{prefix}crop_seconds must be >= 0, got {self.crop_seconds}")
        if self.min_seconds <= 0 or self.max_seconds < self.min_seconds:
            raise ValueError(
                f"{prefix}min_seconds/max_seconds: need 0 < min_seconds <= max_seconds, "
                f"got {self.min_seconds} and {self.max_seconds}"
            )
        if 0 < self.crop_seconds < self.min_seconds:
            raise ValueError(
                f"{prefix}crop_seconds ({self.crop_seconds}) is below min_seconds "
                f"({self.min_seconds})"
            )
        if self.max_length_mismatch < 0:
            raise ValueError(f"{prefix}max_length_mismatch must be >= 0")
        if self.draw_cycle < 0 or self.analysis_cache_gb < 0:
            raise ValueError(f"{prefix}draw_cycle and {prefix}analysis_cache_gb must be >= 0")
        if self.dereverb not in DEREVERBS:
            raise ValueError(f"{prefix}dereverb must be one of {DEREVERBS}, got {self.dereverb!r}")


@dataclass
class Example:
    """One training pair at the model's sample rate (equal lengths)."""

    id: str
    index: int  # position in the dataset (not in the shuffled order)
    noisy: np.ndarray
    clean: np.ndarray
    text: str | None = None
    fixed_clean: bool = False  # the clean side is the same at every draw (cacheable)


def read_manifests(paths: Sequence[str | Path]) -> tuple[list[Entry], list[str]]:
    """Entries of several manifests; malformed lines and repeated ids are skipped and reported.

    A missing manifest is an error (a config mistake, found before any work).
    """
    entries: list[Entry] = []
    problems: list[str] = []
    seen: set[str] = set()
    for path in map(Path, paths):
        if not path.is_file():
            raise ManifestError(f"{path}: manifest not found")
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    e = _parse_line(line, f"{path}:{n}", path.parent)
                except ManifestError as err:
                    problems.append(str(err))
                    continue
                if e.id in seen:
                    problems.append(f"{path}:{n}: duplicate id {e.id!r}")
                    continue
                seen.add(e.id)
                entries.append(e)
    for p in problems:
        log.warning("skipping manifest line: %s", p)
    return entries, problems


def manifest_hashes(manifests: list[str]) -> dict[str, str]:
    """SHA-1 of each file's content by real path (a resume may spell them otherwise); "" for a
    file that cannot be read."""
    import hashlib

    now = {}
    for m in manifests:
        try:
            now[os.path.realpath(m)] = hashlib.sha1(Path(m).read_bytes()).hexdigest()
        except OSError:
            now[os.path.realpath(m)] = ""
    return now


def follow_manifests(state: Any, manifests: list[str]) -> None:
    """Record the manifests' contents in ``state.extra`` (saved with each checkpoint), warning
    on a resume whose manifests changed since: the data stream then differs from the
    uninterrupted run's."""
    now = manifest_hashes(manifests)
    before = state.extra.get("manifests")
    if before is not None:
        changed = sorted(m for m in set(before) | set(now) if before.get(m) != now.get(m))
        if changed:
            log.warning("manifests changed since the checkpoint (%s): training goes on, but on "
                        "other data than the run would have seen", ", ".join(changed))  # fmt: skip
    state.extra["manifests"] = now


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


class PairDataset:
    """Noisy/clean pairs with deterministic shuffling, resumable position and rank sharding.

    ``train=False`` keeps manifest order and draws every crop / degradation with epoch 0, so the
    validation set is the same at every evaluation.
    """

    def __init__(
        self,
        manifests: Sequence[str | Path],
        cfg: DataConfig,
        sample_rate: int,
        seed: int = 0,
        train: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if cfg.degrade and cfg.degradation.sample_rate != sample_rate:
            raise ValueError(
                f"data.degradation.sample_rate ({cfg.degradation.sample_rate}) must equal the "
                f"model's sample rate ({sample_rate})"
            )
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.seed = int(seed)
        self.train = train
        self.rank, self.world_size = rank, world_size
        self.manifests = [str(m) for m in manifests]
        entries, self.problems = read_manifests(manifests)
        self.skipped: dict[str, str] = {}  # id → reason, for files that can never be used
        self.failed_draws = 0  # examples dropped in one epoch only (a failed crop or degradation)
        self.entries: list[Entry] = []
        for e in entries:
            if not cfg.degrade and not e.reference:
                self._skip(e.id, "no reference (clean) audio; set data.degrade=true for clean-only")
            else:
                self.entries.append(e)
        if not self.entries:
            raise DataError(f"{', '.join(self.manifests)}: no usable entries")
        same = sum(bool(e.reference) and _same_file(e.audio, e.reference) for e in self.entries)
        if same and not cfg.degrade:
            log.warning("%s: %d of %d entries have the same file as input and reference (a clean "
                        "corpus?): the model learns to copy its input; set data.degrade=true to "
                        "degrade them on the fly", ", ".join(self.manifests), same,
                        len(self.entries))  # fmt: skip
        self.limits = AudioLimits(min_duration=cfg.min_seconds, max_duration=cfg.max_seconds)
        self.epoch = 0
        self.index = 0
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._noise_bank: NoiseBank | None = None
        self._rir_bank: RirBank | None = None
        if cfg.degrade:
            self._build_banks()

    def __len__(self) -> int:
        return len(self.entries)

    def _skip(self, utt_id: str, reason: str) -> None:
        if utt_id not in self.skipped:
            log.warning("skipping %s: %s", utt_id, reason)
        self.skipped[utt_id] = reason

    # -- position ----------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """Dataset indices this rank visits in ``epoch`` (shuffled when training)."""
        if self._order_cache is not None and self._order_cache[0] == epoch:
            return self._order_cache[1]
        n = len(self.entries)
        if self.train:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
            order = np.arange(n)
        if self.world_size > 1:  # equal shard sizes, as DDP needs
            order = order[: n - n % self.world_size][self.rank :: self.world_size]
        self._order_cache = (epoch, order)
        return order

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])

    # -- examples ----------------------------------------------------------------------------
    def example_rng(self, index: int, epoch: int) -> np.random.Generator:
        if self.train and self.cfg.draw_cycle:
            epoch %= self.cfg.draw_cycle
        return np.random.default_rng([self.seed, epoch, index])

    def get(self, index: int, epoch: int = 0) -> Example | None:
        """Example ``index`` as drawn in ``epoch``; None (reason logged) when it is unusable.

        Problems of the file itself (unreadable, too short, mismatched lengths) exclude it for
        the rest of the run; a failed draw (silent crop, degradation error) only skips this draw,
        so the stream stays a pure function of the position.
        """
        e = self.entries[index]
        if e.id in self.skipped:
            return None
        try:
            noisy, clean = self._load(e)
        except Exception as err:  # noqa: BLE001 - a bad file must never stop a run
            self._skip(e.id, f"{type(err).__name__}: {err}")
            return None
        rng = self.example_rng(index, epoch)
        try:
            start, stop = self._crop(clean, rng)
            if start is None:
                raise ValueError("no crop with non-silent clean speech")
            fixed = not self.train or (not self.cfg.degrade and start == 0 and stop == clean.size)
            clean = clean[start:stop]
            if noisy is None:
                spk = e.extra.get("speaker")
                ctx = SampleContext(e.id, None if spk is None else str(spk))
                noisy, clean, _ = degrade(
                    clean, rng, self.cfg.degradation, self._noise_bank, self._rir_bank, ctx
                )
            else:
                noisy = noisy[start:stop]
            noisy = dereverb_input(noisy, self.sample_rate, self.cfg.dereverb)
        except Exception as err:  # noqa: BLE001
            log.warning("skipping %s in epoch %d: %s: %s", e.id, epoch, type(err).__name__, err)
            self.failed_draws += 1
            return None
        return Example(e.id, index, noisy.copy(), clean.copy(), e.text, fixed)

    def _load(self, e: Entry) -> tuple[np.ndarray | None, np.ndarray]:
        """``(noisy, clean)`` of equal length (noisy None when degrading on the fly)."""
        sr = self.sample_rate
        if self.cfg.degrade:
            clean, _ = load_audio(e.reference or e.audio, sr, self.limits)
            return None, clean
        noisy, _ = load_audio(e.audio, sr, self.limits)
        clean, _ = load_audio(e.reference, sr, self.limits)  # type: ignore[arg-type]
        diff = abs(noisy.size - clean.size)
        if diff > self.cfg.max_length_mismatch * sr:
            raise ValueError(f"noisy and clean lengths differ by {diff / sr:.3f} s")
        n = min(noisy.size, clean.size)
        return noisy[:n], clean[:n]

    def _crop(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[int | None, int]:
        """``(start, stop)`` of a crop whose clean side is not silent; start None when none is."""
        n = clean.size
        crop = int(round(self.cfg.crop_seconds * self.sample_rate))
        if crop <= 0 or n <= crop:
            return (0, n) if np.abs(clean).max() >= MIN_PEAK else (None, 0)
        for _ in range(CROP_TRIES):
            start = int(rng.integers(0, n - crop + 1))
            if np.abs(clean[start : start + crop]).max() >= MIN_PEAK:
                return start, start + crop
        return None, 0

    def _build_banks(self) -> None:
        """Noise (procedural, folders, babble from this corpus) and RIR banks for ``degrade``."""
        cfg = self.cfg.degradation
        clean_entries = [Entry(e.id, e.reference or e.audio, extra=e.extra) for e in self.entries]
        self._noise_bank = build_noise_bank(cfg, clean_entries)
        if cfg.rir_dir:
            self._rir_bank = RirBank.from_folder(cfg.rir_dir, cfg.sample_rate)
        elif cfg.rir_pool > 0 and cfg.p_reverb > 0:
            self._rir_bank = RirBank.simulate(
                cfg.rir_pool, self.seed, cfg.sample_rate, cfg.rt60, cfg.room
            )

    # -- iteration ---------------------------------------------------------------------------
    def next_batch(self) -> list[Example]:
        """The next ``batch_size`` usable examples of the endless shuffled stream.

        Advances :attr:`epoch` / :attr:`index` past them; a batch may span two epochs.
        """
        batch: list[Example] = []
        misses = 0
        while len(batch) < self.cfg.batch_size:
            order = self.order(self.epoch)
            if self.index >= len(order):
                self.epoch, self.index = self.epoch + 1, 0
                if not len(order):
                    raise DataError(f"{', '.join(self.manifests)}: shard {self.rank} is empty")
                continue
            i = int(order[self.index])
            self.index += 1
            ex = self.get(i, self.epoch)
            if ex is None:
                misses += 1
                if misses >= len(order) and not batch:
                    reasons = sorted(set(self.skipped.values()))[:3]
                    raise DataError(
                        f"{', '.join(self.manifests)}: no usable example in a whole epoch "
                        f"(e.g. {'; '.join(reasons)})"
                    )
                continue
            misses = 0
            batch.append(ex)
        return batch

    def iter_batches(self, limit: int | None = None) -> Iterator[list[Example]]:
        """One pass over this rank's examples as drawn in epoch 0 (validation), in batches."""
        batch: list[Example] = []
        count = 0
        for i in self.order(0):
            if limit is not None and count >= limit:
                break
            ex = self.get(int(i), 0)
            if ex is None:
                continue
            batch.append(ex)
            count += 1
            if len(batch) == self.cfg.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
