"""Input-space loss curvature, eq. (2) of the paper (spec §4.2).

    lambda_f(x, delta) = || grad_x l(f(x + delta), y) - grad_x l(f(x), y) ||_2 / || delta ||_2

with l the per-example cross-entropy. The gradients are taken per example: we differentiate the
*sum* of per-example losses, which equals the per-example gradient as long as examples do not
interact (models are put in eval mode, so BatchNorm uses running statistics).

Three ways to pick delta (``delta_mode``):
  * ``pgd``    - the L-inf PGD perturbation of x against the same model (radius eps);
  * ``sign``   - eps * sign(grad l), the CURE-style finite difference;
  * ``random`` - a uniformly random direction with L2 norm eps * sqrt(d), i.e. the L2 length of
                 an eps-sign step, so the three modes probe comparable distances.
Perturbed points are clipped to the [0, 1] pixel box and delta is the *actual* difference.

The loss is the paper's l_CE = -log f_y(x): cross-entropy on a member's logits, and -log of the
combined score on an ensemble's output (for the max combiner the scores do not sum to 1, and
they are not renormalised). ``pgd`` deltas come from the library's attack (cross-entropy on the
model's log-output); the delta only picks the direction and distance at which eq. (2) is measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igat.attacks.pgd import pgd
from igat.models.ensemble import frozen

DeltaMode = Literal["pgd", "sign", "random"]
LossFn = Callable[[Tensor], Tensor]  # x [B, ...] -> per-example loss [B]


def input_gradient(loss_fn: LossFn, x: Tensor) -> Tensor:
    """Per-example input gradient of a per-example loss."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x)
        if loss.dim() != 1 or loss.shape[0] != x.shape[0]:
            raise ValueError(f"loss_fn must return one loss per example (shape [{x.shape[0]}]), got {tuple(loss.shape)}")
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad.detach()


def loss_curvature(loss_fn: LossFn, x: Tensor, delta: Tensor) -> Tensor:
    """Eq. (2) for any differentiable per-example loss; NaN where ||delta|| = 0."""
    if delta.shape != x.shape:
        raise ValueError(f"delta has shape {tuple(delta.shape)}, x has {tuple(x.shape)}")
    g0 = input_gradient(loss_fn, x)
    g1 = input_gradient(loss_fn, x + delta)
    num = (g1 - g0).flatten(1).norm(dim=1)
    den = delta.flatten(1).norm(dim=1)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.full_like(num, float("nan")))


def ce_loss_fn(model: nn.Module, y: Tensor) -> LossFn:
    """Per-example cross-entropy of a model returning logits (or log-probabilities)."""
    return lambda x: F.cross_entropy(model(x), y, reduction="none")


def nll_loss_fn(log_score_model: nn.Module, y: Tensor) -> LossFn:
    """Per-example -log f_y(x) of a model returning log-scores log f(x), *without* renormalising.

    The max combiner's scores max_m f^m(x) do not sum to 1; cross-entropy on their log would
    compute -log(f_y / sum_c f_c) instead of the paper's l_CE = -log f_y.
    """
    return lambda x: F.nll_loss(log_score_model(x), y, reduction="none")


def loss_fn_of(model: nn.Module, y: Tensor) -> LossFn:
    """The l_CE of eq. (2) for a target: -log f_y on an ensemble's combined scores, CE on a member's logits."""
    from igat.models.ensemble import CombinedModel

    return nll_loss_fn(model, y) if isinstance(model, CombinedModel) else ce_loss_fn(model, y)


def make_delta(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    mode: DeltaMode,
    eps: float,
    pgd_steps: int = 10,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> Tensor:
    """The perturbation delta of one of the three modes (see module docstring)."""
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if mode == "pgd":
        step = step_size if step_size is not None else eps / 4
        x_adv = pgd(model, x, y, eps=eps, step_size=step, steps=pgd_steps, random_start=True, generator=generator)
    elif mode == "sign":
        x_adv = x + eps * input_gradient(loss_fn_of(model, y), x).sign()  # ascent: the loss grows
    elif mode == "random":
        dev = generator.device if generator is not None else torch.device("cpu")
        u = torch.randn(x.shape, generator=generator, device=dev).to(x.device, x.dtype)
        norm = eps * float(x[0].numel()) ** 0.5
        x_adv = x + norm * u / u.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    else:
        raise ValueError(f"delta_mode must be one of pgd, sign, random; got {mode!r}")
    if clip:
        x_adv = x_adv.clamp(0.0, 1.0)
    return (x_adv - x).detach()


def model_curvature(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    mode: DeltaMode = "sign",
    eps: float = 8 / 255,
    pgd_steps: int = 10,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
) -> Tensor:
    """lambda_f(x, delta) of one model for every example (batched), l_CE as :func:`loss_fn_of` picks it."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for s in range(0, len(x), batch_size):
            xb, yb = x[s : s + batch_size], y[s : s + batch_size]
            delta = make_delta(model, xb, yb, mode, eps, pgd_steps, generator=generator)
            out.append(loss_curvature(loss_fn_of(model, yb), xb, delta))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def targets_of(model: nn.Module, combiners: tuple[str, ...] = ("average",)) -> dict[str, nn.Module]:
    """The models whose curvature we report: each member (and combined ensembles) or the model itself."""
    from igat.models.ensemble import Ensemble

    if isinstance(model, Ensemble):
        targets: dict[str, nn.Module] = {f"member_{i}": m for i, m in enumerate(model.members)}
        for comb in combiners:
            targets[f"ensemble_{comb}"] = model.as_model(comb)
        return targets
    return {"model": model}


def curvature_distributions(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    mode: DeltaMode = "sign",
    eps: float = 8 / 255,
    pgd_steps: int = 10,
    batch_size: int = 128,
    combiners: tuple[str, ...] = ("average",),
    seed: int = 0,
) -> dict[str, Tensor]:
    """Curvature values per member (+ combined ensembles) or for a single model."""
    results: dict[str, Tensor] = {}
    with frozen(model, eval_mode=False):  # only input gradients are needed; model_curvature sets eval mode
        for name, target in targets_of(model, combiners).items():
            gen = torch.Generator(device=x.device).manual_seed(seed)  # same random draws for every target
            results[name] = model_curvature(target, x, y, mode, eps, pgd_steps, batch_size, gen)
    return results


def compare_curvature(
    model_a: nn.Module,
    model_b: nn.Module,
    x: Tensor,
    y: Tensor,
    labels: tuple[str, str] = ("standard", "adversarial"),
    **kwargs,
) -> Mapping[str, dict[str, Tensor]]:
    """Curvature distributions of two models/ensembles on the same examples and deltas settings
    (e.g. a standard vs an adversarially trained ensemble)."""
    if labels[0] == labels[1]:
        raise ValueError("labels must differ")
    return {labels[0]: curvature_distributions(model_a, x, y, **kwargs),
            labels[1]: curvature_distributions(model_b, x, y, **kwargs)}
