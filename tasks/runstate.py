"""Run state transitions in the store, each one a conditional UPDATE so that concurrent workers,
redeliveries and the dashboard never race each other into an inconsistent state.

queued --claim--> running --finish--> succeeded | failed | cancelled
queued --cancel--> cancelled;  failed | cancelled --retry--> queued
running (heartbeat older than stale_after: its worker died) --claim--> running (attempt + 1)
running (stale) --take_for_requeue--> queued (new task id);  running (stale, cancel requested) --> cancelled
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, exists, false, or_, select, true, update
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


def _dead(cutoff) -> Any:
    """Running, but its worker stopped stamping the heartbeat before ``cutoff``."""
    return and_(RUN.c.status == RunStatus.running, or_(RUN.c.heartbeat_at.is_(None), RUN.c.heartbeat_at < cutoff))


def not_study_phase() -> Any:
    """Not a phase of a study (a child train run whose parent is a run of kind "study"): only the study's own
    task trains its phases, resuming them from its state; re-queued alone, a phase would train on its own."""
    parent = RUN.alias("parent")
    return or_(RUN.c.parent_run_id.is_(None),
               ~exists().where(parent.c.id == RUN.c.parent_run_id, parent.c.kind == "study"))


def _task_id_is(task_id: str | None) -> Any:
    return RUN.c.task_id.is_(None) if task_id is None else RUN.c.task_id == task_id


@dataclass(frozen=True)
class Requeued:
    """A run this caller moved back to queued: the message to send, and what to restore if sending fails."""

    run_id: int
    kind: str
    task_id: str
    old_task_id: str | None
    old_status: str
    started_at: datetime | None = None  # of the dead attempt (with its last heartbeat: what it ran)
    heartbeat_at: datetime | None = None


def take_for_requeue(engine: Engine, stale_after: float, new_task_id: Callable[[int], str], kinds: tuple[str, ...],
                     include_queued: bool = False) -> list[Requeued]:
    """Move runs of ``kinds`` whose worker died (and, with ``include_queued``, queued runs) to queued
    under a new task id.

    Every worker sweeps for dead runs, so several may see the same one at once: each run is taken with
    its own conditional UPDATE that re-checks staleness and compares the task id, and only the caller
    whose UPDATE hit the row enqueues it. Each UPDATE is its own write transaction (no read before it
    in the same transaction), so on SQLite a loser waits for the lock instead of failing on a stale
    snapshot, then matches nothing."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    wanted = or_(_dead(cutoff), RUN.c.status == RunStatus.queued) if include_queued else _dead(cutoff)
    with engine.connect() as conn:
        candidates = conn.execute(select(RUN.c.id, RUN.c.kind, RUN.c.task_id, RUN.c.status, RUN.c.started_at,
                                         RUN.c.heartbeat_at)
                                  .where(wanted, RUN.c.kind.in_(kinds), RUN.c.cancel_requested == false(),
                                         not_study_phase())
                                  .order_by(RUN.c.id)).all()
    taken: list[Requeued] = []
    for row in candidates:
        still = _dead(cutoff) if row.status == RunStatus.running else RUN.c.status == RunStatus.queued
        tid = new_task_id(row.id)
        with engine.begin() as conn:
            hit = conn.execute(update(RUN).where(RUN.c.id == row.id, RUN.c.cancel_requested == false(),
                                                 _task_id_is(row.task_id), still)
                               .values(status=RunStatus.queued, task_id=tid)).rowcount == 1
        if hit:
            taken.append(Requeued(row.id, row.kind, tid, row.task_id, row.status, row.started_at, row.heartbeat_at))
    return taken


def undo_requeue(engine: Engine, taken: list[Requeued]) -> None:
    """Put runs whose new message could not be sent back as they were, so a later sweep retries them
    (failing them would turn a broker hiccup into lost runs)."""
    for t in taken:
        with engine.begin() as conn:
            conn.execute(update(RUN).where(RUN.c.id == t.run_id, RUN.c.status == RunStatus.queued,
                                           RUN.c.task_id == t.task_id)
                         .values(status=t.old_status, task_id=t.old_task_id))


def cancel_dead(engine: Engine, stale_after: float) -> list[int]:
    """End as cancelled the runs whose cancel was requested and whose worker then died: nobody is left to
    notice the flag, and re-queueing them would only start work the user asked to stop."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    with engine.connect() as conn:
        ids = list(conn.execute(select(RUN.c.id).where(_dead(cutoff), RUN.c.cancel_requested == true())).scalars())
    done = []
    for run_id in ids:
        with engine.begin() as conn:
            hit = conn.execute(update(RUN).where(RUN.c.id == run_id, _dead(cutoff))
                               .values(status=RunStatus.cancelled, finished_at=utcnow(),
                                       error="cancelled; its worker stopped before it could stop the run")).rowcount
        if hit == 1:
            done.append(run_id)
    return done


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


# Seconds each earlier attempt of a run ran, one entry per attempt that ended in a retry or a worker loss: a run's
# duration is their sum plus its current attempt (run.started_at is the current attempt's start).
ATTEMPT_SECONDS = "attempt_seconds"


def bank_attempt(engine: Engine, run_id: int, started_at: datetime | None, ended_at: datetime | None) -> None:
    """Record the time an attempt that is over ran (nothing for one that never started)."""
    if started_at is None or ended_at is None or ended_at <= started_at:
        return
    spent = get_artifact(engine, run_id, ATTEMPT_SECONDS) or []
    put_artifact(engine, run_id, ATTEMPT_SECONDS, [*spent, round((ended_at - started_at).total_seconds(), 3)])


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
