"""JSONL manifests: one utterance per line.

Fields: ``id`` (unique), ``audio`` (the signal to judge or enhance), optional ``reference``
(clean speech), ``text`` (transcript), ``speaker_ref`` (audio of the target voice), ``noisy``
(the input a system enhanced, when ``audio`` is an output) and any extra keys, kept as they are.
Relative paths are resolved against the manifest's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PATH_FIELDS = ("audio", "reference", "speaker_ref", "noisy")
KNOWN_FIELDS = ("id", *PATH_FIELDS, "text")


class ManifestError(ValueError):
    """A manifest or import source is malformed; the message names the file and line."""


@dataclass
class Entry:
    id: str
    audio: str
    reference: str | None = None
    text: str | None = None
    speaker_ref: str | None = None
    noisy: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def signature(self) -> str:
        """A fingerprint of what results for this entry depend on: its files' paths, sizes and
        modification times, and its text. A resumed run redoes an entry whose signature
        changed (its audio was replaced, or the manifest now points elsewhere)."""
        parts = [self.text or ""]
        paths = [self.audio, self.reference, self.speaker_ref]
        if self.noisy:  # an enhanced file's speaker reference when it has no other (entries
            paths.append(self.noisy)  # without one keep their earlier signatures)
        for path in paths:
            if path:
                real = os.path.realpath(path)  # one file however the manifest spells it
                try:
                    st = os.stat(real)
                    parts.append(f"{real}:{st.st_size}:{st.st_mtime_ns}")
                except OSError:
                    parts.append(f"{real}:missing")
        return hashlib.sha1("\0".join(parts).encode("utf-8")).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "audio": self.audio}
        for k in ("reference", "text", "speaker_ref", "noisy"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        d.update(self.extra)
        return d


def _parse_line(line: str, where: str, base: Path) -> Entry:
    try:
        d = json.loads(line)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{where}: invalid JSON ({err.msg})") from err
    if not isinstance(d, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(d).__name__}")
    for key in ("id", "audio"):
        if key in d and d[key] != "" and not isinstance(d[key], str):
            raise ManifestError(
                f"{where}: field {key!r} must be a string, got {type(d[key]).__name__} {d[key]!r}"
            )
        if not d.get(key):
            raise ManifestError(f"{where}: missing or empty field {key!r}")
    for key in PATH_FIELDS:
        v = d.get(key)
        if v is not None and not isinstance(v, str):
            raise ManifestError(f"{where}: field {key!r} must be a path string")
        if v:
            d[key] = str(v if os.path.isabs(v) else base / v)
    if d.get("text") is not None and not isinstance(d["text"], str):
        raise ManifestError(f"{where}: field 'text' must be a string")
    return Entry(
        id=d["id"],
        audio=d["audio"],
        reference=d.get("reference") or None,
        text=d.get("text"),
        speaker_ref=d.get("speaker_ref") or None,
        noisy=d.get("noisy") or None,
        extra={k: v for k, v in d.items() if k not in KNOWN_FIELDS},
    )


def read_manifest(path: str | Path, check_files: bool = False) -> list[Entry]:
    """Read a JSONL manifest; errors carry ``file:line``. Duplicate ids are an error."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            e = _parse_line(line, where, path.parent)
            if e.id in seen:
                raise ManifestError(f"{where}: duplicate id {e.id!r} (first on line {seen[e.id]})")
            seen[e.id] = n
            if check_files:
                for key in PATH_FIELDS:
                    p = getattr(e, key)
                    if p and not Path(p).is_file():
                        raise ManifestError(f"{where}: {key} file not found: {p}")
            entries.append(e)
    if not entries:
        raise ManifestError(f"{path}: manifest has no entries")
    return entries


def relocate(entries: Iterable[Entry], manifest: str | Path) -> list[Entry]:
    """Copies of ``entries`` (paths as :func:`read_manifest` gives them: absolute or relative to
    the working directory) with paths valid in a manifest written at ``manifest``: relative to
    its folder when the file lies inside it (so the folder can be moved), absolute otherwise."""
    folder = os.path.abspath(Path(manifest).parent)
    out = []
    for e in entries:
        new = Entry(**{**e.__dict__, "extra": dict(e.extra)})
        for key in PATH_FIELDS:
            p = getattr(e, key)
            if p:
                a = os.path.abspath(p)
                inside = os.path.commonpath([a, folder]) == folder
                setattr(new, key, os.path.relpath(a, folder) if inside else a)
        out.append(new)
    return out


def write_manifest(path: str | Path, entries: Iterable[Entry | dict[str, Any]]) -> Path:
    """Write entries as JSONL atomically; paths are written as given (relative ones are read
    back against the manifest's folder: see :func:`relocate` for entries read elsewhere)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; a manifest is a .jsonl file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for e in entries:
            f.write(
                json.dumps(e.to_json() if isinstance(e, Entry) else e, ensure_ascii=False) + "\n"
            )
    tmp.replace(path)
    return path


def from_kaldi(wav_scp: str | Path, text: str | Path | None = None) -> list[Entry]:
    """Entries from a Kaldi-style ``uid path`` list (and optional ``uid transcript`` file).

    Piped commands (``uid cmd |``) are not supported and are reported with their line number.
    """
    wav_scp = Path(wav_scp)
    if not wav_scp.is_file():
        raise ManifestError(f"{wav_scp}: file not found")
    texts: dict[str, str] = {}
    if text is not None and not Path(text).is_file():
        raise ManifestError(f"{text}: transcript file (Kaldi text) not found")
    if text is not None:
        for line in Path(text).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            texts[parts[0]] = parts[1] if len(parts) > 1 else ""
    entries, seen = [], set()
    for n, line in enumerate(wav_scp.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        where = f"{wav_scp}:{n}"
        if len(parts) != 2:
            raise ManifestError(f"{where}: expected 'uid path'")
        uid, p = parts
        if p.endswith("|"):
            raise ManifestError(f"{where}: piped commands are not supported; give a file path")
        if uid in seen:
            raise ManifestError(f"{where}: duplicate uid {uid!r}")
        seen.add(uid)
        p = p if os.path.isabs(p) else str(wav_scp.parent / p)
        entries.append(Entry(id=uid, audio=p, text=texts.get(uid)))
    if not entries:
        raise ManifestError(f"{wav_scp}: no entries")
    return entries
