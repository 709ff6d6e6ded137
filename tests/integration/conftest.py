"""Fixtures for the platform integration tests: a real Redis (127.0.0.1:6379, a dedicated db and a
per-test key prefix so parallel sessions sharing the server never see each other's messages), the
store on SQLite and on a fresh PostgreSQL database per session, Celery workers in a thread or in
real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REDIS_DB = int(os.environ.get("IGAT_TEST_REDIS_DB", "11"))
REDIS_BASE = os.environ.get("IGAT_TEST_REDIS", "redis://127.0.0.1:6379")
PG_ADMIN = os.environ.get("IGAT_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")

# Short crash-recovery timings: heartbeat every 0.5 s, a run is dead after 3 s without one, Redis
# restores unacknowledged messages after 4 s and sweeps every second.
FAST_ENV = {
    "IGAT_HEARTBEAT_SECONDS": "0.5",
    "IGAT_STALE_AFTER": "3",
    "IGAT_VISIBILITY_TIMEOUT": "4",
    "IGAT_UNACKED_RESTORE_INTERVAL": "1",
    "IGAT_UNACKED_RESTORE_THROTTLE": "1",
    "IGAT_METRIC_FLUSH_SECONDS": "0.3",
    "IGAT_CANCEL_POLL_SECONDS": "0.2",
    "OMP_NUM_THREADS": "1",
}


def _redis_ok(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_server() -> str:
    url = f"{REDIS_BASE}/{REDIS_DB}"
    if not _redis_ok(url):
        pytest.skip(f"no Redis at {url}")
    return url


def _pg_admin_connect():
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)


@contextlib.contextmanager
def fresh_postgres_database(name: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database ``name`` (one left over by a killed run is dropped first); the
    store's cached engines are disposed and the database dropped afterwards. Skips when no PostgreSQL answers."""
    try:
        conn = _pg_admin_connect()
    except Exception as exc:
        pytest.skip(f"no PostgreSQL at {PG_ADMIN}: {exc}")
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    from tasks import store

    for engine in list(store._ENGINES.values()):
        engine.dispose()
    store._ENGINES.clear()
    with _pg_admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database igat_test_<pid> for this session, dropped afterwards."""
    with fresh_postgres_database(f"igat_test_{os.getpid()}") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def platform_env(request, tmp_path, monkeypatch, redis_server) -> dict[str, str]:
    """IGAT_HOME in tmp, the store on SQLite or PostgreSQL, a private Redis key prefix, fast timings.
    Returns the environment for worker subprocesses."""
    import torch

    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path / 'igat.db'}"
    else:
        db_url = request.getfixturevalue("postgres_url")
    prefix = f"igat-test-{os.getpid()}-{uuid.uuid4().hex[:8]}:"
    env = {"IGAT_HOME": str(tmp_path / "home"), "IGAT_DATABASE_URL": db_url, "IGAT_BROKER_URL": redis_server,
           "IGAT_REDIS_PREFIX": prefix, **FAST_ENV}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: oversubscribed BLAS threads make tiny runs 10x slower
    yield env
    torch.set_num_threads(threads)
    import redis

    client = redis.Redis.from_url(redis_server)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def celery_app(platform_env):
    """A fresh Celery app per test (a used app keeps its broker pools)."""
    from tasks.celery_app import make_celery

    app = make_celery(platform_env["IGAT_BROKER_URL"])
    yield app
    app.close()


@pytest.fixture
def thread_worker(celery_app):
    """A real Celery worker consuming gpu+cpu in a thread of this process (solo pool)."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(celery_app, pool="solo", concurrency=1, perform_ping_check=False, queues=["gpu", "cpu"],
                      loglevel="WARNING", shutdown_timeout=30) as worker:
        yield worker


class WorkerProcess:
    """``igat worker`` in its own process group (SIGKILL takes the pool children with it)."""

    def __init__(self, env: dict[str, str], name: str, log: Path, *extra: str) -> None:
        self.name = name
        self.log = log
        self._fh = open(log, "ab")
        cmd = [sys.executable, "-m", "igat", "worker", "--hostname", f"{name}@%h", "--loglevel", "info", *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, stdout=self._fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def worker_process(platform_env, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(name: str, *extra: str) -> WorkerProcess:
        w = WorkerProcess(platform_env, f"{name}-{uuid.uuid4().hex[:6]}", tmp_path / f"{name}.log", *extra)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
