"""Measurable quantities of the paper's error theory (Section 4; spec §4.2-4.5).

- :mod:`curvature`  loss curvature lambda_f(x, delta) of eq. (2), per member / model / ensemble.
- :mod:`spectral`   ||M_h||, ||M_h^+|| of Assumption 4.2 from the logit Jacobian (P_h = J J^T).
- :mod:`pairs`      ambiguous pairs of Definition 4.3 (exact chunked cross-class NN search, eq. (10)).
- :mod:`conditions` Assumption 4.4 fractions (condition 1 -> p vs 42.5 %, condition 2).
- :mod:`zero_one`   Theorem 4.1's 0-1 loss, single vs two-member average/max, Wilson/bootstrap CIs.
- :mod:`diagnostics` ``run_diagnostics(checkpoint_path, params)``, the platform entry point.
- :mod:`toy`        the 2-D MLP toy study.
"""

from igat.theory.conditions import P_THRESHOLD, ConditionFractions, acceptable_fractions
from igat.theory.curvature import compare_curvature, curvature_distributions, loss_curvature, make_delta
from igat.theory.diagnostics import ARTIFACT_NAME, TheoryParams, diagnose, parse_params, run_diagnostics
from igat.theory.pairs import PairSearch, cross_class_pairs, eq10_threshold, implied_j
from igat.theory.spectral import logit_jacobian, spectral_bounds
from igat.theory.zero_one import bootstrap_interval, theorem_check, wilson_interval, zero_one

__all__ = [
    "ARTIFACT_NAME", "P_THRESHOLD", "ConditionFractions", "PairSearch", "TheoryParams", "acceptable_fractions",
    "bootstrap_interval", "compare_curvature", "cross_class_pairs", "curvature_distributions", "diagnose",
    "eq10_threshold", "implied_j", "logit_jacobian", "loss_curvature", "make_delta", "parse_params",
    "run_diagnostics", "spectral_bounds", "theorem_check", "wilson_interval", "zero_one",
]
