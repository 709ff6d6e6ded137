"""cw_opt: the reference code's Carlini-Wagner L-inf optimisation attack (spec §3.3).

The main model is a binary linear classifier ``z = [0, w.(x - 0.5)]`` on 3x2x2 inputs, where the
minimal L-inf adversarial distance of an input is known in closed form: |f(x0)| / ||w||_1. Inputs
are built with a chosen distance d and lie well inside [0, 1], so the box never binds.
"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from igat.attacks import ATTACKS, build_attack
from igat.attacks.cw_opt import cw_linf
from igat.evaluation import evaluate_ensemble
from igat.models.ensemble import Ensemble
from igat.specs.attacks import CWOptParams

SHAPE = (3, 2, 2)
DIM = 12


class LinearBinary(nn.Module):
    """Class 1 iff w.(x - 0.5) > 0; logits [0, w.(x - 0.5)]."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = (x.flatten(1) - 0.5) @ self.w
        return torch.stack([torch.zeros_like(f), f], 1)


def _problem(distances: list[float], seed: int = 0, rmax: float = 0.3, spread: bool = False,
             scale: float = 1.0) -> tuple[LinearBinary, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(model, x, y, d): x[i] is correctly classified with minimal L-inf adversarial distance d[i].

    x = 0.5 + r + s * d * sign(w) with w.r = 0, so f(x) = s * d * ||w||_1; classes alternate (s = +-1).
    The closest adversarial 0.5 + r has |r| <= rmax, inside [0, 1]: the box does not bind. With
    ``spread`` half the pixels sit near rmax, where tanh space moves them slowly, so the attack's
    first crossing is clearly farther than the minimum. ``scale`` multiplies w (the margin's weight).
    """
    g = torch.Generator().manual_seed(seed)
    w = (torch.rand(DIM, generator=g) + 0.5) * torch.where(torch.rand(DIM, generator=g) < 0.5, -1.0, 1.0)
    d = torch.tensor(distances)
    if spread:
        u = torch.where(torch.rand(len(d), DIM, generator=g) < 0.5, -1.0, 1.0) * rmax
        u[:, DIM // 2 :] *= 0.1
    else:
        u = (torch.rand(len(d), DIM, generator=g) - 0.5) * 0.4
    r = u - (u @ w)[:, None] / (w @ w) * w  # orthogonal to w: does not change f
    r = r * (rmax / r.abs().amax(1, keepdim=True).clamp_min(rmax))
    s = torch.where(torch.arange(len(d)) % 2 == 0, 1.0, -1.0)
    x = 0.5 + r + s[:, None] * d[:, None] * w.sign()
    assert 0 < x.min() and x.max() < 1
    return LinearBinary(w * scale), x.view(len(d), *SHAPE), (s > 0).long(), d


def _acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_finds_the_minimal_linf_distance_of_a_linear_classifier():
    # A steep margin (c * |w_i| > 1 already at c = 1e-2) lets the tau loop close in on the minimum.
    model, x, y, d = _problem([0.02, 0.05, 0.08, 0.035], rmax=0.38, spread=True, scale=300.0)
    assert _acc(model, x, y) == 1.0
    res = cw_linf(model, x, y)  # the reference settings
    assert torch.isfinite(res.linf).all()
    # Every best adversarial is real: misclassified, at the reported distance, never closer than the minimum.
    assert _acc(model, res.x_best, y) == 0.0
    torch.testing.assert_close(res.linf, (res.x_best - x).flatten(1).abs().amax(1))
    assert (res.linf >= d - 1e-5).all()
    # ... and within a few percent of it (measured: <= 4 %).
    assert (res.linf <= d * 1.08).all(), (res.linf / d)
    # The tau loop is what gets it there: one tau round alone stops at the first, farther, crossing.
    first = cw_linf(model, x, y, binary_search_steps=1, tau_min=0.5)
    assert (first.linf > d * 1.2).any(), (first.linf / d)
    assert (res.linf <= first.linf + 1e-6).all()


def _reference_single(model, x0: torch.Tensor, label: int, max_iterations: int = 100,
                      binary_search_steps: int = 5) -> float:
    """Distance of the best adversarial for one example, with the reference's control flow written out
    plainly (attack_cw.py: Foolbox's tanh map, Adam, abort early, tau loop, binary search; lr 5e-3,
    c0 = 1e-2, x10, tau 1 -> 0.9 x achieved while > 1/256)."""
    def to_att(v):
        return torch.atanh((2 * v - 1) * 0.999999)

    def to_mod(w):
        return (torch.tanh(w) + 1) / 2

    att_orig = to_att(x0)
    rec = to_mod(att_orig)
    best = math.inf
    const, lo, hi, start_tau = 1e-2, 0.0, math.inf, 1.0
    for _ in range(binary_search_steps):
        warm, tau = att_orig, start_tau
        while tau > 1 / 256:
            found, prev = False, math.inf
            pert, m, v = torch.zeros_like(x0), torch.zeros_like(x0), torch.zeros_like(x0)
            for it in range(max_iterations):
                p = pert.clone().requires_grad_(True)
                xx = to_mod(warm + p)
                z = model(xx.view(1, *SHAPE))[0]
                other = z.detach().clone()
                other[label] = -math.inf
                k = int(other.argmax())
                loss = torch.relu((xx - rec).abs() - tau).sum() + const * torch.relu(z[label] - z[k])
                (g,) = torch.autograd.grad(loss, p)
                loss, xx = float(loss.detach()), xx.detach()
                is_adv = int(z.argmax()) != label
                if is_adv:
                    best = min(best, float((xx - x0).abs().max()))
                m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
                pert = pert - 5e-3 * (m / (1 - 0.9 ** (it + 1))) / ((v / (1 - 0.999 ** (it + 1))).sqrt() + 10e-8)
                found = found or is_adv
                if it % math.ceil(max_iterations / 10) == 0:
                    if not prev - loss > 1e-4:
                        break
                    prev = loss
            xx = to_mod(warm + pert)
            if not found:
                found = tau < start_tau
                start_tau = tau
                break
            tau = min(tau, float((xx - rec).abs().max())) * 0.9
            warm = to_att(xx)
        hi, lo = (const, lo) if found else (hi, const)
        const = const * 10 if hi == math.inf else (lo + hi) / 2
    return best


def test_batched_search_matches_the_reference_loop_per_example():
    """All examples optimised together, each with its own c / tau / rounds, give what the reference's
    one-example-at-a-time loop gives (up to float rounding)."""
    model, x, y, _ = _problem([0.02, 0.05, 0.08, 0.035, 0.01], seed=3)
    res = cw_linf(model, x, y)
    ref = torch.tensor([_reference_single(model, x[i].flatten(), int(y[i])) for i in range(len(x))])
    torch.testing.assert_close(res.linf, ref, atol=1e-5, rtol=0)
    # ... and a small max_iterations (abort-early checks every iteration) and fewer steps.
    res = cw_linf(model, x, y, max_iterations=7, binary_search_steps=3)
    ref = torch.tensor([_reference_single(model, x[i].flatten(), int(y[i]), 7, 3) for i in range(len(x))])
    torch.testing.assert_close(res.linf, ref, atol=1e-5, rtol=0)


def test_scoring_clips_to_eps_and_orders_accuracies():
    distances = [v / 255 for v in (0.4, 1.4, 3.0, 6.0, 12.0, 20.0, 40.0)]
    model, x, y, d = _problem(distances, seed=1)
    eps = 8 / 255
    res = build_attack("cw_opt", {"eps": eps}).perturb(model, x, y)
    adv = res.x_adv
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    natural, robust = _acc(model, x, y), _acc(model, adv, y)
    # Exactly the examples whose minimal distance exceeds eps survive (they must: the ball holds no adversarial).
    still_correct = model(adv).argmax(1) == y
    assert torch.equal(still_correct, d > eps)
    larger = _acc(model, build_attack("cw_opt", {"eps": 64 / 255}).perturb(model, x, y).x_adv, y)
    assert natural == 1.0 and natural >= robust >= larger
    assert larger == 0.0
    # The reference's other radii, per example; at 8/255 it is the scored accuracy.
    for key, e in (("robust_8_255", 8), ("robust_4_255", 4), ("robust_2_255", 2), ("robust_1_255", 1)):
        assert torch.equal(res.stats[key], d > e / 255), key
    assert bool(res.stats["success"].all())
    assert len(res.stats["linf"]) == len(x) and bool((res.stats["linf"] >= d - 1e-5).all())
    assert int(res.stats["iterations"].min()) >= 1


def test_clean_misclassified_examples_are_returned_unattacked():
    model, x, y, _ = _problem([0.05, 0.05, 0.1])
    y = y.clone()
    y[0] = 1 - y[0]  # now misclassified without attack
    res = build_attack("cw_opt").perturb(model, x, y)
    assert torch.equal(res.x_adv[0], x[0])
    assert int(res.stats["iterations"][0]) == 0
    assert res.stats["success"].tolist() == [True, True, True]
    assert len(res.stats["linf"]) == 2  # distances only for the examples the attack fooled


def test_defaults_follow_the_reference_code():
    p = build_attack("cw_opt").params
    assert p.eps == pytest.approx(8 / 255) and p.lr == 5e-3 and p.max_iterations == 100
    assert p.binary_search_steps == 5 and p.initial_const == 1e-2 and p.const_factor == 10
    assert p.tau_start == 1.0 and p.tau_decrease == 0.9 and p.tau_min == pytest.approx(1 / 256)
    assert p.kappa == 0.0 and p.abort_early is True and p.num_examples == 1000


@pytest.mark.parametrize(
    "params,field",
    [({"max_iterations": 0}, "max_iterations"), ({"binary_search_steps": 0}, "binary_search_steps"),
     ({"lr": 0.0}, "lr"), ({"eps": -0.1}, "eps"), ({"tau_decrease": 1.0}, "tau_decrease"),
     ({"const_factor": 1.0}, "const_factor"), ({"initial_const": 0}, "initial_const"), ({"kappa": -1}, "kappa"),
     ({"tau_start": 0.25, "tau_min": 0.5}, "tau_min"), ({"num_examples": 0}, "num_examples"), ({"steps": 5}, "steps")],
)
def test_params_are_validated(params, field):
    with pytest.raises(ValidationError, match=field):
        CWOptParams(**params)
    with pytest.raises(ValidationError, match=field):
        build_attack("cw_opt", params)


def test_registered_and_evaluated_on_a_capped_equidistant_subset():
    assert "cw_opt" in ATTACKS.names() and "cw" in ATTACKS.names()
    torch.manual_seed(0)
    ens = Ensemble([nn.Sequential(nn.Flatten(), nn.Linear(DIM, 3)) for _ in range(2)])
    x = torch.rand(40, *SHAPE) * 0.6 + 0.2
    with torch.no_grad():
        y = ens.log_output(x).argmax(1)  # natural accuracy 1
    params = {"max_iterations": 100, "binary_search_steps": 1, "num_examples": 8, "eps": 0.1}
    rows = evaluate_ensemble(ens, x, y, ["average"], [{"name": "natural"}, {"name": "cw_opt", "params": params}],
                             batch_size=5, per_member=True, member_attacks=["natural"])
    by = {(r.target, r.attack): r for r in rows}
    natural, cw = by[("ensemble", "natural")], by[("ensemble", "cw_opt")]
    assert natural.num_examples == 40 and cw.num_examples == 8
    assert ("member_0", "cw_opt") not in by
    assert natural.accuracy == 1.0 and cw.accuracy < natural.accuracy
    extra = cw.extra
    assert {"success_mean", "linf_median", "robust_4_255_mean", "robust_1_255_mean", "iterations_max"} <= set(extra)
    # Examples without any adversarial are scored on the clean input, so they stay correct.
    assert 0 < extra["success_mean"] and 1 - extra["success_mean"] <= cw.accuracy
    assert 0 < extra["linf_median"] <= extra["linf_max"] < 1
    assert all(0 <= extra[f"robust_{k}_255_mean"] <= 1 for k in (1, 2, 4, 8))

    # Direct call on the ensemble's combiner output: inside the ball and [0, 1], deterministic.
    with ens.frozen():
        model = ens.as_model("max")
        attack = build_attack("cw_opt", params)
        a, b = attack(model, x[:6], y[:6]), attack(model, x[:6], y[:6])
    assert (a - x[:6]).abs().max() <= 0.1 + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
