"""Headless tests of the Streamlit dashboard (streamlit.testing AppTest) on a fixture database.

Every test gets its own SQLite file (IGAT_HOME / IGAT_DATABASE_URL in a tmp dir) filled with
known runs, metrics, evaluation results and member statistics, and checks what each page shows.
Submission and cancel go through ``tasks.api`` with a dedicated Redis database number.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from tasks.store import EvalResult, Experiment, MemberStatRow, Metric, Run, make_engine, utcnow
from tests.helpers import synthetic_config

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
REDIS_DB = 13  # dedicated to these tests; flushed before and after each test that queues
TIMEOUT = 60

# Known evaluation results (accuracy in [0, 1]) -> expected Table 1 numbers.
ADP = {0: {("average", "natural"): 0.80, ("average", "pgd"): 0.40, ("max", "natural"): 0.78, ("max", "pgd"): 0.35},
       1: {("average", "natural"): 0.82, ("average", "pgd"): 0.38, ("max", "natural"): 0.80, ("max", "pgd"): 0.37}}
IGAT = {0: {("average", "natural"): 0.84, ("average", "pgd"): 0.46, ("max", "natural"): 0.79, ("max", "pgd"): 0.39},
        1: {("average", "natural"): 0.86, ("average", "pgd"): 0.48, ("max", "natural"): 0.81, ("max", "pgd"): 0.41}}


# The checkpoint of the succeeded baseline run adp0 (2 members, adp, synthetic): the base iGAT fine-tunes.
BASE_CHECKPOINT = "/runs/adp0/last.pt"


def _config(igat: bool = False, seed: int = 0, **over) -> str:
    cfg = synthetic_config(defense={"name": "adp", "params": {"plus_adv": False}},
                           igat={"enabled": igat, "alpha": 5.0, "beta": 10.0}, seed=seed, **over)
    return cfg.to_json()


@pytest.fixture
def db(tmp_path, monkeypatch):
    """A fixture database; yields its URL and {name: id} of the interesting rows."""
    url = f"sqlite:///{tmp_path / 'igat.db'}"
    monkeypatch.setenv("IGAT_HOME", str(tmp_path))
    monkeypatch.setenv("IGAT_DATABASE_URL", url)
    monkeypatch.setenv("IGAT_BROKER_URL", f"redis://127.0.0.1:6379/{REDIS_DB}")
    import tasks.celery_app

    monkeypatch.setattr(tasks.celery_app, "_DEFAULT_APP", None)  # bind the Celery app to this broker URL
    st.cache_resource.clear()
    ids = fill_database(url)
    yield {"url": url, "ids": ids}
    st.cache_resource.clear()


def fill_database(url: str) -> dict[str, int]:
    """Known runs, metrics, evaluation results and member statistics; returns {name: id}."""
    engine = make_engine(url)
    ids: dict[str, int] = {}
    now = utcnow()
    with Session(engine, expire_on_commit=False) as s:
        e_adp = Experiment(name="adp-seeds", kind="seeds")
        e_igat = Experiment(name="igat-adp-seeds", kind="seeds")
        e_abl = Experiment(name="table3", kind="ablation")
        s.add_all([e_adp, e_igat, e_abl])
        s.commit()

        def run(name, exp, igat=False, seed=0, status="succeeded", **kw):
            kw.setdefault("started_at", now)
            r = Run(experiment_id=exp.id if exp else None, name=name, config_json=_config(igat, seed), dataset="synthetic",
                    defense="adp", igat=igat, seed=seed, status=status, total_epochs=4, **kw)
            s.add(r)
            s.commit()
            return r

        runs = {
            "adp0": run("adp", e_adp, seed=0, epoch=4, progress=1.0, finished_at=now, tags="table1",
                        checkpoint_path=BASE_CHECKPOINT),
            "adp1": run("adp", e_adp, seed=1, epoch=4, progress=1.0, finished_at=now, tags="table1"),
            "igat0": run("igat-adp", e_igat, True, 0, epoch=4, progress=1.0, finished_at=now, tags="table1,igat",
                         worker="gpu0@host"),
            "igat1": run("igat-adp", e_igat, True, 1, epoch=4, progress=1.0, finished_at=now, tags="table1,igat"),
            "running": run("live-one", None, status="running", epoch=2, progress=0.5, worker="gpu1@host"),
            "queued": run("waiting", None, status="queued", started_at=None),
            "failed": run("broken", None, status="failed", error="Traceback ...\nRuntimeError: CUDA out of memory",
                          finished_at=now),
            "soft": run("abl-igat", e_abl, True, 0, variant="iGAT", finished_at=now),
            "hard": run("abl-hard", e_abl, True, 0, variant="Hard", finished_at=now),
            "masked": run("masked", None, seed=0, finished_at=now),
        }
        ids = {k: r.id for k, r in runs.items()}
        ids.update(exp_adp=e_adp.id, exp_igat=e_igat.id, exp_abl=e_abl.id)
        for key, table in (("adp0", ADP[0]), ("adp1", ADP[1]), ("igat0", IGAT[0]), ("igat1", IGAT[1])):
            for (comb, attack), acc in table.items():
                s.add(EvalResult(run_id=ids[key], combiner=comb, attack=attack, accuracy=acc, num_examples=100))
        for key, pgd in (("soft", 0.45), ("hard", 0.42)):
            s.add(EvalResult(run_id=ids[key], combiner="average", attack="natural", accuracy=0.84, num_examples=100))
            s.add(EvalResult(run_id=ids[key], combiner="average", attack="pgd", accuracy=pgd, num_examples=100))
        # an evaluation that must raise a false-robustness flag: PGD above natural accuracy
        s.add(EvalResult(run_id=ids["masked"], combiner="average", attack="natural", accuracy=0.50, num_examples=100))
        s.add(EvalResult(run_id=ids["masked"], combiner="average", attack="pgd", accuracy=0.60, num_examples=100))
        # per-member final evaluation of igat0
        for m, (nat, pgd) in enumerate([(0.70, 0.20), (0.72, 0.25)]):
            s.add(EvalResult(run_id=ids["igat0"], target=f"member_{m}", combiner="-", attack="natural", accuracy=nat))
            s.add(EvalResult(run_id=ids["igat0"], target=f"member_{m}", combiner="-", attack="pgd", accuracy=pgd))
        # iGAT distribution statistics of igat0 over 2 epochs, 2 members, 2 classes
        for epoch in (1, 2):
            for m in (0, 1):
                count = 10 * epoch + m  # epoch 2: member 0 got 20, member 1 got 21
                s.add(MemberStatRow(run_id=ids["igat0"], epoch=epoch, member=m, statistic="alloc_count", value=count))
                s.add(MemberStatRow(run_id=ids["igat0"], epoch=epoch, member=m, statistic="alloc_class_0", value=count - 3))
                s.add(MemberStatRow(run_id=ids["igat0"], epoch=epoch, member=m, statistic="alloc_class_1", value=3))
                s.add(MemberStatRow(run_id=ids["igat0"], epoch=epoch, member=m, statistic="nat_acc", value=0.5 + 0.1 * m))
                s.add(MemberStatRow(run_id=ids["igat0"], epoch=epoch, member=m, statistic="adv_acc", value=0.2 + 0.1 * m))
            s.add(MemberStatRow(run_id=ids["igat0"], epoch=epoch, member=-1, statistic="rank_hist_1", value=0.75))
            s.add(MemberStatRow(run_id=ids["igat0"], epoch=epoch, member=-1, statistic="rank_hist_2", value=0.25))
        # live metrics of the running run: 6 steps of two loss components, 2 epochs of accuracies
        for step in range(1, 7):
            s.add(Metric(run_id=ids["running"], scope="step", step=step, epoch=(step + 2) // 3, name="ce", value=2.0 / step))
            s.add(Metric(run_id=ids["running"], scope="step", step=step, epoch=(step + 2) // 3, name="log_det", value=-0.1 * step))
        for epoch, (nat, pgd) in ((1, (0.30, 0.10)), (2, (0.45, 0.15))):
            s.add(Metric(run_id=ids["running"], scope="epoch", step=epoch, epoch=epoch, name="test_nat_acc_average", value=nat))
            s.add(Metric(run_id=ids["running"], scope="epoch", step=epoch, epoch=epoch, name="test_pgd_acc_average", value=pgd))
            s.add(Metric(run_id=ids["running"], scope="epoch", step=epoch, epoch=epoch, name="train_loss", value=1.5 / epoch))
        s.commit()
    engine.dispose()
    return ids


def app(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"views/{page}.py")
        at.run()
    return at


def no_crash(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    crashed = [e.value for e in at.error if "hit an error" in e.value]
    assert not crashed, crashed


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption] + [m.value for m in at.info]
    parts += [m.value for m in at.error] + [m.value for m in at.success] + [m.value for m in at.warning]
    return "\n".join(str(p) for p in parts)


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def arr(value) -> list:
    """A plotly data array as a list (plotly 6+ ships numpy arrays base64-encoded as {dtype, bdata})."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            data = data.reshape([int(n) for n in str(value["shape"]).split(",")])
        return data.tolist()
    return list(value)


def engine_for(db):
    return make_engine(db["url"], create=False)


# --- Runs --------------------------------------------------------------------------------

def test_runs_page_shows_every_status_and_reason(db):
    at = app()  # Runs is the default page
    no_crash(at)
    badges = at.markdown[0].value
    for status, n in (("succeeded", 7), ("running", 1), ("queued", 1), ("failed", 1)):
        assert f"{status} {n}" in badges
    table = at.dataframe[0].value
    assert len(table) == 10
    failed = table[table["id"] == db["ids"]["failed"]].iloc[0]
    assert failed["status"] == "failed" and "CUDA out of memory" in failed["reason"]
    running = table[table["id"] == db["ids"]["running"]].iloc[0]
    assert running["worker"] == "gpu1@host" and running["epoch"] == "2/4" and running["ETA"] != ""


def test_runs_filters(db):
    at = app()
    at.multiselect(key="runs.status").set_value(["failed", "queued"]).run()
    no_crash(at)
    assert sorted(at.dataframe[0].value["status"]) == ["failed", "queued"]
    at.multiselect(key="runs.status").set_value([]).run()
    at.multiselect(key="runs.tag").set_value(["igat"]).run()
    assert sorted(at.dataframe[0].value["id"]) == sorted([db["ids"]["igat0"], db["ids"]["igat1"]])


def test_runs_failed_detail_shows_reason(db):
    at = app(run=str(db["ids"]["failed"]))
    no_crash(at)
    assert at.selectbox(key="runs.selected").value == db["ids"]["failed"]
    assert any("Failed: RuntimeError: CUDA out of memory" in e.value for e in at.error)
    assert at.button(key=f"runs.cancel.{db['ids']['failed']}").disabled
    assert not at.button(key=f"runs.retry.{db['ids']['failed']}").disabled


# --- Live --------------------------------------------------------------------------------

def test_live_shows_curves_of_the_run(db):
    at = app("live", run=str(db["ids"]["running"]))
    no_crash(at)
    specs = plotly_specs(at)
    assert len(specs) == 2  # loss and accuracy curves (the overlay chart appears once other runs are picked)
    loss, acc = specs
    assert {t["name"] for t in loss["data"]} == {"ce", "log_det"}
    ce = next(t for t in loss["data"] if t["name"] == "ce")
    assert arr(ce["x"]) == [1, 2, 3, 4, 5, 6] and arr(ce["y"]) == pytest.approx([2.0 / s for s in range(1, 7)])
    assert loss["layout"]["uirevision"] == f"live-{db['ids']['running']}"
    nat = next(t for t in acc["data"] if t["name"] == "test_nat_acc_average")
    assert arr(nat["y"]) == pytest.approx([30.0, 45.0])
    assert "12 metric points" not in texts(at)  # 6*2 step + 2*3 epoch = 18
    assert "18 metric points" in texts(at)


def test_live_picks_up_new_points_incrementally(db):
    at = app("live", run=str(db["ids"]["running"]))
    with Session(engine_for(db)) as s:
        s.add(Metric(run_id=db["ids"]["running"], scope="step", step=7, epoch=3, name="ce", value=0.1))
        s.commit()
    at.run()  # what the fragment's timer does in the browser
    ce = next(t for t in plotly_specs(at)[0]["data"] if t["name"] == "ce")
    assert arr(ce["x"])[-1] == 7 and arr(ce["y"])[-1] == pytest.approx(0.1)


# --- Members -----------------------------------------------------------------------------

def test_members_shows_fixture_statistics(db):
    at = app("members", run=str(db["ids"]["igat0"]))
    no_crash(at)
    specs = plotly_specs(at)
    titles = [s["layout"]["title"]["text"] for s in specs]
    alloc = specs[0]
    member1 = next(t for t in alloc["data"] if t["name"] == "member 1")
    assert arr(member1["x"]) == [1, 2] and arr(member1["y"]) == [11, 21]
    rank = specs[1]
    assert arr(rank["data"][0]["x"]) == [1, 2] and arr(rank["data"][0]["y"]) == [0.75, 0.25]
    heat = next(s for s, t in zip(specs, titles) if t.startswith("Per-class"))
    assert arr(heat["data"][0]["z"]) == [[17, 3], [18, 3]]
    robust = next(s for s, t in zip(specs, titles) if t.startswith("Per-member robustness"))
    pgd = next(t for t in robust["data"] if t["name"] == "PGD")
    assert arr(pgd["y"]) == pytest.approx([20.0, 25.0])


def test_members_empty_state_without_statistics(db):
    at = app("members", run=str(db["ids"]["adp0"]))  # adp0 has neither stats nor member eval
    no_crash(at)
    assert at.selectbox(key="members.run").value == db["ids"]["igat0"]  # falls back to a run that has some


# --- Compare and Ablation ---------------------------------------------------------------------

def test_compare_shows_table1_table2_and_diff_for_known_results(db):
    ids = db["ids"]
    at = app("compare", exps=f"{db['ids']['exp_adp']},{db['ids']['exp_igat']}")
    no_crash(at)
    assert sorted(at.multiselect(key="cmp.exps").value) == sorted([ids["exp_adp"], ids["exp_igat"]])
    md = "\n".join(m.value for m in at.markdown)
    # Table 1 columns: Average Natural, Average PGD, Max Natural, Max PGD (best bold, second underlined)
    t1 = md[md.index("Table 1"):md.index("Table 2")]
    assert "| ADP | <u>81.00 ± 1.41</u> | <u>39.00 ± 1.41</u> | <u>79.00 ± 1.41</u> | <u>36.00 ± 1.41</u> |" in t1
    assert "| iGAT_ADP | **85.00 ± 1.41** | **47.00 ± 1.41** | **80.00 ± 1.41** | **40.00 ± 1.41** |" in t1
    t2 = md[md.index("Table 2"):]
    # +- propagated from Table 1's std; max/natural 79 +- 1.41 vs 80 +- 1.41 overlap: not distinguishable
    assert "| iGAT_ADP vs ADP | +4.94 ± 2.53 | +20.51 ± 5.68 | +1.27 ± 2.55 (n.d.) | +11.11 ± 5.87 |" in t2
    diff = at.dataframe[0].value  # the config diff is the page's only dataframe
    assert list(diff["field"]) == ["igat.enabled", "seed"]  # only differing fields; dataset etc. are equal
    assert len(diff.columns) == 1 + 4  # field + the four runs of the two experiments
    enabled = diff[diff["field"] == "igat.enabled"].iloc[0].tolist()[1:]
    assert sorted(set(enabled)) == ["False", "True"]
    bars = plotly_specs(at)[0]
    adp_avg = next(t for t in bars["data"] if t["name"] == "ADP" and t["xaxis"] == "x")
    assert arr(adp_avg["y"]) == pytest.approx([81.0, 39.0])
    assert any("No false-robustness warning" in x.value for x in at.success)


def test_compare_bars_carry_error_bars_std_over_seeds_or_wilson(db):
    from igat.stats import wilson

    ids = db["ids"]
    at = app("compare", exps=f"{ids['exp_adp']},{ids['exp_igat']}")
    no_crash(at)
    bars = plotly_specs(at)[0]
    adp_avg = next(t for t in bars["data"] if t["name"] == "ADP" and t["xaxis"] == "x")
    assert arr(adp_avg["error_y"]["array"]) == pytest.approx([2 ** 0.5] * 2)  # std of (80, 82) and (40, 38)
    assert arr(adp_avg["error_y"]["arrayminus"]) == pytest.approx([2 ** 0.5] * 2)
    # group by run: a single run's bar shows its 95 % Wilson interval (asymmetric) over its 100 examples
    at.radio(key="cmp.group").set_value("run").run()
    no_crash(at)
    run0 = next(t for t in plotly_specs(at)[0]["data"] if t["name"].startswith(f"#{ids['adp0']} ") and t["xaxis"] == "x")
    lo, hi = wilson(80, 100)
    assert arr(run0["error_y"]["array"])[0] == pytest.approx(100 * hi - 80)
    assert arr(run0["error_y"]["arrayminus"])[0] == pytest.approx(80 - 100 * lo)
    assert "Wilson" in plotly_specs(at)[0]["layout"]["title"]["text"]


def test_runs_page_shows_the_phase_and_partial_results_of_a_running_evaluation(db):
    from igat.stats import wilson

    rid = db["ids"]["running"]
    lo, hi = wilson(45, 100)
    with Session(engine_for(db)) as s:
        run = s.get(Run, rid)
        run.phase = "evaluating: CW on ensemble/average, 2 of 5"
        s.add(run)
        s.add(EvalResult(run_id=rid, combiner="average", attack="pgd", accuracy=0.45, num_examples=100, ci_low=lo,
                         ci_high=hi, eval_key="k1"))
        s.commit()
    at = app(run=str(rid))
    no_crash(at)
    assert any(p.proto.text.startswith("evaluating: CW on ensemble/average, 2 of 5") for p in at.get("progress"))
    assert "Evaluation results** (partial: the evaluation is still running)" in texts(at)
    table = at.dataframe[-1].value  # after the runs table: the selected run's results
    assert list(table["attack"]) == ["PGD"] and list(table["accuracy %"]) == [45.0]
    assert list(table["95% interval"]) == [f"{100 * lo:.1f} – {100 * hi:.1f}"] and list(table["examples"]) == [100]
    live = app("live", run=str(rid))
    no_crash(live)
    assert any("evaluating: CW on ensemble/average, 2 of 5" in p.proto.text for p in live.get("progress"))
    assert len(live.dataframe) == 1 and list(live.dataframe[0].value["attack"]) == ["PGD"]


def test_launch_protocol_is_one_click_and_shows_the_estimate(db):
    at = app("launch")
    no_crash(at)
    assert at.radio(key="launch.protocol").value == "paper"  # the default: the paper's protocol
    assert sorted(at.multiselect(key="launch.attacks").value) == ["autoattack", "cw", "natural", "pgd", "signhunter"]
    assert at.number_input(key="launch.num_examples").value == 0  # the whole test set
    paper = next(c.value for c in at.caption if c.value.startswith("Estimated evaluation time"))
    assert "on a CPU worker" in paper and "an estimate" in paper
    at.radio(key="launch.protocol").set_value("quick").run()
    no_crash(at)
    assert at.number_input(key="launch.num_examples").value == 1000
    quick = next(c.value for c in at.caption if c.value.startswith("Estimated evaluation time"))
    assert quick != paper and "1,000 evaluation examples: +-3.1 points" in quick
    from app import launch_form as F

    cfg = F.build_config(at.session_state["launch.base"], {})
    assert {a["name"]: a["num_examples"] for a in cfg["eval"]["attacks"]}["signhunter"] == 500


def test_compare_selection_is_in_the_url_and_flags_show(db):
    ids = db["ids"]
    at = app("compare", runs=f"{ids['adp0']},{ids['masked']}")
    no_crash(at)
    assert at.multiselect(key="cmp.runs").value == [ids["adp0"], ids["masked"]]
    assert any("pgd accuracy 60.00% is above natural accuracy 50.00%" in e.value for e in at.error)
    at.multiselect(key="cmp.runs").set_value([ids["adp0"], ids["igat0"]]).run()
    assert at.query_params["runs"] == f"{ids['adp0']},{ids['igat0']}"
    assert not [e for e in at.error if "above natural" in e.value]


def test_pages_keep_their_selection_when_the_user_comes_back_by_the_sidebar(db):
    """The sidebar's links carry no query string and Streamlit drops a page's widget values when another page
    is shown: Compare, Live and Members bring back what was picked on them earlier in the session."""
    ids = db["ids"]
    at = app("compare", runs=f"{ids['adp0']},{ids['igat0']}")
    at.switch_page("views/live.py")
    for name in list(at.query_params):  # what a click on a sidebar link leaves in the URL: nothing
        del at.query_params[name]
    at.run()
    at.selectbox(key="live.run").set_value(ids["adp1"]).run()
    at.switch_page("views/compare.py")
    for name in list(at.query_params):
        del at.query_params[name]
    at.run()
    no_crash(at)
    assert at.multiselect(key="cmp.runs").value == [ids["adp0"], ids["igat0"]]
    assert at.query_params["runs"] == f"{ids['adp0']},{ids['igat0']}"  # and the URL is shareable again
    at.switch_page("views/live.py")
    for name in list(at.query_params):
        del at.query_params[name]
    at.run()
    assert at.selectbox(key="live.run").value == ids["adp1"]


def test_ablation_table3(db):
    at = app("ablation")
    no_crash(at)
    md = "\n".join(m.value for m in at.markdown)
    # one run per variant on 100 examples: +- the half-width of the 95 % Wilson interval (dagger)
    assert "| Hard distributing | **84.00 ± 7.16†** | 42.00 ± 9.50† |" in md
    assert "| iGAT_ADP | **84.00 ± 7.16†** | **45.00 ± 9.57†** |" in md
    bars = plotly_specs(at)[0]
    pgd = next(t for t in bars["data"] if t["name"] == "PGD")
    assert dict(zip(pgd["x"], arr(pgd["y"]))) == pytest.approx({"hard": 42.0, "full": 45.0})
    assert bars["layout"]["xaxis"]["categoryarray"] == ["hard", "full"]  # Table 3's column order


def test_compare_png_export_failure_is_a_clear_message(db, monkeypatch):
    import plotly.graph_objects as go

    def broken(self, *args, **kwargs):
        raise RuntimeError("Could not find Chrome")

    monkeypatch.setattr(go.Figure, "to_image", broken)
    at = app("compare", runs=str(db["ids"]["adp0"]))
    assert "cmp.png.compare" not in {b.key for b in at.button}  # the export section is built only when opened
    at = open_section(at, "cmp.export_open")
    at.button(key="cmp.png.compare").click().run()
    no_crash(at)
    assert any(e.value.startswith("PNG export failed (RuntimeError: Could not find Chrome)") for e in at.error)


def test_figure_png_renders_with_system_chromium():
    from app import charts
    from app.export import figure_png, find_browser

    if find_browser() is None:
        pytest.skip("no Chrome/Chromium on this machine")
    import pandas as pd

    df = pd.DataFrame({"method": ["adp", "adp"], "seed": [0, 0], "combiner": ["average"] * 2,
                       "attack": ["natural", "pgd"], "accuracy": [0.8, 0.4]})
    png = figure_png(charts.robustness_bars(df, "t"), width=500, height=300)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


# --- Empty states and the page guard --------------------------------------------------------

@pytest.mark.parametrize("page", ["runs", "live", "compare", "members", "ablation"])
def test_empty_database_pages_say_what_to_do(tmp_path, monkeypatch, page):
    monkeypatch.setenv("IGAT_HOME", str(tmp_path))
    monkeypatch.setenv("IGAT_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    st.cache_resource.clear()
    at = app(page)
    no_crash(at)
    assert at.info, "an empty page must explain what to do"
    links = [el for el in at.get("page_link")]
    assert links, "and link to the page that does it"


def test_page_error_is_a_short_message_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("IGAT_HOME", str(tmp_path))
    monkeypatch.setenv("IGAT_DATABASE_URL", "nosuchdialect://nowhere/igat")  # the engine cannot be built
    st.cache_resource.clear()
    at = app()
    assert not at.exception
    assert any("hit an error" in e.value for e in at.error)
    st.cache_resource.clear()


# --- Launch --------------------------------------------------------------------------------

@pytest.fixture
def queue(db, monkeypatch):
    """A clean Redis database for the Celery queue, and a fresh Celery app bound to it."""
    redis = pytest.importorskip("redis")
    import tasks.celery_app

    client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}")
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    client.flushdb()
    monkeypatch.setattr(tasks.celery_app, "_DEFAULT_APP", None)
    yield client
    client.flushdb()


def queued_messages(client) -> int:
    return sum(int(client.llen(q)) for q in ("gpu", "cpu"))


def launch_tiny(at: AppTest) -> AppTest:
    """Fill the form with a tiny synthetic run."""
    at.selectbox(key="launch.defense").set_value("adp").run()
    at.selectbox(key="launch.dataset").set_value("synthetic")
    at.number_input(key="launch.members").set_value(2)
    at.number_input(key="launch.epochs").set_value(1)
    at.number_input(key="launch.batch_size").set_value(32)
    at.number_input(key="launch.steps_per_epoch").set_value(2)
    at.number_input(key="launch.num_examples").set_value(32)
    at.checkbox(key="launch.dp.plus_adv").set_value(False)
    at.text_input(key="launch.name").set_value("tiny")
    return at


def open_section(at: AppTest, state_key: str, tab_key: str | None = None, tab: str | None = None) -> AppTest:
    """Open a section that is built only on request (Launch's YAML box and Advanced, Compare's export, a run's
    downloads and curation on Runs), as a click on it does: set its state and rerun; ``tab`` also picks one of
    its tabs."""
    at.session_state[state_key] = True
    if tab is not None:
        at.session_state[tab_key] = tab
    return at.run()


def open_yaml_box(at: AppTest) -> AppTest:
    return open_section(at, "launch.yaml_open")


def open_advanced(at: AppTest, tab: str) -> AppTest:
    return open_section(at, "launch.advanced_open", "launch.advanced_tab", tab)


def run_count(db) -> int:
    with Session(engine_for(db)) as s:
        return len(s.exec(select(Run)).all())


def test_launch_form_rejects_a_bad_value_naming_the_field(db):
    at = launch_tiny(app("launch"))
    before = run_count(db)
    at.number_input(key="launch.dp.alpha").set_value(-1.0)
    at.number_input(key="launch.epochs").set_value(0)
    at.button(key="launch.queue").click().run()
    no_crash(at)
    errors = "\n".join(e.value for e in at.error)
    assert "`defense.params.alpha`: Input should be greater than or equal to 0" in errors
    assert "`train.epochs`: Input should be greater than or equal to 1" in errors
    assert "fix these fields" in errors  # the summary above the form
    assert run_count(db) == before  # nothing was queued


def test_launch_every_registered_defense_gets_its_parameter_fields(db):
    from igat.defenses import DEFENSES

    at = app("launch")
    assert at.selectbox(key="launch.defense").options == list(DEFENSES.names())
    for name in DEFENSES.names():
        at.selectbox(key="launch.defense").set_value(name).run()
        no_crash(at)
        fields = DEFENSES.get(name).Params.model_fields
        shown = {w.key.removeprefix("launch.dp.") for kind in ("number_input", "checkbox", "selectbox", "text_input")
                 for w in at.get(kind) if (w.key or "").startswith("launch.dp.")}
        assert shown == set(fields), name
        recommended = (DEFENSES.get(name).recommended.get("defense") or {}).get("params") or {}
        for field, info in fields.items():  # defaults: the defense's recommended overrides, else the Params model
            if info.annotation is float:
                expected = recommended.get(field, info.default)
                assert at.number_input(key=f"launch.dp.{field}").value == pytest.approx(expected), (name, field)


def test_launch_rejects_bad_seeds(db):
    at = launch_tiny(app("launch"))
    at.text_input(key="launch.seeds").set_value("0, x")
    at.button(key="launch.queue").click().run()
    assert any("`seed`: 'x' is not an integer" in e.value for e in at.error)


def test_launch_member_depth_and_width(db):
    from app import launch_form as F

    at = launch_tiny(app("launch"))
    assert at.number_input(key="launch.depth").value == 20 and at.number_input(key="launch.width").value == 1
    before = run_count(db)
    at.number_input(key="launch.depth").set_value(21)
    at.number_input(key="launch.width").set_value(0)
    at.button(key="launch.queue").click().run()
    no_crash(at)
    errors = "\n".join(e.value for e in at.error)
    assert "`model.depth`: must be a CIFAR ResNet depth 6n+2 in 8..110" in errors
    assert "`model.width`: must be an integer channel multiplier in 1..8" in errors
    assert run_count(db) == before
    # the form writes valid sizes into the config; a config stored before the knobs shows the defaults
    configs, errs = F.validate(F.default_config("adp"), {"depth": 8, "width": 2, "seeds": "0"})
    assert not errs and (configs[0].model.depth, configs[0].model.width) == (8, 2)
    old = F.default_config("adp")
    del old["model"]["depth"], old["model"]["width"]
    assert (F.form_values(old)["depth"], F.form_values(old)["width"]) == (20, 1)


def test_launch_submit_enqueues_one_run_per_seed(db, queue):
    at = launch_tiny(app("launch"))
    at.text_input(key="launch.seeds").set_value("3, 4")
    at.text_input(key="launch.tags").set_value("smoke, ui")
    at.button(key="launch.queue").click().run()
    no_crash(at)
    assert any("Queued experiment" in s.value for s in at.success), [e.value for e in at.error]
    with Session(engine_for(db)) as s:
        runs = s.exec(select(Run).where(Run.name.startswith("tiny"))).all()
        exp = s.get(Experiment, runs[0].experiment_id)
    assert sorted(r.seed for r in runs) == [3, 4]
    assert {r.status for r in runs} == {"queued"} and len({r.experiment_id for r in runs}) == 1
    assert exp.kind == "seeds"
    cfg = json.loads(runs[0].config_json)
    assert cfg["data"]["dataset"] == "synthetic" and cfg["model"]["num_members"] == 2
    assert cfg["train"]["steps_per_epoch"] == 2 and cfg["defense"] == {"name": "adp", "params": cfg["defense"]["params"]}
    assert cfg["defense"]["params"]["plus_adv"] is False and cfg["tags"] == ["smoke", "ui"]
    assert queued_messages(queue) == 2


def test_launch_igat_defaults_and_preset(db):
    at = app("launch")
    at.selectbox(key="launch.defense").set_value("adp").run()
    at.toggle(key="launch.igat").set_value(True).run()
    no_crash(at)
    assert at.number_input(key="launch.alpha").value == 5.0 and at.number_input(key="launch.beta").value == 10.0
    assert at.number_input(key="launch.batch_size").value == 512  # paper iGAT batch
    at.radio(key="launch.preset").set_value("reference-code").run()
    assert at.number_input(key="launch.steps_per_epoch").value == 51  # reference pseudo-epochs
    assert at.number_input(key="launch.lr").value == pytest.approx(0.001)


def test_launch_clone_prefills_from_the_run(db):
    at = app("launch", clone=str(db["ids"]["igat1"]))
    no_crash(at)
    assert at.toggle(key="launch.igat").value is True
    assert at.selectbox(key="launch.dataset").value == "synthetic"
    assert at.number_input(key="launch.members").value == 2
    assert at.text_input(key="launch.seeds").value == "1"
    assert at.checkbox(key="launch.dp.plus_adv").value is False
    assert any(f"Pre-filled from run #{db['ids']['igat1']}" in i.value for i in at.info)


def test_launch_yaml_import_and_bad_yaml(db):
    at = open_yaml_box(app("launch"))
    at.text_area(key="launch.yaml_text").set_value(
        "name: from-yaml\ndefense: {name: pgd_at, params: {steps: 3}}\nmodel: {num_members: 3}\n")
    at.button(key="launch.import").click().run()
    no_crash(at)
    assert at.text_input(key="launch.name").value == "from-yaml"
    assert at.selectbox(key="launch.defense").value == "pgd_at"
    assert at.number_input(key="launch.dp.steps").value == 3
    assert at.number_input(key="launch.members").value == 3
    at.text_area(key="launch.yaml_text").set_value("model: {num_members: 0}\n")
    at.button(key="launch.import").click().run()
    assert any("`model.num_members`" in e.value for e in at.error)
    assert at.number_input(key="launch.members").value == 3  # unchanged


def test_runs_cancel_and_retry(db, queue):
    queued = db["ids"]["queued"]
    at = app(run=str(queued))
    at.button(key=f"runs.cancel.{queued}").click().run()
    no_crash(at)
    with Session(engine_for(db)) as s:
        assert s.get(Run, queued).status == "cancelled"
    assert any(f"Cancellation of run #{queued} requested" in x.value for x in at.success)
    at.button(key=f"runs.retry.{queued}").click().run()
    no_crash(at)
    with Session(engine_for(db)) as s:
        assert s.get(Run, queued).status == "queued"
    assert queued_messages(queue) == 1


# --- iGAT fine-tuning from a base run ------------------------------------------------------

def launch_igat_tiny(at: AppTest) -> AppTest:
    """iGAT on (which loads the iGAT defaults), then the tiny synthetic run on top."""
    at.toggle(key="launch.igat").set_value(True).run()
    return launch_tiny(at)


def test_launch_igat_fine_tunes_the_picked_base_run(db, queue):
    base = db["ids"]["adp0"]
    at = launch_igat_tiny(app("launch"))
    picker = at.selectbox(key="launch.init_run")
    assert picker.value == 0 and picker.options[0] == "train from scratch"  # the default: scratch
    assert f"#{base} adp (adp, 2 members, synthetic)" in picker.options
    assert not any(f"#{db['ids']['igat0']} " in o for o in picker.options)  # no checkpoint: not offered
    picker.set_value(base)
    at.text_input(key="launch.seeds").set_value("0, 1")
    at.button(key="launch.queue").click().run()
    no_crash(at)
    assert any("Queued experiment" in s.value for s in at.success), [e.value for e in at.error]
    with Session(engine_for(db)) as s:
        runs = s.exec(select(Run).where(Run.name.startswith("tiny"))).all()
    assert len(runs) == 2 and sorted(r.seed for r in runs) == [0, 1]
    for r in runs:
        cfg = json.loads(r.config_json)
        assert cfg["igat"]["enabled"] is True and cfg["train"]["init_checkpoint"] == BASE_CHECKPOINT
        assert r.parent_run_id == base and r.kind == "finetune" and r.status == "queued"
    assert queued_messages(queue) == 2


def test_launch_igat_from_scratch_has_no_parent(db, queue):
    at = launch_igat_tiny(app("launch"))
    at.button(key="launch.queue").click().run()
    no_crash(at)
    with Session(engine_for(db)) as s:
        (run,) = s.exec(select(Run).where(Run.name.startswith("tiny"))).all()
    assert json.loads(run.config_json)["train"]["init_checkpoint"] is None
    assert run.parent_run_id is None and run.kind == "train"


def test_launch_ablation_variants_all_fine_tune_the_base(db, queue):
    base = db["ids"]["adp0"]
    at = launch_igat_tiny(app("launch"))
    scratch_note = "each ablation variant will be trained from scratch"
    assert any(scratch_note in i.value for i in at.info)  # no base picked yet
    at.selectbox(key="launch.init_run").set_value(base)
    at.checkbox(key="launch.ablation").set_value(True)
    at.button(key="launch.queue").click().run()
    no_crash(at)
    assert not any(scratch_note in i.value for i in at.info)
    with Session(engine_for(db)) as s:
        runs = s.exec(select(Run).where(Run.name.startswith("tiny"))).all()
        exp = s.get(Experiment, runs[0].experiment_id)
    assert exp.kind == "ablation"
    assert sorted(r.variant for r in runs) == ["beta0", "full", "hard", "opposite", "random"]
    assert {json.loads(r.config_json)["train"]["init_checkpoint"] for r in runs} == {BASE_CHECKPOINT}
    assert {r.parent_run_id for r in runs} == {base} and {r.kind for r in runs} == {"finetune"}


def test_launch_base_run_member_mismatch_names_init_checkpoint(db):
    at = launch_igat_tiny(app("launch"))
    before = run_count(db)
    at.number_input(key="launch.members").set_value(3)
    at.selectbox(key="launch.init_run").set_value(db["ids"]["adp0"])
    at.button(key="launch.queue").click().run()
    no_crash(at)
    errors = "\n".join(e.value for e in at.error)
    assert "`train.init_checkpoint`" in errors and "model.num_members 2 (this form: 3)" in errors
    assert "defense.name" not in errors and "data.dataset" not in errors  # only the field that differs
    assert run_count(db) == before


def test_runs_page_links_a_baseline_to_igat_fine_tuning(db):
    base = db["ids"]["adp0"]
    links = {el.proto.label: el.proto for el in app(run=str(base)).get("page_link")}
    assert "Fine-tune with iGAT" in links
    assert links["Fine-tune with iGAT"].query_string == f"clone={base}&finetune=1"
    igat_links = [el.proto.label for el in app(run=str(db["ids"]["igat0"])).get("page_link")]
    assert "Fine-tune with iGAT" not in igat_links  # already iGAT
    assert "Fine-tune with iGAT" not in [el.proto.label for el in app(run=str(db["ids"]["adp1"])).get("page_link")]


def test_launch_finetune_link_prefills_igat_and_the_base(db):
    base = db["ids"]["adp0"]
    at = app("launch", clone=str(base), finetune="1")
    no_crash(at)
    assert at.toggle(key="launch.igat").value is True
    assert at.selectbox(key="launch.init_run").value == base
    assert at.number_input(key="launch.alpha").value == 5.0 and at.number_input(key="launch.beta").value == 10.0
    assert at.number_input(key="launch.batch_size").value == 64  # the base run's batch, not the paper's 512
    assert at.selectbox(key="launch.dataset").value == "synthetic" and at.number_input(key="launch.members").value == 2
    assert any(f"iGAT fine-tuning of run #{base}" in i.value for i in at.info)
    at.radio(key="launch.preset").set_value("reference-code").run()  # reloads the defaults, keeps the base
    no_crash(at)
    assert at.selectbox(key="launch.init_run").value == base
