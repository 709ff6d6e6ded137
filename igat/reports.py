"""The paper's result tables from a tidy results frame (pure: DataFrame in, DataFrame/str out).

Input: a pandas DataFrame with columns ``method``, ``seed``, ``combiner``, ``attack``,
``accuracy`` (fractions in [0, 1] by default, ``unit="percent"`` for %), optionally ``target``
(only "ensemble" rows are used) and ``variant`` (iGAT ablations; Table 3). ``igat eval`` writes
such rows (eval.csv) and the dashboard builds the same frame from the database.

* Table 1 -- mean +- std over seeds; rows = method (display names ADP / iGAT_ADP, paper order),
  columns = combiner x attack; per column the best mean is marked ``best`` (bold) and the
  second best ``second`` (underlined), compared at the two decimals shown. Ablation runs
  (variant other than full) are left out.
* Table 2 -- relative improvement of iGAT_X over X: (iGAT - original) / original x 100, from
  the seed means, per combiner x attack, +- propagated from Table 1's +-; marked "n.d." (not
  distinguishable) when the two accuracies' intervals overlap.
* Table 3 -- ablations of one iGAT method: rows = variant (opposite / random / hard / beta = 0 /
  full), columns = natural / PGD (mean +- std), best marked.

Uncertainty ("+-", columns ``pm``, ``pm_kind``, ``lo``, ``hi``): with several seeds the sample std over
seeds (interval mean +- std); with one seed, when the frame has ``num_examples``, the 95 % Wilson
interval of that run's accuracy over its test examples (:mod:`igat.stats`; "+-" is its half-width,
marked with a dagger). Without either there is no "+-".

``table1``/``table2``/``table3`` return tidy frames; ``render_table1/2/3(frame, fmt)`` turn them
into "csv" (tidy, numeric), "markdown" or "latex" (the paper's layout) text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import pandas as pd

from igat.stats import overlap, wilson

Unit = Literal["fraction", "percent"]
Format = Literal["csv", "markdown", "latex"]

METHOD_LABELS = {
    "adp": "ADP", "gal": "GAL", "trs": "TRS", "dverge": "DVERGE", "cldl": "CLDL", "soe": "SoE",
    "pgd_at": "PGD-AT", "standard": "Standard",
}
# Table 1's row order (CIFAR-10 block); unknown methods follow alphabetically.
METHOD_ORDER = ["TRS", "GAL", "SoE", "iGAT_SoE", "CLDL", "iGAT_CLDL", "DVERGE", "iGAT_DVERGE", "ADP", "iGAT_ADP"]
TABLE2_ORDER = ["ADP", "DVERGE", "SoE", "CLDL"]
ATTACK_LABELS = {
    "natural": "Natural", "pgd": "PGD", "cw": "CW", "cw_opt": "CW-opt", "signhunter": "SH", "autoattack": "AA",
    "fgsm": "FGSM", "pgd_strength": "PGD-100 probe",
}
ATTACK_ORDER = ["natural", "pgd", "cw", "cw_opt", "signhunter", "autoattack"]
COMBINER_LABELS = {"average": "Average", "max": "Max", "soe": "SoE"}
COMBINER_ORDER = ["average", "max", "soe"]
VARIANT_LABELS = {
    "opposite": "Opposite distributing", "opposite_argmin": "Opposite (argmin) distributing",
    "random": "Random distributing", "hard": "Hard distributing", "beta0": "β = 0", "full": "full iGAT",
}
VARIANT_LATEX = {"beta0": r"$\beta = 0$"}
VARIANT_ORDER = ["opposite", "opposite_argmin", "random", "hard", "beta0", "full"]
MAIN_VARIANTS = ("", "full")
REQUIRED = ("method", "seed", "combiner", "attack", "accuracy")


# --- preparation ------------------------------------------------------------------------------

def display_method(name: str) -> str:
    """``adp`` -> ``ADP``, ``iGAT_adp`` -> ``iGAT_ADP``; already-pretty names are unchanged."""
    name = str(name)
    if name.lower().startswith("igat_"):
        return "iGAT_" + display_method(name[5:])
    return METHOD_LABELS.get(name.lower(), name)


def _order(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    values = list(dict.fromkeys(values))
    known = [v for v in preferred if v in values]
    return known + sorted(v for v in values if v not in preferred)


def _prepare(df: pd.DataFrame, unit: Unit, keep_variants: Sequence[str] | None) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"results frame is missing column(s) {', '.join(missing)}; needs {', '.join(REQUIRED)}")
    if unit not in ("fraction", "percent"):
        raise ValueError(f"unit must be 'fraction' or 'percent', got {unit!r}")
    out = df.copy()
    if "target" in out.columns:
        out = out[out["target"].fillna("ensemble").isin(["ensemble", ""])]
    out["variant"] = out["variant"].fillna("").astype(str) if "variant" in out.columns else ""
    if keep_variants is not None:
        out = out[out["variant"].isin(list(keep_variants))]
    out["method"] = out["method"].map(display_method)
    out["accuracy"] = out["accuracy"].astype(float) * (100.0 if unit == "fraction" else 1.0)
    out["seed"] = out["seed"].fillna(-1)
    return out


def _sum_or_nan(values: pd.Series) -> float:
    return values.sum(min_count=1)


def _seed_stats(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, sample std and count over seeds (several rows of one seed are averaged first), the test examples
    per seed and the uncertainty columns (:func:`_uncertainty`)."""
    data = df.assign(w_n=pd.to_numeric(df["num_examples"], errors="coerce") if "num_examples" in df.columns
                     else float("nan"))
    data = data.assign(w_correct=data["accuracy"] / 100.0 * data["w_n"])
    per_seed = data.groupby([*keys, "seed"], sort=False, dropna=False).agg(
        accuracy=("accuracy", "mean"), w_n=("w_n", _sum_or_nan), w_correct=("w_correct", _sum_or_nan)).reset_index()
    stats = per_seed.groupby(keys, sort=False, dropna=False).agg(
        mean=("accuracy", "mean"), std=("accuracy", "std"), n=("accuracy", "count"), examples=("w_n", "mean"),
        w_correct=("w_correct", "first"), w_n=("w_n", "first")).reset_index()
    return _uncertainty(stats)


def _uncertainty(stats: pd.DataFrame) -> pd.DataFrame:
    """pm / pm_kind / lo / hi: mean +- std over several seeds, else a single run's 95 % Wilson interval (%)."""
    pm, kind, lo, hi = [], [], [], []
    for r in stats.itertuples(index=False):
        if r.n > 1 and not math.isnan(r.std):
            pm.append(r.std), kind.append("std"), lo.append(r.mean - r.std), hi.append(r.mean + r.std)
        elif r.n == 1 and not math.isnan(r.w_n) and r.w_n > 0:
            w_lo, w_hi = wilson(r.w_correct, int(r.w_n))
            pm.append(50.0 * (w_hi - w_lo)), kind.append("wilson"), lo.append(100 * w_lo), hi.append(100 * w_hi)
        else:
            pm.append(float("nan")), kind.append(""), lo.append(float("nan")), hi.append(float("nan"))
    return stats.drop(columns=["w_correct", "w_n"]).assign(pm=pm, pm_kind=kind, lo=lo, hi=hi)


def _marks(stats: pd.DataFrame, column_keys: list[str], second: bool = True) -> pd.Series:
    """'best' / 'second' per column group, comparing means at the two decimals shown."""
    marks = pd.Series("", index=stats.index, dtype=object)
    for _, group in stats.groupby(column_keys, sort=False):
        shown = group["mean"].round(2)
        distinct = sorted(shown.dropna().unique(), reverse=True)
        if not distinct:
            continue
        marks[shown.index[shown == distinct[0]]] = "best"
        if second and len(distinct) > 1:
            marks[shown.index[shown == distinct[1]]] = "second"
    return marks


def _sort(frame: pd.DataFrame, orders: dict[str, Sequence[str]]) -> pd.DataFrame:
    for col, order in orders.items():
        cats = _order(frame[col].tolist(), order)
        frame[col] = pd.Categorical(frame[col], categories=cats, ordered=True)
    frame = frame.sort_values(list(orders)).reset_index(drop=True)
    for col in orders:
        frame[col] = frame[col].astype(str)
    return frame


# --- the tables --------------------------------------------------------------------------------

def table1(df: pd.DataFrame, unit: Unit = "fraction") -> pd.DataFrame:
    """Tidy Table 1: method, combiner, attack, mean, std, n, mark (accuracies in %)."""
    data = _prepare(df, unit, MAIN_VARIANTS)
    stats = _seed_stats(data, ["method", "combiner", "attack"])
    stats["mark"] = _marks(stats, ["combiner", "attack"])
    return _sort(stats, {"combiner": COMBINER_ORDER, "attack": ATTACK_ORDER, "method": METHOD_ORDER})[
        ["method", "combiner", "attack", "mean", "std", "n", "mark", "pm", "pm_kind", "lo", "hi", "examples"]
    ]


def _distinguishable(lo_a: float, hi_a: float, lo_b: float, hi_b: float) -> bool | None:
    """False when the intervals overlap, True when they do not, None when one is unknown."""
    if any(math.isnan(v) for v in (lo_a, hi_a, lo_b, hi_b)):
        return None
    return not overlap((lo_a, hi_a), (lo_b, hi_b))


def table2(df: pd.DataFrame, unit: Unit = "fraction") -> pd.DataFrame:
    """Tidy Table 2: method (the base X), combiner, attack, original, igat, improvement (%), improvement_pm
    (first-order propagation of Table 1's +-) and distinguishable (False: the two intervals overlap)."""
    t1 = table1(df, unit)
    base = t1[~t1["method"].str.startswith("iGAT_")]
    igat = t1[t1["method"].str.startswith("iGAT_")].assign(method=lambda f: f["method"].str[5:])
    merged = base.merge(igat, on=["method", "combiner", "attack"], suffixes=("_orig", "_igat"))
    out = pd.DataFrame({
        "method": merged["method"], "combiner": merged["combiner"], "attack": merged["attack"],
        "original": merged["mean_orig"], "igat": merged["mean_igat"],
    })
    denom = out["original"].where(out["original"] != 0)
    out["improvement"] = (out["igat"] - out["original"]) / denom * 100.0
    # d/d(igat) = 100 / original, d/d(original) = -100 igat / original^2
    out["improvement_pm"] = 100.0 * ((merged["pm_igat"] / denom) ** 2
                                     + (out["igat"] * merged["pm_orig"] / denom ** 2) ** 2) ** 0.5
    out["distinguishable"] = pd.Series(
        [_distinguishable(*v) for v in zip(merged["lo_orig"], merged["hi_orig"], merged["lo_igat"],
                                           merged["hi_igat"], strict=True)], index=out.index, dtype=object)
    if out.empty:
        return out
    return _sort(out, {"combiner": COMBINER_ORDER, "attack": ATTACK_ORDER, "method": TABLE2_ORDER})


def ablation_methods(df: pd.DataFrame) -> list[str]:
    """Methods (display names) that have ablation variants besides the full one."""
    if "variant" not in df.columns:
        return []
    v = df.assign(variant=df["variant"].fillna("").astype(str), method=df["method"].map(display_method))
    return sorted(v.loc[~v["variant"].isin(MAIN_VARIANTS), "method"].unique())


def table3(df: pd.DataFrame, method: str | None = None, combiner: str = "average",
           attacks: Sequence[str] = ("natural", "pgd"), unit: Unit = "fraction") -> pd.DataFrame:
    """Tidy Table 3: variant, attack, mean, std, n, mark ('best') for one iGAT method."""
    if "variant" not in df.columns:
        raise ValueError("Table 3 needs a 'variant' column (opposite / random / hard / beta0 / full)")
    data = _prepare(df, unit, None)
    data = data[(data["variant"] != "") & (data["combiner"] == combiner) & data["attack"].isin(list(attacks))]
    methods = sorted(data["method"].unique())
    if method is None:
        if len(methods) != 1:
            raise ValueError(f"method: choose one of {', '.join(methods) or '(no ablation results)'}")
        method = methods[0]
    method = display_method(method)
    data = data[data["method"] == method]
    if data.empty:
        raise ValueError(f"method: no ablation results for {method!r} with combiner {combiner!r}")
    stats = _seed_stats(data, ["variant", "attack"])
    stats["mark"] = _marks(stats, ["attack"], second=False)
    stats.insert(0, "method", method)
    return _sort(stats, {"attack": list(attacks), "variant": VARIANT_ORDER})[
        ["method", "variant", "attack", "mean", "std", "n", "mark", "pm", "pm_kind", "lo", "hi", "examples"]
    ]


# --- rendering ---------------------------------------------------------------------------------

def _num(v: float, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _mean_std(row: pd.Series, fmt: Format) -> str:
    """"mean ± std" over seeds; a single run: "mean ± half-width†" of its Wilson interval; else the mean."""
    text = _num(row["mean"])
    kind = row.get("pm_kind", "std" if row["n"] > 1 else "")
    pm = row.get("pm", row["std"])
    if kind in ("std", "wilson") and not math.isnan(pm):
        text += (r" $\pm$ " if fmt == "latex" else " ± ") + _num(pm)
        if kind == "wilson":
            text += r"$^\dagger$" if fmt == "latex" else "†"
    return text


PM_NOTE = "± = std over seeds; † = one run: half-width of the 95 % Wilson interval over its test examples"


def _decorate(text: str, mark: str, fmt: Format) -> str:
    if mark == "best":
        return rf"\textbf{{{text}}}" if fmt == "latex" else f"**{text}**"
    if mark == "second":
        return rf"\underline{{{text}}}" if fmt == "latex" else f"<u>{text}</u>"
    return text


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("±", r"$\pm$"),
                 ("†", r"$^\dagger$")):
        text = text.replace(a, b)
    return text


def _latex_method(name: str) -> str:
    if name.startswith("iGAT_"):
        return rf"iGAT$_{{\mathrm{{{_latex_escape(name[5:])}}}}}$"
    return _latex_escape(name)


def _grid(rows: list[str], groups: list[tuple[str, list[str]]], cells: dict[tuple[str, str, str], str],
          fmt: Format, row_header: str, caption: str, row_label=None, group_suffix: str = "") -> str:
    """Render a row x (group, column) grid of ready-made cell texts (LaTeX adds ``group_suffix`` to group heads)."""
    row_label = row_label or (lambda r: r)
    if fmt == "markdown":
        header = [row_header] + [f"{g} {c}".strip() for g, cols in groups for c in cols]
        lines = [f"**{caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows:
            vals = [cells.get((r, g, c), "") for g, cols in groups for c in cols]
            lines.append("| " + " | ".join([row_label(r), *vals]) + " |")
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        ncols = sum(len(cols) for _, cols in groups)
        lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_escape(caption)}}}",
                 r"\begin{tabular}{l" + "c" * ncols + "}", r"\toprule"]
        if any(g for g, _ in groups):
            heads, rules, start = [], [], 2
            for g, cols in groups:
                heads.append(rf"\multicolumn{{{len(cols)}}}{{c}}{{{_latex_escape(g + group_suffix)}}}")
                rules.append(rf"\cmidrule(lr){{{start}-{start + len(cols) - 1}}}")
                start += len(cols)
            lines.append(" & " + " & ".join(heads) + r" \\")
            lines.append(" ".join(rules))
        lines.append(_latex_escape(row_header) + " & "
                     + " & ".join(_latex_escape(c) for _, cols in groups for c in cols) + r" \\")
        lines.append(r"\midrule")
        for r in rows:
            vals = [cells.get((r, g, c), "") for g, cols in groups for c in cols]
            lines.append(" & ".join([row_label(r), *vals]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"fmt must be 'csv', 'markdown' or 'latex', got {fmt!r}")


def _check_fmt(fmt: str) -> None:
    if fmt not in ("csv", "markdown", "latex"):
        raise ValueError(f"fmt must be 'csv', 'markdown' or 'latex', got {fmt!r}")


def _combiner_groups(t: pd.DataFrame) -> list[tuple[str, list[str]]]:
    groups = []
    for comb in dict.fromkeys(t["combiner"]):
        attacks = list(dict.fromkeys(t.loc[t["combiner"] == comb, "attack"]))
        groups.append((COMBINER_LABELS.get(comb, comb), [ATTACK_LABELS.get(a, a) for a in attacks]))
    return groups


def render_table1(t1: pd.DataFrame, fmt: Format = "markdown") -> str:
    _check_fmt(fmt)
    if fmt == "csv":
        return t1.to_csv(index=False)
    caption = ("Table 1: accuracy (%) on natural and adversarial examples, mean over seeds (best bold, second "
               f"underlined); {PM_NOTE}")
    cells = {
        (r.method, COMBINER_LABELS.get(r.combiner, r.combiner), ATTACK_LABELS.get(r.attack, r.attack)):
            _decorate(_mean_std(pd.Series(r._asdict()), fmt), r.mark, fmt)
        for r in t1.itertuples(index=False)
    }
    rows = list(dict.fromkeys(t1["method"]))
    label = _latex_method if fmt == "latex" else (lambda m: m)
    return _grid(rows, _combiner_groups(t1), cells, fmt, "Method", caption, label, " combiner (%)")


def _improvement_cell(row: pd.Series, fmt: Format) -> str:
    text = _num(row["improvement"], signed=True)
    pm = row.get("improvement_pm", float("nan"))
    if pm is not None and not (isinstance(pm, float) and math.isnan(pm)):
        text += (r" $\pm$ " if fmt == "latex" else " ± ") + _num(pm)
    if row.get("distinguishable") is False:
        text += " (n.d.)"
    return text


def render_table2(t2: pd.DataFrame, fmt: Format = "markdown") -> str:
    _check_fmt(fmt)
    if fmt == "csv":
        return t2.to_csv(index=False)
    caption = ("Table 2: relative accuracy improvement (%) by iGAT, (iGAT - original) / original x 100, ± propagated "
               "from Table 1; n.d. = not distinguishable (the two accuracies' intervals overlap)")
    cells = {
        (r.method, COMBINER_LABELS.get(r.combiner, r.combiner), ATTACK_LABELS.get(r.attack, r.attack)):
            _improvement_cell(pd.Series(r._asdict()), fmt)
        for r in t2.itertuples(index=False)
    }
    rows = list(dict.fromkeys(t2["method"]))
    label = _latex_method if fmt == "latex" else (lambda m: m)
    return _grid(rows, _combiner_groups(t2), cells, fmt, "Method", caption, label, " combiner")


def render_table3(t3: pd.DataFrame, fmt: Format = "markdown") -> str:
    _check_fmt(fmt)
    if fmt == "csv":
        return t3.to_csv(index=False)
    method = t3["method"].iloc[0] if len(t3) else ""
    caption = f"Table 3: ablation studies of {method} (accuracy %, mean over seeds; best bold); {PM_NOTE}"
    cells = {
        (r.variant, "", f"{ATTACK_LABELS.get(r.attack, r.attack)} (%)"):
            _decorate(_mean_std(pd.Series(r._asdict()), fmt), r.mark, fmt)
        for r in t3.itertuples(index=False)
    }
    rows = list(dict.fromkeys(t3["variant"]))
    columns = [f"{ATTACK_LABELS.get(a, a)} (%)" for a in dict.fromkeys(t3["attack"])]

    def label(v: str) -> str:
        if v == "full":
            return _latex_method(method) if fmt == "latex" else method
        if fmt == "latex":
            return VARIANT_LATEX.get(v, _latex_escape(VARIANT_LABELS.get(v, v)))
        return VARIANT_LABELS.get(v, v)

    return _grid(rows, [("", columns)], cells, fmt, "Variant", caption, label)


__all__ = [
    "ablation_methods", "display_method", "render_table1", "render_table2", "render_table3", "table1", "table2",
    "table3",
]
