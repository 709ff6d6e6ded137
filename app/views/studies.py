"""Studies: does iGAT help a defense? Launch a paired study, follow it, read its table next to the paper's.

A study (``igat study``) trains per seed a base of the defense, then continues it with its own recipe and
fine-tunes it with iGAT for the same epochs, and evaluates all of them on the same images and attacks. The
page launches one (the launcher is plain widgets, not a form, so the cost estimate follows every change),
lists the studies with their phase and progress, and shows a selected study's phase runs and results
(partial while it runs) beside the paper's Tables 1-3.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app import studies as S
from app.common import (
    PAGE_LIVE,
    REFRESH_SECONDS,
    fmt_time,
    get_engine,
    guarded,
    query_int,
    run_page,
    set_query,
    short_error,
)

K = "studies."
SCALES = ["cpu-mini", "paper"]
DATASETS = ["cifar10", "cifar100", "synthetic"]
ABLATIONS = ["opposite", "random", "hard", "beta0"]
STATUS_COLOURS = {"queued": "gray", "running": "blue", "succeeded": "green", "failed": "red", "cancelled": "orange"}
FINAL = {"succeeded", "failed", "cancelled"}


def key(name: str) -> str:
    return K + name


def defense_names() -> list[str]:
    from igat.specs.defenses import DEFENSE_SPECS

    return [d for d in DEFENSE_SPECS.names() if d != "standard"]  # "standard" has no adversarial recipe to improve


# --- launching ---------------------------------------------------------------------------------------------
def spec_data() -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """The spec the widgets describe, or the field errors that stop it from being one."""
    ss = st.session_state
    seeds, problem = S.parse_seeds(ss.get(key("seeds"), ""))
    if problem:
        return None, [("seeds", problem)]
    data: dict[str, Any] = {
        "defense": ss[key("defense")], "scale": ss[key("scale")], "dataset": ss[key("dataset")], "seeds": seeds,
        "arms": ["continued", "igat", *ss.get(key("ablations"), [])],
        "overrides": [ln.strip() for ln in ss.get(key("overrides"), "").splitlines() if ln.strip()]}
    for name in ("base_max_epochs", "arm_epochs", "eval_examples"):
        value = int(ss.get(key(name)) or 0)
        if value:  # 0 = the scale's value
            data[name] = value
    return data, []


def checked_spec() -> tuple[Any, list[tuple[str, str]]]:
    from igat.config import ConfigError
    from tasks.studyjob import check_study

    data, errors = spec_data()
    if data is None:
        return None, errors
    try:
        return check_study(data), []
    except ConfigError as exc:
        return None, exc.errors


def on_launch() -> None:
    spec, errors = checked_spec()
    st.session_state[key("errors")] = errors
    if spec is None:
        return
    name = st.session_state.get(key("name"), "").strip() or None
    try:
        import tasks.api as api  # lazily: Celery is only needed when something is queued

        _exp_id, study_id = api.submit_study(spec, name=name)
    except api.SubmitError as exc:
        field, _, msg = str(exc).partition(": ")
        st.session_state[key("errors")] = [(field if msg else "queue", msg or str(exc))]
        return
    except Exception as exc:  # noqa: BLE001 - broker down, DB error: say so next to the button
        st.session_state[key("errors")] = [("queue", f"could not queue the study: {short_error(exc)}")]
        return
    st.session_state[key("flash")] = ("success", f"Queued study #{study_id}; it is selected below.")
    st.session_state[key("pending_select")] = study_id


def field_errors(name: str) -> None:
    for field, msg in st.session_state.get(key("errors"), []):
        if S.field_of(field) == name:
            st.error(f"`{field}`: {msg}", icon=":material/error:")


def launcher() -> None:
    ss = st.session_state
    # Drawn only when asked for (or while there is something to fix): checking a spec and estimating its cost plan
    # every config the study trains, work that reading studies does not need (the page's speed with 500 runs).
    if ss.get(key("errors")):
        ss[key("open")] = True
    if not st.toggle("Launch a study", key=key("open"), help="the form, with the cost estimate of what it queues"):
        return
    defenses = defense_names()
    ss.setdefault(key("defense"), "adp" if "adp" in defenses else defenses[0])
    ss.setdefault(key("scale"), "cpu-mini")
    ss.setdefault(key("dataset"), "cifar10")
    ss.setdefault(key("seeds"), "0, 1, 2")
    with st.container(border=True):
        c = st.columns([2, 2, 2, 3])
        with c[0]:
            st.selectbox("Defense", defenses, key=key("defense"), help="the base defense D the study asks about")
            field_errors("defense")
        with c[1]:
            st.radio("Scale", SCALES, key=key("scale"), horizontal=True,
                     help="cpu-mini: 3 x ResNet-8, 5,000 images, hours on a CPU; paper: 8 x ResNet-20, the paper's "
                          "epochs and attacks (a GPU job)")
            field_errors("scale")
        with c[2]:
            st.selectbox("Dataset", DATASETS, key=key("dataset"))
            field_errors("dataset")
        with c[3]:
            st.text_input("Seeds", key=key("seeds"), help="comma-separated, 1 to 20 distinct seeds; the verdict's "
                          "interval is over seeds, so use 3 or more")
            field_errors("seeds")
        st.multiselect("Extra arms (Table 3 ablations of iGAT)", ABLATIONS, key=key("ablations"),
                       help="each is one more fine-tune per seed from the same base; continued and iGAT always run")
        field_errors("arms")
        with st.expander("Advanced"):
            c = st.columns(3)
            for col, name, label in ((c[0], "base_max_epochs", "Base max epochs"), (c[1], "arm_epochs", "Arm epochs"),
                                     (c[2], "eval_examples", "Evaluation images")):
                with col:
                    st.number_input(label, key=key(name), min_value=0, step=1, value=0, help="0 = the scale's value")
                    field_errors(name)
            st.text_area("Config overrides (one field=value per line, applied to every run)", key=key("overrides"),
                         placeholder="data.train_subset=2000", height=90)
            field_errors("overrides")
            st.text_input("Name", key=key("name"), placeholder="study-DEFENSE-SCALE")
            field_errors("name")
        spec, _problems = checked_spec()
        if spec is not None:
            from tasks.studyjob import study_plan

            st.info(f"Estimated cost: {study_plan(spec).summary()}.", icon=":material/schedule:")
        else:
            st.caption("The cost estimate appears once the fields above are valid.")
        field_errors("form")
        field_errors("queue")
        st.button("Queue the study", key=key("launch"), type="primary", on_click=guarded(on_launch),
                  icon=":material/play_arrow:")


# --- the list and one study ----------------------------------------------------------------------------------
def _api():
    import tasks.api

    return tasks.api


def _control(action: str, study_id: int) -> None:
    try:
        if action == "cancel":
            _api().cancel_run(study_id)
            msg = f"Cancellation of study #{study_id} requested; it stops at the next batch or phase."
        else:
            _api().retry_run(study_id)
            msg = f"Study #{study_id} queued again; it resumes from its last finished piece."
        st.session_state[key("flash")] = ("success", msg)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        st.session_state[key("flash")] = ("error", f"Could not {action} study #{study_id}: {short_error(exc)}")


def studies_table(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "id": df["id"], "name": df["name"],
        "status": df["status"] + df["cancel_requested"].map(lambda c: " (cancelling)" if c else ""),
        "phase": df["phase"], "progress": df["progress"], "defense": df["defense"], "scale": df["scale"],
        "dataset": df["dataset"], "seeds": df["seeds"], "arms": df["arms"], "created": df["created_at"].map(fmt_time)})


def children_section(study_id: int) -> None:
    children = S.load_children(get_engine(), study_id)
    st.markdown("**Phase runs**")
    if children.empty:
        st.caption("No phase has started yet.")
        return
    st.dataframe(pd.DataFrame({
        "id": children["id"], "phase": children["name"], "status": children["status"],
        "epoch": children["epoch"].astype(str) + "/" + children["total_epochs"].astype(str),
        "progress": children["progress"],
        "reason": children["error"].map(lambda e: (e.strip().splitlines() or [""])[-1][:160] if e else "")}),
        hide_index=True, width="stretch", key=key(f"children.{study_id}"),
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0,
                                                                   format="percent"),
                       "id": st.column_config.NumberColumn("id", format="%d")})
    cols = st.columns(4)
    for i, row in enumerate(children.to_dict("records")):
        cols[i % 4].page_link(PAGE_LIVE, label=f"#{row['id']} {row['name']} ({row['status']})",
                              icon=":material/monitoring:", query_params={"run": str(row["id"])})


def results_section(study: dict[str, Any]) -> None:
    from igat.paper_values import paper_tables

    engine = get_engine()
    analysis = S.load_analysis(engine, int(study["id"]))
    st.markdown("**Results**")
    if analysis is None or not analysis.get("cells"):
        st.caption("No evaluation is finished yet; the table fills in seed by seed as the study runs.")
        return
    final = study["status"] == "succeeded"
    spec = analysis["spec"]
    done = ", ".join(map(str, analysis["seeds_done"]))
    st.caption(("Final" if final else "Partial") + f" results over seeds {done} of {', '.join(map(str, spec['seeds']))}. "
               "Accuracy in %, mean ± std over seeds; the difference igat - continued is paired per example, with 95 % "
               "intervals over seeds (Student t: the verdict's basis) and over examples (evaluation noise only).")
    st.dataframe(S.result_table(analysis), hide_index=True, width="stretch", key=key(f"table.{study['id']}"))
    pds = S.paper_dataset(spec["dataset"])
    tables = paper_tables()
    note = (f"Columns labelled *{S.P.paper_label(pds)}* are the paper's reported values ({tables['source']}, "
            "Tables 1-3, five runs each), not measured here.")
    if pds != spec["dataset"]:
        note += f" The study's data ({spec['dataset']}) is not the paper's; they are shown for scale only."
    st.caption(note)
    rev = f"study-{study['id']}"
    left, right = st.columns(2)
    with left:
        st.plotly_chart(S.accuracy_figure(analysis, rev), key=key(f"acc.{study['id']}"), width="stretch")
    with right:
        st.plotly_chart(S.difference_figure(analysis, rev), key=key(f"diff.{study['id']}"), width="stretch")
    ablations = S.ablation_table(analysis)
    if not ablations.empty:
        st.markdown("**Ablations of iGAT** (the paper's Table 3): each variant against iGAT with the soft rule, "
                    "paired per seed and image from the same base; *better* means the variant is more accurate")
        st.dataframe(ablations, hide_index=True, width="stretch", key=key(f"ablations.{study['id']}"))
    bases = S.bases_table(analysis)
    if not bases.empty:
        st.markdown("**Bases** (natural accuracy of the average combiner on the per-epoch probe)")
        st.dataframe(bases, hide_index=True, width="stretch", key=key(f"bases.{study['id']}"))
    report = S.load_report(engine, int(study["id"]))
    if report:
        st.download_button("Download the report (markdown)", report, file_name=f"study-{study['id']}.md",
                           mime="text/markdown", key=key(f"report.{study['id']}"), icon=":material/download:")


def study_details(study: dict[str, Any]) -> None:
    study_id, status = int(study["id"]), study["status"]
    spec = study["spec"]
    st.markdown(f"**Study #{study_id} · {study['name']}** — :{STATUS_COLOURS.get(status, 'gray')}-badge[{status}] "
                f"· {spec.get('defense', '')} · {spec.get('scale', '')} · {spec.get('dataset', '')} "
                f"· seeds {study['seeds']} · arms {study['arms']}")
    if status in ("running", "queued"):
        st.progress(min(max(float(study["progress"]), 0.0), 1.0), text=study["phase"] or "waiting for a worker")
    elif status == "failed" and study["error"]:
        st.error("Failed: " + (study["error"].strip().splitlines() or [""])[-1])
    elif status == "cancelled":
        st.warning("Cancelled" + (f" at: {study['phase']}" if study["phase"] else "") + ". Retry resumes it.")
    elif study["phase"]:
        st.caption(study["phase"])
    c = st.columns(6)
    c[0].button("Cancel", key=key(f"cancel.{study_id}"), icon=":material/cancel:",
                disabled=status not in ("queued", "running") or study["cancel_requested"],
                on_click=_control, args=("cancel", study_id), help="stops at the next batch, or after the current "
                "evaluation; its finished pieces are kept")
    c[1].button("Retry", key=key(f"retry.{study_id}"), icon=":material/replay:", disabled=status not in ("failed", "cancelled"),
                on_click=_control, args=("retry", study_id), help="queue it again: it resumes from its last finished piece")
    children_section(study_id)
    results_section(study)


def studies_fragment(was_active: bool) -> None:
    df = S.load_studies(get_engine())
    active = bool((~df["status"].isin(FINAL)).any())
    if active != was_active:  # start/stop auto-refresh
        st.rerun()
    flash = st.session_state.pop(key("flash"), None)
    if flash:
        getattr(st, flash[0])(flash[1])
    st.dataframe(studies_table(df), hide_index=True, width="stretch", key=key("list"),
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0,
                                                                           format="percent"),
                                "id": st.column_config.NumberColumn("id", format="%d")})
    ids = [int(i) for i in df["id"]]
    wanted = st.session_state.pop(key("pending_select"), None) or st.session_state.get(key("selected")) or query_int("study")
    st.session_state[key("selected")] = wanted if wanted in ids else ids[0]
    labels = {int(r["id"]): f"#{r['id']} {r['name']} ({r['defense']}, {r['scale']}, {r['status']})"
              for r in df.to_dict("records")}
    selected = st.selectbox("Study", ids, key=key("selected"), format_func=lambda i: labels.get(i, str(i)))
    set_query("study", selected)
    study_details(df[df["id"] == selected].iloc[0].to_dict())


def body() -> None:
    st.title("Studies")
    st.caption("Does iGAT make a defense more robust? Per seed: train the defense until it plateaus, then from that "
               "base continue it with its own recipe and fine-tune it with iGAT for the same epochs; evaluate all on "
               "the same images and attacks. Also on the command line: `igat study --submit`.")
    df = S.load_studies(get_engine())
    launcher()
    if df.empty:
        st.info("No studies yet: switch on *Launch a study* above, or run "
                "`igat study --defense adp --seeds 0,1,2 --submit`.")
        return
    active = bool((~df["status"].isin(FINAL)).any())
    st.fragment(run_every=REFRESH_SECONDS if active else None)(guarded(studies_fragment))(active)


run_page(body)
