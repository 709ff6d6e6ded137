"""Submitting without a usable broker, and argument validation (no Redis needed)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from igat.config import ConfigError
from tasks import api
from tasks.store import Experiment, Run, session
from tests.helpers import synthetic_config


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("IGAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IGAT_DATABASE_URL", f"sqlite:///{tmp_path / 'igat.db'}")
    monkeypatch.delenv("IGAT_BROKER_URL", raising=False)
    return tmp_path


def _counts() -> tuple[int, int]:
    with session() as s:
        return len(s.exec(select(Experiment)).all()), len(s.exec(select(Run)).all())


def test_no_broker_configured_is_a_clear_error_and_writes_nothing(home):
    with pytest.raises(api.NoBrokerError, match="igat up"):
        api.submit_runs([synthetic_config()], "nowhere")
    assert _counts() == (0, 0)


def test_unreachable_broker_fails_fast_and_writes_nothing(home):
    import time

    from tasks.celery_app import make_celery

    app = make_celery("redis://127.0.0.1:1/0")
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=r"the broker at redis://127.0.0.1:1/0 is unreachable \(.*Connection refused"):
        api.submit_runs([synthetic_config()], "down", app=app)
    assert time.monotonic() - t0 < 5  # not Celery's minute of reconnect attempts
    assert _counts() == (0, 0)


def test_submit_arguments_are_validated_before_anything_is_written(home):
    from tasks.celery_app import make_celery

    app = make_celery("redis://127.0.0.1:1/0")  # never contacted: every call below fails validation first
    cfg = synthetic_config()
    with pytest.raises(api.SubmitError, match="configs: give at least one"):
        api.submit_runs([], "x", app=app)
    with pytest.raises(api.SubmitError, match="kind: 'grid' is not one of"):
        api.submit_runs([cfg], "x", kind="grid", app=app)
    with pytest.raises(api.SubmitError, match="variants: 1 labels for 2 configs"):
        api.submit_runs([cfg, cfg], "x", variants=["a"], app=app)
    with pytest.raises(api.SubmitError, match="experiment_name"):
        api.submit_runs([cfg], "  ", app=app)
    with pytest.raises(ConfigError, match="optim.lr"):
        api.submit_runs([{**cfg.to_dict(), "optim": {"lr": -1}}], "x", app=app)
    with pytest.raises(api.SubmitError, match="seeds: duplicates"):
        api.submit_seeds(cfg, [1, 1], app=app)
    with pytest.raises(api.SubmitError, match=r"seeds: -1 is not an integer in \[0, 2147483647\]"):
        api.submit_seeds(cfg, [-1], app=app)
    with pytest.raises(api.SubmitError, match="grid"):
        api.submit_sweep(cfg, {"optim.lr": []}, app=app)
    with pytest.raises(KeyError, match="run 42 does not exist"):
        api.cancel_run(42, app=app)
    with pytest.raises(KeyError, match="run 42 does not exist"):
        api.retry_run(42, app=app)
    assert _counts() == (0, 0)
