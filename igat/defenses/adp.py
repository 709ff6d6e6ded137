"""ADP: Adaptive Diversity Promoting (Pang et al., ICML 2019), spec §2.1.

L_ADP = sum_m CE(h^m(x), y) - alpha * H(mean_m h^m(x)) - beta * log det(G(x) + 1e-6 I),
with G the Gram matrix of the members' L2-normalised non-true-class predictions. Members that
put their wrong-class mass on different classes have near-orthogonal rows, so log det grows.

``plus_adv`` adds PGD adversarial training against the averaged ensemble (Table 1's ADP is
adversarially trained; iGAT's arguments default to PGD-20). ``adv_objective`` picks what is
minimised on the adversarial batch: ``ce`` = sum_m CE(h^m(x_adv), y) (DVERGE-repo port, used by
the iGAT code), ``adp`` = the full L_ADP(x_adv) (the original TF advtrain script).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from igat.defenses._gradients import ensemble_pgd, require_members
from igat.defenses.base import DEFENSES, Defense, LossOutput, accuracy, member_ce
from igat.specs.defenses import ADPParams, ADPSpec

ENTROPY_LOG_OFFSET = 1e-20
DET_OFFSET = 1e-6


def ensemble_entropy(probs: Tensor) -> Tensor:
    """Shannon entropy of the averaged prediction, per example: probs [N, B, C] -> [B]."""
    mean = probs.mean(dim=0)
    return -(mean * torch.log(mean + ENTROPY_LOG_OFFSET)).sum(dim=-1)


def non_true_predictions(probs: Tensor, y: Tensor) -> Tensor:
    """Each member's prediction with the true-class entry removed, L2-normalised: [N, B, C-1]."""
    n, b, c = probs.shape
    keep = ~F.one_hot(y, c).bool()
    rest = probs.masked_select(keep.expand(n, b, c)).view(n, b, c - 1)
    return F.normalize(rest, dim=-1, eps=1e-12)


def adp_log_det(probs: Tensor, y: Tensor, det_offset: float = DET_OFFSET) -> Tensor:
    """log det(G + det_offset I) per example, G_mk = <h^m_{-y}, h^k_{-y}> (normalised): [B].

    With more members than wrong classes (N > C-1) G is singular and the term is dominated by
    the offset; the reference setting (8 members, 10 classes) stays below that.
    """
    nt = non_true_predictions(probs, y)
    gram = torch.einsum("nbc,mbc->bnm", nt, nt)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return torch.linalg.slogdet(gram + det_offset * eye).logabsdet


def adp_loss(logits: Tensor, y: Tensor, alpha: float, beta: float) -> tuple[Tensor, dict[str, Tensor]]:
    """L_ADP on member logits [N, B, C]; returns (loss, {"ce", "entropy", "log_det"}) with batch means."""
    probs = logits.softmax(dim=-1)
    ce = member_ce(logits, y)
    entropy = ensemble_entropy(probs).mean()
    log_det = adp_log_det(probs, y).mean()
    return ce - alpha * entropy - beta * log_det, {"ce": ce, "entropy": entropy, "log_det": log_det}


@DEFENSES.register("adp")
class ADP(ADPSpec, Defense):
    def __init__(self, params, config) -> None:
        super().__init__(params, config)
        require_members(config, 2, self.name)

    def loss(self, ctx, x: Tensor, y: Tensor) -> LossOutput:
        p: ADPParams = self.params
        logits = ctx.ensemble(x)
        loss, parts = adp_loss(logits, y, p.alpha, p.log_det_lamda)
        metrics = {k: float(v.detach()) for k, v in parts.items()}
        metrics["member_acc"] = accuracy(logits, y)
        if p.plus_adv:
            x_adv = ensemble_pgd(ctx, x, y, p)
            adv_logits = ctx.ensemble(x_adv)
            if p.adv_objective == "adp":
                adv_loss, adv_parts = adp_loss(adv_logits, y, p.alpha, p.log_det_lamda)
                metrics.update({f"adv_{k}": float(v.detach()) for k, v in adv_parts.items()})
            else:
                adv_loss = member_ce(adv_logits, y)
                metrics["adv_ce"] = float(adv_loss.detach())
            loss = loss + adv_loss
            metrics["member_adv_acc"] = accuracy(adv_logits, y)
        return LossOutput(loss, metrics)
