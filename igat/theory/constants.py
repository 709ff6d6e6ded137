"""Torch-free constants of the theory diagnostics, importable by the dashboard process."""

from __future__ import annotations

P_THRESHOLD = 0.425  # the sufficient probability of Assumption 4.4 / Theorem 4.1
ARTIFACT_NAME = "theory"  # Artifact holding a run's run_diagnostics result
STUDY_ARTIFACT_NAME = "study_theory"  # Artifact holding a study's per-arm theory comparison
STUDY_THEORY_FILE = "theory.json"  # the same comparison, in the study folder
