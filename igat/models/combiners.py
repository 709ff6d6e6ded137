"""Combiners turn the members' outputs into one ensemble prediction (spec §1.1, §3.1).

A combiner maps an :class:`EnsembleOutput` to *combined probabilities* of shape [B, C]:
``average`` is the mean of member softmaxes, ``max`` the element-wise max over members (not
renormalised, as in the paper). Attacks consume ``log(clamp(p, 1e-40))`` as their "logits",
exactly like the reference ``Ensemble`` wrapper. Defenses may register extra combiners
(SoE registers ``soe``: the prediction of the expert with the highest confidence score).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from igat.registry import Registry

LOG_CLAMP = 1e-40


@dataclass
class EnsembleOutput:
    logits: Tensor  # [N, B, C]
    aux: Tensor | None = None  # [N, B] per-member confidence logits (SoE), if members have them

    @property
    def probs(self) -> Tensor:
        return self.logits.softmax(dim=-1)


CombinerFn = Callable[[EnsembleOutput], Tensor]
COMBINERS: Registry[CombinerFn] = Registry("combiner")


@COMBINERS.register("average")
def average_combiner(out: EnsembleOutput) -> Tensor:
    return out.probs.mean(dim=0)


@COMBINERS.register("max")
def max_combiner(out: EnsembleOutput) -> Tensor:
    return out.probs.amax(dim=0)


def combine(out: EnsembleOutput, combiner: str) -> Tensor:
    return COMBINERS.get(combiner)(out)


def log_output(probs: Tensor) -> Tensor:
    """The log-output that attacks treat as logits (spec §3.1)."""
    return torch.log(probs.clamp_min(LOG_CLAMP))
