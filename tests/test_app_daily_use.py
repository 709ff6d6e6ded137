"""Dashboard defects found by driving it as a new user would (issue 16), each pinned by an AppTest.

Uses the fixture store, the Redis queue and the helpers of ``tests/test_app.py``.
"""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from tasks.store import Run
from tests import test_app as fixtures
from tests.test_app import (
    BASE_CHECKPOINT,
    app,
    engine_for,
    launch_tiny,
    no_crash,
    open_advanced,
    open_section,
    open_yaml_box,
    queued_messages,
    run_count,
    texts,
)

db, queue = fixtures.db, fixtures.queue  # the fixture store and the Redis queue, requested by name

QUEUE = "launch.queue"


def errors_of(at) -> str:
    return "\n".join(e.value for e in at.error)


# --- 1. members per defense ----------------------------------------------------------------------

def test_launch_refuses_one_member_for_a_pair_defense_and_states_the_range(db):
    at = launch_tiny(app("launch"))
    assert "2..64 for adp" in at.number_input(key="launch.members").help
    before = run_count(db)
    at.number_input(key="launch.members").set_value(1)
    at.button(key=QUEUE).click().run()
    no_crash(at)
    message = ("`model.num_members`: must be an integer >= 2 for defense 'adp' (its diversity terms compare member "
               "pairs), got 1")
    assert message in errors_of(at)
    assert run_count(db) == before
    at.selectbox(key="launch.defense").set_value("pgd_at").run()
    assert "1..64 for pgd_at" in at.number_input(key="launch.members").help


def test_launch_refuses_a_fractional_member_count_instead_of_cutting_it(db):
    at = launch_tiny(app("launch"))
    before = run_count(db)
    at.number_input(key="launch.members").set_value(2.5)
    at.button(key=QUEUE).click().run()
    no_crash(at)
    assert at.number_input(key="launch.members").value == 2.5  # not silently 2
    assert "`model.num_members`: must be a whole number, got 2.5" in errors_of(at)
    assert run_count(db) == before


# --- 6. YAML import -----------------------------------------------------------------------------

def test_launch_yaml_without_optim_gets_the_defense_recipe(db):
    at = open_yaml_box(app("launch"))
    at.text_area(key="launch.yaml_text").set_value("name: adp-yaml\ndefense: {name: adp}\nmodel: {num_members: 2}\n")
    at.button(key="launch.import").click().run()
    no_crash(at)
    assert at.text_input(key="launch.name").value == "adp-yaml"
    assert at.number_input(key="launch.lr").value == pytest.approx(1e-3)  # ADP's Adam 1e-3, not SGD 0.1
    assert at.session_state["launch.base"]["optim"]["name"] == "adam"


def test_launch_yaml_errors_are_the_yamls_and_keep_the_box_open(db):
    at = open_yaml_box(app("launch"))
    at.text_area(key="launch.yaml_text").set_value("")
    at.button(key="launch.import").click().run()
    no_crash(at)
    shown = texts(at)
    assert "Loaded config" not in shown
    assert "The YAML was not loaded; the form is unchanged" in shown and "the config is empty" in shown
    assert "not queued" not in shown  # nothing was being queued
    box = next(e for e in at.expander if e.label == "YAML import / export")
    assert box.proto.expanded, "the box with the pasted text stays open"
    at.text_area(key="launch.yaml_text").set_value("model: {num_members: 0}\n")
    at.button(key="launch.import").click().run()
    assert "`model.num_members`: Input should be greater than or equal to 1" in texts(at)
    assert next(e for e in at.expander if e.label == "YAML import / export").proto.expanded


# --- 7. fine-tuning keeps the base's scale; long runs ask first -------------------------------------

def test_finetune_keeps_the_base_runs_budget_and_shows_the_changes(db, queue):
    base = db["ids"]["adp0"]  # trained 1 epoch at batch 64 (tests.helpers.synthetic_config)
    at = app("launch", clone=str(base), finetune="1")
    no_crash(at)
    assert at.number_input(key="launch.epochs").value == 1 and at.number_input(key="launch.batch_size").value == 64
    assert "Training budget: 1 epoch(s) at batch 64, the base run's" in texts(at)
    diff = at.dataframe[0].value
    assert f"base run #{base}" in diff.columns and "igat.enabled" in list(diff["field"])
    at.number_input(key="launch.epochs").set_value(3)
    at.run()
    assert "Training budget: 3 epoch(s) at batch 64; the base run trained 1 epoch(s) at batch 64." in texts(at)
    at.button(key=QUEUE).click().run()  # a small run: queued at once
    no_crash(at)
    assert any("Queued experiment" in s.value for s in at.success), errors_of(at)
    with Session(engine_for(db)) as s:
        (run,) = s.exec(select(Run).where(Run.parent_run_id == base)).all()
    cfg = json.loads(run.config_json)
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"]) == (3, 64)
    assert cfg["train"]["init_checkpoint"] == BASE_CHECKPOINT


def test_a_long_run_is_queued_only_after_confirming_its_estimate(db, queue):
    at = app("launch")  # the defaults: ADP on CIFAR-10 for 200 epochs, the paper's evaluation
    assert any(c.value.startswith("Estimated cost of the whole run") for c in at.caption)
    before = run_count(db)
    at.button(key=QUEUE).click().run()
    no_crash(at)
    warning = next(w.value for w in at.warning if "This is a long run" in w.value)
    assert "on a CPU worker" in warning and "member passes of training" in warning
    assert run_count(db) == before and queued_messages(queue) == 0
    at.button(key="launch.confirm_no").click().run()
    assert not [w for w in at.warning if "This is a long run" in w.value] and run_count(db) == before
    at.button(key=QUEUE).click().run()
    at.button(key="launch.confirm_yes").click().run()
    no_crash(at)
    assert any("Queued experiment" in s.value for s in at.success), errors_of(at)
    assert run_count(db) == before + 1 and queued_messages(queue) == 1


# --- 10. weights named by meaning ------------------------------------------------------------------

def test_launch_names_the_alpha_fields_by_meaning(db):
    at = app("launch")
    at.selectbox(key="launch.defense").set_value("adp").run()
    at.toggle(key="launch.igat").set_value(True).run()
    no_crash(at)
    labels = [w.label for w in at.number_input]
    assert len(labels) == len(set(labels)), labels  # no two fields share a name
    assert "alpha" not in labels and "beta" not in labels
    assert at.number_input(key="launch.alpha").label.startswith("Distributed-CE weight")
    assert at.number_input(key="launch.dp.alpha").label.startswith("Entropy weight")


# --- 4. the PNG export shows the page's colours --------------------------------------------------------

def test_png_export_draws_the_bars_in_the_pages_colours():
    import io

    import pandas as pd
    import plotly.io as pio
    from PIL import Image

    from app import charts
    from app.export import figure_png, find_browser

    if find_browser() is None:
        pytest.skip("no Chrome/Chromium on this machine")
    assert pio.templates.default == "streamlit"  # as in the dashboard process (streamlit is imported)
    df = pd.DataFrame({"method": ["adp", "adp", "iGAT_adp", "iGAT_adp"], "seed": [0] * 4, "combiner": ["average"] * 4,
                       "attack": ["natural", "pgd"] * 2, "accuracy": [0.8, 0.4, 0.85, 0.45], "num_examples": [100] * 4})
    png = figure_png(charts.robustness_bars(df, "t"), width=600, height=400)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 1, "all one colour"

    def count(hex_colour: str) -> int:
        target = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        return sum(n for n, rgb in colours if all(abs(a - b) <= 8 for a, b in zip(rgb, target, strict=True)))

    bars = image.width * image.height // 200  # each method's two bars cover far more than 0.5 % of the image
    # the page's two blues: Streamlit's light theme colours its first two categories #0068c9 and #83c9ff
    assert count("#0068c9") > bars and count("#83c9ff") > bars
    assert count("#000001") + count("#000000") < bars  # no black bars


# --- 2. the time left during the evaluation is the worker's estimate, not a straight line ---------------

def test_runs_eta_during_evaluation_is_the_workers_estimate(db):
    from datetime import timedelta

    from tasks import runstate
    from tasks.progress import ETA_ARTIFACT
    from tasks.store import utcnow

    rid = db["ids"]["running"]  # 50 % done, started just now: a straight line would say seconds
    engine = engine_for(db)
    with Session(engine) as s:
        run = s.get(Run, rid)
        run.phase, run.progress = "evaluating: AA on ensemble/average, 4 of 5", 0.9
        run.started_at = utcnow() - timedelta(seconds=180)
        s.add(run)
        s.commit()
    runstate.put_artifact(engine, rid, ETA_ARTIFACT, {"seconds": 900.0, "scope": "run",
                                                       "written_at": (utcnow() - timedelta(seconds=10)).isoformat()})
    at = app(run=str(rid))
    no_crash(at)
    row = at.dataframe[0].value.set_index("id").loc[rid]
    assert row["ETA"].startswith("14m"), row["ETA"]  # 900 s written 10 s ago, not 180 * 0.1 / 0.9 = 20 s
    bar = next(p.proto.text for p in at.get("progress") if "evaluating" in p.proto.text)
    assert bar.startswith("evaluating: AA on ensemble/average, 4 of 5, ETA 14m")
    runstate.put_artifact(engine, rid, ETA_ARTIFACT, {"seconds": 300.0, "scope": "training",
                                                       "written_at": utcnow().isoformat()})
    assert app(run=str(rid)).dataframe[0].value.set_index("id").loc[rid, "ETA"].endswith(" + evaluation")


# --- 8. the runs table ------------------------------------------------------------------------------

def test_runs_table_status_duration_over_attempts_and_retry_wording(db, queue):
    from datetime import timedelta

    from tasks import api, runstate
    from tasks.store import RunStatus, utcnow

    engine = engine_for(db)
    failed, queued = db["ids"]["failed"], db["ids"]["queued"]
    with Session(engine) as s:
        run = s.get(Run, failed)  # its first attempt ran 5 minutes, then failed
        run.started_at, run.finished_at = utcnow() - timedelta(seconds=300), utcnow()
        s.add(run)
        s.commit()
    api.retry_run(failed)
    claim = runstate.claim(engine, failed, "gpu0@host", None, 60, 3)  # the second attempt starts now ...
    runstate.finish(engine, failed, RunStatus.succeeded, attempt=claim.attempt)  # ... and succeeds at once
    at = app(run=str(queued))
    at.button(key=f"runs.cancel.{queued}").click().run()  # a queued run: cancelled before it started
    no_crash(at)
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[queued, "status"] == "cancelled"  # not "cancelled (cancelling)"
    assert table.loc[failed, "duration"].startswith("5m")  # both attempts, not the last one's 0 s
    at.button(key=f"runs.retry.{queued}").click().run()
    no_crash(at)
    note = next(x.value for x in at.success if f"Run #{queued} re-queued" in x.value)
    assert "it never started, so it starts from the beginning" in note and "checkpoint" not in note


# --- 9. members page of a one-epoch iGAT run ---------------------------------------------------------

def drawn(trace: dict) -> bool:
    """Whether a plotly trace draws a mark: a bar, a marker, or a line through at least two points."""
    from tests.test_app import arr

    points = len(arr(trace.get("y", [])))
    return trace.get("type") == "bar" or "markers" in str(trace.get("mode", "")) or points >= 2


def test_members_page_of_a_one_epoch_igat_run(db):
    from tasks.store import MemberStatRow
    from tests.test_app import plotly_specs

    rid = db["ids"]["igat1"]  # no statistics in the fixture: give it one epoch's
    with Session(engine_for(db)) as s:
        for m in (0, 1):
            s.add(MemberStatRow(run_id=rid, epoch=1, member=m, statistic="alloc_count", value=10 + m))
            s.add(MemberStatRow(run_id=rid, epoch=1, member=m, statistic="nat_acc", value=0.5))
        s.add(MemberStatRow(run_id=rid, epoch=1, member=-1, statistic="rank_hist_1", value=0.75))
        s.commit()
    at = app("members", run=str(rid))
    no_crash(at)
    alloc = plotly_specs(at)[0]
    assert alloc["layout"]["title"]["text"] == "Adversarial examples allocated per member"
    assert {t["name"] for t in alloc["data"]} == {"member 0", "member 1"}
    assert all(drawn(t) for t in alloc["data"]), "one epoch must still draw something"
    assert not at.dataframe  # the statistics tables are built when their section is opened
    at = open_section(at, f"members.tables.open.{rid}")
    no_crash(at)
    tables = [d.value for d in at.dataframe]
    assert tables and not any(t.isna().any().any() for t in tables)  # no "None" cells
    assert "ensemble" not in tables[0].columns  # per-member statistics only
    whole = next(t for t in tables if "ensemble" in t.columns)
    assert list(whole["statistic"]) == ["rank_hist_1"] and list(whole["ensemble"]) == [0.75]


def test_members_tables_stay_open_when_the_epoch_changes(db):
    from tasks.store import MemberStatRow

    rid = db["ids"]["igat1"]
    with Session(engine_for(db)) as s:
        for epoch in (1, 2):
            for m in (0, 1):
                s.add(MemberStatRow(run_id=rid, epoch=epoch, member=m, statistic="alloc_count", value=epoch + m))
        s.commit()
    at = open_section(app("members", run=str(rid)), f"members.tables.open.{rid}")
    assert at.dataframe and "Epoch 2" in texts(at)
    at.select_slider(key=f"members.epoch.{rid}").set_value(1).run()
    no_crash(at)
    assert at.dataframe and "Epoch 1" in texts(at)  # the tables follow the epoch and stay open
    assert list(at.dataframe[0].value["member 1"]) == [2.0]


# --- chart titles and table rows that match the data -----------------------------------------------------

def test_compare_titles_and_table2_rows_say_what_the_data_is(db):
    from tests.test_app import plotly_specs

    ids = db["ids"]
    at = app("compare", exps=f"{ids['exp_adp']},{ids['exp_igat']}")  # two seeds per method
    no_crash(at)
    title = plotly_specs(at)[0]["layout"]["title"]["text"]
    assert "mean ± std over 2 seeds" in title and "Wilson" not in title
    md = "\n".join(m.value for m in at.markdown)
    assert "| iGAT_ADP vs ADP | +4.94" in md[md.index("Table 2"):]  # the row names both methods it compares
    single = app("compare", runs=str(ids["adp0"]))
    title = plotly_specs(single)[0]["layout"]["title"]["text"]
    assert "std" not in title and "seeds" not in title and "one run each: its 95 % Wilson interval" in title


# --- every config field on the form, with the run's cost before it is queued -----------------------------

def test_every_config_field_is_reachable_from_the_form():
    from app import launch_form as F
    from app.configdiff import flatten
    from igat.config import ExperimentConfig

    reachable = set(F.FORM_PATHS.values()) | {p for _, p, _ in F.advanced_fields()} | set(F.ELSEWHERE)
    leaves = {p for p in flatten(ExperimentConfig().to_dict()) if not p.startswith(("eval.attacks.", "defense."))}
    assert leaves - reachable == set()


def test_launch_builds_its_collapsed_sections_only_on_request_and_keeps_their_edits(db, queue):
    """The Advanced section (~70 widgets) and the YAML box are drawn only while open (issue 16's page-load goal);
    what was typed there stays when the section is closed or another tab is drawn, and reaches the queued run."""
    at = launch_tiny(app("launch"))
    at.run()
    drawn = {w.key for w in at.number_input} | {w.key for w in at.text_input} | {w.key for w in at.text_area}
    assert not any(k.startswith(("launch.adv.", "launch.ap.")) for k in drawn), sorted(drawn)
    assert "launch.yaml_text" not in drawn and not at.get("download_button")
    open_advanced(at, "Training").number_input(key="launch.adv.train.eval_examples").set_value(96)
    at.session_state["launch.advanced_open"] = False  # closed again: its widgets are gone, the edit is not
    at.run()
    assert not any(w.key.startswith("launch.adv.") for w in at.number_input)
    open_yaml_box(at).text_area(key="launch.yaml_text").set_value("name: half-typed")
    at.session_state["launch.yaml_open"] = False
    at.run()
    assert open_yaml_box(at).text_area(key="launch.yaml_text").value == "name: half-typed"
    at.button(key=QUEUE).click().run()
    no_crash(at)
    assert any("Queued experiment" in s.value for s in at.success), errors_of(at)
    with Session(engine_for(db)) as s:
        run = s.exec(select(Run).order_by(Run.id.desc())).first()
    assert json.loads(run.config_json)["train"]["eval_examples"] == 96


def test_launch_advanced_fields_and_attack_parameters_reach_the_queued_config(db, queue):
    at = app("launch")
    at.radio(key="launch.protocol").set_value("quick").run()
    before = next(c.value for c in at.caption if c.value.startswith("Estimated cost of the whole run"))
    # One tab at a time, as a user would: a tab's edits are kept while another tab (or none) is drawn.
    open_advanced(at, "Data").text_input(key="launch.adv.data.train_subset").set_value("1000")
    open_advanced(at, "iGAT attack").number_input(key="launch.adv.igat.attack.steps").set_value(7)
    open_advanced(at, "Training").number_input(key="launch.adv.train.eval_examples").set_value(128)
    at.number_input(key="launch.adv.train.eval_pgd_steps").set_value(5)
    open_advanced(at, "Evaluation attacks").number_input(key="launch.ap.pgd.steps").set_value(7)
    at.number_input(key="launch.ap.pgd.restarts").set_value(2)
    at.number_input(key="launch.ap.signhunter.max_queries").set_value(100)
    at.selectbox(key="launch.ap.autoattack.version").set_value("fast")
    at.run()
    no_crash(at)
    after = next(c.value for c in at.caption if c.value.startswith("Estimated cost of the whole run"))
    assert after != before  # the estimate follows the edits before anything is queued
    at.button(key=QUEUE).click().run()
    if any("This is a long run" in w.value for w in at.warning):
        at.button(key="launch.confirm_yes").click().run()
    no_crash(at)
    assert any("Queued experiment" in s.value for s in at.success), errors_of(at)
    with Session(engine_for(db)) as s:
        run = s.exec(select(Run).order_by(Run.id.desc())).first()
    cfg = json.loads(run.config_json)
    assert cfg["data"]["train_subset"] == 1000 and cfg["igat"]["attack"]["steps"] == 7
    assert (cfg["train"]["eval_examples"], cfg["train"]["eval_pgd_steps"]) == (128, 5)
    params = {a["name"]: a["params"] for a in cfg["eval"]["attacks"]}
    assert params["pgd"] == {"steps": 7, "restarts": 2} and params["signhunter"] == {"max_queries": 100}
    assert params["autoattack"] == {"version": "fast"} and params["natural"] == {}
