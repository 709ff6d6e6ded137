"""Several runs' curves on one chart (Live and Compare), and Compare with many runs (issue 16).

Uses the fixture store of ``tests/test_app.py``; each test adds the metric points it needs, with the times
they were recorded, and checks what the charts draw.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from sqlmodel import Session

from app import charts
from app.configdiff import config_diff, display_diff
from tasks.store import EvalResult, Metric, Run, utcnow
from tests import test_app as fixtures
from tests.test_app import _config, app, arr, engine_for, no_crash, plotly_specs, texts

db = fixtures.db  # the fixture store, requested by name

T0 = utcnow() - timedelta(hours=1)


def add_curves(db, keys: list[str], steps: int = 8, per_epoch: int = 4) -> None:
    """``train_loss`` per step (a point a minute) and ``test_pgd_acc_average`` per epoch for each run."""
    engine = engine_for(db)
    with Session(engine) as s:
        for k, key in enumerate(keys):
            rid = db["ids"][key]
            for step in range(1, steps + 1):
                s.add(Metric(run_id=rid, scope="step", step=step, epoch=(step - 1) // per_epoch + 1, name="train_loss",
                             value=2.0 / step + k, recorded_at=T0 + timedelta(minutes=step)))
            for epoch in range(1, steps // per_epoch + 1):
                s.add(Metric(run_id=rid, scope="epoch", step=epoch, epoch=epoch, name="test_pgd_acc_average",
                             value=0.1 * epoch + 0.01 * k, recorded_at=T0 + timedelta(minutes=per_epoch * epoch)))
        s.commit()
    engine.dispose()


def chart_with_title(at, start: str) -> dict:
    specs = [s for s in plotly_specs(at) if str(s["layout"].get("title", {}).get("text", "")).startswith(start)]
    assert specs, [s["layout"].get("title") for s in plotly_specs(at)]
    return specs[0]


# --- pure chart helpers -------------------------------------------------------------------------------------

def test_fifty_runs_get_fifty_distinct_colours_and_a_numeric_legend_order():
    assert len(set(charts.distinct_colours(50))) == 50
    assert len(set(charts.distinct_colours(80))) == 80
    labels = ["#10 ADP", "#9 ADP", "#100 GAL", "#2 TRS"]
    assert sorted(labels, key=charts.run_sort_key) == ["#2 TRS", "#9 ADP", "#10 ADP", "#100 GAL"]


def test_epoch_axis_places_step_points_at_their_fraction_of_the_epoch():
    series = pd.DataFrame({"run_id": [1] * 8, "step": range(1, 9), "epoch": [1, 1, 1, 1, 2, 2, 2, 2],
                           "value": [1.0] * 8, "recorded_at": [None] * 8})
    pts, title, missing = charts.series_x(series, "step", "epoch")
    assert pts["x"].tolist() == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0] and title == "epoch" and missing == 0


def test_a_per_epoch_metric_is_drawn_against_epochs_even_when_step_is_chosen():
    series = pd.DataFrame({"run_id": [1, 1], "step": [1, 2], "epoch": [1, 2], "value": [0.1, 0.2],
                           "recorded_at": [None, None]})
    pts, title, _ = charts.series_x(series, "epoch", "step")
    assert pts["x"].tolist() == [1, 2] and title == "epoch"


def test_wall_time_axis_is_minutes_since_each_runs_first_point_and_counts_points_without_a_time():
    series = pd.DataFrame({"run_id": [1, 1, 2, 2, 2], "step": [1, 2, 1, 2, 3], "epoch": [1] * 5, "value": [1.0] * 5,
                           "recorded_at": [T0, T0 + timedelta(minutes=3), T0 + timedelta(hours=2),
                                           T0 + timedelta(hours=2, minutes=1), None]})
    pts, title, missing = charts.series_x(series, "step", "wall time")
    assert pts["x"].tolist() == [0.0, 3.0, 0.0, 1.0] and title == "wall time (minutes)" and missing == 1


def test_many_runs_move_the_legend_outside_and_grow_the_chart():
    few = charts.many_legend_layout(3, 400)
    many = charts.many_legend_layout(50, 400)
    assert few["legend"]["orientation"] == "h" and few["height"] == 400
    assert many["legend"]["x"] > 1 and many["height"] > 1000


def test_config_diff_of_many_runs_is_transposed_one_row_per_run():
    configs = {f"#{i} ADP": {"seed": i, "model": {"num_members": 3}, "name": "same"} for i in range(1, 9)}
    diff = config_diff(configs)
    assert list(diff["field"]) == ["seed"]  # only what differs
    shown = display_diff(diff)
    assert list(shown.columns) == ["run", "seed"] and len(shown) == 8 and shown.iloc[7].tolist() == ["#8 ADP", "8"]
    few = config_diff(dict(list(configs.items())[:3]))
    assert display_diff(few) is few  # a few runs: fields as rows, as before


def test_robustness_bars_have_one_legend_entry_per_group_and_a_panel_per_combiner():
    df = pd.DataFrame({"method": ["ADP", "ADP", "GAL", "GAL", "ADP", "GAL"],
                       "seed": [0] * 6, "combiner": ["average", "average", "average", "average", "max", "max"],
                       "attack": ["pgd", "natural", "natural", "pgd", "natural", "natural"],
                       "accuracy": [0.4, 0.8, 0.7, 0.3, 0.75, 0.65], "num_examples": [100] * 6})
    fig = charts.robustness_bars(df, "t").to_plotly_json()
    traces = fig["data"]
    assert [(t["name"], t["xaxis"], t["showlegend"]) for t in traces] == [
        ("ADP", "x", True), ("ADP", "x2", False), ("GAL", "x", True), ("GAL", "x2", False)]
    adp_avg = traces[0]
    assert list(adp_avg["x"]) == ["Natural", "PGD"] and list(adp_avg["y"]) == pytest.approx([80.0, 40.0])
    assert traces[0]["marker"]["color"] == traces[1]["marker"]["color"] != traces[2]["marker"]["color"]
    layout = fig["layout"]
    assert [a["text"] for a in layout["annotations"]] == ["combiner: average", "combiner: max"]
    assert layout["xaxis"]["domain"][1] < layout["xaxis2"]["domain"][0]
    assert layout["yaxis2"]["matches"] == "y" and list(layout["yaxis"]["range"]) == [0, 100]
    assert list(layout["xaxis"]["categoryarray"]) == ["Natural", "PGD"] and layout["barmode"] == "group"
    assert layout["legend"]["title"]["text"] == "method"


# --- Live -----------------------------------------------------------------------------------------------------

def test_live_overlays_other_runs_curves_on_the_chosen_metric(db):
    add_curves(db, ["adp0", "adp1", "igat0"])
    ids = db["ids"]
    at = app("live", run=str(ids["adp0"]))
    no_crash(at)
    at.multiselect(key="live.overlay").set_value([ids["igat0"], ids["adp1"]]).run()
    no_crash(at)
    at.selectbox(key="live.ov.metric").set_value(("step", "train_loss")).run()
    spec = chart_with_title(at, "train_loss (per step), 3 run(s)")
    names = [t["name"] for t in spec["data"]]
    assert [n.split()[0] for n in names] == sorted([f"#{ids[k]}" for k in ("adp0", "adp1", "igat0")],
                                                   key=lambda s: int(s[1:]))
    first = next(t for t in spec["data"] if t["name"].startswith(f"#{ids['adp0']} "))
    assert arr(first["y"])[:2] == pytest.approx([2.0, 1.0])  # run adp0 (k=0): 2/step
    assert len({t["line"]["color"] for t in spec["data"]}) == 3
    # wall time on the x axis: minutes since the run's first point
    at.radio(key="live.ov.x").set_value("wall time").run()
    spec = chart_with_title(at, "train_loss (per step), 3 run(s)")
    assert arr(spec["data"][0]["x"])[:3] == pytest.approx([0.0, 1.0, 2.0])
    assert spec["layout"]["xaxis"]["title"]["text"] == "wall time (minutes)"


def test_live_shows_a_finished_runs_results_on_request_and_a_running_evaluations_at_once(db):
    ids = db["ids"]
    at = app("live", run=str(ids["adp0"]))  # succeeded, evaluated
    no_crash(at)
    assert not at.dataframe  # no table is built until asked for (a closed expander would still build it)
    switch = at.toggle(key=f"live.results.on.{ids['adp0']}")
    assert switch.label.startswith("Evaluation results (") and not switch.value
    switch.set_value(True).run()
    no_crash(at)
    assert len(at.dataframe) == 1 and set(at.dataframe[0].value["attack"]) >= {"Natural", "PGD"}


# --- Compare --------------------------------------------------------------------------------------------------

def test_compare_overlays_the_selected_runs_training_curves(db):
    add_curves(db, ["adp0", "igat0"])
    ids = db["ids"]
    at = app("compare", runs=f"{ids['adp0']},{ids['igat0']}")
    no_crash(at)
    assert "2 run(s) selected" in texts(at)
    # Only the bars are drawn at first: the curves, a second chart, wait until asked for (and a fragment draws them).
    assert [sp["layout"]["title"]["text"].split(" (")[0] for sp in plotly_specs(at)] == ["Accuracy under attack"]
    at.toggle(key="cmp.curves.on").set_value(True).run()
    no_crash(at)
    spec = chart_with_title(at, "test_pgd_acc_average (per epoch), 2 run(s)")  # the PGD probe is offered first
    assert len(spec["data"]) == 2
    adp = next(t for t in spec["data"] if t["name"].startswith(f"#{ids['adp0']} "))
    assert arr(adp["y"]) == pytest.approx([10.0, 20.0])  # in %
    at.radio(key="cmp.curves.x").set_value("step").run()
    no_crash(at)


def test_compare_builds_its_paper_tables_once_for_the_same_results(db, monkeypatch):
    from app import tables

    calls = []
    real = tables.table1
    monkeypatch.setattr(tables, "table1", lambda frame: calls.append(len(frame)) or real(frame))
    import streamlit as st

    st.cache_data.clear()
    ids = db["ids"]
    at = app("compare", runs=f"{ids['adp0']},{ids['igat0']}")
    no_crash(at)
    at.radio(key="cmp.group").set_value("run").run()  # a rerun of the page with the same results
    no_crash(at)
    assert "Table 1: accuracy" in texts(at) and len(calls) == 1
    at.multiselect(key="cmp.runs").set_value([ids["adp0"]]).run()  # other results: other tables
    no_crash(at)
    assert len(calls) == 2


def test_compare_with_fifty_runs_counts_them_and_sorts_the_legend_numerically(db):
    engine = engine_for(db)
    with Session(engine) as s:
        new = []
        for i in range(48):
            r = Run(name=f"many-{i}", config_json=_config(seed=i), dataset="synthetic", defense="adp", seed=i,
                    status="succeeded", total_epochs=1, finished_at=utcnow())
            s.add(r)
            new.append(r)
        s.commit()
        for r in new:
            s.add(EvalResult(run_id=r.id, combiner="average", attack="natural", accuracy=0.5, num_examples=100))
            s.add(EvalResult(run_id=r.id, combiner="average", attack="pgd", accuracy=0.2, num_examples=100))
        s.commit()
        chosen = [db["ids"]["adp0"], db["ids"]["adp1"], *[r.id for r in new]]
    engine.dispose()
    at = app("compare", runs=",".join(map(str, chosen)))
    no_crash(at)
    assert "50 run(s) selected" in texts(at)
    at.radio(key="cmp.group").set_value("run").run()
    no_crash(at)
    bars = chart_with_title(at, "Accuracy under attack")
    legend = list(dict.fromkeys(t["name"] for t in bars["data"]))
    assert len(legend) == 50
    assert [int(n.split()[0][1:]) for n in legend] == sorted(chosen)
    assert len({t["marker"]["color"] for t in bars["data"]}) == 50
    assert bars["layout"]["legend"]["x"] > 1 and bars["layout"]["height"] > 1000
    diff = [d.value for d in at.dataframe if "run" in d.value.columns]
    assert diff and len(diff[0]) == 50  # the config diff: one row per run
    assert not any("run(s)" in str(sp["layout"].get("title", {}).get("text", "")) for sp in plotly_specs(at))
    at.toggle(key="cmp.curves.on").set_value(True).run()  # fifty runs' curves only on request
    no_crash(at)
