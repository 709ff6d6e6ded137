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
from pydantic import Field, model_validator
from torch import Tensor

from igat.attacks.base import ATTACKS, Attack, AttackParams, AttackResult, Model
from igat.attacks.pgd import early_exit_stats, pgd_early_exit
from igat.config import EPS_8_255, STEP_2_255


class CWParams(AttackParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="L-inf radius in [0,1] pixel units")
    step_size: float = Field(STEP_2_255, gt=0.0, le=1.0, description="step size per iteration")
    steps: int = Field(30, ge=1, le=10000, description="number of PGD iterations on the margin loss")
    random_start: bool = Field(True, description="uniform start in the eps-ball")
    restarts: int = Field(1, ge=1, le=100, description="random starts; later ones attack only the still-robust "
                          "examples, the worst case counts")
    num_examples: int | None = Field(
        1000, ge=1, description="evaluate on at most this many equidistant examples of the evaluation set (None = all)"
    )

    @model_validator(mode="after")
    def _restarts_need_random_start(self) -> CWParams:
        if self.restarts > 1 and not self.random_start:
            raise ValueError("restarts > 1 needs random_start (every restart would repeat the same trajectory)")
        return self


@ATTACKS.register("cw")
class CWAttack(Attack):
    """CW-Linf = PGD on the CW margin loss (default 30 steps of 2/255, eps 8/255, 1,000 examples).

    Early exit per example, as the ``pgd`` attack (:func:`igat.attacks.pgd.pgd_early_exit`), with its statistics.
    """

    name = "cw"
    Params = CWParams

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        p = self.params
        res = pgd_early_exit(model, x, y, p.eps, p.step_size, p.steps, p.random_start, loss="cw", generator=generator,
                             restarts=p.restarts)
        return AttackResult(res.x_adv, early_exit_stats(res))
