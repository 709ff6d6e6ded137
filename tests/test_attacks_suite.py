"""The evaluation attack suite: CW-Linf, SignHunter, AutoAttack (plus PGD/FGSM contracts).

A tiny two-member CNN ensemble is trained once per module, without any defense, on synthetic
8x8 data; attacks run through the ensemble's combiner log-output, in eval mode, as in evaluation.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from igat.attacks import ATTACKS, build_attack, signhunter
from igat.attacks.autoattack import AutoAttackParams, build_autoattack, package_version
from igat.attacks.pgd import pgd
from igat.evaluation import evaluate_ensemble
from tests.helpers import tiny_trained_ensemble

EPS = 8 / 255
# The synthetic classes differ by strong low-frequency patterns; 12/255 makes "far below" unambiguous.
STRONG_EPS = 12 / 255
# Cheap but real settings per attack, for the contract tests.
FAST_PARAMS = {
    "fgsm": {},
    "pgd": {"steps": 5},
    "cw": {"steps": 5},
    "signhunter": {"max_queries": 50},
    "autoattack": {"version": "custom", "attacks": ["apgd-ce", "square"], "n_iter": 5, "n_queries": 20},
}


@pytest.fixture(scope="module")
def trained():
    """(ensemble, test x, test y): undefended, natural accuracy ~0.9 on 4 synthetic classes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only contend on a shared machine
    ens, vx, vy = tiny_trained_ensemble(0)
    yield ens, vx, vy
    torch.set_num_threads(threads)


def _acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_new_attacks_are_registered():
    assert {"cw", "signhunter", "autoattack"} <= set(ATTACKS.names())


@pytest.mark.parametrize("combiner", ["average", "max"])
@pytest.mark.parametrize("name", sorted(FAST_PARAMS))
def test_attack_contract(trained, name, combiner):
    """Inside the eps-ball and [0, 1], labels untouched, deterministic for a fixed seed."""
    ens, x, y = trained
    x, y = x[:16], y[:16]
    x_before, y_before = x.clone(), y.clone()
    attack = build_attack(name, {**FAST_PARAMS[name], "eps": EPS})
    with ens.frozen():
        model = ens.as_model(combiner)
        a = attack.perturb(model, x, y, torch.Generator().manual_seed(3)).x_adv
        b = attack.perturb(model, x, y, torch.Generator().manual_seed(3)).x_adv
    assert a.shape == x.shape
    assert (a - x).abs().max() <= EPS + 1e-6
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(y, y_before) and torch.equal(x, x_before)
    assert torch.equal(a, b)


def test_autoattack_leaves_global_rng_alone(trained):
    ens, x, y = trained
    state = torch.get_rng_state()
    with ens.frozen():
        build_attack("autoattack", FAST_PARAMS["autoattack"]).perturb(ens.as_model("average"), x[:8], y[:8])
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    "name,params",
    [("pgd", {"steps": 20}), ("cw", {"steps": 20}), ("autoattack", {"version": "fast", "n_iter": 20})],
)
def test_white_box_attacks_drive_accuracy_far_below_natural(trained, name, params):
    ens, x, y = trained
    with ens.frozen():
        model = ens.as_model("average")
        natural = _acc(model, x, y)
        attack = build_attack(name, {**params, "eps": STRONG_EPS})
        adv = attack.perturb(model, x, y, torch.Generator().manual_seed(0)).x_adv
        robust = _acc(model, adv, y)
    assert natural >= 0.85
    assert robust <= natural - 0.4, (name, natural, robust)


class CountingModel(nn.Module):
    """Counts, per call, how many examples the model scored (the honest query count)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.scored = 0

    def forward(self, x):
        self.scored += len(x)
        return self.model(x)


def test_signhunter_lowers_accuracy_within_its_budget(trained):
    ens, x, y = trained
    budget = 200
    with ens.frozen():
        counted = CountingModel(ens.as_model("average"))
        natural = _acc(counted.model, x, y)
        res = build_attack("signhunter", {"max_queries": budget, "eps": STRONG_EPS}).perturb(counted, x, y)
        robust = _acc(counted.model, res.x_adv, y)
    queries = res.stats["queries"]
    assert robust <= natural - 0.3, (natural, robust)
    assert queries.shape == (len(x),) and queries.dtype == torch.long
    assert int(queries.max()) <= budget and int(queries.min()) >= 1
    assert int(queries.sum()) == counted.scored  # every scoring call is counted, nothing else
    # Early stop: examples fooled by the attack stop before the budget and are reported.
    assert len(res.stats["queries_success"]) > 0
    assert float(res.stats["queries_success"].float().median()) < budget


def test_signhunter_clean_misclassified_cost_one_query_and_tiny_budgets(trained):
    ens, x, y = trained
    with ens.frozen():
        model = ens.as_model("average")
        wrong = model(x).argmax(1) != y
        x_adv, queries, fooled = signhunter(model, x, y, EPS, max_queries=1)
        assert torch.equal(x_adv, x) and bool((queries == 1).all())
        assert torch.equal(fooled, wrong)
        _, queries, _ = signhunter(model, x, y, EPS, max_queries=2)
        assert int(queries.max()) == 2 and bool((queries[wrong] == 1).all())


def test_signhunter_rejects_bad_params():
    with pytest.raises(ValidationError, match="max_queries"):
        build_attack("signhunter", {"max_queries": 0})
    with pytest.raises(ValueError, match="max_queries"):
        signhunter(lambda v: v, torch.zeros(1, 3, 2, 2), torch.zeros(1, dtype=torch.long), max_queries=0)


def test_evaluation_reports_signhunter_query_statistics(trained):
    ens, x, y = trained
    rows = evaluate_ensemble(ens, x[:32], y[:32], ["average"], [{"name": "signhunter", "params": {"max_queries": 60}}],
                             batch_size=16, per_member=False)
    extra = rows[0].extra
    assert {"queries_mean", "queries_median", "queries_max"} <= set(extra)
    assert 1 <= extra["queries_median"] <= extra["queries_max"] <= 60
    assert extra["max_queries"] == 60  # the same in both batches: reported once


def test_our_pgd_matches_torchattacks_pgd(trained):
    torchattacks = pytest.importorskip("torchattacks")
    ens, x, y = trained
    with ens.frozen():
        model = ens.as_model("average")
        ours = pgd(model, x, y, eps=STRONG_EPS, step_size=2 / 255, steps=10, random_start=False)
        theirs = torchattacks.PGD(model, eps=STRONG_EPS, alpha=2 / 255, steps=10, random_start=False)(x, y)
        acc_ours, acc_theirs = _acc(model, ours, y), _acc(model, theirs, y)
        # The evaluation attack ("pgd") exits per example at the first misclassified iterate, while
        # torchattacks reports the final iterate only: same trajectory, so it can only fool more, never fewer.
        evaluation = build_attack("pgd", {"eps": STRONG_EPS, "step_size": 2 / 255, "steps": 10, "random_start": False})
        acc_eval = _acc(model, evaluation(model, x, y), y)
    # The functional pgd (final iterate, as adversarial training uses it) agrees with torchattacks.
    assert abs(acc_ours - acc_theirs) <= 0.01, (acc_ours, acc_theirs)
    assert acc_eval <= acc_theirs, (acc_eval, acc_theirs)
    assert acc_ours < _acc(model, x, y) - 0.3  # the comparison is not between two no-ops


def test_autoattack_standard_version_builds_the_four_standard_attacks(trained):
    ens, _, _ = trained
    params = AutoAttackParams()
    assert params.version == "standard" and params.eps == pytest.approx(8 / 255)
    aa = build_autoattack(ens.as_model("average"), params, num_classes=10, device="cpu")
    assert list(aa.attacks_to_run) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert aa.norm == "Linf" and aa.epsilon == pytest.approx(8 / 255)
    assert aa.apgd.n_restarts == 1 and aa.apgd.n_iter == 100
    assert aa.apgd_targeted.n_target_classes == 9 and aa.fab.n_target_classes == 9
    assert aa.square.n_queries == 5000
    # Fewer classes than the standard 9 targets: capped at C - 1.
    assert build_autoattack(ens.as_model("average"), params, num_classes=4, device="cpu").fab.n_target_classes == 3


def test_autoattack_reports_the_package_and_version(trained):
    ens, x, y = trained
    with ens.frozen():
        res = build_attack("autoattack", FAST_PARAMS["autoattack"]).perturb(ens.as_model("average"), x[:4], y[:4])
    assert res.stats["implementation"] == f"pyautoattack {package_version()}"
    assert package_version().startswith("0.")
    assert res.stats["version"] == "custom" and res.stats["attacks"] == "apgd-ce,square"


@pytest.mark.parametrize(
    "params,field",
    [({"version": "custom"}, "attacks"), ({"version": "fast", "attacks": ["square"]}, "attacks"),
     ({"n_iter": 10}, "n_iter"), ({"version": "custom", "attacks": ["pgd"]}, "attacks")],
)
def test_autoattack_params_are_validated(params, field):
    with pytest.raises(ValidationError, match=field):
        AutoAttackParams(**params)


def test_cw_defaults_follow_the_paper_protocol():
    cw = build_attack("cw")
    assert cw.params.num_examples == 1000 and cw.params.eps == pytest.approx(8 / 255)


def test_cw_is_capped_to_equidistant_examples(trained):
    ens, x, y = trained
    rows = evaluate_ensemble(ens, x[:40], y[:40], ["average"],
                             [{"name": "natural"}, {"name": "cw", "params": {"steps": 2, "num_examples": 10}}],
                             batch_size=16, per_member=True, member_attacks=["natural"])
    by = {(r.target, r.attack): r for r in rows}
    assert by[("ensemble", "natural")].num_examples == 40
    assert by[("ensemble", "cw")].num_examples == 10
    assert ("member_0", "cw") not in by and by[("member_1", "natural")].num_examples == 40
