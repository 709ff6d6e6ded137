"""GAL: Gradient Alignment Loss (Kariyappa & Qureshi 2019; DVERGE-repo port), spec §2.2.

Penalises aligned input gradients: coherence(x) = log sum_{i<j} exp(cos(g_i(x), g_j(x))), with
g_m = d CE_m / dx. Loss = (1/N) sum_m CE_m(x) + lambda * mean_x coherence(x)
[+ (1/N) sum_m CE_m(x_adv) with plus_adv, PGD on the averaged ensemble].

The clean CE reuses the logits of the gradient forward pass (the port runs one more forward on
a detached copy of x; the value and the weight gradient are the same).
"""

from __future__ import annotations

import torch
from torch import Tensor

from igat.defenses._gradients import (
    ensemble_pgd,
    member_ce_gradients,
    pairwise_cosine,
    require_members,
)
from igat.defenses.base import DEFENSES, Defense, LossOutput, accuracy, member_ce
from igat.specs.defenses import GALParams, GALSpec

LOG_OFFSET = 1e-20


def gal_coherence(grads: Tensor) -> Tensor:
    """Per-example log-sum-exp of pairwise gradient cosines: grads [N, B, D] -> [B].

    Ranges from log(P) - 1 .. log(P) + 1 (P pairs): log(P) when all pairs are orthogonal, log(P)+1
    when all gradients are aligned.
    """
    cos = pairwise_cosine(grads)
    return torch.log(torch.exp(cos).sum(dim=0) + LOG_OFFSET)


@DEFENSES.register("gal")
class GAL(GALSpec, Defense):
    def __init__(self, params, config) -> None:
        super().__init__(params, config)
        require_members(config, 2, self.name)

    def loss(self, ctx, x: Tensor, y: Tensor) -> LossOutput:
        p: GALParams = self.params
        n = ctx.ensemble.num_members
        grads, logits = member_ce_gradients(ctx.ensemble, x, y)
        ce = member_ce(logits, y) / n
        coherence = gal_coherence(grads).mean()
        loss = ce + p.lamda * coherence
        metrics = {"ce": float(ce.detach()), "coherence": float(coherence.detach()),
                   "grad_cos": float(pairwise_cosine(grads.detach()).mean()), "member_acc": accuracy(logits, y)}
        if p.plus_adv:
            x_adv = ensemble_pgd(ctx, x, y, p)
            adv_logits = ctx.ensemble(x_adv)
            adv_ce = member_ce(adv_logits, y) / n
            loss = loss + adv_ce
            metrics.update(adv_ce=float(adv_ce.detach()), member_adv_acc=accuracy(adv_logits, y))
        return LossOutput(loss, metrics)
