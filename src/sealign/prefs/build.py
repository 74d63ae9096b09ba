"""``sealign prefs``: sample candidates from a policy, score them, store everything DPO needs.

Layout of a preference dataset folder::

    config.yaml
    candidates.jsonl          one line per candidate: input_id, cand_id, family, audio, targets,
                              noisy, reference, text, scores {column: value},
                              skipped {metric: reason}
    audio/<input>/<cand>.wav  decoded candidates
    targets/<input>.npz       the policy's output for each candidate (tokens or latents), from
                              which DPO recomputes log-likelihoods
    pairs/<criterion>.jsonl   pairs (input_id, winner, loser, margin) of a criterion
    yield.json, yield.md      pair yield of every criterion, total and per input

Inputs already present in ``candidates.jsonl`` are skipped, so an interrupted run resumes.
Each candidate records a fingerprint of the metric settings its scores came from
(``metric_settings``); before pairs are formed, :func:`refresh_scores` scores again, from the
stored audio, what another version or other options of a metric scored (or what lacks a metric
added since), so that no column compares candidates scored two ways.
A job split into shards (``shard: K/N``, or one shard per ``torchrun`` rank) writes
``candidates.shard-K-of-N.jsonl`` per shard (and ``.done`` when the shard has finished);
:func:`merge_shards` folds them into ``candidates.jsonl`` before pairs are formed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from sealign.audio.io import AudioLimits, load_audio, write_audio
from sealign.data.manifest import Entry, read_manifest
from sealign.eval.score import column_name, metric_settings
from sealign.metrics.base import Metric, MetricUnavailable, Utterance
from sealign.metrics.cache import open_score_cache, score_with_cache
from sealign.models.policy import Policy, Targets, check_sample_options
from sealign.models.shipped import model_path
from sealign.prefs.pairs import Candidate, PairReport, make_pairs, no_pairs_message
from sealign.rewards.composite import auto_scale
from sealign.train.sft import split_targets
from sealign.utils.device import check_device, parse_device
from sealign.utils.jsonio import read_jsonl, tmp_name, write_jsonl
from sealign.utils.shard import Shard, merge_shard_files, shard_files

log = logging.getLogger(__name__)

CANDIDATES = "candidates.jsonl"
# present while an unsharded run samples (sharded runs have their .done markers): a dataset
# holding it was killed before every input had its candidates
UNFINISHED = "candidates.unfinished"

DEFAULT_COLUMNS = [
    "dnsmos_sig",
    "dnsmos_bak",
    "dnsmos_ovrl",
    "distillmos",
    "spk_sim",
    "speechbertscore_whisper_base",
]


@dataclass
class PrefsConfig:
    """Settings of ``sealign prefs``."""

    model: str = ""  # policy (run, checkpoint or policy folder)
    manifest: str = ""  # noisy inputs (audio = noisy, reference = clean, text); a,b,...: several
    output: str = ""
    num_candidates: int = 4
    temperature: float = 1.0
    sample_options: dict[str, Any] = field(default_factory=dict)  # e.g. {top_k: 50}
    metrics: list[str] = field(
        default_factory=lambda: ["dnsmos", "distillmos", "spk_sim", "speechbertscore"]
    )
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric_device: str = "cpu"  # where metrics with a model run (cpu, cuda, cuda:N)
    device: str = "cpu"  # where the policy samples the candidates
    columns: list[str] = field(default_factory=lambda: list(DEFAULT_COLUMNS))
    criterion: str = "unanimous"
    margins: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    weighted_margin: float = 0.0
    max_pairs_per_input: int = 0
    max_inputs: int = 0  # 0 = all
    max_seconds: float = 10.0
    batch_size: int = 4  # inputs per sampling batch (its first input's position seeds it)
    cache: str | None = None
    # score stored candidates again when their metric settings changed (refresh_scores)
    rescore: bool = True
    seed: int = 0
    threads: int = 2
    # "K/N": sample and score only inputs K, K+N, ... (one job of N, e.g. on N machines);
    # empty: all inputs, or this rank's share under torchrun
    shard: str = ""

    def manifests(self) -> list[str]:
        """The input manifests (``manifest`` split at commas)."""
        return [m.strip() for m in self.manifest.split(",") if m.strip()]

    def check(self) -> None:
        from sealign.metrics.registry import metric_info, metric_names

        if not self.model or not model_path(self.model).exists():
            raise ValueError(f"model: not found: {self.model!r}")
        if not self.manifest:
            raise ValueError("manifest is required")
        for m in self.manifests():
            if not Path(m).is_file():
                raise ValueError(f"manifest: not found: {m!r}")
        if not self.output:
            raise ValueError("output is required")
        if self.num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2, got {self.num_candidates}")
        if self.batch_size < 1 or self.max_inputs < 0:
            raise ValueError("batch_size must be >= 1 and max_inputs >= 0")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        parse_device(self.metric_device, "metric_device")
        check_device(self.device)
        Shard.parse(self.shard)
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")
        if not 0 < self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        known = []
        for m in self.metrics:
            if m not in metric_names():
                raise ValueError(f"metrics: unknown metric {m!r}")
            known += [column_name(m, o) for o in metric_info(m).outputs]
        for c in self.columns:
            if c not in known:
                raise ValueError(f"columns: {c!r} is not an output of {self.metrics} ({known})")
        from sealign.prefs.pairs import check_pairing, parse_criterion

        check_pairing(self.columns, self.margins, self.weights, self.weighted_margin,
                      self.max_pairs_per_input)  # fmt: skip
        parse_criterion(self.criterion, self.columns)


def column_info(metrics: dict[str, Metric], columns: list[str]) -> tuple[dict, dict]:
    """``(higher_is_better, reward scale)`` per column."""
    hib, scales = {}, {}
    for name, m in metrics.items():
        for out, h in zip(m.info.outputs, m.info.higher_is_better, strict=True):
            col = column_name(name, out)
            if col in columns:
                hib[col], scales[col] = h, auto_scale(m.info, out)
    return hib, scales


def read_candidates(root: str | Path) -> list[dict[str, Any]]:
    """Every stored candidate: ``candidates.jsonl``, then any shard files not merged yet."""
    path = Path(root) / CANDIDATES
    files = ([path] if path.is_file() else []) + shard_files(path)
    return [rec for f in files for rec in read_jsonl(f)]


def merge_shards(root: str | Path, num_candidates: int) -> None:
    """Fold the shard files of a sharded run into ``candidates.jsonl`` (see
    :func:`~sealign.utils.shard.merge_shard_files`; inputs a shard has not reached are sampled
    by the next ``sealign prefs`` run on the folder, as is the last input of an unfinished
    shard when a kill cut it short of ``num_candidates``)."""
    for f in shard_files(Path(root) / CANDIDATES):
        if not f.with_suffix(".done").is_file():
            _drop_cut_input(f, num_candidates, set())
    merge_shard_files(
        Path(root) / CANDIDATES,
        key=lambda r: (r["input_id"], r["cand_id"]),
        item=lambda r: r["input_id"],
    )


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


SPACE_PROBE = "output_space.npz"  # the sampling policy's targets for a fixed test signal


def output_space_probe(policy: Policy) -> np.ndarray:
    """The policy's targets (tokens or latents) for a fixed 0.5-s test signal: alike for two
    policies with the same output space (family and codec), unlike for another codec."""
    sr = policy.sample_rate
    t = np.arange(sr // 2) / sr
    x = 0.3 * np.sin(2 * np.pi * (150 + 300 * t) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    with torch.no_grad():
        return policy.encode_targets([x.astype(np.float32)]).values[0].cpu().numpy()


def same_output_space(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two :func:`output_space_probe` results come from one output space (tokens: nine
    in ten equal, allowing for analysis rounding on other CPUs; latents: close)."""
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "iub":
        return bool(np.mean(a == b) >= 0.9)
    return bool(np.allclose(a, b, rtol=1e-2, atol=1e-2))


def load_targets(root: str | Path, rec: dict[str, Any]) -> Targets:
    """The stored output of one candidate as unbatched :class:`Targets` (batch of 1)."""
    path = Path(root) / rec["targets"]
    try:
        with np.load(path) as z:  # allow_pickle stays off: these are plain arrays
            values = torch.from_numpy(z[rec["cand_id"]])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(
            f"{path}: cannot read candidate {rec['cand_id']!r} ({err}); delete the input's lines "
            "from candidates.jsonl and re-run `sealign prefs` on the dataset to redo it"
        ) from err
    axis = values.dim() - 1 if not values.is_floating_point() else 0
    frames = values.shape[axis]
    return Targets(values.unsqueeze(0), torch.ones(1, frames, dtype=torch.bool))


def prefs_inputs(cfg: PrefsConfig) -> list[Entry]:
    """The job's inputs, in order (``max_inputs`` of them when set). Their ids name folders of
    the dataset, so each must be unique and a relative path without ``..``."""
    entries = [e for m in cfg.manifests() for e in read_manifest(m)]
    dup = sorted(i for i, n in Counter(e.id for e in entries).items() if n > 1)
    if dup:
        raise ValueError(f"manifest: input ids occur more than once: {', '.join(dup[:5])}")
    for e in entries:
        p = PurePosixPath(e.id)
        if p.is_absolute() or ".." in p.parts or "\\" in e.id or not e.id.strip():
            raise ValueError(f"manifest: input id {e.id!r} cannot name a folder of the dataset "
                             "(an absolute path, '..' or a backslash); give it another id")  # fmt: skip
    return entries[: cfg.max_inputs] if cfg.max_inputs else entries


def _drop_cut_input(path: Path, n: int, elsewhere: set[str]) -> None:
    """Before this process appends to its candidates file: drop a line cut by a kill, and the
    records of the file's last input when the kill cut its batch short (fewer candidates than
    the file's other inputs have, or than ``n`` when it holds one input), so that input is
    sampled again instead of counting as done. An input with records in other files
    (``elsewhere``) is left as it is: sampling it again would overwrite their audio."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    recs = read_jsonl(path)
    cut_line = len(recs) < len(text.splitlines()) or (bool(text) and not text.endswith("\n"))
    count = Counter(r.get("input_id") for r in recs)
    last = recs[-1].get("input_id") if recs else None
    expect = max(count.values()) if len(count) > 1 else n
    drop = last if last is not None and count[last] < expect and last not in elsewhere else None
    if cut_line or drop is not None:
        log.warning("%s: an interrupted run cut its last batch; %s", path,
                    f"sampling input {drop} again" if drop is not None else "dropping a cut line")  # fmt: skip
        write_jsonl(path, [r for r in recs if r.get("input_id") != drop])


def build_candidates(
    cfg: PrefsConfig, policy: Policy, metrics: dict[str, Metric], shard: Shard | None = None
) -> Path:
    """Sample, decode, score and store candidates for every input of ``shard`` (default: all;
    resumable). Returns the file written."""
    shard = shard or Shard()
    root = Path(cfg.output)
    root.mkdir(parents=True, exist_ok=True)
    entries = prefs_inputs(cfg)
    # (position in the whole input list, entry): positions seed the sampling, so shards differ
    mine = shard.take(list(enumerate(entries)))
    path = shard.path(root / CANDIDATES)
    others = [f for f in (root / CANDIDATES, *shard_files(root / CANDIDATES)) if f != path]
    elsewhere = {r.get("input_id") for f in others if f.is_file() for r in read_jsonl(f)}
    _drop_cut_input(path, cfg.num_candidates, elsewhere)
    done = {r["input_id"] for r in read_candidates(root)}
    todo = [(i, e) for i, e in mine if e.id not in done]
    if len(todo) < len(mine):
        log.info("resuming: %d inputs done, %d to go", len(mine) - len(todo), len(todo))
    check_sample_options(policy, cfg.sample_options, "sample_options")
    limits = AudioLimits(max_duration=cfg.max_seconds)
    sr = policy.sample_rate
    cache = open_score_cache(cfg.cache)
    module: Any = policy
    module.eval()
    shard.begin(root / CANDIDATES)
    probe = root / SPACE_PROBE
    if not probe.is_file():  # every shard writes the same array
        tmp = tmp_name(probe.with_name(probe.stem), ".tmp.npz")
        np.savez(tmp, targets=output_space_probe(policy))
        tmp.replace(probe)
    bar = tqdm(total=len(todo), desc="prefs", unit="input")
    if not shard.sharded:
        (root / UNFINISHED).touch()
    try:
        with path.open("a", encoding="utf-8") as f:
            for start in range(0, len(todo), cfg.batch_size):
                batch = []
                for _, e in todo[start : start + cfg.batch_size]:
                    try:
                        noisy, _ = load_audio(e.audio, sr, limits)
                        ref = load_audio(e.reference, sr)[0] if e.reference else None
                    except Exception as err:  # noqa: BLE001 - one bad file must not end the run
                        log.warning("skipping input %s: %s", e.id, err)
                        continue
                    batch.append((e, noisy, ref))
                if not batch:
                    bar.update(min(cfg.batch_size, len(todo) - start))
                    continue
                recs = _sample_batch(cfg, policy, metrics, batch, root, cache, todo[start][0])
                # one write per batch: a kill then cuts at most a batch, whose inputs are sampled
                # again from the same position (their seeds follow the batch's first input)
                f.write("".join(json.dumps(rec) + "\n" for rec in recs))
                f.flush()
                bar.update(min(cfg.batch_size, len(todo) - start))
    finally:
        bar.close()
        if cache is not None:
            cache.close()
    shard.mark_done(root / CANDIDATES)
    (root / UNFINISHED).unlink(missing_ok=True)
    return path


def warn_unfinished(root: str | Path) -> None:
    """Warn when the dataset at ``root`` is the candidates of a killed run (see
    :data:`UNFINISHED`): its pairs cover only the inputs sampled so far."""
    if (Path(root) / UNFINISHED).exists():
        log.warning("%s: its sampling run did not finish, so its pairs cover only some inputs; "
                    "run `sealign prefs --output %s` again to sample the rest", root, root)  # fmt: skip


@torch.no_grad()
def _sample_batch(cfg, policy, metrics, batch, root: Path, cache, offset: int) -> list[dict]:
    n = cfg.num_candidates
    cond = policy.condition([noisy for _, noisy, _ in batch])
    rows = torch.arange(len(batch)).repeat_interleave(n)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + offset)
    rollout = policy.sample(
        cond.select(rows), temperature=cfg.temperature, generator=gen, **cfg.sample_options
    )
    wavs = policy.decode(rollout)
    targets = split_targets(policy.targets_from_rollout(rollout))  # type: ignore[attr-defined]
    sr = policy.sample_rate
    utts, recs = [], []
    for j, (w, t) in enumerate(zip(wavs, targets, strict=True)):
        e, _, ref = batch[j // n]
        cand = f"c{j % n}"
        audio = Path("audio") / e.id / f"{cand}.wav"
        write_audio(root / audio, w, sr)
        w = _stored_audio(root / audio)[0]  # scores describe the stored (16-bit) audio
        utts.append(Utterance(f"{e.id}/{cand}", w, sr, reference=ref, text=e.text, speaker_ref=ref))
        recs.append(
            {
                "input_id": e.id,
                "cand_id": cand,
                "family": policy.family,
                "audio": str(audio),
                "targets": f"targets/{e.id}.npz",
                "noisy": str(Path(e.audio).resolve()),
                "reference": str(Path(e.reference).resolve()) if e.reference else None,
                "text": e.text,
                "scores": {},
                "skipped": {},
                "_targets": t.values[0].cpu().numpy(),
            }
        )
    fingerprints = settings_fingerprints(metrics)
    for name, metric in metrics.items():
        _score_into(recs, utts, name, metric, cache, fingerprints[name], metrics)
    by_input: dict[str, dict[str, np.ndarray]] = {}
    for rec in recs:
        by_input.setdefault(rec["input_id"], {})[rec["cand_id"]] = rec.pop("_targets")
    for input_id, arrays in by_input.items():
        _save_npz(root / "targets" / f"{input_id}.npz", arrays)
    return recs


def _stored_audio(path: Path) -> tuple[np.ndarray, int]:
    """A candidate's audio as stored (float32) and its sample rate."""
    return sf.read(path, dtype="float32", always_2d=False)


def settings_fingerprints(metrics: dict[str, Metric]) -> dict[str, str]:
    """A short hash per metric of what determines its scores besides the audio (version and
    settings, :func:`~sealign.eval.score.metric_settings`)."""
    return {
        name: hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:16]
        for name, s in metric_settings(metrics).items()
    }


def _drop_columns(rec: dict[str, Any], name: str, metrics: dict[str, Metric]) -> None:
    """Remove metric ``name``'s columns from a candidate record, including ones its other
    settings named differently (``speechbertscore_whisper_base`` / ``..._ct2``), and its skip."""
    others = {column_name(n, o) for n, m in metrics.items() if n != name for o in m.info.outputs}
    for col in list(rec["scores"]):
        if (col == name or col.startswith(f"{name}_")) and col not in others:
            del rec["scores"][col]
    rec["skipped"].pop(name, None)


def _score_into(
    recs: list[dict[str, Any]],
    utts: list[Utterance],
    name: str,
    metric: Metric,
    cache: Any,
    fingerprint: str,
    metrics: dict[str, Metric],
) -> None:
    """Score ``utts`` with ``metric`` and write each outcome into its candidate record,
    replacing the metric's earlier columns, skip reason and settings fingerprint."""
    try:
        results = score_with_cache(metric, utts, cache)
    except MetricUnavailable as err:
        raise MetricUnavailable(f"{name}: {err}") from err
    for rec, r in zip(recs, results, strict=True):
        _drop_columns(rec, name, metrics)
        if r.ok:
            rec["scores"].update({column_name(name, k): v for k, v in r.values.items()})
        else:
            rec["skipped"][name] = r.skipped or r.error
        rec.setdefault("metric_settings", {})[name] = fingerprint


def stale_scores(recs: list[dict[str, Any]], now: dict[str, str]) -> dict[str, set[int]]:
    """Per metric, the indices of the candidate records whose scores of it were not computed
    with the settings fingerprinted in ``now`` (:func:`settings_fingerprints`)."""
    return {n: {i for i, r in enumerate(recs) if r.get("metric_settings", {}).get(n) != fp}
            for n, fp in now.items()}  # fmt: skip


def refresh_scores(
    cfg: PrefsConfig, metrics: dict[str, Metric], batch: int = 32, save_every: int = 8
) -> int:
    """Score again, from their stored audio, the candidates of ``candidates.jsonl`` whose scores
    of a metric came from another version or other settings of it (a resume with other
    ``metric_options``, or after an upgrade), that lack a metric (added since), or that were
    written before candidates recorded their settings. Progress is saved every ``save_every``
    batches (and the score cache, when on, serves what did not change). A candidate whose
    audio or reference cannot be read has its stale metrics marked skipped and unfingerprinted,
    so a later run tries again (one written before fingerprints existed is left as it was).
    ``cfg.rescore = False`` turns this off. Returns how many candidates were scored again."""
    root = Path(cfg.output)
    path = root / CANDIDATES
    if not path.is_file():
        return 0
    recs = read_jsonl(path)
    now = settings_fingerprints(metrics)
    stale = stale_scores(recs, now)
    todo = sorted(set().union(*stale.values()))
    if not todo:
        return 0
    names = ", ".join(f"{n} ({len(ids)})" for n, ids in stale.items() if ids)
    if not cfg.rescore:
        log.warning("%s: scores of %s were computed with other metric settings, lack the "
                    "metric, or predate the settings record; rescore=false: pairing them as "
                    "they are", path, names)  # fmt: skip
        return 0
    log.warning("%s: scores of %s were computed with other metric settings, lack the metric, "
                "or predate the settings record; scoring those candidates again from their "
                "audio (rescore=false pairs them as they are)", path, names)  # fmt: skip
    cache = open_score_cache(cfg.cache)
    done = unreadable = 0
    try:
        for b, start in enumerate(tqdm(range(0, len(todo), batch), desc="rescoring", unit="batch")):
            ids, utts = [], []
            for i in todo[start : start + batch]:
                r = recs[i]
                try:
                    wav, sr = _stored_audio(root / r["audio"])
                    ref = load_audio(r["reference"], sr)[0] if r.get("reference") else None
                except Exception as err:  # noqa: BLE001 - one lost file must not end the job
                    unreadable += 1
                    log.warning("candidate %s/%s not scored again: %s",
                                r["input_id"], r["cand_id"], err)  # fmt: skip
                    if "metric_settings" in r:
                        for name in (n for n in metrics if i in stale[n]):
                            _drop_columns(r, name, metrics)
                            r["skipped"][name] = f"not scored again with its settings: {err}"
                            r["metric_settings"].pop(name, None)  # stale until scored
                    continue
                ids.append(i)
                utts.append(Utterance(f"{r['input_id']}/{r['cand_id']}", wav, sr,
                                      reference=ref, text=r.get("text"), speaker_ref=ref))  # fmt: skip
            for name, metric in metrics.items():
                sub = [k for k, i in enumerate(ids) if i in stale[name]]
                if sub:
                    _score_into([recs[ids[k]] for k in sub], [utts[k] for k in sub], name,
                                metric, cache, now[name], metrics)  # fmt: skip
            done += len(ids)
            if (b + 1) % save_every == 0:
                write_jsonl(path, recs)
    except MetricUnavailable as err:
        raise MetricUnavailable(f"{err} (or rescore=false to pair the stored scores)") from err
    finally:
        if cache is not None:
            cache.close()
        write_jsonl(path, recs)  # whatever was scored again is kept, even on an error
    if unreadable:
        log.warning("%d candidates could not be read; a later run tries them again", unreadable)
    return done


def pair_dataset(cfg: PrefsConfig, metrics: dict[str, Metric], criterion: str | None = None):
    """Form pairs for ``criterion`` (default ``cfg.criterion``) from the stored candidates and
    write ``pairs/<criterion>.jsonl``. Returns the :class:`PairReport`."""
    root = Path(cfg.output)
    recs = read_candidates(root)
    crit = criterion or cfg.criterion
    hib, scales = column_info(metrics, cfg.columns)
    cands = [Candidate(r["input_id"], r["cand_id"], r["scores"], {"reference": r.get("reference")})
             for r in recs]  # fmt: skip
    report = make_pairs(
        cands,
        cfg.columns,
        hib,
        scales,
        crit,
        cfg.margins,
        cfg.weights,
        cfg.weighted_margin,
        cfg.max_pairs_per_input,
    )
    out = root / "pairs" / f"{crit.replace(':', '_')}.jsonl"
    # gt-winner pairs have no margin: null, not a bare NaN that strict JSON readers refuse
    records = [{"input_id": p.input_id, "winner": p.winner, "loser": p.loser,
                "margin": p.margin if math.isfinite(p.margin) else None}
               for p in report.pairs]  # fmt: skip
    write_jsonl(out, records)  # atomic, also when two DPO runs form the same pairs at once
    return report


def yield_table(reports: list[PairReport]) -> str:
    lines = [
        "| criterion | pairs | inputs with pairs | pairs / input | candidates excluded |",
        "|---|---|---|---|---|",
    ]
    for r in reports:
        s = r.summary()
        lines.append(
            f"| {s['criterion']} | {s['pairs']} | {s['inputs_with_pairs']}/{s['inputs']} | "
            f"{s['pairs_per_input']:.2f} | {s['excluded_candidates']} |"
        )
    return "\n".join(lines)


def all_criteria(columns: list[str]) -> list[str]:
    return ["unanimous", *[f"single:{c}" for c in columns], "weighted", "gt-winner"]


def require_pairs(report: PairReport) -> None:
    if not report.pairs:
        raise ValueError(no_pairs_message(report))
