"""What a defense sees during one training step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from igat.config import ExperimentConfig
    from igat.data import Dataset
    from igat.models.ensemble import Ensemble


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops with this message."""


@dataclass
class StepContext:
    ensemble: Ensemble
    config: ExperimentConfig
    device: torch.device
    optimizers: list[torch.optim.Optimizer]
    extra: nn.ModuleDict
    generator: torch.Generator  # attacks' random starts, iGAT roulette draws: checkpointed
    dataset: Dataset | None = None
    epoch: int = 0  # 0-based index of the current epoch
    step: int = 0  # global step, 1-based once training starts
    steps_per_epoch: int = 1
    grad_clip: float | None = None
    scratch: dict = field(default_factory=dict)  # per-step values defenses may share (iGAT reads base outputs)

    def member_optimizer(self, member: int) -> torch.optim.Optimizer:
        if len(self.optimizers) == 1:
            return self.optimizers[0]
        return self.optimizers[member]

    def optimize(self, loss: Tensor, member: int | None = None, what: str = "loss") -> None:
        """zero_grad -> backward -> (clip) -> step, on every optimiser or on one member's.

        Raises NonFiniteLossError before touching the weights when the loss is NaN/inf.
        """
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"{what} became {float(loss.detach())} at epoch {self.epoch + 1}, step {self.step}; "
                "the run was stopped (lower the learning rate or check the defense's coefficients)"
            )
        opts = self.optimizers if member is None or len(self.optimizers) == 1 else [self.optimizers[member]]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            params = [p for opt in opts for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        for opt in opts:
            opt.step()
