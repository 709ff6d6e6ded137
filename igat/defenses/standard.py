"""Standard training: every member minimises its own cross-entropy on natural data."""

from __future__ import annotations

from torch import Tensor

from igat.defenses.base import DEFENSES, Defense, LossOutput, accuracy, member_ce
from igat.specs.defenses import StandardSpec


@DEFENSES.register("standard")
class StandardTraining(StandardSpec, Defense):
    def loss(self, ctx, x: Tensor, y: Tensor) -> LossOutput:
        logits = ctx.ensemble(x)
        loss = member_ce(logits, y)
        return LossOutput(loss, {"ce": float(loss.detach()), "member_acc": accuracy(logits, y)})
