"""The reward-hacking alarm of the held-out evaluation (sealign.rl.evaluation.hacking_alarms)."""

import numpy as np
import pytest
from scipy import stats

from sealign.rl.evaluation import hacking_alarms

HIB = {"sig": True, "spk": True, "estoi": True, "cer": False, "ovrl": True}


def records(cols: dict[str, np.ndarray]) -> list[dict]:
    n = len(next(iter(cols.values())))
    return [{"id": f"u{i}", "scores": {c: float(v[i]) for c, v in cols.items()}} for i in range(n)]


def test_a_clear_drop_of_a_watched_metric_raises_it_and_a_rewarded_one_does_not():
    rng = np.random.default_rng(0)
    base = {c: rng.normal(3, 0.3, 16) for c in HIB}
    cur = {c: v + rng.normal(0, 0.02, 16) for c, v in base.items()}
    cur["sig"] = base["sig"] - 0.3 + rng.normal(0, 0.05, 16)  # watched, higher is better: worse
    cur["cer"] = base["cer"] + 0.3  # watched, lower is better: worse
    cur["ovrl"] = base["ovrl"] - 0.3  # rewarded: not watched
    cur["spk"] = base["spk"] + 0.3  # better: no alarm
    alarms = hacking_alarms(records(base), records(cur), HIB, rewarded={"ovrl"})
    assert sorted(a.column for a in alarms) == ["cer", "sig"]
    sig = next(a for a in alarms if a.column == "sig")
    assert sig.diff == pytest.approx(-0.3, abs=0.03) and sig.low < sig.diff < sig.high < 0
    assert sig.p < 0.05


def test_p_value_is_scipys_one_sided_paired_t_test_with_holms_factor():
    rng = np.random.default_rng(1)
    base = {c: rng.normal(0.7, 0.05, 10) for c in ("sig", "spk", "estoi")}
    cur = dict(base)
    cur["sig"] = base["sig"] - 0.05 + rng.normal(0, 0.03, 10)
    alarms = hacking_alarms(records(base), records(cur), HIB, rewarded=set())
    assert [a.column for a in alarms] == ["sig"]
    ref = stats.ttest_rel(cur["sig"], base["sig"], alternative="less").pvalue
    assert alarms[0].p == pytest.approx(3 * ref, rel=1e-9)  # three watched columns, smallest p


def test_identical_scores_raise_nothing_and_a_constant_drop_is_caught():
    base = {"sig": np.linspace(2, 3, 8), "spk": np.linspace(0.6, 0.8, 8)}
    assert hacking_alarms(records(base), records(base), HIB, rewarded=set()) == []
    cur = {"sig": base["sig"] - 0.1, "spk": base["spk"]}
    assert [a.column for a in hacking_alarms(records(base), records(cur), HIB, set())] == ["sig"]


def test_false_alarm_rate_stays_near_five_percent_with_many_watched_metrics():
    """Nothing changed (two independent noisy draws per utterance): at most ~5% of checks of
    seven watched metrics on eight utterances may raise the alarm (one per metric would be ~16%
    uncorrected, more with a small-sample bootstrap)."""
    rng = np.random.default_rng(2)
    hib = {f"m{j}": bool(j % 2) for j in range(7)}
    fired = 0
    trials = 400
    for _ in range(trials):
        truth = {c: rng.normal(0, 1, 8) for c in hib}
        a = {c: v + rng.normal(0, 0.5, 8) for c, v in truth.items()}
        b = {c: v + rng.normal(0, 0.5, 8) for c, v in truth.items()}
        fired += bool(hacking_alarms(records(a), records(b), hib, rewarded=set()))
    assert fired / trials <= 0.07


def test_a_metric_whose_settings_changed_since_step_zero_gets_no_alarm(tmp_path):
    """A run resumed with another setting of a held-out metric (or after an upgrade that
    changed one) does not compare that metric with its step-0 scores."""
    import json

    from sealign.rl.evaluation import HeldOut, RLEvalConfig
    from sealign.train.data import DataConfig

    def held_out(gain: str, start: int = 0) -> HeldOut:
        cfg = RLEvalConfig(manifests=[], metrics=["lsd", "si_sdr"],
                           metric_options={"lsd": {"gain": gain}})  # fmt: skip
        held = HeldOut(cfg, DataConfig(), 16000, 0, 1, tmp_path)
        held.start(start)
        return held

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "step_00000000.json").write_text("[]")
    first = held_out("least_squares")
    assert set(first.directions) == {"lsd", "si_sdr"}
    lsd = first.metrics["lsd"]
    assert lsd.settings()["gain"] == "least_squares"
    record = {"lsd": [lsd.info.version, lsd.settings()]}
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(record))
    assert set(held_out("least_squares").directions) == {"lsd", "si_sdr"}
    assert set(held_out("rms").directions) == {"si_sdr"}
    # a fresh start over a killed run's files scores step 0 anew: its alarm stays on
    fresh = held_out("rms", start=-1)
    assert set(fresh.directions) == {"lsd", "si_sdr"} and not fresh.evals
    assert not (tmp_path / "eval" / "step_00000000.json").exists()
