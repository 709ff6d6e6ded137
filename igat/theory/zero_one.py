"""The empirical check of Theorem 4.1: 0-1 loss on the ambiguous-pair set, single vs ensemble.

Eq. (4) counts an error when f_y(x) < max_{c != y} f_c(x) (a tie counts as correct). The loss of
a pair a is the mean over its two examples. The expectation over h in H is estimated by the
average over the available models (single) and over all unordered model pairs (two-member
average/max ensembles), as the theorem takes h^0, h^1 independently from H.

Confidence intervals: ``wilson`` treats each (model, example) evaluation as an independent
Bernoulli trial (narrow, optimistic); ``bootstrap`` resamples pairs with the models held fixed,
which respects the correlation between the two examples of a pair. Since the theorem also takes
the expectation over h in H, the ensemble-minus-single difference is judged by a two-stage
bootstrap over models *and* pairs (:func:`model_and_pair_bootstrap`) whenever there are >= 3 models.
With C = 2, average and max combiners make the same decision (see ``combiners_equivalent``).
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
    single = per_pair(zero_one(member_scores, y), pairs)
    combos = list(itertools.combinations(range(m), 2))
    if not combos:
        empty = torch.empty(0, len(pairs))
        return {"single": single, "average": empty, "max": empty}
    i_idx = torch.tensor([c[0] for c in combos])
    j_idx = torch.tensor([c[1] for c in combos])
    out = {"single": single}
    for comb in COMBINERS:
        out[comb] = per_pair(zero_one(combine_two(member_scores[i_idx], member_scores[j_idx], comb), y), pairs)
    return out


COMBINERS = ("average", "max")


def combine_two(scores_a: Tensor, scores_b: Tensor, combiner: str) -> Tensor:
    """The two-member ensemble h_e^(0,1) of Theorem 4.1: (h^0 + h^1) / 2 or max(h^0, h^1)."""
    if combiner == "average":
        return (scores_a + scores_b) / 2
    if combiner == "max":
        return torch.maximum(scores_a, scores_b)
    raise ValueError(f"combiner must be average or max, got {combiner!r}")


def per_pair(errors: Tensor, pairs: Tensor) -> Tensor:
    """[..., n] example errors -> [..., P] pair losses: the mean over the pair's two examples."""
    return (errors[..., pairs[:, 0]] + errors[..., pairs[:, 1]]) / 2


def ensemble_loss_matrix(member_scores: Tensor, y: Tensor, pairs: Tensor, combiner: str) -> Tensor:
    """[M, M, P] pair losses of the two-member ensemble of models (a, b); the diagonal (a model
    combined with itself) is that model's own loss, which is what drawing it twice gives."""
    m = member_scores.shape[0]
    a = torch.arange(m).repeat_interleave(m)
    b = torch.arange(m).repeat(m)
    combined = combine_two(member_scores[a], member_scores[b], combiner)
    return per_pair(zero_one(combined, y), pairs).reshape(m, m, len(pairs))


def model_and_pair_bootstrap(
    single: Tensor,
    ensembles: dict[str, Tensor],
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals that resample the models *and* the pairs (two-stage bootstrap).

    single: [M, P] per-pair losses; ensembles: combiner -> [M, M, P]. Each resample draws M
    models and P pairs with replacement; the single loss is the mean over the drawn (model, pair)
    cells and an ensemble's the mean over every unordered couple of drawn models. Returns
    intervals keyed "single", "<comb>", "<comb>_minus_single". Holding the models fixed (as
    :func:`bootstrap_interval` over pairs does) ignores that the theorem's expectation is over h
    in H: with few models whose losses differ, that interval is far too narrow.
    """
    m, p = single.shape
    if m < 2 or p == 0:
        return {}
    g = torch.Generator().manual_seed(seed)
    iu = torch.triu_indices(m, m, offset=1)
    stats: dict[str, list[Tensor]] = {"single": [], **{c: [] for c in ensembles},
                                      **{f"{c}_minus_single": [] for c in ensembles}}
    chunk = max(1, 2_000_000 // (m * m * p))
    done = 0
    while done < resamples:
        r = min(chunk, resamples - done)
        mi = torch.randint(0, m, (r, m), generator=g)
        pi = torch.randint(0, p, (r, p), generator=g)
        s = single.double()[mi[:, :, None], pi[:, None, :]].mean(dim=(1, 2))  # [r]
        stats["single"].append(s)
        for comb, mat in ensembles.items():
            e = mat.double()[mi[:, iu[0], None], mi[:, iu[1], None], pi[:, None, :]].mean(dim=(1, 2))
            stats[comb].append(e)
            stats[f"{comb}_minus_single"].append(e - s)
        done += r
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    out = {}
    for key, parts in stats.items():
        v = torch.cat(parts)
        out[key] = (float(torch.quantile(v, lo_q)), float(torch.quantile(v, hi_q)))
    return out


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

    ``theorem_holds[c]`` is the point comparison ensemble < single. The (ensemble - single)
    difference gets two intervals: over pairs with the models fixed (``pairs_only``) and over
    models and pairs (``models_and_pairs``, from 3 models on). ``significant[c]`` requires the
    upper end of the models-and-pairs interval below 0 (the pairs-only one with 2 models, where
    resampling models cannot vary the ensemble; ``interval_basis`` says which).
    """
    if ci_method not in ("wilson", "bootstrap"):
        raise ValueError(f"ci_method must be 'wilson' or 'bootstrap', got {ci_method!r}")
    m = member_scores.shape[0]
    if m < 2:
        raise ValueError(f"Theorem 4.1 compares two-model ensembles: need >= 2 models, got {m}")
    losses = pair_losses(member_scores, y, pairs)
    basis = "models_and_pairs" if m >= 3 else "pairs_only"
    out: dict = {"ci_method": ci_method, "confidence": confidence, "num_pairs": int(len(pairs)),
                 "num_models": int(m), "num_model_pairs": int(losses["average"].shape[0]),
                 "num_classes": int(member_scores.shape[-1]), "interval_basis": basis}
    two_stage = (model_and_pair_bootstrap(losses["single"], {c: ensemble_loss_matrix(member_scores, y, pairs, c)
                                                             for c in COMBINERS}, confidence, resamples, seed)
                 if m >= 3 and len(pairs) else {})
    for key, val in losses.items():
        lo, hi = _interval(val, ci_method, confidence, resamples, seed)
        mp = two_stage.get(key, (math.nan, math.nan))
        out[key] = {"mean": float(val.mean()) if val.numel() else math.nan, "low": lo, "high": hi,
                    "models_and_pairs": {"low": mp[0], "high": mp[1]},
                    "per_model": [float(v) for v in val.mean(dim=1)] if val.numel() else []}
    out["differences"] = {}
    out["theorem_holds"] = {}
    out["significant"] = {}
    single_per_pair = losses["single"].mean(dim=0)
    for comb in COMBINERS:
        diff = losses[comb].mean(dim=0) - single_per_pair  # [P]
        lo, hi = bootstrap_interval(diff, confidence, resamples, seed)
        mean = float(diff.mean()) if len(diff) else math.nan
        mp = two_stage.get(f"{comb}_minus_single", (math.nan, math.nan))
        low, high = (mp if basis == "models_and_pairs" else (lo, hi))
        out["differences"][f"{comb}_minus_single"] = {"mean": mean, "low": low, "high": high,
                                                      "pairs_only": {"low": lo, "high": hi},
                                                      "models_and_pairs": {"low": mp[0], "high": mp[1]}}
        out["theorem_holds"][comb] = bool(mean < 0) if len(diff) else None
        out["significant"][comb] = bool(high < 0) if len(diff) else None
    # with C = 2, average and max pick the same class (max(p, q) > max(1-p, 1-q) iff p + q > 1)
    out["combiners_equivalent"] = member_scores.shape[-1] == 2
    return out
