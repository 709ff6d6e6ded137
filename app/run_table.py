"""The Runs table's metric columns, filters, sorting and pages.

Metric columns: each run's final ensemble accuracy per combiner for natural / PGD / AutoAttack (the newest
EvalResult row of each (combiner, attack)), its number of stored results, and its best epoch (the epoch with
the highest end-of-epoch probe PGD accuracy, natural when the run logged no PGD probe). They come from two
aggregate queries (GROUP BY over every run asked for at once), and the values of finished runs are kept in a
process-wide cache keyed by (database, run id, finished_at): only the worker writes these rows, and only while
the run is active, and a retried run finishes with a new finished_at. So the 3 s refresh re-reads only the runs
still queued or running.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Engine

from tasks.store import FINAL_STATUSES, EvalResult, Metric

# Attacks shown as columns, in this order, with their column labels.
METRIC_ATTACKS = {"natural": "Natural", "pgd": "PGD-20", "autoattack": "AutoAttack"}
PROBE_PGD, PROBE_NATURAL = "test_pgd_acc_average", "test_nat_acc_average"
BEST_EPOCH = "best epoch"
PAGE_SIZE = 50
NEWEST = "newest first"

_FINAL = {str(s) for s in FINAL_STATUSES}
_CACHE: dict[tuple[str, int, str], dict[str, Any]] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_LIMIT = 50_000
_IN_LIST_LIMIT = 900  # above this many ids a query reads every run (one scan) instead of a long IN list


def metric_column(attack: str, combiner: str) -> str:
    return f"{METRIC_ATTACKS.get(attack, attack)} {combiner}"


def _combiner_order(combiner: str) -> tuple[int, str]:
    return ({"average": 0, "max": 1}.get(combiner, 2), combiner)


def _restrict(stmt: Any, column: Any, run_ids: list[int] | None) -> Any:
    return stmt if run_ids is None else stmt.where(column.in_(run_ids))


def _final_results(engine: Engine, run_ids: list[int] | None) -> dict[int, dict[str, Any]]:
    """{run id: {"results": n, (attack, combiner): accuracy, ...}} for the runs asked for (None: all)."""
    ev = EvalResult.__table__
    out: dict[int, dict[str, Any]] = {}
    counts = _restrict(select(ev.c.run_id, func.count()).group_by(ev.c.run_id), ev.c.run_id, run_ids)
    newest = _restrict(select(func.max(ev.c.id).label("id"))
                       .where(ev.c.target == "ensemble", ev.c.attack.in_(list(METRIC_ATTACKS)))
                       .group_by(ev.c.run_id, ev.c.combiner, ev.c.attack), ev.c.run_id, run_ids).subquery()
    finals = select(ev.c.run_id, ev.c.attack, ev.c.combiner, ev.c.accuracy).join(newest, newest.c.id == ev.c.id)
    with engine.connect() as conn:
        for run_id, n in conn.execute(counts):
            out.setdefault(int(run_id), {})["results"] = int(n)
        for run_id, attack, combiner, accuracy in conn.execute(finals):
            out.setdefault(int(run_id), {})[(attack, combiner)] = float(accuracy)
    return out


def _best_epochs(engine: Engine, run_ids: list[int] | None) -> dict[int, int]:
    """{run id: best epoch}: the earliest epoch with the highest probe PGD accuracy (natural without PGD)."""
    m = Metric.__table__
    best = _restrict(select(m.c.run_id, m.c.name, func.max(m.c.value).label("best"))
                     .where(m.c.scope == "epoch", m.c.name.in_([PROBE_PGD, PROBE_NATURAL]))
                     .group_by(m.c.run_id, m.c.name), m.c.run_id, run_ids).subquery()
    at = (select(m.c.run_id, m.c.name, func.min(m.c.epoch))
          .join(best, and_(best.c.run_id == m.c.run_id, best.c.name == m.c.name, best.c.best == m.c.value))
          .where(m.c.scope == "epoch").group_by(m.c.run_id, m.c.name))
    found: dict[int, dict[str, int]] = {}
    with engine.connect() as conn:
        for run_id, name, epoch in conn.execute(at):
            found.setdefault(int(run_id), {})[name] = int(epoch)
    return {rid: names.get(PROBE_PGD, names.get(PROBE_NATURAL)) for rid, names in found.items()}


def _read(engine: Engine, run_ids: list[int]) -> dict[int, dict[str, Any]]:
    wanted = set(run_ids)
    restrict = None if len(run_ids) > _IN_LIST_LIMIT else run_ids
    results = _final_results(engine, restrict)
    epochs = _best_epochs(engine, restrict)
    return {rid: {**results.get(rid, {}), BEST_EPOCH: epochs.get(rid)} for rid in wanted}


def _cache_key(engine: Engine, run: dict[str, Any]) -> tuple[str, int, str] | None:
    """The cache key of a finished run (None: an active run, always re-read)."""
    if run["status"] not in _FINAL:
        return None
    finished = run.get("finished_at")
    stamp = "" if finished is None or (isinstance(finished, float) and math.isnan(finished)) else str(finished)
    return (engine.url.render_as_string(hide_password=True), int(run["id"]), stamp)


def run_metrics(engine: Engine, runs: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """The metric values of every run in ``runs`` (a load_runs frame): cached for finished runs."""
    keys = {int(r["id"]): _cache_key(engine, r) for r in runs[["id", "status", "finished_at"]].to_dict("records")}
    values: dict[int, dict[str, Any]] = {}
    with _CACHE_LOCK:
        for rid, key in keys.items():
            if key is not None and key in _CACHE:
                values[rid] = _CACHE[key]
    missing = [rid for rid in keys if rid not in values]
    if missing:
        fresh = _read(engine, missing)
        values.update(fresh)
        with _CACHE_LOCK:
            if len(_CACHE) > _CACHE_LIMIT:
                _CACHE.clear()
            for rid in missing:
                if keys[rid] is not None:
                    _CACHE[keys[rid]] = fresh[rid]
    return values


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def metric_frame(engine: Engine, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run of ``runs`` (same index order): a percent column per (attack, combiner) that any of
    them has (NaN where a run has none), ``best epoch`` (nullable integer) and ``results`` (stored rows)."""
    values = run_metrics(engine, runs)
    pairs = sorted({k for v in values.values() for k in v if isinstance(k, tuple)},
                   key=lambda ac: (list(METRIC_ATTACKS).index(ac[0]), _combiner_order(ac[1])))
    ids = [int(i) for i in runs["id"]]
    frame = pd.DataFrame(index=runs.index)
    for attack, combiner in pairs:
        frame[metric_column(attack, combiner)] = [100.0 * values[i][(attack, combiner)]
                                                  if (attack, combiner) in values[i] else math.nan for i in ids]
    frame[BEST_EPOCH] = pd.array([values[i].get(BEST_EPOCH) for i in ids], dtype="Int64")
    frame["results"] = [int(values[i].get("results", 0)) for i in ids]
    return frame


def visible(runs: pd.DataFrame, show_archived: bool, only_with_results: bool, metrics: pd.DataFrame) -> pd.DataFrame:
    """The archived / has-results filters (the page's other filters are ``app.data.filter_runs``)."""
    mask = pd.Series(True, index=runs.index)
    if not show_archived:
        mask &= ~runs["archived"].astype(bool)
    if only_with_results:
        mask &= metrics.loc[runs.index, "results"] > 0
    return runs[mask]


def sort_choices(metrics: pd.DataFrame) -> list[str]:
    return [NEWEST, *[c for c in metrics.columns if c != "results"], "name"]


def sorted_runs(runs: pd.DataFrame, metrics: pd.DataFrame, by: str, descending: bool) -> pd.DataFrame:
    """``runs`` ordered by ``by`` (a metric column, "name", or newest first); missing values last."""
    if by == NEWEST or (by not in metrics.columns and by != "name"):
        return runs.sort_values("id", ascending=not descending, kind="stable")
    key = runs["name"].str.lower() if by == "name" else metrics.loc[runs.index, by].astype("Float64")
    order = key.sort_values(ascending=not descending, na_position="last", kind="stable").index
    return runs.loc[order]


@dataclass(frozen=True)
class Page:
    number: int  # 1-based
    count: int  # pages in all
    first: int  # 0-based index of the first row shown
    stop: int  # one past the last row shown
    total: int

    def caption(self) -> str:
        if self.total == 0:
            return "showing 0 of 0"
        return f"showing {self.first + 1}–{self.stop} of {self.total}"


def page_of(total: int, number: int, size: int = PAGE_SIZE) -> Page:
    """Page ``number`` (clamped to 1..count) of ``total`` rows, ``size`` rows a page."""
    count = max(1, math.ceil(total / size))
    number = min(max(int(number), 1), count)
    first = (number - 1) * size
    return Page(number=number, count=count, first=first, stop=min(first + size, total), total=total)
