"""The experiment store (SQLModel on SQLAlchemy 2): the source of truth the dashboard reads.

SQLite by default (``$IGAT_HOME/igat.db``, WAL, busy timeout) or any SQLAlchemy URL in
``$IGAT_DATABASE_URL`` (PostgreSQL for multi-machine use). Tables: experiment, run, metric,
evalresult, memberstat, artifact. The schema is owned by the Alembic migrations in
``tasks/migrations``: every engine made here runs ``alembic upgrade head`` once (``init_db``).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Column, DateTime, Index, Text, event, false
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, Session, SQLModel, create_engine


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (what every timestamp column returns)."""
    return datetime.now(UTC)


class UTCTimestamp(TypeDecorator):
    """Naive UTC in the database (SQLite and PostgreSQL alike), aware UTC in Python.

    Our own type rather than SQLModel's default so the schema and the migrations do not depend on
    the SQLModel version (0.0.50 maps ``datetime`` to a type that rejects naive values)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


def _ts(nullable: bool = True) -> Any:
    return Column(UTCTimestamp(), nullable=nullable)


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
    kind: str = "single"  # single | seeds | ablation | sweep | finetune | eval | theory | study
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(False))
    notes: str = ""


class Run(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int | None = Field(default=None, foreign_key="experiment.id", index=True)
    name: str
    kind: str = "train"  # train | finetune | eval | theory | study (its phases are child train runs)
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
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(False))
    started_at: datetime | None = Field(default=None, sa_column=_ts())
    finished_at: datetime | None = Field(default=None, sa_column=_ts())
    heartbeat_at: datetime | None = Field(default=None, sa_column=_ts())
    checkpoint_path: str | None = None
    parent_run_id: int | None = Field(default=None, foreign_key="run.id")  # fine-tune base / evaluated run
    # Task parameters that are not part of the experiment config (theory diagnostics' params,
    # an evaluation's checkpoint); added by migration 0002.
    params_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    # What a multi-phase run (a study) is doing now, e.g. "seed 1 (2/3): arm igat, epoch 2/2"; migration 0003.
    phase: str | None = Field(default=None, sa_column=Column(Text))
    # The researcher's own notes, and whether the run is archived (hidden from the Runs table by default,
    # kept in the store); migration 0005.
    notes: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    archived: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json)

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json or "{}")


class Metric(SQLModel, table=True):
    """One metric point: per step (scope='step') or per epoch (scope='epoch')."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id")
    scope: str = "epoch"  # step | epoch
    step: int  # global step for scope='step', epoch number for scope='epoch'
    epoch: int = 0
    name: str
    value: float
    # When the point was written (the worker's clock): the x axis "wall time" of the curves. Migration 0006;
    # older points have none.
    recorded_at: datetime | None = Field(default=None, sa_column=_ts())

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
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(False))
    # 95 % Wilson interval of the accuracy (igat.stats) and the row's igat.evaluation.row_key (settings +
    # checkpoint content + row): a resumed or redelivered evaluation skips stored keys and the unique index
    # keeps a key once per run. Added by migration 0004 (which backfills the intervals; old rows have no key).
    ci_low: float | None = None
    ci_high: float | None = None
    eval_key: str | None = None

    __table_args__ = (Index("ix_evalresult_run_key", "run_id", "eval_key", unique=True),)

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
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(False))

    @property
    def data(self) -> Any:
        return json.loads(self.data_json)


def igat_home() -> Path:
    """``$IGAT_HOME`` (default ``~/.igat``), created if needed and kept private (0700): it holds the
    store, the embedded broker's password (broker.json) and the checkpoints."""
    home = Path(os.environ.get("IGAT_HOME", Path.home() / ".igat"))
    return private_dir(home)


def _owned_by_me(st: os.stat_result) -> bool:
    geteuid = getattr(os, "geteuid", None)  # POSIX only; elsewhere file modes mean little
    return geteuid is not None and st.st_uid == geteuid()


def _restrict(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` if it is ours and group or others have any access (earlier versions
    created these files world-readable). Someone else's file is left alone."""
    try:
        st = path.stat()
        if _owned_by_me(st) and st.st_mode & 0o077:
            path.chmod(mode)
    except OSError:
        pass


def private_dir(path: Path) -> Path:
    """Create ``path`` (with parents) as 0700, and tighten it if it exists with wider permissions."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _restrict(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as 0600 if missing (before SQLite or anyone else creates it with the umask's
    0644), else tighten it to 0600."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.is_file():
            _restrict(path, 0o600)
    except OSError:
        pass  # an unwritable folder: whoever opens the file next reports it
    return path


class DatabaseUnavailable(RuntimeError):
    """The store cannot be opened for a reason outside the database driver (its folder cannot be made)."""


def _private_sqlite_files(url: str) -> None:
    """Create the SQLite file's folder, and the file itself as 0600 (SQLite gives the -wal and -shm files
    the database file's mode, so creating that one right is what matters); tighten existing ones."""
    from sqlalchemy.engine import make_url

    db = make_url(url).database
    if not db or db == ":memory:" or db.startswith("file:"):
        return
    path = Path(db)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create the folder {path.parent}: {exc.strerror or exc}") from None
    private_file(path)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            _restrict(extra, 0o600)


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
        _private_sqlite_files(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    elif url.startswith("postgresql"):
        # A server that does not answer (down, firewalled) must fail within seconds, not the OS's minutes.
        engine = create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if create:
        init_db(engine)
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


def _dispose_inherited_engines() -> None:
    # A forked child (Celery prefork) must not use or close the parent's pooled connections: closing
    # a PostgreSQL connection from the child would terminate the parent's session. get_engine keys by
    # pid, so the child makes its own engines; here we only drop the inherited pools without closing.
    for engine in _ENGINES.values():
        engine.dispose(close=False)
    _ENGINES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_dispose_inherited_engines)


def init_db(engine_or_url: Engine | str | None = None) -> Engine:
    """Bring the database schema to the newest migration (``alembic upgrade head``); returns the engine."""
    from tasks.migrate import upgrade

    engine = engine_or_url if isinstance(engine_or_url, Engine) else make_engine(engine_or_url, create=False)
    upgrade(engine)
    return engine
