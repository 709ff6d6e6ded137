"""Ablation: Table 3 (distributing rules and beta = 0 for iGAT) for runs of ablation experiments."""

from __future__ import annotations

import streamlit as st

from app import charts, tables
from app import data as D
from app.common import PAGE_LAUNCH, empty_state, get_engine, parse_id_list, run_page, set_query
from app.export import to_csv_bytes

K = "abl."


def body() -> None:
    st.title("Ablation (Table 3)")
    engine = get_engine()
    exps = D.load_experiments(engine, kind="ablation")
    if exps.empty:
        empty_state("No ablation experiment yet. On the Launch page switch iGAT on and tick "
                    "“Queue as the Table 3 ablation” (or run `igat ablate`).", page=PAGE_LAUNCH)
        return
    ids = [int(i) for i in exps["id"]]
    labels = {int(e["id"]): f"#{e['id']} {e['name']} ({e['runs']} runs)" for e in exps.to_dict("records")}
    if K + "exps" not in st.session_state:
        wanted = [i for i in parse_id_list(st.query_params.get("exps")) if i in ids]
        st.session_state[K + "exps"] = wanted or ids[:1]
    chosen = st.multiselect("Ablation experiments", ids, key=K + "exps", format_func=lambda i: labels.get(i, str(i)))
    set_query("exps", chosen)
    if not chosen:
        st.info("Pick an ablation experiment.")
        return
    runs = D.load_runs(engine, experiment_ids=chosen)
    status = runs["status"].value_counts().to_dict()
    st.caption(" · ".join(f"{n} {s}" for s, n in status.items()))
    evals = D.load_eval(engine, [int(i) for i in runs["id"]])
    if evals.empty:
        st.info("None of these runs has evaluation results yet; Table 3 fills in as they finish.")
        return
    frame = tables.report_frame(evals, {int(i): "ablation" for i in runs["id"]})
    methods = tables.reports.ablation_methods(frame) or sorted(frame["method"].map(tables.reports.display_method).unique())
    combiners = sorted(frame["combiner"].unique(), key=lambda c: (c != "average", c))
    cols = st.columns(2)
    method = cols[0].selectbox("Method", methods, key=K + "method")
    combiner = cols[1].selectbox("Combiner", combiners, key=K + "combiner")
    t3 = tables.table3(frame, method, combiner)
    st.markdown(t3.markdown, unsafe_allow_html=True)
    shown = frame[(frame["method"].map(tables.reports.display_method) == method) & (frame["combiner"] == combiner)]
    st.plotly_chart(charts.ablation_bars(shown, "ablation", tables.reports.VARIANT_ORDER), key=K + "bars", width="stretch")
    cols = st.columns(2)
    cols[0].download_button("Table 3 (CSV)", to_csv_bytes(t3.tidy), file_name="table3.csv", mime="text/csv",
                            key=K + "csv", icon=":material/download:")
    cols[1].download_button("Table 3 (LaTeX)", t3.latex, file_name="table3.tex", mime="text/x-tex",
                            key=K + "tex", icon=":material/download:")


run_page(body)
