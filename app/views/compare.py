"""Compare runs (or groups of seeds) side by side: bars per attack and combiner, Table 1 and
Table 2 layouts, a diff-only config table and the false-robustness flags. The selection lives
in the URL (``?runs=1,2,3&exps=4``) so a comparison can be shared."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from app import charts, tables
from app import data as D
from app.common import PAGE_RUNS, empty_state, get_engine, guarded, parse_id_list, recall, remember, run_page, set_query
from app.configdiff import config_diff, display_diff
from app.curves import overlay_section
from app.export import ExportError, figure_png, to_csv_bytes

K = "cmp."


def apply_query(run_ids: list[int], exp_ids: list[int]) -> None:
    """Pre-select what the URL names, once per distinct URL (so user edits are not overwritten); a URL that names
    nothing (the sidebar's link) brings back this session's last selection."""
    query = (st.query_params.get("runs", ""), st.query_params.get("exps", ""))
    if st.session_state.get(K + "applied") == query and K + "runs" in st.session_state:
        return
    st.session_state[K + "applied"] = query
    if query == ("", ""):
        runs, exps = recall("compare.selection", ([], []))
    else:
        runs, exps = parse_id_list(query[0]), parse_id_list(query[1])
    st.session_state[K + "runs"] = [i for i in runs if i in run_ids]
    st.session_state[K + "exps"] = [i for i in exps if i in exp_ids]


def selection(runs: pd.DataFrame, exps: pd.DataFrame) -> list[int]:
    run_ids = [int(i) for i in runs["id"]]
    exp_ids = [int(i) for i in exps["id"]]
    apply_query(run_ids, exp_ids)
    run_labels = {int(r["id"]): D.run_label(r) for r in runs.to_dict("records")}
    exp_labels = {int(e["id"]): f"#{e['id']} {e['name']} ({e['kind']}, {e['runs']} runs)" for e in exps.to_dict("records")}
    cols = st.columns(2)
    picked = cols[0].multiselect("Runs", run_ids, key=K + "runs", format_func=lambda i: run_labels.get(i, str(i)),
                                 placeholder="pick evaluated runs")
    groups = cols[1].multiselect("Experiments (groups of seeds)", exp_ids, key=K + "exps",
                                 format_func=lambda i: exp_labels.get(i, str(i)), placeholder="pick experiments")
    set_query("runs", picked)
    set_query("exps", groups)
    remember("compare.selection", (list(picked), list(groups)))
    st.session_state[K + "applied"] = (st.query_params.get("runs", ""), st.query_params.get("exps", ""))
    chosen = list(picked)
    for rid in runs[runs["experiment_id"].isin(groups)]["id"]:
        if int(rid) not in chosen:
            chosen.append(int(rid))
    return chosen


def png_export(fig, name: str) -> None:
    if st.button("Render PNG", key=K + f"png.{name}", icon=":material/image:",
                 help="renders the chart with kaleido and a headless Chromium (a few seconds)"):
        try:
            st.session_state[K + f"png_bytes.{name}"] = figure_png(fig)
        except ExportError as exc:
            st.error(str(exc))
    data = st.session_state.get(K + f"png_bytes.{name}")
    if data:
        st.download_button("Download PNG", data, file_name=f"{name}.png", mime="image/png", key=K + f"pngdl.{name}",
                           icon=":material/download:")


@st.cache_data(max_entries=16, show_spinner=False)
def paper_tables(frame: pd.DataFrame) -> tuple[tables.Table, tables.Table | None]:
    """Table 1 and Table 2 of the selected results, kept for the same results: building them (seed statistics,
    marks, Markdown and LaTeX; Table 2 builds Table 1 again) was half of the page's script run with fifty runs
    (0.8 of 1.6 s in a profile), and every rerun of the page (the bars grouped differently, a revisit) asks for
    the same tables again. Other results (an evaluation still adding rows, another selection) are other keys."""
    return tables.table1(frame), tables.table2(frame)


def curves_fragment(engine: Engine, run_ids: list[int], labels: dict[int, str]) -> None:
    """The selected runs' training curves, drawn on request. A second Plotly chart on the page costs every visit
    its drawing time, whether or not the curves are looked at; in a fragment, switching them on or off reruns
    only this section, not the bars and tables above."""
    if st.toggle(f"Draw the training curves of the {len(run_ids)} run(s)", key=K + "curves.on",
                 help="one line per run for a metric you pick; stays on while you change the selection"):
        overlay_section(engine, run_ids, labels, K + "curves.", "compare-curves")


def export_section(t1: tables.Table, t2: tables.Table | None, evals: pd.DataFrame, fig) -> None:
    """Tables 1 and 2 (CSV, LaTeX), every result (CSV) and the chart (PNG), built only while the section is open:
    each download button holds its file, made on every visit whether or not anything is downloaded."""
    section = st.expander("Export: Table 1 / Table 2 (CSV, LaTeX), all results (CSV), the chart (PNG)",
                          key=K + "export_open", on_change="rerun")
    if not section.open:
        return
    with section:
        cols = st.columns(5)
        cols[0].download_button("Table 1 (CSV)", to_csv_bytes(t1.tidy), file_name="table1.csv", mime="text/csv",
                                key=K + "csv1", icon=":material/download:")
        cols[1].download_button("Table 1 (LaTeX)", t1.latex, file_name="table1.tex", mime="text/x-tex",
                                key=K + "tex1", icon=":material/download:")
        if t2 is not None:
            cols[2].download_button("Table 2 (LaTeX)", t2.latex, file_name="table2.tex", mime="text/x-tex",
                                    key=K + "tex2", icon=":material/download:")
        cols[3].download_button("All results (CSV)", to_csv_bytes(evals.drop(columns=["extra"])),
                                file_name="results.csv", mime="text/csv", key=K + "csvraw", icon=":material/download:")
        with cols[4]:
            png_export(fig, "compare")


def body() -> None:
    st.title("Compare")
    engine = get_engine()
    runs = D.load_runs(engine)
    if runs.empty:
        empty_state("No runs yet. Launch a few (e.g. ADP and iGAT_ADP with seeds 0, 1, 2) and compare them here.")
        return
    evaluated = runs[runs["id"].isin(D.runs_with_results(engine))]
    if evaluated.empty:
        empty_state("No run has evaluation results yet: a run is evaluated when its training finishes.",
                    page=PAGE_RUNS, label="Watch the queue", icon=":material/list:")
        return
    exps = D.load_experiments(engine)
    exps = exps[exps["id"].isin(evaluated["experiment_id"].dropna().astype(int))]
    chosen = selection(evaluated, exps)
    if not chosen:
        st.info("Pick runs or experiments above. Seeds of the same method are aggregated (mean ± std). "
                "The URL keeps the selection, so you can share it.")
        return

    groups = st.session_state.get(K + "exps") or []
    st.caption(f"**{len(chosen)} run(s) selected** of {len(evaluated)} evaluated"
               + (f" ({len(groups)} experiment(s) included)" if groups else ""))
    evals = D.load_eval(engine, chosen)
    if evals.empty:
        st.info("The selected runs have no evaluation results yet.")
        return
    kinds = dict(zip(runs["id"].astype(int), runs["experiment_kind"]))
    frame = tables.report_frame(evals, kinds)
    group = st.radio("Group bars by", ["method", "run"], horizontal=True, key=K + "group",
                     help="method: seeds of a method are averaged; run: every run separately")
    labels = [tables.reports.display_method(m) + ("" if v in ("", "full") else f" ({v})")
              for m, v in zip(frame["method"], frame["variant"])]
    plot_df = frame.assign(method=labels)
    if group == "run":
        plot_df = plot_df.assign(run="#" + plot_df["run_id"].astype(str) + " " + plot_df["method"])
    fig = charts.robustness_bars(plot_df, "compare", group=group)
    st.plotly_chart(fig, key=K + "bars", width="stretch")

    st.subheader("Training curves")
    names = dict(zip(runs["id"].astype(int), runs["method"], strict=True))
    st.fragment(guarded(curves_fragment))(engine, chosen, {rid: f"#{rid} {names.get(rid, '')}" for rid in chosen})

    t1, t2 = paper_tables(frame)
    st.markdown(t1.markdown, unsafe_allow_html=True)  # the paper's layout: best bold, second underlined
    if t2 is None:
        st.caption("Table 2 (relative improvement of iGAT_X over X) appears when both X and iGAT_X are selected.")
    else:
        st.markdown(t2.markdown)

    st.subheader("False-robustness checks")
    flags = tables.robustness_flags(frame)
    if flags.empty:
        st.success("No false-robustness warning for the selected runs.")
    else:  # one box per severity, a line per flag: with many runs, a box per flag was a page of boxes
        for severity, show in (("error", st.error), ("warning", st.warning)):
            rows = flags[flags["severity"] == severity].to_dict("records")
            if rows:
                show("\n".join(f"- **{r['method']}** (seed {r['seed']}): {r['message']}" for r in rows))

    st.subheader("Config diff (differing fields only)")
    configs = D.run_configs(engine, chosen)
    labelled = {f"#{rid} {runs.loc[runs['id'] == rid, 'method'].iloc[0]}": configs[rid] for rid in chosen if rid in configs}
    if len(labelled) < 2:
        st.caption("Select at least two runs to compare their configs.")
    else:
        diff = config_diff(labelled, ignore=("output_dir",))
        if diff.empty:
            st.caption("The selected runs have identical configs.")
        else:
            shown = display_diff(diff)
            if shown is not diff:
                st.caption(f"{len(diff)} differing field(s) across {len(labelled)} runs: one row per run.")
            st.dataframe(shown, hide_index=True, width="stretch", key=K + "diff")

    export_section(t1, t2, evals, fig)
    st.caption("Shareable link: this page's URL keeps the selection "
               f"(`?runs={st.query_params.get('runs', '')}&exps={st.query_params.get('exps', '')}`).")


run_page(body)
