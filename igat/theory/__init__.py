"""Measurable quantities of the paper's error theory (Section 4; spec §4.2-4.5).

- :mod:`curvature`  loss curvature lambda_f(x, delta) of eq. (2), per member / model / ensemble.
- :mod:`spectral`   ||M_h||, ||M_h^+|| of Assumption 4.2 from the logit Jacobian (P_h = J J^T).
- :mod:`pairs`      ambiguous pairs of Definition 4.3 (exact chunked cross-class NN search, eq. (10)).
- :mod:`conditions` Assumption 4.4: fractions per classifier and the per-ordering verdict over models.
- :mod:`zero_one`   Theorem 4.1's 0-1 loss, single vs two-member average/max, bootstrap over models and pairs.
- :mod:`diagnostics` ``run_diagnostics(checkpoint_path, params)``, the platform entry point.
- :mod:`study`      the same diagnostics on the base / continued / iGAT arms of an ``igat study``.
- :mod:`toy`        the 2-D MLP toy study.
- :mod:`constants`, :mod:`params` are torch-free (the dashboard imports them).

Names are resolved lazily, so importing ``igat.theory.constants`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "P_THRESHOLD": "constants", "ARTIFACT_NAME": "constants", "STUDY_ARTIFACT_NAME": "constants",
    "TheoryParams": "params", "parse_params": "params",
    "ConditionFractions": "conditions", "acceptable_fractions": "conditions", "assumption_verdict": "conditions",
    "per_ordering_p": "conditions",
    "compare_curvature": "curvature", "curvature_distributions": "curvature", "loss_curvature": "curvature",
    "make_delta": "curvature",
    "diagnose": "diagnostics", "run_diagnostics": "diagnostics",
    "PairSearch": "pairs", "cross_class_pairs": "pairs", "eq10_threshold": "pairs", "implied_j": "pairs",
    "logit_jacobian": "spectral", "spectral_bounds": "spectral",
    "bootstrap_interval": "zero_one", "model_and_pair_bootstrap": "zero_one", "theorem_check": "zero_one",
    "wilson_interval": "zero_one",
}
# ``zero_one`` is the submodule (its function of the same name: ``igat.theory.zero_one.zero_one``);
# a lazily exported function could not shadow a submodule once that is imported.
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'igat.theory' has no attribute {name!r}")
    return getattr(importlib.import_module(f"igat.theory.{module}"), name)
