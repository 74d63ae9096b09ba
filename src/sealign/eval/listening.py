"""Blind listening tests: MUSHRA-style ratings and A/B preferences, built from enhanced
outputs, run in a browser (one self-contained HTML page, no server), and analysed.

Design (``make_test``): ``n_items`` utterances present in every system are drawn by seed; each
becomes a trial whose stimuli carry random codes, in random order, loudness-matched (equal RMS,
lowered together when a stimulus would clip). MUSHRA (ITU-R BS.1534-3) trials add the open
reference, the same reference hidden among the stimuli, and a 3.5 kHz low-pass anchor; an A/B
trial plays two systems and asks which one sounds better (or no preference). Listeners get the
``page/`` subfolder, which holds only codes; ``key.json`` (which code is which system) sits
outside it, with the experimenter.

Analysis (``analyze``): MUSHRA listeners who rate the hidden reference below 90 in more than
15% of trials are excluded (BS.1534-3 post-screening); each system's score is the mean over the
remaining listeners of their mean rating, with a t interval over listeners, and the paired
difference to a baseline system with a t interval over the listeners' differences. A listener
who leaves the hidden reference unrated in a trial fails that trial's check. A/B preferences are
counted per pair, with the share of decided trials won, its Wilson interval, and a two-sided
binomial test against 50%.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.signal import butter, sosfiltfilt

from sealign.audio.io import AudioError, load_audio, write_audio
from sealign.data.manifest import Entry
from sealign.eval.stats import mean_ci

KINDS = ("mushra", "ab")
REFERENCE = "reference"  # the hidden reference's system name in key.json
ANCHOR = "anchor_lp3.5k"
ANCHOR_HZ = 3500.0
PAGE = "page"  # the subfolder listeners get (index.html, test.json, audio/); key.json stays out


@dataclass
class ListeningConfig:
    """Settings of ``sealign listen make``."""

    output: str = ""
    kind: str = "mushra"  # mushra | ab
    # system name → manifest or folder of its outputs (matched by utterance id)
    systems: dict[str, str] = field(default_factory=dict)
    # an `sealign eval` folder whose models, noisy inputs and clean references join `systems`
    # (resolved when the test is made; `systems` replace any of the same name)
    eval: str = ""
    # MUSHRA: the system that is the reference (e.g. clean); it is also hidden among the stimuli
    reference: str = ""
    anchor: bool = True  # MUSHRA: add the 3.5 kHz low-pass of the reference
    # A/B: "a:b" system pairs to compare (default: every pair of systems)
    pairs: list[str] = field(default_factory=list)
    n_items: int = 12
    rms_dbfs: float = -26.0  # loudness every stimulus is matched to
    sample_rate: int = 16000
    # codes, order and items; None: a fresh random seed, recorded in key.json (a fixed seed
    # gives every test built with it the same codes, so one key would unblind them all)
    seed: int | None = None
    title: str = "Listening test"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: {self.kind!r} unknown; known: {', '.join(KINDS)}")
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        if not -60 <= self.rms_dbfs <= -6:
            raise ValueError(f"rms_dbfs must be in [-60, -6], got {self.rms_dbfs}")
        reserved = sorted({REFERENCE, ANCHOR} & set(self.systems))
        if reserved:
            raise ValueError(f"systems: {reserved[0]!r} is the name of a stimulus the test adds; "
                             "rename that system")  # fmt: skip
        if not 8000 <= self.sample_rate <= 192000:
            raise ValueError(
                f"sample_rate must be in [8000, 192000] (the {ANCHOR_HZ:g} Hz anchor needs "
                f"more than {2 * ANCHOR_HZ:g}), got {self.sample_rate}"
            )
        known = set(self.systems)  # with `eval`, its systems are known once it is read
        if (
            self.kind == "mushra"
            and self.reference
            and self.reference not in known
            and not self.eval
        ):
            raise ValueError(f"reference: {self.reference!r} is not one of the systems")
        for p in self.pairs:
            a, sep, b = p.partition(":")
            unknown = not self.eval and (a not in known or b not in known)
            if not sep or not a or not b or unknown or a == b:
                raise ValueError(f"pairs: {p!r} must be 'a:b' with two different systems")

    def check(self) -> None:
        """Checks that need the systems (run before any work)."""
        if not self.output:
            raise ValueError("output is required")
        if self.kind == "mushra":
            if not self.reference:
                raise ValueError("reference: a MUSHRA test needs the reference system (e.g. clean)")
            if len(self.systems) < 2:
                raise ValueError("systems: a MUSHRA test needs the reference and >= 1 system")
        elif len(self.systems) < 2:
            raise ValueError("systems: an A/B test needs at least two systems")

    def ab_pairs(self) -> list[tuple[str, str]]:
        if self.pairs:
            return [tuple(p.split(":", 1)) for p in self.pairs]  # type: ignore[misc]
        names = list(self.systems)
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def _low_pass(wav: np.ndarray, sr: int, hz: float) -> np.ndarray:
    sos = butter(8, hz, btype="low", fs=sr, output="sos")
    return sosfiltfilt(sos, wav).astype(np.float32)


def _match_loudness(wavs: dict[str, np.ndarray], rms_dbfs: float) -> dict[str, np.ndarray]:
    """Every signal scaled to ``rms_dbfs``; the target is lowered for all when one would clip."""
    target = 10 ** (rms_dbfs / 20)
    rms = {k: float(np.sqrt(np.mean(w.astype(np.float64) ** 2))) for k, w in wavs.items()}
    if min(rms.values()) <= 1e-8:
        silent = [k for k, r in rms.items() if r <= 1e-8]
        raise AudioError(f"silent stimulus: {', '.join(silent)}")
    peak = max(float(np.max(np.abs(w))) * target / rms[k] for k, w in wavs.items())
    scale = min(1.0, 0.99 / peak)
    return {k: (w * (target * scale / rms[k])).astype(np.float32) for k, w in wavs.items()}


def _code(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        c = "".join(rng.choice(list("abcdefghjkmnpqrstuvwxyz23456789"), size=4))
        if c not in used:
            used.add(c)
            return c


@dataclass
class BuiltTest:
    root: Path
    trials: int
    skipped: dict[str, str]  # utterance id → why it was left out


def make_test(cfg: ListeningConfig, entries: dict[str, dict[str, Entry]]) -> BuiltTest:
    """Write the test folder (``page/`` with ``index.html``, ``test.json`` and ``audio/``, the
    part listeners get; ``key.json`` beside it) for
    ``entries`` (system → utterance id → entry of that system's output)."""
    cfg.check()
    root = Path(cfg.output)
    _check_replaceable(root)
    common = sorted(set.intersection(*(set(e) for e in entries.values())))
    if not common:
        raise ValueError("no utterance id is present in every system")
    seed = secrets.randbits(63) if cfg.seed is None else cfg.seed
    rng = np.random.default_rng(seed)
    audio_hash = hashlib.sha1()  # the stimuli are part of the test's identity
    order = [common[i] for i in rng.permutation(len(common))]
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    trials: list[dict[str, Any]] = []
    key: dict[str, Any] = {"kind": cfg.kind, "seed": seed, "systems": dict(cfg.systems),
                           "trials": {}}  # fmt: skip
    skipped: dict[str, str] = {}
    units = (
        [(None, None)] if cfg.kind == "mushra" else [(a, b) for a, b in cfg.ab_pairs()]
    )  # MUSHRA: one trial per item; A/B: one per item and pair
    for uid in order:
        if len(trials) >= cfg.n_items * len(units):
            break
        try:
            wavs = {
                name: load_audio(entries[name][uid].audio, cfg.sample_rate)[0]
                for name in cfg.systems
            }
        except AudioError as err:
            skipped[uid] = str(err)
            continue
        sizes = {k: w.size for k, w in wavs.items()}
        short, long = min(sizes, key=sizes.get), max(sizes, key=sizes.get)
        if sizes[long] - sizes[short] > max(0.1 * sizes[long], 0.25 * cfg.sample_rate):
            # cutting every stimulus to the shortest would rate a fragment of the others
            skipped[uid] = (f"its stimuli differ in length: {short} {sizes[short] / cfg.sample_rate:.2f} s, "
                            f"{long} {sizes[long] / cfg.sample_rate:.2f} s")  # fmt: skip
            continue
        n = sizes[short]
        wavs = {k: w[:n] for k, w in wavs.items()}
        if cfg.kind == "mushra" and cfg.anchor:
            wavs[ANCHOR] = _low_pass(wavs[cfg.reference], cfg.sample_rate, ANCHOR_HZ)
        try:
            wavs = _match_loudness(wavs, cfg.rms_dbfs)
        except AudioError as err:
            skipped[uid] = str(err)
            continue
        for a, b in units:
            tid = f"t{len(trials) + 1:03d}"
            names = [k for k in wavs if k != cfg.reference] + [REFERENCE]
            if a is not None:
                names = [a, b]
            names = [names[i] for i in rng.permutation(len(names))]
            used: set[str] = set()
            codes = {}
            for name in names:
                code = _code(rng, used)
                src = cfg.reference if name == REFERENCE else name
                write_audio(tmp / PAGE / "audio" / tid / f"{code}.wav", wavs[src], cfg.sample_rate)
                audio_hash.update(np.ascontiguousarray(wavs[src]).tobytes())
                codes[code] = name
            trial: dict[str, Any] = {"id": tid, "stimuli": list(codes)}
            if cfg.kind == "mushra":
                ref_path = tmp / PAGE / "audio" / tid / "ref.wav"
                write_audio(ref_path, wavs[cfg.reference], cfg.sample_rate)
                trial["reference"] = "ref"
            trials.append(trial)
            key["trials"][tid] = {"item": uid, "codes": codes}
    if not trials:
        raise ValueError(f"no usable item: {'; '.join(f'{k}: {v}' for k, v in skipped.items())}")
    key["audio_sha1"] = audio_hash.hexdigest()
    test = {"id": listening_test_id(key), "title": cfg.title, "kind": cfg.kind, "trials": trials}
    (tmp / PAGE / "test.json").write_text(json.dumps(test, indent=1) + "\n", encoding="utf-8")
    (tmp / "key.json").write_text(json.dumps(key, indent=1) + "\n", encoding="utf-8")
    (tmp / PAGE / "index.html").write_text(listening_page(test), encoding="utf-8")
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return BuiltTest(root, len(trials), skipped)


def _check_replaceable(root: Path) -> None:
    """A test is written over an earlier one that nobody has answered yet, never over anything
    else: ``root`` must be new, empty, or hold only what ``make`` writes (``key.json``,
    ``page/``); answers or an analysis beside them would lose their key."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"--output {root} is a file, not a folder")
    if not root.is_dir() or not any(root.iterdir()):
        return
    if not (root / "key.json").is_file():
        raise ValueError(
            f"--output {root} exists and is not a listening test (no key.json); "
            "give a new folder or remove it"
        )
    other = sorted(
        p.name for p in root.iterdir() if p.name not in ("key.json", "config.yaml", PAGE)
    )
    if other:
        raise ValueError(
            f"--output {root} holds a listening test with other files ({', '.join(other[:4])}): "
            "a new test would replace its key.json, which those answers need; give another "
            "folder, or move them and the test away first"
        )


def listening_test_id(key: dict[str, Any]) -> str:
    """The id of the test with this key: pages keep answers apart by it and result files carry
    it. The key holds the seed and a hash of the stimuli, so tests of other audio, or built with
    another seed, differ."""
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def listening_page(test: dict[str, Any]) -> str:
    """The self-contained page that runs ``test`` (open ``index.html`` next to ``audio/``)."""
    # one pass, so that neither inserted text is read as a placeholder; the title goes in as
    # HTML text and the test as a script's JSON, where no "<" may appear ("</script>" would
    # close the script and "<!--" change how the rest of it is read)
    fill = {
        "__TITLE__": html.escape(test["title"]),
        "__TEST__": json.dumps(test).replace("<", "\\u003c"),
    }
    return re.sub("__TITLE__|__TEST__", lambda m: fill[m.group(0)], _PAGE)


# ---------------------------------------------------------------------------------- analysis


def read_results(paths: list[str | Path], key: dict[str, Any]) -> list[dict[str, Any]]:
    """The listeners' result files, checked against the test's ``key``."""
    out: list[dict[str, Any]] = []
    files: dict[Path, str] = {}
    for p in paths:
        real = Path(p).resolve()
        if real in files:
            raise ValueError(f"{p}: given twice")
        try:
            r = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{p}: not a results file ({err})") from None
        if not isinstance(r, dict):
            raise ValueError(f"{p}: not a results file (a JSON object is expected)")
        if r.get("kind") != key["kind"] or not isinstance(r.get("answers"), dict):
            raise ValueError(f"{p}: not a {key['kind']} results file of this test")
        if r.get("test", listening_test_id(key)) != listening_test_id(key):
            raise ValueError(
                f"{p}: answers to another test ({r['test']}, not {listening_test_id(key)})"
            )
        unknown = sorted(set(r["answers"]) - set(key["trials"]))
        if unknown:
            raise ValueError(f"{p}: trials {unknown[:3]} are not in this test")
        bad = [t for t, a in r["answers"].items() if not isinstance(a, dict)]
        if bad:
            raise ValueError(f"{p}: the answer to trial {bad[0]} is not a JSON object")
        r.setdefault("listener", Path(p).stem)
        if not isinstance(r["listener"], str) or not r["listener"].strip():
            raise ValueError(f"{p}: listener must be a non-empty string, got {r['listener']!r}")
        # a file downloaded twice, or copied, would count twice (two listeners who named
        # themselves differently may well agree on every trial, above all in an A/B test)
        same = next((q for q, prev in zip(files, out, strict=True)
                     if prev["answers"] == r["answers"]
                     and prev["listener"].split(" (")[0] == r["listener"]), None)  # fmt: skip
        if same is not None:
            raise ValueError(f"{p}: the same answers as {same} under the same name (one "
                             "listener's file twice? listeners who agree should give their "
                             "names)")  # fmt: skip
        # the page names every unnamed listener "anonymous": tell them apart by file; two
        # files of one named listener are one listener's answers twice
        if r["listener"] in files.values():
            first = next(q for q, name in files.items() if name == r["listener"])
            if r["listener"] != "anonymous":
                raise ValueError(f"{p}: listener {r['listener']!r} has answered in {first} "
                                 "already; give each listener's answers once")  # fmt: skip
            r["listener"] = f"{r['listener']} ({Path(p).name})"
        if r["listener"] in files.values():
            raise ValueError(f"{p}: listener {r['listener']!r} occurs twice")
        files[real] = r["listener"]
        out.append(r)
    if not out:
        raise ValueError("no results files given")
    return out


def analyze_mushra(
    key: dict[str, Any], results: list[dict[str, Any]], baseline: str | None = None
) -> dict[str, Any]:
    """Post-screened per-system scores (see the module doc) and differences to ``baseline``."""
    per: dict[str, dict[str, list[float]]] = {}  # listener → system → ratings
    hidden_low: dict[str, float] = {}
    for r in results:
        ratings: dict[str, list[float]] = {}
        low = total = 0
        for tid, answer in r["answers"].items():
            codes = key["trials"][tid]["codes"]
            for code, score in answer.items():
                ok = isinstance(score, int | float) and not isinstance(score, bool)
                if code not in codes or not ok or not 0 <= score <= 100:  # NaN fails too
                    raise ValueError(f"{r['listener']}: bad rating {code!r}: {score!r} in {tid} "
                                     "(a number from 0 to 100 expected)")  # fmt: skip
                ratings.setdefault(codes[code], []).append(float(score))
            if answer:  # a rated trial whose hidden reference was left unrated fails too
                ref_scores = [s for c, s in answer.items() if codes[c] == REFERENCE]
                total += 1
                low += not ref_scores or ref_scores[0] < 90
        per[r["listener"]] = ratings
        hidden_low[r["listener"]] = low / total if total else math.nan  # nothing rated
    kept = [name for name, share in hidden_low.items() if share <= 0.15]
    systems = sorted({s for ratings in per.values() for s in ratings})
    means = {
        s: {lis: float(np.mean(per[lis][s])) for lis in kept if per[lis].get(s)} for s in systems
    }
    table: dict[str, Any] = {}
    for s in systems:
        ci = mean_ci(list(means[s].values()))
        table[s] = {"mean": ci.mean, "low": ci.low, "high": ci.high, "listeners": ci.n}
        if baseline and s != baseline and baseline in means:
            both = [lis for lis in means[s] if lis in means[baseline]]
            # a t interval over listeners, as for the scores: a bootstrap over two or three
            # listeners would give a narrow interval it cannot support
            d = mean_ci([means[s][lis] - means[baseline][lis] for lis in both])
            table[s]["diff_vs_baseline"] = {"mean": d.mean, "low": d.low, "high": d.high}
    excluded = sorted(set(per) - set(kept))
    return {"kind": "mushra", "systems": table, "excluded_listeners": excluded,
            "hidden_reference_below_90": hidden_low, "baseline": baseline}  # fmt: skip


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return mid - half, mid + half


def analyze_ab(key: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Preference counts per system pair (see the module doc)."""
    counts: dict[tuple[str, str], list[int]] = {}  # (a, b) sorted → [a wins, b wins, none]
    for r in results:
        for tid, answer in r["answers"].items():
            codes = key["trials"][tid]["codes"]
            a, b = sorted(codes.values())
            c = counts.setdefault((a, b), [0, 0, 0])
            choice = answer.get("choice")
            if not isinstance(choice, str):
                raise ValueError(f"{r['listener']}: bad answer {answer!r} in {tid}")
            if choice == "none":
                c[2] += 1
            elif choice in codes:
                c[0 if codes[choice] == a else 1] += 1
            else:
                raise ValueError(f"{r['listener']}: bad answer {answer!r} in {tid}")
    pairs = {}
    for (a, b), (wa, wb, none) in sorted(counts.items()):
        n = wa + wb
        lo, hi = wilson(wa, n)
        p = float(stats.binomtest(wa, n).pvalue) if n else float("nan")
        pairs[f"{a} vs {b}"] = {
            "a": a, "b": b, "a_preferred": wa, "b_preferred": wb, "no_preference": none,
            "a_share": wa / n if n else float("nan"), "a_share_low": lo, "a_share_high": hi,
            "p_value": p,
        }  # fmt: skip
    return {"kind": "ab", "pairs": pairs}


def report_markdown(res: dict[str, Any]) -> str:
    """The analysis as a Markdown table."""
    if res["kind"] == "mushra":
        base = res.get("baseline")
        head = "| system | score (0–100) | 95% CI | listeners |"
        rule = "|---|---|---|---|"
        if base:
            head += f" Δ vs {base} (95% CI) |"
            rule += "---|"
        lines = [head, rule]
        for s, v in sorted(res["systems"].items(), key=lambda kv: -kv[1]["mean"]):
            row = (
                f"| {s} | {v['mean']:.1f} | [{v['low']:.1f}, {v['high']:.1f}] | {v['listeners']} |"
            )
            if base:
                d = v.get("diff_vs_baseline")
                row += f" {d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] |" if d else " |"
            lines.append(row)
        if res["excluded_listeners"]:
            lines.append("")
            share = res.get("hidden_reference_below_90", {})
            lines.append(
                "Excluded (hidden reference below 90 in more than 15% of trials, or no trial "
                "rated): "
                + ", ".join(
                    name + (" (no trial rated)" if math.isnan(share.get(name, 0.0)) else "")
                    for name in res["excluded_listeners"]
                )
            )
        return "\n".join(lines) + "\n"
    lines = [
        "| pair | A preferred | B preferred | no preference | A's share (95% CI) | p |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in res["pairs"].items():
        lines.append(
            f"| {name} | {v['a_preferred']} | {v['b_preferred']} | {v['no_preference']} | "
            f"{v['a_share']:.2f} [{v['a_share_low']:.2f}, {v['a_share_high']:.2f}] | "
            f"{v['p_value']:.3g} |"
        )
    return "\n".join(lines) + "\n"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}
.stim{display:flex;align-items:center;gap:1rem;margin:.4rem 0}
.stim input[type=range]{flex:1}
button{padding:.3rem .8rem}
.scale{color:#666;font-size:.85rem}
</style></head><body>
<h1>__TITLE__</h1>
<p id="intro"></p>
<p>Listener: <input id="listener" placeholder="your name or code"></p>
<div id="trial"></div>
<p><button id="prev">Previous</button> <span id="pos"></span> <button id="next">Next</button></p>
<p><button id="save">Download results</button> <span id="status"></span></p>
<script>
const TEST = __TEST__;
const KEY = "sealign-listen-" + TEST.id;
const state = JSON.parse(localStorage.getItem(KEY) || '{"answers":{}}');
let at = 0;
const audio = new Audio();
function play(src){ audio.pause(); audio.src = src; audio.currentTime = 0; audio.play(); }
function store(){ localStorage.setItem(KEY, JSON.stringify(state)); }
document.getElementById("intro").textContent = TEST.kind === "mushra"
  ? "Rate how close each sound is to the reference (0 = bad, 100 = excellent). One of them is the reference itself. Set every slider: one you have not moved shows '-' and is not saved."
  : "Play A and B and choose the one that sounds better, or no preference.";
function render(){
  const t = TEST.trials[at], box = document.getElementById("trial");
  const ans = state.answers[t.id] = state.answers[t.id] || {};
  box.innerHTML = "";
  document.getElementById("pos").textContent = (at + 1) + " / " + TEST.trials.length;
  const dir = "audio/" + t.id + "/";
  if (TEST.kind === "mushra") {
    const ref = document.createElement("p");
    const rb = document.createElement("button"); rb.textContent = "Reference";
    rb.onclick = () => play(dir + t.reference + ".wav"); ref.appendChild(rb); box.appendChild(ref);
    t.stimuli.forEach((code, i) => {
      const row = document.createElement("div"); row.className = "stim";
      const b = document.createElement("button"); b.textContent = "Sound " + (i + 1);
      b.onclick = () => play(dir + code + ".wav");
      const r = document.createElement("input"); r.type = "range"; r.min = 0; r.max = 100;
      r.value = ans[code] ?? 50;
      const v = document.createElement("span"); v.textContent = ans[code] ?? "-";
      r.oninput = () => { ans[code] = Number(r.value); v.textContent = r.value; store(); };
      row.append(b, r, v); box.appendChild(row);
    });
    const s = document.createElement("p"); s.className = "scale";
    s.textContent = "0-20 bad, 20-40 poor, 40-60 fair, 60-80 good, 80-100 excellent";
    box.appendChild(s);
  } else {
    ["A", "B"].forEach((lab, i) => {
      const b = document.createElement("button"); b.textContent = "Play " + lab;
      b.onclick = () => play(dir + t.stimuli[i] + ".wav"); box.appendChild(b);
    });
    const opts = [[t.stimuli[0], "A is better"], ["none", "No preference"], [t.stimuli[1], "B is better"]];
    opts.forEach(([val, lab]) => {
      const l = document.createElement("label"); const r = document.createElement("input");
      r.type = "radio"; r.name = "c"; r.checked = ans.choice === val;
      r.onchange = () => { ans.choice = val; store(); };
      l.append(r, " " + lab + " "); box.appendChild(document.createElement("br")); box.appendChild(l);
    });
  }
}
document.getElementById("prev").onclick = () => { if (at > 0) { at--; render(); } };
function unrated(t){
  const ans = state.answers[t.id] || {};
  return TEST.kind === "mushra" ? t.stimuli.filter(c => !(c in ans)).length : (ans.choice ? 0 : 1);
}
document.getElementById("next").onclick = () => {
  const t = TEST.trials[at], left = unrated(t);
  if (TEST.kind === "mushra" && left && Object.keys(state.answers[t.id] || {}).length) {
    document.getElementById("status").textContent = "rate every sound of this trial first (" + left + " left)";
    return;
  }
  document.getElementById("status").textContent = "";
  if (at < TEST.trials.length - 1) { at++; render(); }
};
document.getElementById("save").onclick = () => {
  const name = document.getElementById("listener").value.trim() || "anonymous";
  const answers = {};
  for (const [k, v] of Object.entries(state.answers)) if (Object.keys(v).length) answers[k] = v;
  const blob = new Blob([JSON.stringify({listener: name, test: TEST.id, kind: TEST.kind, answers}, null, 1)],
                        {type: "application/json"});
  const a = document.createElement("a"); a.href = URL.createObjectURL(blob);
  a.download = "results-" + name + ".json"; a.click();
  const open = TEST.trials.filter(t => unrated(t)).length;
  document.getElementById("status").textContent = Object.keys(answers).length + " trials saved"
    + (open ? "; " + open + " not finished" : "");
};
render();
</script></body></html>
"""
