"""What a running run tells the dashboard (issue 16, items 2 and 3): the step inside an epoch and the phase
(training / end-of-epoch probe / evaluating attack k of m), progress that moves before the first epoch
ends, and a time left that counts the evaluation by its cost.

The worker's job (``tasks.jobs.execute``) runs in this process on a tiny synthetic config, on a SQLite store.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tasks import jobs, progress
from tasks.store import Run, make_engine
from tests.helpers import synthetic_config

RUN = Run.__table__


def test_eval_clock_weighs_rows_by_cost_and_learns_the_pace():
    now = [10.0]
    clock = progress.EvalClock({"nat": 5.0, "pgd": 95.0}, set(), prior=0.01, clock=lambda: now[0])
    assert clock.seconds_left() == pytest.approx(1.0)  # 100 passes at the prior 10 ms
    clock.start("nat")
    now[0] = 12.5
    clock.finish("nat")  # 5 passes took 2.5 s here: the 95 left take about 47.5 s, not 0.95 s
    assert clock.fraction() == pytest.approx(0.05)
    assert clock.seconds_left() == pytest.approx(47.5)
    clock.start("pgd")
    now[0] = 35.0
    clock.batch(0.5)  # half the PGD examples
    assert clock.fraction() == pytest.approx(0.525)
    assert clock.seconds_left() == pytest.approx(25.0 * 47.5 / 52.5)
    tiny = progress.EvalClock({"nat": 1.0, "pgd": 99.0}, set(), prior=0.01, clock=lambda: now[0])
    tiny.start("nat")
    now[0] = 100.0
    tiny.finish("nat")  # 1 % measured: too little to replace the cost model's pace yet
    assert tiny.seconds_left() == pytest.approx(0.99)
    resumed = progress.EvalClock({"nat": 1.0, "pgd": 99.0}, {"pgd"}, prior=None)
    assert resumed.fraction() == pytest.approx(0.99) and resumed.seconds_left() is None


def test_eta_left_counts_down_from_when_it_was_written():
    from datetime import timedelta

    from tasks.store import utcnow

    now = utcnow()
    record = {"seconds": 900.0, "scope": "run", "written_at": (now - timedelta(seconds=10)).isoformat()}
    assert progress.eta_left(record, now) == pytest.approx(890.0)
    assert progress.eta_left({**record, "seconds": 5.0}, now) == 0.0
    assert progress.eta_left({**record, "seconds": None}, now) is None


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("IGAT_HOME", str(tmp_path / "home"))
    engine = make_engine(f"sqlite:///{tmp_path / 'igat.db'}")
    yield engine
    engine.dispose()


def test_a_run_reports_its_step_phase_and_time_left_from_the_first_batch_to_the_last_result(store, monkeypatch):
    # 256 training examples at batch 64: 4 steps per epoch, fewer than train.log_every (10); the bar moves with
    # the batch polls (the trainer lowers the logging interval of so short a run, igat.training.trainer).
    config = synthetic_config(name="progress", train={"log_every": 10})
    from sqlmodel import Session

    with Session(store) as s:
        run = Run(name="progress", config_json=config.to_json(), dataset="synthetic", defense="standard")
        s.add(run)
        s.commit()
        run_id = run.id
    seen: list[dict] = []
    real = progress.write_eta

    def spy(engine, rid, seconds, scope):  # every report, with the run row as it stands then
        real(engine, rid, seconds, scope)
        with engine.connect() as conn:
            row = conn.execute(select(RUN.c.phase, RUN.c.progress, RUN.c.epoch).where(RUN.c.id == rid)).first()
        seen.append({"phase": row.phase or "", "progress": row.progress, "epoch": row.epoch, "seconds": seconds,
                     "scope": scope})

    monkeypatch.setattr(progress, "write_eta", spy)
    monkeypatch.setattr("tasks.callbacks.write_eta", spy)
    settings = jobs.JobSettings(flush_seconds=0.0, cancel_poll_seconds=0.0, heartbeat_seconds=60.0)
    result = jobs.execute("igat.train", run_id, "test-worker", None, settings=settings, engine=store)
    assert result["status"] == "succeeded", result

    phases = [s["phase"] for s in seen]
    step2 = next(s for s in seen if s["phase"].startswith("training: epoch 1/1, step 2 of 4"))
    assert step2["epoch"] == 0 and step2["progress"] > 0  # progress inside the first epoch
    assert any(p == "training: epoch 1/1, step 4 of 4, then the end-of-epoch probe (natural + PGD-3 on 64 test "
                    "examples)" for p in phases)
    assert "training done (1 epoch(s)), the final evaluation follows" in phases
    evaluating = [s for s in seen if s["phase"].startswith("evaluating: ")]
    assert any(p.startswith("evaluating: PGD on ensemble/average, ") for p in phases)
    assert all(s["scope"] == "run" and s["seconds"] is not None for s in evaluating)
    # Before any evaluation row is measured the time left is the cost model's estimate of the whole evaluation
    first = evaluating[0]
    assert first["seconds"] == pytest.approx(jobs.eval_estimate(config, "cpu"), rel=1e-6)
    # ... and the bar moves by cost: the natural rows are a sliver of it, not one row in ten.
    fractions = [s["progress"] for s in evaluating]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    after_first_row = next(s["progress"] for s in evaluating if s["phase"].startswith("evaluating: PGD"))
    assert after_first_row < jobs.TRAIN_SHARE + 0.1 * (1 - jobs.TRAIN_SHARE)
    with store.connect() as conn:
        assert conn.execute(select(RUN.c.phase).where(RUN.c.id == run_id)).scalar() is None
