"""The baselines' loss math on tiny fixed tensors, checked against hand computations and properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from igat.defenses._gradients import member_ce_gradients, pair_indices, pairwise_cosine
from igat.defenses.adp import adp_log_det, adp_loss, ensemble_entropy
from igat.defenses.cldl import (
    LabelConfusionModel,
    cldl_coherence,
    cldl_diversity,
    pair_jsd,
    simulated_label_distribution,
    sld_kl,
)
from igat.defenses.dverge import distill, feature_mse, member_features, others_ce
from igat.defenses.gal import gal_coherence
from igat.defenses.soe import detector_scores, soe_combiner, soe_loss_terms
from igat.defenses.trs import eps_schedule, smoothness_pgd, trs_cosine, trs_smoothness
from igat.models.combiners import COMBINERS, EnsembleOutput
from igat.models.ensemble import Ensemble

# Two members, three classes, true class 0 for the single example.
P_A = [0.6, 0.3, 0.1]
P_B = [0.5, 0.1, 0.4]
Y0 = torch.tensor([0])


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are dominated by thread overhead; on a shared 2-core box one thread is ~10x faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def logits_of(*rows: list[float]) -> torch.Tensor:
    """Member logits [N, 1, C] whose softmax is exactly the given probability rows."""
    return torch.tensor(rows, dtype=torch.float64).log().unsqueeze(1)


def tiny_ensemble(n: int = 2, classes: int = 3, **kw) -> Ensemble:
    return Ensemble.resnet20(n, num_classes=classes, mean=(0.5,) * 3, std=(0.25,) * 3, **kw).double()


# --- shared gradient helpers ------------------------------------------------------------------
def test_batched_member_gradients_equal_separate_per_member_gradients():
    torch.manual_seed(0)
    ens = tiny_ensemble(activation="leaky_relu")
    ens.eval()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    grads, logits = member_ce_gradients(ens, x, y, create_graph=False)
    assert grads.shape == (2, 3, 3 * 8 * 8) and logits.shape == (2, 3, 3)
    for i, m in enumerate(ens.members):
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(m(xi), y), xi)
        torch.testing.assert_close(grads[i], g.flatten(1))
    assert not torch.allclose(grads[0], grads[1])


def test_pairwise_cosine_covers_all_pairs():
    i, j = pair_indices(4)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    g = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, -2.0]]])
    cos = pairwise_cosine(g)
    torch.testing.assert_close(cos[:, 0], torch.tensor([1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)]))


# --- ADP ----------------------------------------------------------------------------------------
def test_adp_components_match_hand_computation():
    logits = logits_of(P_A, P_B)
    mean = [(a + b) / 2 for a, b in zip(P_A, P_B, strict=True)]
    entropy = -sum(m * math.log(m + 1e-20) for m in mean)
    a, b = [0.3, 0.1], [0.1, 0.4]
    cos = (a[0] * b[0] + a[1] * b[1]) / (math.hypot(*a) * math.hypot(*b))
    log_det = math.log((1 + 1e-6) ** 2 - cos**2)
    ce = -math.log(0.6) - math.log(0.5)
    loss, parts = adp_loss(logits, Y0, alpha=2.0, beta=0.5)
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-9)
    assert parts["entropy"].item() == pytest.approx(entropy, rel=1e-9)
    assert parts["log_det"].item() == pytest.approx(log_det, rel=1e-6)
    assert loss.item() == pytest.approx(ce - 2.0 * entropy - 0.5 * log_det, rel=1e-6)


def test_adp_diversity_grows_when_members_disagree_on_non_true_classes():
    # Same true-class confidence (0.5) in every case; only where the wrong mass goes changes.
    agree = logits_of([0.5, 0.4, 0.05, 0.05], [0.5, 0.4, 0.05, 0.05])
    partly = logits_of([0.5, 0.4, 0.05, 0.05], [0.5, 0.25, 0.2, 0.05])
    disagree = logits_of([0.5, 0.4, 0.05, 0.05], [0.5, 0.05, 0.05, 0.4])
    values = [adp_log_det(lg.softmax(-1), Y0).item() for lg in (agree, partly, disagree)]
    assert values[0] < values[1] < values[2]
    # Identical predictions make G singular: log det is then set by the 1e-6 offset.
    assert values[0] == pytest.approx(math.log(2e-6), rel=1e-3)


def test_ensemble_entropy_is_maximal_for_uniform_average():
    uniform = torch.full((2, 1, 4), 0.25)
    peaked = torch.tensor([[[0.97, 0.01, 0.01, 0.01]], [[0.97, 0.01, 0.01, 0.01]]])
    assert ensemble_entropy(uniform).item() == pytest.approx(math.log(4))
    assert ensemble_entropy(peaked).item() < 0.2


# --- GAL ----------------------------------------------------------------------------------------
def test_gal_penalty_is_minimal_for_orthogonal_and_maximal_for_aligned_gradients():
    eye = torch.eye(3).unsqueeze(1)  # three orthogonal unit gradients, one example
    aligned = torch.ones(3, 1, 3)
    half = torch.tensor([[[1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]], [[1.0, 0.0, 1.0]]])
    p = 3  # pairs
    assert gal_coherence(eye).item() == pytest.approx(math.log(p), abs=1e-6)
    assert gal_coherence(aligned).item() == pytest.approx(math.log(p) + 1, abs=1e-6)
    assert math.log(p) < gal_coherence(half).item() < math.log(p) + 1
    # With two members the penalty is exactly the cosine.
    two = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    assert gal_coherence(two).item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)


# --- TRS ----------------------------------------------------------------------------------------
def test_trs_terms_match_hand_computation():
    g = torch.tensor([[[3.0, 4.0], [1.0, 0.0]], [[-3.0, -4.0], [0.0, 2.0]]])  # [N=2, B=2, D=2]
    # |cos|: example 0 anti-aligned -> 1, example 1 orthogonal -> 0; mean 0.5.
    assert trs_cosine(g).item() == pytest.approx(0.5)
    # 2 * mean over members and examples of squared norms: (25 + 1 + 25 + 4) / 4 * 2.
    assert trs_smoothness(g).item() == pytest.approx(2 * 55 / 4)
    assert eps_schedule(0.1, 0.2, 0, 10) == pytest.approx(0.1)
    assert eps_schedule(0.1, 0.2, 5, 10) == pytest.approx(0.15)


def test_trs_smoothness_attack_gains_nothing_for_a_constant_gradient():
    w = torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, 0.0]])  # two "linear members": loss_m(x) = <w_m, x>

    def linear_grads(x):  # gradient of a linear loss is constant in x
        return w.unsqueeze(1).expand(2, len(x), 3) + 0 * x.unsqueeze(0)

    def quadratic_grads(x):  # loss_m(x) = 0.5 ||x - c_m||^2 -> gradient x - c_m
        return x.unsqueeze(0) - torch.tensor([[0.2, 0.2, 0.2], [0.8, 0.8, 0.8]]).unsqueeze(1)

    x = torch.full((4, 3), 0.5)
    gen = torch.Generator().manual_seed(0)
    x_lin = smoothness_pgd(linear_grads, x, eps=0.1, steps=3, step_size=0.05, generator=gen)
    clean = trs_smoothness(linear_grads(x)).item()
    assert clean == pytest.approx(2 * ((w**2).sum(1)).mean().item())
    assert trs_smoothness(linear_grads(x_lin)).item() - clean == pytest.approx(0.0, abs=1e-6)
    x_quad = smoothness_pgd(quadratic_grads, x, eps=0.1, steps=3, step_size=0.05, generator=gen)
    assert (x_quad - x).abs().max() <= 0.1 + 1e-6
    assert trs_smoothness(quadratic_grads(x_quad)).item() > trs_smoothness(quadratic_grads(x)).item() + 1e-3


# --- DVERGE -------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [3, 20])
def test_dverge_distillation_moves_features_towards_the_target(layer):
    torch.manual_seed(0)
    ens = tiny_ensemble()
    ens.eval()
    src = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    tgt = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    fn = member_features(ens, layer)
    xs = src.unsqueeze(0).expand(2, *src.shape).contiguous()
    with torch.no_grad():
        target = fn(tgt.unsqueeze(0).expand(2, *tgt.shape).contiguous())
        before = feature_mse(fn(xs), target)
    d = distill(fn, xs, target, eps=0.05, step_size=0.01, steps=10)
    with torch.no_grad():
        after = feature_mse(fn(d), target)
    assert d.shape == xs.shape
    assert (d - xs).abs().max() <= 0.05 + 1e-9 and d.min() >= 0 and d.max() <= 1
    assert (after < before).all(), (before, after)
    # Member i's copy is distilled with member i's features: the copies differ.
    assert not torch.allclose(d[0], d[1])


def test_dverge_others_ce_is_a_sum_of_batch_mean_ces():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -0.5]])  # 2 sets of 2 examples
    y = torch.tensor([0, 1])
    expected = F.cross_entropy(logits[:2], y) + F.cross_entropy(logits[2:], y)
    assert others_ce(logits, y, 2).item() == pytest.approx(expected.item())


# --- CLDL ---------------------------------------------------------------------------------------
def test_cldl_soft_label_sums_to_one_and_favours_the_true_class():
    torch.manual_seed(0)
    lcm = LabelConfusionModel(num_classes=10, dim=64)
    q = lcm(torch.randn(3, 5, 64))
    y = torch.randint(0, 10, (5,))
    assert q.shape == (3, 5, 10)
    torch.testing.assert_close(q.sum(-1), torch.ones(3, 5))
    sld = simulated_label_distribution(q, y, gamma=4.0)
    torch.testing.assert_close(sld.sum(-1), torch.ones(3, 5))
    true_mass = sld.gather(-1, y.view(1, 5, 1).expand(3, 5, 1)).squeeze(-1)
    assert (true_mass > 0.5).all()
    assert (sld.argmax(-1) == y).all()


def test_cldl_terms_match_hand_computation():
    sld = torch.tensor([[[0.7, 0.2, 0.1]], [[0.6, 0.3, 0.1]]], dtype=torch.float64)
    probs = torch.tensor([P_A, P_B], dtype=torch.float64).unsqueeze(1)
    kl = sld_kl(sld, probs)
    for m in range(2):
        s, h = sld[m, 0].tolist(), probs[m, 0].tolist()
        expected = sum(si * math.log(si) for si in s) - sum(si * math.log(hi + 1e-6) for si, hi in zip(s, h, strict=True))
        assert kl[m].item() == pytest.approx(expected, rel=1e-9)
    # JSD on the non-true parts (class 0 is true): P = [0.2, 0.1], Q = [0.3, 0.1].
    p, q = [0.2, 0.1], [0.3, 0.1]
    mm = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    kl_pm = sum(a * math.log(a / c) for a, c in zip(p, mm, strict=True)) / 2  # KLDivLoss 'mean' over 2 elements
    kl_qm = sum(b * math.log(b / c) for b, c in zip(q, mm, strict=True)) / 2
    jsd = (kl_pm + kl_qm) / (2 * math.log(2))
    assert pair_jsd(torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64)).item() == pytest.approx(jsd, rel=1e-6)
    assert cldl_diversity(sld, Y0).item() == pytest.approx(math.log(math.exp(jsd) + 1e-6), rel=1e-6)
    # Identical confusion vectors have no diversity.
    same = sld[:1].expand(2, 1, 3)
    assert cldl_diversity(same, Y0).item() == pytest.approx(math.log(1 + 1e-6), abs=1e-9)


def test_cldl_coherence_is_mean_abs_cosine_over_pairs_divided_by_n():
    g = torch.tensor([[[1.0, 0.0]], [[-1.0, 0.0]], [[0.0, 1.0]]])
    # pairs (0,1): |-1| = 1, (0,2): 0, (1,2): 0 -> sum 1, / N = 3
    assert cldl_coherence(g).item() == pytest.approx(1 / 3)


# --- SoE ----------------------------------------------------------------------------------------
def test_soe_prediction_is_the_chosen_experts_prediction():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 4) * 2
    aux = torch.randn(3, 6)
    out = EnsembleOutput(logits, aux)
    probs = COMBINERS.get("soe")(out)
    scores = logits.softmax(-1).amax(-1) * torch.sigmoid(aux)
    for b in range(6):
        chosen = int(scores[:, b].argmax())
        torch.testing.assert_close(probs[b], logits[chosen, b].softmax(-1))
    torch.testing.assert_close(detector_scores(logits, aux), scores)
    # A very confident head makes its expert win everywhere.
    aux2 = aux.clone()
    aux2[1] = 50.0
    aux2[[0, 2]] = -50.0
    torch.testing.assert_close(soe_combiner(EnsembleOutput(logits, aux2)), logits[1].softmax(-1))


def test_soe_combiner_needs_confidence_heads():
    with pytest.raises(ValueError, match="confidence head"):
        soe_combiner(EnsembleOutput(torch.randn(2, 3, 4), None))


def test_soe_loss_terms_match_hand_computation():
    logits = logits_of([0.6, 0.4], [0.3, 0.7]).float()  # expert 0 right, expert 1 wrong (true class 0)
    aux = torch.tensor([[0.0], [1.0]])
    y = Y0
    wce, bce = soe_loss_terms(logits, aux, y, temp=1.0)
    sig = [0.5, 1 / (1 + math.exp(-1.0))]
    d = [0.6 * sig[0], 0.7 * sig[1]]
    w = [math.exp(d[0]) / (math.exp(d[0]) + math.exp(d[1])), math.exp(d[1]) / (math.exp(d[0]) + math.exp(d[1]))]
    ce = [-math.log(0.6), -math.log(0.3)]
    assert wce.item() == pytest.approx(w[0] * ce[0] + w[1] * ce[1], rel=1e-5)
    target = [0.6, 0.3]
    bce_h = [-(t * math.log(di) + (1 - t) * math.log(1 - di)) for t, di in zip(target, d, strict=True)]
    assert bce.item() == pytest.approx(sum(bce_h) / 2, rel=1e-5)


def test_soe_confidence_of_correct_experts_is_detached_in_the_calibration_term():
    logits = logits_of([0.6, 0.4], [0.3, 0.7]).float().requires_grad_(True)
    aux = torch.tensor([[0.0], [1.0]], requires_grad=True)
    _, bce = soe_loss_terms(logits, aux, Y0, temp=1.0)
    g_logits, g_aux = torch.autograd.grad(bce, (logits, aux))
    assert torch.all(g_logits[0] == 0)  # expert 0 is correct: only its head learns
    assert g_logits[1].abs().sum() > 0  # expert 1 is wrong: its confidence is pushed too
    assert (g_aux != 0).all()


def test_trs_smoothness_attack_differentiates_through_the_members_input_gradients():
    """The inner maximisation needs d smooth / d x' through the (double back-propagated) gradients."""
    torch.manual_seed(0)
    ens = tiny_ensemble(activation="leaky_relu")
    ens.eval()
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    with ens.frozen():
        z = x.clone().requires_grad_(True)
        value = trs_smoothness(member_ce_gradients(ens, z, y)[0])
        (g,) = torch.autograd.grad(value, z)
        assert g.abs().sum() > 0
        x_far = smoothness_pgd(lambda v: member_ce_gradients(ens, v, y)[0], x, eps=0.1, steps=4, step_size=0.04,
                               generator=torch.Generator().manual_seed(0))
        far = trs_smoothness(member_ce_gradients(ens, x_far, y)[0]).item()
        near = trs_smoothness(member_ce_gradients(ens, x, y)[0]).item()
    assert (x_far - x).abs().max() <= 0.1 + 1e-9
    assert far > near
