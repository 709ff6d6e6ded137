"""Helpers shared by the diversity defenses (GAL, TRS, CLDL, ADP/GAL/CLDL/SoE adversarial parts).

* Per-member input gradients in one backward: every member gets its own copy of the batch
  ([N, B, ...]); a loss that is a sum of per-member terms, where member i's term only sees copy i,
  has gradient w.r.t. copy i equal to member i's own input gradient. So one backward over the
  summed loss replaces N separate ``autograd.grad`` calls.
* Pairwise cosine similarities of those gradients over all member pairs i < j.
* The "+AT" option of ADP / GAL / CLDL / SoE: PGD against a combined ensemble output, with the
  attack knobs in one pydantic mix-in so every defense documents and validates them the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from igat.defenses.base import member_ce
from igat.specs.defenses import AdversarialParams

if TYPE_CHECKING:
    from igat.models.ensemble import Ensemble
    from igat.training.context import StepContext


def member_inputs(x: Tensor, num_members: int) -> Tensor:
    """A per-member copy [N, B, ...] of a shared batch [B, ...] that requires grad.

    When ``x`` itself is part of a graph (TRS maximises a gradient norm over x), the copy stays
    connected to it so second-order gradients reach ``x``.
    """
    xs = x.unsqueeze(0).expand(num_members, *x.shape).clone()
    return xs if xs.requires_grad else xs.requires_grad_(True)


def input_gradients(loss: Tensor, xs: Tensor, create_graph: bool = True) -> Tensor:
    """Gradient of ``loss`` w.r.t. the per-member inputs ``xs`` [N, B, ...], flattened to [N, B, D].

    ``create_graph=True`` keeps the graph so penalties on the gradients can be back-propagated
    into the weights (double back-propagation). A member whose term does not depend on its copy
    gets a zero gradient.
    """
    (grad,) = torch.autograd.grad(loss, xs, create_graph=create_graph, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(xs)
    return grad.flatten(2)


def member_ce_gradients(ensemble: Ensemble, x: Tensor, y: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor]:
    """(g [N, B, D], logits [N, B, C]) with g_m = d CE_m / dx and CE_m member m's batch-mean CE.

    Batch-mean CE as in the reference trainers, so per-example gradients carry a 1/B factor.
    """
    xs = member_inputs(x, ensemble.num_members)
    logits = ensemble(xs)
    grads = input_gradients(member_ce(logits, y), xs, create_graph)
    return grads, logits


def pair_indices(num_members: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Index tensors (i, j) of all member pairs i < j, in row-major order."""
    idx = torch.triu_indices(num_members, num_members, offset=1, device=device)
    return idx[0], idx[1]


def pairwise_cosine(grads: Tensor, eps: float = 1e-12) -> Tensor:
    """Cosine similarity of every member pair per example: grads [N, B, D] -> [P, B], P = N(N-1)/2."""
    i, j = pair_indices(grads.shape[0], grads.device)
    return F.cosine_similarity(grads[i], grads[j], dim=-1, eps=eps)


def ensemble_pgd(ctx: StepContext, x: Tensor, y: Tensor, p: AdversarialParams, combiner: str = "average") -> Tensor:
    """PGD on the combined ensemble (log of the combiner's probabilities), parameters frozen."""
    from igat.attacks.pgd import pgd

    ensemble = ctx.ensemble
    with ensemble.frozen(eval_mode=p.adv_bn_mode == "eval"):
        return pgd(ensemble.as_model(combiner), x, y, p.adv_eps, p.adv_step_size, p.adv_steps,
                   p.adv_random_start, generator=ctx.generator)


def require_members(config, minimum: int, defense: str) -> None:
    """Diversity terms need member pairs: fail early with the config field to change."""
    n = config.model.num_members
    if n < minimum:
        raise ValueError(f"model.num_members must be >= {minimum} for defense {defense!r} (got {n})")
