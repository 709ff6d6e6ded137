"""The paper's reported numbers (Deng & Mu, NeurIPS 2023, Tables 1-3) as data, for side-by-side display.

The values live in ``igat/data/paper_tables.json``, transcribed from the paper and labelled with their table;
they are the paper's claims (8 x ResNet-20, eps 8/255, five runs), never results measured by iGAT Lab.
Lookups take this library's names: defense ``adp``, dataset ``cifar10``, combiner ``average`` / ``max``,
attack ``natural`` / ``pgd`` / ``cw`` / ``signhunter`` / ``autoattack``, Table 3 arm ``opposite`` / ``random`` /
``hard`` / ``beta0`` / ``igat``; anything the paper did not report gives None.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAPER_FILE = Path(__file__).resolve().parent / "data" / "paper_tables.json"
SOURCE = "Deng & Mu, NeurIPS 2023"


@functools.cache
def paper_tables() -> dict[str, Any]:
    """The whole file (source, note, setting, methods, table1..3). Cached: treat it as read-only."""
    return json.loads(PAPER_FILE.read_text())


def paper_label(dataset: str) -> str:
    """How the dashboard and reports label these numbers, e.g. "paper (8 x ResNet-20, CIFAR-10)"."""
    setting = paper_tables()["setting"]
    shown = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}.get(dataset, dataset)
    return f"paper ({setting['members']} x {setting['architecture']}, {shown})"


def _method(defense: str, igat: bool) -> str | None:
    for name, m in paper_tables()["methods"].items():
        if m["defense"] == defense and m["igat"] == igat:
            return name
    return None


def table1_accuracy(defense: str, igat: bool, dataset: str, combiner: str, attack: str) -> float | None:
    """Table 1: accuracy (%) of ``defense`` (iGAT-enhanced when ``igat``)."""
    method = _method(defense, igat)
    values = paper_tables()["table1"]["values"]
    return values.get(dataset, {}).get(method or "", {}).get(combiner, {}).get(attack)


def table2_improvement(defense: str, dataset: str, combiner: str, attack: str) -> float | None:
    """Table 2: relative improvement (%) of iGAT over ``defense``, (iGAT - original) / original x 100."""
    method = _method(defense, False)
    values = paper_tables()["table2"]["values"]
    return values.get(dataset, {}).get(method or "", {}).get(combiner, {}).get(attack)


def table3_accuracy(arm: str, attack: str, defense: str = "adp", dataset: str = "cifar10",
                    combiner: str = "average") -> float | None:
    """Table 3: accuracy (%) of an ablation arm; the paper ran them only for iGAT_ADP, CIFAR-10, average."""
    t3 = paper_tables()["table3"]
    if (defense, dataset, combiner) != (t3["defense"], t3["dataset"], t3["combiner"]):
        return None
    return t3["values"].get(arm, {}).get(attack)


@dataclass(frozen=True)
class PaperCell:
    """The paper's numbers for one study cell (defense, dataset, combiner, attack)."""

    base: float | None  # Table 1, the defense
    igat: float | None  # Table 1, iGAT on it
    improvement: float | None  # Table 2, relative %
    ablations: dict[str, float]  # Table 3, by arm (only iGAT_ADP / CIFAR-10 / average)

    @property
    def difference(self) -> float | None:
        """igat - base in accuracy points (what a study's paired difference estimates)."""
        return None if self.base is None or self.igat is None else self.igat - self.base

    @property
    def empty(self) -> bool:
        return self.base is None and self.igat is None and self.improvement is None and not self.ablations


def paper_cell(defense: str, dataset: str, combiner: str, attack: str) -> PaperCell:
    arms = paper_tables()["table3"]["arms"]
    ablations = {arm: v for arm in arms
                 if (v := table3_accuracy(arm, attack, defense, dataset, combiner)) is not None}
    return PaperCell(base=table1_accuracy(defense, False, dataset, combiner, attack),
                     igat=table1_accuracy(defense, True, dataset, combiner, attack),
                     improvement=table2_improvement(defense, dataset, combiner, attack), ablations=ablations)


__all__ = ["PAPER_FILE", "SOURCE", "PaperCell", "paper_cell", "paper_label", "paper_tables", "table1_accuracy",
           "table2_improvement", "table3_accuracy"]
