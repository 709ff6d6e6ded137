"""A study through the real queue: Redis, a Celery worker (a thread of this process), the store on SQLite.
A tiny synthetic study must run its phases as child runs with live metrics and store the analysis; a
cancelled one must stop, and its retry must resume it without redoing finished phases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import col, select

from tasks import api
from tasks.store import Metric, Run, session
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

FINAL = ("succeeded", "failed", "cancelled")
TINY_OVERRIDES = ["data.synthetic_image_size=8", "data.synthetic_train_size=128", "data.train_subset=null",
                  "train.batch_size=32", "train.eval_examples=32"]


def tiny_study(seeds: list[int], **extra) -> dict:
    return {"defense": "adp", "dataset": "synthetic", "seeds": seeds, "base_min_epochs": 1, "base_max_epochs": 2,
            "pretrain_epochs": 1, "arm_epochs": 1, "eval_examples": 32, "overrides": TINY_OVERRIDES, **extra}


def children_of(study_id: int) -> dict[str, Run]:
    with session() as s:
        return {r.name: r for r in s.exec(select(Run).where(Run.parent_run_id == study_id).order_by(col(Run.id)))}


def epoch_points(run_id: int, name: str = "test_nat_acc_average") -> list[int]:
    with session() as s:
        return list(s.exec(select(Metric.step).where(Metric.run_id == run_id, Metric.scope == "epoch",
                                                     Metric.name == name).order_by(Metric.step)))


@pytest.mark.slow
@pytest.mark.parametrize("platform_env", ["sqlite"], indirect=True)  # one store: the study is the slow part
def test_queued_study_trains_its_phases_as_child_runs_and_stores_the_analysis(platform_env, thread_worker, celery_app):
    exp_id, study_id = api.submit_study(tiny_study([0, 1]), name="tiny-study", app=celery_app)
    phases: set[str] = set()

    def finished():
        run = api.get_run(study_id)
        if run.phase:
            phases.add(run.phase)
        return run.status in FINAL and run

    study = wait_for(finished, 420, f"study {study_id} to finish", interval=0.3)
    assert study.status == "succeeded", study.error
    assert study.kind == "study" and study.experiment_id == exp_id and study.progress == 1.0 and study.attempts == 1
    assert study.phase.startswith("finished: 2 seeds; verdicts: ")
    assert any(p.startswith("seed 1 (2/2): arm igat") for p in phases), sorted(phases)

    folder = Path(platform_env["IGAT_HOME"]) / "studies" / str(study_id)
    children = children_of(study_id)
    assert sorted(children) == sorted(f"seed{s}/{p}" for s in (0, 1) for p in ("pretrain", "base", "continued", "igat"))
    for name, child in children.items():
        assert child.status == "succeeded" and child.kind == "train", (name, child.error)
        assert child.experiment_id == exp_id and child.progress == 1.0 and child.igat == name.endswith("/igat")
        assert Path(child.checkpoint_path).is_relative_to(folder), child.checkpoint_path
        want = [1, 2] if name.endswith("/base") else [1]  # the base trained until its maximum, one epoch per call
        assert epoch_points(child.id) == want, name
        assert json.loads(child.config_json)["seed"] == int(name[4])

    analysis = api.get_artifact(study_id, "study_analysis")
    assert analysis["seeds_done"] == [0, 1]
    cells = {(c["attack"], c["combiner"]) for c in analysis["cells"]}
    assert cells == {(a, c) for a in ("natural", "pgd") for c in ("average", "max")}
    for cell in analysis["cells"]:
        d = cell["igat_minus_continued"]
        assert d["seeds"] == 2 and d["examples"] == 64 and d["verdict"] in ("better", "worse", "not distinguishable")
        assert set(cell["arms"]) == {"base", "continued", "igat"} and cell["arms"]["igat"]["n"] == 32
    report = api.get_artifact(study_id, "study_report")["markdown"]
    assert report.startswith("# Study: does iGAT help adp? (cpu-mini, synthetic, seeds 0, 1)")
    state = json.loads((folder / "study.json").read_text())
    assert state["analysis"]["cells"] == analysis["cells"]
    # after the evaluation the worker diagnoses every arm (issue 18) for the Theory page
    theory = api.get_artifact(study_id, "study_theory")
    assert "error" not in theory, theory.get("error")
    assert set(theory["seeds"]) == {"0", "1"} and set(theory["seeds"]["0"]["arms"]) == {"base", "continued", "igat"}
    assert "igat_minus_continued" in theory["seeds"]["1"]["comparisons"] and (folder / "theory.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("platform_env", ["sqlite"], indirect=True)
def test_cancelled_study_stops_and_its_retry_resumes_without_redoing_finished_phases(platform_env, thread_worker,
                                                                                     celery_app):
    # a longer base (up to 4 epochs, no plateau before 3) gives the cancel a phase to interrupt
    spec = tiny_study([0], base_min_epochs=3, base_max_epochs=4)
    _, study_id = api.submit_study(spec, app=celery_app)

    def base_training():
        base = children_of(study_id).get("seed0/base")
        return base is not None and base.status == "running" and epoch_points(base.id) and base

    base = wait_for(base_training, 180, "the base phase to record an epoch", interval=0.2)
    assert api.cancel_run(base.id, app=celery_app) == "running"  # a phase's cancel goes to its study
    study = wait_for(lambda: (r := api.get_run(study_id)).status in FINAL and r, 60, "the study to stop")
    assert study.status == "cancelled", study.error
    children = children_of(study_id)
    assert children["seed0/pretrain"].status == "succeeded"
    assert children["seed0/base"].status == "cancelled" and "the study was cancelled" in children["seed0/base"].error
    pretrain_done = children["seed0/pretrain"].finished_at
    base_epochs = epoch_points(base.id)

    api.retry_run(study_id, app=celery_app)
    study = wait_for(lambda: (r := api.get_run(study_id)).status in FINAL and r, 300, "the retried study")
    assert study.status == "succeeded", study.error
    children = children_of(study_id)
    assert sorted(children) == ["seed0/base", "seed0/continued", "seed0/igat", "seed0/pretrain"]  # no duplicates
    assert all(c.status == "succeeded" for c in children.values())
    assert children["seed0/pretrain"].finished_at == pretrain_done  # not trained again
    assert children["seed0/base"].id == base.id
    resumed = epoch_points(base.id)
    assert resumed[: len(base_epochs)] == base_epochs and resumed == list(range(1, len(resumed) + 1))
    assert api.get_artifact(study_id, "study_analysis")["seeds_done"] == [0]


@pytest.mark.parametrize("platform_env", ["sqlite"], indirect=True)
def test_cli_submit_queues_a_study_and_prints_its_id(platform_env, capsys):
    from igat.cli import main

    assert main(["study", "--defense", "adp", "--dataset", "synthetic", "--seeds", "3,4", "--arms",
                 "continued,igat,hard", "--arm-epochs", "1", "--submit", "--name", "cli-study"]) == 0
    out = capsys.readouterr()
    study_id = int(out.out.strip())
    assert f"study {study_id} queued" in out.err
    study = api.get_run(study_id)
    assert (study.kind, study.status, study.name) == ("study", "queued", "cli-study")
    assert study.params["seeds"] == [3, 4] and study.params["arms"] == ["continued", "igat", "hard"]
    assert study.params["arm_epochs"] == 1 and study.task_id
    assert api.cancel_run(study_id) == "cancelled"  # nobody consumes it here


@pytest.mark.slow
@pytest.mark.parametrize("platform_env", ["sqlite"], indirect=True)
def test_a_failing_phase_fails_the_study_and_that_phase_only(platform_env, thread_worker, celery_app, monkeypatch):
    import igat.study

    real = igat.study.arm_config

    def broken_igat_arm(arm, *args, **kwargs):  # the worker runs in this process: its iGAT arm cannot load its base
        cfg = real(arm, *args, **kwargs)
        if arm == "igat":
            cfg.train.init_checkpoint = str(Path(platform_env["IGAT_HOME"]) / "missing.pt")
        return cfg

    monkeypatch.setattr(igat.study, "arm_config", broken_igat_arm)
    _, study_id = api.submit_study(tiny_study([0], base_max_epochs=1), app=celery_app)
    study = wait_for(lambda: (r := api.get_run(study_id)).status in FINAL and r, 300, "the study to fail")
    assert study.status == "failed" and "missing.pt" in study.error
    children = children_of(study_id)
    assert {n: c.status for n, c in children.items()} == {
        "seed0/pretrain": "succeeded", "seed0/base": "succeeded", "seed0/continued": "succeeded",
        "seed0/igat": "failed"}
    assert children["seed0/igat"].error.startswith("the study was stopped by an error: ")
    assert api.get_artifact(study_id, "study_analysis") is None  # nothing was evaluated


@pytest.mark.slow
@pytest.mark.parametrize("platform_env", ["sqlite"], indirect=True)
def test_a_study_whose_worker_is_killed_resumes_on_another(platform_env, worker_process, monkeypatch):
    """SIGKILL the worker mid-base: the study goes stale, is re-queued and resumes on the second worker from its
    state (the pretrain is not trained again, the base continues from its checkpoint)."""
    import signal

    from tasks.celery_app import make_celery

    monkeypatch.setenv("IGAT_STALE_CHECK_SECONDS", "1")  # the workers inherit it
    app = make_celery(platform_env["IGAT_BROKER_URL"])
    _, study_id = api.submit_study(tiny_study([0], base_min_epochs=3, base_max_epochs=4), app=app)
    app.close()
    first = worker_process("first")

    def base_has_an_epoch():
        base = children_of(study_id).get("seed0/base")
        return base is not None and base.status == "running" and epoch_points(base.id) and base

    base = wait_for(base_has_an_epoch, 240, "the base to record an epoch", interval=0.1)
    first.kill(signal.SIGKILL)
    dead = api.get_run(study_id)
    assert dead.status == "running" and dead.attempts == 1, "the study ended before the kill; make it longer"
    pretrain_done = children_of(study_id)["seed0/pretrain"].finished_at
    second = worker_process("second")
    study = wait_for(lambda: (r := api.get_run(study_id)).status in FINAL and r, 300, "the resumed study")
    assert study.status == "succeeded", f"{study.error}\n{second.output()[-3000:]}"
    assert study.attempts == 2 and study.worker != dead.worker
    children = children_of(study_id)
    assert sorted(children) == ["seed0/base", "seed0/continued", "seed0/igat", "seed0/pretrain"]
    assert all(c.status == "succeeded" for c in children.values())
    assert children["seed0/pretrain"].finished_at == pretrain_done  # not trained again
    assert children["seed0/base"].id == base.id and children["seed0/base"].attempts == 2
    points = epoch_points(base.id)
    assert points == list(range(1, len(points) + 1)) and len(points) >= 3  # no gap, no duplicate
