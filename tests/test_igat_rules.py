"""Unit tests of iGAT's distributing rules, distributed CE and L_R (paper eq. 13-15)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chisquare

from igat.defenses.igat_rules import (
    assign_members,
    distributed_ce,
    lr_regularizer,
    neg_log_one_minus_prob,
    roulette,
    rule_probabilities,
    true_class_ranks,
)
from igat.models.combiners import EnsembleOutput, combine

N = 4
DRAWS = 20000


def _receiver_rank_counts(rule: str, seed: int = 123) -> list[int]:
    """Rank (1 = most confident) of the member each of DRAWS random examples was given to."""
    g = torch.Generator().manual_seed(seed)
    true_probs = torch.rand(N, DRAWS, generator=g)
    member, ranks = assign_members(rule, true_probs, g)
    receiver_rank = ranks.gather(0, member.unsqueeze(0)).squeeze(0)
    return torch.bincount(receiver_rank - 1, minlength=N).tolist()


def test_ranks_are_descending_with_index_tiebreak():
    p = torch.tensor([[0.1, 0.5], [0.7, 0.5], [0.3, 0.2]])  # [N=3, M=2]; column 1 ties members 0 and 1
    assert true_class_ranks(p).tolist() == [[3, 1], [1, 2], [2, 3]]


def test_soft_rule_matches_eq14_chi_square():
    counts = _receiver_rank_counts("soft")
    expected = [DRAWS * 2 ** (N - r) / (2**N - 1) for r in range(1, N + 1)]  # 8/15, 4/15, 2/15, 1/15
    assert chisquare(counts, expected).pvalue > 1e-3
    # The test has power: the same counts are wildly incompatible with a uniform or reversed allocation.
    assert chisquare(counts, [DRAWS / N] * N).pvalue < 1e-12
    assert chisquare(counts, expected[::-1]).pvalue < 1e-12


def test_opposite_rule_is_reversed_roulette():
    counts = _receiver_rank_counts("opposite")
    expected = [DRAWS * 2 ** (r - 1) / (2**N - 1) for r in range(1, N + 1)]
    assert chisquare(counts, expected).pvalue > 1e-3
    assert counts[-1] > counts[0] * 4  # the least confident member gets the most examples


def test_random_rule_is_uniform():
    counts = _receiver_rank_counts("random")
    assert chisquare(counts, [DRAWS / N] * N).pvalue > 1e-3
    soft = [DRAWS * 2 ** (N - r) / (2**N - 1) for r in range(1, N + 1)]
    assert chisquare(counts, soft).pvalue < 1e-12


def test_rule_probabilities_sum_to_one_and_values():
    ranks = true_class_ranks(torch.rand(N, 7))
    for rule in ("soft", "opposite", "random", "hard", "opposite_argmin"):
        probs = rule_probabilities(rule, ranks)
        assert torch.allclose(probs.sum(0), torch.ones(7, dtype=torch.float64))
    soft = rule_probabilities("soft", torch.arange(1, N + 1).unsqueeze(1))
    assert soft.squeeze(1).tolist() == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])
    with pytest.raises(ValueError, match="igat.rule"):
        rule_probabilities("best", ranks)


def test_hard_and_argmin_rules_are_deterministic_extremes():
    g = torch.Generator().manual_seed(0)
    true_probs = torch.rand(N, 500, generator=g)
    state = g.get_state()
    hard, _ = assign_members("hard", true_probs, g)
    low, _ = assign_members("opposite_argmin", true_probs, g)
    assert torch.equal(hard, true_probs.argmax(0))
    assert torch.equal(low, true_probs.argmin(0))
    assert torch.equal(g.get_state(), state)  # deterministic rules draw no random numbers


def test_roulette_interval_boundaries():
    # Intervals (0, .5], (.5, .75], (.75, 1]: check the draw lands in the interval that contains q.
    probs = torch.tensor([[0.5], [0.25], [0.25]], dtype=torch.float64).expand(3, 4000)
    g = torch.Generator().manual_seed(5)
    chosen = roulette(probs, g)
    q = 1 - torch.rand(4000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expect = torch.where(q <= 0.5, 0, torch.where(q <= 0.75, 1, 2))
    assert torch.equal(chosen, expect)


# --- distributed CE -------------------------------------------------------------------------


def test_distributed_ce_per_member_mean_and_batch_normalisation():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 4)
    y = torch.tensor([0, 1, 2, 3, 0])
    member = torch.tensor([0, 0, 1, 0, 1])  # member 2 receives nothing
    selected = torch.ones(5, dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy
    loss, sums, counts = distributed_ce(logits, y, member, selected, "per_member")
    m0 = ce(logits[0, [0, 1, 3]], y[[0, 1, 3]])
    m1 = ce(logits[1, [2, 4]], y[[2, 4]])
    assert counts.tolist() == [3, 2, 0]
    assert math.isfinite(float(loss))
    assert float(loss) == pytest.approx(float(m0 + m1), rel=1e-6)
    assert float(sums[2]) == 0.0
    loss_b, _, _ = distributed_ce(logits, y, member, selected, "batch")
    assert float(loss_b) == pytest.approx(float(m0 * 3 + m1 * 2) / 5, rel=1e-6)


def test_distributed_ce_empty_members_give_zero_not_nan_and_backprop():
    logits = torch.randn(3, 4, 5, requires_grad=True)
    y = torch.tensor([1, 2, 3, 4])
    member = torch.zeros(4, dtype=torch.long)
    for selected in (torch.zeros(4, dtype=torch.bool), torch.tensor([True, False, False, False])):
        loss, _, counts = distributed_ce(logits, y, member, selected, "per_member")
        assert math.isfinite(float(loss.detach()))
        loss.backward()
        assert torch.isfinite(logits.grad).all()
        assert float(logits.grad[1:].abs().sum()) == 0.0  # members with no examples get no gradient
        logits.grad = None
        assert int(counts[1]) == 0 and int(counts[2]) == 0


# --- L_R ---------------------------------------------------------------------------------------

# Members' probabilities on three examples (N = 2, C = 3). Labels 0, 1, 0.
P = torch.tensor([
    [[0.10, 0.70, 0.20], [0.01, 0.60, 0.39], [0.80, 0.10, 0.10]],  # member 0
    [[0.50, 0.20, 0.30], [0.44, 0.01, 0.55], [0.60, 0.30, 0.10]],  # member 1
])
Y = torch.tensor([0, 1, 0])


def _mis() -> torch.Tensor:
    combined = combine(EnsembleOutput(P.log()), "average")
    return combined.argmax(-1) != Y


def test_mask_of_fixture():
    # average: ex0 [.3,.45,.25] -> 1 (wrong), ex1 [.225,.305,.47] -> 2 (wrong), ex2 [.7,.2,.1] -> 0 (right)
    assert _mis().tolist() == [True, True, False]


def test_lr_paper_matches_hand_computation():
    values = lr_regularizer(P.log(), Y, _mis(), "paper")
    # ex0: max wrong-class prob over members = 0.70 (member 0, class 1); ex1: 0.55 (member 1, class 2).
    expected = [-math.log(1 - 0.70), -math.log(1 - 0.55), 0.0]
    assert values.tolist() == pytest.approx(expected, rel=1e-5)
    # Eq. 15 read literally (true class included): ex1's max becomes member 0's true-class 0.60.
    literal = lr_regularizer(P.log(), Y, _mis(), "paper", include_true_class=True)
    assert literal.tolist() == pytest.approx([-math.log(0.30), -math.log(0.40), 0.0], rel=1e-5)


def test_lr_code_variants_match_hand_computation():
    code_sum = lr_regularizer(P.log(), Y, _mis(), "code_sum", clip=0.99)
    assert code_sum.tolist() == pytest.approx(
        [-math.log(0.30) - math.log(0.70), -math.log(0.61) - math.log(0.45), 0.0], rel=1e-5)
    clipped = lr_regularizer(P.log(), Y, _mis(), "code_sum", clip=0.5)
    assert clipped.tolist() == pytest.approx(
        [-math.log(0.50) - math.log(0.70), -math.log(0.61) - math.log(0.50), 0.0], rel=1e-5)
    max2 = lr_regularizer(P.log(), Y, _mis(), "code_max2", clip=0.99)
    assert max2.tolist() == pytest.approx([-2 * math.log(0.30), -2 * math.log(0.45), 0.0], rel=1e-5)


def test_lr_is_zero_when_ensemble_is_right():
    logits = P.log().clone().requires_grad_(True)
    values = lr_regularizer(logits, Y, torch.zeros(3, dtype=torch.bool), "paper")
    assert values.abs().sum().item() == 0.0
    values.sum().backward()
    assert logits.grad.abs().sum().item() == 0.0


def test_lr_gradient_flows_only_to_member_holding_the_max():
    logits = P.log().clone().requires_grad_(True)
    lr_regularizer(logits, Y, _mis(), "paper").sum().backward()
    g = logits.grad
    assert g[0, 0].abs().sum() > 0 and g[1, 0].abs().sum() == 0  # ex0: max held by member 0
    assert g[1, 1].abs().sum() > 0 and g[0, 1].abs().sum() == 0  # ex1: max held by member 1
    assert g[:, 2].abs().sum() == 0  # ex2 is classified correctly
    # descending the gradient lowers the offending probability (member 0, class 1 on ex0)
    assert g[0, 0, 1] > 0


def test_clip_kills_gradient_above_threshold():
    logits = P.log().clone().requires_grad_(True)
    lr_regularizer(logits, Y, _mis(), "code_max2", clip=0.6).sum().backward()
    assert logits.grad[:, 0].abs().sum() == 0  # ex0's 0.70 > 0.6: constant, no gradient
    assert logits.grad[:, 1].abs().sum() > 0  # ex1's 0.55 < 0.6


def test_neg_log_one_minus_prob_is_finite_for_saturated_softmax():
    logits = torch.tensor([[200.0, 0.0, 0.0]])
    value = neg_log_one_minus_prob(logits, torch.tensor([0]))
    assert math.isfinite(float(value)) and float(value) == pytest.approx(200.0 - math.log(2), rel=1e-6)
    with pytest.raises(ValueError, match="igat.reg"):
        lr_regularizer(P.log(), Y, _mis(), "worst")
