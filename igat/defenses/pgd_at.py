"""Independent PGD adversarial training of each member (Madry et al.).

Each member is attacked on its own (PGD against that member alone) and trained on its own
adversarial examples; members never interact. ``clean_weight`` mixes in natural CE
(0 = pure Madry AT, 0.5 = half/half as several ensemble codes do).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from igat.config import EPS_8_255, STEP_2_255
from igat.defenses.base import DEFENSES, Defense, DefenseParams, LossOutput, accuracy, member_ce, per_member_attack


class PGDATParams(DefenseParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="training attack L-inf radius")
    step_size: float = Field(STEP_2_255, gt=0.0, le=1.0)
    steps: int = Field(10, ge=1, le=1000)
    random_start: bool = True
    clean_weight: float = Field(0.0, ge=0.0, le=1.0, description="weight of natural CE (adversarial gets 1 - w)")
    bn_mode: Literal["train", "eval"] = Field("eval", description="BatchNorm mode while crafting the attack")


@DEFENSES.register("pgd_at")
class PGDAdversarialTraining(Defense):
    name = "pgd_at"
    Params = PGDATParams
    adversarial_training_off = {"clean_weight": 1.0}  # natural CE of every member
    description = "Independent PGD adversarial training of every member."
    recommended = {"optim": {"name": "sgd", "lr": 0.1, "milestones": [100, 150]}, "train": {"epochs": 200, "batch_size": 128}}

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
