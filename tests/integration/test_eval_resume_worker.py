"""The worker's evaluation is incremental and resumable: each result is stored the moment it is computed
(with its interval and key), the phase says what runs, and an evaluation cancelled or crashed half-way
and retried finishes with every result present exactly once, computing only the missing ones.
A real Celery worker (thread, solo pool) on Redis; the store on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlmodel import select

import igat.evaluation as evaluation
from igat.stats import wilson_of_accuracy
from tasks import api
from tasks.store import EvalResult, Run, session
from tests.helpers import synthetic_config
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

FINAL = ("succeeded", "failed", "cancelled")
# 2 combiners x 3 attacks + 2 members x (natural, pgd) = 10 results
ATTACKS = [{"name": "natural"}, {"name": "pgd", "params": {"steps": 2}}, {"name": "fgsm"}]
TOTAL = 10


@pytest.fixture
def checkpoint(tmp_path, platform_env) -> str:
    from igat.training import Trainer

    cfg = synthetic_config(name="evalsrc", train={"eval_examples": 0}, eval={"attacks": []})
    return Trainer(cfg, output_dir=tmp_path / "src", device="cpu", resume=False).fit().checkpoint


def _eval_config():
    return synthetic_config(name="resume-eval", eval={"num_examples": 32, "attacks": ATTACKS})


def _results(run_id: int) -> list[EvalResult]:
    with session() as s:
        return list(s.exec(select(EvalResult).where(EvalResult.run_id == run_id)).all())


def _wait_final(run_id: int) -> Run:
    return wait_for(lambda: (r := api.get_run(run_id)).status in FINAL and r, 120, f"run {run_id} to finish")


class Interrupt:
    """Counts the attack runs of the in-process worker; on call ``at`` does ``action`` (cancel / crash)."""

    def __init__(self, monkeypatch, at: int, action) -> None:
        self.calls, self.at, self.action, self.phases = 0, at, action, []
        real = evaluation.attack_accuracy

        def counted(*args, **kwargs):
            self.calls += 1
            self.phases.append(self.run_phase())
            if self.calls == self.at and self.action is not None:
                self.action()
            return real(*args, **kwargs)

        monkeypatch.setattr(evaluation, "attack_accuracy", counted)
        self.run_id: int | None = None

    def run_phase(self) -> str | None:
        return api.get_run(self.run_id).phase if self.run_id is not None else None


def _check_complete(run_id: int) -> None:
    rows = _results(run_id)
    assert len(rows) == TOTAL
    keys = [r.eval_key for r in rows]
    assert all(keys) and len(set(keys)) == TOTAL  # every result exactly once
    assert len({(r.target, r.combiner, r.attack) for r in rows}) == TOTAL
    for r in rows:
        assert r.num_examples == 32 and (r.ci_low, r.ci_high) == pytest.approx(wilson_of_accuracy(r.accuracy, 32))


@pytest.mark.parametrize("how", ["cancel", "crash"])
def test_an_interrupted_evaluation_resumes_on_retry_without_recomputing(how, thread_worker, celery_app, checkpoint,
                                                                        monkeypatch):
    k = 4  # results stored before the interruption

    def cancel() -> None:
        api.cancel_run(spy.run_id, app=celery_app)
        import time

        time.sleep(0.3)  # past the cancel poll interval (0.2 s): the next stored result sees the flag

    def crash() -> None:
        raise RuntimeError("worker crashed mid-evaluation")

    # cancel while computing result k (stored, then the flag is seen); crash while computing result k + 1
    spy = Interrupt(monkeypatch, k if how == "cancel" else k + 1, cancel if how == "cancel" else crash)
    _, (run_id,) = api.submit_runs([_eval_config()], "resume", kind="eval", run_kind="eval",
                                   params={"checkpoint": checkpoint}, app=celery_app)
    spy.run_id = run_id
    first = _wait_final(run_id)
    assert first.status == ("cancelled" if how == "cancel" else "failed"), first.error
    stored = _results(run_id)
    assert len(stored) == k and len({r.eval_key for r in stored}) == k
    assert spy.phases[1] == "evaluating: PGD on ensemble/average, 2 of 10"
    if how == "cancel":
        assert "a retry computes only the rest" in first.error

    spy.calls, spy.action, spy.phases = 0, None, []
    api.retry_run(run_id, app=celery_app)
    second = _wait_final(run_id)
    assert second.status == "succeeded", second.error
    assert spy.calls == TOTAL - k  # the stored results were not computed again
    assert spy.phases[0] == f"evaluating: {_label(first_missing(stored))}, 1 of {TOTAL - k}"
    assert second.phase is None and second.progress == 1.0
    _check_complete(run_id)
    assert {r.eval_key for r in stored} <= {r.eval_key for r in _results(run_id)}  # kept, not replaced


def first_missing(stored: list[EvalResult]) -> tuple[str, str, str]:
    """The first planned result (evaluate_ensemble's order) not among ``stored``."""
    done = {(r.target, r.combiner, r.attack) for r in stored}
    order = [("ensemble", c, a["name"]) for c in ("average", "max") for a in ATTACKS]
    order += [(f"member_{i}", "-", a) for i in range(2) for a in ("natural", "pgd")]
    return next(o for o in order if o not in done)


def _label(key: tuple[str, str, str]) -> str:
    from igat.reports import ATTACK_LABELS

    target, combiner, attack = key
    where = f"ensemble/{combiner}" if target == "ensemble" else target
    return f"{ATTACK_LABELS.get(attack, attack)} on {where}"


def test_a_changed_checkpoint_replaces_the_stored_results(thread_worker, celery_app, checkpoint, monkeypatch):
    import torch

    _, (run_id,) = api.submit_runs([_eval_config()], "resume", kind="eval", run_kind="eval",
                                   params={"checkpoint": checkpoint}, app=celery_app)
    assert _wait_final(run_id).status == "succeeded"
    before = {r.eval_key for r in _results(run_id)}
    ck = torch.load(checkpoint, weights_only=True)
    name = next(iter(ck["members"][0]))
    ck["members"][0][name] = ck["members"][0][name] + 0.01  # retrained in place
    torch.save(ck, checkpoint)
    with session() as s:  # as if the run had failed after its evaluation: retry it
        run = s.get(Run, run_id)
        run.status = "failed"
        s.add(run)
        s.commit()
    spy = Interrupt(monkeypatch, 0, None)
    api.retry_run(run_id, app=celery_app)
    assert _wait_final(run_id).status == "succeeded"
    assert spy.calls == TOTAL  # nothing reused: the checkpoint's content changed
    _check_complete(run_id)
    assert not before & {r.eval_key for r in _results(run_id)}  # the stale results are gone, not kept beside


# --- migration 0004 ----------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path):
    """An empty database of each kind (PostgreSQL: a database of its own, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mig.db'}"
        return
    import os

    from tests.integration.conftest import fresh_postgres_database

    with fresh_postgres_database(f"igat_test_mig_{os.getpid()}") as url:
        yield url


def test_migration_0004_adds_intervals_to_old_rows_and_the_unique_key(fresh_url):
    from alembic import command
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import IntegrityError

    from tasks.migrate import alembic_config, current_revision, head_revision
    from tasks.store import make_engine

    engine = make_engine(fresh_url, create=False)
    try:
        with engine.connect() as conn:
            command.upgrade(alembic_config(conn), "0003")
            conn.execute(text("INSERT INTO run (name, kind, config_json, preset, dataset, defense, igat, seed, tags, "
                              "variant, status, cancel_requested, attempts, progress, epoch, total_epochs, created_at, "
                              "params_json) VALUES ('old', 'train', '{}', 'paper', 's', 'standard', false, 0, '', '', "
                              "'succeeded', false, 1, 1.0, 1, 1, '2026-01-01 00:00:00', '{}')"))
            run_id = conn.execute(text("SELECT id FROM run")).scalar()
            conn.execute(text("INSERT INTO evalresult (run_id, target, combiner, attack, accuracy, num_examples, "
                              f"created_at) VALUES ({run_id}, 'ensemble', 'average', 'pgd', 0.45, 100, "
                              "'2026-01-01 00:00:00')"))
            conn.commit()
            command.upgrade(alembic_config(conn), "head")
            conn.commit()
            assert current_revision(conn) == head_revision()
            lo, hi, key = conn.execute(text("SELECT ci_low, ci_high, eval_key FROM evalresult")).one()
            assert (lo, hi) == pytest.approx(wilson_of_accuracy(0.45, 100)) and key is None
            insert = text("INSERT INTO evalresult (run_id, target, combiner, attack, accuracy, num_examples, "
                          f"created_at, eval_key) VALUES ({run_id}, 'ensemble', 'max', 'pgd', 0.4, 100, "
                          "'2026-01-01 00:00:00', 'k')")
            conn.execute(insert)
            conn.commit()
            with pytest.raises(IntegrityError):  # one key per run
                conn.execute(insert)
            conn.rollback()
            command.check(alembic_config(conn))  # the models match the migrated schema
            command.downgrade(alembic_config(conn), "0003")
            conn.commit()
            assert "eval_key" not in {c["name"] for c in inspect(conn).get_columns("evalresult")}
            assert conn.execute(text("SELECT count(*) FROM evalresult")).scalar() == 2
    finally:
        engine.dispose()
