"""Attacks registry. Each attack module registers itself on import; add new modules here."""

from igat.attacks import autoattack as _autoattack  # noqa: F401  (registers autoattack, via pyautoattack)
from igat.attacks import cw as _cw  # noqa: F401  (registers cw: PGD on the CW margin loss)
from igat.attacks import cw_opt as _cw_opt  # noqa: F401  (registers cw_opt: reference-code C&W L-inf optimisation)
from igat.attacks import pgd as _pgd  # noqa: F401  (registers natural, fgsm, pgd)
from igat.attacks import signhunter as _signhunter  # noqa: F401  (registers signhunter)
from igat.attacks.base import ATTACKS, Attack, AttackParams, AttackResult, build_attack, project
from igat.attacks.pgd import PGDResult, margin_loss, pgd, pgd_early_exit
from igat.attacks.signhunter import signhunter

__all__ = [
    "ATTACKS", "Attack", "AttackParams", "AttackResult", "PGDResult", "build_attack", "margin_loss", "pgd",
    "pgd_early_exit", "project", "signhunter",
]
