"""`loopkit_core.statistics` against brute force and the standard library: the one definition of each statistic."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from loopkit_core import statistics as lk


def test_the_statistics_agree_with_brute_force() -> None:
    # Exceedance law: enumerate every interleaving of 4 window and 6 baseline values.
    n, m, k = 4, 6, 2
    tally = [0] * (n + 1)
    for window_ranks in itertools.combinations(range(n + m), n):
        baseline_ranks = sorted(set(range(n + m)) - set(window_ranks))
        kth_largest = baseline_ranks[-k]
        tally[sum(1 for r in window_ranks if r > kth_largest)] += 1
    total = sum(tally)
    for x in range(n + 1):
        assert lk.exceedance_p(x, k, n, m) == pytest.approx(sum(tally[x:]) / total)
    # Mann-Whitney U (ties count one half) against the pair count; percentiles against the stdlib.
    rnd = random.Random(3)
    xs = sorted(float(rnd.randrange(20)) for _ in range(40))
    ys = sorted(float(rnd.randrange(15)) for _ in range(55))
    pairs = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in xs for b in ys)
    z, effect = lk.mann_whitney(xs, ys)
    assert effect == pytest.approx(pairs / (len(xs) * len(ys)))
    assert z > 0
    for q in (0.5, 0.95, 0.99):
        expected = statistics.quantiles(ys, n=100, method="inclusive")[round(q * 100) - 1]
        assert lk.percentile(ys, q) == pytest.approx(expected)


def test_the_percentile_interpolates_where_nearest_rank_would_not() -> None:
    # 1..20 ms: rank 0.95 x 19 = 18.05 lies between 19 and 20 ms. Nearest rank (what the latency
    # verifier used to report) says 19 ms; the detector's interpolated p95, stored in packets, 19.05 ms.
    values = [float(v) for v in range(1, 21)]
    assert lk.percentile(values, 0.95) == pytest.approx(19.05)
    assert lk.percentile(values, 0.95) == pytest.approx(statistics.quantiles(values, n=20, method="inclusive")[18])
    assert lk.median(values) == 10.5
    assert (lk.percentile([], 0.95), lk.percentile([7.0], 0.95), lk.percentile(values, 1.0)) == (0.0, 7.0, 20.0)


def test_mad_and_share() -> None:
    values = [1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 9.0]  # median 2; deviations 0 0 1 1 2 4 7, median 1
    assert lk.mad(values) == 1.0
    assert lk.share_at_least(values, 2.0) == 5 / 7
    assert lk.share_at_least(values, 9.5) == 0.0
    assert lk.share_at_least([], 1.0) == 0.0


def test_the_exceedance_test_counts_against_the_baseline_kth_largest() -> None:
    baseline = [float(v) for v in range(1, 101)]  # threshold 95.5: 96..100 reach it, k = 5, the 5th largest is 96
    window = sorted([10.0] * 20 + [96.0] * 3 + [99.5] * 7)  # 10 window values at or over 96
    assert lk.exceedance_test(window, baseline, 95.5) == lk.exceedance_p(10, 5, 30, 100)
    assert lk.exceedance_test(window, baseline, 1000.0) == 1.0  # no baseline value reaches it: nothing to test
    assert lk.z_of(1.0) == -math.inf and lk.z_of(0.0) == lk.z_of(1e-300) == pytest.approx(37.047, abs=1e-3)
    assert lk.z_of(0.05) == pytest.approx(1.6449, abs=1e-4)


def test_poisson_tails_against_the_pmf() -> None:
    for mean in (0.5, 3.0, 10.0, 42.5):
        pmf = [math.exp(-mean) * mean**i / math.factorial(i) for i in range(120)]
        for k in (0, 1, 5, 10, 30):
            assert lk.poisson_cdf(k, mean) == pytest.approx(sum(pmf[: k + 1]), rel=1e-9)
            assert lk.poisson_sf(k, mean) == pytest.approx(sum(pmf[k:]), rel=1e-6, abs=1e-12)
    assert lk.poisson_sf(0, 3.0) == 1.0 and lk.poisson_sf(1, 0.0) == 0.0
    assert lk.poisson_cdf(2, 10.0) == pytest.approx(61 * math.exp(-10))  # 1 + 10 + 50


def test_bonferroni_z() -> None:
    assert lk.bonferroni_z(0.001, 2) == pytest.approx(3.2905, abs=1e-4)
    assert lk.bonferroni_z(0.001, 400) == pytest.approx(4.5648, abs=1e-4)  # 200 operations, 2 tests each


@pytest.mark.parametrize(
    ("a", "n1", "c", "n2"), [(20, 20, 10, 60), (3, 10, 5, 40), (0, 5, 5, 5), (5, 5, 0, 100), (6, 6, 0, 54)]
)
def test_fisher_greater_is_scipys_one_sided_fisher_exact(a: int, n1: int, c: int, n2: int) -> None:
    from scipy.stats import fisher_exact

    from loopkit_core.statistics import fisher_greater

    expected = fisher_exact([[a, n1 - a], [c, n2 - c]], alternative="greater").pvalue
    assert fisher_greater(a, n1, c, n2) == pytest.approx(expected, rel=1e-9)
