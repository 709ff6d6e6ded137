"""Assumption 4.4 (acceptable classifier) and the 0-1 loss of Theorem 4.1 on ambiguous pairs.

Inputs are *score tables*: f(x) in [0, 1]^C for every example of the pair set (softmax of a
member, or an ensemble's combined output; the max combiner's scores need not sum to 1, the
conditions use them as they are, like the theorem does).

Condition 1, per pair (i, j) and per ordering (both orderings are checked, as the assumption
holds "for any example from the pair"):  f_{y_i}(x_i) >= 0.5 + 1/J  and  f_{y_i}(x_j) <= 0.5 + 1/J.
The assumption asks this to happen with probability p >= 42.5 %; p is estimated as the
fraction of orderings.

Condition 2, per example: with yhat = argmax f(x),  f_c(x) <= (1 - f_yhat(x)) / (C - 1)  for
every c not in {y, yhat} (for C = 2 it holds whenever the scores sum to 1; the max combiner's need not). Read literally, for a *correctly* classified example
(yhat = y) and C > 2 it requires all other scores to be equal (they sum to 1 - f_y and each may be
at most (1 - f_y)/(C - 1)), so it rarely holds for softmax outputs; we implement it as stated
(ties count, with a 1e-7 tolerance) and report it separately from condition 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

P_THRESHOLD = 0.425  # the sufficient probability of Assumption 4.4 / Theorem 4.1


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
