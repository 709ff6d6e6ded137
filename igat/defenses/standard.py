"""Standard training: every member minimises its own cross-entropy on natural data."""

from __future__ import annotations

from torch import Tensor

from igat.defenses.base import DEFENSES, Defense, LossOutput, accuracy, member_ce


@DEFENSES.register("standard")
class StandardTraining(Defense):
    name = "standard"
    description = "No attack: each member trained with cross-entropy on natural data (vanilla ensemble)."
    recommended = {"optim": {"name": "sgd", "lr": 0.1, "milestones": [100, 150]}, "train": {"epochs": 200, "batch_size": 128}}

    def loss(self, ctx, x: Tensor, y: Tensor) -> LossOutput:
        logits = ctx.ensemble(x)
        loss = member_ce(logits, y)
        return LossOutput(loss, {"ce": float(loss.detach()), "member_acc": accuracy(logits, y)})
