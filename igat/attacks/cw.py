"""CW-Linf: PGD on the Carlini-Wagner margin loss (the common "CW-inf" evaluation).

This is the RobustBench/TRADES-style CW-inf: L-inf PGD in [0, 1] pixel space that ascends the
margin ``max_{k != y} z_k - z_y`` of the model's logits (for an ensemble: of the combiner's
log-output, spec §3.1). The paper's reference code instead ran Carlini & Wagner's optimisation
attack (tau-threshold, Adam in tanh space, binary search over c; spec §3.3); that variant is
not this attack: it is registered as ``cw_opt`` (:mod:`igat.attacks.cw_opt`).

As in the paper (Section 6.1, following Carmon et al.), CW is evaluated on 1,000 equidistant
test examples by default: ``num_examples`` caps the evaluation set (``None`` = all of it);
:func:`igat.evaluation.evaluate_ensemble` applies the cap.
"""

from __future__ import annotations

import torch
from torch import Tensor

from igat.attacks.base import ATTACKS, Attack, AttackResult, Model
from igat.attacks.pgd import early_exit_stats, pgd_early_exit
from igat.specs.attacks import CWSpec


@ATTACKS.register("cw")
class CWAttack(CWSpec, Attack):
    """CW-Linf = PGD on the CW margin loss (default 30 steps of 2/255, eps 8/255, 1,000 examples).

    Early exit per example, as the ``pgd`` attack (:func:`igat.attacks.pgd.pgd_early_exit`), with its statistics.
    """

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        p = self.params
        res = pgd_early_exit(model, x, y, p.eps, p.step_size, p.steps, p.random_start, loss="cw", generator=generator,
                             restarts=p.restarts)
        return AttackResult(res.x_adv, early_exit_stats(res))
