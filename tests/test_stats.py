import numpy as np
import pytest

from sealign.eval.stats import mean_ci, paired_bootstrap_diff


def test_mean_ci_matches_t_interval():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    ci = mean_ci(x)
    assert ci.mean == 3.0 and ci.n == 5
    assert ci.high - ci.mean == pytest.approx(2.776445 * np.std(x, ddof=1) / np.sqrt(5), rel=1e-5)
    assert np.isnan(mean_ci([1.0]).low) and mean_ci([]).n == 0


def test_paired_bootstrap_detects_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    ci = paired_bootstrap_diff(a, a + 0.3 + 0.1 * rng.normal(size=200))
    assert ci.low > 0.25 and ci.high < 0.35
    null = paired_bootstrap_diff(a, a + 0.1 * rng.normal(size=200))
    assert null.low < 0 < null.high
