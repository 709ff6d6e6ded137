"""Sanity guards against false robustness (gradient masking, broken attacks).

Each group of results that belongs together (one method/seed/checkpoint, one target, one
combiner) is checked for orderings that a sound evaluation cannot produce:

* ``pgd_above_natural`` -- PGD accuracy above natural accuracy (an attack that *helps*). The
  same check for the other attacks is ``attack_above_natural``.
* ``sh_below_pgd`` -- black-box SignHunter accuracy *below* white-box PGD accuracy by more than
  ``sh_margin`` (default 5 points). Our reading of the issue: a black-box attack sees only
  scores, so it is normally *weaker* than PGD and SH accuracy above PGD is expected (Table 1:
  SH 52.93 vs PGD 39.63 for ADP). SH clearly *beating* PGD means the gradients PGD follows are
  uninformative -- the classic sign of gradient masking -- so we warn.
* ``aa_above_pgd`` -- AutoAttack accuracy above PGD accuracy: AA starts with APGD-CE, which is
  at least as strong as PGD-20, so AA above PGD points to a broken AA run or evaluation.

Tolerances are in accuracy units of the input (fractions by default); comparisons of attacks
run on different numbers of examples (CW on 1,000) carry sampling noise, so keep a small
tolerance when the evaluation sets are small. Functions are pure: rows or a DataFrame in,
flags out, so the dashboard and the CLI share them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

NATURAL, PGD, SH, AA = "natural", "pgd", "signhunter", "autoattack"
GROUP_KEYS = ("checkpoint", "method", "variant", "seed", "target", "combiner")


@dataclass
class SanityFlag:
    combiner: str
    code: str  # pgd_above_natural | attack_above_natural | sh_below_pgd | aa_above_pgd
    message: str
    target: str = "ensemble"
    severity: str = "warning"
    context: dict[str, Any] = field(default_factory=dict)  # method / seed / checkpoint of the group
    values: dict[str, float] = field(default_factory=dict)  # the accuracies compared

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _records(results: Any) -> list[dict[str, Any]]:
    """Accept EvalRows, dicts, or a pandas DataFrame with columns combiner, attack, accuracy."""
    if hasattr(results, "to_dict") and hasattr(results, "columns"):
        return results.to_dict("records")
    out = []
    for r in results:
        out.append(r.to_dict() if hasattr(r, "to_dict") else dict(r))
    return out


def _norm(value: Any) -> Any:
    # DataFrames hold missing metadata as NaN, which never equals itself as a grouping key.
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return value


def _pct(v: float, scale: float) -> str:
    return f"{v * scale:.2f}%"


def check_group(accuracies: dict[str, float], combiner: str, target: str = "ensemble", *,
                tolerance: float = 0.0, sh_margin: float = 0.05, aa_tolerance: float = 0.0,
                percent: bool = False, context: dict[str, Any] | None = None) -> list[SanityFlag]:
    """Flags for one group's ``{attack: accuracy}``. ``percent``: accuracies are in % (else fractions)."""
    scale = 1.0 if percent else 100.0
    ctx = dict(context or {})
    where = f"{target}/{combiner}" if target != "ensemble" else f"combiner {combiner}"
    flags: list[SanityFlag] = []
    nat = accuracies.get(NATURAL)
    if nat is not None:
        for attack, acc in accuracies.items():
            if attack == NATURAL or acc is None or acc <= nat + tolerance:
                continue
            code = "pgd_above_natural" if attack == PGD else "attack_above_natural"
            flags.append(SanityFlag(
                combiner, code,
                f"{attack} accuracy {_pct(acc, scale)} is above natural accuracy {_pct(nat, scale)} ({where}): "
                "the attack did not work (check its parameters, eval mode, and the model's output)",
                target, "error", ctx, {NATURAL: nat, attack: acc},
            ))
    pgd, sh, aa = accuracies.get(PGD), accuracies.get(SH), accuracies.get(AA)
    if pgd is not None and sh is not None and sh < pgd - sh_margin:
        flags.append(SanityFlag(
            combiner, "sh_below_pgd",
            f"black-box SignHunter accuracy {_pct(sh, scale)} is {_pct(pgd - sh, scale)} below white-box PGD accuracy "
            f"{_pct(pgd, scale)} ({where}): gradients look uninformative (possible gradient masking); "
            "PGD accuracy probably overstates robustness",
            target, "warning", ctx, {PGD: pgd, SH: sh},
        ))
    if pgd is not None and aa is not None and aa > pgd + aa_tolerance:
        flags.append(SanityFlag(
            combiner, "aa_above_pgd",
            f"AutoAttack accuracy {_pct(aa, scale)} is above PGD accuracy {_pct(pgd, scale)} ({where}): "
            "AutoAttack should be at least as strong as PGD; check the AutoAttack run",
            target, "warning", ctx, {PGD: pgd, AA: aa},
        ))
    return flags


def check_results(results: Any, *, tolerance: float = 0.0, sh_margin: float = 0.05, aa_tolerance: float = 0.0,
                  percent: bool = False, targets: Sequence[str] | None = None) -> list[SanityFlag]:
    """Flags for every (checkpoint, method, variant, seed, target, combiner) group in ``results``.

    ``results``: EvalRows, dicts or a DataFrame with at least combiner, attack, accuracy
    (target defaults to "ensemble"). ``targets`` restricts the check (e.g. ["ensemble"]).
    """
    groups: dict[tuple, dict[str, float]] = {}
    contexts: dict[tuple, dict[str, Any]] = {}
    for rec in _records(results):
        rec = {k: _norm(v) for k, v in rec.items()}
        target = rec.get("target") or "ensemble"
        if targets is not None and target not in targets:
            continue
        key = tuple(rec.get(k, "") if k != "target" else target for k in GROUP_KEYS)
        groups.setdefault(key, {})[str(rec["attack"])] = float(rec["accuracy"])
        contexts[key] = {k: rec[k] for k in ("checkpoint", "method", "variant", "seed") if rec.get(k, "") != ""}
    flags: list[SanityFlag] = []
    for key, accs in groups.items():
        combiner, target = str(key[GROUP_KEYS.index("combiner")]), str(key[GROUP_KEYS.index("target")])
        flags += check_group(accs, combiner, target, tolerance=tolerance, sh_margin=sh_margin,
                             aa_tolerance=aa_tolerance, percent=percent, context=contexts[key])
    return flags


def format_flags(flags: Iterable[SanityFlag]) -> str:
    lines = []
    for f in flags:
        ctx = " ".join(f"{k}={v}" for k, v in f.context.items() if k != "checkpoint")
        lines.append(f"[{f.severity}] {f.code}: {f.message}" + (f" [{ctx}]" if ctx else ""))
    return "\n".join(lines)


__all__ = ["SanityFlag", "check_group", "check_results", "format_flags"]
