"""The combiner names a config may list, with what each computes (torch-free).

The functions live in :mod:`igat.models.combiners` (``average``, ``max``) and :mod:`igat.defenses.soe` (``soe``);
``tests/test_specs.py`` checks that this list and their registry agree.
"""

from __future__ import annotations

COMBINER_SPECS: dict[str, str] = {
    "average": "mean of the members' softmax probabilities",
    "max": "element-wise max over the members' probabilities (not renormalised, as in the paper)",
    "soe": "SoE's selection: the probabilities of the expert with the highest confidence score",
}


def combiner_names() -> list[str]:
    return sorted(COMBINER_SPECS)
