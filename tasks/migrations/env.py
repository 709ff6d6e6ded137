"""Alembic environment for the experiment store.

The connection normally comes from ``tasks.migrate`` (``config.attributes["connection"]``), which
also holds the migration lock. Run by hand, the URL comes from ``-x url=...``, then
``sqlalchemy.url``, then ``tasks.store.database_url()``. Logging is left alone on purpose: a
library must not reconfigure the host application's loggers (fileConfig would).
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import tasks.store  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata


def _url() -> str:
    from tasks.store import database_url

    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url") or database_url()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from tasks.store import make_engine

    engine = make_engine(_url(), create=False)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
