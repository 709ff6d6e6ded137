"""Checkpoint safety through a real Celery worker and real Redis (issue 17 items 1 and 2)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from tasks import api
from tasks.jobs import run_dir
from tasks.store import Metric, session
from tests.helpers import synthetic_config
from tests.integration.conftest import wait_for
from tests.test_checkpoint_security import write_malicious

pytestmark = pytest.mark.integration
FINAL = ("succeeded", "failed", "cancelled")


def _tiny(**over):
    return synthetic_config(
        data={"synthetic_train_size": 128},
        train={"epochs": 1, "batch_size": 32, "eval_examples": 32, "eval_pgd_steps": 0, **over.pop("train", {})},
        eval={"num_examples": 32, "attacks": [{"name": "natural"}]}, **over)


def _final(run_id: int):
    return wait_for(lambda: (r := api.get_run(run_id)).status in FINAL and r, 120, f"run {run_id} to finish")


def test_worker_refuses_a_malicious_warm_start_and_never_runs_it(request, celery_app, tmp_path):
    marker = tmp_path / "pwned"
    evil = write_malicious(tmp_path / "evil.pt", marker)
    _, (run_id,) = api.submit_runs([_tiny(train={"init_checkpoint": str(evil)})], "evil", app=celery_app)
    request.getfixturevalue("thread_worker")
    run = _final(run_id)
    assert run.status == "failed"
    assert "refused" in run.error and "Traceback" not in run.error, run.error
    assert not marker.exists()


def test_worker_never_resumes_a_checkpoint_another_run_wrote(request, celery_app, tmp_path):
    """A recreated store reuses run ids: the old run's folder is moved aside and the new run trains fresh."""
    from igat.training import Trainer

    _, (run_id,) = api.submit_runs([_tiny(seed=1, train={"epochs": 2})], "fresh", app=celery_app)
    old = _tiny(seed=7, name="old-run", optim={"lr": 0.2})
    Trainer(old, output_dir=run_dir(run_id), run_key=f"run-{run_id}@19700101T000000000000").fit()
    request.getfixturevalue("thread_worker")
    run = _final(run_id)
    assert run.status == "succeeded", run.error
    with session() as s:
        epochs = s.exec(select(Metric.step).where(Metric.run_id == run_id, Metric.scope == "epoch",
                                                  Metric.name == "test_nat_acc_average")).all()
    assert sorted(epochs) == [1, 2], "the run trained both of its epochs itself"
    aside = list(run_dir(run_id).parent.glob(f"{run_id}.foreign-*"))
    assert len(aside) == 1 and (aside[0] / "last.pt").exists(), "the other run's checkpoint is kept, moved aside"
    import torch

    mine = torch.load(run_dir(run_id) / "last.pt", weights_only=True)
    assert mine["binding"]["run_key"].startswith(f"run-{run_id}@") and mine["config"]["seed"] == 1
