"""Back-ends of ``sealign data import``: manifests from data sets already on disk.

* :func:`import_dns2020` - DNS Challenge 2020 synthetic test set: ``no_reverb/`` and
  ``with_reverb/``, each with ``clean/`` and ``noisy/``, paired by ``fileid_N`` in the names
  (``clean_fileid_0.wav`` <-> ``book_..._snr4_fileid_0.wav``).
* :func:`import_voicebank` - VoiceBank+DEMAND (``clean_testset_wav/``, ``noisy_testset_wav/``,
  optional ``testset_txt/`` transcripts; the train split and ``*_16k`` folders work too).
* :func:`import_parallel` - any parallel clean/noisy folders, paired by relative path.
* :func:`import_recordings` - real recordings without references.

Entries have ``audio`` = noisy, ``reference`` = clean, ``text`` when known. Every file's header
is checked (readable, non-empty, mono unless ``multichannel``, expected sample rate) and every
pair (partner present, same rate, same length); ``check_audio=True`` also reads every sample
(NaN / inf, all zeros), which costs a full decode of the corpus. A failed check is not dropped
silently: it is returned as an :class:`ImportProblem` and logged, and the pair is left out of
the entries (``strict=True`` raises :class:`~sealign.data.manifest.ManifestError` instead). A
missing or empty folder raises.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from sealign.audio.io import AUDIO_EXTENSIONS
from sealign.data.manifest import Entry, ManifestError, relocate, write_manifest
from sealign.utils.jsonio import write_text

log = logging.getLogger(__name__)

PROBLEM_KINDS = (
    "missing_partner",  # a clean file without noisy partner or the reverse
    "length_mismatch",  # clean and noisy lengths differ (beyond the tolerance)
    "rate_mismatch",  # clean and noisy sample rates differ
    "wrong_rate",  # a file's sample rate is not the expected one
    "not_mono",  # more than one channel (allowed with multichannel: loaders average them)
    "non_finite",  # NaN or inf samples (check_audio)
    "silent",  # every sample zero (check_audio)
    "unreadable",  # the decoder failed
    "empty",  # 0 samples
    "unrecognised_name",  # a DNS file without fileid_N
    "duplicate",  # two files claim the same pairing key
)
_FILEID = re.compile(r"fileid_(\d+)")


@dataclass(frozen=True)
class ImportProblem:
    """One file or pair that was not imported, and why."""

    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail} [{self.kind}]"


@dataclass(frozen=True)
class _Rules:
    """What every file must satisfy besides being readable and non-empty."""

    sample_rate: int | None = None
    multichannel: bool = False


@dataclass(frozen=True)
class _Info:
    path: Path
    sample_rate: int
    frames: int


def _require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise ManifestError(f"{path}: {what} folder not found")
    if not path.is_dir():
        raise ManifestError(f"{path}: {what} is not a folder")
    return path


def _audio_files(folder: Path, what: str) -> list[Path]:
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )
    if not files:
        raise ManifestError(
            f"{folder}: {what} folder has no audio files ({', '.join(AUDIO_EXTENSIONS)})"
        )
    return files


def _probe(path: Path, rules: _Rules, problems: list[ImportProblem]) -> _Info | None:
    """Header checks of one file; appends to ``problems`` and returns None when it fails."""
    try:
        info = sf.info(str(path))
    except Exception as err:  # noqa: BLE001 - any decoder failure means unreadable
        problems.append(ImportProblem("unreadable", str(path), f"unreadable audio ({err})"))
        return None
    if info.frames <= 0:
        problems.append(ImportProblem("empty", str(path), "empty audio (0 samples)"))
        return None
    if info.channels != 1 and not rules.multichannel:
        problems.append(
            ImportProblem(
                "not_mono",
                str(path),
                f"{info.channels} channels; expected mono (--multichannel: average them)",
            )
        )
        return None
    sample_rate = rules.sample_rate
    if sample_rate is not None and info.samplerate != sample_rate:
        problems.append(
            ImportProblem(
                "wrong_rate",
                str(path),
                f"sample rate {info.samplerate} Hz; expected {sample_rate} Hz",
            )
        )
        return None
    return _Info(path, int(info.samplerate), int(info.frames))


def _check_pair(
    noisy: Path,
    clean: Path,
    rules: _Rules,
    length_tolerance: float,
    problems: list[ImportProblem],
) -> bool:
    n = _probe(noisy, rules, problems)
    c = _probe(clean, rules, problems)
    if n is None or c is None:
        return False
    if n.sample_rate != c.sample_rate:
        problems.append(
            ImportProblem(
                "rate_mismatch",
                str(noisy),
                f"sample rate {n.sample_rate} Hz but its reference {clean} has {c.sample_rate} Hz",
            )
        )
        return False
    if abs(n.frames - c.frames) > round(length_tolerance * n.sample_rate):
        problems.append(
            ImportProblem(
                "length_mismatch",
                str(noisy),
                f"{n.frames} samples but its reference {clean} has {c.frames}",
            )
        )
        return False
    return True


def _content_problem(path: Path) -> ImportProblem | None:
    """Reads every sample of ``path`` (in blocks, so any length fits in memory)."""
    heard = False
    try:
        for block in sf.blocks(str(path), blocksize=1 << 20, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                return ImportProblem("non_finite", str(path), "NaN or inf samples")
            heard = heard or bool(block.any())
    except Exception as err:  # noqa: BLE001 - a decoder failure part-way through the file
        return ImportProblem("unreadable", str(path), f"unreadable audio ({err})")
    return None if heard else ImportProblem("silent", str(path), "every sample is zero")


def _check_contents(name: str, entries: list[Entry], problems: list[ImportProblem]) -> list[Entry]:
    """The entries whose audio and reference decode to finite, not all-zero samples."""
    kept = []
    for e in tqdm(entries, desc=f"{name}: reading audio", unit="entry"):
        found = [_content_problem(Path(p)) for p in (e.audio, e.reference) if p]
        found = [f for f in found if f is not None]
        problems.extend(found)
        if not found:
            kept.append(e)
    return kept


def _finish(
    name: str,
    entries: list[Entry],
    problems: list[ImportProblem],
    strict: bool,
    check_audio: bool = False,
) -> tuple[list[Entry], list[ImportProblem]]:
    if check_audio and not (strict and problems):  # strict fails below without a decode
        entries = _check_contents(name, entries, problems)
    for p in problems:
        log.warning("%s import: %s", name, p)
    if problems:
        log.warning("%s import: %d entries, %d problems", name, len(entries), len(problems))
        if strict:
            shown = "; ".join(str(p) for p in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ManifestError(f"{name} import: {len(problems)} problems: {shown}{more}")
    else:
        log.info("%s import: %d entries", name, len(entries))
    if not entries:
        raise ManifestError(
            f"{name} import: no usable entries"
            + (f" ({len(problems)} problems, first: {problems[0]})" if problems else "")
        )
    return entries, problems


def _rel_key(path: Path, root: Path) -> str:
    return str(path.relative_to(root).with_suffix("")).replace(os.sep, "/")


def file_ids(files: list[Path], root: Path) -> list[str]:
    """An id per file: its path relative to ``root`` without the extension, or with it where two
    files would otherwise share an id (``a.wav`` and ``a.flac``)."""
    keys = [_rel_key(p, root) for p in files]
    counts = Counter(keys)
    return [
        k if counts[k] == 1 else str(p.relative_to(root)).replace(os.sep, "/")
        for k, p in zip(keys, files, strict=True)
    ]


def _sidecar_text(*paths: Path) -> str | None:
    for p in paths:
        for ext in (".txt", ".lab"):
            t = p.with_suffix(ext)
            if t.is_file():
                return " ".join(t.read_text(encoding="utf-8", errors="replace").split())
    return None


def _pair_maps(
    noisy: dict[str, Path],
    clean: dict[str, Path],
    rules: _Rules,
    length_tolerance: float,
    problems: list[ImportProblem],
    clean_dir: Path,
    noisy_dir: Path,
) -> list[tuple[str, Path, Path]]:
    """Keys present on both sides whose files pass the checks; reports the rest."""
    pairs = []
    for key in sorted(set(noisy) | set(clean), key=_natural):
        if key not in clean:
            problems.append(
                ImportProblem(
                    "missing_partner", str(noisy[key]), f"no clean partner in {clean_dir}"
                )
            )
        elif key not in noisy:
            problems.append(
                ImportProblem(
                    "missing_partner", str(clean[key]), f"no noisy partner in {noisy_dir}"
                )
            )
        elif _check_pair(noisy[key], clean[key], rules, length_tolerance, problems):
            pairs.append((key, noisy[key], clean[key]))
    return pairs


def _natural(key: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _keyed(
    files: Iterable[Path], key: Callable[[Path], str | None], problems: list[ImportProblem]
) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        k = key(p)
        if k is None:
            problems.append(ImportProblem("unrecognised_name", str(p), "no 'fileid_N' in the name"))
        elif k in out:
            problems.append(
                ImportProblem("duplicate", str(p), f"same key {k!r} as {out[k]}; this file skipped")
            )
        else:
            out[k] = p
    return out


# ---------------------------------------------------------------------------------- DNS 2020


def _dns_fileid(p: Path) -> str | None:
    hits = _FILEID.findall(p.stem)
    return hits[-1] if hits else None


def _dns_subsets(root: Path, subsets: Iterable[str]) -> list[tuple[str, Path]]:
    if (root / "clean").is_dir() and (root / "noisy").is_dir():
        return [(root.name, root)]  # a single subset folder was given
    for base in (root, root / "synthetic", root / "test_set" / "synthetic"):
        found = [(s, base / s) for s in subsets if (base / s).is_dir()]
        if found:
            return found
    raise ManifestError(
        f"{root}: not a DNS 2020 synthetic test set (expected {' or '.join(subsets)} folders, "
        "each with clean/ and noisy/)"
    )


def import_dns2020(
    root: str | Path,
    subsets: Iterable[str] = ("no_reverb", "with_reverb"),
    sample_rate: int | None = 16000,
    length_tolerance: float = 0.0,  # seconds the lengths of a pair may differ by
    strict: bool = False,
    multichannel: bool = False,
    check_audio: bool = False,
) -> tuple[list[Entry], list[ImportProblem]]:
    """DNS Challenge 2020 synthetic test set (``root`` = ``synthetic/``, its parent or a subset).

    Ids are ``<subset>/fileid_<N>``; extras: ``dataset``, ``subset``, ``snr_db`` (from ``snrX``
    in the noisy name), ``speaker`` (``reader_X``) when present, and
    ``reverberant_reference`` (True for ``with_reverb``, whose clean files are reverberant).
    """
    root = _require_dir(Path(root), "DNS 2020 test set")
    subsets = list(dict.fromkeys(subsets))  # a subset named twice is imported once
    entries: list[Entry] = []
    problems: list[ImportProblem] = []
    rules = _Rules(sample_rate, multichannel)
    for subset, folder in _dns_subsets(root, subsets):
        clean_dir = _require_dir(folder / "clean", f"DNS 2020 {subset}/clean")
        noisy_dir = _require_dir(folder / "noisy", f"DNS 2020 {subset}/noisy")
        clean = _keyed(_audio_files(clean_dir, "clean"), _dns_fileid, problems)
        noisy = _keyed(_audio_files(noisy_dir, "noisy"), _dns_fileid, problems)
        pairs = _pair_maps(noisy, clean, rules, length_tolerance, problems, clean_dir, noisy_dir)
        for fid, n_path, c_path in pairs:
            extra: dict[str, Any] = {
                "dataset": "dns2020",
                "subset": subset,
                "reverberant_reference": subset == "with_reverb",
            }
            snr = re.search(r"snr(-?\d+(?:\.\d+)?)", n_path.stem)
            if snr:
                extra["snr_db"] = float(snr.group(1))
            reader = re.search(r"reader_(\d+)", n_path.stem)
            if reader:
                extra["speaker"] = reader.group(1)
            entries.append(
                Entry(f"{subset}/fileid_{fid}", str(n_path), reference=str(c_path), extra=extra)
            )
    return _finish("DNS 2020", entries, problems, strict, check_audio)


# ---------------------------------------------------------------------------- VoiceBank+DEMAND


def _vb_dir(root: Path, pattern: str, what: str, sample_rate: int | None = None) -> Path | None:
    hits = sorted(p for p in root.glob(pattern) if p.is_dir())
    if not hits:
        return None
    if sample_rate == 16000:  # the community's 16 kHz copies are named *_16k
        hits = sorted(hits, key=lambda p: not p.name.endswith("16k"))
    elif sample_rate is not None:
        hits = sorted(hits, key=lambda p: p.name.endswith("16k"))
    if len(hits) > 1:
        log.info(
            "VoiceBank: several %s folders %s; using %s", what, [h.name for h in hits], hits[0]
        )
    return hits[0]


def import_voicebank(
    root: str | Path,
    split: str = "test",
    sample_rate: int | None = None,
    length_tolerance: float = 0.0,  # seconds the lengths of a pair may differ by
    strict: bool = False,
    multichannel: bool = False,
    check_audio: bool = False,
) -> tuple[list[Entry], list[ImportProblem]]:
    """VoiceBank+DEMAND: ``clean_<split>set*wav*`` and ``noisy_<split>set*wav*`` under ``root``.

    Files pair by name (``p232_001.wav``); ``speaker`` is the prefix (``p232``) and ``text``
    comes from ``<split>set*txt*/<name>.txt`` when present. The official release is 48 kHz; pass
    ``sample_rate`` to require a rate.
    """
    if split not in ("test", "train"):
        raise ManifestError(f"VoiceBank split must be 'test' or 'train', got {split!r}")
    root = _require_dir(Path(root), "VoiceBank+DEMAND")
    clean_dir = _vb_dir(root, f"clean_{split}set*wav*", "clean", sample_rate)
    noisy_dir = _vb_dir(root, f"noisy_{split}set*wav*", "noisy", sample_rate)
    if clean_dir is None or noisy_dir is None:
        raise ManifestError(
            f"{root}: not a VoiceBank+DEMAND folder (expected clean_{split}set_wav/ and "
            f"noisy_{split}set_wav/)"
        )
    txt_dir = _vb_dir(root, f"{split}set*txt*", "transcript")
    problems: list[ImportProblem] = []
    rules = _Rules(sample_rate, multichannel)
    clean = _keyed(_audio_files(clean_dir, "clean"), lambda p: _rel_key(p, clean_dir), problems)
    noisy = _keyed(_audio_files(noisy_dir, "noisy"), lambda p: _rel_key(p, noisy_dir), problems)
    pairs = _pair_maps(noisy, clean, rules, length_tolerance, problems, clean_dir, noisy_dir)
    entries = []
    for key, n_path, c_path in pairs:
        text = None
        if txt_dir is not None:
            t = txt_dir / f"{key}.txt"
            if t.is_file():
                text = " ".join(t.read_text(encoding="utf-8", errors="replace").split())
        name = Path(key).name
        extra = {"dataset": "voicebank_demand", "split": split, "speaker": name.split("_")[0]}
        entries.append(Entry(key, str(n_path), reference=str(c_path), text=text, extra=extra))
    return _finish("VoiceBank+DEMAND", entries, problems, strict, check_audio)


# ------------------------------------------------------------------------ generic and real


def import_parallel(
    noisy_dir: str | Path,
    clean_dir: str | Path,
    sample_rate: int | None = None,
    length_tolerance: float = 0.0,  # seconds the lengths of a pair may differ by
    strict: bool = False,
    multichannel: bool = False,
    check_audio: bool = False,
) -> tuple[list[Entry], list[ImportProblem]]:
    """Parallel folders paired by relative path (extension may differ); ``text`` from a
    ``.txt``/``.lab`` file beside the noisy or clean file when present."""
    noisy_root = _require_dir(Path(noisy_dir), "noisy")
    clean_root = _require_dir(Path(clean_dir), "clean")
    a, b = noisy_root.resolve(), clean_root.resolve()
    if a == b or a.is_relative_to(b) or b.is_relative_to(a):
        raise ValueError(f"the noisy folder {noisy_dir} and the clean folder {clean_dir} must be "
                         "separate folders, neither inside the other")  # fmt: skip
    problems: list[ImportProblem] = []
    rules = _Rules(sample_rate, multichannel)
    noisy = _keyed(_audio_files(noisy_root, "noisy"), lambda p: _rel_key(p, noisy_root), problems)
    clean = _keyed(_audio_files(clean_root, "clean"), lambda p: _rel_key(p, clean_root), problems)
    pairs = _pair_maps(noisy, clean, rules, length_tolerance, problems, clean_root, noisy_root)
    entries = [
        Entry(key, str(n), reference=str(c), text=_sidecar_text(n, c)) for key, n, c in pairs
    ]
    return _finish("parallel", entries, problems, strict, check_audio)


def import_recordings(
    folder: str | Path,
    sample_rate: int | None = None,
    strict: bool = False,
    multichannel: bool = False,
    check_audio: bool = False,
) -> tuple[list[Entry], list[ImportProblem]]:
    """Real recordings without references (non-intrusive evaluation, inference)."""
    root = _require_dir(Path(folder), "recordings")
    problems: list[ImportProblem] = []
    rules = _Rules(sample_rate, multichannel)
    entries = []
    files = list(_audio_files(root, "recordings"))
    for p, key in zip(files, file_ids(files, root), strict=True):
        if _probe(p, rules, problems) is not None:
            entries.append(Entry(key, str(p), text=_sidecar_text(p)))
    return _finish("recordings", entries, problems, strict, check_audio)


IMPORTERS: dict[str, Callable[..., tuple[list[Entry], list[ImportProblem]]]] = {
    "dns2020": import_dns2020,
    "voicebank": import_voicebank,
    "parallel": import_parallel,
    "recordings": import_recordings,
}


def run_import(kind: str, output: str | Path, **kwargs: Any) -> tuple[Path, list[ImportProblem]]:
    """Run an importer and write its manifest; problems also go to ``<output>.problems.txt``."""
    if kind not in IMPORTERS:
        raise ManifestError(f"unknown import kind {kind!r}; choose from {', '.join(IMPORTERS)}")
    entries, problems = IMPORTERS[kind](**kwargs)
    out = write_manifest(output, relocate(entries, output))
    report = out.with_name(out.name + ".problems.txt")
    if problems:
        write_text(report, "".join(f"{p}\n" for p in problems))
        log.warning("%d import problems listed in %s", len(problems), report)
    elif report.exists():
        report.unlink()
    return out, problems
