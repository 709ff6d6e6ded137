"""Which results an evaluation will produce and the keys they are stored under, without PyTorch.

:func:`plan_rows` is shared by the evaluation itself (:mod:`igat.evaluation`), the worker's progress bar and the
launch form's cost estimate (:mod:`igat.protocols`); it needs only the attacks' parameter models
(:mod:`igat.specs.attacks`), so the dashboard can plan a run without loading PyTorch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from igat.config import AttackSpec
from igat.specs.attacks import ATTACK_SPECS

# The files an evaluation writes next to its checkpoint (`igat report` finds them without loading PyTorch).
EVAL_CSV = "eval.csv"
EVAL_JSON = "eval.json"


@dataclass(frozen=True)
class PlannedRow:
    """One result an evaluation will produce (or reuse): what it runs and the key it is stored under."""

    target: str
    combiner: str
    spec: AttackSpec
    num_examples: int
    members: int  # members the target runs (the ensemble's for a combiner, 1 for a member): for the cost model
    eval_key: str

    @property
    def attack(self) -> str:
        return self.spec.name


def attack_params(spec: AttackSpec) -> BaseModel:
    """The attack's validated parameters, defaults filled in (raises for an unknown attack or a bad value)."""
    return ATTACK_SPECS.get(spec.name).Params(**spec.params)


def attack_cap(params: BaseModel, spec: AttackSpec | None = None) -> int | None:
    """The smaller of the attack's own ``num_examples`` (CW) and the spec's (the protocol's); None = no cap."""
    caps = [c for c in (getattr(params, "num_examples", None), spec.num_examples if spec else None)
            if c is not None]
    return min(caps) if caps else None


def row_key(settings: str, target: str, combiner: str, params: BaseModel, spec: AttackSpec, num_examples: int) -> str:
    """The hash a result is stored under: the settings it was computed with and everything of the row itself.

    The attack's parameters enter with their defaults filled in, so a changed default is a changed key.
    """
    record = {"settings": settings, "target": target, "combiner": combiner, "attack": spec.name,
              "params": params.model_dump(mode="json"), "num_examples": int(num_examples)}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:24]


def plan_rows(specs: Sequence[AttackSpec], combiners: Sequence[str], num_members: int, num_eval: int,
              per_member: bool = True, member_attacks: Sequence[str] | None = None,
              settings: str = "") -> list[PlannedRow]:
    """The rows ``evaluate_ensemble`` produces, in its order, for an evaluation set of ``num_eval`` examples.

    Every attack's parameters are validated here, so invalid ones fail before any work is done."""
    checked = [(s, attack_params(s)) for s in specs]
    targets: list[tuple[str, str, int, list[tuple[AttackSpec, BaseModel]]]] = [
        ("ensemble", c, num_members, checked) for c in combiners]
    if per_member:
        m_checked = checked if member_attacks is None else [c for c in checked if c[0].name in set(member_attacks)]
        targets += [(f"member_{i}", "-", 1, m_checked) for i in range(num_members)]
    rows = []
    for target, combiner, members, pairs in targets:
        for spec, params in pairs:
            cap = attack_cap(params, spec)
            n = num_eval if cap is None else min(cap, num_eval)
            rows.append(PlannedRow(target, combiner, spec, n, members,
                                   row_key(settings, target, combiner, params, spec, n)))
    return rows
