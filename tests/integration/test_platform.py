"""The experiment platform end to end: real Redis, real Celery workers (a thread, or processes that
get SIGKILLed), the store on SQLite and on PostgreSQL (every test runs on both)."""

from __future__ import annotations

import json
import signal
import time

import pytest
from sqlmodel import select

from tasks import api
from tasks.store import EvalResult, MemberStatRow, Metric, Run, session
from tests.helpers import synthetic_config
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

FINAL = ("succeeded", "failed", "cancelled")


def tiny_config(epochs: int = 2, train_size: int = 256, **train):
    """Tiny synthetic run: 8x8 images, 2 members; 32-example batches."""
    return synthetic_config(
        data={"synthetic_train_size": train_size},
        train={"epochs": epochs, "batch_size": 32, "eval_examples": 32, "eval_pgd_steps": 1, **train},
        eval={"num_examples": 32, "attacks": [{"name": "natural"}, {"name": "pgd", "params": {"steps": 2}}]},
    )


def run_row(run_id: int) -> Run:
    return api.get_run(run_id)


def wait_final(run_id: int, timeout: float = 120) -> Run:
    return wait_for(lambda: (r := run_row(run_id)).status in FINAL and r, timeout, f"run {run_id} to finish")


def metric_steps(run_id: int, name: str, scope: str = "step") -> list[int]:
    with session() as s:
        return list(s.exec(select(Metric.step).where(Metric.run_id == run_id, Metric.name == name,
                                                     Metric.scope == scope).order_by(Metric.step)).all())


def test_submit_run_succeeds_with_metrics_and_evaluation(thread_worker, celery_app):
    cfg = tiny_config(epochs=2)
    exp_id, (run_id,) = api.submit_runs([cfg], "platform-ok", app=celery_app)
    run = wait_final(run_id)
    assert run.status == "succeeded", run.error
    assert run.experiment_id == exp_id and run.attempts == 1 and run.progress == 1.0 and run.epoch == 2
    assert run.started_at and run.finished_at and run.finished_at >= run.started_at
    assert run.checkpoint_path and run.checkpoint_path.endswith(f"runs/{run_id}/last.pt")
    steps_per_epoch = 256 // 32
    assert metric_steps(run_id, "loss") == list(range(1, 2 * steps_per_epoch + 1))
    assert metric_steps(run_id, "test_nat_acc_average", "epoch") == [1, 2]
    ev = api.eval_results_frame([run_id])
    # 2 combiners + 2 members, times natural and pgd
    assert len(ev) == 8
    assert set(ev.attack) == {"natural", "pgd"} and set(ev.target) == {"ensemble", "member_0", "member_1"}
    assert ev.accuracy.between(0, 1).all() and (ev.num_examples == 32).all()
    frame = api.metrics_frame(run_id, "epoch", names=["lr"])
    assert list(frame.step) == [1, 2]
    assert api.list_runs(experiment_id=exp_id)[0].id == run_id

    # a separate evaluation of the trained checkpoint, with other eval settings
    _, (ev_id,) = api.submit_evaluation(run_id, {"attacks": [{"name": "fgsm"}], "per_member": False},
                                        app=celery_app)
    ev_run = wait_final(ev_id)
    assert ev_run.status == "succeeded", ev_run.error
    assert ev_run.parent_run_id == run_id and ev_run.checkpoint_path == run.checkpoint_path
    ev2 = api.eval_results_frame([ev_id])
    assert sorted(zip(ev2.target, ev2.combiner, ev2.attack)) == [("ensemble", "average", "fgsm"),
                                                                ("ensemble", "max", "fgsm")]
    # theory diagnostics: stored as an artifact, or a clear error while igat.theory lacks the entry point
    import igat.theory

    params = {"num_examples": 16, "pgd_steps": 1, "pair_pool": 32, "k_pairs": 4, "spectral_examples": 2,
              "bootstrap_resamples": 100}
    _, (th_id,) = api.submit_theory(run_id, params, app=celery_app)
    th = wait_final(th_id)
    if hasattr(igat.theory, "run_diagnostics"):
        assert th.status == "succeeded", th.error
        assert isinstance(api.get_artifact(th_id, "theory"), dict)
    else:
        assert th.status == "failed" and "igat.theory has no run_diagnostics" in th.error

    # iGAT fine-tuning of the trained checkpoint (the parent's checkpoint becomes train.init_checkpoint)
    ft_cfg = cfg.to_dict()
    ft_cfg["igat"].update(enabled=True, attack={"steps": 1})
    ft_cfg["train"]["epochs"] = 1
    ft_cfg["eval"]["attacks"] = [{"name": "natural"}]
    _, (ft_id,) = api.submit_finetune(run_id, ft_cfg, app=celery_app)
    ft = wait_final(ft_id)
    assert ft.status == "succeeded", ft.error
    assert ft.kind == "finetune" and ft.igat and ft.parent_run_id == run_id
    assert ft.config["train"]["init_checkpoint"] == run.checkpoint_path
    stats = api.member_stats_frame(ft_id)
    assert len(stats) > 0 and set(stats.epoch) == {1}


def test_bad_config_sent_to_the_task_fails_without_killing_the_worker(thread_worker, celery_app):
    with session() as s:
        bad_epochs = synthetic_config().to_dict()
        bad_epochs["train"]["epochs"] = 0
        bad_defense = synthetic_config().to_dict()
        bad_defense["defense"]["name"] = "no-such-defense"
        runs = [Run(name="bad-epochs", config_json=json.dumps(bad_epochs)),
                Run(name="bad-defense", config_json=json.dumps(bad_defense)),
                Run(name="bad-json", config_json="{not json"), Run(name="not-a-mapping", config_json="[1, 2]")]
        s.add_all(runs)
        s.commit()
        ids = [r.id for r in runs]
    for rid in ids:  # straight to the task, bypassing submit's validation
        celery_app.send_task("igat.train", args=(rid,))
    celery_app.send_task("igat.train", args=(10**9,))  # a run that does not exist
    bad_epochs, bad_defense, bad_json, not_mapping = (wait_final(r, 60) for r in ids)
    assert bad_epochs.status == "failed"
    assert bad_epochs.error == "invalid config: train.epochs: Input should be greater than or equal to 1"
    assert bad_defense.status == "failed"
    assert "defense.name" in bad_defense.error and "no-such-defense" in bad_defense.error
    assert bad_json.status == "failed" and "not valid JSON" in bad_json.error
    assert not_mapping.status == "failed" and "mapping" in not_mapping.error
    # the same worker still runs good work
    _, (ok,) = api.submit_runs([tiny_config(epochs=1)], "after-bad", app=celery_app)
    assert wait_final(ok).status == "succeeded"


def test_cancel_queued_and_running_then_retry_resumes(thread_worker, celery_app):
    cfg = tiny_config(epochs=3, train_size=1024)  # 32 steps per epoch
    _, (running,) = api.submit_runs([cfg], "to-cancel-running", app=celery_app)
    _, (queued,) = api.submit_runs([tiny_config(epochs=1)], "to-cancel-queued", app=celery_app)
    # the single worker is busy with the first run once its first epoch is checkpointed
    wait_for(lambda: run_row(running).epoch >= 1 and run_row(running).checkpoint_path, 90, "epoch 1 checkpoint")
    assert run_row(queued).status == "queued"
    assert api.cancel_run(queued, app=celery_app) == "cancelled"
    assert run_row(queued).status == "cancelled"  # immediately, not when a worker sees it
    t0 = time.monotonic()
    assert api.cancel_run(running, app=celery_app) == "running"
    run = wait_final(running, 30)
    latency = time.monotonic() - t0
    assert run.status == "cancelled", run.error
    assert latency < 10, f"cancel took {latency:.1f} s"
    kept = metric_steps(running, "loss")
    assert kept and kept == list(range(1, len(kept) + 1))  # the metrics so far are kept, gap-free
    assert run.epoch >= 1 and run.checkpoint_path
    # the queued one never started, even after the worker got free
    time.sleep(1.0)
    q = run_row(queued)
    assert q.status == "cancelled" and q.attempts == 0 and metric_steps(queued, "loss") == []
    # retry resumes the cancelled run from its last checkpoint and completes it
    assert api.retry_run(running, app=celery_app) == running
    with pytest.raises(api.SubmitError, match="only failed or cancelled"):
        api.retry_run(running, app=celery_app)  # queued or running again: not retryable
    run = wait_final(running, 120)
    assert run.status == "succeeded", run.error
    attempts = api.get_artifact(running, "attempts")
    assert [a["start_epoch"] >= 1 for a in attempts] == [False, True]
    assert metric_steps(running, "loss") == list(range(1, 3 * 32 + 1))
    assert metric_steps(running, "train_loss", "epoch") == [1, 2, 3]


def test_worker_killed_mid_run_is_resumed_by_a_new_worker(worker_process, platform_env):
    from tasks.celery_app import make_celery

    app = make_celery(platform_env["IGAT_BROKER_URL"])
    cfg = tiny_config(epochs=3, train_size=1024)  # 32 steps per epoch
    _, (run_id,) = api.submit_runs([cfg], "crash", app=app)
    # --no-recover: the new worker must get the run through Redis' redelivery of the unacked message
    first = worker_process("first", "--no-recover")
    # kill once epoch 1 is checkpointed and epoch 2 has written some step metrics
    wait_for(lambda: run_row(run_id).checkpoint_path and max(metric_steps(run_id, "loss") or [0]) > 32 + 3, 120,
             "epoch 2 in progress", interval=0.1)
    first.kill(signal.SIGKILL)
    dead = run_row(run_id)
    assert dead.status == "running" and dead.attempts == 1
    written_before = metric_steps(run_id, "loss")
    assert written_before[-1] < 3 * 32, "the run finished before the kill; make it longer"
    second = worker_process("second", "--no-recover")
    # Redis hands the unacked message back on kombu's restore sweep (every 10 s, throttled), then the rest of the
    # run trains and evaluates: ~30 s alone, but it once took over 150 s inside the full suite.
    run = wait_final(run_id, 300)
    assert run.status == "succeeded", f"{run.error}\n--- worker log ---\n{second.output()[-3000:]}"
    assert run.attempts == 2 and run.worker.startswith(second.name)
    assert second.output().count(f"igat-run-{run_id}-") >= 1  # the original message (same task id), redelivered
    assert run.task_id == dead.task_id
    attempts = api.get_artifact(run_id, "attempts")
    assert len(attempts) == 2 and attempts[0]["start_epoch"] == 0 and attempts[1]["start_epoch"] >= 1
    # no gaps, no duplicates: every step once, every epoch once
    assert metric_steps(run_id, "loss") == list(range(1, 3 * 32 + 1))
    assert metric_steps(run_id, "lr") == list(range(1, 3 * 32 + 1))
    assert metric_steps(run_id, "train_loss", "epoch") == [1, 2, 3]
    with session() as s:
        assert len(s.exec(select(EvalResult).where(EvalResult.run_id == run_id)).all()) == 8
        stats = s.exec(select(MemberStatRow).where(MemberStatRow.run_id == run_id)).all()
        assert len({(m.epoch, m.member, m.statistic) for m in stats}) == len(stats)
    app.close()


def test_requeue_stale_recovers_a_run_whose_message_was_lost(thread_worker, celery_app):
    from datetime import timedelta

    from tasks.store import utcnow

    with session() as s:  # a worker died mid-run and its message is gone (e.g. a broker restart)
        run = Run(name="lost", config_json=tiny_config(epochs=1).to_json(), status="running", attempts=1,
                  task_id="igat-run-lost", worker="dead@host", heartbeat_at=utcnow() - timedelta(seconds=60))
        fresh = Run(name="alive", config_json=tiny_config(epochs=1).to_json(), status="running", attempts=1,
                    task_id="igat-run-alive", worker="alive@host", heartbeat_at=utcnow() + timedelta(seconds=600))
        s.add_all([run, fresh])
        s.commit()
        lost, alive = run.id, fresh.id
    ids = api.requeue_stale(stale_after=3, app=celery_app)
    assert lost in ids and alive not in ids
    done = wait_final(lost)
    assert done.status == "succeeded", done.error
    assert done.attempts == 2 and done.task_id != "igat-run-lost"
    assert run_row(alive).status == "running"  # a live run is left alone
    celery_app.send_task("igat.train", args=(lost,), task_id="igat-run-lost")  # the old message, if it reappears
    time.sleep(1.5)
    assert run_row(lost).attempts == 2  # ... is recognised as superseded and does nothing
