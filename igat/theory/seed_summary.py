"""Paired differences between a study's arms, over seeds (torch-free: the dashboard imports it).

Each seed of a study gives one paired difference per comparison (e.g. iGAT - continued) with a bootstrap interval
over that seed's examples or pairs: evaluation noise only. Over seeds, the mean of those differences gets a
Student-t interval, which holds the training randomness too; its verdict is the one to quote.
"""

from __future__ import annotations

from typing import Any

from igat.stats import seed_interval


def direction(low: float, high: float) -> str:
    """The verdict of a difference's interval: wholly below 0, wholly above, or containing 0."""
    return "lower" if high < 0 else "higher" if low > 0 else "not distinguishable"


def _verdict(iv: dict[str, Any]) -> str:
    if iv["mean"] is None:
        return "n/a"
    if iv["low"] is None:
        return "one seed: no interval"
    return direction(iv["low"], iv["high"])


def _over(per_seed: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The t interval of the per-seed means, and how many seeds' own intervals lie below / above 0."""
    done = [d for d in per_seed if d and d.get("mean") is not None]
    iv = seed_interval([float(d["mean"]) for d in done])
    return {**iv, "verdict": _verdict(iv),
            "seeds_below_0": sum(1 for d in done if d.get("high") is not None and d["high"] < 0),
            "seeds_above_0": sum(1 for d in done if d.get("low") is not None and d["low"] > 0)}


def comparisons_over_seeds(comparisons: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per comparison (``summary["comparisons"]`` of a study's theory result: one row per seed), the mean over
    seeds of the members' curvature difference and of the ensemble 0-1 loss difference on the pairs, per
    combiner, each with its t interval over seeds and verdict."""
    out: dict[str, dict[str, Any]] = {}
    for name, rows in comparisons.items():
        combiners = sorted({c for r in rows for c in (r.get("ensemble_pair_loss") or {})})
        out[name] = {
            "seeds": sorted(int(r["seed"]) for r in rows),
            "curvature_members": _over([(r.get("curvature") or {}).get("members_mean") for r in rows]),
            "ensemble_pair_loss": {c: _over([(r.get("ensemble_pair_loss") or {}).get(c) for r in rows])
                                   for c in combiners},
        }
    return out


__all__ = ["comparisons_over_seeds", "direction"]
