"""Attacks registry. Each attack module registers itself on import; add new modules here."""

from igat.attacks.base import ATTACKS, Attack, AttackParams, AttackResult, build_attack, project
from igat.attacks import pgd as _pgd  # noqa: F401  (registers natural, fgsm, pgd)
from igat.attacks.pgd import margin_loss, pgd

__all__ = ["ATTACKS", "Attack", "AttackParams", "AttackResult", "build_attack", "margin_loss", "pgd", "project"]
