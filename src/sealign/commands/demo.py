"""The main job, end to end on a laptop CPU: GSPO-align the shipped AR enhancement model.

1. builds the demo corpus if it is missing (Kokoro / Piper speech, degraded; `sealign data demo`);
2. loads the shipped base checkpoint (a small AR codec-token LM, see docs/demo_checkpoint.md;
   ``family=mgm`` or ``family=fm`` picks the masked or flow-matching one);
3. scores the test split's noisy and clean audio, and enhances it with the base model and
   scores that, on every metric;
4. runs GSPO on the train split with the default composite reward (DNSMOS OVRL + (1 - WER,
   Whisper base) + DistillMOS), learning the sampling temperature by probes (a base without
   one trains its weights alone), for 15 steps (``gspo.max_steps``), at most 6 minutes
   (``gspo.max_minutes``, ``--minutes``), less when the whole run would otherwise take more
   than ``total_minutes`` (20, ``--total-minutes``);
5. enhances and scores the test split with the aligned model and with the base sampled at
   the learned temperature (``base_learned_T``), and prints mean ± 95% CI plus the paired
   bootstrap CIs of each against the base and of aligned - base_learned_T, what the weights add
   (results.md, results.json; results.tex as papers print it);
6. writes a report folder: index.html, reward curves, spectrograms and audio of a few examples.

Re-running continues an interrupted GSPO run (and reuses cached scores).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealign.audio.io import load_audio
from sealign.commands.common import (
    add_config_arguments,
    check_same_job,
    flag,
    flags_of,
    log,
    log_run_scalars,
    resolve_config,
)
from sealign.config import save_config
from sealign.data.manifest import Entry, read_manifest
from sealign.eval.paper_table import from_results, to_latex
from sealign.eval.score import (
    ScoreConfig,
    build_metrics,
    column_name,
    load_metrics,
    mean_over_samples,
    score_entries,
)
from sealign.eval.tables import compare_stats, compare_table, diff_table
from sealign.infer.enhance import enhance_samples
from sealign.metrics.asr import ASR
from sealign.metrics.base import MetricInfo
from sealign.models.shipped import SHIPPED_FAMILIES, model_path, shipped_checkpoint
from sealign.rewards.composite import RewardConfig, auto_scale, to_reward_scale
from sealign.rl.evaluation import RLEvalConfig
from sealign.rl.gspo import GSPOConfig, SamplingConfig, train_gspo
from sealign.train.checkpoint import latest_checkpoint, policy_dir
from sealign.train.data import DataConfig
from sealign.train.sft import OptimConfig
from sealign.utils.folder_lock import FolderLock, hold_for_command
from sealign.utils.jsonio import write_json, write_text
from sealign.utils.paths import replace_dir
from sealign.utils.threads import set_torch_threads

HELP = "the main job: GSPO-align the shipped model on the demo corpus, evaluate, report"

DEMO_METRICS = ["dnsmos", "distillmos", "wer", "spk_sim", "speechbertscore", "pesq_wb", "estoi"]


# GSPO settings the demo sets, and what sets them
_DEMO_SETS = {
    "model.init_from": "checkpoint= or family=",
    "data.train": "the demo corpus, data=",
    "eval.manifests": "the demo corpus' valid split, data=",
    "eval.temperature": "gspo.sampling.temperature",
    "output_dir": "<output>/gspo",
    "threads": "threads=",
}


def _demo_gspo() -> GSPOConfig:
    return GSPOConfig(
        # 4 inputs, each in two groups of 4 samples (the temperature's probes, below): 32 a step
        data=DataConfig(batch_size=4, crop_seconds=0.0, max_seconds=10.0),
        sampling=SamplingConfig(group_size=4, temperature=1.0, top_k=50),
        # one DNSMOS window per clip: 0.55-1 times exact mode's cost on the demo's 2-6 s clips
        # (benchmarks/dnsmos_speed.py); on rollouts its group-normalized advantages correlate at
        # 0.985 with exact's (benchmarks/dnsmos_fast_reward.py); evaluation tables use exact
        # each metric normalized within its group before summing: with sum_then_normalize the
        # DNSMOS term, whose raw spread is the largest, steered the updates (BAK up, ESTOI and
        # speaker similarity down); the KL to the base keeps non-target metrics in place
        # (docs/gspo_demo.md has the runs behind both choices)
        # metrics on one thread each: Whisper (CTranslate2) on two threads halves torch's speed
        # for the rest of the process (generation 1.6 -> 2.5 s a step). All three side by side:
        # since DNSMOS shares its convolutions, the three cost about the same, and scoring took
        # 15.3 / 15.7 s against 15.9 / 16.9 s two at a time (benchmarks/gspo_step.py, two runs;
        # two at a time was 12% sooner while DNSMOS cost twice as much, docs/gspo_demo.md)
        # Whisper in int8 for the reward: 1.5x faster than float32, which the evaluation tables
        # use because int8's transcripts change with the CPU's instruction set (metrics/asr.py)
        reward=RewardConfig(
            aggregation="normalize_then_sum",
            metric_options={"dnsmos": {"mode": "fast"}, "wer": {"compute_type": "int8"}},
            workers=3,
            metric_threads=1,
        ),
        beta=0.1,
        # the sampling temperature learned beside the weights, stepped by the reward's slope
        # measured between each input's two groups (at T·e^±0.25): in five seeds of 15 steps
        # it fell to 0.28-0.33 of T = 1 and every rewarded metric rose significantly; the
        # loss's own gradient on it was too noisy at 32 samples a step (docs/gspo_demo.md,
        # "Probing the temperature"). A base without one (the FM) trains 8 inputs x 4 without it
        temperature_lr=1.0,
        temperature_optimizer="probe",
        # one update per rollout batch on all its samples: four updates on four samples each let
        # gradient noise drift the model (DistillMOS and OVRL rise with one, docs/gspo_demo.md)
        steps_per_generation=1,
        # the same update in passes of 8 rollouts: less memory and, on CPU, faster (AR 6.6 ->
        # 5.2 s, MGM 73 -> 37 s, FM 77 -> 42 s; benchmarks/gspo_micro_batch.py)
        micro_batch_size=8,
        optim=OptimConfig(lr=1e-4, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0),
        eval=RLEvalConfig(num_samples=8, steps=0, metrics=["dnsmos", "distillmos", "wer"]),
        # 15 steps, or 6 minutes where steps are slower: the same steps give the same table on
        # any CPU (docs/gspo_demo.md), and a budget keeps a slow machine's run short
        max_steps=15,
        max_minutes=6.0,
        save_steps=5,
    )


@dataclass
class DemoConfig:
    """Settings of ``sealign demo``; ``gspo`` holds every GSPO setting (``gspo.max_minutes``...)."""

    output: str = "runs/demo"
    data: str = "data/demo"  # demo corpus; built with `sealign data demo` settings if missing
    family: str = "ar"  # which shipped base checkpoint to use: ar, mgm or fm
    checkpoint: str = ""  # base policy folder; overrides family's shipped checkpoint
    gspo: GSPOConfig = field(default_factory=_demo_gspo)
    metrics: list[str] = field(default_factory=lambda: list(DEMO_METRICS))
    test_limit: int = 0  # test utterances to evaluate (0 = the whole split)
    # outputs per test utterance and model (seeds gspo.seed + i); its scores are averaged, so the
    # paired CIs hold less of the models' sampling noise
    eval_samples: int = 3
    n_examples: int = 4  # examples with spectrograms and audio in the report
    # items of the blind A/B listening test of base vs aligned written to <output>/listen
    # (`sealign listen analyze` scores the answers); 0 = none
    listening_items: int = 12
    n_boot: int = 2000
    threads: int = 2
    # the whole run's budget: GSPO's own (gspo.max_minutes) is shortened so that the run ends
    # within it, from what the corpus and the base model's evaluation took before GSPO (each
    # evaluation after it, the aligned model's and with a learned temperature the base's at
    # it, costs the same). 0 = off; --minutes turns it off too. It never
    # sets a budget where gspo.max_minutes = 0 (max_steps then ends GSPO)
    total_minutes: float = 20.0

    def __post_init__(self) -> None:
        for key, low in (
            ("test_limit", 0),
            ("n_examples", 0),
            ("n_boot", 100),
            ("total_minutes", 0),
        ):
            if not getattr(self, key) >= low:  # NaN too
                raise ValueError(f"{key} must be >= {low}, got {getattr(self, key)}")
        if not math.isfinite(self.total_minutes):
            raise ValueError(f"total_minutes must be finite (0 = off), got {self.total_minutes}")
        if self.listening_items < 0:
            raise ValueError(f"listening_items must be >= 0, got {self.listening_items}")
        if self.eval_samples < 1:
            raise ValueError(f"eval_samples must be >= 1, got {self.eval_samples}")
        if self.family not in SHIPPED_FAMILIES:
            raise ValueError(f"family must be one of {SHIPPED_FAMILIES}, got {self.family!r}")
        # settings the demo sets itself: given here they would be saved but not used
        fixed = _demo_gspo()
        for key, instead in _DEMO_SETS.items():
            a, b = self.gspo, fixed
            for part in key.split("."):
                a, b = getattr(a, part), getattr(b, part)
            if a != b:
                raise ValueError(f"gspo.{key}: the demo sets it ({instead})")


def _without_temperature(g: GSPOConfig, base: Path) -> None:
    """The demo's default learned temperature, off for a base that has none (the FM), with
    the default batch as 8 inputs x 4, the same 32 samples a step (a temperature set on the
    command line stays, and GSPO refuses it with the reason)."""
    from sealign.models.registry import load_policy

    default = _demo_gspo()
    learned = (g.temperature_lr, g.temperature_optimizer)
    if learned != (default.temperature_lr, default.temperature_optimizer):
        return
    if getattr(load_policy(base), "logit_scale", None) is not None:
        return
    g.temperature_lr = 0.0
    if g.data.batch_size == default.data.batch_size:
        g.data.batch_size *= 2
    log.info("the base has no sampling temperature to learn: GSPO trains its weights alone, "
             "%d inputs x %d samples a step", g.data.batch_size, g.sampling.group_size)  # fmt: skip


def _check_continuable(g: GSPOConfig, run: Path) -> None:
    """A demo folder's GSPO run continues only with the settings it started with: refused
    now, before the evaluations, naming them (a run from before the learned temperature)."""
    import yaml

    ckpt = latest_checkpoint(run)
    if ckpt is None:
        return
    try:
        before = yaml.safe_load((ckpt / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return
    then = {
        "temperature_lr": float(before.get("temperature_lr") or 0),
        "temperature_optimizer": before.get("temperature_optimizer", "adamw"),
        "data.batch_size": (before.get("data") or {}).get("batch_size"),
    }
    now = {"temperature_lr": g.temperature_lr, "temperature_optimizer": g.temperature_optimizer,
           "data.batch_size": g.data.batch_size}  # fmt: skip
    if then["temperature_lr"] == 0:  # how it steps a temperature it does not learn is moot
        then.pop("temperature_optimizer")
        now.pop("temperature_optimizer")
    if then != now:
        keep = " ".join(f"gspo.{k}={v}" for k, v in then.items())
        raise ValueError(
            f"{run} holds a GSPO run started with other settings ({then}; now {now}): "
            f"continue it with `{keep}`, or use another --output"
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", help="output folder (default runs/demo)")
    p.add_argument(
        "--minutes",
        type=float,
        help="GSPO for this many minutes instead of 15 steps (gspo.max_minutes, and no step "
        "limit unless gspo.max_steps= is given; 0 = no time limit: gspo.max_steps ends it); "
        "turns the whole-run budget off unless --total-minutes is given",
    )
    p.add_argument(
        "--total-minutes",
        type=float,
        help="whole-run budget (total_minutes, default 20): GSPO stops early enough to end the "
        "run within it; 0 = off",
    )
    p.add_argument("--device", help="where the policy runs: cpu, cuda, cuda:N (gspo.device)")
    p.add_argument(
        "--metric-device",
        help="where the metrics run: cpu, cuda, cuda:N (gspo.reward.metric_device)",
    )
    add_config_arguments(p, "gspo.max_steps=30")


def ensure_demo_data(root: str | Path, workers: int = 2) -> dict[str, Path]:
    """``{split: manifest}`` of the demo corpus at ``root``, built first if any is missing."""
    root = Path(root)
    manifests = {s: root / f"{s}.jsonl" for s in ("train", "valid", "test")}
    if all(p.is_file() for p in manifests.values()):
        return manifests
    from sealign.commands.data_synth import PRESETS, DataDemoConfig, build_demo_corpus
    from sealign.config import load_config

    log.info("demo corpus not found in %s: building it (a few minutes, once)", root)
    cfg = load_config(
        DataDemoConfig,
        None,
        [*PRESETS["demo"], flag("output", str(root)), flag("synth.workers", workers)],
    )
    with FolderLock(root):  # a second demo started meanwhile stops instead of writing it too
        save_config(cfg, root / "config.yaml")
        build_demo_corpus(cfg)
    missing = [str(p) for p in manifests.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"building the demo corpus did not produce {missing}")
    return manifests


def add_reward_column(
    records: list[dict[str, Any]], gspo: GSPOConfig, infos: dict[str, MetricInfo]
) -> None:
    """Add the composite reward (as GSPO computes it per sample) to each record's scores."""
    comps = []
    for c in gspo.reward.components:
        if not c.metric or c.metric not in infos:
            continue
        out = c.output or infos[c.metric].outputs[0]
        scale = auto_scale(infos[c.metric], out) if c.scale == "auto" else c.scale
        comps.append((column_name(c.metric, out), scale, c.weight))
    for r in records:
        vals = [
            (to_reward_scale(r["scores"][col], scale), w)
            for col, scale, w in comps
            if col in r["scores"]
        ]
        if vals and sum(w for _, w in vals) > 0:
            r["scores"]["reward"] = sum(v * w for v, w in vals) / sum(w for _, w in vals)


REWARD_INFO = MetricInfo(
    "reward", ("reward",), (True,), ((-1e9, 1e9),), description="composite GSPO reward"
)


def run(args: argparse.Namespace) -> int:
    extra = [flag("output", args.output)] if args.output else []
    if args.minutes is not None:
        extra.append(flag("gspo.max_minutes", args.minutes))
        if args.minutes > 0:  # the time ends GSPO, not the demo's 15 steps
            extra.append(flag("gspo.max_steps", 100_000))
        if args.total_minutes is None:
            extra.append(flag("total_minutes", 0))
    if args.total_minutes is not None:
        extra.append(flag("total_minutes", args.total_minutes))
    extra += flags_of(args, ("device",), "gspo.")
    if args.metric_device:
        extra.append(flag("gspo.reward.metric_device", args.metric_device))
    cfg = resolve_config(DemoConfig, args, extra)
    set_torch_threads(cfg.threads)  # before the base model's enhancement, as GSPO sets it
    # the evaluation's metrics first: an unknown one or a device this machine lacks fails now;
    # they score side by side, one thread each, on batches of 16: 1.25x sooner than one after
    # another on two threads and batches of 8 (docs/gspo_demo.md)
    score_cfg = ScoreConfig(
        metrics=list(cfg.metrics),
        metric_device=cfg.gspo.reward.metric_device,
        threads=cfg.threads,
        workers=cfg.threads,
        batch_size=16,
    )
    metrics = build_metrics(score_cfg)
    # and one whose model cannot load fails before GSPO, not after (loading Whisper is harmless
    # here; transcribing on two threads is what slows torch, see docs/gspo_demo.md)
    load_metrics(metrics)
    base = model_path(cfg.checkpoint) if cfg.checkpoint else shipped_checkpoint(cfg.family)
    with contextlib.suppress(FileNotFoundError):  # a run or checkpoint folder → its policy
        base = policy_dir(base)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(
            f"base checkpoint not found at {base}; pass checkpoint=<policy dir> "
            "(see docs/demo_checkpoint.md to train one)"
        )
    t_start = time.perf_counter()
    out = Path(cfg.output)
    hold_for_command(out)
    check_same_job(out, cfg)
    _without_temperature(cfg.gspo, base)
    _check_continuable(cfg.gspo, out / "gspo")
    save_config(cfg, out / "config.yaml")
    timings: dict[str, float] = {}

    t = time.perf_counter()
    manifests = ensure_demo_data(cfg.data, workers=cfg.threads)
    timings["data"] = time.perf_counter() - t

    # -- GSPO settings ------------------------------------------------------------------------
    g = cfg.gspo
    g.model.init_from = str(base)
    # the demo's default metric options (fast DNSMOS) only apply to metrics the reward keeps
    used = {c.metric for c in g.reward.components}
    g.reward.metric_options = {k: v for k, v in g.reward.metric_options.items() if k in used}
    g.data.train = [str(manifests["train"])]
    g.eval.manifests = [str(manifests["valid"])]
    # held-out checks sample as the test-split evaluation below does
    g.eval.temperature = g.sampling.temperature
    g.output_dir = str(out / "gspo")
    g.threads = cfg.threads
    if cfg.threads == 1:  # keeps the whole demo on one core
        g.reward.workers = g.reward.metric_threads = 1

    # -- evaluation helpers -------------------------------------------------------------------
    from sealign.models.registry import load_policy

    entries = read_manifest(manifests["test"])
    if cfg.test_limit:
        entries = entries[: cfg.test_limit]
    systems_entries: dict[str, list[Entry]] = {
        "noisy": entries,
        "clean": [
            Entry(e.id, e.reference, reference=e.reference, text=e.text, speaker_ref=e.speaker_ref)
            for e in entries
        ],
    }
    samples_of = {"noisy": ["noisy"], "clean": ["clean"]}  # system → its sampled outputs
    scored: dict[str, list[dict[str, Any]]] = {}
    timings.update(enhance=0.0, score=0.0)

    def enhance(name: str, path: Path) -> float:
        """Enhance the test split with the model at ``path``; seconds taken."""
        t = time.perf_counter()
        log.info("enhancing the test split with the %s model", name)
        policy = load_policy(policy_dir(path), map_location=g.device)
        results = enhance_samples(
            policy,
            entries,
            out / "enhanced",
            name,
            cfg.eval_samples,
            g.seed,
            batch_size=8,
            chunk_seconds=0.0,
            temperature=g.sampling.temperature,
            sample_options=g.sampling.options(),
            fuse=g.fuse,  # judge what the rewards judged
            dereverb=g.data.dereverb,
        )
        samples_of[name] = list(results)
        systems_entries.update({tag: res.entries for tag, res in results.items()})
        dt = time.perf_counter() - t
        timings["enhance"] += dt
        return dt

    def score(systems: list[str]) -> float:
        """Score each of ``systems`` on the test split; seconds taken."""
        t = time.perf_counter()
        for s in systems:
            log.info("scoring %s (%d utterances)", s, len(systems_entries[s]))
            scored[s] = score_entries(
                systems_entries[s], score_cfg, out / "scores" / f"{s}.jsonl", metrics=metrics
            )
        dt = time.perf_counter() - t
        timings["score"] += dt
        return dt

    # what does not depend on GSPO first; the base model's evaluation also tells what the
    # aligned model's will take, which GSPO's budget leaves room for
    score(["noisy", "clean"])
    after = enhance("base", base) + score(samples_of["base"])
    if g.temperature_lr > 0:  # the base at the learned temperature is evaluated too
        after *= 2
    g.max_minutes = gspo_minutes(cfg, time.perf_counter() - t_start, after)

    # -- GSPO -------------------------------------------------------------------------------
    t = time.perf_counter()
    resume = latest_checkpoint(g.output_dir) is not None
    if resume:
        log.info("continuing the GSPO run in %s", g.output_dir)
        if cfg.total_minutes:
            # the budget the first run was given holds: a re-run, quicker with its data and
            # scores at hand, would otherwise train on and change the aligned model (--minutes,
            # which turns the whole-run budget off, extends a run)
            g.max_minutes = _budget_of_run(g.output_dir, g.max_minutes)
    result = train_gspo(g, resume=resume)
    timings["gspo"] = time.perf_counter() - t
    aligned = policy_dir(result.checkpoint or g.output_dir)
    enhance("aligned", aligned)
    score(samples_of["aligned"])
    # what the weights add beside a learned temperature: the base sampled at it
    models = ["aligned"]
    base_at_t = base_at_learned_temperature(base, aligned, out / LEARNED_T)
    if base_at_t is None:
        _remove_system(out, LEARNED_T)  # an earlier run's, which would read as this one's
    else:
        enhance(LEARNED_T, base_at_t)
        score(samples_of[LEARNED_T])
        models.append(LEARNED_T)

    infos = {n: m.info for n, m in metrics.items()}
    for recs in scored.values():
        add_reward_column(recs, g, infos)
    systems = {
        s: mean_over_samples([scored[tag] for tag in samples_of[s]])
        for s in ("noisy", "base", *models, "clean")
    }
    infos = {"reward": REWARD_INFO, **infos}
    vs_noisy = compare_stats(systems, infos, ["base", *models], cfg.n_boot, g.seed)
    vs_base = compare_stats(systems, infos, models, cfg.n_boot, g.seed, baseline="base")
    table = compare_table(systems, infos)
    d_base = diff_table(vs_base, models, baseline="base")
    d_noisy = diff_table(vs_noisy, ["base", *models])
    extra = ""
    vs_t: dict[str, Any] = {}
    if base_at_t is not None:
        vs_t = compare_stats(systems, infos, ["aligned"], cfg.n_boot, g.seed, baseline=LEARNED_T)
        extra = (
            f"Paired difference aligned - {LEARNED_T} (what GSPO's weights add beside the "
            f"learned temperature):\n\n{diff_table(vs_t, ['aligned'], baseline=LEARNED_T)}\n\n"
        )
    results = {
        "systems": vs_noisy["systems"],
        "diff_vs_noisy": vs_noisy["diff_vs_noisy"],
        "diff_vs_base": vs_base["diff_vs_base"],
        **({f"diff_vs_{LEARNED_T}": vs_t[f"diff_vs_{LEARNED_T}"]} if vs_t else {}),
        "higher_is_better": vs_noisy["higher_is_better"],
        "gspo": {
            "steps": result.step,
            "temperature_factor": _temperature_factor(aligned),
            "budget_minutes": g.max_minutes,
            "alarms": result.alarms,
            "run": str(result.run_dir),
        },
        "base_checkpoint": str(base),
        "test_utterances": len(entries),
        "samples_per_utterance": cfg.eval_samples,
        "seconds": {**timings, "total": time.perf_counter() - t_start},
    }
    write_json(out / "results.json", results, strict=True)
    write_text(out / "results.tex", to_latex(from_results(results, "base")))
    text = (
        f"{table}\n\nPaired difference vs base (bootstrap 95% CI):\n\n{d_base}\n\n"
        f"{extra}Paired difference vs the noisy input:\n\n{d_noisy}\n"
    )
    write_text(out / "results.md", text)
    # what the WER metric's recognizer heard in each report example (when WER is scored)
    asr = getattr(metrics.get("wer"), "asr", None)
    write_demo_report(out, cfg, systems_entries, text, results, asr)
    if cfg.listening_items:
        write_listening_test(out / "listen", systems_entries, cfg.listening_items)
    scalars = {
        f"demo/{s}/{col}": v["mean"]
        for s, cols in vs_noisy["systems"].items()
        for col, v in cols.items()
        if v["n"]
    }
    scalars.update({f"demo/seconds/{k}": v for k, v in results["seconds"].items()})
    log_run_scalars(out, scalars, step=result.step)
    print(text)
    for a in result.alarms:
        log.warning(a)
    log.info(
        "done in %.1f min (data %.0f s, GSPO %.0f s, enhance %.0f s, score %.0f s); report: %s",
        results["seconds"]["total"] / 60,
        timings["data"],
        timings["gspo"],
        timings["enhance"],
        timings["score"],
        out / "report" / "index.html",
    )
    log.info("by degradation: sealign table %s --by degradation.tasks --manifest %s "
             "--baseline base", out, manifests["test"])  # fmt: skip
    return 0


LEARNED_T = "base_learned_T"  # the demo's system: the base sampled at the learned temperature


def _temperature_factor(policy: Path) -> float | None:
    """What the policy's learned temperature multiplies the sampling temperature by."""
    from sealign.models.registry import load_policy

    scale = getattr(load_policy(policy), "logit_scale", None)
    return None if scale is None else math.exp(-float(scale))


def _remove_system(out: Path, name: str) -> None:
    """An evaluated system's files in a demo folder: its policy, outputs and scores."""
    shutil.rmtree(out / name, ignore_errors=True)
    for folder, pattern in (("enhanced", f"{name}*"), ("scores", f"{name}*.jsonl")):
        for path in (out / folder).glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def base_at_learned_temperature(base: Path, aligned: Path, folder: Path) -> Path | None:
    """The base policy with the aligned one's learned temperature (``logit_scale``) written into
    it, saved in ``folder``; None when the aligned model's temperature is the base's."""
    import torch

    from sealign.models.registry import load_policy

    before, after = load_policy(base), load_policy(aligned)
    s0, s1 = getattr(before, "logit_scale", None), getattr(after, "logit_scale", None)
    if s0 is None or s1 is None or torch.equal(s0.detach(), s1.detach()):
        return None
    with torch.no_grad():
        s0.copy_(s1)
    tmp = folder.with_name(folder.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    before.save(tmp)  # type: ignore[attr-defined]
    if (base / "sampling.json").is_file():  # the base's recommended settings go with it
        shutil.copyfile(base / "sampling.json", tmp / "sampling.json")
    return replace_dir(tmp, folder)


def _budget_of_run(run: str, now: float) -> float:
    """The smaller of ``now`` and the GSPO budget the run in ``run`` was started with (0 =
    none)."""
    import yaml

    try:
        before = float(yaml.safe_load((Path(run) / "config.yaml").read_text())["max_minutes"])
    except (OSError, TypeError, KeyError, ValueError, yaml.YAMLError):
        return now
    budgets = [b for b in (before, now) if b > 0]
    return min(budgets) if budgets else 0.0


# GSPO's time past its budget: loading, the last held-out check, the step under way at the end
GSPO_OVERHEAD_MINUTES = 1.0
MIN_GSPO_MINUTES = 1.0


def gspo_minutes(cfg: DemoConfig, spent: float, after: float) -> float:
    """GSPO's time budget: ``gspo.max_minutes``, shortened so that the run ends within
    ``total_minutes`` when ``spent`` seconds have passed and ``after`` more follow GSPO (at
    least ``MIN_GSPO_MINUTES`` unless its own is less; a budget of 0, none, stays none)."""
    own = cfg.gspo.max_minutes
    if not cfg.total_minutes or not own:
        return own
    left = cfg.total_minutes - (spent + after) / 60 - GSPO_OVERHEAD_MINUTES
    if left >= own:
        return own
    if left < MIN_GSPO_MINUTES:
        log.warning(
            "the whole-run budget of %.0f min leaves %.1f min for GSPO: running it for %.1f min, "
            "so the run ends late (total_minutes=0 turns the whole-run budget off)",
            cfg.total_minutes, left, min(own, MIN_GSPO_MINUTES),
        )  # fmt: skip
        return min(own, MIN_GSPO_MINUTES)
    log.info(
        "GSPO budget %.1f min instead of %.1f, to end within total_minutes=%.0f (%.1f min "
        "spent, about %.1f min of evaluation after GSPO)",
        left, own, cfg.total_minutes, spent / 60, after / 60,
    )  # fmt: skip
    return left


def write_listening_test(
    folder: Path, systems_entries: dict[str, list[Entry]], n_items: int
) -> None:
    """A blind A/B test of the base and aligned outputs (first sample of each) in ``folder``,
    with fresh random codes (recorded in its key.json), so that no demo's key unblinds another's.
    A folder that holds answers or an analysis already is left as it is (logged)."""
    from sealign.eval.listening import ListeningConfig, make_test

    pair = ("base", "aligned")
    cfg = ListeningConfig(
        output=str(folder), kind="ab", n_items=n_items,
        systems={s: str(Path(systems_entries[s][0].audio).parent) for s in pair},
        title="sealign demo: which one sounds better?",
    )  # fmt: skip
    try:
        built = make_test(cfg, {s: {e.id: e for e in systems_entries[s]} for s in pair})
    except ValueError as err:  # the run's results are written: do not end it here
        log.warning("listening test not written: %s", err)
        return
    log.info(
        "listening test (A/B, %d trials): send %s to listeners, then `sealign listen analyze "
        "--test %s --results <their files>`", built.trials, built.root / "page", folder,
    )  # fmt: skip


def write_demo_report(
    out: Path,
    cfg: DemoConfig,
    systems_entries: dict[str, list[Entry]],
    text: str,
    results: dict[str, Any],
    asr: ASR | None = None,
) -> Path:
    """``report/index.html`` with the tables, reward curves and a few examples (with what
    ``asr`` transcribes in each of their audio files, when given)."""
    from sealign.report.html import Example, write_report
    from sealign.report.plots import plot_reward_curves, plot_spectrograms

    # built beside the previous report and swapped in when complete
    rep = out / "report.new"
    if rep.exists():
        shutil.rmtree(rep)
    (rep / "audio").mkdir(parents=True)
    figures = []
    curves = plot_reward_curves(out / "gspo" / "log.jsonl", rep / "reward_curves.png")
    if curves is not None:
        figures.append(("Training reward per step (points) and moving average", curves))
    examples = []
    by_id = {s: {e.id: e for e in ents} for s, ents in systems_entries.items()}
    for e in systems_entries["noisy"][: cfg.n_examples]:
        wavs, audio = {}, {}
        for s in ("noisy", "base", "aligned", "clean"):
            ent = by_id[s].get(e.id)
            if ent is None:
                continue
            wav, sr = load_audio(ent.audio, 16000)
            wavs[s] = wav
            dst = rep / "audio" / f"{e.id}_{s}.wav"
            shutil.copyfile(ent.audio, dst)
            audio[s] = dst
        if wavs:
            fig = plot_spectrograms(wavs, 16000, rep / f"{e.id}.png", title=e.id)
            ex = Example(e.id, fig, audio, e.text or "")
            if asr is not None:
                heard = asr.transcribe(list(wavs.values()), 16000)
                ex.transcripts = dict(zip(wavs, heard, strict=True))
                ex.heard_by = asr.name
            examples.append(ex)
    sec = results["seconds"]
    notes = (
        f"base: {results['base_checkpoint']}\nGSPO steps: {results['gspo']['steps']}  "
        f"test utterances: {results['test_utterances']}\n"
        + "  ".join(f"{k} {v:.0f} s" for k, v in sec.items())
    )
    if results["gspo"]["alarms"]:
        notes += "\n" + "\n".join(results["gspo"]["alarms"])
    parts = text.split("\n\n")
    sections = [("Test split: mean ± 95% CI", parts[0])]
    sections += [(p.strip().rstrip(":"), t) for p, t in zip(parts[1::2], parts[2::2], strict=False)]
    write_report(
        rep / "index.html", "sealign demo: GSPO on the demo test split", sections, figures,
        examples, notes,
    )  # fmt: skip
    return replace_dir(rep, out / "report") / "index.html"
