"""Plotly figures of a stored ``run_diagnostics`` result (used by the dashboard's Theory page).

Each builder takes the result dict and returns a ``plotly.graph_objects.Figure``; a missing or
malformed section raises KeyError/TypeError/ValueError, which the page turns into a message.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from igat.theory.constants import P_THRESHOLD  # torch-free: the dashboard process must not import torch
from igat.theory.seed_summary import comparisons_over_seeds  # torch-free too


def _bars_from_histogram(h: dict[str, Any]) -> tuple[list[float], list[int], list[float]]:
    edges, counts = h["edges"], h["counts"]
    if len(edges) != len(counts) + 1:
        raise ValueError("histogram edges/counts mismatch")
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    return centres, counts, widths


def _step_trace(edges: list[float], counts: list[int], name: str, dash: str | None = None) -> go.Scatter:
    """A histogram drawn as a step line: readable when many distributions overlap."""
    return go.Scatter(x=edges, y=list(counts) + [counts[-1]], mode="lines", line_shape="hv", name=name,
                      line={"dash": dash} if dash else None)


def _common_bins(groups: list[list[float]], bins: int) -> list[float]:
    lo = min(min(g) for g in groups)
    hi = max(max(g) for g in groups)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return [lo + (hi - lo) * i / bins for i in range(bins + 1)]


def _count(values: list[float], edges: list[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    width = (edges[-1] - edges[0]) / (len(edges) - 1)
    for v in values:
        counts[min(len(counts) - 1, max(0, int((v - edges[0]) / width)))] += 1
    return counts


def curvature_figure(result: dict[str, Any], include_ensembles: bool = True, bins: int = 30) -> go.Figure:
    """Histograms (step lines, common log10 bins) of lambda_f(x, delta) per member and ensemble output;
    a reference checkpoint's members are drawn dashed."""
    cur = result["curvature"]
    sections = [("", cur, None)]
    if result.get("reference"):
        sections.append(("reference ", result["reference"]["curvature"], "dash"))
    raw: list[tuple[str, list[float], str | None]] = []
    stored: list[tuple[str, dict[str, Any], str | None]] = []
    for prefix, section, dash in sections:
        for name, d in section["targets"].items():
            if name.startswith("ensemble_") and not include_ensembles:
                continue
            values = [math.log10(v) for v in d.get("values") or [] if v is not None and v > 0]
            if values:
                raw.append((f"{prefix}{name}", values, dash))
            elif d["histogram"]["counts"]:
                stored.append((f"{prefix}{name}", d["histogram"], dash))
    if not raw and not stored:
        raise ValueError("no finite curvature values")
    fig = go.Figure()
    if raw:
        edges = _common_bins([v for _, v, _ in raw], bins)
        for name, values, dash in raw:
            fig.add_trace(_step_trace(edges, _count(values, edges), name, dash))
    for name, h, dash in stored:  # results without raw values: their own (log10) bins
        fig.add_trace(_step_trace(h["edges"], h["counts"], name, dash))
    fig.update_layout(title=f"Loss curvature eq. (2), delta = {cur['delta_mode']}, eps = {cur['eps']:.4g}",
                      xaxis_title="log10 lambda_f(x, delta)", yaxis_title="examples")
    return fig


def pair_distance_figure(result: dict[str, Any]) -> go.Figure:
    """Histogram of the kept ambiguous-pair distances and of each example's nearest other-class distance."""
    pr = result["pairs"]
    fig = go.Figure()
    for key, label in (("nearest_other_class", "nearest other-class neighbour (all pool examples)"),
                       ("distances", f"kept pairs ({pr['num_pairs']})")):
        h = pr[key]["histogram"]
        if h["counts"]:
            centres, counts, widths = _bars_from_histogram(h)
            fig.add_trace(go.Bar(x=centres, y=counts, width=widths, name=label, opacity=0.6))
    if pr.get("tau") is not None:
        fig.add_vline(x=pr["tau"], line_dash="dash", annotation_text="threshold")
    fig.update_layout(barmode="overlay", title=f"Cross-class L2 distances ({pr['split']} pool of {pr['pool_size']})",
                      xaxis_title="L2 distance", yaxis_title="count")
    return fig


def conditions_figure(result: dict[str, Any]) -> go.Figure:
    """Condition 1 / condition 2 fractions per member and ensemble vs the 42.5 % line."""
    cond = result["conditions"]
    names = list(cond["targets"])
    fig = go.Figure()
    for key, label in (("condition1", "condition 1 (estimated p)"), ("condition2", "condition 2"),
                       ("both", "both")):
        fig.add_trace(go.Bar(x=names, y=[cond["targets"][n][key] for n in names], name=label))
    fig.add_hline(y=P_THRESHOLD, line_dash="dash", line_color="red", annotation_text="p = 42.5 %")
    fig.update_layout(barmode="group", title=f"Assumption 4.4 on ambiguous pairs (J = {cond['J']:g})",
                      yaxis_title="fraction", yaxis_range=[0, 1.05])
    return fig


def zero_one_figure(result: dict[str, Any]) -> go.Figure:
    """0-1 loss on A(D): single models vs two-member average / max ensembles with CI bars."""
    z = result["zero_one"]
    if not z:
        raise ValueError("no 0-1 loss section (fewer than 2 members or no pairs)")
    keys = ["single", "average", "max"]
    means = [z[k]["mean"] for k in keys]
    err_hi = [z[k]["high"] - z[k]["mean"] for k in keys]
    err_lo = [z[k]["mean"] - z[k]["low"] for k in keys]
    fig = go.Figure(go.Bar(x=["single member", "2-member average", "2-member max"], y=means,
                           error_y={"type": "data", "array": err_hi, "arrayminus": err_lo, "visible": True}))
    fig.update_layout(title=f"0-1 loss on ambiguous pairs ({z['num_pairs']} pairs, {z['ci_method']} "
                            f"{z['confidence']:.0%} CI)", yaxis_title="0-1 loss", yaxis_range=[0, 1.05])
    return fig


def per_ordering_figure(result: dict[str, Any]) -> go.Figure:
    """How many orderings reach each p (share of members meeting condition 1) vs the 42.5 % the
    assumption asks of every ordering."""
    a = result["conditions"]["assumption"]
    if not a or not a.get("n_orderings"):
        raise ValueError("no per-ordering verdict in this result (older result or no pairs)")
    counts = a["condition1"]["histogram"]
    m = len(counts) - 1
    xs = [k / m for k in range(m + 1)]
    colors = ["#2ca02c" if x >= P_THRESHOLD else "#d62728" for x in xs]
    fig = go.Figure(go.Bar(x=xs, y=counts, marker_color=colors, width=0.8 / m,
                           hovertemplate="p = %{x:.2f}: %{y} orderings<extra></extra>"))
    fig.add_vline(x=P_THRESHOLD, line_dash="dash", line_color="red", annotation_text="42.5 %")
    c1 = a["condition1"]
    fig.update_layout(title=f"Condition 1 per ordering over {a['n_models']} members: "
                            f"{c1['share_of_orderings_meeting']:.0%} of {a['n_orderings']} orderings reach 42.5 % "
                            f"(pooled p {c1['pooled_p']:.3f})",
                      xaxis_title="p = share of members meeting condition 1", yaxis_title="orderings",
                      xaxis_range=[-0.05, 1.05])
    return fig


FIGURES = {
    "curvature": curvature_figure,
    "pair_distances": pair_distance_figure,
    "conditions": conditions_figure,
    "per_ordering": per_ordering_figure,
    "zero_one": zero_one_figure,
}


# --- a study's arms side by side (``igat.theory.study`` results) -----------------------------------
def _arm_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [(label, r) for label, seeds in result["summary"]["arms"].items() for r in seeds]
    if not rows:
        raise ValueError("no arm diagnosed")
    return rows


def study_curvature_figure(result: dict[str, Any]) -> go.Figure:
    """Mean curvature over members (and of the average ensemble) per arm, one bar group per seed."""
    rows = _arm_rows(result)
    fig = go.Figure()
    for seed in sorted({r["seed"] for _, r in rows}):
        sub = [(label, r) for label, r in rows if r["seed"] == seed]
        fig.add_trace(go.Bar(x=[label for label, _ in sub], y=[r["curvature_members_mean"] for _, r in sub],
                             name=f"seed {seed}: members"))
        fig.add_trace(go.Bar(x=[label for label, _ in sub], y=[r["curvature_ensemble_average"] for _, r in sub],
                             name=f"seed {seed}: average ensemble", opacity=0.6))
    p = result["params"]
    fig.update_layout(barmode="group", yaxis_title="mean lambda_f(x, delta)",
                      title=f"Loss curvature eq. (2) per arm ({p['num_examples']} test examples, delta {p['delta_mode']})")
    return fig


def study_pair_loss_figure(result: dict[str, Any], combiner: str = "average") -> go.Figure:
    """The whole ensemble's 0-1 loss on the closest cross-class pairs per arm, bootstrap intervals over pairs."""
    rows = _arm_rows(result)
    fig = go.Figure()
    for seed in sorted({r["seed"] for _, r in rows}):
        sub = [(label, r["ensemble_pair_loss"][combiner]) for label, r in rows if r["seed"] == seed]
        fig.add_trace(go.Bar(x=[label for label, _ in sub], y=[v["mean"] for _, v in sub], name=f"seed {seed}",
                             error_y={"type": "data", "visible": True, "array": [v["high"] - v["mean"] for _, v in sub],
                                      "arrayminus": [v["mean"] - v["low"] for _, v in sub]}))
    n = rows[0][1]["ensemble_pair_loss"][combiner]["n"]
    fig.update_layout(barmode="group", yaxis_title="0-1 loss", yaxis_range=[0, 1.05],
                      title=f"Ensemble ({combiner}) 0-1 loss on the {n} closest cross-class test pairs (95 % CI over pairs)")
    return fig


def study_comparison_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per comparison and seed: paired differences with intervals over examples or pairs and verdicts (a
    table); with two seeds or more, one more row per comparison: the mean over seeds with its t interval, which
    holds the training randomness (computed here for results stored before it was part of the summary)."""
    comparisons = result["summary"]["comparisons"]
    over = result["summary"].get("over_seeds") or comparisons_over_seeds(comparisons)
    out = []
    for name, seeds in comparisons.items():
        for r in seeds:
            cur = r["curvature"].get("members_mean") or {}
            row = {"comparison": name.replace("_minus_", " - "), "seed": str(r["seed"]),
                   "curvature (members)": _diff_text(cur), "curvature verdict": cur.get("verdict")}
            for comb, v in r["ensemble_pair_loss"].items():
                row[f"0-1 loss on pairs ({comb})"] = _diff_text(v)
                row[f"{comb} verdict"] = v.get("verdict")
            out.append(row)
        o = over.get(name)
        if o and len(o["seeds"]) >= 2:
            row = {"comparison": name.replace("_minus_", " - "), "seed": f"mean of {len(o['seeds'])} seeds (t interval)",
                   "curvature (members)": _seeds_text(o["curvature_members"]),
                   "curvature verdict": o["curvature_members"]["verdict"]}
            for comb, v in o["ensemble_pair_loss"].items():
                row[f"0-1 loss on pairs ({comb})"] = _seeds_text(v)
                row[f"{comb} verdict"] = v["verdict"]
            out.append(row)
    return out


def _diff_text(v: dict[str, Any]) -> str:
    if v.get("mean") is None:
        return "n/a"
    return f"{v['mean']:+.4g} [{v['low']:+.4g}, {v['high']:+.4g}] (n={v['n']})"


def _seeds_text(v: dict[str, Any]) -> str:
    if v.get("mean") is None or v.get("low") is None:
        return "n/a"
    return f"{v['mean']:+.4g} [{v['low']:+.4g}, {v['high']:+.4g}] (sd {v['sd']:.3g})"


STUDY_FIGURES = {"study_curvature": study_curvature_figure, "study_pair_loss": study_pair_loss_figure}
