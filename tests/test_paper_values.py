"""The paper's Tables 1-3 as data (igat.paper_values): labelled, complete, and consistent with each other."""

from __future__ import annotations

import pytest

from igat import paper_values as P

ATTACKS = {"natural", "pgd", "cw", "signhunter", "autoattack"}


def test_the_values_are_labelled_as_the_papers():
    t = P.paper_tables()
    assert "Deng & Mu" in t["source"] and "NeurIPS 2023" in t["source"]
    assert "not measured by iGAT Lab" in t["note"]
    for n in (1, 2, 3):
        assert t[f"table{n}"]["source"] == f"Deng & Mu, NeurIPS 2023, Table {n}"
    assert P.paper_label("cifar10") == "paper (8 x ResNet-20, CIFAR-10)"
    assert P.paper_label("cifar100") == "paper (8 x ResNet-20, CIFAR-100)"


def test_lookups_return_the_printed_numbers():
    assert P.table1_accuracy("adp", False, "cifar10", "average", "pgd") == 39.63
    assert P.table1_accuracy("adp", True, "cifar10", "average", "pgd") == 46.27
    assert P.table1_accuracy("dverge", True, "cifar100", "max", "autoattack") == 13.89
    assert P.table1_accuracy("trs", False, "cifar10", "max", "signhunter") == 37.12
    assert P.table2_improvement("adp", "cifar10", "average", "pgd") == 16.75
    assert P.table2_improvement("cldl", "cifar100", "average", "autoattack") == -7.47
    assert P.table3_accuracy("hard", "pgd") == 44.21
    assert P.table3_accuracy("igat", "natural") == 84.96
    cell = P.paper_cell("adp", "cifar10", "average", "pgd")
    assert cell.difference == pytest.approx(6.64)
    assert cell.ablations == {"opposite": 41.31, "random": 42.60, "hard": 44.21, "beta0": 42.32, "igat": 46.25}


def test_what_the_paper_did_not_report_is_none():
    assert P.table1_accuracy("trs", True, "cifar10", "average", "pgd") is None  # no iGAT_TRS
    assert P.table1_accuracy("adp", False, "synthetic", "average", "pgd") is None
    assert P.table1_accuracy("adp", False, "cifar10", "average", "fgsm") is None
    assert P.table2_improvement("gal", "cifar10", "average", "pgd") is None
    assert P.table3_accuracy("hard", "pgd", combiner="max") is None  # Table 3 is the average combiner only
    assert P.table3_accuracy("hard", "cw") is None
    empty = P.paper_cell("standard", "cifar10", "average", "pgd")
    assert empty.empty and empty.difference is None


def test_table1_is_complete():
    t1 = P.paper_tables()["table1"]["values"]
    assert set(t1) == {"cifar10", "cifar100"}
    for dataset, methods in t1.items():
        assert len(methods) == 10, dataset
        for method, combiners in methods.items():
            assert set(combiners) == {"average", "max"}, method
            for values in combiners.values():
                assert set(values) == ATTACKS and all(0 < v < 100 for v in values.values())


def test_table2_agrees_with_table1():
    """Table 2 is (iGAT - original) / original x 100 of Table 1: every printed entry agrees to rounding, which
    also guards the transcription of both tables."""
    t = P.paper_tables()
    methods = {name: m for name, m in t["methods"].items() if not m["igat"]}
    checked = 0
    for dataset, rows in t["table2"]["values"].items():
        for method, combiners in rows.items():
            defense = methods[method]["defense"]
            for combiner, values in combiners.items():
                for attack, printed in values.items():
                    base = P.table1_accuracy(defense, False, dataset, combiner, attack)
                    igat = P.table1_accuracy(defense, True, dataset, combiner, attack)
                    assert printed == pytest.approx(100 * (igat - base) / base, abs=0.06), (dataset, method, attack)
                    checked += 1
    assert checked == 2 * 4 * 2 * 5
