"""Plotly figures for the dashboard (pure functions of DataFrames, so they are unit-testable).

Every figure takes a ``uirevision``: Plotly keeps the user's zoom/pan/legend state across
updates as long as that value stays the same, which is what lets live charts refresh every few
seconds without resetting the view.
"""

from __future__ import annotations

import re

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

# Display order and short labels of evaluation attacks (the paper's column order).
ATTACK_ORDER = ["natural", "fgsm", "pgd", "cw", "cw_opt", "signhunter", "sh", "square", "autoattack", "aa", "apgd_ce",
                "apgd_t", "fab", "mdi2fgsm", "si2fgsm"]
ATTACK_LABELS = {"natural": "Natural", "fgsm": "FGSM", "pgd": "PGD", "cw": "CW", "cw_opt": "CW-opt", "signhunter": "SH",
                 "sh": "SH", "autoattack": "AA", "aa": "AA", "square": "Square", "apgd_ce": "APGD-CE", "apgd_t": "APGD-T",
                 "fab": "FAB", "pgd_strength": "PGD-100 probe"}

MEMBER_ACC_RE = re.compile(r"_member_\d+$")


def attack_label(name: str) -> str:
    return ATTACK_LABELS.get(name, name)


def attack_sort_key(name: str) -> tuple[int, str]:
    return (ATTACK_ORDER.index(name) if name in ATTACK_ORDER else len(ATTACK_ORDER), name)


def _empty(title: str, message: str, uirevision: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, uirevision=uirevision, height=320,
                      annotations=[{"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
                                    "x": 0.5, "y": 0.5}])
    return fig


def is_accuracy(name: str) -> bool:
    return "acc" in name


def line_chart(df: pd.DataFrame, x: str, title: str, y_title: str, uirevision: str,
               hidden: set[str] | None = None, smoothing: float = 0.0) -> go.Figure:
    """One line per metric name; ``smoothing`` in [0, 1) is an EMA factor (0 = raw)."""
    if df.empty:
        return _empty(title, "no points yet", uirevision)
    fig = go.Figure()
    for name, part in df.sort_values(x).groupby("name", sort=True):
        ys = part["value"]
        if smoothing > 0:
            ys = ys.ewm(alpha=1 - smoothing).mean()
        fig.add_trace(go.Scatter(x=part[x], y=ys, mode="lines+markers" if len(part) < 30 else "lines", name=name,
                                 visible="legendonly" if hidden and name in hidden else True))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y_title, uirevision=uirevision, height=380,
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 50, "b": 10})
    return fig


def loss_curves(metrics: pd.DataFrame, uirevision: str, smoothing: float = 0.0) -> go.Figure:
    """Per-step loss components (every step metric except accuracies and the learning rate)."""
    part = metrics[(metrics["scope"] == "step") & ~metrics["name"].map(is_accuracy) & (metrics["name"] != "lr")]
    return line_chart(part, "step", "Loss components (per step)", "value", uirevision, smoothing=smoothing)


def accuracy_curves(metrics: pd.DataFrame, uirevision: str) -> go.Figure:
    """Accuracies per epoch (test natural/PGD probes, training accuracies); per-member lines start hidden."""
    acc = metrics[metrics["name"].map(is_accuracy)]
    part = acc[acc["scope"] == "epoch"]
    x = "epoch"
    if part.empty:  # no finished epoch yet: fall back to the per-step training accuracies
        part, x = acc[acc["scope"] == "step"], "step"
    part = part.assign(value=part["value"] * 100.0)
    hidden = {n for n in part["name"].unique() if MEMBER_ACC_RE.search(n)}
    fig = line_chart(part, x, f"Accuracies (per {x}, %)", "accuracy (%)", uirevision, hidden=hidden)
    return fig


def panel_domains(panels: int, gap: float) -> list[list[float]]:
    """The x extents (fractions of the plot width) of ``panels`` side-by-side panels ``gap`` apart."""
    width = (1.0 - gap * (panels - 1)) / panels
    return [[i * (width + gap), i * (width + gap) + width] for i in range(panels)]


def _panel_title(text: str, domain: list[float]) -> dict:
    return {"text": text, "showarrow": False, "xref": "paper", "yref": "paper", "x": (domain[0] + domain[1]) / 2,
            "y": 1.0, "xanchor": "center", "yanchor": "bottom"}


def aggregate_accuracy(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean/std/count of accuracy (in %) over seeds for each key combination, and the error bar of each:
    ``err_plus`` / ``err_minus`` = the std over several seeds, or a single run's 95 % Wilson interval around
    its accuracy (from ``num_examples``; none without it); ``err_kind`` says which."""
    from igat.stats import wilson_of_accuracy

    g = df.groupby(keys, dropna=False)
    out = pd.DataFrame({"mean": g["accuracy"].mean() * 100.0, "std": g["accuracy"].std(ddof=1).fillna(0.0) * 100.0,
                        "n": g["accuracy"].count()})
    examples = (g["num_examples"].first() if "num_examples" in df.columns
                else pd.Series(float("nan"), index=out.index))
    plus, minus, kind = [], [], []
    for (mean, std, n), ex in zip(out[["mean", "std", "n"]].itertuples(index=False), examples, strict=True):
        if n > 1:
            plus.append(std), minus.append(std), kind.append("std over seeds")
        elif pd.notna(ex) and ex > 0:
            lo, hi = wilson_of_accuracy(mean / 100.0, int(ex))
            plus.append(100 * hi - mean), minus.append(mean - 100 * lo), kind.append(f"95% Wilson, n={int(ex)}")
        else:
            plus.append(0.0), minus.append(0.0), kind.append("")
    return out.assign(err_plus=plus, err_minus=minus, err_kind=kind).reset_index()


def error_bar_note(agg: pd.DataFrame) -> str:
    """What the error bars of an ``aggregate_accuracy`` frame are, for a chart title: only what the data has
    ("mean ± std over 3 seeds" never for single runs)."""
    seeds = sorted(int(n) for n in agg.loc[agg["n"] > 1, "n"].unique())
    parts = []
    if seeds:
        count = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        parts.append(f"mean ± std over {count} seeds")
    single = agg[agg["n"] == 1]
    if not single.empty:
        wilson = single["err_kind"].str.startswith("95% Wilson").any()
        parts.append(("one run each" if not seeds else "a single run")
                     + (": its 95 % Wilson interval" if wilson else ", no error bar"))
    return "; ".join(parts)


def robustness_bars(df: pd.DataFrame, uirevision: str, group: str = "method") -> go.Figure:
    """Grouped bars: accuracy under each attack, one bar per ``group`` value, one panel per combiner.

    Built as plain trace dicts rather than with ``px.bar``: for fifty runs plotly express took 0.9 s to build the
    same figure (one trace per group and panel, the legend entry on the first), this 0.14 s (2-core CPU, busy)."""
    if df.empty:
        return _empty("Accuracy under attack", "no evaluation results", uirevision)
    agg = aggregate_accuracy(df, ["combiner", group, "attack"])
    agg["attack_label"] = agg["attack"].map(attack_label)
    agg[group] = agg[group].astype(str)
    attacks = [attack_label(a) for a in sorted(agg["attack"].unique(), key=attack_sort_key)]
    groups = sorted(agg[group].unique(), key=run_sort_key)  # "#9 ..." before "#10 ..."
    combiners = sorted(agg["combiner"].astype(str).unique())
    domains = panel_domains(len(combiners), 0.03)
    colours = dict(zip(groups, distinct_colours(len(groups)), strict=True))
    order = {label: i for i, label in enumerate(attacks)}
    hover = (f"{group}: %{{fullData.name}}<br>attack: %{{x}}<br>accuracy: %{{y:.2f}} %<br>n: %{{customdata[0]}}, "
             "std: %{customdata[1]:.2f}<br>error bar: %{customdata[2]}<extra></extra>")
    agg = agg.assign(_order=agg["attack_label"].map(order)).sort_values("_order", kind="stable")
    traces, in_legend = [], set()
    for panel, combiner in enumerate(combiners):
        axis = "" if panel == 0 else str(panel + 1)
        for name, part in agg[agg["combiner"].astype(str) == combiner].groupby(group, sort=False):
            # plain dicts and lists: validated once, by go.Figure, not per trace and again when added
            traces.append({
                "type": "bar", "x": part["attack_label"].tolist(), "y": part["mean"].tolist(), "name": name,
                "legendgroup": name, "showlegend": name not in in_legend, "marker": {"color": colours[name]},
                "offsetgroup": name, "alignmentgroup": "bars", "xaxis": "x" + axis, "yaxis": "y" + axis,
                "error_y": {"type": "data", "array": part["err_plus"].tolist(), "arrayminus": part["err_minus"].tolist()},
                "customdata": list(zip(part["n"].tolist(), part["std"].round(2).tolist(), part["err_kind"].tolist(),
                                       strict=True)),
                "hovertemplate": hover})
            in_legend.add(name)
    traces.sort(key=lambda t: (run_sort_key(t["name"]), t["xaxis"]))  # legend in group order, as the colours
    axes = {}
    for panel, domain in enumerate(domains):
        axis = "" if panel == 0 else str(panel + 1)
        axes["xaxis" + axis] = {"domain": domain, "anchor": "y" + axis, "title": {"text": "attack"},
                                "categoryorder": "array", "categoryarray": attacks}
        axes["yaxis" + axis] = ({"anchor": "x", "title": {"text": "accuracy (%)"}, "range": [0, 100]} if panel == 0
                                else {"anchor": "x" + axis, "matches": "y", "showticklabels": False, "range": [0, 100]})
    layout = many_legend_layout(len(groups), 420)
    layout["legend"] = {**layout["legend"], "title": {"text": group}, "tracegroupgap": 0}
    fig = go.Figure(traces)
    fig.update_layout(title=f"Accuracy under attack ({error_bar_note(agg)})", barmode="group", uirevision=uirevision,
                      annotations=[_panel_title(f"combiner: {c}", d) for c, d in zip(combiners, domains, strict=True)],
                      **axes, **layout)
    return fig


def alloc_area(stats: pd.DataFrame, uirevision: str) -> go.Figure:
    """Stacked bars of how many adversarial examples iGAT gave each member per epoch. Bars, not an area: an
    area needs two epochs to draw anything, so a one-epoch run showed an empty chart."""
    part = stats[(stats["statistic"] == "alloc_count") & (stats["member"] >= 0)].copy()
    if part.empty:
        return _empty("Adversarial examples allocated per member", "no alloc_count statistics", uirevision)
    part = part.sort_values(["member", "epoch"])
    part["member"] = "member " + part["member"].astype(int).astype(str)
    fig = px.bar(part, x="epoch", y="value", color="member", barmode="stack",
                 labels={"value": "examples allocated"}, title="Adversarial examples allocated per member")
    fig.update_layout(uirevision=uirevision, height=380)
    fig.update_xaxes(dtick=1)
    return fig


def rank_hist(stats: pd.DataFrame, epoch: int, uirevision: str) -> go.Figure:
    """Histogram of the rank of the member that received each distributed example (member = -1 rows)."""
    part = stats[(stats["member"] == -1) & stats["statistic"].str.startswith("rank_hist_") & (stats["epoch"] == epoch)].copy()
    if part.empty:
        return _empty("Rank histogram", "no rank_hist statistics", uirevision)
    part["rank"] = part["statistic"].str.removeprefix("rank_hist_").astype(int)
    part = part.sort_values("rank")
    fig = px.bar(part, x="rank", y="value", labels={"value": "examples", "rank": "rank of the receiving member"},
                 title=f"Rank of the receiving member (epoch {epoch})")
    fig.update_layout(uirevision=uirevision, height=340)
    fig.update_xaxes(dtick=1)
    return fig


def member_accuracy(stats: pd.DataFrame, uirevision: str) -> go.Figure:
    """nat_acc and adv_acc of each member over epochs (solid = natural, dashed = adversarial)."""
    part = stats[stats["statistic"].isin(["nat_acc", "adv_acc"]) & (stats["member"] >= 0)]
    if part.empty:
        return _empty("Member accuracy", "no nat_acc / adv_acc statistics", uirevision)
    fig = go.Figure()
    palette = px.colors.qualitative.Plotly
    for (member, stat), p in part.sort_values("epoch").groupby(["member", "statistic"]):
        fig.add_trace(go.Scatter(x=p["epoch"], y=p["value"] * 100.0, mode="lines+markers",
                                 name=f"member {member} {stat}", legendgroup=f"m{member}",
                                 line={"dash": "dash" if stat == "adv_acc" else "solid",
                                       "color": palette[int(member) % len(palette)]}))
    fig.update_layout(title="Member accuracy: natural (solid) vs adversarial (dashed)", xaxis_title="epoch",
                      yaxis_title="accuracy (%)", uirevision=uirevision, height=380)
    return fig


def class_heatmap(stats: pd.DataFrame, epoch: int, uirevision: str) -> go.Figure:
    """Per-class allocation: rows = members, columns = classes, at one epoch."""
    part = stats[stats["statistic"].str.startswith("alloc_class_") & (stats["epoch"] == epoch) & (stats["member"] >= 0)].copy()
    if part.empty:
        return _empty("Per-class allocation", "no alloc_class statistics", uirevision)
    part["class"] = part["statistic"].str.removeprefix("alloc_class_").astype(int)
    grid = part.pivot_table(index="member", columns="class", values="value", aggfunc="sum").sort_index()
    grid = grid.reindex(sorted(grid.columns), axis=1)
    fig = px.imshow(grid.values, x=[str(c) for c in grid.columns], y=[f"member {m}" for m in grid.index],
                    labels={"x": "class", "y": "member", "color": "examples"}, text_auto=True, aspect="auto",
                    color_continuous_scale="Blues", title=f"Per-class allocation (epoch {epoch})")
    fig.update_layout(uirevision=uirevision, height=max(260, 60 + 40 * len(grid)))
    return fig


def member_robustness(df: pd.DataFrame, uirevision: str) -> go.Figure:
    """Final-evaluation accuracy of each member under each attack (EvalResult target member_<i>)."""
    if df.empty:
        return _empty("Per-member robustness", "no per-member evaluation", uirevision)
    part = df.copy()
    part["attack_label"] = part["attack"].map(attack_label)
    part["accuracy (%)"] = part["accuracy"] * 100.0
    attacks = sorted(part["attack"].unique(), key=attack_sort_key)
    fig = px.bar(part, x="target", y="accuracy (%)", color="attack_label", barmode="group",
                 category_orders={"attack_label": [attack_label(a) for a in attacks]},
                 labels={"target": "member", "attack_label": "attack"}, title="Per-member robustness (final evaluation)")
    fig.update_layout(uirevision=uirevision, height=380)
    fig.update_yaxes(range=[0, 100])
    return fig


def ablation_bars(df: pd.DataFrame, uirevision: str, variant_order: list[str] | None = None) -> go.Figure:
    """Table 3 as bars: accuracy per ablation variant, one colour per attack, panel per combiner."""
    if df.empty:
        return _empty("Ablation", "no evaluation results", uirevision)
    agg = aggregate_accuracy(df, ["combiner", "variant", "attack"])
    attacks = sorted(agg["attack"].unique(), key=attack_sort_key)
    agg["attack"] = agg["attack"].map(attack_label)
    present = list(agg["variant"].unique())
    order = [v for v in (variant_order or []) if v in present] + sorted(v for v in present if v not in (variant_order or []))
    fig = px.bar(agg, x="variant", y="mean", color="attack", barmode="group", facet_col="combiner",
                 error_y="err_plus", error_y_minus="err_minus",
                 category_orders={"variant": order, "attack": [attack_label(a) for a in attacks]},
                 labels={"mean": "accuracy (%)", "variant": "variant"},
                 title=f"Ablation ({error_bar_note(agg)})")
    fig.update_layout(uirevision=uirevision, height=400)
    fig.update_yaxes(range=[0, 100])
    return fig


# --- several runs on one chart ------------------------------------------------------------------------------

X_AXES = ("step", "epoch", "wall time")
# Legend entries beyond which a chart's legend moves to the right of the plot and the chart grows in height.
LEGEND_BELOW_MAX = 6


def _template_colourway() -> list[str]:
    """The colours the active Plotly template draws categories in (Streamlit's theme in the dashboard process)."""
    import plotly.io as pio

    try:
        way = pio.templates[pio.templates.default].layout.colorway
    except (KeyError, ValueError, AttributeError):
        way = None
    return list(way or px.colors.qualitative.Plotly)


def distinct_colours(n: int) -> list[str]:
    """``n`` colours that stay distinguishable: the template's own colourway first (so a few runs look as every
    other chart on the page, and an exported PNG as the page), then the 24 of Dark24 and the 26 of Alphabet;
    beyond those, hues spread evenly around the wheel at two lightnesses."""
    named = [*_template_colourway(), *px.colors.qualitative.Dark24, *px.colors.qualitative.Alphabet]
    unique = list(dict.fromkeys(c.lower() for c in named))
    if n <= len(unique):
        return unique[:n]
    out = []
    for i in range(n):
        hue = (i * 360 / n) % 360
        light = 38 if i % 2 else 55
        out.append(f"hsl({hue:.0f}, 70%, {light}%)")
    return out


def run_sort_key(label: str) -> tuple[int, str]:
    """Legend order of run labels: by the run number (#9 before #10), not as text."""
    match = re.match(r"#(\d+)", str(label))
    return (int(match.group(1)) if match else 1 << 62, str(label))


def many_legend_layout(entries: int, base_height: int) -> dict:
    """Layout for a chart with ``entries`` legend items: below the plot when few; to the right, in one column,
    with the chart growing so every entry stays readable, when many."""
    if entries <= LEGEND_BELOW_MAX:
        return {"height": base_height, "legend": {"orientation": "h", "y": -0.2}}
    return {"height": max(base_height, 120 + 21 * entries),
            "legend": {"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1.0, "yanchor": "top"},
            "margin": {"r": 10}}


def series_x(series: pd.DataFrame, scope: str, x: str) -> tuple[pd.DataFrame, str, int]:
    """The x values of one metric's points: ``step``; ``epoch`` (a per-step metric at its fraction of the epoch);
    ``wall time`` (minutes since the run's first recorded point; points stored before times were recorded are
    dropped). Returns the points with an ``x`` column, the axis title and how many points had no time."""
    if series.empty:
        return series.assign(x=pd.Series(dtype=float)), x, 0
    df = series.copy()
    if x == "wall time":
        stamped = pd.to_datetime(df["recorded_at"], utc=True, errors="coerce")
        missing = int(stamped.isna().sum())
        df = df.assign(_t=stamped)[stamped.notna()]
        first = df.groupby("run_id")["_t"].transform("min")
        return df.assign(x=(df["_t"] - first).dt.total_seconds() / 60.0).drop(columns="_t"), "wall time (minutes)", missing
    if scope == "epoch" and x == "step":  # a per-epoch metric has one point per epoch: its x is the epoch
        return df.assign(x=df["epoch"]), "epoch", 0
    if x == "epoch" and scope == "step":
        # steps per epoch from the run's own points: the last step logged in its first epoch
        first_epoch = df[df["epoch"] == df.groupby("run_id")["epoch"].transform("min")]
        per_epoch = first_epoch.groupby("run_id")["step"].max() / first_epoch.groupby("run_id")["epoch"].max()
        return df.assign(x=df["step"] / df["run_id"].map(per_epoch).clip(lower=1)), "epoch", 0
    return df.assign(x=df["epoch"] if x == "epoch" else df["step"]), x, 0


def overlay_curves(series: pd.DataFrame, labels: dict[int, str], metric: str, scope: str, x: str, uirevision: str,
                   smoothing: float = 0.0, title: str | None = None) -> tuple[go.Figure, int]:
    """One metric of several runs, one line each (legend by run number, distinct colours). Accuracies are shown
    in %. Returns the figure and the number of points left out of a wall-time axis (no recorded time)."""
    name = f"{metric} (per {scope})"
    if series.empty:
        return _empty(title or name, "no points for this metric yet", uirevision), 0
    pts, x_title, missing = series_x(series, scope, x)
    scale = 100.0 if is_accuracy(metric) else 1.0
    runs = sorted(pts["run_id"].unique(), key=lambda r: run_sort_key(labels.get(int(r), f"#{r}")))
    colours = distinct_colours(len(runs))
    fig = go.Figure()
    for colour, rid in zip(colours, runs, strict=True):
        part = pts[pts["run_id"] == rid].sort_values("x")
        ys = part["value"] * scale
        if smoothing > 0 and scope == "step":
            ys = ys.ewm(alpha=1 - smoothing).mean()
        fig.add_trace(go.Scatter(x=part["x"], y=ys, name=labels.get(int(rid), f"#{rid}"), line={"color": colour},
                                 mode="lines+markers" if len(part) < 30 else "lines"))
    fig.update_layout(title=title or f"{name}, {len(runs)} run(s)", xaxis_title=x_title,
                      yaxis_title=f"{metric} (%)" if scale != 1.0 else metric, uirevision=uirevision,
                      **many_legend_layout(len(runs), 400))
    return fig, missing
