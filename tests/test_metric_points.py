"""Metric points for curves: a short run gets enough of them, and each carries the time it was recorded
(the curves' wall-time axis, migration 0006)."""

from __future__ import annotations

from sqlalchemy import inspect, select, text
from sqlmodel import Session

from igat.training import Callback, Trainer
from igat.training.trainer import MIN_STEP_POINTS, step_log_interval
from tasks.callbacks import DBCallback
from tasks.migrate import head_revision
from tasks.store import Metric, Run, make_engine, utcnow
from tests.helpers import synthetic_config


def test_the_step_log_interval_is_lowered_for_short_runs_only():
    assert step_log_interval(10, 40) == 1  # 40 steps: every step, not 4 points
    assert step_log_interval(10, 5 * MIN_STEP_POINTS) == 5
    assert step_log_interval(10, 200 * 391) == 10  # a paper-length run keeps train.log_every
    assert step_log_interval(3, 0) == 1


class StepCounter(Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step(self, epoch, step, metrics) -> None:
        self.steps.append(step)


def test_a_four_step_run_logs_every_step_despite_log_every_ten(tmp_path, monkeypatch):
    monkeypatch.setenv("IGAT_RUNS_DIR", str(tmp_path))
    counter = StepCounter()
    config = synthetic_config(train={"log_every": 10, "eval_examples": 0}, output_dir=str(tmp_path / "run"))
    Trainer(config, [counter]).fit()
    assert counter.steps == [1, 2, 3, 4]  # 256 examples / batch 64; with log_every alone: none


def test_points_written_by_the_worker_carry_their_time(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'igat.db'}")
    with Session(engine) as s:
        run = Run(name="t", config_json="{}", status="running", attempts=1)
        s.add(run)
        s.commit()
        run_id = run.id
    before = utcnow()
    cb = DBCallback(engine, run_id, attempt=1, total_epochs=1, flush_seconds=0.0)
    cb.on_run_start({"steps_per_epoch": 2, "config": {}})
    cb.on_step(1, 1, {"loss": 1.5})
    cb.on_epoch_end(1, {"test_nat_acc_average": 0.5}, [])
    cb.on_step(2, 3, {"loss": 1.0})
    cb.flush()
    with Session(engine) as s:
        points = s.exec(select(Metric).where(Metric.run_id == run_id).order_by(Metric.id)).scalars().all()
    assert [(p.scope, p.name) for p in points] == [("step", "loss"), ("epoch", "test_nat_acc_average"), ("step", "loss")]
    assert all(p.recorded_at is not None and before <= p.recorded_at <= utcnow() for p in points)
    assert points[0].recorded_at <= points[2].recorded_at
    engine.dispose()


def test_migration_0006_adds_the_time_column_to_an_existing_store(tmp_path):
    """A store at revision 0005 with metric rows: upgrading keeps them (no time) and new rows get one."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:  # take the store back to 0005, as an older release left it
        conn.execute(text("ALTER TABLE metric DROP COLUMN recorded_at"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0005'"))
        conn.execute(text("INSERT INTO run (name, kind, config_json, preset, dataset, defense, igat, seed, tags, variant, "
                          "status, cancel_requested, attempts, progress, epoch, total_epochs, created_at, params_json, "
                          "notes, archived) VALUES ('old', 'train', '{}', 'paper', '', '', 0, 0, '', '', 'succeeded', 0, "
                          "1, 1.0, 1, 1, '2026-01-01 00:00:00', '{}', '', 0)"))
        conn.execute(text("INSERT INTO metric (run_id, scope, step, epoch, name, value) VALUES (1, 'step', 1, 1, 'loss', 2.0)"))
    engine.dispose()
    engine = make_engine(url)  # migrates to head
    assert "recorded_at" in {c["name"] for c in inspect(engine).get_columns("metric")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision() == "0006"
        assert conn.execute(text("SELECT value, recorded_at FROM metric")).one() == (2.0, None)
    engine.dispose()
