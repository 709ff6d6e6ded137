"""The paper's tables and the false-robustness flags for the dashboard, built by ``igat.reports``
and ``igat.sanity`` (the same functions ``igat report`` uses) from the store's evaluation rows.

The only work done here is mapping the store's run labels onto the reports' conventions:
``Run.variant`` holds a label per run of an experiment (``seed3`` for a group of seeds, ``Hard`` /
``beta=0`` / ``iGAT`` for an ablation), while the reports expect an empty variant for ordinary
runs and the ablation slugs (``hard``, ``beta0``, ``full``) for Table 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from igat import reports, sanity
from igat.ablation_variants import variant_slug


def report_frame(evals: pd.DataFrame, experiment_kinds: dict[int, str] | None = None) -> pd.DataFrame:
    """The store's evaluation rows in the reports' format (method, seed, combiner, attack,
    accuracy, num_examples, target, variant). ``experiment_kinds`` maps run_id -> experiment kind; only
    runs of an ablation experiment keep their variant. num_examples gives a single run's accuracy its
    Wilson interval in the tables and the bars."""
    out = evals[["run_id", "method", "seed", "combiner", "attack", "accuracy", "num_examples", "target",
                 "variant"]].copy()
    kinds = experiment_kinds or {}
    out["variant"] = [variant_slug(v) if kinds.get(int(r)) == "ablation" else ""
                      for r, v in zip(out["run_id"], out["variant"])]
    return out


def results_table(evals: pd.DataFrame) -> pd.DataFrame:
    """One run's stored evaluation results for display (also while the evaluation runs: the rows so far):
    target, combiner, attack, accuracy %, its 95 % Wilson interval and the number of examples."""
    from app.charts import attack_sort_key

    if evals.empty:
        return pd.DataFrame(columns=["target", "combiner", "attack", "accuracy %", "95% interval", "examples"])
    frame = evals.assign(_order=evals["attack"].map(attack_sort_key),
                         _member=evals["target"] != "ensemble").sort_values(["_member", "target", "combiner", "_order"])

    def interval(lo: float | None, hi: float | None) -> str:
        return "" if lo is None or pd.isna(lo) or hi is None or pd.isna(hi) else f"{100 * lo:.1f} – {100 * hi:.1f}"

    return pd.DataFrame({
        "target": frame["target"], "combiner": frame["combiner"],
        "attack": frame["attack"].map(lambda a: reports.ATTACK_LABELS.get(a, a)),
        "accuracy %": (frame["accuracy"] * 100).round(2),
        "95% interval": [interval(lo, hi) for lo, hi in zip(frame["ci_low"], frame["ci_high"], strict=True)],
        "examples": frame["num_examples"],
    }).reset_index(drop=True)


@dataclass
class Table:
    tidy: pd.DataFrame  # numeric, one row per cell (CSV export)
    markdown: str  # the paper's layout, best in bold, second underlined
    latex: str


def table1(frame: pd.DataFrame) -> Table:
    t = reports.table1(frame)
    return Table(t, reports.render_table1(t, "markdown"), reports.render_table1(t, "latex"))


def table2(frame: pd.DataFrame) -> Table | None:
    t = reports.table2(frame)
    if t.empty:
        return None
    # On the page a row names both methods it compares; the LaTeX keeps the paper's rows (the base X).
    shown = t.assign(method=[f"iGAT_{m} vs {m}" for m in t["method"]])
    return Table(t, reports.render_table2(shown, "markdown"), reports.render_table2(t, "latex"))


def table3(frame: pd.DataFrame, method: str | None, combiner: str) -> Table:
    t = reports.table3(frame, method=method, combiner=combiner)
    return Table(t, reports.render_table3(t, "markdown"), reports.render_table3(t, "latex"))


def robustness_flags(frame: pd.DataFrame) -> pd.DataFrame:
    """igat.sanity's flags as a table (severity, check, method, seed, combiner, message)."""
    flags = sanity.check_results(frame.drop(columns=["run_id"], errors="ignore"), targets=["ensemble"])
    return pd.DataFrame(
        [{"severity": f.severity, "check": f.code, "method": reports.display_method(f.context.get("method", "")),
          "seed": f.context.get("seed", ""), "combiner": f.combiner, "message": f.message} for f in flags],
        columns=["severity", "check", "method", "seed", "combiner", "message"],
    )
