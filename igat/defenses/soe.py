"""SoE: Synergy-of-Experts (Cui et al., NeurIPS 2022; "loss_base" rectified-confidence experts), spec §2.6.

Each expert has an auxiliary confidence head a_m(x). Its detector score is
d_m(x) = max_c softmax(z^m(x))_c * sigmoid(a_m(x)); the ensemble predicts with the single expert of
highest d_m per example — registered here as the ``soe`` combiner. Training loss per batch:

  (i)  sum_m w_m(x) CE(z^m(x), y), w = softmax_m(tempC * d_m(x)) detached, batch mean;
  (ii) aux_weight * mean_m BCE(d_m(x), h^m_y(x) detached), where experts that classify x
       correctly have their confidence factor max_c h^m_c detached (only the head learns there);

on clean data plus the same on PGD examples against the selection model (``plus_adv``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from igat.defenses._gradients import ensemble_pgd, require_members
from igat.defenses.base import DEFENSES, Defense, LossOutput, accuracy
from igat.models.combiners import COMBINERS, EnsembleOutput
from igat.specs.defenses import SoEParams, SoESpec


def detector_scores(logits: Tensor, aux: Tensor) -> Tensor:
    """d_m = max softmax * sigmoid(aux): logits [N, B, C], aux [N, B] -> [N, B]."""
    return logits.softmax(dim=-1).amax(dim=-1) * torch.sigmoid(aux)


def selected_expert(out: EnsembleOutput) -> Tensor:
    """Index [B] of the expert with the highest detector score per example."""
    if out.aux is None:
        raise ValueError("the 'soe' combiner needs experts with a confidence head (train with defense 'soe')")
    return detector_scores(out.logits, out.aux).argmax(dim=0)


@COMBINERS.register("soe")
def soe_combiner(out: EnsembleOutput) -> Tensor:
    """SoE's selection prediction: the chosen expert's softmax probabilities [B, C]."""
    idx = selected_expert(out)
    probs = out.probs
    return probs.gather(0, idx.view(1, -1, 1).expand(1, *probs.shape[1:])).squeeze(0)


def soe_loss_terms(logits: Tensor, aux: Tensor, y: Tensor, temp: float) -> tuple[Tensor, Tensor]:
    """(weighted CE, auxiliary BCE) of SoE's "loss_base" training; logits [N, B, C], aux [N, B]."""
    probs = logits.softmax(dim=-1)
    conf = probs.amax(dim=-1)
    correct = probs.argmax(dim=-1) == y
    conf = torch.where(correct, conf.detach(), conf)
    d = conf * torch.sigmoid(aux)
    n, b, c = logits.shape
    ce = F.cross_entropy(logits.reshape(n * b, c), y.repeat(n), reduction="none").view(n, b)
    weights = (d * temp).softmax(dim=0).detach()
    weighted_ce = (weights * ce).sum(dim=0).mean()
    target = probs.gather(-1, y.view(1, b, 1).expand(n, b, 1)).squeeze(-1).detach()
    aux_bce = F.binary_cross_entropy(d, target)
    return weighted_ce, aux_bce


@DEFENSES.register("soe")
class SoE(SoESpec, Defense):
    def __init__(self, params, config) -> None:
        super().__init__(params, config)
        require_members(config, 2, self.name)

    def member_kwargs(self) -> dict:
        return {"aux_head": True}

    def _terms(self, ctx, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, EnsembleOutput]:
        out = ctx.ensemble.forward_output(x)
        wce, bce = soe_loss_terms(out.logits, out.aux, y, self.params.temp_c)
        return wce, bce, out

    def loss(self, ctx, x: Tensor, y: Tensor) -> LossOutput:
        p: SoEParams = self.params
        wce, bce, out = self._terms(ctx, x, y)
        loss = wce + p.aux_weight * bce
        metrics = {"weighted_ce": float(wce.detach()), "aux_bce": float(bce.detach()),
                   "member_acc": accuracy(out.logits, y),
                   "soe_acc": float((soe_combiner(out).argmax(-1) == y).float().mean())}
        if p.plus_adv:
            x_adv = ensemble_pgd(ctx, x, y, p, combiner="soe")
            adv_wce, adv_bce, adv_out = self._terms(ctx, x_adv, y)
            loss = loss + adv_wce + p.aux_weight * adv_bce
            metrics.update(adv_weighted_ce=float(adv_wce.detach()), adv_aux_bce=float(adv_bce.detach()),
                           soe_adv_acc=float((soe_combiner(adv_out).argmax(-1) == y).float().mean()))
        return LossOutput(loss, metrics)
