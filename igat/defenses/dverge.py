"""DVERGE: diversifying vulnerabilities by feature distillation (Yang et al., NeurIPS 2020), spec §2.4.

Per step, with the pre-update weights, every member m distils the source batch x_s towards an
independently drawn target x_t: d_m in B_eps(x_s) with m's layer-l features of d_m close to
those of x_t (``distill``). Then the members are updated one after another; member i minimises
sum_{j != i} CE(z^i(d_j), y_s) — it learns to classify the other members' "non-robust feature"
images with the source label — [+ CE(z^i(PGD_i(x_s)), y_s) with plus_adv].
The layer l is drawn uniformly from 1..depth of the member (1..20 for ResNet-20) once per epoch (or fixed)
and checkpointed.

Targets are a random permutation of the same mini-batch (the reference draws them from a second
shuffled loader); the permutation comes from the checkpointed attack generator. Member i sees the
N-1 distilled sets in one concatenated forward (the reference runs one forward per set, so its
train-mode BatchNorm statistics are per set rather than pooled).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from igat.attacks.base import project
from igat.defenses._gradients import require_members
from igat.defenses.base import DEFENSES, Defense, LossOutput, MemberStat, per_member_attack
from igat.specs.architecture import check_layer
from igat.specs.defenses import DVERGEParams, DVERGESpec

FeatureFn = Callable[[Tensor], Tensor]  # per-member inputs [N, B, ...] -> per-member features [N, B, ...]


def feature_mse(features: Tensor, target: Tensor) -> Tensor:
    """Per-member, per-example mean squared feature distance: [N, B, ...] -> [N, B]."""
    return (features - target).pow(2).flatten(2).mean(dim=-1)


def distill(feature_fn: FeatureFn, x_source: Tensor, target_features: Tensor, eps: float, step_size: float,
            steps: int, momentum: float = 1.0) -> Tensor:
    """Feature distillation for all members at once: returns d [N, B, ...] in B_eps(x_source) ∩ [0,1].

    ``x_source`` is [N, B, ...]; ``target_features`` [N, B, ...] are each member's features of its
    target. Sign steps that descend the feature MSE with momentum over L1-normalised gradients,
    no random start (reference ``Linf_distillation``). Member m's loss only sees copy m, so one
    backward over the summed loss gives every member's own gradient.
    """
    x_source = x_source.detach()
    target_features = target_features.detach()
    x = x_source.clone()
    velocity = torch.zeros_like(x)
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            loss = feature_mse(feature_fn(x), target_features).sum()
            (grad,) = torch.autograd.grad(loss, x)
        l1 = grad.abs().flatten(2).sum(-1).clamp_min(1e-12).view(*grad.shape[:2], *([1] * (grad.dim() - 2)))
        velocity = momentum * velocity + grad / l1
        x = project(x.detach() - step_size * velocity.sign(), x_source, eps)
    return x.detach()


def member_features(ensemble, layer: int) -> FeatureFn:
    """Layer-l pre-activation features of member m on its own input copy."""

    def fn(xs: Tensor) -> Tensor:
        return torch.stack([m.layer_features(xs[i], layer) for i, m in enumerate(ensemble.active_members)])

    return fn


def others_ce(logits: Tensor, y: Tensor, num_sets: int) -> Tensor:
    """Sum over the ``num_sets`` stacked distilled sets of each set's batch-mean CE (logits [(S*B), C])."""
    return F.cross_entropy(logits, y.repeat(num_sets), reduction="sum") / len(y)


@DEFENSES.register("dverge")
class DVERGE(DVERGESpec, Defense):
    def __init__(self, params, config) -> None:
        super().__init__(params, config)
        require_members(config, 2, self.name)
        self.num_layers = check_layer(params.layer, config.model.depth)
        self.layer: int = params.layer or self.num_layers
        self._member_loss: list[float] = []
        self._member_count = 0

    def on_epoch_start(self, ctx) -> None:
        p: DVERGEParams = self.params
        if p.layer is None:
            gen = ctx.generator
            self.layer = int(torch.randint(1, self.num_layers + 1, (1,), generator=gen, device=gen.device).item())
        else:
            self.layer = p.layer
        self._member_loss = [0.0] * ctx.ensemble.num_members
        self._member_count = 0

    def distilled(self, ctx, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Every member's distilled copy of x ([N, B, ...]) and the relative feature gap it reached."""
        p: DVERGEParams = self.params
        ens = ctx.ensemble
        n, b = ens.num_members, len(x)
        gen = ctx.generator
        perm = torch.randperm(b, generator=gen, device=gen.device).to(x.device)
        fn = member_features(ens, self.layer)
        xs = x.detach().unsqueeze(0).expand(n, *x.shape).contiguous()
        with ens.frozen(eval_mode=p.bn_mode == "eval"), torch.no_grad():
            target = fn(x[perm].unsqueeze(0).expand(n, *x.shape).contiguous())
            before = feature_mse(fn(xs), target).mean()
        with ens.frozen(eval_mode=p.bn_mode == "eval"):
            d = distill(fn, xs, target, p.distill_eps, p.distill_alpha, p.distill_steps, p.distill_momentum)
            with torch.no_grad():
                after = feature_mse(fn(d), target).mean()
        return d, {"feature_gap": float(after / before.clamp_min(1e-12))}

    def loss(self, ctx, x: Tensor, y: Tensor) -> LossOutput:
        """The summed per-member objective (members are independent given the distilled data).

        Used for monitoring and by wrappers; ``train_step`` applies it member by member.
        """
        d, metrics = self.distilled(ctx, x)
        adv = self._adversarial(ctx, x, y)
        total = sum(self._member_objective(ctx, i, d, adv, y)[0] for i in range(ctx.ensemble.num_members))
        return LossOutput(total, metrics)

    def _adversarial(self, ctx, x: Tensor, y: Tensor) -> Tensor | None:
        p: DVERGEParams = self.params
        if not p.plus_adv:
            return None
        return per_member_attack(ctx.ensemble, x, y, p.adv_eps, p.adv_step_size, p.adv_steps, p.adv_random_start,
                                 ctx.generator, eval_mode=p.bn_mode == "eval")

    def _member_objective(self, ctx, i: int, d: Tensor, adv: Tensor | None, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p: DVERGEParams = self.params
        n = d.shape[0]
        member = ctx.ensemble.members[i]
        others = torch.cat([d[j] for j in range(n) if j != i])
        distill_ce = others_ce(member(others), y, n - 1)
        parts = {"distill_ce": distill_ce}
        if adv is None:
            return distill_ce, parts
        adv_ce = F.cross_entropy(member(adv[i]), y)
        parts["adv_ce"] = adv_ce
        return p.coeff * distill_ce + adv_ce, parts

    def train_step(self, ctx, x: Tensor, y: Tensor) -> dict[str, float]:
        ens = ctx.ensemble
        n = ens.num_members
        # All distilled / adversarial data come from the pre-update weights; member i's own weights
        # do not change before its turn, so batching the per-member PGD gives the reference result.
        d, metrics = self.distilled(ctx, x)
        adv = self._adversarial(ctx, x, y)
        sums: dict[str, float] = {}
        total = 0.0
        if len(self._member_loss) != n:
            self._member_loss = [0.0] * n
        for i in range(n):
            loss, parts = self._member_objective(ctx, i, d, adv, y)
            ctx.optimize(loss, member=i, what=f"member {i} loss")
            total += float(loss.detach())
            self._member_loss[i] += float(loss.detach())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / n
        self._member_count += 1
        return {"loss": total, **sums, **metrics, "layer": float(self.layer)}

    def epoch_member_stats(self) -> list[MemberStat]:
        if not self._member_count:
            return []
        return [MemberStat(i, "dverge_loss", v / self._member_count) for i, v in enumerate(self._member_loss)]

    def state_dict(self) -> dict[str, Any]:
        return {"layer": self.layer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "layer" in state:
            self.layer = int(state["layer"])
