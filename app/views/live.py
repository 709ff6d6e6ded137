"""Live training: loss components and accuracies of one run, refreshed every few seconds.

The chart area is a fragment with ``run_every`` while the run is queued/running and none once
it is final. Each refresh reads only metric rows newer than the last one seen (kept in
session_state), and the figures keep a fixed ``uirevision`` and widget key so a user's zoom
survives the refresh.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, tables
from app import data as D
from app.common import (
    PAGE_MEMBERS,
    REFRESH_SECONDS,
    empty_state,
    eta_text,
    get_engine,
    guarded,
    query_int,
    recall,
    remember,
    run_page,
    set_query,
)
from app.curves import overlay_section

HEADLINE = [("train_loss", "train loss", "{:.4f}"), ("test_nat_acc_average", "natural acc (avg)", "{:.1%}"),
            ("test_pgd_acc_average", "PGD acc (avg)", "{:.1%}"), ("epoch_seconds", "s / epoch", "{:.1f}"),
            ("images_per_second", "images / s", "{:.0f}")]


def metrics_for(run_id: int) -> pd.DataFrame:
    """All metric points of the run, fetched incrementally (only rows newer than the cached ones)."""
    cache: dict[int, pd.DataFrame] = st.session_state.setdefault("live.cache", {})
    old = cache.get(run_id)
    last_id = int(old["id"].max()) if old is not None and not old.empty else 0
    new = D.load_metrics(get_engine(), run_id, after_id=last_id)
    df = new if old is None or old.empty else (old if new.empty else pd.concat([old, new], ignore_index=True))
    cache[run_id] = df
    return df


def headline(metrics: pd.DataFrame) -> None:
    epoch = metrics[metrics["scope"] == "epoch"]
    if epoch.empty:
        return
    last = epoch.sort_values("id").groupby("name").last()
    shown = [(label, fmt.format(float(last.loc[name, "value"]))) for name, label, fmt in HEADLINE if name in last.index]
    if shown:
        for col, (label, value) in zip(st.columns(len(shown)), shown):
            col.metric(label, value)


def show_results(evals: pd.DataFrame, run_id: int) -> None:
    st.dataframe(tables.results_table(evals), hide_index=True, width="stretch", key=f"live.results.{run_id}")


def live_fragment(run_id: int, was_final: bool, smoothing: float) -> None:
    run = D.get_run(get_engine(), run_id)
    if run is None:
        st.warning(f"Run #{run_id} no longer exists.")
        return
    final = run["status"] in D.FINAL
    if final != was_final:  # the run ended (or was retried): redefine the fragment without run_every
        st.rerun()
    status = run["status"]
    eta = eta_text(run["eta_s"], run["eta_scope"])
    phase = run["phase"] if status == "running" else ""  # a finished run's last phase is history
    text = (f"{status} · epoch {run['epoch']}/{run['total_epochs']}" + (f" · {phase}" if phase else "")
            + (f" · ETA {eta}" if eta else "") + (f" · worker {run['worker']}" if run["worker"] else ""))
    st.progress(min(max(float(run["progress"]), 0.0), 1.0), text=text)
    if status == "failed" and run["error"]:
        st.error("Failed: " + (run["error"].strip().splitlines() or [""])[-1])
    elif status == "cancelled":
        st.warning("This run was cancelled.")
    elif status == "queued":
        st.info("Waiting for a worker to pick this run up (is `igat worker` or `igat up` running?).")
    evals = D.load_eval(get_engine(), [run_id], target=None)
    if not evals.empty:  # the final evaluation's rows so far (each is stored the moment it is computed)
        # While the run evaluates, its rows are the news and are shown. A finished run's table sits behind a switch
        # rather than in a collapsed expander: the browser builds a dataframe even inside a closed expander, which
        # cost every visit of a finished run ~0.3 s of CPU for a table that needs a click to be seen either way.
        if not final:
            with st.expander("Evaluation results so far", expanded=True):
                show_results(evals, run_id)
        elif st.toggle(f"Evaluation results ({len(evals)} rows)", key=f"live.results.on.{run_id}"):
            show_results(evals, run_id)
    metrics = metrics_for(run_id)
    headline(metrics)
    if metrics.empty:
        # The bar above moves with every batch; the curves need points, which come less often.
        st.caption("No metrics recorded yet: the loss curves get a point every `train.log_every` steps and the "
                   "accuracies one at the end of each epoch; the bar above shows the step the training is at.")
        return
    rev = f"live-{run_id}"
    left, right = st.columns(2)
    with left:
        st.plotly_chart(charts.loss_curves(metrics, rev, smoothing), key=f"live.loss.{run_id}", width="stretch")
    with right:
        st.plotly_chart(charts.accuracy_curves(metrics, rev), key=f"live.acc.{run_id}", width="stretch")
    st.caption(f"{len(metrics)} metric points" + ("" if final else f" · refreshing every {REFRESH_SECONDS:g} s"))


def body() -> None:
    st.title("Live training")
    engine = get_engine()
    runs = D.load_runs(engine)
    if runs.empty:
        empty_state("No runs yet: launch one and follow its curves here.")
        return
    ids = [int(i) for i in runs["id"]]
    labels = {int(r["id"]): D.run_label(r) for r in runs.to_dict("records")}
    if st.session_state.get("live.run") not in ids:
        wanted = query_int("run")
        if wanted not in ids:  # no (valid) run in the URL: the one picked here before in this session, if any
            wanted = recall("live.run")
        running = runs[runs["status"] == "running"]
        default = wanted if wanted in ids else int(running["id"].iloc[0]) if not running.empty else ids[0]
        st.session_state["live.run"] = default
    cols = st.columns([4, 1])
    run_id = cols[0].selectbox("Run", ids, key="live.run", format_func=lambda i: labels.get(i, str(i)))
    smoothing = cols[1].slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key="live.smoothing",
                               help="exponential moving average of the per-step curves")
    set_query("run", run_id)
    remember("live.run", run_id)
    final = runs.loc[runs["id"] == run_id, "status"].iloc[0] in D.FINAL
    st.fragment(run_every=None if final else REFRESH_SECONDS)(guarded(live_fragment))(run_id, final, smoothing)
    st.page_link(PAGE_MEMBERS, label="Member statistics of this run", icon=":material/groups:",
                 query_params={"run": str(run_id)})

    st.subheader("Overlay runs")
    others = [i for i in ids if i != run_id]
    with_others = st.multiselect("Runs to draw with this one", others, key="live.overlay",
                                 format_func=lambda i: labels.get(i, str(i)), placeholder="pick runs to overlay",
                                 help="one line per run, for the metric chosen below")
    if not with_others:  # this run's own curves are above: one more chart of it alone would only cost drawing time
        return
    shown = [run_id, *with_others]
    active = bool((~runs[runs["id"].isin(shown)]["status"].isin(D.FINAL)).any())
    st.fragment(run_every=REFRESH_SECONDS if active else None)(guarded(overlay_fragment))(shown, labels)


def overlay_fragment(run_ids: list[int], labels: dict[int, str]) -> None:
    short = {rid: labels.get(rid, f"#{rid}").split(" (")[0] for rid in run_ids}  # "#12 name": the legend stays narrow
    overlay_section(get_engine(), run_ids, short, "live.ov.", "live-overlay")


run_page(body)
