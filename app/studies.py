"""Data, tables and figures of the Studies page (pure functions of the store and of a study's analysis).

A study is a Run of kind "study" (``tasks.api.submit_study``); its phases are child runs. Its results are
the analysis ``igat.study.analyse`` computes: stored by the worker as the artifact ``study_analysis`` after
every evaluation, else recomputed here from ``study.json`` in the study's folder, so partial results show
while it runs. The paper's numbers come from ``igat.paper_values`` and are always labelled as the paper's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.charts import attack_label
from igat import paper_values as P
from tasks.store import Artifact, Run
from tasks.study_artifacts import ANALYSIS_ARTIFACT, FOLDER_ARTIFACT, REPORT_ARTIFACT, study_dir

STUDY_COLUMNS = ["id", "name", "status", "phase", "progress", "defense", "scale", "dataset", "seeds", "arms",
                 "created_at", "started_at", "finished_at", "error", "cancel_requested", "spec"]
CHILD_COLUMNS = ["id", "name", "status", "epoch", "total_epochs", "progress", "igat", "checkpoint_path", "error"]
ARM_TITLES = {"base": "base", "continued": "continued", "igat": "iGAT", "opposite": "opposite", "random": "random",
              "hard": "hard", "beta0": "beta = 0"}


# --- the store -----------------------------------------------------------------------------------------------
def _spec(params_json: str | None) -> dict[str, Any]:
    try:
        data = json.loads(params_json or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def load_studies(engine: Engine) -> pd.DataFrame:
    """Every study, newest first, with its spec's headline fields."""
    with Session(engine) as s:
        runs = s.exec(select(Run).where(Run.kind == "study").order_by(col(Run.id).desc())).all()
        records = []
        for r in runs:
            spec = _spec(r.params_json)
            records.append({
                "id": int(r.id), "name": r.name, "status": str(r.status), "phase": r.phase or "",
                "progress": float(r.progress or 0.0), "defense": spec.get("defense", r.defense),
                "scale": spec.get("scale", ""), "dataset": spec.get("dataset", r.dataset),
                "seeds": ", ".join(str(x) for x in spec.get("seeds", [])), "arms": ", ".join(spec.get("arms", [])),
                "created_at": r.created_at, "started_at": r.started_at, "finished_at": r.finished_at,
                "error": r.error or "", "cancel_requested": bool(r.cancel_requested), "spec": spec})
    return pd.DataFrame.from_records(records, columns=STUDY_COLUMNS)


def load_children(engine: Engine, study_id: int) -> pd.DataFrame:
    """The study's phase runs in the order they were created (seed by seed)."""
    with Session(engine) as s:
        runs = s.exec(select(Run).where(Run.parent_run_id == study_id).order_by(col(Run.id))).all()
        records = [{"id": int(r.id), "name": r.name, "status": str(r.status), "epoch": r.epoch,
                    "total_epochs": r.total_epochs, "progress": float(r.progress or 0.0), "igat": bool(r.igat),
                    "checkpoint_path": r.checkpoint_path or "", "error": r.error or ""} for r in runs]
    return pd.DataFrame.from_records(records, columns=CHILD_COLUMNS)


def _artifact(engine: Engine, run_id: int, name: str) -> Any:
    with Session(engine) as s:
        art = s.exec(select(Artifact).where(Artifact.run_id == run_id, Artifact.name == name)
                     .order_by(col(Artifact.id).desc())).first()
        return None if art is None else art.data


def study_folder(engine: Engine, study_id: int) -> Path:
    stored = _artifact(engine, study_id, FOLDER_ARTIFACT)
    if isinstance(stored, dict) and stored.get("path"):
        return Path(stored["path"])
    return study_dir(study_id)


def load_analysis(engine: Engine, study_id: int) -> dict[str, Any] | None:
    """The stored analysis, else one recomputed from the study folder's state (None: nothing evaluated)."""
    stored = _artifact(engine, study_id, ANALYSIS_ARTIFACT)
    if isinstance(stored, dict):
        return stored
    path = study_folder(engine, study_id) / "study.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):  # not started, or the folder is on the worker's machine only
        return None
    if not any(s.get("eval") for s in state.get("seeds", {}).values()):
        return None
    from igat.study import analyse

    return analyse(state)


def load_report(engine: Engine, study_id: int) -> str | None:
    stored = _artifact(engine, study_id, REPORT_ARTIFACT)
    return stored.get("markdown") if isinstance(stored, dict) else None


# --- the launch form -----------------------------------------------------------------------------------------
def parse_seeds(text: str) -> tuple[list[int] | None, str | None]:
    """``"0, 1, 2"`` -> ([0, 1, 2], None); anything else -> (None, why)."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not parts:
        return None, "give at least one seed, e.g. 0, 1, 2"
    bad = [p for p in parts if not p.isdigit()]
    if bad:
        return None, f"{bad[0]!r} is not a seed: give comma-separated integers >= 0"
    return [int(p) for p in parts], None


def field_of(error_field: str) -> str:
    """The form widget an error from StudySpec / check_study / submit_study belongs to."""
    head = error_field.split(".", 1)[0].split(":", 1)[0].strip()
    return head if head in ("defense", "seeds", "scale", "dataset", "arms", "overrides", "name", "base_max_epochs",
                            "arm_epochs", "eval_examples") else "form"


# --- results -------------------------------------------------------------------------------------------------
def paper_dataset(dataset: str) -> str:
    """The paper's dataset to compare with: the study's, or CIFAR-10 for data the paper did not use."""
    return dataset if dataset in ("cifar10", "cifar100") else "cifar10"


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def _pm(arm: dict[str, Any] | None) -> str:
    return "" if not arm else f"{100 * arm['mean']:.2f} ± {100 * arm['std']:.2f}"


def _interval(ci: list[float] | None) -> str:
    if not ci:
        return ""
    lo, hi = ci
    return f"[{100 * lo:+.2f}, {100 * hi:+.2f}]" if all(abs(v) != float("inf") for v in ci) else "n/a (1 seed)"


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def result_table(analysis: dict[str, Any]) -> pd.DataFrame:
    """One row per cell (attack x combiner): every arm's mean ± std over seeds (%), the paired difference
    igat - continued with its 95 % seed and example intervals and the verdict, and the paper's numbers."""
    spec = analysis["spec"]
    arms = ["base", *spec["arms"]]
    defense, pds = spec["defense"], paper_dataset(spec["dataset"])
    label = P.paper_label(pds)
    rows = []
    for cell in analysis["cells"]:
        paper = P.paper_cell(defense, pds, cell["combiner"], cell["attack"])
        d = cell.get("igat_minus_continued")
        n = next(iter(cell["arms"].values()))["n"] if cell["arms"] else 0
        row: dict[str, Any] = {"attack": attack_label(cell["attack"]), "combiner": cell["combiner"], "n": n}
        for arm in arms:
            row[ARM_TITLES.get(arm, arm)] = _pm(cell["arms"].get(arm))
        row["igat - continued"] = f"{100 * d['mean']:+.2f}" if d else ""
        row["95 % CI (seeds)"] = _interval(d["seed_ci"]) if d else ""
        row["95 % CI (examples)"] = _interval(d["example_ci"]) if d else ""
        row["verdict"] = d["verdict"] if d else "waiting for both arms"
        row[f"{label}: {defense.upper()} (Table 1)"] = _num(paper.base)
        row[f"{label}: iGAT_{defense.upper()} (Table 1)"] = _num(paper.igat)
        row[f"{label}: difference"] = f"{paper.difference:+.2f}" if paper.difference is not None else ""
        row[f"{label}: improvement % (Table 2)"] = f"{paper.improvement:+.2f}" if paper.improvement is not None else ""
        for arm in spec["arms"]:
            if arm in paper.ablations:
                row[f"{label}: {ARM_TITLES.get(arm, arm)} (Table 3)"] = _num(paper.ablations[arm])
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_table(analysis: dict[str, Any]) -> pd.DataFrame:
    """The paper's Table 3 as measured: one row per cell and ablation variant (opposite, random, hard rule,
    beta = 0), its mean ± std next to iGAT's (soft rule), the paired difference variant - iGAT with its 95 % seed
    and example intervals and verdict, and the paper's Table 3 value where it reports one. Empty without
    ablation arms."""
    spec = analysis["spec"]
    defense, pds = spec["defense"], paper_dataset(spec["dataset"])
    label = P.paper_label(pds)
    rows = []
    for cell in analysis["cells"]:
        paper = P.paper_cell(defense, pds, cell["combiner"], cell["attack"])
        for arm, d in (cell.get("ablations") or {}).items():
            rows.append({"attack": attack_label(cell["attack"]), "combiner": cell["combiner"],
                         "variant": ARM_TITLES.get(arm, arm), "variant (%)": _pm(cell["arms"].get(arm)),
                         "iGAT (%)": _pm(cell["arms"].get("igat")), "variant - iGAT": f"{100 * d['mean']:+.2f}",
                         "95 % CI (seeds)": _interval(d["seed_ci"]), "95 % CI (examples)": _interval(d["example_ci"]),
                         "verdict": d["verdict"], f"{label}: variant (Table 3)": _num(paper.ablations.get(arm)),
                         f"{label}: iGAT (Table 1)": _num(paper.igat)})
    return pd.DataFrame(rows)


def _cell_label(cell: dict[str, Any]) -> str:
    return f"{attack_label(cell['attack'])} · {cell['combiner']}"


def accuracy_figure(analysis: dict[str, Any], uirevision: str) -> go.Figure:
    """Grouped bars: each arm's mean accuracy per cell with ± std over seeds as error bars; diamonds: the
    paper's Table 1 numbers for the defense and its iGAT version."""
    spec = analysis["spec"]
    defense, pds = spec["defense"], paper_dataset(spec["dataset"])
    cells = analysis["cells"]
    x = [_cell_label(c) for c in cells]
    fig = go.Figure()
    for arm in ["base", *spec["arms"]]:
        means = [100 * c["arms"][arm]["mean"] if arm in c["arms"] else None for c in cells]
        stds = [100 * c["arms"][arm]["std"] if arm in c["arms"] else None for c in cells]
        fig.add_trace(go.Bar(name=ARM_TITLES.get(arm, arm), x=x, y=means,
                             error_y={"type": "data", "array": stds, "visible": True}))
    label = P.paper_label(pds)
    for igat, name in ((False, defense.upper()), (True, f"iGAT_{defense.upper()}")):
        ys = [P.table1_accuracy(defense, igat, pds, c["combiner"], c["attack"]) for c in cells]
        if any(v is not None for v in ys):
            fig.add_trace(go.Scatter(name=f"{label}: {name}", x=x, y=ys, mode="markers",
                                     marker={"symbol": "diamond-open" if not igat else "diamond", "size": 12}))
    fig.update_layout(barmode="group", title="Accuracy per cell (mean ± std over seeds)", yaxis_title="accuracy %",
                      uirevision=uirevision, height=420, legend={"orientation": "h", "y": -0.2}, margin={"t": 50})
    return fig


def difference_figure(analysis: dict[str, Any], uirevision: str) -> go.Figure:
    """The paired difference igat - continued per cell with its 95 % seed interval, next to the paper's
    Table 1 difference iGAT_D - D (points)."""
    spec = analysis["spec"]
    defense, pds = spec["defense"], paper_dataset(spec["dataset"])
    cells = [c for c in analysis["cells"] if "igat_minus_continued" in c]
    x = [_cell_label(c) for c in cells]
    diffs = [c["igat_minus_continued"] for c in cells]
    finite = [all(abs(v) != float("inf") for v in d["seed_ci"]) for d in diffs]
    fig = go.Figure(go.Scatter(
        name="study: igat - continued (95 % CI over seeds)", x=x, y=[100 * d["mean"] for d in diffs], mode="markers",
        marker={"size": 10},
        error_y={"type": "data", "symmetric": False, "visible": True,
                 "array": [100 * (d["seed_ci"][1] - d["mean"]) if ok else None for d, ok in zip(diffs, finite)],
                 "arrayminus": [100 * (d["mean"] - d["seed_ci"][0]) if ok else None for d, ok in zip(diffs, finite)]}))
    paper = [P.paper_cell(defense, pds, c["combiner"], c["attack"]).difference for c in cells]
    if any(v is not None for v in paper):
        fig.add_trace(go.Scatter(name=f"{P.paper_label(pds)}: iGAT_{defense.upper()} - {defense.upper()}", x=x,
                                 y=paper, mode="markers", marker={"symbol": "diamond", "size": 12}))
    fig.add_hline(y=0, line_dash="dot")
    fig.update_layout(title="Paired difference (accuracy points)", yaxis_title="points", uirevision=uirevision,
                      height=420, legend={"orientation": "h", "y": -0.2}, margin={"t": 50})
    return fig


def bases_table(analysis: dict[str, Any]) -> pd.DataFrame:
    """Per seed: base epochs, whether it plateaued, its natural accuracy by epoch (%)."""
    rows = [{"seed": s, "epochs": b["epochs"], "plateaued": b.get("plateaued"),
             "natural accuracy by epoch (%)": ", ".join(_pct(v) for v in b["nat_acc_history"] if v is not None)}
            for s, b in analysis.get("bases", {}).items()]
    return pd.DataFrame(rows, columns=["seed", "epochs", "plateaued", "natural accuracy by epoch (%)"])
