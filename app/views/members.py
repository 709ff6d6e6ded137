"""Members: how iGAT distributed adversarial examples over the members, epoch by epoch, and how
robust each member is in the final evaluation."""

from __future__ import annotations

import streamlit as st

from app import charts
from app import data as D
from app.common import empty_state, get_engine, query_int, recall, remember, run_page, set_query


def body() -> None:
    st.title("Member statistics")
    engine = get_engine()
    runs = D.load_runs(engine)
    if runs.empty:
        empty_state("No runs yet. iGAT runs record per-member distribution statistics every epoch.")
        return
    with_stats = D.runs_with_member_stats(engine)
    with_members = D.runs_with_member_eval(engine)
    useful = runs[runs["id"].isin(with_stats | with_members)]
    if useful.empty:
        empty_state("No run has member statistics yet. Launch an iGAT run (the iGAT toggle on the Launch page); "
                    "its per-member allocation statistics appear here after its first epoch.")
        return
    ids = [int(i) for i in useful["id"]]
    labels = {int(r["id"]): D.run_label(r) for r in useful.to_dict("records")}
    if st.session_state.get("members.run") not in ids:
        wanted = query_int("run")
        if wanted not in ids:  # no (valid) run in the URL: the one picked here before in this session, if any
            wanted = recall("members.run")
        st.session_state["members.run"] = wanted if wanted in ids else ids[0]
    run_id = st.selectbox("Run", ids, key="members.run", format_func=lambda i: labels.get(i, str(i)))
    set_query("run", run_id)
    remember("members.run", run_id)
    rev = f"members-{run_id}"

    stats = D.load_member_stats(engine, run_id)
    st.subheader("iGAT distribution over epochs")
    if stats.empty:
        st.info("This run recorded no per-member statistics (only iGAT runs distribute adversarial examples).")
    else:
        epochs = sorted(int(e) for e in stats["epoch"].unique())
        epoch = epochs[-1]
        if len(epochs) > 1:
            epoch = st.select_slider("Epoch for the histogram and heatmap", epochs, value=epochs[-1], key=f"members.epoch.{run_id}")
        left, right = st.columns(2)
        with left:
            st.plotly_chart(charts.alloc_area(stats, rev), key=f"members.alloc.{run_id}", width="stretch")
        with right:
            st.plotly_chart(charts.rank_hist(stats, epoch, rev), key=f"members.rank.{run_id}", width="stretch")
        left, right = st.columns(2)
        with left:
            st.plotly_chart(charts.member_accuracy(stats, rev), key=f"members.acc.{run_id}", width="stretch")
        with right:
            st.plotly_chart(charts.class_heatmap(stats, epoch, rev), key=f"members.class.{run_id}", width="stretch")
        # A fixed label: a keyed expander's state belongs to its label too, so naming the epoch here closed the
        # tables whenever the epoch was changed.
        tables = st.expander("Statistics at the epoch shown above (tables)", key=f"members.tables.open.{run_id}",
                             on_change="rerun")
        if tables.open:  # built only when opened: two dataframes the browser drew on every visit, unseen
            tables.caption(f"Epoch {epoch}")
            # Two tables: a statistic is either per member or of the whole ensemble, and one grid of both left
            # every other cell empty (shown as "None").
            at_epoch = stats[stats["epoch"] == epoch]
            per_member = at_epoch[at_epoch["member"] >= 0]
            if not per_member.empty:
                grid = per_member.pivot_table(index="statistic", columns="member", values="value", aggfunc="first")
                grid.columns = [f"member {c}" for c in grid.columns]
                tables.dataframe(grid, width="stretch", key=f"members.table.{run_id}")
            whole = at_epoch[at_epoch["member"] < 0]
            if not whole.empty:
                tables.dataframe(whole[["statistic", "value"]].rename(columns={"value": "ensemble"}), hide_index=True,
                                 width="stretch", key=f"members.ensemble_table.{run_id}")

    st.subheader("Per-member robustness (final evaluation)")
    members = D.load_eval(engine, [run_id], target=None)
    members = members[members["target"] != "ensemble"]
    if members.empty:
        st.info("No per-member evaluation for this run (set eval.per_member: true to record it).")
        return
    st.plotly_chart(charts.member_robustness(members, rev), key=f"members.robust.{run_id}", width="stretch")
    table = members.assign(attack=members["attack"].map(charts.attack_label), accuracy=members["accuracy"] * 100.0)
    table = table.pivot_table(index="target", columns="attack", values="accuracy", aggfunc="mean")
    st.dataframe(table.style.format("{:.2f}"), width="stretch", key=f"members.robust_table.{run_id}")


run_page(body)
