"""Robust-accuracy evaluation of an ensemble under each combiner, and of each member.

``evaluate_ensemble`` returns tidy rows, one per (target, combiner, attack): target is
"ensemble" or "member_i". Attacks run in eval mode with frozen parameters, batched, with a seed
(a fresh generator per attack, so adding an attack does not change another's result).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from igat.attacks import ATTACKS, build_attack
from igat.config import AttackSpec
from igat.models.ensemble import Ensemble


@dataclass
class EvalRow:
    target: str  # "ensemble" or "member_<i>"
    combiner: str  # combiner name; "-" for a single member
    attack: str
    accuracy: float  # in [0, 1]
    num_examples: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _member_model(ensemble: Ensemble, i: int):
    return ensemble.members[i]


@torch.no_grad()
def _correct(model, x: Tensor, y: Tensor) -> Tensor:
    return model(x).argmax(1) == y


def attack_accuracy(model, attack, x: Tensor, y: Tensor, batch_size: int, seed: int,
                    device: torch.device) -> tuple[float, dict[str, Any]]:
    """Accuracy of ``model`` on ``attack``'s examples, plus the attack's merged statistics."""
    gen = torch.Generator().manual_seed(seed)
    correct, stats_all = 0, {}
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        res = attack.perturb(model, xb, yb, gen)
        correct += int(_correct(model, res.x_adv, yb).sum())
        for k, v in res.stats.items():
            stats_all.setdefault(k, []).append(v)
    merged: dict[str, Any] = {}
    for k, vs in stats_all.items():
        if isinstance(vs[0], Tensor):
            merged[k] = torch.cat([v.flatten() for v in vs])
        else:
            merged[k] = vs
    return correct / max(len(x), 1), merged


def summarise_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """Reduce tensors of per-example statistics (e.g. queries) to mean and median."""
    out: dict[str, Any] = {}
    for k, v in stats.items():
        if isinstance(v, Tensor) and v.numel():
            v = v.float()
            out[f"{k}_mean"] = float(v.mean())
            out[f"{k}_median"] = float(v.median())
            out[f"{k}_max"] = float(v.max())
        elif not isinstance(v, Tensor):
            out[k] = v
    return out


def evaluate_ensemble(
    ensemble: Ensemble,
    x: Tensor,
    y: Tensor,
    combiners: Sequence[str] = ("average", "max"),
    attacks: Sequence[AttackSpec | dict] = (AttackSpec(name="natural"), AttackSpec(name="pgd")),
    batch_size: int = 256,
    per_member: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress=None,
) -> list[EvalRow]:
    device = torch.device(device)
    specs = [a if isinstance(a, AttackSpec) else AttackSpec(**a) for a in attacks]
    rows: list[EvalRow] = []
    targets: list[tuple[str, str, Any]] = [("ensemble", c, ensemble.as_model(c)) for c in combiners]
    if per_member:
        targets += [(f"member_{i}", "-", _member_model(ensemble, i)) for i in range(ensemble.num_members)]
    with ensemble.frozen(eval_mode=True):
        for target, combiner, model in targets:
            for spec in specs:
                attack = build_attack(spec.name, spec.params)
                acc, stats = attack_accuracy(model, attack, x, y, batch_size, seed, device)
                rows.append(EvalRow(target, combiner, spec.name, acc, len(x), summarise_stats(stats)))
                if progress is not None:
                    progress(rows[-1])
    return rows


def rows_by_key(rows: Sequence[EvalRow]) -> dict[tuple[str, str, str], float]:
    return {(r.target, r.combiner, r.attack): r.accuracy for r in rows}


__all__ = ["ATTACKS", "EvalRow", "attack_accuracy", "evaluate_ensemble", "rows_by_key", "summarise_stats"]
