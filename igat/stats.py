"""Uncertainty of measured accuracies: the Wilson score interval and the "+-" the tables print.

An accuracy is a count of correct examples out of ``n``. The Wilson interval is used rather than the
normal approximation because it stays inside [0, 1] and is well behaved near 0 % and 100 % (natural
accuracy of a good model, robust accuracy of an undefended one), where p +- z sqrt(p(1-p)/n) is not.
"""

from __future__ import annotations

import math

Z95 = 1.96  # two-sided 95 % normal quantile, as printed in the tables' captions


def wilson(correct: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (lo, hi) of the proportion ``correct / n`` (fractions in [0, 1]).

    ``correct`` may be a float count (accuracy x n read back from a rounded file); it is clamped to
    [0, n]. ``n`` = 0 carries no information: the interval is the whole [0, 1].
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if z <= 0:
        raise ValueError(f"z must be > 0, got {z}")
    if n == 0:
        return 0.0, 1.0
    p = min(max(float(correct) / n, 0.0), 1.0)
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    # Clamp float rounding (p = 0 or 1 gives lo = 0 / hi = 1 exactly in exact arithmetic).
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_of_accuracy(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson interval of an accuracy measured on ``n`` examples (the count is rounded back to an integer)."""
    return wilson(round(float(accuracy) * n), n, z)


def half_width(lo: float, hi: float) -> float:
    """Half the interval's width: the single "+-" a table prints for an interval."""
    return (hi - lo) / 2.0


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals share a point (then a difference between them is not distinguishable)."""
    return a[0] <= b[1] and b[0] <= a[1]


# Two-sided 95 % Student-t quantiles by degrees of freedom (scipy is not a runtime dependency). A df between two
# keys takes the lower key's quantile, which is the larger one: the interval errs on the wide side.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    """The two-sided 95 % Student-t quantile for ``df`` degrees of freedom (inf below 1; 1.96 above 30)."""
    if df < 1:
        return math.inf
    keys = sorted(k for k in _T975 if k <= df)
    return _T975[keys[-1]] if df <= 30 else 1.96


def seed_interval(values: list[float]) -> dict[str, float | int | None]:
    """Mean, sample std and the 95 % Student-t interval of the mean of per-seed values: the interval that holds
    training randomness (one value per independently trained seed). With one seed there is no spread to measure:
    sd, low and high are None."""
    k = len(values)
    if k == 0:
        return {"mean": None, "sd": None, "low": None, "high": None, "seeds": 0}
    mean = sum(values) / k
    if k == 1:
        return {"mean": mean, "sd": None, "low": None, "high": None, "seeds": 1}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    half = t975(k - 1) * sd / math.sqrt(k)
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "seeds": k}


__all__ = ["Z95", "half_width", "overlap", "seed_interval", "t975", "wilson", "wilson_of_accuracy"]
