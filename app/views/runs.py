"""Runs / queue: every run's status, progress, ETA, worker and duration; cancel, retry, clone."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import data as D
from app import tables
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


def table(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "id": df["id"],
        "name": df["name"],
        "method": df["method"],
        "dataset": df["dataset"],
        "seed": df["seed"],
        "variant": df["variant"],
        "status": [status_label(s, bool(c)) for s, c in zip(df["status"], df["cancel_requested"], strict=True)],
        "progress": df["progress"],
        "epoch": df["epoch"].astype(str) + "/" + df["total_epochs"].astype(str),
        "ETA": [eta_text(e, sc) for e, sc in zip(df["eta_s"], df["eta_scope"], strict=True)],
        "duration": df["duration_s"].map(fmt_duration),
        "worker": df["worker"],
        "experiment": df["experiment"],
        "tags": df["tags"],
        "reason": df["error"].map(lambda e: (e.strip().splitlines() or [""])[-1][:160] if e else ""),
        "created": df["created_at"].map(fmt_time),
    })


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
    results(run_id, status)
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


def runs_fragment(was_active: bool) -> None:
    engine = get_engine()
    df = D.load_runs(engine)
    active = bool((~df["status"].isin(D.FINAL)).any())
    if active != was_active:  # start/stop auto-refresh: redefine the fragment with a new run_every
        st.rerun()
    shown = D.filter_runs(df, st.session_state.get("runs.status"), st.session_state.get("runs.dataset"),
                          st.session_state.get("runs.defense"), st.session_state.get("runs.tag"),
                          st.session_state.get("runs.search", ""))
    st.markdown(status_badges(shown))
    flash = st.session_state.pop("runs.flash", None)
    if flash:
        getattr(st, flash[0])(flash[1])
    if shown.empty:
        st.info("No run matches these filters.")
        return
    st.dataframe(
        table(shown), hide_index=True, width="stretch", key="runs.table",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "id": st.column_config.NumberColumn("id", format="%d"),
        },
    )
    ids = [int(i) for i in shown["id"]]
    wanted = st.session_state.pop("runs.pending_select", None) or st.session_state.get("runs.selected") or query_int("run")
    if wanted not in ids:
        wanted = ids[0]
    st.session_state["runs.selected"] = wanted
    labels = {int(r["id"]): D.run_label(r) for r in shown.to_dict("records")}
    selected = st.selectbox("Run", ids, key="runs.selected", format_func=lambda i: labels.get(i, str(i)))
    set_query("run", selected)
    details(shown[shown["id"] == selected].iloc[0].to_dict())


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
    active = bool((~df["status"].isin(D.FINAL)).any())
    st.fragment(run_every=REFRESH_SECONDS if active else None)(guarded(runs_fragment))(active)


run_page(body)
