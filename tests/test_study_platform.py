"""A study as a run of the platform, without a worker: its checks, cost, progress, and how the store treats
its phase runs (never re-queued alone; cancel goes to the study; retry only through the study)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from igat.config import ConfigError
from igat.study import StudySpec
from tasks import api, runstate
from tasks.store import Experiment, Run, get_engine, session, utcnow
from tasks.studyjob import check_study, phase_done, phase_text, study_plan, study_progress


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("IGAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IGAT_DATABASE_URL", f"sqlite:///{tmp_path / 'igat.db'}")
    monkeypatch.delenv("IGAT_BROKER_URL", raising=False)
    return tmp_path


def test_check_study_names_the_field():
    spec = check_study({"defense": "adp", "seeds": [0, 1], "dataset": "synthetic"})
    assert isinstance(spec, StudySpec) and spec.arms == ["continued", "igat"]
    cases = [({"seeds": [1, 1]}, "seeds", "distinct"), ({"defense": "nope"}, "defense", "unknown defense 'nope'"),
             ({"arms": ["igat"]}, "arms", "must include continued and igat"),
             ({"scale": "huge"}, "scale", "cpu-mini"),
             ({"overrides": ["data.no_such_field=1"]}, "overrides", "data.no_such_field"),
             ({"overrides": ["train.batch_size=0"]}, "overrides", "train.batch_size")]
    for data, field, text in cases:
        with pytest.raises(ConfigError) as info:
            check_study(data)
        (got_field, msg), *_ = info.value.errors
        assert got_field == field and text in msg, (data, info.value.errors)


def test_plan_counts_runs_and_epochs():
    plan = study_plan(StudySpec(defense="adp", seeds=[0, 1, 2], arms=["continued", "igat", "hard"]))
    # cpu-mini: every base warm-starts from a standard-trained ensemble (8 epochs), base <= 6, arms 2 epochs
    assert plan.phases_per_seed == ("pretrain", "base", "continued", "igat", "hard")
    assert (plan.training_runs, plan.evaluations, plan.max_epochs) == (15, 12, 3 * (8 + 6 + 3 * 2))
    assert plan.summary().startswith("15 training runs (3 seeds x pretrain, base, continued, igat, hard)")
    paper = study_plan(StudySpec(defense="dverge", scale="paper", seeds=[0]))
    assert paper.warm_start == "standard" and paper.max_epochs == 200 + 200 + 2 * 100  # DVERGE's recipe warm-starts
    assert study_plan(StudySpec(defense="adp", scale="paper", seeds=[0])).warm_start is None


def test_progress_follows_the_state_and_the_phase_in_training():
    spec = StudySpec(defense="adp", seeds=[0, 1], base_max_epochs=4, pretrain_epochs=2, arm_epochs=2)
    plan = study_plan(spec)  # per seed: 2 + 4 + 2 x 2 epochs + 3 evaluations = 13 units
    assert plan.units == 26
    assert study_progress(plan, {}) == 0.0
    assert study_progress(plan, {}, ("seed0/pretrain", 1.5)) == pytest.approx(1.5 / 26)
    state = {"seeds": {"0": {"pretrain": {}, "base": {"history": [{}, {}], "done": False}, "arms": {}, "eval": {}}}}
    assert study_progress(plan, state) == pytest.approx(4 / 26)
    assert study_progress(plan, state, ("seed0/base", 2.5)) == pytest.approx(4.5 / 26)  # the live epoch, not history
    state["seeds"]["0"]["base"]["done"] = True  # plateaued after 2 epochs: counts as its maximum
    state["seeds"]["0"]["arms"] = {"continued": {"done": True}}
    state["seeds"]["0"]["eval"] = {"base": {}}
    assert study_progress(plan, state, ("seed0/igat", 9.0)) == pytest.approx((2 + 4 + 2 + 2 + 1) / 26)  # capped
    assert phase_done(state, "seed0/base") and phase_done(state, "seed0/continued") and phase_done(state, "seed0/pretrain")
    assert not phase_done(state, "seed0/igat") and not phase_done(state, "seed1/base")
    assert phase_text("seed 1: arm igat (iGAT_ADP, 2 epochs from the base)", plan) == \
        "seed 1 (2/2): arm igat (iGAT_ADP, 2 epochs from the base)"


def _study_with_children(statuses: dict[str, str], study_status: str = "running") -> tuple[int, dict[str, int]]:
    stale = utcnow() - timedelta(hours=1)
    with session() as s:
        exp = Experiment(name="st", kind="study")
        s.add(exp)
        s.flush()
        study = Run(experiment_id=exp.id, name="st", kind="study", config_json="{}", status=study_status, attempts=1,
                    heartbeat_at=stale, task_id="t-study", params_json=StudySpec(seeds=[0]).model_dump_json())
        s.add(study)
        s.flush()
        children = {label: Run(experiment_id=exp.id, name=label, kind="train", config_json="{}", status=st,
                               attempts=1, heartbeat_at=stale, parent_run_id=study.id)
                    for label, st in statuses.items()}
        plain = Run(name="plain", kind="train", config_json="{}", status="running", attempts=1, heartbeat_at=stale)
        s.add_all([*children.values(), plain])
        s.commit()
        return study.id, {**{k: r.id for k, r in children.items()}, "plain": plain.id}


def test_a_dead_studys_phases_are_never_requeued_alone(home):
    study_id, ids = _study_with_children({"seed0/base": "running", "seed0/pretrain": "queued"})
    taken = runstate.take_for_requeue(get_engine(), 60, lambda rid: f"new-{rid}", kinds=tuple(api.TASK_FOR_KIND),
                                      include_queued=True)
    # the study and the unrelated dead train run are re-queued; the study's phases wait for the study
    assert sorted((t.run_id, t.kind) for t in taken) == sorted([(study_id, "study"), (ids["plain"], "train")])


def test_cancel_of_a_phase_cancels_the_study_and_retry_goes_through_it(home):
    study_id, ids = _study_with_children({"seed0/base": "running"})
    assert api.study_of(ids["seed0/base"]) == study_id and api.study_of(study_id) is None
    assert api.cancel_run(ids["seed0/base"]) == "running"  # running: it stops at its next batch
    with session() as s:
        study, child = s.get(Run, study_id), s.get(Run, ids["seed0/base"])
        assert study.cancel_requested and not child.cancel_requested
    with session() as s:
        s.get(Run, ids["seed0/base"]).status = "cancelled"
        s.commit()
    with pytest.raises(api.SubmitError, match=f"is a phase of study {study_id}; retry the study"):
        api.retry_run(ids["seed0/base"])


def test_submit_study_checks_everything_before_writing(home):
    from tasks.celery_app import make_celery

    app = make_celery("redis://127.0.0.1:1/0")  # never contacted: every call below is refused first
    with pytest.raises(ConfigError, match="overrides"):
        api.submit_study({"seeds": [0], "overrides": ["optim.lr=-1"]}, app=app)
    with pytest.raises(api.SubmitError, match="name: "):
        api.submit_study({"seeds": [0]}, name="../x", app=app)
    with pytest.raises(api.SubmitError, match="queue studies with submit_study"):
        api.submit_runs([{"name": "x"}], "x", run_kind="study", app=app)
    with pytest.raises(ConnectionError, match="unreachable"):
        api.submit_study({"seeds": [0]}, app=app)
    with session() as s:
        assert s.exec(select(Run)).all() == [] and s.exec(select(Experiment)).all() == []


def test_cli_submit_refuses_before_writing(home, capsys):
    from igat.cli import main

    assert main(["study", "--seeds", "0", "--submit", "--out", "elsewhere"]) == 2
    assert "--out is for a study run here" in capsys.readouterr().err
    assert main(["study", "--seeds", "0", "--name", "x"]) == 2  # --name names a queued study
    assert main(["study", "--seeds", "0", "--submit", "--set", "train.batch_size=0"]) == 2
    assert "invalid config: overrides: train.batch_size" in capsys.readouterr().err
    assert main(["study", "--seeds", "0", "--submit"]) == 2
    assert "no broker" in capsys.readouterr().err
    with session() as s:
        assert s.exec(select(Run)).all() == []


def test_a_study_folder_resumes_and_takes_more_seeds_but_refuses_other_settings(tmp_path):
    from igat.study import StudyPaths, _load_state, _save_state

    paths = StudyPaths(tmp_path / "study")
    first = StudySpec(defense="adp", seeds=[0, 1])
    state = _load_state(paths, first)
    state["seeds"]["0"] = {"arms": {}, "eval": {"base": {}}}
    _save_state(paths, state)
    assert _load_state(paths, first)["seeds"] == {"0": {"arms": {}, "eval": {"base": {}}}}  # resumed

    more = _load_state(paths, StudySpec(defense="adp", seeds=[0, 1, 2, 3]))
    assert more["spec"]["seeds"] == [0, 1, 2, 3] and "0" in more["seeds"]  # extended, seed 0 kept

    for other, named in ((StudySpec(defense="gal", seeds=[0, 1]), "defense"),
                         (StudySpec(defense="adp", seeds=[1, 0]), "seeds"),
                         (StudySpec(defense="adp", seeds=[0]), "seeds"),
                         (StudySpec(defense="adp", seeds=[0, 1], arm_epochs=3), "arm_epochs")):
        with pytest.raises(ConfigError) as err:
            _load_state(paths, other)
        assert f"differs in {named}" in str(err.value) and "seeds may be added after [0, 1]" in str(err.value)


def test_a_study_folder_takes_more_arms_after_its_own(tmp_path):
    from igat.study import StudyPaths, _load_state, _save_state

    paths = StudyPaths(tmp_path / "study")
    _save_state(paths, _load_state(paths, StudySpec(defense="adp", seeds=[0])))
    wider = _load_state(paths, StudySpec(defense="adp", seeds=[0, 1], arms=["continued", "igat", "opposite", "hard"]))
    assert wider["spec"]["arms"] == ["continued", "igat", "opposite", "hard"] and wider["spec"]["seeds"] == [0, 1]
    with pytest.raises(ConfigError, match="arms after \\['continued', 'igat'\\]"):
        _load_state(paths, StudySpec(defense="adp", seeds=[0], arms=["igat", "continued"]))
