"""Attack interface and registry.

An attack takes a classifier ``model(x) -> logits`` (for ensembles: the combiner's log-output,
spec §3.1), clean inputs ``x`` in [0, 1] and labels ``y``, and returns adversarial inputs that
stay in the L-inf eps-ball around ``x`` and in [0, 1]. Attacks never need parameter gradients;
callers run them under ``Ensemble.frozen()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from igat.registry import Registry

Model = Callable[[Tensor], Tensor]


class AttackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class AttackResult:
    x_adv: Tensor
    stats: dict[str, Any] = field(default_factory=dict)  # e.g. per-example query counts


class Attack:
    name: ClassVar[str]
    Params: ClassVar[type[AttackParams]] = AttackParams
    kind: ClassVar[str] = "white-box"  # or "black-box", "natural", "ensemble"

    def __init__(self, params: AttackParams | None = None, **kwargs: Any) -> None:
        self.params = params if params is not None else self.Params(**kwargs)

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        raise NotImplementedError

    def __call__(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.perturb(model, x, y, generator).x_adv


ATTACKS: Registry[type[Attack]] = Registry("attack")


def build_attack(name: str, params: dict[str, Any] | None = None) -> Attack:
    cls = ATTACKS.get(name)
    return cls(cls.Params(**(params or {})))


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Clip into the L-inf ball of radius eps around x and into [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)
