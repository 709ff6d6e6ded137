"""Assumption 4.4 (acceptable classifier) and the 0-1 loss of Theorem 4.1 on ambiguous pairs.

Inputs are *score tables*: f(x) in [0, 1]^C for every example of the pair set (softmax of a
member, or an ensemble's combined output; the max combiner's scores need not sum to 1, the
conditions use them as they are, like the theorem does).

Condition 1, per pair (i, j) and per ordering (both orderings are checked, as the assumption
holds "for any example from the pair"):  f_{y_i}(x_i) >= 0.5 + 1/J  and  f_{y_i}(x_j) <= 0.5 + 1/J.
The assumption asks this to happen with probability p >= 42.5 % over h in H, for *every* ordering.
``acceptable_fractions`` gives one classifier's fraction of orderings (the pooled p when averaged
over models); ``assumption_verdict`` estimates p per ordering over several models and judges the
assumption as stated: every ordering must reach 42.5 %.

Condition 2, per example: with yhat = argmax f(x),  f_c(x) <= (1 - f_yhat(x)) / (C - 1)  for
every c not in {y, yhat} (for C = 2 it holds whenever the scores sum to 1, so it constrains
nothing; the max combiner's scores need not sum to 1). Read literally, for a *correctly* classified example
(yhat = y) and C > 2 it requires all other scores to be equal (they sum to 1 - f_y and each may be
at most (1 - f_y)/(C - 1)), so it rarely holds for softmax outputs; we implement it as stated
(ties count, with a 1e-7 tolerance) and report it separately from condition 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from igat.theory.constants import P_THRESHOLD

__all__ = ["P_THRESHOLD", "ConditionFractions", "acceptable_fractions", "assumption_verdict", "condition1_mask",
           "condition2_mask", "per_ordering_p"]


@dataclass
class ConditionFractions:
    condition1: float  # fraction of orderings meeting condition 1 (= estimated p)
    condition2: float  # fraction of pair examples meeting condition 2
    both: float  # fraction of orderings meeting condition 1 with both examples meeting condition 2
    n_orderings: int
    n_examples: int

    @property
    def meets_threshold(self) -> bool:
        return self.condition1 >= P_THRESHOLD

    def as_dict(self) -> dict:
        return {"condition1": self.condition1, "condition2": self.condition2, "both": self.both,
                "p": self.condition1, "meets_threshold": self.meets_threshold,
                "n_orderings": self.n_orderings, "n_examples": self.n_examples}


def condition1_mask(scores_i: Tensor, scores_j: Tensor, y_i: Tensor, j: float) -> Tensor:
    """[P] bool: ordering (i, j) satisfies condition 1."""
    thr = 0.5 + 1.0 / j
    fi = scores_i.gather(1, y_i[:, None]).squeeze(1)
    fj = scores_j.gather(1, y_i[:, None]).squeeze(1)
    return (fi >= thr) & (fj <= thr)


def condition2_mask(scores: Tensor, y: Tensor) -> Tensor:
    """[n] bool: example satisfies condition 2."""
    c = scores.shape[1]
    if c < 2:
        raise ValueError("need at least 2 classes")
    yhat = scores.argmax(dim=1)
    bound = (1.0 - scores.gather(1, yhat[:, None])) / (c - 1)  # [n, 1]
    others = torch.ones_like(scores, dtype=torch.bool)
    others[torch.arange(len(y)), y] = False
    others[torch.arange(len(y)), yhat] = False
    # small tolerance: an exact tie with the bound (e.g. uniform scores) counts as satisfied
    ok = (scores <= bound + 1e-7) | ~others
    return ok.all(dim=1)


def acceptable_fractions(scores: Tensor, y: Tensor, pairs: Tensor, j: float) -> ConditionFractions:
    """Fractions of Assumption 4.4 for one classifier.

    scores: [n, C] score table over the examples, y: [n] labels, pairs: [P, 2] example indices.
    """
    if j <= 2:
        raise ValueError(f"J must be > 2, got {j}")
    if scores.dim() != 2 or scores.shape[0] != y.shape[0]:
        raise ValueError(f"scores must be [n, C] with n = len(y) = {len(y)}, got {tuple(scores.shape)}")
    if len(pairs) == 0:
        return ConditionFractions(float("nan"), float("nan"), float("nan"), 0, 0)
    a, b = pairs[:, 0], pairs[:, 1]
    # both orderings: (a, b) and (b, a)
    first = torch.cat([a, b])
    second = torch.cat([b, a])
    c1 = condition1_mask(scores[first], scores[second], y[first], j)
    c2_all = condition2_mask(scores, y)
    used = torch.unique(torch.cat([a, b]))
    both = c1 & c2_all[first] & c2_all[second]
    return ConditionFractions(
        condition1=float(c1.float().mean()),
        condition2=float(c2_all[used].float().mean()),
        both=float(both.float().mean()),
        n_orderings=int(len(first)),
        n_examples=int(len(used)),
    )


def per_ordering_p(member_scores: Tensor, y: Tensor, pairs: Tensor, j: float) -> Tensor:
    """[2P] for each ordering (i, j) of each pair, the fraction of the M models meeting condition 1.

    member_scores: [M, n, C] scores of M classifiers drawn from H. Assumption 4.4 asks this
    probability (over h in H) to be >= 42.5 % for *every* ordering, not on average.
    """
    a, b = pairs[:, 0], pairs[:, 1]
    first, second = torch.cat([a, b]), torch.cat([b, a])
    hits = torch.stack([condition1_mask(s[first], s[second], y[first], j) for s in member_scores])  # [M, 2P]
    return hits.double().mean(dim=0)


def _spread(values: Tensor) -> dict[str, float | None]:
    if len(values) == 0:
        return {"min": None, "q10": None, "median": None, "mean": None, "max": None}
    v = values.double()
    return {"min": float(v.min()), "q10": float(torch.quantile(v, 0.1)), "median": float(torch.quantile(v, 0.5)),
            "mean": float(v.mean()), "max": float(v.max())}


def assumption_verdict(member_scores: Tensor, y: Tensor, pairs: Tensor, j: float) -> dict[str, Any]:
    """Assumption 4.4 judged as the paper states it, over M models (draws from H) on the pair set.

    Condition 1 must reach p >= 42.5 % for every ordering (each example of each pair), where p is
    the fraction of models meeting it; condition 2 must hold for every example, for every model.
    The pooled p (mean over orderings) is reported beside it but does not decide the verdict.
    """
    if j <= 2:
        raise ValueError(f"J must be > 2, got {j}")
    if member_scores.dim() != 3 or member_scores.shape[1] != len(y):
        raise ValueError(f"member_scores must be [M, n, C] with n = len(y) = {len(y)}, got {tuple(member_scores.shape)}")
    m, _, c = member_scores.shape
    if len(pairs) == 0:
        return {"n_models": m, "n_orderings": 0, "n_examples": 0, "holds": None,
                "verdict": "no ambiguous pairs: Assumption 4.4 cannot be judged"}
    p = per_ordering_p(member_scores, y, pairs, j)
    used = torch.unique(pairs.flatten())
    c2 = torch.stack([condition2_mask(s, y) for s in member_scores])[:, used].double()  # [M, n_used]
    c1_share = float((p >= P_THRESHOLD).double().mean())
    c2_always = float((c2.min(dim=0).values == 1).double().mean())
    c1_holds, c2_holds = bool((p >= P_THRESHOLD).all()), bool((c2 == 1).all())
    vacuous = c == 2
    verdict = (f"condition 1 reaches p >= {P_THRESHOLD:.1%} for {c1_share:.1%} of the {len(p)} orderings "
               f"(min p = {float(p.min()):.3f} over {m} models; pooled p = {float(p.mean()):.3f}); condition 2 holds "
               f"for every model on {c2_always:.1%} of the {len(used)} examples"
               + (" (vacuous with C = 2)" if vacuous else "")
               + f": Assumption 4.4 {'holds' if c1_holds and c2_holds else 'does not hold'}"
               + ("" if c1_holds and c2_holds else
                  f" ({' and '.join(n for n, ok in (('condition 1', c1_holds), ('condition 2', c2_holds)) if not ok)}"
                  f" {'fail' if not (c1_holds or c2_holds) else 'fails'})"))
    return {
        "n_models": m, "n_orderings": int(len(p)), "n_examples": int(len(used)), "num_classes": int(c),
        "condition1": {"pooled_p": float(p.mean()), "share_of_orderings_meeting": c1_share, "holds": c1_holds,
                       "per_ordering_p": _spread(p),
                       "histogram": [int((p == k / m).sum()) for k in range(m + 1)]},
        "condition2": {"pooled": float(c2.mean()), "share_of_examples_all_models": c2_always, "holds": c2_holds,
                       "vacuous": vacuous, "per_example_fraction": _spread(c2.mean(dim=0))},
        "holds": c1_holds and c2_holds,
        "verdict": verdict,
    }
