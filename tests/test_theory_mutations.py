"""Tests that fail for real mistakes in ``igat/theory`` (issue #18).

An independent check applied 28 deliberate mutations to ``igat/theory/``; these 10 survived the
earlier suite. Each test below names the mutation(s) it exists to kill:

 M1  curvature: gradient taken at x - delta instead of x + delta    -> test_curvature_uses_x_plus_delta
 M2  a double softmax inside the cross-entropy                      -> test_member_curvature_matches_closed_form
 M3  cross-entropy on the predicted label instead of y              -> test_sign_delta_ascends_the_loss_of_y,
                                                                       test_member_curvature_matches_closed_form
 M4  a sign-mode delta that descends the loss                       -> test_sign_delta_ascends_the_loss_of_y
 M5  max combiner replaced by average                               -> test_combiners_differ_with_three_classes
 M6  average combiner replaced by min                               -> test_combiners_differ_with_three_classes
 M7  the pair loss using only the first example                     -> test_pair_loss_uses_both_examples
 M8  condition 2 without excluding y                                -> test_condition2_excludes_true_class
 M9  condition 2's bound built from f_y instead of f_yhat           -> test_condition2_bound_uses_predicted_class
 M10 `<` instead of `<=` in condition 1                             -> test_condition1_ties_count_on_both_sides

Beyond the 10: F1 a verdict from the pooled p (-> test_assumption_judged_per_ordering), F2 a bootstrap
that holds the models fixed (-> test_model_and_pair_bootstrap_is_wider_when_models_differ), F3a the
renormalised max-combiner CE (-> test_max_combiner_curvature_is_minus_log_f_y), F3b/F3c a threshold
applied to float32 cdist distances or not re-applied exactly (-> test_pair_exactly_at_threshold_is_kept).

The cases are deliberately non-symmetric (a cubic loss, misclassified examples, C = 3): with a
quadratic loss x - delta and x + delta give the same curvature, and with C = 2 average and max
make the same decision and condition 2 constrains nothing, which is how the mutants survived.
Further tests pin issue #18's smaller fixes: the max combiner's curvature uses the paper's
-log f_y (no renormalisation), a pair exactly at the threshold is kept whatever the chunking,
Assumption 4.4 is judged per ordering, and the bootstrap resamples models as well as pairs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from igat.models.ensemble import Ensemble
from igat.theory.conditions import acceptable_fractions, assumption_verdict, condition2_mask, per_ordering_p
from igat.theory.curvature import curvature_distributions, loss_curvature, make_delta, model_curvature
from igat.theory.pairs import cross_class_pairs
from igat.theory.zero_one import model_and_pair_bootstrap, pair_losses, theorem_check


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _linear(weight: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(weight)
    return lin.eval()


W = torch.tensor([[2.0, -1.0, 0.5], [-1.5, 0.5, 1.0], [0.3, 1.2, -2.0]], dtype=torch.float64)  # C = 3, d = 3


def _ce_grad(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Closed form: d/dx CE(softmax(W x), y) = W^T (softmax(W x) - e_y)."""
    p = (x @ W.T).softmax(dim=1)
    return (p - F.one_hot(y, 3).double()) @ W


# --- curvature ---------------------------------------------------------------------------------

def test_curvature_uses_x_plus_delta():  # M1
    # loss = sum(x^3)/3 has gradient x^2, which differs at x + delta and x - delta
    x = torch.tensor([[0.5, 1.0], [2.0, -1.0]], dtype=torch.float64)
    delta = torch.tensor([[0.3, 0.1], [-0.5, 0.2]], dtype=torch.float64)
    lam = loss_curvature(lambda z: (z**3).sum(1) / 3, x, delta)
    expected = ((x + delta) ** 2 - x**2).norm(dim=1) / delta.norm(dim=1)
    wrong = ((x - delta) ** 2 - x**2).norm(dim=1) / delta.norm(dim=1)
    assert torch.allclose(lam, expected, rtol=1e-12)
    assert not torch.allclose(expected, wrong, rtol=1e-3)


def _points() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([[0.3, 0.6, 0.5], [0.7, 0.2, 0.4], [0.5, 0.5, 0.6], [0.4, 0.8, 0.3]], dtype=torch.float64)
    y = torch.tensor([2, 0, 1, 0])  # labels chosen so that most examples are misclassified by W
    assert ((x @ W.T).argmax(1) != y).sum() >= 2
    return x, y


def test_sign_delta_ascends_the_loss_of_y():  # M3, M4
    x, y = _points()
    eps = 0.05
    delta = make_delta(_linear(W), x, y, "sign", eps)
    assert torch.allclose(delta, eps * _ce_grad(x, y).sign(), atol=1e-12)  # interior points: no clipping
    # the predicted label's gradient points elsewhere for these examples
    assert not torch.allclose(delta, eps * _ce_grad(x, (x @ W.T).argmax(1)).sign(), atol=1e-3)


def test_member_curvature_matches_closed_form():  # M2, M3
    x, y = _points()
    eps = 0.05
    lam = model_curvature(_linear(W), x, y, mode="sign", eps=eps)
    delta = eps * _ce_grad(x, y).sign()
    expected = (_ce_grad(x + delta, y) - _ce_grad(x, y)).norm(dim=1) / delta.norm(dim=1)
    assert torch.allclose(lam, expected, rtol=1e-9)


def test_max_combiner_curvature_is_minus_log_f_y():  # issue #18 point 3
    torch.manual_seed(0)
    w2 = torch.tensor([[-1.0, 2.0, 0.0], [1.0, -1.0, 0.5], [0.5, 0.5, 1.5]], dtype=torch.float64)
    ens = Ensemble([_linear(W), _linear(w2)]).double().eval()
    x, y = _points()
    got = curvature_distributions(ens, x.float().double(), y, mode="random", eps=0.05, combiners=("max",))
    gen = torch.Generator().manual_seed(0)  # the same random delta curvature_distributions draws
    delta = make_delta(ens.as_model("max"), x, y, "random", 0.05, generator=gen)

    def paper_loss(z: torch.Tensor) -> torch.Tensor:  # -log max_m softmax(W_m z)_y, not renormalised
        f = torch.maximum((z @ W.T).softmax(1), (z @ w2.T).softmax(1))
        return -f.gather(1, y[:, None]).squeeze(1).log()

    def renormalised(z: torch.Tensor) -> torch.Tensor:
        f = torch.maximum((z @ W.T).softmax(1), (z @ w2.T).softmax(1))
        return F.cross_entropy(f.log(), y, reduction="none")

    expected = loss_curvature(paper_loss, x, delta)
    assert torch.allclose(got["ensemble_max"], expected, rtol=1e-6)
    assert not torch.allclose(expected, loss_curvature(renormalised, x, delta), rtol=1e-3)


# --- 0-1 loss ----------------------------------------------------------------------------------

def test_combiners_differ_with_three_classes():  # M5, M6
    pairs = torch.tensor([[0, 1]])
    # pair A (y = 0, 1): max gets both right, average both wrong
    y = torch.tensor([0, 1])
    m0 = torch.tensor([[0.60, 0.40, 0.00], [0.10, 0.50, 0.40]])
    m1 = torch.tensor([[0.00, 0.55, 0.45], [0.50, 0.05, 0.45]])
    losses = pair_losses(torch.stack([m0, m1]), y, pairs)
    # x0: average [.30, .475, .225] wrong, max [.60, .55, .45] right
    # x1: average [.30, .275, .425] wrong, max [.50, .50, .45] right (a tie is not an error)
    assert losses["single"].tolist() == [[0.0], [1.0]]
    assert losses["average"].tolist() == [[1.0]]
    assert losses["max"].tolist() == [[0.0]]
    # pair B (y = 0, 2): the average gets x0 wrong where an element-wise min would get it right
    y = torch.tensor([0, 2])
    a = torch.tensor([[0.20, 0.80, 0.00], [0.2, 0.2, 0.6]])
    b = torch.tensor([[0.20, 0.00, 0.80], [0.2, 0.2, 0.6]])
    losses = pair_losses(torch.stack([a, b]), y, pairs)
    # x0: average [.2, .4, .4] wrong, min [.2, 0, 0] right, max [.2, .8, .8] wrong; x1 right for all
    assert losses["average"].tolist() == [[0.5]]
    assert losses["max"].tolist() == [[0.5]]


def test_pair_loss_uses_both_examples():  # M7
    scores = torch.tensor([[[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]])
    y = torch.tensor([0, 1, 2])
    # pair (0, 1): first right, second wrong; pair (1, 2): first wrong, second right
    losses = pair_losses(scores, y, torch.tensor([[0, 1], [1, 2]]))
    assert losses["single"].tolist() == [[0.5, 0.5]]


# --- Assumption 4.4 ----------------------------------------------------------------------------

def test_condition2_excludes_true_class():  # M8
    # misclassified (y = 0, yhat = 1): bound (1 - .6)/2 = .2; f_2 = .1 ok; f_y = .3 is not constrained
    scores = torch.tensor([[0.3, 0.6, 0.1]])
    assert condition2_mask(scores, torch.tensor([0])).tolist() == [True]


def test_condition2_bound_uses_predicted_class():  # M9
    # y = 0, yhat = 1: bound (1 - f_yhat)/2 = .2 < f_2 = .3 -> fails; (1 - f_y)/2 = .45 would pass
    scores = torch.tensor([[0.1, 0.6, 0.3]])
    assert condition2_mask(scores, torch.tensor([0])).tolist() == [False]
    # and the other way round: bound from f_yhat = .5 -> .25 >= f_2 = .2 passes; from f_y = .9... fails
    scores = torch.tensor([[0.3, 0.5, 0.2]])
    assert condition2_mask(scores, torch.tensor([0])).tolist() == [True]


def test_condition1_ties_count_on_both_sides():  # M10
    # J = 4 -> threshold 0.75 exactly (binary fractions): f_{y_i}(x_j) = 0.75 satisfies "<="
    scores = torch.tensor([[0.75, 0.25, 0.0], [0.75, 0.25, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    f = acceptable_fractions(scores, y, torch.tensor([[0, 1]]), j=4.0)
    # ordering (0, 1): f_0(x0) = .75 >= .75 and f_0(x1) = .75 <= .75 -> yes; (1, 0): f_1(x1) = .25 -> no
    assert f.condition1 == pytest.approx(0.5)


def test_assumption_judged_per_ordering():
    # 4 models, 2 pairs (4 orderings), J = 4 (threshold 0.75). The pooled p averages over
    # orderings; the assumption asks p >= 42.5 % for every ordering, and ordering (3, 2) never
    # meets condition 1.
    y = torch.tensor([0, 1, 0, 1])
    good = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.4, 0.6]])  # (0,1), (2,3), (1,0) yes; (3,2) no
    bad = torch.full((4, 2), 0.5)  # unsure everywhere: no ordering
    scores = torch.stack([good, good, bad, bad])
    pairs = torch.tensor([[0, 1], [2, 3]])
    p = per_ordering_p(scores, y, pairs, 4.0)
    assert p.tolist() == [0.5, 0.5, 0.5, 0.0]  # orderings (0,1), (2,3), (1,0), (3,2)
    v = assumption_verdict(scores, y, pairs, 4.0)
    assert v["condition1"]["pooled_p"] == pytest.approx(0.375)
    assert v["condition1"]["share_of_orderings_meeting"] == pytest.approx(0.75)
    assert v["condition1"]["per_ordering_p"]["min"] == 0.0
    assert v["condition1"]["holds"] is False and v["holds"] is False
    assert v["condition2"]["vacuous"] is True  # C = 2
    assert "does not hold" in v["verdict"] and "condition 1 fails" in v["verdict"]
    # the pooled p can pass while one ordering fails: the verdict follows the ordering
    v_pooled = assumption_verdict(torch.stack([good] * 4), y, pairs, 4.0)
    assert v_pooled["condition1"]["pooled_p"] == pytest.approx(0.75)  # >= 42.5 %
    assert v_pooled["condition1"]["holds"] is False and v_pooled["holds"] is False
    # only the first pair: every ordering reaches p = 0.5
    v_ok = assumption_verdict(scores, y, pairs[:1], 4.0)
    assert v_ok["condition1"]["holds"] is True and v_ok["holds"] is True
    assert v_ok["verdict"].endswith("Assumption 4.4 holds")


# --- ambiguous pairs ---------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [1 << 24, 120, 420])  # one chunk, chunks of 2 and of 7 rows
def test_pair_exactly_at_threshold_is_kept(chunk):
    # far from the origin, float32 cdist (|a|^2 + |b|^2 - 2 a.b) puts this pair at 5.025, not 5
    g = torch.Generator().manual_seed(0)
    x = 1000 + 40 * torch.rand(60, 2, generator=g, dtype=torch.float64)
    x[1] = x[0] + torch.tensor([3.0, 4.0], dtype=torch.float64)
    x = x.float()
    y = torch.arange(60) % 2
    assert float((x[0].double() - x[1].double()).norm()) == 5.0
    assert float(torch.cdist(x[:1], x)[0, 1]) > 5.0  # the float32 path really errs here
    res = cross_class_pairs(x, y, k=None, max_distance=5.0, chunk_elements=chunk)
    assert [0, 1] in res.pairs.tolist()
    assert float(res.distances.max()) <= 5.0
    brute = [(i, j) for i in range(60) for j in range(i + 1, 60)
             if y[i] != y[j] and float((x[i].double() - x[j].double()).norm()) <= 5.0]
    assert sorted(map(tuple, res.pairs.tolist())) == brute


# --- bootstrap over models and pairs -----------------------------------------------------------

def test_model_and_pair_bootstrap_is_wider_when_models_differ():
    g = torch.Generator().manual_seed(1)
    m, n, c = 6, 80, 3
    y = torch.randint(0, c, (n,), generator=g)
    # models of very different quality: model k is right on a fraction (k+1)/7 of the examples
    scores = torch.full((m, n, c), 0.1)
    for k in range(m):
        right = torch.rand(n, generator=g) < (k + 1) / 7
        scores[k, torch.arange(n), torch.where(right, y, (y + 1) % c)] = 0.8
    pairs = torch.stack([torch.arange(0, n, 2), torch.arange(1, n, 2)], dim=1)
    res = theorem_check(scores, y, pairs, resamples=400)
    for comb in ("average", "max"):
        d = res["differences"][f"{comb}_minus_single"]
        both, only = d["models_and_pairs"], d["pairs_only"]
        assert both["high"] - both["low"] > only["high"] - only["low"]
        assert both["low"] <= d["mean"] <= both["high"]
        assert (d["low"], d["high"]) == (both["low"], both["high"]) and res["interval_basis"] == "models_and_pairs"
    assert res["combiners_equivalent"] is False
    # each model's loss is the same on every pair: only resampling the models can move the mean
    per_model = torch.linspace(0, 1, 5)[:, None].expand(5, 30)
    iv = model_and_pair_bootstrap(per_model, {"average": per_model[:, None, :].expand(5, 5, 30)}, resamples=400)
    assert iv["single"][1] - iv["single"][0] > 0.2 and iv["average"][1] - iv["average"][0] > 0.2
    # identical models: resampling models changes nothing, the two intervals agree closely
    same = scores[:1].expand(4, -1, -1)
    single = pair_losses(same, y, pairs)["single"]
    iv = model_and_pair_bootstrap(single, {}, resamples=400)["single"]
    mean = float(single.mean())
    assert iv[0] <= mean <= iv[1] and iv[1] - iv[0] < 0.35
    assert math.isclose(float(single[0].mean()), mean)
