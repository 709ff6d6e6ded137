"""FGSM and L-inf PGD (Madry et al.) in [0, 1] pixel space.

Loss "ce" is cross-entropy on the model's logits (for an ensemble: on the combiner's log-output,
i.e. -log h_y for the average combiner); "cw" is the Carlini-Wagner margin max_{k != y} z_k - z_y,
used by the CW-Linf evaluation.

Two entry points share the random start and the step:

* :func:`pgd` returns the *final* iterate for every example. Adversarial training uses it
  (members in train or eval mode, as the caller sets): training wants a loss-maximising point for
  every example, fooled or not.
* :func:`pgd_early_exit` is the evaluation attack (the ``pgd``, ``fgsm`` and ``cw`` attacks):
  robust accuracy asks whether *any* point of the eps-ball is misclassified, so it attacks only
  the correctly classified examples, checks every iterate (the start included), and an example
  leaves the batch at its first misclassified iterate, which becomes its ``x_adv``. It follows the
  same trajectory as :func:`pgd` from the same generator state, so it fools every example the
  final iterate fools (up to float rounding between batch sizes), usually more, at a fraction of
  the cost. ``restarts`` re-runs it on the still-robust examples from new random starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from igat.attacks.base import ATTACKS, Attack, AttackResult, Model, project
from igat.config import EPS_8_255, STEP_2_255
from igat.specs.attacks import (
    FGSMSpec,
    NaturalSpec,
    PGDSpec,
    PGDStrengthSpec,
)


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


def _check_args(eps: float, targeted: bool, target: Tensor | None) -> None:
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if targeted and target is None:
        raise ValueError("a targeted attack needs target labels")


def _uniform_start(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    """A uniform point of the eps-ball around x, clipped to [0, 1]: one draw of x's shape from ``generator``."""
    noise = torch.rand(x.shape, generator=generator, device="cpu" if generator is None else generator.device)
    return project(x + (noise.to(x.device, x.dtype) * 2 - 1) * eps, x, eps)


def _signed_step(model: Model, x_adv: Tensor, x: Tensor, labels: Tensor, eps: float, step: float,
                 loss: str) -> tuple[Tensor, Tensor]:
    """One step ``x_adv + step * sign(grad loss)`` projected to the ball; returns (next iterate, logits at x_adv)."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        (grad,) = torch.autograd.grad(attack_loss(logits, labels, loss), x_adv)
    return project(x_adv.detach() + step * grad.sign(), x, eps), logits.detach()


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
    """L-inf PGD, final iterate. Untargeted: ascend the loss of ``y``; targeted: descend the loss of ``target``."""
    _check_args(eps, targeted, target)
    x = x.detach()
    labels = target if targeted else y
    if eps == 0 or steps == 0:
        return x.clone()
    x_adv = _uniform_start(x, eps, generator) if random_start else x.clone()
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        x_adv, _ = _signed_step(model, x_adv, x, labels, eps, sign * step_size, loss)
    return x_adv


@dataclass
class PGDResult:
    x_adv: Tensor  # first misclassified iterate; else the last iterate; the clean input where clean is wrong
    fooled: Tensor  # bool: misclassified at x_adv (clean misclassifications included)
    attacked: Tensor  # bool: correctly classified clean, so attacked
    iterations: Tensor  # long: forward+backward passes spent on the example, over all restarts


def _restart_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """The generator of restarts 2, 3, ...: seeded from a copy of ``generator``, which is left untouched.

    So the first restart draws exactly what :func:`pgd` draws, for this batch and (the shared
    evaluation generator not being advanced by restarts) for every later batch: more restarts never
    change the first restart's result, they only add to it.
    """
    if generator is None:
        return None  # the global RNG, as pgd uses it
    copy = torch.Generator(device=generator.device)
    copy.set_state(generator.get_state())
    seed = int(torch.randint(0, 2**62, (1,), generator=copy, device=generator.device))
    return torch.Generator(device=generator.device).manual_seed(seed)


def pgd_early_exit(
    model: Model,
    x: Tensor,
    y: Tensor,
    eps: float = EPS_8_255,
    step_size: float = STEP_2_255,
    steps: int = 20,
    random_start: bool = True,
    targeted: bool = False,
    target: Tensor | None = None,
    loss: str = "ce",
    generator: torch.Generator | None = None,
    restarts: int = 1,
) -> PGDResult:
    """L-inf PGD for evaluation: per-example early exit at the first misclassified iterate, worst case over restarts.

    An example is *fooled* when the model's prediction differs from ``y`` (also in targeted mode:
    robust accuracy is about ``y``). Iterates checked: the start and each of the ``steps`` steps,
    so a fooled example costs the passes up to its fooling iterate and nothing more.
    """
    _check_args(eps, targeted, target)
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    x, y = x.detach(), y.detach()
    labels = target if targeted else y
    with torch.no_grad():
        fooled = model(x).argmax(1) != y
    attacked = ~fooled
    x_adv = x.clone()
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    if eps == 0 or steps == 0:
        return PGDResult(x_adv, fooled, attacked, iterations)
    # Without a random start every restart would repeat the first trajectory.
    restarts = restarts if random_start else 1
    sign = -1.0 if targeted else 1.0
    gen = generator
    for restart in range(restarts):
        if restart == 1:
            gen = _restart_generator(generator)
        # Drawn for the whole batch, so an example's start does not depend on which others are still robust.
        start = _uniform_start(x, eps, gen) if random_start else x
        idx = (~fooled).nonzero().squeeze(1)
        if len(idx) == 0:
            break
        _early_exit_run(model, x[idx], y[idx], labels[idx], start[idx], idx, eps, sign * step_size, steps, loss,
                        x_adv, fooled, iterations)
    return PGDResult(x_adv, fooled, attacked, iterations)


def _early_exit_run(model: Model, x: Tensor, y: Tensor, labels: Tensor, x_cur: Tensor, idx: Tensor, eps: float,
                    step: float, steps: int, loss: str, x_adv: Tensor, fooled: Tensor, iterations: Tensor) -> None:
    """One PGD run on the examples ``idx`` from ``x_cur``; writes x_adv / fooled / iterations of the batch in place."""
    for t in range(steps + 1):
        if t < steps:
            x_next, logits = _signed_step(model, x_cur, x, labels, eps, step, loss)
            iterations[idx] += 1
        else:  # the last iterate is checked without a gradient
            with torch.no_grad():
                logits = model(x_cur)
        hit = logits.argmax(1) != y
        x_adv[idx[hit]] = x_cur[hit]
        fooled[idx[hit]] = True
        keep = ~hit
        if t == steps:
            x_adv[idx[keep]] = x_cur[keep]  # robust: the last iterate (correctly classified)
            return
        if not bool(keep.all()):
            idx, x, y, labels, x_next = idx[keep], x[keep], y[keep], labels[keep], x_next[keep]
            if len(idx) == 0:
                return
        x_cur = x_next


def early_exit_stats(res: PGDResult) -> dict[str, Tensor]:
    """Per-example cost statistics (evaluation reports their mean): attacked (bool) and passes spent (long)."""
    return {"attacked": res.attacked.cpu(), "iterations": res.iterations.cpu()}


@ATTACKS.register("pgd")
class PGDAttack(PGDSpec, Attack):
    """PGD-k with cross-entropy (default PGD-20, eps 8/255, step 2/255, one random start), early exit per example.

    Stats: ``attacked`` (correct clean, so attacked) and ``iterations`` (forward+backward passes) per example.
    """

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        p = self.params
        target = None
        if p.targeted:
            with torch.no_grad():
                num_classes = model(x[:1]).shape[1]
            target = (y + p.target_offset) % num_classes
        res = pgd_early_exit(model, x, y, p.eps, p.step_size, p.steps, p.random_start, p.targeted, target, p.loss,
                             generator, p.restarts)
        return AttackResult(res.x_adv, early_exit_stats(res))


@ATTACKS.register("fgsm")
class FGSMAttack(FGSMSpec, Attack):
    """One signed-gradient step of size eps (no random start); misclassified clean inputs are kept as they are."""

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        p = self.params
        target = None
        if p.targeted:
            with torch.no_grad():
                target = (y + p.target_offset) % model(x[:1]).shape[1]
        res = pgd_early_exit(model, x, y, p.eps, max(p.eps, 1e-12), 1, False, p.targeted, target, "ce", generator)
        return AttackResult(res.x_adv, early_exit_stats(res))


@ATTACKS.register("pgd_strength")
class PGDStrengthAttack(PGDStrengthSpec, Attack):
    """Strength probe: PGD-k (reference), then PGD-100 with restarts on what PGD-k left robust, same examples.

    The row's accuracy is the worst case of both; ``stats["robust_reference"]`` (per example) gives
    PGD-k's accuracy on the same examples, so their difference is a paired estimate of how much
    PGD-k overestimates robustness (:mod:`igat.sanity` flags more than a point).
    """

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        p = self.params
        ref = pgd_early_exit(model, x, y, p.eps, p.step_size, p.reference_steps, generator=generator)
        robust = (~ref.fooled).nonzero().squeeze(1)
        x_adv, iterations = ref.x_adv, ref.iterations.clone()
        if len(robust):
            strong = pgd_early_exit(model, x[robust], y[robust], p.eps, p.step_size, p.steps, generator=generator,
                                    restarts=p.restarts)
            x_adv[robust] = strong.x_adv
            iterations[robust] += strong.iterations
        stats = {"attacked": ref.attacked.cpu(), "iterations": iterations.cpu(),
                 "robust_reference": (~ref.fooled).cpu(), "reference_steps": p.reference_steps}
        return AttackResult(x_adv, stats)


@ATTACKS.register("natural")
class NaturalAttack(NaturalSpec, Attack):
    """No attack: natural (clean) accuracy."""

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        return AttackResult(x.detach().clone())
