"""The statistics LoopKit's detectors and verifiers share, in pure Python (no NumPy or SciPy).

One definition of each statistic, so that a number a diagnoser stores in a packet (say the window's
p95) and the number a verifier reports for the same data later are computed the same way. Plugins may
import it: it is part of core's API for plugin authors (docs/writing_plugins.md).

Functions that take `values` expect them ascending (`sorted(...)`), as `Window.durations` returns them.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from statistics import NormalDist


def percentile(values: list[float], q: float) -> float:
    """The q-quantile of ascending values, linearly interpolated between closest ranks (numpy's default).

    0.0 for no values. The same as `statistics.quantiles(values, method="inclusive")` at its cut points.
    """
    if not values:
        return 0.0
    position = q * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def median(values: list[float]) -> float:
    """The median of ascending values (the interpolated 0.5-quantile)."""
    return percentile(values, 0.5)


def mad(values: list[float]) -> float:
    """The median absolute deviation from the median of ascending values (unscaled)."""
    center = median(values)
    return median(sorted(abs(x - center) for x in values))


def share_at_least(values: list[float], threshold: float) -> float:
    """The share of ascending values >= threshold (0.0 for no values)."""
    return (len(values) - bisect.bisect_left(values, threshold)) / len(values) if values else 0.0


def mann_whitney(x: list[float], y: list[float]) -> tuple[float, float]:
    """One-sided Mann-Whitney U for "x tends to be larger than y": (z, A = U / (nx ny)).

    Normal approximation with the tie-corrected variance and a continuity correction; ties count
    one half. x and y must be ascending.
    """
    nx, ny = len(x), len(y)
    if not nx or not ny:
        return 0.0, 0.5
    u = 0.0
    for value, run in _runs(x):  # each distinct x once: a bisect pair instead of one per value
        below = bisect.bisect_left(y, value)
        equal = bisect.bisect_right(y, value, below) - below
        u += run * (below + equal / 2)
    n = nx + ny
    ties = sum(t**3 - t for t in Counter(x + y).values() if t > 1)
    variance = nx * ny / 12 * ((n + 1) - ties / (n * (n - 1)))
    mean = nx * ny / 2
    z = (u - mean - 0.5) / math.sqrt(variance) if variance > 0 else 0.0
    return z, u / (nx * ny)


def exceedance_p(x: int, k: int, n: int, m: int) -> float:
    """P(at least x of n window values reach the k-th largest of m baseline values) under "no change".

    Exact for continuous data: if both samples come from one distribution, every interleaving of
    them is equally likely, and the number X of window values above the baseline's k-th largest
    follows a negative hypergeometric law, P(X = j) = C(j+k-1, j) C(n+m-j-k, n-j) / C(n+m, n).
    A normal approximation would be far too optimistic here, with a handful of expected values.
    """
    if x <= 0 or k <= 0:
        return 1.0
    total = _log_comb(n + m, n)
    return min(
        1.0, sum(math.exp(_log_comb(j + k - 1, j) + _log_comb(n + m - j - k, n - j) - total) for j in range(x, n + 1))
    )


def exceedance_test(window: list[float], baseline: list[float], threshold: float) -> float:
    """The p-value of "as many window values reach the threshold as observed" under "no change".

    Exact (see `exceedance_p`): the test is against the smallest baseline value at or over the
    threshold, the baseline's k-th largest, and counts the window values at or over that value.
    Both lists ascending.
    """
    k = len(baseline) - bisect.bisect_left(baseline, threshold)
    above = len(window) - bisect.bisect_left(window, baseline[len(baseline) - k]) if k else 0
    return exceedance_p(above, k, len(window), len(baseline))


def poisson_cdf(k: int, mean: float) -> float:
    """P(X <= k) for X ~ Poisson(mean), summed in log space (exact, no SciPy)."""
    log_term = -mean  # log P(X = 0)
    total = math.exp(log_term)
    for i in range(1, k + 1):
        log_term += math.log(mean) - math.log(i)
        total += math.exp(log_term)
        if total >= 1.0:
            return 1.0
    return total


def poisson_sf(k: int, mean: float) -> float:
    """P(X >= k) for X ~ Poisson(mean): the upper tail, for "significantly more than expected"."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    return max(0.0, 1.0 - poisson_cdf(k - 1, mean))


def z_of(p: float) -> float:
    """The one-sided standard normal z with upper tail p (p is floored at 1e-300, so z stays finite, about 37)."""
    return min(-NormalDist().inv_cdf(max(p, 1e-300)), 38.0) if p < 1 else -math.inf


def bonferroni_z(family_alpha: float, tests: int) -> float:
    """The z a one-sided test must reach so that `tests` of them keep a family-wise error rate of family_alpha."""
    return NormalDist().inv_cdf(1 - family_alpha / tests)


def fisher_greater(a: int, n1: int, c: int, n2: int) -> float:
    """One-sided Fisher exact test: P(at least `a` of `n1` have a trait | `a + c` of all `n1 + n2` have it).

    The p-value that a trait (an attribute value) is over-represented in group 1 (`a` of `n1` records)
    compared with group 2 (`c` of `n2`), under the hypergeometric law of "the trait is spread at random".
    """
    k, total = a + c, n1 + n2
    if not 0 <= a <= n1 or not 0 <= c <= n2 or total == 0:
        raise ValueError("need 0 <= a <= n1 and 0 <= c <= n2")
    top = min(n1, k)
    log_den = _log_comb(total, n1)
    terms = [_log_comb(k, x) + _log_comb(total - k, n1 - x) - log_den for x in range(a, top + 1)]
    if not terms:
        return 0.0
    peak = max(terms)
    return min(1.0, math.exp(peak) * sum(math.exp(t - peak) for t in terms))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _runs(values: list[float]) -> list[tuple[float, int]]:
    out: list[tuple[float, int]] = []
    for value in values:
        if out and out[-1][0] == value:
            out[-1] = (value, out[-1][1] + 1)
        else:
            out.append((value, 1))
    return out


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly in log space.

    With a window's and a baseline's counts of events (x of them in the window, n in all), the
    exact conditional test of "the window's rate per call is not higher" is binomial_sf(x, n,
    calls_window / (calls_window + calls_baseline)): it needs no normal approximation and stays
    exact with a baseline of zero events.
    """
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    return min(1.0, sum(math.exp(_log_comb(n, j) + j * log_p + (n - j) * log_q) for j in range(k, n + 1)))
