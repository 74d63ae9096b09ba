import numpy as np
import pytest

from sealign.eval.stats import mean_ci, paired_bootstrap_diff


def test_mean_ci_matches_t_interval():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    ci = mean_ci(x)
    assert ci.mean == 3.0 and ci.n == 5
    assert ci.high - ci.mean == pytest.approx(2.776445 * np.std(x, ddof=1) / np.sqrt(5), rel=1e-5)
    assert np.isnan(mean_ci([1.0]).low) and mean_ci([]).n == 0


def test_mean_ci_stays_within_the_metrics_range():
    sims = [0.99, 0.98, 0.7]  # three speaker similarities: the t interval reaches past 1
    assert mean_ci(sims).high > 1
    ci = mean_ci(sims, bounds=(-1.0, 1.0))
    assert ci.high == 1.0 and ci.low == mean_ci(sims).low and ci.mean == mean_ci(sims).mean
    # a mean beyond a metric's nominal range (SI-SDR below -50 dB): the range is no bound
    assert mean_ci([-60.0, -70.0], bounds=(-50.0, 120.0)) == mean_ci([-60.0, -70.0])


def test_paired_bootstrap_detects_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    ci = paired_bootstrap_diff(a, a + 0.3 + 0.1 * rng.normal(size=200))
    assert ci.low > 0.25 and ci.high < 0.35
    null = paired_bootstrap_diff(a, a + 0.1 * rng.normal(size=200))
    assert null.low < 0 < null.high


def test_mean_ci_leaves_out_non_finite_values():
    ci = mean_ci([1.0, 2.0, np.nan, 3.0, np.inf])
    assert (ci.mean, ci.n) == (2.0, 3) and ci.low == pytest.approx(mean_ci([1.0, 2.0, 3.0]).low)


def test_paired_bootstrap_interval_has_its_nominal_width():
    # for many normal differences the percentile interval is close to mean ± z·sd/√n: a 90%
    # interval passed off as 95% would be 16% narrower
    rng = np.random.default_rng(1)
    d = rng.normal(0.5, 1.0, size=2000)
    ci = paired_bootstrap_diff(np.zeros_like(d), d, n_boot=4000)
    half = 1.959964 * d.std(ddof=1) / np.sqrt(d.size)
    assert (ci.high - ci.low) / 2 == pytest.approx(half, rel=0.06)
    assert ci.mean == pytest.approx(d.mean()) and ci.n == 2000
    narrow = paired_bootstrap_diff(np.zeros_like(d), d, n_boot=4000, confidence=0.9)
    assert ci.low < narrow.low < narrow.high < ci.high


def test_paired_bootstrap_resamples_every_pair_and_drops_non_finite_ones():
    d = np.array([0.0, 0.0, 0.0, 0.0, 10.0])  # the last pair alone moves the mean
    ci = paired_bootstrap_diff(np.zeros(5), d)
    assert ci.low == 0.0 and ci.high > 2.0
    with_nan = paired_bootstrap_diff(np.zeros(6), np.append(d, np.nan))
    assert (with_nan.mean, with_nan.low, with_nan.high, with_nan.n) == (ci.mean, ci.low, ci.high, 5)
    one = paired_bootstrap_diff([1.0], [3.0])  # a single pair has no interval
    assert one.mean == 2.0 and np.isnan(one.low) and np.isnan(one.high) and one.n == 1


def test_paired_bootstrap_in_blocks_equals_all_resamples_at_once(monkeypatch):
    from sealign.eval import stats

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=301), rng.normal(size=301)
    whole = paired_bootstrap_diff(a, b, seed=3)
    d = b - a
    idx = np.random.default_rng(3).integers(0, d.size, size=(2000, d.size))
    assert whole.low == np.quantile(d[idx].mean(axis=1), 0.025)  # one block here
    monkeypatch.setattr(stats, "_BOOT_ELEMENTS", 301 * 7)  # blocks of 7 resamples, one of 5
    assert paired_bootstrap_diff(a, b, seed=3) == whole
