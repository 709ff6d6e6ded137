"""iGAT's building blocks as pure tensor functions (paper §5, eq. 13-15; spec §1.1-1.4).

* :func:`true_class_ranks` ranks members by their probability of the true class (1 = most confident).
* :func:`rule_probabilities` / :func:`assign_members`: the distributing rules.
  - ``soft`` (eq. 14, used in all of the paper's experiments): p_i = 2^(N-r_i) / (2^N - 1), roulette wheel.
  - ``hard`` (eq. 13): the member with the largest true-class probability, deterministically.
  - ``random`` (Table 3 ablation): p_i = 1/N.
  - ``opposite`` (Table 3 ablation): the reversed roulette p_i = 2^(r_i-1) / (2^N - 1). The paper only says
    "allocates the adversarial examples to the base models that produce the lowest prediction score"; the
    spec (§1.4) reads it as the mirror image of the soft rule because Table 3 lists it as an alternative to
    the *soft* rule, and we follow that.
  - ``opposite_argmin``: the other reading, the deterministic argmin of the true-class probability.
* :func:`distributed_ce`: the "added global adversarial loss" of eq. 16, per-member mean (paper) or
  batch-size normalised sum (reference code, spec §1.2.1 step 4).
* :func:`lr_regularizer`: L_R of eq. 15 ("paper") and the reference code's two variants (spec §1.2.2).

Everything here is deterministic given the ``generator``, so it is unit-testable without training.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Rule = Literal["soft", "hard", "random", "opposite", "opposite_argmin"]
RegKind = Literal["paper", "code_sum", "code_max2"]
RULES: tuple[str, ...] = ("soft", "hard", "random", "opposite", "opposite_argmin")
REG_KINDS: tuple[str, ...] = ("paper", "code_sum", "code_max2")


def true_class_ranks(true_probs: Tensor) -> Tensor:
    """Descending ranks of the members' true-class probabilities: [N, M] -> [N, M] in 1..N.

    Rank 1 is the member most confident in the true class. Ties go to the lower member index
    (stable sort), so the ranking is a deterministic function of the probabilities.
    """
    n, m = true_probs.shape
    order = torch.sort(true_probs, dim=0, descending=True, stable=True).indices  # order[k] = member at rank k+1
    ranks = torch.empty_like(order)
    positions = torch.arange(1, n + 1, device=true_probs.device).unsqueeze(1).expand(n, m)
    ranks.scatter_(0, order, positions)
    return ranks


def rule_probabilities(rule: str, ranks: Tensor) -> Tensor:
    """Selection probability of every member for every example, [N, M] float64 (columns sum to 1).

    float64 keeps 2^(N-r)/(2^N-1) exact for the ensemble sizes we allow (N <= 64 loses only the
    tiniest probabilities, which are below float64 resolution anyway).
    """
    n = ranks.shape[0]
    r = ranks.to(torch.float64)
    denom = 2.0**n - 1.0
    if rule == "soft":
        return torch.pow(2.0, n - r) / denom
    if rule == "opposite":
        return torch.pow(2.0, r - 1.0) / denom
    if rule == "random":
        return torch.full_like(r, 1.0 / n)
    if rule == "hard":
        return (ranks == 1).to(torch.float64)
    if rule == "opposite_argmin":
        return (ranks == n).to(torch.float64)
    raise ValueError(f"igat.rule must be one of {', '.join(RULES)}; got {rule!r}")


def roulette(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """Roulette-wheel selection (paper §5.1): one member per column of ``probs`` [N, M].

    Intervals (a_i, b_i] are laid out in member order with b_i - a_i = p_i; q ~ U(0, 1]; the
    selected member is the i with a_i < q <= b_i, i.e. the number of intervals that end below q.
    """
    n, m = probs.shape
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(m, generator=generator, device=device, dtype=torch.float64)
    q = (1.0 - u).to(probs.device)  # U[0,1) -> U(0,1]
    upper = probs.cumsum(dim=0)
    chosen = (upper < q.unsqueeze(0)).sum(dim=0)
    return chosen.clamp_(max=n - 1)  # rounding can leave the last b_N a hair below 1


def assign_members(rule: str, true_probs: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Which member receives each example: returns (member [M] int64, ranks [N, M]).

    ``true_probs`` [N, M] are the (detached) members' probabilities of each example's true class.
    Deterministic rules (hard, opposite_argmin) consume no random numbers.
    """
    ranks = true_class_ranks(true_probs.detach())
    n = ranks.shape[0]
    if rule == "hard":
        member = (ranks == 1).to(torch.int64).argmax(dim=0)
    elif rule == "opposite_argmin":
        member = (ranks == n).to(torch.int64).argmax(dim=0)
    else:
        member = roulette(rule_probabilities(rule, ranks), generator)
    return member, ranks


def distributed_ce(
    logits: Tensor,
    y: Tensor,
    member: Tensor,
    selected: Tensor,
    normalisation: Literal["per_member", "batch"],
) -> tuple[Tensor, Tensor, Tensor]:
    """Cross-entropy of each selected example under the member it was given to.

    logits [N, M, C]; y, member [M]; selected [M] bool (examples that are distributed at all).
    Returns (loss, per-member CE sums [N] detached, per-member counts [N]).

    * ``per_member`` (eq. 16): sum_i mean_{x in X~^i} CE(h^i(x), y); a member that received no
      example contributes exactly 0 (not 0/0).
    * ``batch`` (reference code): sum over selected examples / M, M = all examples offered for
      distribution (so the term shrinks as fewer examples are misclassified).
    """
    n, m, _ = logits.shape
    idx = selected.nonzero(as_tuple=True)[0]
    who = member[idx]
    ce = F.cross_entropy(logits[who, idx], y[idx], reduction="none")  # only the receiving member's logits
    sums = torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add(0, who, ce)
    counts = torch.bincount(who, minlength=n)
    if normalisation == "per_member":
        loss = (sums / counts.clamp_min(1).to(sums.dtype)).sum()
    elif normalisation == "batch":
        loss = sums.sum() / max(m, 1)
    else:
        raise ValueError(f"igat.normalisation must be 'per_member' or 'batch'; got {normalisation!r}")
    return loss, sums.detach(), counts


def neg_log_one_minus_prob(logits: Tensor, cls: Tensor) -> Tensor:
    """-log(1 - softmax(z)_c) computed stably as logsumexp(z) - logsumexp_{k != c}(z).

    logits [..., C], cls [...]. Finite even when the probability rounds to 1 in float32, which a
    direct ``-log(1 - p)`` is not (the paper's L_R has no clip).
    """
    lsm = logits.log_softmax(dim=-1)
    others = lsm.scatter(-1, cls.unsqueeze(-1), float("-inf"))
    return -torch.logsumexp(others, dim=-1)


def _clipped(logits: Tensor, cls: Tensor, clip: float | None) -> Tensor:
    value = neg_log_one_minus_prob(logits, cls)
    if clip is None:
        return value
    # clamp(p, max=clip) semantics of the reference: above the clip the term is a constant with zero gradient.
    p = logits.softmax(dim=-1).gather(-1, cls.unsqueeze(-1)).squeeze(-1)
    const = torch.full_like(value, -math.log1p(-clip))
    return torch.where(p.detach() > clip, const, value)


def lr_regularizer(
    logits: Tensor,
    y: Tensor,
    misclassified: Tensor,
    kind: RegKind = "paper",
    clip: float | None = None,
    include_true_class: bool = False,
) -> Tensor:
    """Per-example L_R values [M] (zero where the ensemble classifies correctly).

    logits [N, M, C] are the members' own logits (L_R uses member probabilities, not the combiner's);
    misclassified [M] is delta_0/1 of the combined ensemble.

    * ``paper`` (eq. 15): -log(1 - max_c max_j h^j_c(x)). By default the max runs over the wrong
      classes only: read literally eq. 15 includes the true class, which would push *down* a member
      that is confidently right on an example the ensemble gets wrong, the opposite of the stated
      aim ("the most incorrectly predicted class"). ``include_true_class=True`` gives the literal form.
      The gradient flows only to the (member, class) holding the max.
    * ``code_sum`` (reference reg_type 0): sum over members j of -log(1 - clip(h^j_{c_j})), c_j the
      member's most probable wrong class.
    * ``code_max2`` (reference reg_type 1): 2 * -log(1 - clip(max_j max_{c != y} h^j_c)).
    """
    n, m, c = logits.shape
    probs = logits.detach().softmax(dim=-1)
    true_mask = F.one_hot(y, c).bool().unsqueeze(0).expand(n, m, c)
    masked = probs if (include_true_class and kind == "paper") else probs.masked_fill(true_mask, -1.0)
    if kind == "code_sum":
        cls = masked.argmax(dim=-1)  # [N, M] each member's most probable wrong class
        values = _clipped(logits, cls, clip).sum(dim=0)
    elif kind in ("paper", "code_max2"):
        best_cls = masked.argmax(dim=-1)  # [N, M]
        best_val = masked.gather(-1, best_cls.unsqueeze(-1)).squeeze(-1)  # [N, M]
        j = best_val.argmax(dim=0)  # [M] member holding the max
        ar = torch.arange(m, device=logits.device)
        values = _clipped(logits[j, ar], best_cls[j, ar], clip)
        if kind == "code_max2":
            values = 2.0 * values
    else:
        raise ValueError(f"igat.reg must be one of {', '.join(REG_KINDS)}; got {kind!r}")
    return values * misclassified.to(values.dtype)
