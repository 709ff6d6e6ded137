"""FGSM and L-inf PGD (Madry et al.) in [0, 1] pixel space.

The same routine serves training (members in train or eval mode, as the caller sets) and
evaluation. Loss "ce" is cross-entropy on the model's logits (for an ensemble: on the
combiner's log-output, i.e. -log h_y for the average combiner); "cw" is the Carlini-Wagner
margin max_{k != y} z_k - z_y, used by the CW-Linf evaluation.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from igat.attacks.base import ATTACKS, Attack, AttackParams, AttackResult, Model, project
from igat.config import EPS_8_255, STEP_2_255


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example CW margin: max wrong logit minus true logit (positive = misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return wrong - true


def attack_loss(logits: Tensor, y: Tensor, loss: str) -> Tensor:
    """Summed per-example loss to *increase* (sum, so per-example gradients do not shrink with B)."""
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    if loss == "cw":
        return margin_loss(logits, y).sum()
    raise ValueError(f"loss must be 'ce' or 'cw', got {loss!r}")


def pgd(
    model: Model,
    x: Tensor,
    y: Tensor,
    eps: float = EPS_8_255,
    step_size: float = STEP_2_255,
    steps: int = 10,
    random_start: bool = True,
    targeted: bool = False,
    target: Tensor | None = None,
    loss: str = "ce",
    generator: torch.Generator | None = None,
) -> Tensor:
    """L-inf PGD. Untargeted: ascend the loss of ``y``; targeted: descend the loss of ``target``."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    x = x.detach()
    labels = target if targeted else y
    if targeted and target is None:
        raise ValueError("a targeted attack needs target labels")
    if eps == 0 or steps == 0:
        return x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu" if generator is None else generator.device)
        x_adv = project(x + (noise.to(x.device, x.dtype) * 2 - 1) * eps, x, eps)
    else:
        x_adv = x.clone()
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            value = attack_loss(model(x_adv), labels, loss)
            (grad,) = torch.autograd.grad(value, x_adv)
        x_adv = project(x_adv.detach() + sign * step_size * grad.sign(), x, eps)
    return x_adv.detach()


class PGDAttackParams(AttackParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="L-inf radius in [0,1] pixel units")
    step_size: float = Field(STEP_2_255, gt=0.0, le=1.0)
    steps: int = Field(20, ge=1, le=10000)
    random_start: bool = True
    loss: Literal["ce", "cw"] = "ce"
    targeted: bool = False
    target_offset: int = Field(1, ge=1, description="targeted mode: target = (y + offset) mod C")


@ATTACKS.register("pgd")
class PGDAttack(Attack):
    """PGD-k with cross-entropy (default PGD-20, eps 8/255, step 2/255, one random start)."""

    name = "pgd"
    Params = PGDAttackParams

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        p = self.params
        target = None
        if p.targeted:
            with torch.no_grad():
                num_classes = model(x[:1]).shape[1]
            target = (y + p.target_offset) % num_classes
        x_adv = pgd(model, x, y, p.eps, p.step_size, p.steps, p.random_start, p.targeted, target, p.loss, generator)
        return AttackResult(x_adv)


class FGSMParams(AttackParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0)
    targeted: bool = False
    target_offset: int = Field(1, ge=1)


@ATTACKS.register("fgsm")
class FGSMAttack(Attack):
    """One signed-gradient step of size eps (no random start)."""

    name = "fgsm"
    Params = FGSMParams

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        p = self.params
        target = None
        if p.targeted:
            with torch.no_grad():
                target = (y + p.target_offset) % model(x[:1]).shape[1]
        x_adv = pgd(model, x, y, p.eps, max(p.eps, 1e-12), 1, False, p.targeted, target, "ce", generator)
        return AttackResult(x_adv)


@ATTACKS.register("natural")
class NaturalAttack(Attack):
    """No attack: natural (clean) accuracy."""

    name = "natural"
    kind = "natural"

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        return AttackResult(x.detach().clone())
