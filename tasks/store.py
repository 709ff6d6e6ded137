"""The experiment store (SQLModel on SQLAlchemy 2): the source of truth the dashboard reads.

SQLite by default (``$IGAT_HOME/igat.db``, WAL, busy timeout) or any SQLAlchemy URL in
``$IGAT_DATABASE_URL`` (PostgreSQL for multi-machine use). Tables: experiment, run, metric,
evalresult, memberstat. Alembic migrations live in ``tasks/migrations``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Index, Text, event
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINAL_STATUSES = {RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled}


class Experiment(SQLModel, table=True):
    """A group of runs launched together (several seeds, an ablation, a sweep)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str
    kind: str = "single"  # single | seeds | ablation | sweep
    created_at: datetime = Field(default_factory=utcnow)
    notes: str = ""


class Run(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int | None = Field(default=None, foreign_key="experiment.id", index=True)
    name: str
    kind: str = "train"  # train | finetune | eval | theory
    config_json: str = Field(sa_column=Column(Text, nullable=False))
    preset: str = "paper"
    dataset: str = ""
    defense: str = ""
    igat: bool = False
    seed: int = 0
    tags: str = ""  # comma-separated
    variant: str = ""  # ablation variant label (e.g. "soft", "hard", "beta0")
    status: str = Field(default=RunStatus.queued, index=True)
    error: str | None = Field(default=None, sa_column=Column(Text))
    worker: str | None = None
    task_id: str | None = None
    cancel_requested: bool = False
    attempts: int = 0
    progress: float = 0.0  # 0..1
    epoch: int = 0
    total_epochs: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    checkpoint_path: str | None = None
    parent_run_id: int | None = Field(default=None, foreign_key="run.id")  # fine-tune base / evaluated run

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json)


class Metric(SQLModel, table=True):
    """One metric point: per step (scope='step') or per epoch (scope='epoch')."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id")
    scope: str = "epoch"  # step | epoch
    step: int  # global step for scope='step', epoch number for scope='epoch'
    epoch: int = 0
    name: str
    value: float

    __table_args__ = (Index("ix_metric_run_name_step", "run_id", "name", "scope", "step", unique=True),)


class EvalResult(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    target: str = "ensemble"  # ensemble | member_<i>
    combiner: str
    attack: str
    accuracy: float
    num_examples: int = 0
    extra_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def extra(self) -> dict[str, Any]:
        return json.loads(self.extra_json or "{}")


class MemberStatRow(SQLModel, table=True):
    __tablename__ = "memberstat"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id")
    epoch: int
    member: int
    statistic: str
    value: float

    __table_args__ = (Index("ix_memberstat_run_epoch", "run_id", "epoch", "member", "statistic", unique=True),)


class Artifact(SQLModel, table=True):
    """A JSON result attached to a run that is not a scalar series (theory diagnostics, reports)."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    name: str
    data_json: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def data(self) -> Any:
        return json.loads(self.data_json)


def igat_home() -> Path:
    home = Path(os.environ.get("IGAT_HOME", Path.home() / ".igat"))
    home.mkdir(parents=True, exist_ok=True)
    return home


def database_url() -> str:
    return os.environ.get("IGAT_DATABASE_URL") or f"sqlite:///{igat_home() / 'igat.db'}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


_ENGINES: dict[str, Engine] = {}


def make_engine(url: str | None = None, create: bool = True) -> Engine:
    url = url or database_url()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if create:
        SQLModel.metadata.create_all(engine)
    return engine


def get_engine(url: str | None = None) -> Engine:
    """One engine per process and URL (create lazily after fork in Celery workers)."""
    url = url or database_url()
    key = f"{os.getpid()}:{url}"
    if key not in _ENGINES:
        _ENGINES[key] = make_engine(url)
    return _ENGINES[key]


def session(url: str | None = None) -> Session:
    return Session(get_engine(url), expire_on_commit=False)
