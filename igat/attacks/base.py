"""Attack interface and registry.

An attack takes a classifier ``model(x) -> logits`` (for ensembles: the combiner's log-output,
spec §3.1), clean inputs ``x`` in [0, 1] and labels ``y``, and returns adversarial inputs that
stay in the L-inf eps-ball around ``x`` and in [0, 1]. Attacks never need parameter gradients;
callers run them under ``Ensemble.frozen()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from igat.registry import Registry
from igat.specs.attacks import AttackParams, AttackSpec

Model = Callable[[Tensor], Tensor]


@dataclass
class AttackResult:
    x_adv: Tensor
    stats: dict[str, Any] = field(default_factory=dict)  # e.g. per-example query counts


class Attack(AttackSpec):
    """An attack's implementation; its name, ``Params``, kind and summary come from its spec
    (:mod:`igat.specs.attacks`), which implementations list first: ``class PGDAttack(PGDSpec, Attack)``."""

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
