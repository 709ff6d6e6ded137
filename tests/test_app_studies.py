"""The Studies page (AppTest): the launcher refuses bad input field by field and shows the cost; a finished
study shows its table with intervals and verdicts next to the paper's numbers; a running one shows what its
folder holds so far."""

from __future__ import annotations

import json

import pytest
import streamlit as st
from sqlmodel import Session, select

from igat.study import StudySpec, analyse
from tasks.store import Artifact, Experiment, Metric, Run, make_engine, utcnow
from tests.test_app import REDIS_DB, app, no_crash, plotly_specs, texts

N = 10  # test images per cell


def correct(k: int) -> str:
    """A correctness string: the first ``k`` of N examples right."""
    return "1" * k + "0" * (N - k)


def study_state(spec: StudySpec, pgd: dict[str, list[int]], seeds: list[int]) -> dict:
    """A study.json state with every arm evaluated for ``seeds``: natural identical for all arms, PGD
    correctness counts per arm and seed from ``pgd``."""
    state = {"spec": spec.model_dump(mode="json"), "seeds": {}}
    for i, seed in enumerate(seeds):
        ev = {}
        for label in ("base", *spec.arms):
            ev[label] = {
                "natural|average": {"attack": "natural", "combiner": "average", "accuracy": 0.8, "n": N,
                                    "correct": correct(8)},
                "pgd|average": {"attack": "pgd", "combiner": "average", "accuracy": pgd[label][i] / N, "n": N,
                                "correct": correct(pgd[label][i])}}
        state["seeds"][str(seed)] = {
            "base": {"history": [{"test_nat_acc_average": 0.5}, {"test_nat_acc_average": 0.55}], "done": True,
                     "plateaued": True},
            "arms": {a: {"done": True} for a in spec.arms}, "eval": ev}
    return state


SPEC = StudySpec(defense="adp", dataset="cifar10", seeds=[0, 1, 2], combiners=["average"])
# iGAT beats continued on PGD by 2, 3 and 2 of 10 examples: a paired interval above 0 ("better")
PGD = {"base": [3, 3, 3], "continued": [3, 4, 3], "igat": [5, 7, 5]}


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'igat.db'}"
    monkeypatch.setenv("IGAT_HOME", str(tmp_path))
    monkeypatch.setenv("IGAT_DATABASE_URL", url)
    monkeypatch.setenv("IGAT_BROKER_URL", f"redis://127.0.0.1:6379/{REDIS_DB}")
    import tasks.celery_app

    monkeypatch.setattr(tasks.celery_app, "_DEFAULT_APP", None)
    st.cache_resource.clear()
    engine = make_engine(url)
    ids = {}
    now = utcnow()
    with Session(engine, expire_on_commit=False) as s:
        exp = Experiment(name="study-adp", kind="study")
        s.add(exp)
        s.commit()
        done = Run(experiment_id=exp.id, name="study-adp", kind="study", config_json="{}", status="succeeded",
                   defense="adp", dataset="cifar10", progress=1.0, phase="finished: 3 seeds; verdicts: better",
                   params_json=SPEC.model_dump_json(), started_at=now, finished_at=now)
        running_spec = SPEC.model_copy(update={"seeds": [0, 1]})
        running = Run(experiment_id=exp.id, name="study-live", kind="study", config_json="{}", status="running",
                      defense="adp", dataset="cifar10", progress=0.4, phase="seed 1 (2/2): arm igat, epoch 1/2",
                      params_json=running_spec.model_dump_json(), started_at=now, worker="w@host")
        s.add_all([done, running])
        s.commit()
        children = [Run(experiment_id=exp.id, name=f"seed{sd}/{p}", kind="train", config_json="{}",
                        status="succeeded", parent_run_id=done.id, epoch=2, total_epochs=2, progress=1.0)
                    for sd in (0, 1, 2) for p in ("base", "continued", "igat")]
        s.add_all(children)
        s.commit()
        s.add(Metric(run_id=children[0].id, scope="epoch", step=1, epoch=1, name="test_nat_acc_average", value=0.5))
        s.add(Artifact(run_id=done.id, name="study_analysis",
                       data_json=json.dumps(analyse(study_state(SPEC, PGD, [0, 1, 2])))))
        s.add(Artifact(run_id=done.id, name="study_report", data_json=json.dumps({"markdown": "# Study report"})))
        s.commit()
        ids.update(done=done.id, running=running.id, child=children[0].id)
    # the running study's folder: seed 0 evaluated, nothing stored in the database yet
    folder = tmp_path / "studies" / str(ids["running"])
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps(study_state(running_spec, PGD, [0])))
    engine.dispose()
    yield {"url": url, "ids": ids}
    st.cache_resource.clear()


def frames(at) -> list:
    return [el.value for el in at.dataframe]


def result_frame(at):
    return next(f for f in frames(at) if "verdict" in f.columns)


def study_rows(db) -> int:
    with Session(make_engine(db["url"], create=False)) as s:
        return len(s.exec(select(Run).where(Run.kind == "study")).all())


def test_launcher_refuses_bad_input_by_field_and_shows_the_cost(db):
    at = app("studies")
    no_crash(at)
    assert not at.info or not any("Estimated cost" in i.value for i in at.info)  # closed while studies exist
    at.toggle(key="studies.open").set_value(True).run()
    assert any("Estimated cost: 12 training runs (3 seeds x pretrain, base, continued, igat)" in i.value
               for i in at.info)
    at.multiselect(key="studies.ablations").set_value(["hard"]).run()
    assert any("15 training runs" in i.value for i in at.info)
    at.text_input(key="studies.seeds").set_value("0, x").run()
    at.button(key="studies.launch").click().run()
    no_crash(at)
    assert any(e.value.startswith("`seeds`: 'x' is not a seed") for e in at.error)
    assert not any("Estimated cost" in i.value for i in at.info)
    at.text_input(key="studies.seeds").set_value("1, 1").run()
    at.button(key="studies.launch").click().run()
    assert any(e.value.startswith("`seeds`:") and "distinct seeds" in e.value for e in at.error)
    at.text_input(key="studies.seeds").set_value("0, 1")
    at.text_area(key="studies.overrides").set_value("train.batch_size=0").run()
    at.button(key="studies.launch").click().run()
    assert any(e.value.startswith("`overrides`: train.batch_size") for e in at.error)
    assert study_rows(db) == 2  # nothing was queued


def test_finished_study_shows_table_verdict_and_the_papers_numbers(db):
    at = app("studies", study=str(db["ids"]["done"]))
    no_crash(at)
    assert at.selectbox(key="studies.selected").value == db["ids"]["done"]
    table = result_frame(at)
    pgd = table[table["attack"] == "PGD"].iloc[0]
    assert pgd["base"] == "30.00 ± 0.00" and pgd["continued"] == "33.33 ± 5.77" and pgd["iGAT"] == "56.67 ± 11.55"
    assert pgd["igat - continued"] == "+23.33" and pgd["verdict"] == "better"
    assert pgd["95 % CI (seeds)"].startswith("[+") and pgd["95 % CI (examples)"].startswith("[+")
    label = "paper (8 x ResNet-20, CIFAR-10)"
    assert pgd[f"{label}: ADP (Table 1)"] == "39.63" and pgd[f"{label}: iGAT_ADP (Table 1)"] == "46.27"
    assert pgd[f"{label}: difference"] == "+6.64" and pgd[f"{label}: improvement % (Table 2)"] == "+16.75"
    natural = table[table["attack"] == "Natural"].iloc[0]
    assert natural["verdict"] == "not distinguishable" and natural[f"{label}: ADP (Table 1)"] == "82.14"
    assert "Final results over seeds 0, 1, 2" in texts(at)
    assert "are the paper's reported values (Deng & Mu" in texts(at)
    acc, diff = plotly_specs(at)
    names = [t["name"] for t in acc["data"]]
    assert names[:3] == ["base", "continued", "iGAT"] and f"{label}: ADP" in names and f"{label}: iGAT_ADP" in names
    assert all(t["error_y"]["visible"] for t in acc["data"][:3])
    assert [t["name"] for t in diff["data"]] == ["study: igat - continued (95 % CI over seeds)",
                                                 f"{label}: iGAT_ADP - ADP"]
    phases = next(f for f in frames(at) if "phase" in f.columns and "epoch" in f.columns)
    assert list(phases["phase"])[:3] == ["seed0/base", "seed0/continued", "seed0/igat"]
    assert any(link.proto.label.startswith(f"#{db['ids']['child']} seed0/base") for link in at.get("page_link"))
    assert at.get("download_button")


def test_running_study_shows_its_phase_and_partial_results_from_its_folder(db):
    at = app("studies", study=str(db["ids"]["running"]))
    no_crash(at)
    assert "Partial results over seeds 0 of 0, 1" in texts(at)
    assert result_frame(at).iloc[-1]["verdict"] == "not distinguishable"  # one seed: no seed interval
    assert result_frame(at).iloc[-1]["95 % CI (seeds)"] == "n/a (1 seed)"
    assert "No phase has started yet." in texts(at)
    bars = [el for el in at.get("progress")]
    assert bars and "seed 1 (2/2): arm igat, epoch 1/2" in bars[0].proto.text


def test_launcher_queues_a_study(db):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}")
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    client.flushdb()
    try:
        at = app("studies")
        at.toggle(key="studies.open").set_value(True).run()
        at.selectbox(key="studies.dataset").set_value("synthetic")
        at.text_input(key="studies.seeds").set_value("4, 5")
        at.text_input(key="studies.name").set_value("from-the-page").run()
        at.button(key="studies.launch").click().run()
        no_crash(at)
        with Session(make_engine(db["url"], create=False)) as s:
            study = s.exec(select(Run).where(Run.name == "from-the-page")).one()
        assert study.kind == "study" and study.status == "queued" and study.params["seeds"] == [4, 5]
        assert any(f"Queued study #{study.id}" in m.value for m in at.success)
        assert at.selectbox(key="studies.selected").value == study.id
        assert int(client.llen("gpu")) == 1
    finally:
        client.flushdb()


def test_runs_page_links_a_study_to_the_studies_page(db):
    at = app("runs", run=str(db["ids"]["done"]))
    no_crash(at)
    links = [el.proto for el in at.get("page_link") if el.proto.label == "Open this study"]
    assert len(links) == 1 and links[0].query_string == f"study={db['ids']['done']}"


ABL_SPEC = SPEC.model_copy(update={"arms": ["continued", "igat", "opposite", "hard"]})
# opposite loses 2, 3, 2 of 10 PGD examples to iGAT (paired: "worse"); the hard rule wins one in one seed
ABL_PGD = {**PGD, "opposite": [3, 4, 3], "hard": [5, 7, 6]}


def test_ablation_variants_are_compared_with_igat_paired_in_the_analysis_and_report():
    from igat.study import format_report

    analysis = analyse(study_state(ABL_SPEC, ABL_PGD, [0, 1, 2]))
    pgd = next(c for c in analysis["cells"] if c["attack"] == "pgd")
    opposite, hard = pgd["ablations"]["opposite"], pgd["ablations"]["hard"]
    assert opposite["per_seed"] == pytest.approx([-0.2, -0.3, -0.2]) and opposite["verdict"] == "worse"
    assert opposite["seed_ci"][1] < 0 and opposite["example_ci"][1] < 0
    assert hard["per_seed"] == pytest.approx([0.0, 0.0, 0.1]) and hard["verdict"] == "not distinguishable"
    natural = next(c for c in analysis["cells"] if c["attack"] == "natural")
    assert natural["ablations"]["opposite"]["mean"] == 0.0
    assert "igat_minus_continued" in pgd and "ablations" not in analyse(study_state(SPEC, PGD, [0, 1, 2]))["cells"][0]
    report = format_report(analysis)
    assert "the paper's Table 3" in report
    assert "| pgd | average | opposite | 33.33 +- 5.77 | 56.67 +- 11.55 | -23.33 | [" in report


def test_studies_page_shows_the_ablation_table_next_to_the_papers_table_3(db):
    with Session(make_engine(db["url"], create=False), expire_on_commit=False) as s:
        exp = s.exec(select(Experiment)).first()
        run = Run(experiment_id=exp.id, name="study-ablation", kind="study", config_json="{}", status="succeeded",
                  defense="adp", dataset="cifar10", progress=1.0, phase="finished", params_json=ABL_SPEC.model_dump_json())
        s.add(run)
        s.commit()
        s.add(Artifact(run_id=run.id, name="study_analysis",
                       data_json=json.dumps(analyse(study_state(ABL_SPEC, ABL_PGD, [0, 1, 2])))))
        s.commit()
    at = app("studies", study=str(run.id))
    no_crash(at)
    table = next(f for f in frames(at) if "variant - iGAT" in f.columns)
    row = table[(table["attack"] == "PGD") & (table["variant"] == "opposite")].iloc[0]
    assert row["variant (%)"] == "33.33 ± 5.77" and row["iGAT (%)"] == "56.67 ± 11.55"
    assert row["variant - iGAT"] == "-23.33" and row["verdict"] == "worse"
    label = "paper (8 x ResNet-20, CIFAR-10)"
    assert row[f"{label}: variant (Table 3)"] == "41.31" and row[f"{label}: iGAT (Table 1)"] == "46.27"
    assert set(table["variant"]) == {"opposite", "hard"}
    assert "Ablations of iGAT" in texts(at)
