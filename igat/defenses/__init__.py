"""Defense registry. Each defense module registers itself on import; list new modules here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from igat.defenses.base import DEFENSES, Defense, DefenseParams, LossOutput, MemberStat, member_ce

if TYPE_CHECKING:
    from igat.config import ExperimentConfig

_MODULES = ["standard", "pgd_at", "adp", "gal", "trs", "dverge", "cldl", "soe"]
for _name in _MODULES:
    importlib.import_module(f"igat.defenses.{_name}")


def build_defense(config: ExperimentConfig) -> Defense:
    """The configured defense, wrapped by iGAT when ``igat.enabled`` (without its own adversarial training
    unless ``igat.base_adv``)."""
    cls = DEFENSES.get(config.defense.name)
    params = dict(config.defense.params)
    if config.igat.enabled and not config.igat.base_adv and cls.adversarial_training_off:
        params.update(cls.adversarial_training_off)  # iGAT's global examples replace the base's own AT
    defense = cls(cls.Params(**params), config)
    if config.igat.enabled:
        from igat.defenses.igat import IGAT

        defense = IGAT(defense, config)
    return defense


__all__ = ["DEFENSES", "Defense", "DefenseParams", "LossOutput", "MemberStat", "build_defense", "member_ce"]
