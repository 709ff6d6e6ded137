"""iGAT: interactive global adversarial training (paper §5, eq. 12-16), wrapping any defense.

Per mini-batch:

1. **Global adversarial examples** (eq. 12): PGD against the *combined* ensemble (``igat.combiner``,
   average or max; loss = CE on the combiner's log-output) on the last ``igat.attack_fraction`` of the
   batch, with ``ctx.generator`` for the random start and ``Ensemble.frozen`` so no parameter gradient is
   built. ``igat.bn_mode = "train"`` reproduces the reference code, whose members stay in train mode
   during the attack (BatchNorm batch statistics, running statistics updated).
2. **Base defense.** Pure-loss defenses (``not base.has_custom_step``): the base loss L_E on the natural
   examples (the whole batch, or its un-attacked first part when ``attack_fraction < 1``, as the
   reference splits 512 into 256 + 256) is added to the iGAT terms and one optimiser step is taken (eq. 16). Defenses with their own
   update order (DVERGE): the base step runs first, then a separate joint step on the iGAT terms, as the
   reference iGAT-DVERGE trainer does (spec §1.2.3(c)); the global examples were crafted before the base
   step, the ranking and mask use the post-step members, exactly like the reference.
3. **Distribution** (eq. 13/14 and the Table 3 ablations, see :mod:`igat.defenses.igat_rules`): members
   are ranked by their true-class probability and each example is given to one member
   (``igat.rule``); ``igat.distribute = "misclassified"`` only distributes examples the combined
   ensemble misclassifies (reference code), ``"all"`` distributes every global example (paper).
4. **L_R** (eq. 15): on examples the combined ensemble (``igat.mask_combiner`` or ``igat.combiner``)
   misclassifies, -log(1 - max member wrong-class probability); ``igat.reg`` selects the paper form or
   the reference code's ``code_sum`` / ``code_max2``.

Objective: L_E + alpha * distributed CE + beta * mean L_R over ``igat.reg_domain`` (X and X~ in the paper).

Statistics (``epoch_member_stats``, reset at each epoch start): per member ``alloc_count``,
``alloc_class_<c>``, ``nat_acc``, ``adv_acc``, ``dist_ce`` (mean CE over its examples; absent when it got
none); ensemble level (member = -1) ``rank_hist_<r>`` (fraction of distributed examples that went to the
member ranked r, 1 = most confident), ``ens_misclassified`` (fraction of global adversarial examples the
train-mode combined ensemble misclassifies), ``dist_fraction`` (fraction of offered examples that were
distributed), ``dist_ce`` and ``lr_reg`` (step means of the two terms before alpha/beta).
Member accuracies come from the training forward (train-mode BatchNorm); when natural examples are not
part of that forward (``dist_domain`` and ``reg_domain`` both "adversarial") ``nat_acc`` is measured with
an extra no-grad eval-mode forward, so it never disturbs the BatchNorm running statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from igat.attacks.pgd import pgd
from igat.defenses.base import Defense, LossOutput, MemberStat
from igat.defenses.igat_rules import assign_members, distributed_ce, lr_regularizer
from igat.models.combiners import EnsembleOutput, combine

if TYPE_CHECKING:
    from igat.config import ExperimentConfig
    from igat.training.context import StepContext


@dataclass
class IGATTerms:
    """The two iGAT terms of one step (already weighted by alpha/beta in ``loss``)."""

    loss: Tensor
    dist_ce: Tensor
    lr_reg: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class _EpochStats:
    """Per-epoch accumulators for the distribution statistics (CPU tensors, summed over steps)."""

    def __init__(self) -> None:
        self.steps = 0
        self.num_members = 0
        self.num_classes = 0

    def _ensure(self, n: int, c: int) -> None:
        if self.steps and (n, c) == (self.num_members, self.num_classes):
            return
        self.num_members, self.num_classes = n, c
        self.alloc_class = torch.zeros(n, c, dtype=torch.int64)
        self.rank_counts = torch.zeros(n, dtype=torch.int64)
        self.ce_sums = torch.zeros(n, dtype=torch.float64)
        self.nat_correct = torch.zeros(n, dtype=torch.int64)
        self.adv_correct = torch.zeros(n, dtype=torch.int64)
        self.nat_total = 0
        self.adv_total = 0
        self.ens_mis = 0
        self.offered = 0
        self.distributed = 0
        self.dist_ce_sum = 0.0
        self.lr_reg_sum = 0.0

    def update(self, *, logits_nat: Tensor, y_nat: Tensor, logits_adv: Tensor, y_adv: Tensor, adv_mis: Tensor,
               member: Tensor, ranks: Tensor, selected: Tensor, y_dist: Tensor, ce_sums: Tensor,
               dist_ce: float, lr_reg: float) -> None:
        n, _, c = logits_adv.shape
        self._ensure(n, c)
        self.steps += 1
        who = member[selected].cpu()
        cls = y_dist[selected].cpu()
        self.alloc_class.index_put_((who, cls), torch.ones_like(who), accumulate=True)
        rank_of_receiver = ranks[:, selected].gather(0, member[selected].unsqueeze(0)).squeeze(0).cpu()
        self.rank_counts += torch.bincount(rank_of_receiver - 1, minlength=n)
        self.ce_sums += ce_sums.cpu().to(torch.float64)
        self.nat_correct += (logits_nat.argmax(-1) == y_nat).sum(dim=1).cpu()
        self.adv_correct += (logits_adv.argmax(-1) == y_adv).sum(dim=1).cpu()
        self.nat_total += int(y_nat.numel())
        self.adv_total += int(y_adv.numel())
        self.ens_mis += int(adv_mis.sum())
        self.offered += int(selected.numel())
        self.distributed += int(who.numel())
        self.dist_ce_sum += dist_ce
        self.lr_reg_sum += lr_reg

    def rows(self) -> list[MemberStat]:
        if not self.steps:
            return []
        rows: list[MemberStat] = []
        counts = self.alloc_class.sum(dim=1)
        for i in range(self.num_members):
            rows.append(MemberStat(i, "alloc_count", float(counts[i])))
            rows.extend(MemberStat(i, f"alloc_class_{c}", float(self.alloc_class[i, c])) for c in range(self.num_classes))
            rows.append(MemberStat(i, "nat_acc", float(self.nat_correct[i]) / max(self.nat_total, 1)))
            rows.append(MemberStat(i, "adv_acc", float(self.adv_correct[i]) / max(self.adv_total, 1)))
            if counts[i] > 0:
                rows.append(MemberStat(i, "dist_ce", float(self.ce_sums[i]) / float(counts[i])))
        total = max(int(self.rank_counts.sum()), 1)
        rows.extend(MemberStat(-1, f"rank_hist_{r + 1}", float(self.rank_counts[r]) / total) for r in range(self.num_members))
        rows.append(MemberStat(-1, "ens_misclassified", self.ens_mis / max(self.adv_total, 1)))
        rows.append(MemberStat(-1, "dist_fraction", self.distributed / max(self.offered, 1)))
        rows.append(MemberStat(-1, "dist_ce", self.dist_ce_sum / self.steps))
        rows.append(MemberStat(-1, "lr_reg", self.lr_reg_sum / self.steps))
        return rows


def split_batch(x: Tensor, y: Tensor, fraction: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_nat, y_nat, x_att, y_att): the last ``round(fraction * B)`` (>= 1) examples are attacked.

    The natural set is the rest of the batch, or the whole batch when everything is attacked
    (the paper's X and X~ are the same images before and after the attack). The reference code's
    512-batch with 256 attacked corresponds to fraction 0.5.
    """
    b = x.shape[0]
    k = min(b, max(1, round(fraction * b)))
    if k == b:
        return x, y, x, y
    return x[: b - k], y[: b - k], x[b - k :], y[b - k :]


class IGAT(Defense):
    """iGAT enhancement of ``base_defense`` (any registered defense)."""

    name = "igat"
    description = "iGAT: distributed global adversarial examples + L_R regulariser on top of a base defense."

    def __init__(self, base_defense: Defense, config: ExperimentConfig) -> None:
        if isinstance(base_defense, IGAT):
            raise ValueError("iGAT cannot wrap an iGAT defense twice")
        super().__init__(base_defense.params, config)
        self.base = base_defense
        self.icfg = config.igat
        self._stats = _EpochStats()

    @property
    def base_name(self) -> str:
        return self.base.name

    # --- forwarded hooks -------------------------------------------------------------
    def member_kwargs(self) -> dict[str, Any]:
        return self.base.member_kwargs()

    def extra_modules(self, num_classes: int) -> dict[str, nn.Module]:
        return self.base.extra_modules(num_classes)

    def on_epoch_start(self, ctx: StepContext) -> None:
        self._stats = _EpochStats()
        self.base.on_epoch_start(ctx)

    def state_dict(self) -> dict[str, Any]:
        # The statistics are per-epoch and checkpoints are written at epoch ends, so only the base's state matters.
        return {"base": self.base.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state.get("base", {}))

    def epoch_member_stats(self) -> list[MemberStat]:
        return self.base.epoch_member_stats() + self._stats.rows()

    # --- eq. 12 ----------------------------------------------------------------------
    def global_examples(self, ctx: StepContext, x: Tensor, y: Tensor) -> Tensor:
        a = self.icfg.attack
        model = ctx.ensemble.as_model(self.icfg.combiner)
        with ctx.ensemble.frozen(eval_mode=self.icfg.bn_mode == "eval"):
            return pgd(model, x, y, a.eps, a.step_size, a.steps, a.random_start, generator=ctx.generator)

    # --- eq. 13-16 -------------------------------------------------------------------
    def igat_terms(self, ctx: StepContext, x_nat: Tensor, y_nat: Tensor, x_adv: Tensor, y_adv: Tensor) -> IGATTerms:
        """alpha * distributed CE + beta * L_R on the current members, plus statistics."""
        cfg = self.icfg
        need_nat = "natural" in cfg.dist_domain or "natural" in cfg.reg_domain
        inputs = torch.cat([x_nat, x_adv]) if need_nat else x_adv
        yy = torch.cat([y_nat, y_adv]) if need_nat else y_adv
        n_nat = x_nat.shape[0] if need_nat else 0
        is_adv = torch.zeros(yy.shape[0], dtype=torch.bool, device=yy.device)
        is_adv[n_nat:] = True

        logits = ctx.ensemble(inputs)  # [N, M, C], members in train mode, one forward for every term
        detached = logits.detach()
        combined = combine(EnsembleOutput(detached), cfg.mask_combiner or cfg.combiner)
        mis = combined.argmax(dim=-1) != yy  # delta_0/1

        dist_dom = torch.ones_like(is_adv) if cfg.dist_domain == "natural+adversarial" else is_adv
        reg_dom = torch.ones_like(is_adv) if cfg.reg_domain == "natural+adversarial" else is_adv

        d_logits, d_y = logits[:, dist_dom], yy[dist_dom]
        true_p = detached[:, dist_dom].softmax(-1).gather(-1, d_y.view(1, -1, 1).expand(d_logits.shape[0], -1, 1)).squeeze(-1)
        member, ranks = assign_members(cfg.rule, true_p, ctx.generator)
        selected = mis[dist_dom] if cfg.distribute == "misclassified" else torch.ones_like(d_y, dtype=torch.bool)
        dist, ce_sums, _ = distributed_ce(d_logits, d_y, member, selected, cfg.normalisation)

        reg_values = lr_regularizer(logits[:, reg_dom], yy[reg_dom], mis[reg_dom], cfg.reg, cfg.reg_clip, cfg.reg_true_class)
        reg = reg_values.sum() / max(int(reg_dom.sum()), 1)

        loss = cfg.alpha * dist + cfg.beta * reg

        if need_nat:
            logits_nat = detached[:, :n_nat]
        else:
            with torch.no_grad(), ctx.ensemble.frozen(eval_mode=True):
                logits_nat = ctx.ensemble(x_nat)
        adv_mis = mis[is_adv]
        self._stats.update(
            logits_nat=logits_nat, y_nat=y_nat, logits_adv=detached[:, is_adv], y_adv=y_adv, adv_mis=adv_mis,
            member=member, ranks=ranks, selected=selected, y_dist=d_y, ce_sums=ce_sums,
            dist_ce=float(dist.detach()), lr_reg=float(reg.detach()),
        )
        metrics = {
            "igat_dist_ce": float(dist.detach()),
            "igat_lr_reg": float(reg.detach()),
            "igat_ens_mis": float(adv_mis.float().mean()),
            "igat_dist_frac": float(selected.float().mean()) if selected.numel() else 0.0,
            "igat_adv_acc": float((detached[:, is_adv].argmax(-1) == y_adv).float().mean()),
            "igat_loss": float(loss.detach()),
        }
        return IGATTerms(loss, dist, reg, metrics)

    def _prepare(self, ctx: StepContext, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x_nat, y_nat, x_att, y_att = split_batch(x, y, self.icfg.attack_fraction)
        return x_nat, y_nat, self.global_examples(ctx, x_att, y_att), y_att

    def loss(self, ctx: StepContext, x: Tensor, y: Tensor) -> LossOutput:
        """Eq. 16 for a pure-loss base: L_E(natural) + alpha * distributed CE + beta * L_R."""
        if self.base.has_custom_step:
            raise TypeError(f"defense {self.base.name!r} has its own train_step; iGAT runs it via train_step, not loss")
        x_nat, y_nat, x_adv, y_adv = self._prepare(ctx, x, y)
        base = self.base.loss(ctx, x_nat, y_nat)
        terms = self.igat_terms(ctx, x_nat, y_nat, x_adv, y_adv)
        return LossOutput(base.loss + terms.loss, {"base_loss": float(base.loss.detach()), **base.metrics, **terms.metrics})

    def train_step(self, ctx: StepContext, x: Tensor, y: Tensor) -> dict[str, float]:
        if not self.base.has_custom_step:
            out = self.loss(ctx, x, y)
            ctx.optimize(out.loss)
            return {"loss": float(out.loss.detach()), **out.metrics}
        # Custom-step base (DVERGE): global examples from the pre-update members, base step, then a joint iGAT step.
        x_nat, y_nat, x_adv, y_adv = self._prepare(ctx, x, y)
        metrics = dict(self.base.train_step(ctx, x_nat, y_nat))
        terms = self.igat_terms(ctx, x_nat, y_nat, x_adv, y_adv)
        if (self.icfg.alpha > 0 or self.icfg.beta > 0) and terms.loss.requires_grad:
            ctx.optimize(terms.loss, what="iGAT loss")
        metrics.update(terms.metrics)
        return metrics
