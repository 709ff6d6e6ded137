"""Sanity guards against false robustness fire on inconsistent results, stay quiet otherwise."""

from __future__ import annotations

import pandas as pd

from igat.evaluation import EvalRow
from igat.sanity import check_group, check_results, format_flags


def _rows(combiner: str, **acc: float) -> list[dict]:
    return [{"combiner": combiner, "attack": a, "accuracy": v, "target": "ensemble", "method": "adp", "seed": 0}
            for a, v in acc.items()]


def codes(flags) -> set[tuple[str, str]]:
    return {(f.combiner, f.code) for f in flags}


def test_consistent_results_raise_no_flags():
    # Paper Table 1, ADP average combiner: SH above PGD is normal, AA below PGD is normal.
    rows = _rows("average", natural=0.8214, pgd=0.3963, cw=0.3890, signhunter=0.5293, autoattack=0.3553)
    rows += _rows("max", natural=0.8008, pgd=0.3662, cw=0.3460, signhunter=0.4769, autoattack=0.2772)
    assert check_results(rows) == []
    assert check_results(pd.DataFrame(rows)) == []


def test_pgd_above_natural_is_flagged():
    flags = check_results(_rows("average", natural=0.50, pgd=0.55))
    assert codes(flags) == {("average", "pgd_above_natural")}
    assert flags[0].severity == "error" and "above natural" in flags[0].message
    assert flags[0].values == {"natural": 0.50, "pgd": 0.55}


def test_other_attack_above_natural_is_flagged():
    assert codes(check_results(_rows("max", natural=0.5, pgd=0.2, cw=0.6))) == {("max", "attack_above_natural")}


def test_signhunter_clearly_below_pgd_warns_of_gradient_masking():
    flags = check_results(_rows("average", natural=0.8, pgd=0.60, signhunter=0.30))
    assert codes(flags) == {("average", "sh_below_pgd")}
    assert "gradient masking" in flags[0].message
    # A few points below PGD is within the default 5-point margin; above PGD is expected.
    assert check_results(_rows("average", natural=0.8, pgd=0.60, signhunter=0.57)) == []
    assert check_results(_rows("average", natural=0.8, pgd=0.40, signhunter=0.60)) == []
    # The margin is configurable.
    assert codes(check_results(_rows("average", natural=0.8, pgd=0.60, signhunter=0.57), sh_margin=0.01)) == {
        ("average", "sh_below_pgd")}


def test_autoattack_above_pgd_is_flagged():
    flags = check_results(_rows("max", natural=0.8, pgd=0.40, autoattack=0.45))
    assert codes(flags) == {("max", "aa_above_pgd")}
    assert check_results(_rows("max", natural=0.8, pgd=0.40, autoattack=0.41), aa_tolerance=0.02) == []


def test_groups_are_kept_apart_and_percent_units():
    # PGD of seed 1 must not be compared with natural of seed 0.
    rows = [{"combiner": "average", "attack": "natural", "accuracy": 80.0, "seed": 0},
            {"combiner": "average", "attack": "pgd", "accuracy": 40.0, "seed": 0},
            {"combiner": "average", "attack": "natural", "accuracy": 30.0, "seed": 1},
            {"combiner": "average", "attack": "pgd", "accuracy": 35.0, "seed": 1}]
    flags = check_results(rows, percent=True)
    assert len(flags) == 1 and flags[0].context == {"seed": 1}
    assert "35.00%" in flags[0].message and "30.00%" in flags[0].message


def test_eval_rows_and_member_targets():
    rows = [EvalRow("ensemble", "average", "natural", 0.9, 10), EvalRow("ensemble", "average", "pgd", 0.3, 10),
            EvalRow("member_0", "-", "natural", 0.5, 10), EvalRow("member_0", "-", "pgd", 0.6, 10)]
    flags = check_results(rows)
    assert [(f.target, f.code) for f in flags] == [("member_0", "pgd_above_natural")]
    assert check_results(rows, targets=["ensemble"]) == []
    assert "member_0" in format_flags(flags)


def test_check_group_directly():
    assert check_group({"natural": 0.9, "pgd": 0.95}, "average")[0].code == "pgd_above_natural"
    assert check_group({"pgd": 0.4}, "average") == []  # nothing to compare


def test_strength_probe_flags_pgd_overestimating_robustness():
    # The probe's row: accuracy under PGD-20 + PGD-100 restarts, with PGD-20's own accuracy on the same examples.
    probe = {"combiner": "average", "attack": "pgd_strength", "accuracy": 0.40, "target": "ensemble",
             "method": "adp", "seed": 0, "robust_reference_mean": 0.43}
    rows = _rows("average", natural=0.8, pgd=0.44) + [probe]
    flags = check_results(rows)
    assert codes(flags) == {("average", "pgd_overestimates")}
    assert flags[0].values == {"pgd_reference": 0.43, "pgd_strength": 0.40}
    # Within a point: nothing to flag; the margin is configurable.
    assert check_results(_rows("average", natural=0.8) + [{**probe, "accuracy": 0.425}]) == []
    assert codes(check_results(_rows("average", natural=0.8) + [{**probe, "accuracy": 0.425}],
                               strength_margin=0.001)) == {("average", "pgd_overestimates")}
    # The statistic also comes inside ``extra`` (EvalRow, the store) and next to percent accuracies (a fraction).
    row = EvalRow("ensemble", "average", "pgd_strength", 0.40, 200, {"robust_reference_mean": 0.43})
    assert codes(check_results([row])) == {("average", "pgd_overestimates")}
    pct = [{**probe, "accuracy": 40.0}, {**probe, "attack": "natural", "accuracy": 80.0}]
    assert codes(check_results(pct, percent=True)) == {("average", "pgd_overestimates")}
    # A table without the statistic (e.g. an older eval) is not flagged.
    frame = pd.DataFrame(_rows("average", natural=0.8, pgd=0.44, pgd_strength=0.30))
    assert check_results(frame) == []
