"""TRS: Transferability-Reduced Smooth ensemble (Yang et al., NeurIPS 2021), spec §2.3.

Loss = sum_m CE_m(x) + scale * (coeff * cos + lamda * smooth), where
* cos = mean over all member pairs (any N, not only 3) of the batch-mean |cos(g_i, g_j)|,
  g_m = d CE_m / dx on the clean batch;
* smooth = (1/N) sum_m 2 * mean_b ||d CE_m / dx'||^2, the members' squared input-gradient norm.
  With ``plus_adv`` it is measured on [first half clean, second half x'], where x' maximises the
  same quantity by a 6-step sign-PGD (random start, step eps/3) whose radius grows linearly
  eps_t = eps_init + (eps_adv - eps_init) * epoch / epochs; otherwise on the clean batch.
CE is batch-averaged as in the reference, so gradients carry a 1/B factor (norms 1/B^2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from igat.attacks.base import project
from igat.defenses._gradients import member_ce_gradients, pairwise_cosine, require_members
from igat.defenses.base import DEFENSES, Defense, LossOutput, accuracy, member_ce
from igat.specs.defenses import TRSParams, TRSSpec

GradFn = Callable[[Tensor], Tensor]  # x [B, ...] -> per-member input gradients [N, B, D] (graph kept)


def trs_cosine(grads: Tensor) -> Tensor:
    """Mean over member pairs of the batch-mean absolute gradient cosine: grads [N, B, D] -> scalar."""
    return pairwise_cosine(grads).abs().mean()


def trs_smoothness(grads: Tensor) -> Tensor:
    """(1/N) sum_m 2 * mean_b ||g_m(x_b)||^2: grads [N, B, D] -> scalar."""
    return 2.0 * grads.pow(2).sum(dim=-1).mean()


def smoothness_pgd(grad_fn: GradFn, x: Tensor, eps: float, steps: int, step_size: float,
                   generator: torch.Generator | None = None) -> Tensor:
    """Sign-PGD with a uniform random start that maximises ``trs_smoothness(grad_fn(x'))`` in B_eps(x).

    A direction in which the smoothness term does not depend on x' (zero gradient) is not moved.
    """
    x = x.detach()
    if eps == 0 or steps == 0:
        return x.clone()
    noise = torch.rand(x.shape, generator=generator, device="cpu" if generator is None else generator.device)
    x_adv = project(x + (noise.to(x.device, x.dtype) * 2 - 1) * eps, x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            value = trs_smoothness(grad_fn(x_adv))
            (g,) = torch.autograd.grad(value, x_adv, allow_unused=True)
        if g is None:
            g = torch.zeros_like(x_adv)
        x_adv = project(x_adv.detach() + step_size * g.sign(), x, eps)
    return x_adv.detach()


def eps_schedule(eps_init: float, eps_adv: float, epoch: int, epochs: int) -> float:
    """Linear growth of the smoothness-attack radius over training (epoch is 0-based)."""
    return eps_init + (eps_adv - eps_init) * epoch / max(epochs, 1)


@DEFENSES.register("trs")
class TRS(TRSSpec, Defense):
    def __init__(self, params, config) -> None:
        super().__init__(params, config)
        require_members(config, 2, self.name)

    def current_eps(self, epoch: int) -> float:
        p: TRSParams = self.params
        return eps_schedule(p.init_eps, p.adv_eps, epoch, self.config.train.epochs)

    def loss(self, ctx, x: Tensor, y: Tensor) -> LossOutput:
        p: TRSParams = self.params
        ens = ctx.ensemble
        grads, logits = member_ce_gradients(ens, x, y)
        ce = member_ce(logits, y)
        cos = trs_cosine(grads)
        metrics = {"ce": float(ce.detach()), "cos": float(cos.detach()), "member_acc": accuracy(logits, y)}
        if p.plus_adv and len(x) >= 2:
            half = len(x) // 2
            eps = self.current_eps(ctx.epoch)
            with ens.frozen(eval_mode=p.adv_bn_mode == "eval"):
                x_far = smoothness_pgd(lambda z: member_ce_gradients(ens, z, y[half:])[0], x[half:], eps,
                                       p.adv_steps, eps / 3, ctx.generator)
            smooth_grads, _ = member_ce_gradients(ens, torch.cat([x[:half], x_far]), y)
            smooth = trs_smoothness(smooth_grads)
            metrics["smooth_eps"] = eps
        else:
            smooth = trs_smoothness(grads)
        metrics["smooth"] = float(smooth.detach())
        loss = ce + p.scale * (p.coeff * cos + p.lamda * smooth)
        return LossOutput(loss, metrics)
