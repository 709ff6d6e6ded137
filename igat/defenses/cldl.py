"""CLDL: Contrastive Label Distribution Learning ensemble (Wang & Liu, ICIC 2023; repo "LSD"), spec §2.5.

Members have a 64-d hidden layer before the classifier (``hidden_dim=64``). A label-confusion
model (LCM), shared by all members and trained jointly, turns member m's pre-activation hidden
vector v^m(x) into a label-confusion vector q^m(x) over the classes; the member's soft target is
the simulated label distribution SLD^m = softmax(q^m + gamma * onehot(y)). Loss:

  (1/N) sum_m KL(SLD^m || h^m)(x) [+ same on x_adv] - alpha * diversity + beta * coherence,

diversity = log(mean over pairs of exp(JSD of the non-true-class parts of q^i, q^j)),
coherence = (1/N) sum_{i<j} batch-mean |cos(grad_x KL_i, grad_x KL_j)|.

The hidden vector comes from the same forward as the logits (the reference recomputes the
trunk for it: one extra forward pass, same values).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igat.defenses._gradients import (
    ensemble_pgd,
    input_gradients,
    member_inputs,
    pair_indices,
    pairwise_cosine,
    require_members,
)
from igat.defenses.base import DEFENSES, Defense, LossOutput, accuracy
from igat.specs.defenses import CLDLParams, CLDLSpec

HIDDEN_DIM = 64
KL_LOG_OFFSET = 1e-6
JSD_OFFSET = 1e-30


class LabelConfusionModel(nn.Module):
    """q(v) = softmax(W2 s + b2), s_c = <tanh(W1 E_c + b1), v>: class-similarity scores of a hidden vector."""

    def __init__(self, num_classes: int, dim: int = HIDDEN_DIM) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_classes, dim)
        self.proj = nn.Linear(dim, dim)
        self.out = nn.Linear(num_classes, num_classes)

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden [..., dim] -> label-confusion distribution [..., C]."""
        classes = torch.tanh(self.proj(self.embedding.weight))  # [C, dim]
        return self.out(hidden @ classes.T).softmax(dim=-1)


def simulated_label_distribution(q: Tensor, y: Tensor, gamma: float) -> Tensor:
    """SLD = softmax(q + gamma * onehot(y)); q [..., B, C], y [B]."""
    return (q + gamma * F.one_hot(y, q.shape[-1]).to(q.dtype)).softmax(dim=-1)


def sld_kl(sld: Tensor, probs: Tensor) -> Tensor:
    """KL(SLD || h) per member, batch mean: [N, B, C] -> [N] (log offset 1e-6 on h as in the reference)."""
    kl = (sld * torch.log(sld)).sum(-1) - (sld * torch.log(probs + KL_LOG_OFFSET)).sum(-1)
    return kl.mean(dim=-1)


def non_true_part(q: Tensor, y: Tensor) -> Tensor:
    """q [N, B, C] without the true-class entry (not renormalised): [N, B, C-1]."""
    n, b, c = q.shape
    keep = ~F.one_hot(y, c).bool()
    return q.masked_select(keep.expand(n, b, c)).view(n, b, c - 1)


def pair_jsd(p: Tensor, q: Tensor) -> Tensor:
    """[KL(P||M) + KL(Q||M)] / (2 ln 2), each KL averaged over all elements (KLDivLoss 'mean')."""
    p, q = p + JSD_OFFSET, q + JSD_OFFSET
    m = (p + q) / 2
    kl_pm = (p * (p.log() - m.log())).mean()
    kl_qm = (q * (q.log() - m.log())).mean()
    return (kl_pm + kl_qm) / (2 * math.log(2))


def cldl_diversity(q: Tensor, y: Tensor) -> Tensor:
    """log(mean over member pairs of exp(JSD_ij) + 1e-6) on the non-true-class parts of q [N, B, C]."""
    rest = non_true_part(q, y)
    i, j = pair_indices(q.shape[0], q.device)
    jsd = torch.stack([pair_jsd(rest[a], rest[b]) for a, b in zip(i.tolist(), j.tolist(), strict=True)])
    return torch.log(torch.exp(jsd).mean() + 1e-6)


def cldl_coherence(grads: Tensor) -> Tensor:
    """(1/N) sum over pairs of the batch-mean |cos| of the members' KL input gradients [N, B, D]."""
    return pairwise_cosine(grads).abs().mean(dim=1).sum() / grads.shape[0]


def member_outputs(ensemble, xs: Tensor) -> tuple[Tensor, Tensor]:
    """(logits [N, B, C], pre-activation hidden [N, B, 64]) of each member on its input copy."""
    outs = [m.forward_full(xs[i] if xs.dim() == 5 else xs) for i, m in enumerate(ensemble.members)]
    if any(o.hidden is None for o in outs):
        raise ValueError("CLDL members need a hidden layer (ResNet20(hidden_dim=64)); build them via the defense")
    return torch.stack([o.logits for o in outs]), torch.stack([o.hidden for o in outs])


@DEFENSES.register("cldl")
class CLDL(CLDLSpec, Defense):
    def __init__(self, params, config) -> None:
        super().__init__(params, config)
        require_members(config, 2, self.name)

    def member_kwargs(self) -> dict:
        return {"hidden_dim": HIDDEN_DIM}

    def extra_modules(self, num_classes: int) -> dict[str, nn.Module]:
        return {"lcm": LabelConfusionModel(num_classes, HIDDEN_DIM)}

    def _fit(self, lcm: nn.Module, logits: Tensor, hidden: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(per-member KL [N], confusion vectors q [N, B, C])."""
        q = lcm(hidden)
        sld = simulated_label_distribution(q, y, self.params.ld_coeff)
        return sld_kl(sld, logits.softmax(dim=-1)), q

    def loss(self, ctx, x: Tensor, y: Tensor) -> LossOutput:
        p: CLDLParams = self.params
        lcm = ctx.extra["lcm"]
        n = ctx.ensemble.num_members
        xs = member_inputs(x, n)
        logits, hidden = member_outputs(ctx.ensemble, xs)
        kl, q = self._fit(lcm, logits, hidden, y)
        # KL_m depends on copy m only (the LCM is shared but applied per member), so one backward
        # over the sum yields every member's own input gradient.
        grads = input_gradients(kl.sum(), xs)
        fit = kl.mean()
        diversity = cldl_diversity(q, y)
        coherence = cldl_coherence(grads)
        loss = fit - p.alpha * diversity + p.beta * coherence
        metrics = {"kl": float(fit.detach()), "diversity": float(diversity.detach()),
                   "coherence": float(coherence.detach()), "member_acc": accuracy(logits, y)}
        if p.plus_adv:
            x_adv = ensemble_pgd(ctx, x, y, p)
            adv_logits, adv_hidden = member_outputs(ctx.ensemble, x_adv)
            adv_kl = self._fit(lcm, adv_logits, adv_hidden, y)[0].mean()
            loss = loss + adv_kl
            metrics.update(adv_kl=float(adv_kl.detach()), member_adv_acc=accuracy(adv_logits, y))
        return LossOutput(loss, metrics)
