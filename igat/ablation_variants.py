"""The iGAT ablation variants of Table 3 as data (no PyTorch): what ``igat.ablation`` trains and what the
reports and the dashboard group by, importable by the dashboard without loading the training code."""

from __future__ import annotations

from typing import Any

# (variant label, column title, igat overrides), in Table 3's column order. The labels are the
# ``variant`` values that igat.evaluation.method_and_variant derives from a config and that the
# reports group by (opposite / random / hard / beta0 / full).
VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("opposite", "Opposite", {"rule": "opposite"}),
    ("random", "Random", {"rule": "random"}),
    ("hard", "Hard", {"rule": "hard"}),
    ("beta0", "beta=0", {"rule": "soft", "beta": 0.0}),
    ("full", "iGAT", {"rule": "soft"}),
)
TITLES: dict[str, str] = {label: title for label, title, _ in VARIANTS}

# Spellings of the full method a run may carry as its variant (the platform's label, a title, a rule name).
_FULL = {"full", "igat", "soft", ""}


def variant_slug(label: str) -> str:
    """The reports' slug of an ablation label or title: ``"beta=0"`` / ``"β=0"`` -> ``"beta0"``, ``"iGAT"`` ->
    ``"full"``; an unknown label is normalised the same way (lower case, no spaces, no '=')."""
    text = str(label or "").strip()
    by_title = {title.lower(): slug for slug, title in TITLES.items()}
    slug = by_title.get(text.lower()) or text.lower().replace(" ", "").replace("=", "").replace("β", "beta")
    return "full" if slug in _FULL else slug
