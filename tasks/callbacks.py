"""The training callback that writes a run's progress into the store without slowing it down.

Metric points are buffered and written in one transaction every ``flush_rows`` rows or
``flush_seconds`` seconds, and at every epoch end / checkpoint / run end. Writes are upserts on
the natural keys (run, name, scope, step) and (run, epoch, member, statistic), and a resumed run
first deletes the points after its checkpoint (``truncate_after``), so redelivered or retried runs
never duplicate rows and never leave gaps. ``should_stop`` polls ``run.cancel_requested`` at most
every ``cancel_poll_seconds`` (cooperative cancel at the next batch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from igat.training import Callback
from tasks.progress import SCOPE_RUN, SCOPE_TRAINING, probe_text, seconds_left, training_phase, write_eta
from tasks.store import MemberStatRow, Metric, Run, RunStatus, utcnow

METRIC = Metric.__table__
MEMBERSTAT = MemberStatRow.__table__
RUN = Run.__table__


def upsert(conn: Connection, table, rows: Sequence[dict[str, Any]], keys: Sequence[str], update_cols: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE on SQLite/PostgreSQL; delete-then-insert elsewhere."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        ins = dialect_insert(table)
        stmt = ins.on_conflict_do_update(index_elements=list(keys), set_={c: ins.excluded[c] for c in update_cols})
        conn.execute(stmt, list(rows))
        return
    for row in rows:
        conn.execute(delete(table).where(and_(*(table.c[k] == row[k] for k in keys))))
    conn.execute(insert(table), list(rows))


def truncate_after(engine: Engine, run_id: int, epoch: int, step: int) -> None:
    """Delete a run's points written after the checkpoint it resumes from (epoch, global step)."""
    with engine.begin() as conn:
        conn.execute(delete(METRIC).where(METRIC.c.run_id == run_id, or_(
            and_(METRIC.c.scope == "step", METRIC.c.step > step),
            and_(METRIC.c.scope == "epoch", METRIC.c.step > epoch),
        )))
        conn.execute(delete(MEMBERSTAT).where(MEMBERSTAT.c.run_id == run_id, MEMBERSTAT.c.epoch > epoch))


def _numeric(metrics: dict[str, Any]) -> Iterable[tuple[str, float]]:
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)  # 0-d tensors, numpy scalars
            except (TypeError, ValueError):
                continue
        value = float(value)
        if math.isfinite(value):
            yield name, value


class DBCallback(Callback):
    """Streams one run's metrics, member statistics, progress and heartbeat into the store."""

    def __init__(
        self,
        engine: Engine,
        run_id: int,
        attempt: int,
        total_epochs: int,
        flush_rows: int = 500,
        flush_seconds: float = 2.0,
        cancel_poll_seconds: float = 0.5,
        progress_share: float = 1.0,
        eval_seconds: float | None = None,
    ) -> None:
        self.engine = engine
        self.run_id = run_id
        self.attempt = attempt
        self.total_epochs = max(total_epochs, 1)
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.cancel_poll_seconds = cancel_poll_seconds
        self.progress_share = progress_share  # the rest of the bar is the final evaluation
        self.eval_seconds = eval_seconds  # the final evaluation's estimated time (None: none, or unknown here)
        self.steps_per_epoch = 1
        self.epoch = 0
        self.progress = 0.0
        # Step progress inside an epoch: the trainer polls should_stop once before every batch, while on_step
        # comes only every train.log_every steps (never, in an epoch shorter than that).
        self.batches_started = 0  # in the current epoch
        self.batches_done = 0
        self.probe = ""  # what the end-of-epoch probe runs (tasks.progress.probe_text)
        self.phase: str | None = None
        self._t0 = time.monotonic()
        self._start_fraction = 0.0
        self.checkpoint_path: str | None = None
        self._metrics: list[dict[str, Any]] = []
        self._stats: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._last_poll = 0.0
        self._stop = False
        self.superseded = False  # another worker took the run over (we were considered dead)
        self.rows_written = 0
        self.flushes = 0

    # --- trainer events --------------------------------------------------------------------
    def on_run_start(self, info: dict[str, Any]) -> None:
        self.steps_per_epoch = max(int(info.get("steps_per_epoch") or 1), 1)
        self.epoch = int(info.get("start_epoch") or 0)
        self.probe = probe_text((info.get("config") or {}).get("train") or {})
        self.batches_started = self.batches_done = 0
        self._t0, self._start_fraction = time.monotonic(), self.training_fraction()
        self.progress = self.progress_share * self._start_fraction
        self.phase = training_phase(self.epoch + 1, self.total_epochs, 0, self.steps_per_epoch, self.probe)
        self.flush()

    def training_fraction(self) -> float:
        within = min(self.batches_done / self.steps_per_epoch, 1.0)
        return min((self.epoch + within) / self.total_epochs, 1.0)

    def _advance(self, done_in_epoch: int) -> None:
        self.batches_done = max(self.batches_done, done_in_epoch)
        self.progress = self.progress_share * self.training_fraction()

    def on_step(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self._metrics.extend(
            {"run_id": self.run_id, "scope": "step", "step": step, "epoch": epoch, "name": n, "value": v,
             "recorded_at": now}
            for now in [utcnow()] for n, v in _numeric(metrics)
        )
        self._advance(step - (epoch - 1) * self.steps_per_epoch)
        if len(self._metrics) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _batch_starts(self) -> None:
        """The trainer is about to run the next batch (should_stop is polled once per batch): the one before is done."""
        self.batches_started += 1
        self._advance(self.batches_started - 1)
        self.phase = training_phase(self.epoch + 1, self.total_epochs, self.batches_started, self.steps_per_epoch,
                                    self.probe)
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], member_stats) -> None:
        self._metrics.extend(
            {"run_id": self.run_id, "scope": "epoch", "step": epoch, "epoch": epoch, "name": n, "value": v,
             "recorded_at": now}
            for now in [utcnow()] for n, v in _numeric(metrics)
        )
        self._stats.extend(
            {"run_id": self.run_id, "epoch": epoch, "member": int(s.member), "statistic": s.statistic, "value": float(s.value)}
            for s in member_stats
            if math.isfinite(float(s.value))
        )
        self.epoch = epoch
        self.batches_started = self.batches_done = 0
        self.progress = self.progress_share * self.training_fraction()
        last = epoch >= self.total_epochs
        follows = ", the final evaluation follows" if self.progress_share < 1 else ""
        self.phase = (f"training done ({epoch} epoch(s)){follows}" if last
                      else f"training: epoch {epoch}/{self.total_epochs} done")
        self.flush()

    def on_checkpoint(self, epoch: int, path: str) -> None:
        self.checkpoint_path = path
        self.flush()

    def on_run_end(self, summary: dict[str, Any]) -> None:
        self.flush()

    def should_stop(self) -> bool:
        self._batch_starts()
        now = time.monotonic()
        if self._stop or now - self._last_poll < self.cancel_poll_seconds:
            return self._stop
        self._last_poll = now
        with self.engine.connect() as conn:
            row = conn.execute(
                select(RUN.c.cancel_requested, RUN.c.attempts, RUN.c.status).where(RUN.c.id == self.run_id)
            ).first()
        if row is None or row.attempts != self.attempt or row.status != RunStatus.running:
            self.superseded = True  # deleted, or reclaimed by another worker: stop without touching it
            self._stop = True
        elif row.cancel_requested:
            self._stop = True
        return self._stop

    # --- writing -------------------------------------------------------------------------------
    def flush(self) -> None:
        metrics, self._metrics = self._metrics, []
        stats, self._stats = self._stats, []
        values: dict[str, Any] = {"progress": self.progress, "epoch": self.epoch, "heartbeat_at": utcnow()}
        if self.phase is not None:
            values["phase"] = self.phase
        if self.checkpoint_path:
            values["checkpoint_path"] = self.checkpoint_path
        with self.engine.begin() as conn:
            upsert(conn, METRIC, metrics, ("run_id", "name", "scope", "step"), ("value", "epoch", "recorded_at"))
            upsert(conn, MEMBERSTAT, stats, ("run_id", "epoch", "member", "statistic"), ("value",))
            # Only while this attempt owns the run: a superseded worker must not overwrite progress.
            conn.execute(update(RUN).where(RUN.c.id == self.run_id, RUN.c.attempts == self.attempt,
                                           RUN.c.status == RunStatus.running).values(**values))
        self.rows_written += len(metrics) + len(stats)
        self.flushes += 1
        self._last_flush = time.monotonic()
        write_eta(self.engine, self.run_id, *self.time_left())

    def time_left(self) -> tuple[float | None, str]:
        """(seconds, scope) left: the training extrapolated from this attempt's pace, plus the evaluation's
        estimate when there is one (scope "training" when it follows without one)."""
        fraction = self.training_fraction()
        train = seconds_left(time.monotonic() - self._t0, fraction - self._start_fraction, 1.0 - fraction)
        if self.progress_share >= 1.0:
            return train, SCOPE_RUN
        if self.eval_seconds is None:
            return train, SCOPE_TRAINING
        return (None if train is None else train + self.eval_seconds), SCOPE_RUN
