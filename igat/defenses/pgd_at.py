"""Independent PGD adversarial training of each member (Madry et al.).

Each member is attacked on its own (PGD against that member alone) and trained on its own
adversarial examples; members never interact. ``clean_weight`` mixes in natural CE
(0 = pure Madry AT, 0.5 = half/half as several ensemble codes do).
"""

from __future__ import annotations

from torch import Tensor

from igat.defenses.base import DEFENSES, Defense, LossOutput, accuracy, member_ce, per_member_attack
from igat.specs.defenses import PGDATParams, PGDATSpec


@DEFENSES.register("pgd_at")
class PGDAdversarialTraining(PGDATSpec, Defense):
    def loss(self, ctx, x: Tensor, y: Tensor) -> LossOutput:
        p: PGDATParams = self.params
        if p.clean_weight >= 1.0:  # no adversarial term: skip the attack entirely
            logits = ctx.ensemble(x)
            ce = member_ce(logits, y)
            return LossOutput(ce, {"clean_ce": float(ce.detach()), "member_acc": accuracy(logits, y)})
        x_adv = per_member_attack(ctx.ensemble, x, y, p.eps, p.step_size, p.steps, p.random_start,
                                  ctx.generator, eval_mode=p.bn_mode == "eval")
        adv_logits = ctx.ensemble(x_adv)
        adv_ce = member_ce(adv_logits, y)
        metrics = {"adv_ce": float(adv_ce.detach()), "member_adv_acc": accuracy(adv_logits, y)}
        loss = (1 - p.clean_weight) * adv_ce
        if p.clean_weight > 0:
            clean_logits = ctx.ensemble(x)
            clean_ce = member_ce(clean_logits, y)
            loss = loss + p.clean_weight * clean_ce
            metrics.update(clean_ce=float(clean_ce.detach()), member_acc=accuracy(clean_logits, y))
        return LossOutput(loss, metrics)
