"""Defense interface and registry.

A defense decides how one mini-batch updates the ensemble. Most defenses are a loss
(``Defense.loss`` returns the scalar to minimise plus named components, e.g. ADP's entropy and
log-det terms); the default ``train_step`` back-propagates it through ``ctx.optimize``.
Defenses with their own update order (DVERGE's sequential per-member steps) override
``train_step`` and call ``ctx.optimize(loss, member=i)`` themselves.

Adding a defense: its spec in :mod:`igat.specs.defenses` (the ``Params`` model, validated as
``defense.params.*`` in the experiment config, and the recipe; torch-free, so configs are checked without
PyTorch), and its implementation, ``class X(XSpec, Defense)`` decorated with ``@DEFENSES.register``, in a
module of this package listed in ``__init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from igat.registry import Registry
from igat.specs.defenses import DefenseParams, DefenseSpec

if TYPE_CHECKING:
    from igat.config import ExperimentConfig
    from igat.models.ensemble import Ensemble
    from igat.training.context import StepContext


@dataclass
class LossOutput:
    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)  # loss components, accuracies


@dataclass
class MemberStat:
    """One per-member statistic for an epoch (iGAT distribution counts, per-member accuracies)."""

    member: int
    statistic: str
    value: float


class Defense(DefenseSpec):
    """The training side of a defense; its name, ``Params``, recipe and config checks come from its spec
    (:mod:`igat.specs.defenses`), which implementations list first: ``class ADP(ADPSpec, Defense)``."""

    def __init__(self, params: DefenseParams, config: ExperimentConfig) -> None:
        self.params = params
        self.config = config

    # --- model construction hooks ---------------------------------------------------
    def member_kwargs(self) -> dict[str, Any]:
        """Extra ResNet20 keyword arguments (e.g. ``hidden_dim`` for CLDL, ``aux_head`` for SoE)."""
        return {}

    def extra_modules(self, num_classes: int) -> dict[str, nn.Module]:
        """Modules trained jointly with the members (e.g. CLDL's label-confusion model)."""
        return {}

    # --- training hooks -------------------------------------------------------------
    def on_epoch_start(self, ctx: StepContext) -> None:
        pass

    def loss(self, ctx: StepContext, x: Tensor, y: Tensor) -> LossOutput:
        raise NotImplementedError

    def train_step(self, ctx: StepContext, x: Tensor, y: Tensor) -> dict[str, float]:
        out = self.loss(ctx, x, y)
        ctx.optimize(out.loss)
        return {"loss": float(out.loss.detach()), **out.metrics}

    @property
    def has_custom_step(self) -> bool:
        """True when train_step is overridden (the update is not a single loss)."""
        return type(self).train_step is not Defense.train_step

    def epoch_member_stats(self) -> list[MemberStat]:
        """Per-member statistics gathered during the epoch; called once at its end."""
        return []

    # --- state that must survive a resume --------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


DEFENSES: Registry[type[Defense]] = Registry("defense")



def member_ce(logits: Tensor, y: Tensor) -> Tensor:
    """Sum over members of each member's batch-mean cross-entropy; logits [N, B, C], y [B] or [N, B]."""
    n, b, c = logits.shape
    yy = y if y.dim() == 2 else y.expand(n, b)
    return torch.nn.functional.cross_entropy(logits.reshape(n * b, c), yy.reshape(-1), reduction="sum") / b


def accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def per_member_attack(ensemble: Ensemble, x: Tensor, y: Tensor, eps: float, step_size: float, steps: int,
                      random_start: bool, generator: torch.Generator | None, eval_mode: bool = True) -> Tensor:
    """PGD against every member separately, in one batched pass: returns [N, B, ...].

    The members see per-member inputs, and the loss is summed over members, so the input
    gradient for member i's copy depends on member i alone.
    """
    from igat.attacks.pgd import pgd

    n = ensemble.num_members
    xs = x.unsqueeze(0).expand(n, *x.shape).contiguous()
    ys = y.repeat(n)

    def model(z: Tensor) -> Tensor:
        out = ensemble(z)
        return out.reshape(-1, out.shape[-1])

    with ensemble.frozen(eval_mode=eval_mode):
        flat = pgd(model, xs, ys, eps, step_size, steps, random_start, generator=generator)
    return flat
