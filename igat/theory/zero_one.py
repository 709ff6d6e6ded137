"""The empirical check of Theorem 4.1: 0-1 loss on the ambiguous-pair set, single vs ensemble.

Eq. (4) counts an error when f_y(x) < max_{c != y} f_c(x) (a tie counts as correct). The loss of
a pair a is the mean over its two examples. The expectation over h in H is estimated by the
average over the available models (single) and over all unordered model pairs (two-member
average/max ensembles), as the theorem takes h^0, h^1 independently from H.

Confidence intervals: ``wilson`` treats each (model, example) evaluation as an independent
Bernoulli trial (narrow, optimistic); ``bootstrap`` resamples pairs (the unit the theorem
averages over), which respects the correlation between the two examples of a pair and between
models; it also gives an interval for the ensemble-minus-single difference.
"""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import torch
from torch import Tensor


def zero_one(scores: Tensor, y: Tensor) -> Tensor:
    """[..., n] float 0/1 errors of eq. (4) for scores [..., n, C]."""
    true = scores.gather(-1, y.expand(scores.shape[:-1])[..., None]).squeeze(-1)
    wrong = scores.masked_fill(torch.nn.functional.one_hot(y, scores.shape[-1]).bool().expand_as(scores), -math.inf)
    return (true < wrong.amax(dim=-1)).float()


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n <= 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(values: Tensor, confidence: float = 0.95, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling its entries)."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (resamples, n), generator=g)
    means = values.double()[idx].mean(dim=1)
    lo = float(torch.quantile(means, (1 - confidence) / 2))
    hi = float(torch.quantile(means, 1 - (1 - confidence) / 2))
    return (lo, hi)


def pair_losses(member_scores: Tensor, y: Tensor, pairs: Tensor) -> dict[str, Tensor]:
    """Per-pair 0-1 losses for every single model and every two-model average/max ensemble.

    member_scores: [M, n, C] probabilities (softmax) of M models; returns tensors [K, P] of
    per-pair losses (mean of the pair's two examples) keyed "single", "average", "max".
    """
    m = member_scores.shape[0]
    a, b = pairs[:, 0], pairs[:, 1]

    def per_pair(errors: Tensor) -> Tensor:  # errors [K, n] -> [K, P]
        return (errors[:, a] + errors[:, b]) / 2

    single = per_pair(zero_one(member_scores, y))
    combos = list(itertools.combinations(range(m), 2))
    if not combos:
        empty = torch.empty(0, len(pairs))
        return {"single": single, "average": empty, "max": empty}
    i_idx = torch.tensor([c[0] for c in combos])
    j_idx = torch.tensor([c[1] for c in combos])
    avg = (member_scores[i_idx] + member_scores[j_idx]) / 2
    mx = torch.maximum(member_scores[i_idx], member_scores[j_idx])
    return {"single": single, "average": per_pair(zero_one(avg, y)), "max": per_pair(zero_one(mx, y))}


def _interval(losses: Tensor, method: str, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    if losses.numel() == 0:
        return (math.nan, math.nan)
    if method == "wilson":
        # each pair loss is the mean of two 0/1 examples: count example-level errors
        return wilson_interval(float(losses.sum() * 2), int(losses.numel() * 2), confidence)
    return bootstrap_interval(losses.mean(dim=0), confidence, resamples, seed)


def theorem_check(
    member_scores: Tensor,
    y: Tensor,
    pairs: Tensor,
    ci_method: str = "bootstrap",
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Mean 0-1 loss on A(D) of single models vs two-model ensembles, with intervals.

    ``theorem_holds[c]`` is the point comparison ensemble < single; ``significant[c]`` requires
    the bootstrap interval of (ensemble - single) to lie below 0.
    """
    if ci_method not in ("wilson", "bootstrap"):
        raise ValueError(f"ci_method must be 'wilson' or 'bootstrap', got {ci_method!r}")
    if member_scores.shape[0] < 2:
        raise ValueError(f"Theorem 4.1 compares two-model ensembles: need >= 2 models, got {member_scores.shape[0]}")
    losses = pair_losses(member_scores, y, pairs)
    out: dict = {"ci_method": ci_method, "confidence": confidence, "num_pairs": int(len(pairs)),
                 "num_models": int(member_scores.shape[0]), "num_model_pairs": int(losses["average"].shape[0])}
    for key, val in losses.items():
        lo, hi = _interval(val, ci_method, confidence, resamples, seed)
        out[key] = {"mean": float(val.mean()) if val.numel() else math.nan, "low": lo, "high": hi,
                    "per_model": [float(v) for v in val.mean(dim=1)] if val.numel() else []}
    out["differences"] = {}
    out["theorem_holds"] = {}
    out["significant"] = {}
    single_per_pair = losses["single"].mean(dim=0)
    for comb in ("average", "max"):
        diff = losses[comb].mean(dim=0) - single_per_pair  # [P]
        lo, hi = bootstrap_interval(diff, confidence, resamples, seed)
        mean = float(diff.mean()) if len(diff) else math.nan
        out["differences"][f"{comb}_minus_single"] = {"mean": mean, "low": lo, "high": hi}
        out["theorem_holds"][comb] = bool(mean < 0) if len(diff) else None
        out["significant"][comb] = bool(hi < 0) if len(diff) else None
    return out
