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
* ``pgd_overestimates`` -- the optional ``pgd_strength`` probe (PGD-20, then PGD-100 with
  restarts, on the same few hundred examples) found PGD-20's accuracy more than
  ``strength_margin`` (default one point, as a fraction) above the stronger attack's: PGD-20 is
  too weak for this model and its number overstates robustness. The comparison is paired (same
  examples), so it carries no sampling noise of the accuracy level; the probe's row carries the
  PGD-20 accuracy in its statistic ``robust_reference_mean``.

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
PGD_STRENGTH, REFERENCE_STAT = "pgd_strength", "robust_reference_mean"  # the probe's row, its PGD-k accuracy (fraction)
GROUP_KEYS = ("checkpoint", "method", "variant", "seed", "target", "combiner")


@dataclass
class SanityFlag:
    combiner: str
    code: str  # pgd_above_natural | attack_above_natural | sh_below_pgd | aa_above_pgd | pgd_overestimates
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


def _strength_reference(rec: dict[str, Any]) -> float | None:
    """The probe's PGD-k accuracy (fraction): a column of flat records / CSV, or inside ``extra`` (EvalRow, store)."""
    extra = rec.get("extra")
    value = rec.get(REFERENCE_STAT, "")
    if value == "" and isinstance(extra, dict):
        value = extra.get(REFERENCE_STAT, "")
    return None if value in ("", None) else float(value)


def check_group(accuracies: dict[str, float], combiner: str, target: str = "ensemble", *,
                tolerance: float = 0.0, sh_margin: float = 0.05, aa_tolerance: float = 0.0,
                percent: bool = False, context: dict[str, Any] | None = None,
                strength_reference: float | None = None, strength_margin: float = 0.01) -> list[SanityFlag]:
    """Flags for one group's ``{attack: accuracy}``. ``percent``: accuracies are in % (else fractions).

    ``strength_reference``: the ``pgd_strength`` probe's PGD-k accuracy on its examples, as a fraction
    (``strength_margin`` is a fraction too, whatever ``percent`` says).
    """
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
    strong = accuracies.get(PGD_STRENGTH)
    if strong is not None and strength_reference is not None:
        reference = strength_reference * (100.0 if percent else 1.0)
        if reference - strong > strength_margin * (100.0 if percent else 1.0):
            flags.append(SanityFlag(
                combiner, "pgd_overestimates",
                f"on the strength probe's examples, PGD accuracy {_pct(reference, scale)} drops to "
                f"{_pct(strong, scale)} under the probe's longer PGD with restarts ({where}): the evaluation PGD "
                "overstates robustness by more than a point; report a stronger attack (more steps or restarts, "
                "AutoAttack)",
                target, "warning", ctx, {"pgd_reference": reference, PGD_STRENGTH: strong},
            ))
    return flags


def check_results(results: Any, *, tolerance: float = 0.0, sh_margin: float = 0.05, aa_tolerance: float = 0.0,
                  percent: bool = False, targets: Sequence[str] | None = None,
                  strength_margin: float = 0.01) -> list[SanityFlag]:
    """Flags for every (checkpoint, method, variant, seed, target, combiner) group in ``results``.

    ``results``: EvalRows, dicts or a DataFrame with at least combiner, attack, accuracy
    (target defaults to "ensemble"). ``targets`` restricts the check (e.g. ["ensemble"]).
    """
    groups: dict[tuple, dict[str, float]] = {}
    contexts: dict[tuple, dict[str, Any]] = {}
    references: dict[tuple, float | None] = {}
    for rec in _records(results):
        rec = {k: _norm(v) for k, v in rec.items()}
        target = rec.get("target") or "ensemble"
        if targets is not None and target not in targets:
            continue
        key = tuple(rec.get(k, "") if k != "target" else target for k in GROUP_KEYS)
        groups.setdefault(key, {})[str(rec["attack"])] = float(rec["accuracy"])
        if rec["attack"] == PGD_STRENGTH:
            references[key] = _strength_reference(rec)
        contexts[key] = {k: rec[k] for k in ("checkpoint", "method", "variant", "seed") if rec.get(k, "") != ""}
    flags: list[SanityFlag] = []
    for key, accs in groups.items():
        combiner, target = str(key[GROUP_KEYS.index("combiner")]), str(key[GROUP_KEYS.index("target")])
        flags += check_group(accs, combiner, target, tolerance=tolerance, sh_margin=sh_margin,
                             aa_tolerance=aa_tolerance, percent=percent, context=contexts[key],
                             strength_reference=references.get(key), strength_margin=strength_margin)
    return flags


def format_flags(flags: Iterable[SanityFlag]) -> str:
    lines = []
    for f in flags:
        ctx = " ".join(f"{k}={v}" for k, v in f.context.items() if k != "checkpoint")
        lines.append(f"[{f.severity}] {f.code}: {f.message}" + (f" [{ctx}]" if ctx else ""))
    return "\n".join(lines)


__all__ = ["SanityFlag", "check_group", "check_results", "format_flags"]
