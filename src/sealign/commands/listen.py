"""Blind listening tests of enhanced outputs: MUSHRA-style ratings or A/B preferences.

  sealign listen make --eval runs/eval --output runs/listen [--kind mushra|ab]
  sealign listen make --system base=out/base --system aligned=out/al --system clean=ref.jsonl \\
      --reference clean --output runs/listen
  sealign listen analyze --test runs/listen --results results-*.json [--baseline base]

`make` draws items present in every system, loudness-matches and blinds them, and writes the
test folder: send its page/ subfolder to listeners (open page/index.html in a browser, rate,
press "Download results"); key.json, beside page/, says which code is which system. `analyze`
post-screens MUSHRA listeners (hidden reference below 90 in > 15% of trials), and writes the
per-system scores with 95% CIs (or the A/B preference shares) to results.md / results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from sealign.commands.common import (
    add_config_arguments,
    flag,
    flags_of,
    log,
    log_run_scalars,
    prepare_run_dir,
    resolve_config,
)
from sealign.config import save_config
from sealign.data.manifest import Entry, read_manifest
from sealign.eval.listening import (
    KINDS,
    ListeningConfig,
    analyze_ab,
    analyze_mushra,
    make_test,
    read_results,
    report_markdown,
)
from sealign.utils.jsonio import write_json, write_text

HELP = "blind listening tests (MUSHRA or A/B) of enhanced outputs, and their analysis"


@dataclass
class AnalyzeConfig:
    """Settings of ``sealign listen analyze``."""

    test: str = ""  # the folder `listen make` wrote (its key.json)
    results: list[str] = field(default_factory=list)  # the listeners' downloaded JSON files
    output: str = ""  # default: <test>/analysis
    baseline: str = ""  # MUSHRA: report every system's difference to this one

    def __post_init__(self) -> None:
        if not self.test or not self.results:
            raise ValueError("test and results are required")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="listen_command", metavar="STEP", required=True)
    m = sub.add_parser(
        "make",
        help="build a test folder to send to listeners",
        description="Build a blind MUSHRA or A/B test of enhanced outputs: a folder with the "
        "stimuli, an HTML page listeners open in a browser, and the key (key.json) that "
        "`listen analyze` needs; listeners send back the JSON file the page downloads.",
        epilog="Other settings as key=value overrides (see ListeningConfig): "
        "pairs=[a:b,c:d] (A/B: the pairs to compare; default every pair), seed=N (default: "
        "a fresh random seed, recorded in key.json), title=..., anchor=false, rms_dbfs=-26.",
    )
    m.add_argument("--eval", help="an `sealign eval` output folder: its models, noisy and clean")
    m.add_argument(
        "--system",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a system's outputs (manifest or folder; repeat); ids match across systems",
    )
    m.add_argument("--reference", help="MUSHRA reference system (default with --eval: clean)")
    m.add_argument("--kind", choices=["mushra", "ab"])
    m.add_argument("--n", type=int, dest="n_items", help="items (utterances) in the test")
    m.add_argument("--output", help="test folder")
    add_config_arguments(m, "seed=1")
    m.set_defaults(listen_func=_run_make)
    a = sub.add_parser(
        "analyze",
        help="score the listeners' result files",
        description="Unblind the listeners' result files with the test's key, refuse duplicate "
        "answers, post-screen MUSHRA listeners (BS.1534-3: the hidden reference below 90 in "
        "more than 15% of trials) and report each system's mean with 95% CIs and paired "
        "differences.",
    )
    a.add_argument("--test", help="the test folder")
    a.add_argument("--results", nargs="+", help="result JSON files downloaded by listeners")
    a.add_argument("--baseline", help="MUSHRA: system to report differences against")
    a.add_argument("--output", help="analysis folder (default <test>/analysis)")
    add_config_arguments(a, "baseline=base")
    a.set_defaults(listen_func=_run_analyze)


def eval_systems(folder: str | Path) -> dict[str, str]:
    """``{name: manifest}`` of an ``sealign eval`` folder's first-sample outputs, plus
    ``noisy`` and ``clean`` (as manifests written beside them, from the outputs' fields)."""
    root = Path(folder) / "enhanced"
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: not an `sealign eval` output (no enhanced/)")
    # the eval's own models (its results.json), not whatever else lies in enhanced/ (a model
    # of an earlier eval into the same folder); `<name>_sample<i>` folders are further samples
    models = None
    try:
        models = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))["models"]
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s: no readable results.json; taking every model folder in %s", folder, root)
    out: dict[str, str] = {}
    for d in sorted(p for p in root.iterdir() if (p / "manifest.jsonl").is_file()):
        if re.search(r"_sample\d+$", d.name) or (models is not None and d.name not in models):
            continue
        out[d.name] = str(d / "manifest.jsonl")
    if not out:
        raise FileNotFoundError(f"{root}: no outputs")
    return out


def _side_systems(manifest: str) -> dict[str, dict[str, Entry]]:
    """The noisy inputs and clean references named by an eval output manifest."""
    noisy, clean = {}, {}
    for e in read_manifest(manifest):
        if e.noisy:
            noisy[e.id] = Entry(e.id, e.noisy)
        if e.reference:
            clean[e.id] = Entry(e.id, e.reference)
    return {k: v for k, v in (("noisy", noisy), ("clean", clean)) if v}


def _run_make(args: argparse.Namespace) -> int:
    import dataclasses

    from sealign.infer.enhance import resolve_inputs

    given: dict[str, str] = {}
    for s in args.system:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--system {s!r}: expected NAME=PATH")
        given[name] = path
    extra = flags_of(args, ("kind", "n_items", "output", "reference", "eval"))
    if given:
        extra.append(flag("systems", given))
    saved = resolve_config(ListeningConfig, args, extra)  # what config.yaml keeps
    systems: dict[str, str] = {}
    extra_entries: dict[str, dict[str, Entry]] = {}
    if saved.eval:
        systems.update(eval_systems(saved.eval))
        first = next(iter(systems.values()))
        extra_entries = _side_systems(first)
        field_of = {"noisy": "noisy", "clean": "reference"}
        systems.update({k: f"{first} ({field_of[k]} paths)" for k in extra_entries})
    for name, path in saved.systems.items():
        systems[name] = path
        extra_entries.pop(name, None)  # replaces the eval's own noisy / clean
    reference = saved.reference or ("clean" if saved.eval and "clean" in systems else "")
    cfg = dataclasses.replace(saved, systems=systems, reference=reference, eval="")
    cfg.check()
    entries = {
        name: extra_entries[name] if name in extra_entries else
        {e.id: e for e in resolve_inputs(path)}
        for name, path in cfg.systems.items()
    }  # fmt: skip
    built = make_test(cfg, entries)
    save_config(saved, built.root / "config.yaml")  # how the test was made (seed: key.json)
    for uid, why in built.skipped.items():
        log.warning("left out %s: %s", uid, why)
    log.info(
        "%s test with %d trials: send %s to listeners (they open index.html); key.json stays",
        cfg.kind, built.trials, built.root / "page",
    )  # fmt: skip
    return 0


def _run_analyze(args: argparse.Namespace) -> int:
    cfg = resolve_config(
        AnalyzeConfig, args, flags_of(args, ("test", "results", "baseline", "output"))
    )
    key_path = Path(cfg.test) / "key.json"
    if not key_path.is_file():
        raise FileNotFoundError(f"{key_path}: the test's key is missing")
    try:
        key = json.loads(key_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{key_path}: not a listening test's key ({err})") from None
    if not (isinstance(key, dict) and key.get("kind") in KINDS
            and isinstance(key.get("trials"), dict)):  # fmt: skip
        raise ValueError(f"{key_path}: not a listening test's key (no kind or trials)")
    bad = [t for t, v in key["trials"].items()
           if not (isinstance(v, dict) and isinstance(v.get("codes"), dict))]  # fmt: skip
    if bad:
        raise ValueError(f"{key_path}: trial {bad[0]} has no codes (a damaged key)")
    results = read_results(cfg.results, key)
    if key["kind"] == "mushra":
        res = analyze_mushra(key, results, cfg.baseline or None)
        if cfg.baseline and cfg.baseline not in res["systems"]:
            known = ", ".join(res["systems"])
            raise ValueError(f"baseline: {cfg.baseline!r} is not a system of this test ({known})")
        if len(res["excluded_listeners"]) == len(results):
            log.warning("every listener failed the post-screening (hidden reference below 90 "
                        "in more than 15%% of trials): no scores")  # fmt: skip
    else:
        if cfg.baseline:
            raise ValueError("baseline: only for MUSHRA tests (A/B tests compare pairs)")
        res = analyze_ab(key, results)
    out = prepare_run_dir(cfg.output or Path(cfg.test) / "analysis", cfg)
    md = report_markdown(res)
    write_text(out / "results.md", md)
    write_json(out / "results.json", res, strict=True)
    if key["kind"] == "mushra":
        scalars = {f"listen/{s}/mean": v["mean"] for s, v in res["systems"].items()}
    else:
        scalars = {f"listen/{k}/a_share": v["a_share"] for k, v in res["pairs"].items()}
    # each analysis replaces the last one's record (the answers may have grown)
    log_run_scalars(out, {k: v for k, v in scalars.items() if math.isfinite(v)}, replace=True)
    print(md)
    log.info("%d listeners -> %s", len(results), out / "results.md")
    return 0


def run(args: argparse.Namespace) -> int:
    return args.listen_func(args)
