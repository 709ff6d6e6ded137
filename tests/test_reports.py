"""Tables 1-3 of the paper from hand-made result frames (arithmetic, marks, rendering)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from igat import reports
from igat.stats import wilson


def _frame() -> pd.DataFrame:
    """Two seeds of ADP, iGAT_ADP and DVERGE; accuracies as fractions, as igat eval writes them."""
    acc = {
        # method: {(combiner, attack): (seed0, seed1)}
        "adp": {("average", "natural"): (0.80, 0.82), ("average", "pgd"): (0.40, 0.38),
                ("max", "natural"): (0.78, 0.80), ("max", "pgd"): (0.35, 0.37)},
        "iGAT_adp": {("average", "natural"): (0.84, 0.86), ("average", "pgd"): (0.46, 0.46),
                     ("max", "natural"): (0.80, 0.80), ("max", "pgd"): (0.36, 0.36)},
        "dverge": {("average", "natural"): (0.85, 0.85), ("average", "pgd"): (0.41, 0.43),
                   ("max", "natural"): (0.84, 0.86), ("max", "pgd"): (0.41, 0.41)},
    }
    rows = []
    for method, cells in acc.items():
        for (combiner, attack), values in cells.items():
            for seed, value in enumerate(values):
                rows.append({"method": method, "seed": seed, "combiner": combiner, "attack": attack,
                             "accuracy": value, "target": "ensemble",
                             "variant": "full" if method.startswith("iGAT") else ""})
    # Rows that must be ignored by Tables 1/2: a member row and an ablation run.
    rows.append({"method": "adp", "seed": 0, "combiner": "-", "attack": "pgd", "accuracy": 0.99, "target": "member_0",
                 "variant": ""})
    rows.append({"method": "iGAT_adp", "seed": 0, "combiner": "average", "attack": "pgd", "accuracy": 0.99,
                 "target": "ensemble", "variant": "hard"})
    return pd.DataFrame(rows)


def _cell(t: pd.DataFrame, method: str, combiner: str, attack: str) -> pd.Series:
    sel = t[(t["method"] == method) & (t["combiner"] == combiner) & (t["attack"] == attack)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_table1_mean_std_over_seeds_in_percent():
    t1 = reports.table1(_frame())
    c = _cell(t1, "ADP", "average", "natural")
    assert c["mean"] == pytest.approx(81.0)
    assert c["std"] == pytest.approx(math.sqrt(2.0))  # sample std of 80, 82
    assert c["n"] == 2
    c = _cell(t1, "iGAT_ADP", "average", "pgd")
    assert c["mean"] == pytest.approx(46.0) and c["std"] == pytest.approx(0.0)
    assert set(t1["method"]) == {"ADP", "iGAT_ADP", "DVERGE"}  # display names
    assert "member_0" not in t1.to_string() and (t1["combiner"] != "-").all()


def test_table1_best_and_second_marks():
    t1 = reports.table1(_frame())
    # average/pgd: iGAT_ADP 46 > DVERGE 42 > ADP 39
    assert _cell(t1, "iGAT_ADP", "average", "pgd")["mark"] == "best"
    assert _cell(t1, "DVERGE", "average", "pgd")["mark"] == "second"
    assert _cell(t1, "ADP", "average", "pgd")["mark"] == ""
    # max/natural: DVERGE 85 > iGAT_ADP 80 > ADP 79
    assert _cell(t1, "DVERGE", "max", "natural")["mark"] == "best"
    assert _cell(t1, "iGAT_ADP", "max", "natural")["mark"] == "second"


def test_table1_ties_share_the_mark_and_percent_input():
    df = pd.DataFrame([
        {"method": m, "seed": 0, "combiner": "average", "attack": "pgd", "accuracy": a}
        for m, a in [("adp", 40.0), ("gal", 40.0), ("trs", 12.0)]
    ])
    t1 = reports.table1(df, unit="percent")
    assert list(t1.sort_values("method")["mark"]) == ["best", "best", "second"]  # ADP, GAL, TRS
    assert _cell(t1, "TRS", "average", "pgd")["mean"] == pytest.approx(12.0)


def test_table1_rows_follow_the_paper_order():
    t1 = reports.table1(_frame())
    assert list(dict.fromkeys(t1["method"])) == ["DVERGE", "ADP", "iGAT_ADP"]
    assert list(dict.fromkeys(t1["combiner"])) == ["average", "max"]


def test_table2_relative_improvement_arithmetic():
    t2 = reports.table2(_frame())
    assert set(t2["method"]) == {"ADP"}  # DVERGE has no iGAT run
    row = _cell(t2, "ADP", "average", "pgd")
    assert row["original"] == pytest.approx(39.0) and row["igat"] == pytest.approx(46.0)
    assert row["improvement"] == pytest.approx((46.0 - 39.0) / 39.0 * 100)
    assert _cell(t2, "ADP", "max", "pgd")["improvement"] == pytest.approx((36.0 - 36.0) / 36.0 * 100)
    assert _cell(t2, "ADP", "max", "natural")["improvement"] == pytest.approx((80.0 - 79.0) / 79.0 * 100)


def test_table2_reproduces_the_papers_adp_numbers():
    # Table 1 -> Table 2 of the paper (average combiner, CIFAR-10, ADP): +3.43 natural, +16.75 PGD.
    df = pd.DataFrame([
        {"method": m, "seed": 0, "combiner": "average", "attack": a, "accuracy": v}
        for m, a, v in [("ADP", "natural", 82.14), ("ADP", "pgd", 39.63),
                        ("iGAT_ADP", "natural", 84.96), ("iGAT_ADP", "pgd", 46.27)]
    ])
    t2 = reports.table2(df, unit="percent")
    assert round(_cell(t2, "ADP", "average", "natural")["improvement"], 2) == 3.43
    assert round(_cell(t2, "ADP", "average", "pgd")["improvement"], 2) == 16.75
    md = reports.render_table2(t2, "markdown")
    assert "+3.43" in md and "+16.75" in md


def test_table3_ablation_rows_and_best():
    df = pd.DataFrame([
        {"method": "iGAT_adp", "seed": s, "combiner": "average", "attack": a, "accuracy": v + 0.002 * s,
         "variant": var}
        for s in (0, 1)
        for var, nat, pgd in [("opposite", 0.8245, 0.4131), ("random", 0.8305, 0.4260), ("hard", 0.8351, 0.4421),
                              ("beta0", 0.8345, 0.4232), ("full", 0.8496, 0.4625)]
        for a, v in [("natural", nat), ("pgd", pgd)]
    ])
    t3 = reports.table3(df)
    assert list(dict.fromkeys(t3["variant"])) == ["opposite", "random", "hard", "beta0", "full"]
    full_pgd = t3[(t3["variant"] == "full") & (t3["attack"] == "pgd")].iloc[0]
    assert full_pgd["mean"] == pytest.approx(46.35) and full_pgd["mark"] == "best"
    assert (t3.loc[t3["variant"] != "full", "mark"] == "").all()
    md = reports.render_table3(t3, "markdown")
    assert "**85.06 ± 0.14**" in md and "**46.35 ± 0.14**" in md and "| Hard distributing | 83.61 ± 0.14 |" in md
    assert "β = 0" in md and "Opposite distributing" in md
    tex = reports.render_table3(t3, "latex")
    assert r"\textbf{" in tex and r"$\beta = 0$" in tex


def test_table3_needs_a_method_when_several_have_ablations():
    df = pd.DataFrame([
        {"method": m, "seed": 0, "combiner": "average", "attack": "pgd", "accuracy": 0.4, "variant": "hard"}
        for m in ("iGAT_adp", "iGAT_dverge")
    ])
    with pytest.raises(ValueError, match="method"):
        reports.table3(df)
    assert reports.table3(df, method="iGAT_dverge")["method"].iloc[0] == "iGAT_DVERGE"
    assert reports.ablation_methods(df) == ["iGAT_ADP", "iGAT_DVERGE"]


def test_rendering_marks_in_markdown_and_latex():
    t1 = reports.table1(_frame())
    md = reports.render_table1(t1, "markdown")
    assert "**46.00 ± 0.00**" in md and "<u>42.00 ± 1.41</u>" in md
    assert md.count("\n| ") == 4  # header + 3 methods
    tex = reports.render_table1(t1, "latex")
    assert r"\textbf{46.00 $\pm$ 0.00}" in tex and r"\underline{42.00 $\pm$ 1.41}" in tex
    assert r"iGAT$_{\mathrm{ADP}}$" in tex and r"\multicolumn{2}{c}{Average combiner (\%)}" in tex
    csv = reports.render_table1(t1, "csv")
    assert csv.splitlines()[0] == "method,combiner,attack,mean,std,n,mark,pm,pm_kind,lo,hi,examples"
    with pytest.raises(ValueError, match="fmt"):
        reports.render_table1(t1, "html")


def _one_seed(values: dict[tuple[str, str], float], n: int = 1000) -> pd.DataFrame:
    """One seed per method (as ``igat eval`` writes it: fractions with the number of examples)."""
    return pd.DataFrame([{"method": m, "seed": 0, "combiner": "average", "attack": a, "accuracy": v,
                          "num_examples": n, "target": "ensemble"} for (m, a), v in values.items()])


def test_single_runs_carry_the_wilson_half_width_and_seeds_their_std():
    t1 = reports.table1(_one_seed({("adp", "pgd"): 0.45, ("iGAT_adp", "pgd"): 0.50}, n=100))
    c = _cell(t1, "ADP", "average", "pgd")
    lo, hi = wilson(45, 100)
    assert c["pm_kind"] == "wilson" and c["examples"] == 100
    assert c["pm"] == pytest.approx(50 * (hi - lo)) and (c["lo"], c["hi"]) == pytest.approx((100 * lo, 100 * hi))
    md = reports.render_table1(t1, "markdown")
    assert f"45.00 ± {50 * (hi - lo):.2f}†" in md and "95 % Wilson" in md
    assert r"$^\dagger$" in reports.render_table1(t1, "latex")
    seeds = reports.table1(_frame())  # several seeds: the std, never the Wilson width
    assert set(seeds["pm_kind"]) == {"std"} and _cell(seeds, "ADP", "average", "natural")["pm"] == pytest.approx(
        math.sqrt(2.0))


def test_table2_marks_overlapping_intervals_as_not_distinguishable():
    # 1,000 examples each: 45 % vs 47 % overlap (+-3.1 points), 45 % vs 55 % do not
    df = _one_seed({("adp", "pgd"): 0.45, ("iGAT_adp", "pgd"): 0.47, ("adp", "natural"): 0.45,
                    ("iGAT_adp", "natural"): 0.55})
    t2 = reports.table2(df)
    assert _cell(t2, "ADP", "average", "pgd")["distinguishable"] is False
    assert _cell(t2, "ADP", "average", "natural")["distinguishable"] is True
    row = _cell(t2, "ADP", "average", "natural")
    t1 = reports.table1(df)
    pm_o, pm_i = _cell(t1, "ADP", "average", "natural")["pm"], _cell(t1, "iGAT_ADP", "average", "natural")["pm"]
    assert row["improvement_pm"] == pytest.approx(100 * math.hypot(pm_i / 45.0, 55.0 * pm_o / 45.0 ** 2))
    md = reports.render_table2(t2, "markdown")
    assert "+4.44 ± " in md and "(n.d.)" in md and md.count("(n.d.)") == 1 and "not distinguishable" in md
    # seeds: intervals mean +- std; ADP max/pgd 36 +- 1.41 vs iGAT 36 +- 0 overlap, average/pgd 39 vs 46 do not
    t2s = reports.table2(_frame())
    assert _cell(t2s, "ADP", "max", "pgd")["distinguishable"] is False
    assert _cell(t2s, "ADP", "average", "pgd")["distinguishable"] is True
    # without examples or seeds there is no interval to compare: neither mark
    bare = reports.table2(_one_seed({("adp", "pgd"): 0.45, ("iGAT_adp", "pgd"): 0.47}).drop(columns="num_examples"))
    assert bare["distinguishable"].iloc[0] is None and "(n.d.)" not in reports.render_table2(bare, "markdown")


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="seed"):
        reports.table1(pd.DataFrame([{"method": "adp", "combiner": "average", "attack": "pgd", "accuracy": 0.4}]))


def test_display_names():
    assert reports.display_method("adp") == "ADP"
    assert reports.display_method("iGAT_soe") == "iGAT_SoE"
    assert reports.display_method("iGAT_ADP") == "iGAT_ADP"
    assert reports.display_method("custom") == "custom"
