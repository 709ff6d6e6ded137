"""Theory page: Section-4 diagnostics (curvature, ambiguous pairs, Assumption 4.4, 0-1 loss).

Pick a succeeded run, submit the theory task (``tasks.api.submit_theory(run_id, params)``) and
plot the stored Artifact named "theory" of that run (or of a theory run whose parent is it).
Pick a study and see its arms (base, continued, iGAT, ...) side by side: the artifact "study_theory"
the worker stores after the study's evaluation, else the study folder's theory.json
(``igat theory --study FOLDER``). Every failure is shown as a message; the page never raises.
The page imports only torch-free modules (igat.theory.constants / params).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

from app.theory_figures import FIGURES, STUDY_FIGURES, study_comparison_rows
from igat.config import ConfigError
from igat.theory.constants import ARTIFACT_NAME, STUDY_ARTIFACT_NAME, STUDY_THEORY_FILE
from igat.theory.params import parse_params

st.title("Theory diagnostics")
st.caption("Measured quantities of the paper's Section 4: loss curvature (eq. 2), ambiguous pairs (Def. 4.3), "
           "acceptable-classifier conditions (Assumption 4.4) and single vs ensemble 0-1 loss (Theorem 4.1).")


@st.cache_resource
def _engine():
    from tasks.store import get_engine

    return get_engine()


def _succeeded_runs() -> list[Any]:
    from sqlmodel import Session, select

    from tasks.store import Run

    with Session(_engine()) as s:
        rows = s.exec(select(Run).where(Run.status == "succeeded").order_by(Run.id.desc())).all()
    return [r for r in rows if r.kind != "theory"]


def _theory_state(run_id: int) -> tuple[Any | None, list[Any], Any | None]:
    """(latest theory Artifact of the run or of its theory child runs, pending child runs, latest child run)."""
    from sqlmodel import Session, select

    from tasks.store import Artifact, Run

    with Session(_engine()) as s:
        children = s.exec(select(Run).where(Run.parent_run_id == run_id, Run.kind == "theory")).all()
        owners = [run_id] + [c.id for c in children]
        art = s.exec(select(Artifact).where(Artifact.name == ARTIFACT_NAME, Artifact.run_id.in_(owners))
                     .order_by(Artifact.created_at.desc(), Artifact.id.desc())).first()
    pending = [c for c in children if c.status in ("queued", "running")]
    latest = max(children, key=lambda c: c.id) if children else None
    return art, pending, latest


def _label(run: Any) -> str:
    if run.kind == "study":
        return f"#{run.id} {run.name} (study: arms side by side)"
    return f"#{run.id} {run.name} ({run.defense or 'run'}{', iGAT' if run.igat else ''})"


def _params_form() -> dict[str, Any] | None:
    with st.form("theory_params"):
        c1, c2, c3 = st.columns(3)
        params = {
            "num_examples": c1.number_input("Curvature examples", 1, 10000, 200, key="num_examples"),
            "delta_mode": c2.selectbox("Delta mode", ["pgd", "sign", "random"], key="delta_mode"),
            "eps": c3.number_input("eps (x/255)", 0.1, 255.0, 8.0, key="eps255") / 255.0,
            "pgd_steps": c1.number_input("PGD steps", 1, 1000, 10, key="pgd_steps"),
            "pair_split": c2.selectbox("Pair split", ["test", "train"], key="pair_split"),
            "pair_pool": c3.number_input("Pair pool size", 2, 100000, 2000, key="pair_pool"),
            "pair_mode": c1.selectbox("Pair mode", ["knn", "eq10"], key="pair_mode"),
            "k_pairs": c2.number_input("k closest pairs", 1, 100000, 100, key="k_pairs"),
            "J": c3.number_input("J (> 2)", 2.01, 1e6, 4.0, key="J"),
            "spectral_examples": c1.number_input("Spectral examples (0 = skip)", 0, 5000, 16, key="spectral"),
            "ci_method": c2.selectbox("CI method", ["bootstrap", "wilson"], key="ci_method"),
            "seed": c3.number_input("Seed", 0, 2**31 - 1, 0, key="seed"),
        }
        submitted = st.form_submit_button("Run theory diagnostics", key="submit_theory")
    return params if submitted else None


def _submit(run_id: int, params: dict[str, Any]) -> None:
    try:
        valid = parse_params(params).model_dump()
    except ConfigError as exc:
        for field, msg in exc.errors:
            st.error(f"{field}: {msg}")
        return
    try:
        from tasks import api
    except Exception as exc:  # the platform API may not be installed/written yet
        st.warning(f"Cannot submit: the task API (tasks.api) is not available ({type(exc).__name__}: {exc}).")
        return
    submit = getattr(api, "submit_theory", None)
    if submit is None:
        st.warning("Cannot submit: tasks.api.submit_theory(run_id, params) does not exist yet. "
                   "Run `igat theory CHECKPOINT --out result.json` from the command line meanwhile.")
        return
    try:
        handle = submit(run_id, valid)
    except Exception as exc:
        st.error(f"Submitting the theory task failed: {type(exc).__name__}: {exc}")
        return
    # tasks.api returns (experiment_id, [run ids]); show the run ids when it does
    if isinstance(handle, tuple) and len(handle) == 2 and isinstance(handle[1], list):
        handle = "theory run " + ", ".join(f"#{i}" for i in handle[1])
    st.success(f"Theory task submitted for run #{run_id} ({handle}). Results appear here when it finishes.")


def _headline(data: dict[str, Any]) -> None:
    cur, cond, z = data.get("curvature") or {}, data.get("conditions") or {}, data.get("zero_one")
    pooled = cond.get("members_pooled") or {}
    cols = st.columns(4)
    lam = cur.get("lambda_tilde_common")
    cols[0].metric("lambda~ (members)", "n/a" if lam is None else f"{lam:.3g}")
    cols[1].metric("ambiguous pairs", (data.get("pairs") or {}).get("num_pairs", "n/a"))
    p = pooled.get("p")
    cols[2].metric("p (condition 1, pooled)", "n/a" if p is None else f"{p:.1%}",
                   delta=None if p is None else ("meets 42.5%" if p >= 0.425 else "below 42.5%"),
                   delta_color="normal" if p is not None and p >= 0.425 else "inverse")
    if z and z.get("single") and z.get("average") and z["single"]["mean"] is not None:
        cols[3].metric("0-1 loss single -> average", f"{z['single']['mean']:.3f} -> {z['average']['mean']:.3f}")
    else:
        cols[3].metric("0-1 loss single -> average", "n/a")


def _verdicts(data: dict[str, Any]) -> None:
    """The hypotheses of Theorem 4.1 as the paper states them: Def. 4.3 and Assumption 4.4 per ordering."""
    d43 = ((data.get("pairs") or {}).get("definition_4_3") or {})
    if d43.get("verdict"):
        (st.success if d43.get("ambiguous") else st.warning)(d43["verdict"])
    a = ((data.get("conditions") or {}).get("assumption") or {})
    if a.get("verdict"):
        (st.success if a.get("holds") else st.warning)(f"Assumption 4.4 over the members, per ordering: {a['verdict']}")
    z = data.get("zero_one") or {}
    if z.get("combiners_equivalent"):
        st.info("Two classes: the average and max combiners make the same decision.")


def _study_theory(run: Any) -> dict[str, Any] | None:
    """The study's stored theory comparison, else the study folder's theory.json (None: neither)."""
    from sqlmodel import Session, select

    from tasks.store import Artifact
    from tasks.study_artifacts import FOLDER_ARTIFACT, study_dir

    with Session(_engine()) as s:
        arts = s.exec(select(Artifact).where(Artifact.run_id == run.id,
                                             Artifact.name.in_([STUDY_ARTIFACT_NAME, FOLDER_ARTIFACT]))
                      .order_by(Artifact.id.desc())).all()
    stored: dict[str, Any] = {}
    for a in arts:  # newest first
        stored.setdefault(a.name, json.loads(a.data_json))
    if isinstance(stored.get(STUDY_ARTIFACT_NAME), dict):
        return stored[STUDY_ARTIFACT_NAME]
    folder = (stored.get(FOLDER_ARTIFACT) or {}).get("path") or study_dir(run.id)
    try:
        return json.loads((Path(folder) / STUDY_THEORY_FILE).read_text())
    except (OSError, ValueError):  # not computed yet, or the folder is on the worker's machine only
        return None


def _study_results(run: Any) -> None:
    st.subheader("Theory diagnostics of the study's arms")
    try:
        data = _study_theory(run)
    except Exception as exc:
        st.error(f"Cannot read the study's theory results: {type(exc).__name__}: {exc}")
        return
    if data is None:
        st.info("No theory results for this study yet: the worker computes them after the study's evaluation. "
                "From the command line: `igat theory --study STUDY_FOLDER`.")
        return
    if data.get("error"):
        st.warning(f"The study's theory diagnostics failed: {data['error']}")
        return
    p = data.get("params") or {}
    st.caption(f"Same {p.get('num_examples', '?')} test examples (delta {p.get('delta_mode', '?')}) and the same "
               f"{p.get('k_pairs', '?')} closest cross-class pairs of a {p.get('pair_pool', '?')}-image test pool "
               "for every arm; differences are paired, 95 % bootstrap intervals over examples (curvature) or pairs "
               "(0-1 loss). They hold evaluation noise only; with two seeds or more, each comparison's last row is the "
               "mean over seeds with a Student-t interval over seeds, which holds the training randomness too: "
               "the verdict to quote.")
    try:
        rows = study_comparison_rows(data)
    except (KeyError, TypeError, ValueError) as exc:
        st.info(f"Comparisons not available in this result ({type(exc).__name__}: {exc}).")
        rows = []
    if rows:
        st.dataframe(rows, hide_index=True, key="study_theory_table")
    _figures(STUDY_FIGURES, data, {})
    for label, arm_rows in ((data.get("summary") or {}).get("arms") or {}).items():
        for r in arm_rows:
            if r.get("assumption_verdict"):
                st.caption(f"{label}, seed {r['seed']}: Assumption 4.4 over the members, per ordering: "
                           f"{r['assumption_verdict']}")
    with st.expander("Raw result (JSON)"):
        st.json(data, expanded=False)


def _figures(builders: dict[str, Any], data: dict[str, Any], titles: dict[str, str]) -> None:
    """Each figure the stored result can draw; one line naming what is missing for each it cannot (an older or
    partial result)."""
    for key, builder in builders.items():
        try:
            fig = builder(data)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            st.info(f"{titles.get(key, key)}: not available in this result ({type(exc).__name__}: {exc}).")
            continue
        st.plotly_chart(fig, key=f"theory_{key}")


def _results(artifact: Any) -> None:
    try:
        data = json.loads(artifact.data_json)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (ValueError, TypeError) as exc:
        st.error(f"The stored theory result could not be read ({exc}).")
        return
    st.subheader("Results")
    ds, model = data.get("dataset") or {}, data.get("model") or {}
    st.caption(f"Stored {artifact.created_at:%Y-%m-%d %H:%M} UTC - {model.get('defense', '?')} x"
               f"{model.get('num_members', '?')} on {ds.get('name', '?')}, {ds.get('curvature_examples', '?')} "
               f"curvature examples, pair pool {ds.get('pair_pool', '?')} ({ds.get('split', '?')})")
    _headline(data)
    _verdicts(data)
    for note in data.get("notes") or []:
        st.info(note)
    titles = {"curvature": "Curvature per member", "pair_distances": "Ambiguous-pair distances",
              "conditions": "Assumption 4.4 conditions", "per_ordering": "Condition 1 per ordering",
              "zero_one": "0-1 loss: single vs ensembles"}
    _figures(FIGURES, data, titles)
    with st.expander("Raw result (JSON)"):
        st.json(data, expanded=False)


def main() -> None:
    try:
        runs = _succeeded_runs()
    except Exception as exc:  # no database, bad URL, missing tables ...
        st.error(f"Cannot read the experiment store: {type(exc).__name__}: {exc}")
        return
    if not runs:
        st.info("No succeeded runs yet. Train a run first (Launch page or `igat train`), then come back.")
        return
    by_id = {r.id: r for r in runs}
    wanted = st.query_params.get("run")
    ids = list(by_id)
    index = ids.index(int(wanted)) if wanted and wanted.isdigit() and int(wanted) in by_id else 0
    run_id = st.selectbox("Run", ids, index=index, format_func=lambda i: _label(by_id[i]), key="theory_run")
    st.query_params["run"] = str(run_id)
    run = by_id[run_id]
    if run.kind == "study":
        _study_results(run)
        return
    if not run.checkpoint_path:
        st.warning("This run has no checkpoint path recorded; the theory task needs one.")

    params = _params_form()
    if params is not None:
        _submit(run_id, params)

    try:
        artifact, pending, latest = _theory_state(run_id)
    except Exception as exc:
        st.error(f"Cannot read theory results: {type(exc).__name__}: {exc}")
        return
    if pending:
        st.info(f"{len(pending)} theory task(s) queued or running for this run.")
    if latest is not None and latest.status == "failed":
        st.warning(f"The latest theory task (run #{latest.id}) failed: {latest.error or 'no error message'}")
    if artifact is None:
        st.info("No theory results for this run yet. Submit the form above to compute them.")
        return
    _results(artifact)


main()
