"""Where a study's results are kept: the artifact names and the worker's study folder. No PyTorch and no
training code, so the dashboard's Studies page reads them without loading either (tasks.studyjob runs them)."""

from __future__ import annotations

from pathlib import Path

from tasks.store import igat_home

ANALYSIS_ARTIFACT = "study_analysis"
REPORT_ARTIFACT = "study_report"
FOLDER_ARTIFACT = "study_folder"


def study_dir(run_id: int) -> Path:
    return igat_home() / "studies" / str(run_id)
