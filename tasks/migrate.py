"""Run the Alembic migrations programmatically (``init_db``), safely from several processes.

The dashboard, the CLI and every worker call this on their first database access, so two
processes may race to create a fresh database: the upgrade runs under a lock (an exclusive
``flock`` next to a SQLite file, ``pg_advisory_lock`` on PostgreSQL). A database created before
migrations existed (``SQLModel.metadata.create_all``) is stamped with the revision its columns
match and then upgraded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

PACKAGE_DIR = Path(__file__).resolve().parent
_PG_LOCK_KEY = 0x16A7_0001  # any constant: one advisory lock for "igat schema migration"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config(str(PACKAGE_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(PACKAGE_DIR / "migrations"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _file_lock(db_path: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the race is only on first creation
        yield
        return
    lock_path = f"{db_path}.migrate.lock"
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _legacy_revision(conn: Connection) -> str | None:
    """The revision an unversioned database created by ``create_all`` corresponds to (None: empty)."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables or "run" not in tables:
        return None
    columns = {c["name"] for c in inspect(conn).get_columns("run")}
    if "metric" in tables and "recorded_at" in {c["name"] for c in inspect(conn).get_columns("metric")}:
        return "0006"
    if "archived" in columns:
        return "0005"
    if "evalresult" in tables and "eval_key" in {c["name"] for c in inspect(conn).get_columns("evalresult")}:
        return "0004"
    if "phase" in columns:
        return "0003"
    return "0002" if "params_json" in columns else "0001"


def _upgrade_on(conn: Connection) -> None:
    legacy = _legacy_revision(conn)
    if legacy is not None:
        command.stamp(alembic_config(conn), legacy)
    if current_revision(conn) != head_revision():
        command.upgrade(alembic_config(conn), "head")
    if legacy is not None:
        # An early create_all database may lack tables added to the models before migrations
        # existed (e.g. artifact); create whatever is missing (checkfirst, existing data untouched).
        from sqlmodel import SQLModel

        import tasks.store  # noqa: F401  (the tables)

        SQLModel.metadata.create_all(conn)


def upgrade(engine: Engine) -> None:
    """``alembic upgrade head`` on ``engine``'s database, under a cross-process lock."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(os.path.abspath(url.database)), engine.connect() as conn:
            _upgrade_on(conn)
            conn.commit()
        return
    with engine.connect() as conn:
        if url.get_backend_name() == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
        try:
            _upgrade_on(conn)
            conn.commit()
        finally:
            if url.get_backend_name() == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
