"""Runs / queue: every run's status, progress, ETA, worker, duration and final accuracies (sortable, filterable,
50 a page); cancel, retry, clone; rename, notes, tags, archive, delete; download config, results, checkpoint."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import data as D
from app import run_files, tables
from app import run_table as RT
from app.common import (
    PAGE_COMPARE,
    PAGE_LAUNCH,
    PAGE_LIVE,
    PAGE_MEMBERS,
    PAGE_STUDIES,
    REFRESH_SECONDS,
    empty_state,
    eta_text,
    fmt_duration,
    fmt_time,
    get_engine,
    guarded,
    query_int,
    run_page,
    set_query,
    short_error,
)

STATUS_COLOURS = {"queued": "gray", "running": "blue", "succeeded": "green", "failed": "red", "cancelled": "orange"}


def status_badges(df: pd.DataFrame) -> str:
    counts = df["status"].value_counts()
    parts = [f":{STATUS_COLOURS[s]}-badge[{s} {int(counts[s])}]" for s in D.STATUSES if s in counts]
    return " ".join(parts) or "no runs match the filters"


def status_label(status: str, cancel_requested: bool) -> str:
    """"running (cancelling)" while a requested cancel is pending; a final status is just itself."""
    return status + (" (cancelling)" if cancel_requested and status not in D.FINAL else "")


def first_line(text: str, limit: int = 80) -> str:
    line = (text or "").strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def table(df: pd.DataFrame, metrics: pd.DataFrame | None = None, show_archived: bool = False) -> pd.DataFrame:
    """The rows as shown; ``metrics`` (``run_table.metric_frame`` rows of the same runs) adds the accuracy
    columns (percent, numeric so a column click sorts by value) and the best epoch."""
    out = pd.DataFrame({
        "id": df["id"],
        "name": df["name"],
        "method": df["method"],
        "dataset": df["dataset"],
        "seed": df["seed"],
        "variant": df["variant"],
        "status": [status_label(s, bool(c)) for s, c in zip(df["status"], df["cancel_requested"], strict=True)],
    })
    if metrics is not None:
        for column in metrics.columns:
            if column != "results":
                out[column] = metrics.loc[df.index, column].to_numpy()
    out = out.assign(**{
        "progress": df["progress"],
        "epoch": df["epoch"].astype(str) + "/" + df["total_epochs"].astype(str),
        "ETA": [eta_text(e, sc) for e, sc in zip(df["eta_s"], df["eta_scope"], strict=True)],
        "duration": df["duration_s"].map(fmt_duration),
        "worker": df["worker"],
        "experiment": df["experiment"],
        "tags": df["tags"],
        "notes": df["notes"].map(first_line),
        "reason": df["error"].map(lambda e: (e.strip().splitlines() or [""])[-1][:160] if e else ""),
        "created": df["created_at"].map(fmt_time),
    })
    if show_archived:
        out["archived"] = df["archived"].astype(bool)
    return out


def column_config(metrics: pd.DataFrame) -> dict:
    config = {
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
        "id": st.column_config.NumberColumn("id", format="%d"),
        RT.BEST_EPOCH: st.column_config.NumberColumn(
            RT.BEST_EPOCH, format="%d",
            help="the epoch with the highest end-of-epoch probe PGD accuracy (natural when no PGD probe was logged)"),
    }
    for column in metrics.columns:
        if column not in (RT.BEST_EPOCH, "results"):
            config[column] = st.column_config.NumberColumn(
                column, format="%.1f%%", help=f"final ensemble accuracy, {column} (empty: not evaluated)")
    return config


def _api():
    """The task-queue API, imported lazily (Celery is heavy and may be absent in read-only use)."""
    import tasks.api

    return tasks.api


def _cancel(run_id: int) -> None:
    try:
        _api().cancel_run(run_id)
        st.session_state["runs.flash"] = ("success", f"Cancellation of run #{run_id} requested.")
    except Exception as exc:  # noqa: BLE001 - shown to the user
        st.session_state["runs.flash"] = ("error", f"Could not cancel run #{run_id}: {short_error(exc)}")


def retry_note(row: dict) -> str:
    """What a retry of this run will do: resume a checkpoint, redo an evaluation, or start (it never ran)."""
    if row.get("checkpoint_path"):
        return f"it resumes from its last checkpoint (epoch {row['epoch']})"
    if row.get("started_at") is None or pd.isna(row.get("started_at")):
        return "it never started, so it starts from the beginning"
    return "it had no checkpoint yet, so it starts from the beginning"


def _retry(run_id: int, note: str) -> None:
    try:
        new_id = int(_api().retry_run(run_id))
        again = "" if new_id == run_id else f" as run #{new_id}"
        st.session_state["runs.flash"] = ("success", f"Run #{run_id} re-queued{again}; {note}.")
        st.session_state["runs.pending_select"] = new_id  # applied before the selectbox is created
    except Exception as exc:  # noqa: BLE001
        st.session_state["runs.flash"] = ("error", f"Could not retry run #{run_id}: {short_error(exc)}")


def _flash_call(action, done: str, failed: str) -> None:
    """Run an API call from a callback; its outcome is the page's flash message (one line)."""
    try:
        action()
        st.session_state["runs.flash"] = ("success", done)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        st.session_state["runs.flash"] = ("error", f"{failed}: {message or short_error(exc)}")


def _save_edits(run_id: int, row: dict) -> None:
    """The edit form's submit: only the fields that changed are written (each refusal names its field)."""
    api = _api()
    name = st.session_state.get(f"runs.edit.name.{run_id}", row["name"])
    notes = st.session_state.get(f"runs.edit.notes.{run_id}", row["notes"])
    tags = st.session_state.get(f"runs.edit.tags.{run_id}", row["tags"])

    def save() -> None:
        if name.strip() != row["name"]:
            api.rename_run(run_id, name)
        if api.clean_notes(notes) != row["notes"]:
            api.set_run_notes(run_id, notes)
        if api.clean_tags(tags) != row["tags"]:
            api.set_run_tags(run_id, tags)

    _flash_call(save, f"Run #{run_id} saved.", f"Run #{run_id} not saved")


def _archive(run_id: int, archived: bool) -> None:
    word = "archived (hidden from this table unless 'Show archived' is on)" if archived else "unarchived"
    _flash_call(lambda: _api().archive_run(run_id, archived), f"Run #{run_id} {word}.",
                f"Could not {'archive' if archived else 'unarchive'} run #{run_id}")


def _delete(run_id: int) -> None:
    api = _api()
    outcome: dict = {}

    def delete() -> None:
        outcome["plan"] = api.delete_run(run_id)

    _flash_call(delete, f"Deleted run #{run_id}.", f"Run #{run_id} not deleted")
    plan = outcome.get("plan")
    if plan is not None:
        removed = f"; removed {plan.folder} ({api.size_text(plan.folder_bytes)})" if plan.folder else ""
        kept = f"; {plan.kept}" if plan.kept else ""
        st.session_state["runs.flash"] = ("success", f"Deleted run #{run_id} ({plan.rows_text()}{removed}){kept}.")


def manage(row: dict) -> None:
    """Rename, notes, tags, archive and delete: the run's curation controls (the edit form built only while its
    section is open)."""
    run_id = int(row["id"])
    section = st.expander("Name, notes and tags", key=f"runs.edit.open.{run_id}", on_change="rerun")
    if section.open:
        with section, st.form(f"runs.edit.{run_id}", border=False):
            st.text_input("Name", value=row["name"], key=f"runs.edit.name.{run_id}", max_chars=200)
            st.text_area("Notes", value=row["notes"], key=f"runs.edit.notes.{run_id}", height=100)
            st.text_input("Tags", value=row["tags"], key=f"runs.edit.tags.{run_id}",
                          help="comma-separated plain names, e.g. table1, baseline")
            st.form_submit_button("Save", key=f"runs.edit.save.{run_id}", on_click=_save_edits, args=(run_id, row))
    archived = bool(row["archived"])
    cols = st.columns(2)
    cols[0].button("Unarchive" if archived else "Archive", key=f"runs.archive.{run_id}",
                   icon=":material/unarchive:" if archived else ":material/archive:",
                   help="archived runs are hidden from this table unless 'Show archived' is on; nothing is removed",
                   on_click=_archive, args=(run_id, not archived))
    if cols[1].toggle("Delete…", key=f"runs.delete.open.{run_id}"):
        delete_step(run_id)


def delete_step(run_id: int) -> None:
    """What deleting the run removes, and the confirmation (computed only once the user opens this step)."""
    api = _api()
    try:
        plan = api.deletion_plan(run_id)
    except KeyError as exc:
        st.error(str(exc.args[0]))
        return
    if plan.blocked:
        st.warning(f"Cannot delete: {plan.blocked}.")
        return
    folder = f"its folder `{plan.folder}` ({api.size_text(plan.folder_bytes)})" if plan.folder else "no folder"
    st.markdown(f"Deleting run #{run_id} removes {plan.rows_text()} and {folder}.")
    if plan.kept:
        st.caption(plan.kept[0].upper() + plan.kept[1:] + ".")
    what = " and its folder" if plan.folder else ""
    confirmed = st.checkbox(f"Yes, delete run #{run_id}{what}", key=f"runs.delete.confirm.{run_id}")
    st.button(f"Delete run #{run_id}", key=f"runs.delete.{run_id}", type="primary", icon=":material/delete:",
              disabled=not confirmed, on_click=_delete, args=(run_id,))


def downloads(row: dict) -> None:
    """Config (YAML), results (CSV) and checkpoint, built only while their section is open (each button holds its
    file, made on every refresh of the page otherwise); the checkpoint is read only when the user clicks."""
    run_id = int(row["id"])
    section = st.expander("Download: config (YAML), results (CSV), checkpoint", key=f"runs.dl.open.{run_id}",
                          on_change="rerun", icon=":material/download:")
    if not section.open:
        return
    engine = get_engine()
    cols = section.columns(3)
    config = run_files.config_yaml(engine, run_id)
    if config is not None:
        cols[0].download_button("Config (YAML)", config, file_name=f"run-{run_id}-config.yaml",
                                mime="application/x-yaml", key=f"runs.dl.config.{run_id}", on_click="ignore",
                                icon=":material/download:")
    cols[1].download_button("Results (CSV)", run_files.results_csv(engine, run_id),
                            file_name=f"run-{run_id}-results.csv", mime="text/csv", key=f"runs.dl.results.{run_id}",
                            on_click="ignore", icon=":material/download:")
    offer = run_files.checkpoint_offer(row["checkpoint_path"], run_files.MAX_CHECKPOINT_BYTES)
    if offer.path is None:
        cols[2].caption(offer.message)
        return
    path = offer.path
    cols[2].download_button(f"Checkpoint ({offer.message})", lambda: run_files.read_checkpoint(path),
                            file_name=f"run-{run_id}-{path.name}", mime="application/octet-stream",
                            key=f"runs.dl.checkpoint.{run_id}", on_click="ignore", icon=":material/download:")


def details(row: dict) -> None:
    run_id = int(row["id"])
    status = row["status"]
    st.markdown(f"**Run #{run_id} · {row['name']}** — :{STATUS_COLOURS.get(status, 'gray')}-badge[{status}] "
                f"· {row['method']} · {row['dataset']} · seed {row['seed']}"
                + (f" · variant `{row['variant']}`" if row["variant"] else ""))
    if status == "running":
        eta = eta_text(row["eta_s"], row["eta_scope"])
        where = row["phase"] or f"epoch {row['epoch']}/{row['total_epochs']}"
        st.progress(min(max(float(row["progress"]), 0.0), 1.0), text=where + (f", ETA {eta}" if eta else ""))
    elif status == "failed" and row["error"]:
        lines = row["error"].strip().splitlines()
        st.error(f"Failed: {lines[-1] if lines else row['error']}")
        with st.expander("Full error"):
            st.code(row["error"], language="text")
    info = [f"worker `{row['worker']}`" if row["worker"] else "no worker yet",
            f"created {fmt_time(row['created_at'])}"]
    if row["started_at"] is not None and not pd.isna(row["started_at"]):
        info.append(f"started {fmt_time(row['started_at'])}")
    if row["duration_s"] is not None and not pd.isna(row["duration_s"]):
        info.append(f"duration {fmt_duration(row['duration_s'])}")
    if row["attempts"]:
        info.append(f"attempts {row['attempts']}")
    st.caption(" · ".join(info))

    cols = st.columns(6)
    can_cancel = status in ("queued", "running") and not row["cancel_requested"]
    # Callbacks run before the next script run, so the table already shows the new status.
    cols[0].button("Cancel", key=f"runs.cancel.{run_id}", disabled=not can_cancel, icon=":material/cancel:",
                   help="queued: removed from the queue; running: stops after the current batch",
                   on_click=_cancel, args=(run_id,))
    cols[1].button("Retry", key=f"runs.retry.{run_id}", disabled=status not in ("failed", "cancelled"),
                   icon=":material/replay:", help=f"queue the same config again: {retry_note(row)}",
                   on_click=_retry, args=(run_id, retry_note(row)))
    cols[2].page_link(PAGE_LAUNCH, label="Clone", icon=":material/content_copy:", query_params={"clone": str(run_id)})
    cols[3].page_link(PAGE_LIVE, label="Live", icon=":material/monitoring:", query_params={"run": str(run_id)})
    cols[4].page_link(PAGE_MEMBERS, label="Members", icon=":material/groups:", query_params={"run": str(run_id)})
    cols[5].page_link(PAGE_COMPARE, label="Compare", icon=":material/compare_arrows:", query_params={"runs": str(run_id)})
    if row["notes"]:
        st.markdown("**Notes**")
        st.text(row["notes"])
    results(run_id, status)
    downloads(row)
    manage(row)
    if row["kind"] == "study":  # its phases, progress and results live on the Studies page
        st.page_link(PAGE_STUDIES, label="Open this study", icon=":material/query_stats:",
                     query_params={"study": str(run_id)})
    if status == "succeeded" and not row["igat"] and row["kind"] in D.TRAINING_KINDS and row["checkpoint_path"]:
        # The paper's procedure: train the base defense, then fine-tune it with iGAT.
        st.page_link(PAGE_LAUNCH, label="Fine-tune with iGAT", icon=":material/tune:",
                     query_params={"clone": str(run_id), "finetune": "1"},
                     help="open the Launch form with iGAT on, the paper's defaults for this defense and this run as the base")


def results(run_id: int, status: str) -> None:
    """The run's evaluation results stored so far: each row appears the moment the worker computes it, so a
    running (or cancelled, failed) evaluation shows its partial table; the fragment's refresh adds rows."""
    evals = D.load_eval(get_engine(), [run_id], target=None)
    if evals.empty:
        return
    partial = {"running": " (partial: the evaluation is still running)", "queued": " (partial: queued to resume)",
               "failed": " (partial: a retry computes only the missing ones)",
               "cancelled": " (partial: a retry computes only the missing ones)"}.get(status, "")
    st.markdown(f"**Evaluation results**{partial}")
    st.dataframe(tables.results_table(evals), hide_index=True, width="stretch", key=f"runs.results.{run_id}")


RUNS_OF_THIS_RUN = "runs._rows"  # the page's rows, read once by body() and handed to the fragment in the same run


def runs_fragment(was_active: bool) -> None:
    engine = get_engine()
    # In a full run of the page, body() has just read the runs: use them (reading them again was a sixth of the
    # page's script run with 500 runs). The fragment's own reruns (the refresh, its widgets) read them afresh.
    df = st.session_state.pop(RUNS_OF_THIS_RUN, None)
    if df is None:
        df = D.load_runs(engine)
    active = bool((~df["status"].isin(D.FINAL)).any())
    if active != was_active:  # start/stop auto-refresh: redefine the fragment with a new run_every
        st.rerun()
    metrics = RT.metric_frame(engine, df)  # finished runs come from the cache: only active ones are re-read
    show_archived = bool(st.session_state.get("runs.show_archived", False))
    shown = D.filter_runs(df, st.session_state.get("runs.status"), st.session_state.get("runs.dataset"),
                          st.session_state.get("runs.defense"), st.session_state.get("runs.tag"),
                          st.session_state.get("runs.search", ""))
    shown = RT.visible(shown, show_archived, bool(st.session_state.get("runs.has_results", False)), metrics)
    st.markdown(status_badges(shown))
    flash = st.session_state.pop("runs.flash", None)
    if flash:
        getattr(st, flash[0])(flash[1])
    if shown.empty:
        st.info("No run matches these filters.")
        return
    ordered = RT.sorted_runs(shown, metrics, st.session_state.get("runs.sort", RT.NEWEST),
                             bool(st.session_state.get("runs.sort_desc", True)))
    page = RT.page_of(len(ordered), st.session_state.get("runs.page", 1))
    rows = ordered.iloc[page.first:page.stop]
    st.dataframe(table(rows, metrics, show_archived), hide_index=True, width="stretch", key="runs.table",
                 column_config=column_config(metrics))
    pager = st.columns([1, 4])
    if page.count > 1:
        if st.session_state.get("runs.page") not in range(1, page.count + 1):
            st.session_state["runs.page"] = page.number  # fewer pages after filtering: stay on the last one
        pager[0].selectbox("Page", list(range(1, page.count + 1)), key="runs.page", label_visibility="collapsed",
                           format_func=lambda n: f"page {n} of {page.count}")
    pager[1].caption(page.caption())
    ids = [int(i) for i in ordered["id"]]
    wanted = st.session_state.pop("runs.pending_select", None) or st.session_state.get("runs.selected") or query_int("run")
    if wanted not in ids:
        wanted = ids[page.first]
    st.session_state["runs.selected"] = wanted
    labels = {int(r["id"]): D.run_label(r) for r in ordered[["id", "name", "method", "variant", "seed", "status"]]
              .to_dict("records")}
    selected = st.selectbox("Run", ids, key="runs.selected", format_func=lambda i: labels.get(i, str(i)))
    set_query("run", selected)
    details(ordered[ordered["id"] == selected].iloc[0].to_dict())


def body() -> None:
    st.title("Runs")
    engine = get_engine()
    df = D.load_runs(engine)
    if df.empty:
        empty_state("No runs yet. Launch one from the Launch page, or with `igat submit CONFIG.yaml` on the command line.")
        return
    cols = st.columns([2, 2, 2, 2, 3])
    cols[0].multiselect("Status", D.STATUSES, key="runs.status", placeholder="any status")
    cols[1].multiselect("Dataset", sorted(set(df["dataset"]) - {""}), key="runs.dataset", placeholder="any dataset")
    cols[2].multiselect("Defense", sorted(set(df["defense"]) - {""}), key="runs.defense", placeholder="any defense")
    all_tags = sorted({t for tags in df["tags"] for t in D.tag_list(tags)})
    cols[3].multiselect("Tag", all_tags, key="runs.tag", placeholder="any tag")
    cols[4].text_input("Search", key="runs.search", placeholder="name, experiment or method")
    more = st.columns([2, 2, 3, 2, 3])
    archived = int(df["archived"].astype(bool).sum())
    more[0].toggle(f"Show archived ({archived})", key="runs.show_archived")
    more[1].toggle("Has results", key="runs.has_results", help="only runs with stored evaluation results")
    choices = RT.sort_choices(RT.metric_frame(engine, df))
    if st.session_state.get("runs.sort") not in choices:
        st.session_state["runs.sort"] = RT.NEWEST  # a metric column no run has any more
    more[2].selectbox("Sort all runs by", choices, key="runs.sort",
                      help="orders every matching run before the table is cut into pages of 50; a click on a column "
                      "header sorts the page shown")
    more[3].toggle("Descending", value=True, key="runs.sort_desc")
    active = bool((~df["status"].isin(D.FINAL)).any())
    st.session_state[RUNS_OF_THIS_RUN] = df
    st.fragment(run_every=REFRESH_SECONDS if active else None)(guarded(runs_fragment))(active)


run_page(body)
