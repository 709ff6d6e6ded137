"""Run state transitions in the store, each one a conditional UPDATE so that concurrent workers,
redeliveries and the dashboard never race each other into an inconsistent state.

queued --claim--> running --finish--> succeeded | failed | cancelled
queued --cancel--> cancelled;  failed | cancelled --retry--> queued
running (heartbeat older than stale_after: its worker died) --claim--> running (attempt + 1)
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, false, or_, select, update
from sqlalchemy.engine import Engine

from tasks.store import Artifact, Run, RunStatus, utcnow

RUN = Run.__table__
ARTIFACT = Artifact.__table__


class Claim(StrEnum):
    claimed = "claimed"
    missing = "missing"  # no such run
    finished = "finished"  # already succeeded / failed / cancelled: a duplicate delivery
    busy = "busy"  # running elsewhere with a fresh heartbeat: a duplicate delivery
    stale_message = "stale_message"  # the run was re-enqueued under another task id
    cancelled = "cancelled"  # cancel was requested before it started
    exhausted = "exhausted"  # its workers died max_attempts times


@dataclass
class ClaimResult:
    outcome: Claim
    attempt: int = 0
    status: str | None = None


def claim(engine: Engine, run_id: int, worker: str, task_id: str | None, stale_after: float,
          max_attempts: int) -> ClaimResult:
    """Take the run for this worker: queued, or running with a heartbeat older than ``stale_after``."""
    now = utcnow()
    stale = now - timedelta(seconds=stale_after)
    conds = [RUN.c.id == run_id, RUN.c.cancel_requested == false(), RUN.c.attempts < max_attempts]
    if task_id:  # a message whose task id is not the run's current one was superseded by a re-enqueue
        conds.append(or_(RUN.c.task_id.is_(None), RUN.c.task_id == task_id))
    takeable = or_(
        RUN.c.status == RunStatus.queued,
        and_(RUN.c.status == RunStatus.running, or_(RUN.c.heartbeat_at.is_(None), RUN.c.heartbeat_at < stale)),
    )
    with engine.begin() as conn:
        res = conn.execute(
            update(RUN)
            .where(*conds, takeable)
            .values(status=RunStatus.running, worker=worker, task_id=task_id, attempts=RUN.c.attempts + 1,
                    started_at=now, heartbeat_at=now, finished_at=None, error=None)
        )
        row = conn.execute(select(RUN.c.status, RUN.c.attempts, RUN.c.cancel_requested, RUN.c.task_id,
                                  RUN.c.heartbeat_at).where(RUN.c.id == run_id)).first()
    if row is None:
        return ClaimResult(Claim.missing)
    if res.rowcount == 1:
        return ClaimResult(Claim.claimed, row.attempts, row.status)
    if row.status in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled):
        return ClaimResult(Claim.finished, row.attempts, row.status)
    if task_id and row.task_id not in (None, task_id):
        return ClaimResult(Claim.stale_message, row.attempts, row.status)
    if row.cancel_requested:
        finish(engine, run_id, RunStatus.cancelled, only_from=(RunStatus.queued, RunStatus.running),
               error="cancelled before it started" if row.status == RunStatus.queued else None)
        return ClaimResult(Claim.cancelled, row.attempts, RunStatus.cancelled)
    if row.attempts >= max_attempts:
        finish(engine, run_id, RunStatus.failed, only_from=(RunStatus.queued, RunStatus.running),
               error=f"gave up: the run's worker was lost {row.attempts} times (IGAT_MAX_ATTEMPTS={max_attempts})")
        return ClaimResult(Claim.exhausted, row.attempts, RunStatus.failed)
    return ClaimResult(Claim.busy, row.attempts, row.status)


def finish(engine: Engine, run_id: int, status: RunStatus, error: str | None = None, attempt: int | None = None,
           only_from: tuple[RunStatus, ...] = (RunStatus.running,), **values: Any) -> bool:
    """Move the run to a final status if it is still in ``only_from`` (and, given ``attempt``, ours)."""
    conds = [RUN.c.id == run_id, RUN.c.status.in_([str(s) for s in only_from])]
    if attempt is not None:
        conds.append(RUN.c.attempts == attempt)
    vals: dict[str, Any] = {"status": status, "finished_at": utcnow(), **values}
    if error is not None:
        vals["error"] = error
    if status == RunStatus.succeeded:
        vals["progress"] = 1.0
    with engine.begin() as conn:
        return conn.execute(update(RUN).where(*conds).values(**vals)).rowcount == 1


def set_fields(engine: Engine, run_id: int, attempt: int | None = None, **values: Any) -> None:
    conds = [RUN.c.id == run_id]
    if attempt is not None:
        conds += [RUN.c.attempts == attempt, RUN.c.status == RunStatus.running]
    with engine.begin() as conn:
        conn.execute(update(RUN).where(*conds).values(**values))


def put_artifact(engine: Engine, run_id: int, name: str, data: Any) -> None:
    """Replace the run's artifact ``name`` with ``data`` (JSON)."""
    payload = json.dumps(data, default=_json_default)
    with engine.begin() as conn:
        conn.execute(delete(ARTIFACT).where(ARTIFACT.c.run_id == run_id, ARTIFACT.c.name == name))
        conn.execute(ARTIFACT.insert().values(run_id=run_id, name=name, data_json=payload, created_at=utcnow()))


def get_artifact(engine: Engine, run_id: int, name: str) -> Any:
    with engine.connect() as conn:
        raw = conn.execute(select(ARTIFACT.c.data_json).where(ARTIFACT.c.run_id == run_id, ARTIFACT.c.name == name)
                           .order_by(ARTIFACT.c.id.desc())).scalar()
    return None if raw is None else json.loads(raw)


def _json_default(obj: Any) -> Any:
    """numpy / torch scalars and arrays, sets, paths -> JSON."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, set | tuple):
        return list(obj)
    return str(obj)


class Heartbeat:
    """A daemon thread stamping ``run.heartbeat_at`` while this attempt owns the run, so a
    redelivered copy can tell a live run (busy) from one whose worker died (stale)."""

    def __init__(self, engine: Engine, run_id: int, attempt: int, interval: float) -> None:
        self.engine, self.run_id, self.attempt, self.interval = engine, run_id, attempt, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"igat-heartbeat-{run_id}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                set_fields(self.engine, self.run_id, self.attempt, heartbeat_at=utcnow())
            except Exception:  # a transient DB error must not kill the run; the next beat retries
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.interval + 5)
