"""Small-sample statistics for ``toyloops seeds`` in plain Python: mean ± std, Student-t intervals and
the paired t-test. The t distribution of integer degrees of freedom in closed form (Abramowitz &
Stegun 26.7.3-4), its quantiles by bisection; tests check both against tables.
"""

from __future__ import annotations

import math
from typing import NamedTuple


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` (a positive int) degrees of freedom."""
    if df < 1 or df != int(df):
        raise ValueError(f"df={df}: expected an int >= 1")
    theta, odd = math.atan2(abs(t), math.sqrt(df)), int(df) % 2
    cos2, term, total = math.cos(theta) ** 2, math.cos(theta) if odd else 1.0, 0.0
    for k in range(1, int(df) // 2 + 1):
        total += term
        term *= cos2 * (2 * k - 1 + odd) / (2 * k + odd)
    inside = 2 / math.pi * (theta + math.sin(theta) * total) if odd else math.sin(theta) * total
    return max(0.0, 1.0 - inside)


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t (0.5 < q < 1), by bisection on the CDF."""
    if not 0.5 < q < 1.0:
        raise ValueError(f"q={q}: expected 0.5 < q < 1")
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > 2 * (1 - q):
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        low, high = (mid, high) if t_two_sided_p(mid, df) > 2 * (1 - q) else (low, mid)
    return (low + high) / 2.0


class Summary(NamedTuple):
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1)
    low: float  # 95% confidence interval of the mean (Student t)
    high: float


def summarize(values: list[float], level: float = 0.95) -> Summary:
    n = len(values)
    if n < 2:
        raise ValueError("a confidence interval needs at least 2 values")
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def paired_t_test(a: list[float], b: list[float]) -> tuple[Summary, float]:
    """The differences a - b (mean, std, 95% CI) and the two-sided p-value of the paired t-test."""
    if len(a) != len(b):
        raise ValueError("paired samples need the same length")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    summary = summarize(diffs)
    if summary.std == 0.0:  # every pair differs by the same amount: no spread to test against
        return summary, 1.0 if summary.mean == 0.0 else 0.0
    t = summary.mean / (summary.std / math.sqrt(summary.n))
    return summary, t_two_sided_p(t, summary.n - 1)
