"""Defense interface and registry.

A defense decides how one mini-batch updates the ensemble. Most defenses are a loss
(``Defense.loss`` returns the scalar to minimise plus named components, e.g. ADP's entropy and
log-det terms); the default ``train_step`` back-propagates it through ``ctx.optimize``.
Defenses with their own update order (DVERGE's sequential per-member steps) override
``train_step`` and call ``ctx.optimize(loss, member=i)`` themselves.

Adding a defense is one file: subclass :class:`Defense`, give it a ``Params`` model (validated
as ``defense.params.*`` in the experiment config), and decorate with ``@DEFENSES.register``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from igat.registry import Registry

if TYPE_CHECKING:
    from igat.config import ExperimentConfig
    from igat.models.ensemble import Ensemble
    from igat.training.context import StepContext


class DefenseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class Defense:
    name: ClassVar[str]
    Params: ClassVar[type[DefenseParams]] = DefenseParams
    description: ClassVar[str] = ""
    # Config overrides a researcher would start from for this defense (spec §2, CIFAR-10,
    # 8 x ResNet-20). The dashboard's launch form and `igat defaults DEFENSE` show them.
    recommended: ClassVar[dict[str, Any]] = {}
    # Parameter values that switch off the defense's own adversarial training, i.e. what is left is its
    # non-adversarial objective (eq. 11). iGAT applies them unless ``igat.base_adv`` (paper §5.1: the global
    # examples, distributed, replace the full adversarial set every member would otherwise train on).
    # None: the defense has no adversarial-training term to remove (standard, TRS whose inner maximisation
    # belongs to its smoothness loss).
    adversarial_training_off: ClassVar[dict[str, Any] | None] = None
    # The defense whose trained ensemble this recipe starts from (a warm start through
    # ``train.init_checkpoint``): DVERGE's reference trainer begins from a standard-trained ensemble (spec
    # §2.4). ``igat study`` and ``igat ablate`` (when they train the base) pre-train it first.
    warm_start_from: ClassVar[str | None] = None
    # Diversity terms compare members pairwise: such defenses need at least two.
    min_members: ClassVar[int] = 1

    @classmethod
    def config_problems(cls, config: ExperimentConfig) -> list[tuple[str, str]]:
        """(field, message) pairs for settings this defense cannot run with, found when the config is
        validated, so the form, a YAML import and the CLI refuse them before anything is queued."""
        n = config.model.num_members
        if n < cls.min_members:
            return [("model.num_members", f"must be an integer >= {cls.min_members} for defense {cls.name!r} "
                                          f"(its diversity terms compare member pairs), got {n}")]
        return []

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

# The optimiser of the DVERGE-repo family of reference trainers (ADP, GAL, CLDL ports; TRS with its own
# milestones): Adam lr 1e-3, weight decay 1e-4, eps 1e-7, lr x0.1 at epochs 100 and 150 (spec §2).
REFERENCE_ADAM: dict[str, Any] = {"name": "adam", "lr": 0.001, "weight_decay": 1e-4, "adam_eps": 1e-7,
                                  "milestones": [100, 150]}


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
