"""Small-sample statistics for ``toyloops seeds`` in plain Python: mean ± std, Student-t intervals and
the paired t-test. The t CDF is the regularized incomplete beta function (continued fraction, Lentz's
method, Numerical Recipes §6.4, ~1e-12), its quantiles by bisection; tests check both against tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for aa in (m * (b - m) * x / ((a - 1.0 + 2 * m) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1.0 + 2 * m))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")  # not for t's arguments


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
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


@dataclass
class Summary:
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
