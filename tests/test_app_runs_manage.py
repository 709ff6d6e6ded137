"""The Runs page as a researcher's daily tool (issue 16): metric columns, sorting, filters, pages; rename, notes,
tags, archive, delete (page, API, CLI); downloads; migration 0005; a Runs page without torch.

AppTests use the fixture store of ``tests/test_app.py``; the API tests run on SQLite and on PostgreSQL
(127.0.0.1:5432, skipped when absent), like the store's other tests.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sqlmodel import Session, select

from app import run_table
from tasks.store import Artifact, EvalResult, MemberStatRow, Metric, Run, make_engine, utcnow
from tests import test_app as fixtures
from tests.helpers import synthetic_config
from tests.test_app import app, engine_for, no_crash, open_section, texts

db = fixtures.db  # the fixture store, requested by name

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_metric_cache():
    run_table.clear_cache()  # a run id of one test's store must not hit the values of another's
    yield
    run_table.clear_cache()


def add_run(url: str, **kw) -> int:
    values = dict(name="extra", config_json=synthetic_config().to_json(), dataset="synthetic", defense="adp",
                  status="succeeded", finished_at=utcnow())
    values.update(kw)
    engine = make_engine(url, create=False)
    with Session(engine) as s:
        run = Run(**values)
        s.add(run)
        s.commit()
        rid = int(run.id)
    engine.dispose()
    return rid


def table_of(at) -> pd.DataFrame:
    return at.dataframe[0].value


# --- the store: migration 0005 on SQLite and PostgreSQL -------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path, monkeypatch):
    """An empty store of each kind, used through tasks.api (IGAT_DATABASE_URL); PostgreSQL: its own database."""
    from tasks import store

    monkeypatch.setenv("IGAT_HOME", str(tmp_path / "home"))
    if request.param == "postgresql":
        from tests.integration.conftest import fresh_postgres_database

        with fresh_postgres_database(f"igat_test_runs_{os.getpid()}") as url:
            monkeypatch.setenv("IGAT_DATABASE_URL", url)
            yield url
        return
    url = f"sqlite:///{tmp_path / 'igat.db'}"
    monkeypatch.setenv("IGAT_DATABASE_URL", url)
    yield url
    for engine in list(store._ENGINES.values()):
        engine.dispose()
    store._ENGINES.clear()


def test_migration_0005_gives_old_runs_empty_notes_and_not_archived(store_url):
    from alembic import command
    from sqlalchemy import inspect, text

    from tasks.migrate import alembic_config, current_revision, head_revision

    engine = make_engine(store_url, create=False)
    try:
        with engine.connect() as conn:
            command.upgrade(alembic_config(conn), "0004")
            conn.execute(text("INSERT INTO run (name, kind, config_json, preset, dataset, defense, igat, seed, tags, "
                              "variant, status, cancel_requested, attempts, progress, epoch, total_epochs, created_at, "
                              "params_json) VALUES ('old', 'train', '{}', 'paper', 's', 'standard', false, 0, '', '', "
                              "'succeeded', false, 1, 1.0, 1, 1, '2026-01-01 00:00:00', '{}')"))
            run_id = conn.execute(text("SELECT id FROM run")).scalar()
            # a result pointing at the run: neither direction may copy (drop) the run table under its foreign key
            conn.execute(text("INSERT INTO evalresult (run_id, target, combiner, attack, accuracy, num_examples, "
                              f"created_at) VALUES ({run_id}, 'ensemble', 'average', 'pgd', 0.45, 100, "
                              "'2026-01-01 00:00:00')"))
            conn.commit()
            command.upgrade(alembic_config(conn), "head")
            conn.commit()
            assert current_revision(conn) == head_revision()
            assert conn.execute(text("SELECT notes, archived FROM run")).one() == ("", False)
            command.check(alembic_config(conn))  # the models match the migrated schema
            command.downgrade(alembic_config(conn), "0004")
            conn.commit()
            assert not {"notes", "archived"} & {c["name"] for c in inspect(conn).get_columns("run")}
            assert conn.execute(text("SELECT count(*) FROM run")).scalar() == 1
            assert conn.execute(text("SELECT count(*) FROM evalresult")).scalar() == 1
    finally:
        engine.dispose()


# --- the API: rename, notes, tags, archive ---------------------------------------------------------------

def test_rename_notes_tags_archive_store_and_refuse_bad_values(store_url):
    from tasks import api

    make_engine(store_url).dispose()
    rid = add_run(store_url, name="before")
    assert api.rename_run(rid, "  after-1  ") == "after-1"
    assert api.set_run_notes(rid, "line one\r\nline two\twith a tab") == "line one\nline two\twith a tab"
    assert api.set_run_tags(rid, " table1, baseline ,table1,, ") == "table1,baseline"
    assert api.archive_run(rid) is True
    run = api.get_run(rid)
    assert (run.name, run.notes, run.tags, run.archived) == ("after-1", "line one\nline two\twith a tab",
                                                            "table1,baseline", True)
    assert api.archive_run(rid, archived=False) is False and not api.get_run(rid).archived
    refusals = [
        (lambda: api.rename_run(rid, "   "), "name: must not be empty"),
        (lambda: api.rename_run(rid, "evil\x1b[2J"), "name: must contain printable characters only"),
        (lambda: api.rename_run(rid, "x" * 201), "name: must have at most 200 characters, got 201"),
        (lambda: api.set_run_notes(rid, "bell\x07"), "notes: must contain printable characters only"),
        (lambda: api.set_run_notes(rid, "n" * (api.MAX_NOTES_LENGTH + 1)), "notes: at most 10000 characters"),
        (lambda: api.set_run_tags(rid, "ok, not/plain"), "tags: 'not/plain' is not a plain name"),
        (lambda: api.set_run_tags(rid, ",".join(f"t{i}" for i in range(33))), "tags: at most 32 tags, got 33"),
    ]
    for call, message in refusals:
        with pytest.raises(api.RunEditError) as err:
            call()
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    assert api.get_run(rid).name == "after-1"  # nothing refused was stored
    with pytest.raises(KeyError, match="run 999999 does not exist"):
        api.rename_run(999999, "x")


# --- the API: delete ------------------------------------------------------------------------------------

def fill_run(url: str, folder_file: bool = True, **kw) -> int:
    """A finished run with 3 metric rows, 2 results, 1 member statistic, 1 artifact and (folder_file) its
    checkpoint in its folder under $IGAT_HOME/runs."""
    from tasks.jobs import run_dir

    rid = add_run(url, **kw)
    engine = make_engine(url, create=False)
    with Session(engine) as s:
        for epoch in (1, 2, 3):
            s.add(Metric(run_id=rid, scope="epoch", step=epoch, epoch=epoch, name="train_loss", value=1.0 / epoch))
        s.add(EvalResult(run_id=rid, combiner="average", attack="natural", accuracy=0.8, num_examples=10))
        s.add(EvalResult(run_id=rid, combiner="average", attack="pgd", accuracy=0.4, num_examples=10))
        s.add(MemberStatRow(run_id=rid, epoch=1, member=0, statistic="share", value=0.5))
        s.add(Artifact(run_id=rid, name="attempts", data_json="[]"))
        if folder_file:
            folder = run_dir(rid)
            folder.mkdir(parents=True)
            (folder / "last.pt").write_bytes(b"x" * 2048)
            run = s.get(Run, rid)
            run.checkpoint_path = str(folder / "last.pt")
            s.add(run)
        s.commit()
    engine.dispose()
    return rid


def rows_of(url: str, rid: int) -> dict[str, int]:
    engine = make_engine(url, create=False)
    with Session(engine) as s:
        counts = {m.__name__: len(s.exec(select(m).where(m.run_id == rid)).all())
                  for m in (Metric, EvalResult, MemberStatRow, Artifact)}
        counts["Run"] = int(s.get(Run, rid) is not None)
    engine.dispose()
    return counts


def test_delete_removes_the_rows_and_the_folder_inside_the_runs_root(store_url):
    from tasks import api
    from tasks.jobs import run_dir

    make_engine(store_url).dispose()
    rid, other = fill_run(store_url), fill_run(store_url)
    plan = api.deletion_plan(rid)
    assert (plan.metric_rows, plan.results, plan.member_stats, plan.artifacts) == (3, 2, 1, 1)
    assert plan.folder == run_dir(rid) and plan.folder_bytes == 2048 and plan.blocked is None and plan.kept is None
    api.delete_run(rid)
    assert rows_of(store_url, rid) == {"Metric": 0, "EvalResult": 0, "MemberStatRow": 0, "Artifact": 0, "Run": 0}
    assert not run_dir(rid).exists()
    assert rows_of(store_url, other)["Metric"] == 3 and (run_dir(other) / "last.pt").exists()  # others untouched
    api.delete_run(other, delete_files=False)
    assert rows_of(store_url, other)["Run"] == 0 and (run_dir(other) / "last.pt").exists()  # --keep-files


def test_delete_never_touches_a_checkpoint_outside_the_runs_root(store_url, tmp_path):
    from tasks import api
    from tasks.jobs import run_dir

    make_engine(store_url).dispose()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "last.pt").write_bytes(b"precious")
    rid = fill_run(store_url, folder_file=False, checkpoint_path=str(outside / "last.pt"))
    plan = api.deletion_plan(rid)
    assert plan.folder is None and plan.kept is not None
    assert str(outside / "last.pt") in plan.kept and "left in place" in plan.kept and "outside" in plan.kept
    api.delete_run(rid)
    assert rows_of(store_url, rid)["Run"] == 0 and (outside / "last.pt").read_bytes() == b"precious"
    # a run folder that is a link leading out of the runs root is not followed either
    linked = fill_run(store_url, folder_file=False)
    run_dir(linked).parent.mkdir(parents=True, exist_ok=True)
    run_dir(linked).symlink_to(outside, target_is_directory=True)
    assert api.deletion_plan(linked).folder is None
    api.delete_run(linked)
    assert (outside / "last.pt").read_bytes() == b"precious" and run_dir(linked).is_symlink()


def test_delete_keeps_the_parents_checkpoint_of_an_evaluation_run(store_url):
    from tasks import api
    from tasks.jobs import run_dir

    make_engine(store_url).dispose()
    base = fill_run(store_url)
    evaluation = add_run(store_url, kind="eval", parent_run_id=base, checkpoint_path=str(run_dir(base) / "last.pt"))
    plan = api.deletion_plan(evaluation)
    assert plan.folder is None and "another run's folder" in plan.kept
    api.delete_run(evaluation)
    assert (run_dir(base) / "last.pt").exists()


def test_delete_refuses_active_runs_and_parents(store_url):
    from tasks import api

    make_engine(store_url).dispose()
    running, queued = fill_run(store_url, status="running"), add_run(store_url, status="queued")
    base = fill_run(store_url)
    child = add_run(store_url, kind="finetune", parent_run_id=base)
    for rid, status in ((running, "running"), (queued, "queued")):
        with pytest.raises(api.RunEditError, match=f"run {rid} is {status}; cancel it first"):
            api.delete_run(rid)
    assert rows_of(store_url, running)["Metric"] == 3
    with pytest.raises(api.RunEditError, match=rf"run {base} is the parent of run {child} \(finetune\); delete those first"):
        api.delete_run(base)
    api.delete_run(child)
    api.delete_run(base)  # no dependant left
    assert rows_of(store_url, base)["Run"] == 0


def test_study_folder_matches_the_worker(tmp_path, monkeypatch):
    from tasks import api
    from tasks.jobs import run_dir
    from tasks.studyjob import study_dir

    monkeypatch.setenv("IGAT_HOME", str(tmp_path))
    assert api.run_folder(7, "study") == study_dir(7) and api.run_folder(7, "train") == run_dir(7)


# --- the CLI -------------------------------------------------------------------------------------------

def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from igat.cli import main

    rc = main(["runs", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_rename_note_tag_archive_delete(db, capsys, tmp_path):
    from tasks import api

    rid = fill_run(db["url"])
    assert cli(capsys, "rename", str(rid), "renamed-run")[:2] == (0, f"run {rid}: renamed to renamed-run\n")
    assert cli(capsys, "note", str(rid), "PGD looks too high")[0] == 0
    assert cli(capsys, "tag", str(rid), "a, b")[:2] == (0, f"run {rid}: tags a,b\n")
    assert cli(capsys, "archive", str(rid))[:2] == (0, f"run {rid}: archived\n")
    run = api.get_run(rid)
    assert (run.name, run.notes, run.tags, run.archived) == ("renamed-run", "PGD looks too high", "a,b", True)
    assert cli(capsys, "unarchive", str(rid))[0] == 0 and not api.get_run(rid).archived
    for argv, message in ((("rename", str(rid), "bad\x1bname"), f"run {rid}: name: must contain printable"),
                          (("tag", str(rid), "x/y"), f"run {rid}: tags: 'x/y' is not a plain name"),
                          (("rename", "999999", "x"), "run 999999 does not exist"),
                          (("delete", str(db["ids"]["running"]), "--yes"), "is running; cancel it first"),
                          (("delete", str(rid)), "not deleted; add --yes")):  # no terminal to confirm on
        rc, _, err = cli(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and message in err, err
    rc, out, _ = cli(capsys, "delete", str(rid), "--yes")
    assert rc == 0 and "3 metric rows, 2 results" in out and f"run {rid}: deleted" in out
    assert rows_of(db["url"], rid)["Run"] == 0
    outside = db["ids"]["adp0"]  # its checkpoint /runs/adp0/last.pt lies outside $IGAT_HOME/runs
    rc, out, _ = cli(capsys, "delete", str(outside), "--yes")
    assert rc == 0 and "note: the checkpoint /runs/adp0/last.pt is in outside" in out and "left in place" in out


# --- the page: metric columns, sorting, filters, pages ---------------------------------------------------

def test_metric_columns_show_the_final_accuracies_and_the_best_epoch(db):
    ids = db["ids"]
    engine = engine_for(db)
    with Session(engine) as s:
        # adp0 evaluated again: the newest row of (average, pgd) is the final one
        s.add(EvalResult(run_id=ids["adp0"], combiner="average", attack="pgd", accuracy=0.41, num_examples=100))
        s.add(EvalResult(run_id=ids["adp0"], combiner="average", attack="autoattack", accuracy=0.33, num_examples=100))
        # igat1 logged only natural probes: its best epoch falls back to natural (epoch 3, the first of the ties)
        for epoch, nat in ((1, 0.5), (2, 0.6), (3, 0.7), (4, 0.7)):
            s.add(Metric(run_id=ids["igat1"], scope="epoch", step=epoch, epoch=epoch, name="test_nat_acc_average",
                         value=nat))
        s.commit()
    at = app()
    no_crash(at)
    table = table_of(at).set_index("id")
    adp0, igat0 = table.loc[ids["adp0"]], table.loc[ids["igat0"]]
    assert adp0["Natural average"] == pytest.approx(80.0) and adp0["Natural max"] == pytest.approx(78.0)
    assert adp0["PGD-20 average"] == pytest.approx(41.0) and adp0["PGD-20 max"] == pytest.approx(35.0)
    assert adp0["AutoAttack average"] == pytest.approx(33.0)
    assert igat0["PGD-20 average"] == pytest.approx(46.0) and igat0["AutoAttack average"] != igat0["AutoAttack average"]
    # member rows (member_0/1 of igat0) are not the ensemble's accuracy
    assert igat0["Natural average"] == pytest.approx(84.0)
    # the running run's probe: PGD 0.10 at epoch 1, 0.15 at epoch 2 (natural would also say 2; PGD decides)
    assert table.loc[ids["running"], "best epoch"] == 2 and table.loc[ids["igat1"], "best epoch"] == 3
    assert table.loc[ids["queued"], "best epoch"] is pd.NA or pd.isna(table.loc[ids["queued"], "best epoch"])
    for column in ("Natural average", "PGD-20 average", "AutoAttack average"):
        assert pd.api.types.is_float_dtype(table[column]), column  # numbers, so a header click sorts by value
    config = at.dataframe[0].proto.columns
    assert '"%.1f%%"' in config and "PGD-20 average" in config


def test_sorting_every_run_by_a_metric_keeps_numbers_numeric(db):
    ids = db["ids"]
    at = app()
    at.selectbox(key="runs.sort").set_value("PGD-20 average").run()
    no_crash(at)
    table = table_of(at)
    # masked 60, igat1 48, igat0 46, soft 45, hard 42, adp0 40, adp1 38, then the runs without results
    assert list(table["id"][:7]) == [ids[k] for k in ("masked", "igat1", "igat0", "soft", "hard", "adp0", "adp1")]
    assert table["PGD-20 average"][7:].isna().all() and len(table) == 10
    at.toggle(key="runs.sort_desc").set_value(False).run()
    assert list(table_of(at)["id"][:2]) == [ids["adp1"], ids["adp0"]]  # ascending, missing values still last


def test_has_results_and_archived_filters(db):
    from tasks import api

    ids = db["ids"]
    at = app()
    at.toggle(key="runs.has_results").set_value(True).run()
    no_crash(at)
    with_results = {ids[k] for k in ("adp0", "adp1", "igat0", "igat1", "soft", "hard", "masked")}
    assert set(table_of(at)["id"]) == with_results
    api.archive_run(ids["adp1"])
    at = app()
    assert ids["adp1"] not in set(table_of(at)["id"]) and len(table_of(at)) == 9  # hidden by default
    assert "archived" not in table_of(at).columns
    at.toggle(key="runs.show_archived").set_value(True).run()
    table = table_of(at).set_index("id")
    assert len(table) == 10 and bool(table.loc[ids["adp1"], "archived"]) and not table.loc[ids["adp0"], "archived"]


def test_the_table_shows_50_runs_a_page(db):
    engine = engine_for(db)
    with Session(engine) as s:
        for i in range(120):
            s.add(Run(name=f"bulk{i}", config_json="{}", dataset="synthetic", defense="adp", status="succeeded",
                      finished_at=utcnow()))
        s.commit()
    at = app()
    no_crash(at)
    assert len(table_of(at)) == 50 and "showing 1–50 of 130" in texts(at)
    assert at.selectbox(key="runs.page").options == [f"page {n} of 3" for n in (1, 2, 3)]
    at.selectbox(key="runs.page").set_value(3).run()
    no_crash(at)
    assert len(table_of(at)) == 30 and "showing 101–130 of 130" in texts(at)
    assert sorted(table_of(at)["id"])[0] == min(db["ids"].values())  # the oldest runs are on the last page
    at.multiselect(key="runs.status").set_value(["failed"]).run()  # one page left: back to it
    no_crash(at)
    assert len(table_of(at)) == 1 and "showing 1–1 of 1" in texts(at)


def test_finished_runs_metric_columns_are_not_read_again_on_refresh(db, monkeypatch):
    engine = engine_for(db)
    import app.data as D

    runs = D.load_runs(engine)
    run_table.metric_frame(engine, runs)
    asked: list[list[int]] = []
    real = run_table._read
    monkeypatch.setattr(run_table, "_read", lambda e, ids: asked.append(sorted(ids)) or real(e, ids))
    run_table.metric_frame(engine, runs)
    active = sorted(db["ids"][k] for k in ("running", "queued"))
    assert asked == [active]


# --- the page: rename, notes, tags, archive, delete --------------------------------------------------------

def test_edit_name_notes_and_tags_on_the_page(db):
    from tasks import api

    rid = db["ids"]["adp1"]
    at = app(run=str(rid))
    assert f"runs.edit.name.{rid}" not in {w.key for w in at.text_input}  # the form is built when its section opens
    at = open_section(at, f"runs.edit.open.{rid}")
    at.text_input(key=f"runs.edit.name.{rid}").set_value("adp-renamed")
    at.text_area(key=f"runs.edit.notes.{rid}").set_value("seed 1: PGD 38 %, rerun with 20 steps")
    at.text_input(key=f"runs.edit.tags.{rid}").set_value("table1, rerun")
    at.button(key=f"runs.edit.save.{rid}").click().run()
    no_crash(at)
    assert f"Run #{rid} saved." in texts(at)
    run = api.get_run(rid)
    assert (run.name, run.notes, run.tags) == ("adp-renamed", "seed 1: PGD 38 %, rerun with 20 steps", "table1,rerun")
    row = table_of(at).set_index("id").loc[rid]
    assert row["name"] == "adp-renamed" and row["notes"].startswith("seed 1") and row["tags"] == "table1,rerun"
    at.text_input(key=f"runs.edit.name.{rid}").set_value("bad\x07name")
    at.button(key=f"runs.edit.save.{rid}").click().run()
    assert any(f"Run #{rid} not saved: name: must contain printable characters only" in e.value for e in at.error)
    assert api.get_run(rid).name == "adp-renamed"


def test_archive_button_hides_the_run_from_the_table(db):
    rid = db["ids"]["adp1"]
    at = app(run=str(rid))
    at.button(key=f"runs.archive.{rid}").click().run()
    no_crash(at)
    assert rid not in set(table_of(at)["id"]) and f"Run #{rid} archived" in texts(at)
    at.toggle(key="runs.show_archived").set_value(True).run()
    at.selectbox(key="runs.selected").set_value(rid).run()
    assert at.button(key=f"runs.archive.{rid}").label == "Unarchive"
    at.button(key=f"runs.archive.{rid}").click().run()
    at.toggle(key="runs.show_archived").set_value(False).run()
    assert rid in set(table_of(at)["id"])


def test_delete_on_the_page_says_what_goes_and_needs_a_confirmation(db):
    from tasks.jobs import run_dir

    rid = fill_run(db["url"], name="doomed")
    at = app(run=str(rid))
    at.toggle(key=f"runs.delete.open.{rid}").set_value(True).run()
    no_crash(at)
    said = texts(at)
    assert "removes 3 metric rows, 2 results, 1 member statistics, 1 artifacts" in said
    assert f"`{run_dir(rid)}` (2.0 KB)" in said
    assert at.button(key=f"runs.delete.{rid}").disabled  # not before the confirmation
    at.checkbox(key=f"runs.delete.confirm.{rid}").check().run()
    at.button(key=f"runs.delete.{rid}").click().run()
    no_crash(at)
    assert f"Deleted run #{rid}" in texts(at) and rid not in set(table_of(at)["id"])
    assert rows_of(db["url"], rid)["Run"] == 0 and not run_dir(rid).exists()
    running = db["ids"]["running"]
    at = app(run=str(running))
    at.toggle(key=f"runs.delete.open.{running}").set_value(True).run()
    assert any(f"run {running} is running; cancel it first" in w.value for w in at.warning)
    assert f"runs.delete.{running}" not in {b.key for b in at.button}  # no delete button at all


def test_delete_on_the_page_leaves_a_checkpoint_outside_the_runs_root(db):
    rid = db["ids"]["adp0"]  # checkpoint /runs/adp0/last.pt: outside $IGAT_HOME/runs
    at = app(run=str(rid))
    at.toggle(key=f"runs.delete.open.{rid}").set_value(True).run()
    assert "The checkpoint /runs/adp0/last.pt is in outside" in texts(at)
    at.checkbox(key=f"runs.delete.confirm.{rid}").check().run()
    at.button(key=f"runs.delete.{rid}").click().run()
    no_crash(at)
    assert "left in place" in next(s.value for s in at.success if f"Deleted run #{rid}" in s.value)


# --- the page: downloads ---------------------------------------------------------------------------------

@pytest.fixture
def downloads(monkeypatch):
    """What the page hands to st.download_button, by file name: bytes, or the deferred callable."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    seen: dict[str, object] = {}
    add, add_deferred = MediaFileManager.add, MediaFileManager.add_deferred

    def spy_add(self, data, mimetype, coordinates, file_name=None, is_for_static_download=False):
        seen[file_name] = data
        return add(self, data, mimetype, coordinates, file_name=file_name,
                   is_for_static_download=is_for_static_download)

    def spy_deferred(self, fn, mimetype, coordinates, file_name=None, **kw):
        seen[file_name] = fn
        return add_deferred(self, fn, mimetype, coordinates, file_name=file_name, **kw)

    monkeypatch.setattr(MediaFileManager, "add", spy_add)
    monkeypatch.setattr(MediaFileManager, "add_deferred", spy_deferred)
    return seen


def test_downloads_give_the_config_results_and_checkpoint_bytes(db, downloads):
    from igat.config import ExperimentConfig

    rid = fill_run(db["url"])
    at = app(run=str(rid))
    no_crash(at)
    assert f"run-{rid}-config.yaml" not in downloads  # nothing is made before the section is opened
    at = open_section(at, f"runs.dl.open.{rid}")
    no_crash(at)
    config = downloads[f"run-{rid}-config.yaml"]
    config = config.decode() if isinstance(config, bytes) else config
    stored = synthetic_config()
    assert config == stored.to_yaml() and ExperimentConfig.from_dict(yaml.safe_load(config)) == stored
    results = downloads[f"run-{rid}-results.csv"]
    rows = list(csv.DictReader(io.StringIO(results.decode() if isinstance(results, bytes) else results)))
    assert [(r["attack"], float(r["accuracy"]), int(r["num_examples"])) for r in rows] == [("natural", 0.8, 10),
                                                                                        ("pgd", 0.4, 10)]
    assert set(rows[0]) >= {"ci_low", "ci_high", "combiner", "target"}
    checkpoint = downloads[f"run-{rid}-last.pt"]
    assert callable(checkpoint) and checkpoint() == b"x" * 2048  # read only when the user clicks


def test_a_checkpoint_over_the_limit_is_not_offered_the_path_is(db, downloads, monkeypatch):
    from app import run_files
    from tasks.jobs import run_dir

    monkeypatch.setattr(run_files, "MAX_CHECKPOINT_BYTES", 1024)
    rid = fill_run(db["url"])
    at = open_section(app(run=str(rid)), f"runs.dl.open.{rid}")
    no_crash(at)
    assert f"run-{rid}-last.pt" not in downloads
    assert f"more than the 1.0 KB a browser download allows here; copy it from {run_dir(rid) / 'last.pt'}" in texts(at)


# --- the dashboard process stays without torch --------------------------------------------------------------

def test_the_runs_page_does_not_import_torch(db):
    rid = fill_run(db["url"])
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({fixtures.MAIN!r}, default_timeout=120)
at.query_params["run"] = "{rid}"
at.run()
at.toggle(key="runs.delete.open.{rid}").set_value(True).run()
assert not at.exception, [e.value for e in at.exception]
assert any("Deleting run #{rid}" in m.value for m in at.markdown)
print("torch" in sys.modules)
"""
    env = {**os.environ, "IGAT_HOME": os.environ["IGAT_HOME"], "IGAT_DATABASE_URL": db["url"]}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
