"""Several runs' training curves on one chart (Live and Compare): pick the metric, the x axis (step, epoch or
wall time) and the smoothing; one line per run."""

from __future__ import annotations

import streamlit as st
from sqlalchemy.engine import Engine

from app import charts
from app import data as D

# Offered first when present: the curves a robustness researcher looks at most.
PREFERRED = ["test_pgd_acc_average", "test_nat_acc_average", "train_loss", "loss"]


def metric_options(catalog) -> list[tuple[str, str]]:
    """(scope, name) pairs the runs have, preferred metrics first, then epoch metrics, then step metrics."""
    pairs = [(str(s), str(n)) for s, n in zip(catalog["scope"], catalog["name"], strict=True)]

    def order(pair: tuple[str, str]) -> tuple[int, int, str]:
        scope, name = pair
        rank = PREFERRED.index(name) if name in PREFERRED else len(PREFERRED)
        return (rank, 0 if scope == "epoch" else 1, name)

    return sorted(pairs, key=order)


def overlay_section(engine: Engine, run_ids: list[int], labels: dict[int, str], prefix: str, uirevision: str) -> None:
    """Controls and the overlaid chart of ``run_ids`` (widget keys start with ``prefix``)."""
    if not run_ids:
        st.caption("Pick runs to overlay their curves.")
        return
    catalog = D.metric_catalog(engine, run_ids)
    if catalog.empty:
        st.caption("The selected runs have no metric points yet.")
        return
    options = metric_options(catalog)
    cols = st.columns([3, 2, 2])
    picked = cols[0].selectbox("Metric", options, key=prefix + "metric",
                               format_func=lambda p: f"{p[1]} (per {p[0]})",
                               help="every metric the selected runs recorded; per epoch: the end-of-epoch probe and "
                                    "epoch means; per step: the logged training steps")
    x = cols[1].radio("x axis", charts.X_AXES, horizontal=True, key=prefix + "x",
                      help="wall time: minutes since each run's first recorded point")
    smoothing = cols[2].slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key=prefix + "smoothing",
                               help="exponential moving average of per-step curves")
    scope, name = picked
    series = D.load_metric_series(engine, run_ids, name, scope)
    fig, missing = charts.overlay_curves(series, labels, name, scope, x, uirevision, smoothing)
    st.plotly_chart(fig, key=prefix + "chart", width="stretch")
    shown = series["run_id"].nunique() if not series.empty else 0
    note = f"{shown} of {len(run_ids)} selected run(s) have `{name}`"
    if missing:
        note += f"; {missing} point(s) recorded before wall times were stored are not on the wall-time axis"
    st.caption(note + ".")
