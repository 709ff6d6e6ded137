"""Read-only queries on the experiment store, returned as pandas DataFrames for the pages.

Every function takes the engine explicitly (pages pass ``common.get_engine()``), opens one
short session and returns plain data, so the pages never hold ORM objects across reruns.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from tasks.progress import ETA_ARTIFACT, eta_left
from tasks.runstate import ATTEMPT_SECONDS
from tasks.store import (
    FINAL_STATUSES,
    Artifact,
    EvalResult,
    Experiment,
    MemberStatRow,
    Metric,
    Run,
    RunStatus,
    utcnow,
)

STATUSES = [s.value for s in RunStatus]
FINAL = {s.value for s in FINAL_STATUSES}

RUN_COLUMNS = [
    "id", "name", "experiment_id", "experiment", "experiment_kind", "status", "progress", "epoch", "total_epochs",
    "eta_s", "duration_s", "worker", "dataset", "defense", "igat", "method", "seed", "variant", "tags", "preset",
    "kind", "error", "created_at", "started_at", "finished_at", "attempts", "cancel_requested", "checkpoint_path",
    "phase", "eta_scope", "notes", "archived",
]


def method_label(defense: str, igat: bool) -> str:
    """The method name used in tables (same convention as ``ExperimentConfig.display_name``)."""
    return f"iGAT_{defense}" if igat else defense


def run_label(row: dict[str, Any] | pd.Series) -> str:
    seed = row.get("seed", "")
    variant = f" [{row['variant']}]" if row.get("variant") else ""
    return f"#{row['id']} {row['name']} ({row['method']}{variant}, seed {seed}, {row['status']})"


def eta_seconds(status: str, progress: float, started_at: datetime | None, now: datetime | None = None) -> float | None:
    """Linear ETA from elapsed time and progress; None when it cannot be estimated yet."""
    if status != RunStatus.running or not started_at or not progress or progress <= 0 or progress >= 1:
        return None
    elapsed = ((now or utcnow()) - started_at).total_seconds()
    return max(elapsed * (1 - progress) / progress, 0.0)


def duration_seconds(started_at: datetime | None, finished_at: datetime | None, now: datetime | None = None) -> float | None:
    if not started_at:
        return None
    return ((finished_at or now or utcnow()) - started_at).total_seconds()


def run_artifacts(s: Session, run_ids: list[int], name: str) -> dict[int, Any]:
    """The artifact ``name`` of each of ``run_ids`` that has one (the newest, parsed)."""
    if not run_ids:
        return {}
    rows = s.exec(select(Artifact.run_id, Artifact.data_json)
                  .where(Artifact.name == name, col(Artifact.run_id).in_(run_ids)).order_by(col(Artifact.id))).all()
    return {rid: json.loads(data) for rid, data in rows}


def _timing(run: Run, now: datetime, banked: list[float] | None, eta: dict[str, Any] | None) -> dict[str, Any]:
    """Duration over every attempt (earlier ones banked by retries and crash recovery, plus the current one) and
    the time left: the worker's own estimate when it wrote one (tasks.progress), else a linear extrapolation."""
    current = duration_seconds(run.started_at, run.finished_at, now)
    spent = sum(banked or [])
    duration = spent + (current or 0.0) if (banked or current is not None) else None
    if str(run.status) == RunStatus.running and eta is not None:
        return {"duration_s": duration, "eta_s": eta_left(eta, now), "eta_scope": eta.get("scope", "")}
    return {"duration_s": duration, "eta_s": eta_seconds(str(run.status), run.progress, run.started_at, now),
            "eta_scope": ""}


def _run_record(run: Run, exp: Experiment | None, now: datetime, banked: list[float] | None = None,
                eta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "experiment_id": run.experiment_id,
        "experiment": exp.name if exp else "",
        "experiment_kind": exp.kind if exp else "",
        "status": str(run.status),
        "progress": float(run.progress or 0.0),
        "epoch": run.epoch,
        "total_epochs": run.total_epochs,
        **_timing(run, now, banked, eta),
        "worker": run.worker or "",
        "dataset": run.dataset,
        "defense": run.defense,
        "igat": bool(run.igat),
        "method": method_label(run.defense, run.igat),
        "seed": run.seed,
        "variant": run.variant or "",
        "tags": run.tags or "",
        "preset": run.preset,
        "kind": run.kind,
        "error": run.error or "",
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "attempts": run.attempts,
        "cancel_requested": bool(run.cancel_requested),
        "checkpoint_path": run.checkpoint_path or "",
        "phase": run.phase or "",  # e.g. "evaluating: CW on ensemble/average, 2 of 5" while a run evaluates
        "notes": run.notes or "",
        "archived": bool(run.archived),
    }


def load_runs(engine: Engine, run_ids: list[int] | None = None, experiment_ids: list[int] | None = None) -> pd.DataFrame:
    """All runs (newest first), optionally restricted to ids / experiments."""
    now = utcnow()
    with Session(engine) as s:
        stmt = select(Run, Experiment).join(Experiment, Run.experiment_id == Experiment.id, isouter=True)
        if run_ids is not None:
            stmt = stmt.where(col(Run.id).in_(run_ids))
        if experiment_ids is not None:
            stmt = stmt.where(col(Run.experiment_id).in_(experiment_ids))
        rows = s.exec(stmt.order_by(col(Run.id).desc())).all()
        ids = [run.id for run, _ in rows]
        banked = run_artifacts(s, ids, ATTEMPT_SECONDS)
        etas = run_artifacts(s, [run.id for run, _ in rows if run.status == RunStatus.running], ETA_ARTIFACT)
        records = [_run_record(run, exp, now, banked.get(run.id), etas.get(run.id)) for run, exp in rows]
    return pd.DataFrame.from_records(records, columns=RUN_COLUMNS)


def get_run(engine: Engine, run_id: int) -> dict[str, Any] | None:
    df = load_runs(engine, run_ids=[run_id])
    return None if df.empty else df.iloc[0].to_dict()


def run_config(engine: Engine, run_id: int) -> dict[str, Any] | None:
    with Session(engine) as s:
        run = s.get(Run, run_id)
        return None if run is None else json.loads(run.config_json)


def run_configs(engine: Engine, run_ids: list[int]) -> dict[int, dict[str, Any]]:
    with Session(engine) as s:
        rows = s.exec(select(Run.id, Run.config_json).where(col(Run.id).in_(run_ids))).all()
    return {rid: json.loads(cfg) for rid, cfg in rows}


# Run kinds that train an ensemble (eval / theory runs point at their parent's checkpoint).
TRAINING_KINDS = ("train", "finetune")


def base_runs(engine: Engine) -> list[dict[str, Any]]:
    """Succeeded training runs with a checkpoint, newest first: the bases iGAT can fine-tune.
    Keys id, name, defense, members, dataset, checkpoint (defense/members/dataset from the config)."""
    with Session(engine) as s:
        rows = s.exec(
            select(Run.id, Run.name, Run.config_json, Run.checkpoint_path)
            .where(Run.status == RunStatus.succeeded, col(Run.checkpoint_path).is_not(None), Run.checkpoint_path != "",
                   col(Run.kind).in_(TRAINING_KINDS))
            .order_by(col(Run.id).desc())
        ).all()
    out = []
    for rid, name, config_json, checkpoint in rows:
        cfg = json.loads(config_json)
        out.append({"id": int(rid), "name": name, "defense": (cfg.get("defense") or {}).get("name", ""),
                    "members": int((cfg.get("model") or {}).get("num_members", 0)),
                    "dataset": (cfg.get("data") or {}).get("dataset", ""), "checkpoint": checkpoint})
    return out


def tag_list(tags: str) -> list[str]:
    return [t.strip() for t in (tags or "").split(",") if t.strip()]


def load_experiments(engine: Engine, kind: str | None = None) -> pd.DataFrame:
    with Session(engine) as s:
        stmt = (
            select(Experiment, func.count(col(Run.id)))
            .join(Run, Run.experiment_id == Experiment.id, isouter=True)
            .group_by(col(Experiment.id))
            .order_by(col(Experiment.id).desc())
        )
        if kind is not None:
            stmt = stmt.where(Experiment.kind == kind)
        rows = s.exec(stmt).all()
    return pd.DataFrame.from_records(
        [{"id": e.id, "name": e.name, "kind": e.kind, "runs": n, "created_at": e.created_at} for e, n in rows],
        columns=["id", "name", "kind", "runs", "created_at"],
    )


def load_metrics(engine: Engine, run_id: int, after_id: int = 0) -> pd.DataFrame:
    """Metric points of one run with id > after_id (incremental polling for live charts)."""
    with Session(engine) as s:
        rows = s.exec(
            select(Metric).where(Metric.run_id == run_id, col(Metric.id) > after_id).order_by(col(Metric.id))
        ).all()
        records = [{"id": m.id, "scope": m.scope, "step": m.step, "epoch": m.epoch, "name": m.name, "value": m.value}
                   for m in rows]
    return pd.DataFrame.from_records(records, columns=["id", "scope", "step", "epoch", "name", "value"])


def load_eval(engine: Engine, run_ids: list[int], target: str | None = "ensemble") -> pd.DataFrame:
    """Evaluation rows joined with their run: the long format igat.reports consumes.

    Columns: run_id, method, seed, combiner, attack, accuracy, variant, target, num_examples,
    ci_low, ci_high (the accuracy's 95 % Wilson interval), defense, igat, extra.
    """
    columns = ["run_id", "method", "seed", "combiner", "attack", "accuracy", "variant", "target", "num_examples",
               "ci_low", "ci_high", "defense", "igat", "extra"]
    if not run_ids:
        return pd.DataFrame(columns=columns)
    with Session(engine) as s:
        stmt = select(EvalResult, Run).join(Run, EvalResult.run_id == Run.id).where(col(EvalResult.run_id).in_(run_ids))
        if target is not None:
            stmt = stmt.where(EvalResult.target == target)
        rows = s.exec(stmt.order_by(col(EvalResult.id))).all()
        records = [{
            "run_id": r.id, "method": method_label(r.defense, r.igat), "seed": r.seed, "combiner": e.combiner,
            "attack": e.attack, "accuracy": e.accuracy, "variant": r.variant or "", "target": e.target,
            "num_examples": e.num_examples, "ci_low": e.ci_low, "ci_high": e.ci_high, "defense": r.defense,
            "igat": bool(r.igat), "extra": e.extra,
        } for e, r in rows]
    return pd.DataFrame.from_records(records, columns=columns)


def load_member_stats(engine: Engine, run_id: int) -> pd.DataFrame:
    with Session(engine) as s:
        rows = s.exec(
            select(MemberStatRow).where(MemberStatRow.run_id == run_id)
            .order_by(col(MemberStatRow.epoch), col(MemberStatRow.member))
        ).all()
        records = [{"epoch": r.epoch, "member": r.member, "statistic": r.statistic, "value": r.value} for r in rows]
    return pd.DataFrame.from_records(records, columns=["epoch", "member", "statistic", "value"])


def runs_with_results(engine: Engine) -> set[int]:
    with Session(engine) as s:
        return set(s.exec(select(EvalResult.run_id).distinct()).all())


def runs_with_member_eval(engine: Engine) -> set[int]:
    """Runs whose final evaluation has per-member rows (target member_<i>)."""
    with Session(engine) as s:
        return set(s.exec(select(EvalResult.run_id).where(EvalResult.target != "ensemble").distinct()).all())


def runs_with_member_stats(engine: Engine) -> set[int]:
    with Session(engine) as s:
        return set(s.exec(select(MemberStatRow.run_id).distinct()).all())


def filter_runs(df: pd.DataFrame, statuses: list[str] | None = None, datasets: list[str] | None = None,
                defenses: list[str] | None = None, tags: list[str] | None = None, text: str = "") -> pd.DataFrame:
    """The Runs page filters; an empty selection means 'no restriction'."""
    mask = pd.Series(True, index=df.index)
    if statuses:
        mask &= df["status"].isin(statuses)
    if datasets:
        mask &= df["dataset"].isin(datasets)
    if defenses:
        mask &= df["defense"].isin(defenses)
    if tags:
        wanted = set(tags)
        mask &= df["tags"].map(lambda t: bool(wanted & set(tag_list(t))))
    if text.strip():
        needle = text.strip().lower()
        hay = df["name"].str.lower() + " " + df["experiment"].str.lower() + " " + df["method"].str.lower()
        mask &= hay.str.contains(needle, regex=False)
    return df[mask]


def metric_catalog(engine: Engine, run_ids: list[int]) -> pd.DataFrame:
    """Which metrics the runs have: one row per (scope, name) with the number of runs that have it and of
    points in all, most common first (one aggregate query, whatever the number of runs)."""
    columns = ["scope", "name", "runs", "points"]
    if not run_ids:
        return pd.DataFrame(columns=columns)
    with Session(engine) as s:
        rows = s.exec(
            select(Metric.scope, Metric.name, func.count(func.distinct(Metric.run_id)), func.count())
            .where(col(Metric.run_id).in_(run_ids)).group_by(col(Metric.scope), col(Metric.name))
        ).all()
    df = pd.DataFrame.from_records([tuple(r) for r in rows], columns=columns)
    return df.sort_values(["runs", "scope", "name"], ascending=[False, True, True]).reset_index(drop=True)


def load_metric_series(engine: Engine, run_ids: list[int], name: str, scope: str) -> pd.DataFrame:
    """One metric of several runs (for overlaid curves): run_id, step, epoch, value, recorded_at."""
    columns = ["run_id", "step", "epoch", "value", "recorded_at"]
    if not run_ids:
        return pd.DataFrame(columns=columns)
    with Session(engine) as s:
        rows = s.exec(
            select(Metric.run_id, Metric.step, Metric.epoch, Metric.value, Metric.recorded_at)
            .where(col(Metric.run_id).in_(run_ids), Metric.name == name, Metric.scope == scope)
            .order_by(col(Metric.run_id), col(Metric.step))
        ).all()
    return pd.DataFrame.from_records([tuple(r) for r in rows], columns=columns)
