"""Evaluation PGD with per-example early exit and restarts, the strength probe, and the untouched training PGD.

A tiny two-member CNN ensemble is trained without defense on synthetic 8x8 data; eps is chosen so
that the attacks fool part of the examples but not all (otherwise "never weaker" would be vacuous).
"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from igat.attacks import build_attack, pgd, pgd_early_exit, project
from igat.attacks.pgd import attack_loss
from igat.evaluation import evaluate_ensemble
from igat.sanity import check_results
from tests.helpers import tiny_trained_ensemble

EPS = 6 / 255
STEP = 1 / 255


@pytest.fixture(scope="module")
def trained():
    """(ensemble, x, y): undefended, 128 test examples, every 8th with a wrong label (natural accuracy 7/8)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only contend on a shared machine
    ens, vx, vy = tiny_trained_ensemble(1)
    vy = vy.clone()
    vy[::8] = (vy[::8] + 1) % 4  # the model gets the rest right: these are the clean misclassifications
    yield ens, vx, vy
    torch.set_num_threads(threads)


def _wrong(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) != y


def _gen(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("combiner", ["average", "max"])
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_early_exit_fools_every_example_the_final_iterate_fools(trained, combiner, loss):
    ens, x, y = trained
    with ens.frozen():
        model = ens.as_model(combiner)
        final = pgd(model, x, y, EPS, STEP, 10, loss=loss, generator=_gen())
        res = pgd_early_exit(model, x, y, EPS, STEP, 10, loss=loss, generator=_gen())
        fooled_final, fooled_ee = _wrong(model, final, y), _wrong(model, res.x_adv, y)
        clean_wrong = _wrong(model, x, y)
    # Not vacuous: the final iterate fools some attacked examples and leaves some robust.
    assert int((fooled_final & ~clean_wrong).sum()) > 0 and int((~fooled_final).sum()) > 0
    assert not bool((fooled_final & ~fooled_ee).any()), "an example the final iterate fools survived early exit"
    assert int(fooled_ee.sum()) >= int(fooled_final.sum())
    # Fooled examples left the batch early: fewer passes than the full 10 on average.
    assert float(res.iterations[res.attacked].float().mean()) < 10


def test_fooled_examples_are_real_adversarials_in_the_ball(trained):
    ens, x, y = trained
    with ens.frozen():
        model = ens.as_model("average")
        res = pgd_early_exit(model, x, y, EPS, STEP, 10, generator=_gen())
        wrong = _wrong(model, res.x_adv, y)
        clean_wrong = _wrong(model, x, y)
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert torch.equal(wrong, res.fooled)  # fooled <=> misclassified at the returned point
    assert torch.equal(res.attacked, ~clean_wrong)
    # Misclassified clean inputs are not attacked: returned as they are, at no cost.
    assert torch.equal(res.x_adv[clean_wrong], x[clean_wrong])
    assert bool((res.iterations[clean_wrong] == 0).all())
    assert bool((res.iterations[res.attacked] >= 1).all()) and int(res.iterations.max()) <= 10


def test_restarts_only_add_fooled_examples_and_keep_the_generator_stream(trained):
    ens, x, y = trained
    with ens.frozen():
        model = ens.as_model("average")
        fooled, states = [], []
        for restarts in (1, 2, 4):
            gen = _gen()
            # Two short steps at 8/255: where the start lands matters, so restarts have something to find.
            res = pgd_early_exit(model, x, y, 8 / 255, STEP, 2, generator=gen, restarts=restarts)
            fooled.append(_wrong(model, res.x_adv, y))
            states.append(gen.get_state())
            assert int(res.iterations.max()) <= 2 * restarts
        again = pgd_early_exit(model, x, y, 8 / 255, STEP, 2, generator=_gen(), restarts=4)
    for fewer, more in zip(fooled, fooled[1:]):
        assert not bool((fewer & ~more).any())  # per example: restarts never un-fool
    assert int(fooled[-1].sum()) > int(fooled[0].sum())  # and here they do find more
    # Restarts draw from a derived generator: the caller's stream (later batches' starts) is unchanged.
    assert all(torch.equal(states[0], s) for s in states[1:])
    assert torch.equal(again.x_adv, res.x_adv)  # reproducible from the seed


def test_training_pgd_still_returns_the_final_iterate(trained):
    """The functional pgd (adversarial training) is the plain final-iterate loop, for fooled examples too."""
    ens, x, y = trained
    with ens.frozen():
        model = ens.as_model("average")
        ours = pgd(model, x, y, EPS, STEP, 6, generator=_gen(9))
        gen = _gen(9)
        x_adv = project(x + (torch.rand(x.shape, generator=gen) * 2 - 1) * EPS, x, EPS)
        for _ in range(6):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(attack_loss(model(x_adv), y, "ce"), x_adv)
            x_adv = project(x_adv.detach() + STEP * grad.sign(), x, EPS)
        clean_wrong = _wrong(model, x, y)
    assert torch.equal(ours, x_adv)
    assert not torch.equal(ours[clean_wrong], x[clean_wrong])  # misclassified examples are perturbed too


@pytest.mark.parametrize("name,params", [("pgd", {"steps": 10}), ("cw", {"steps": 10}), ("fgsm", {})])
def test_evaluation_attacks_exit_early_and_report_their_cost(trained, name, params):
    ens, x, y = trained
    loss = "cw" if name == "cw" else "ce"
    steps, step, start = (1, EPS, False) if name == "fgsm" else (10, STEP, True)
    rows = evaluate_ensemble(ens, x, y, ["average"], [{"name": name, "params": {**params, "eps": EPS,
                             **({} if name == "fgsm" else {"step_size": STEP})}}], batch_size=64, per_member=True,
                             seed=3)
    by = {r.target: r for r in rows}
    for target, model in [("ensemble", ens.as_model("average")), ("member_0", ens.members[0])]:
        extra = by[target].extra
        assert 0 < extra["attacked_mean"] <= 1
        assert 0 < extra["iterations_mean"] <= steps
        # Same generator stream as the evaluation (seed 3, batches of 64): never weaker than the final iterate.
        gen, final_wrong = _gen(3), []
        with ens.frozen():
            for s in range(0, len(x), 64):
                xb, yb = x[s:s + 64], y[s:s + 64]
                final_wrong.append(_wrong(model, pgd(model, xb, yb, EPS, step, steps, start, loss=loss,
                                                     generator=gen), yb))
        assert by[target].accuracy <= 1 - float(torch.cat(final_wrong).float().mean())


def test_restarts_need_a_random_start():
    with pytest.raises(ValidationError, match="random_start"):
        build_attack("pgd", {"restarts": 2, "random_start": False})
    with pytest.raises(ValidationError, match="random_start"):
        build_attack("cw", {"restarts": 2, "random_start": False})
    with pytest.raises(ValueError, match="restarts"):
        pgd_early_exit(lambda v: v, torch.zeros(1, 3, 2, 2), torch.zeros(1, dtype=torch.long), restarts=0)


def test_strength_probe_flags_a_too_weak_pgd(trained):
    ens, x, y = trained
    # PGD-1 with a tiny step is far too weak at this eps: the probe must see it and sanity must flag it.
    weak = {"name": "pgd_strength", "params": {"eps": EPS, "step_size": 0.5 / 255, "reference_steps": 1,
                                               "steps": 20, "restarts": 2, "num_examples": 64}}
    rows = evaluate_ensemble(ens, x, y, ["average"], [{"name": "natural"}, weak], per_member=False, seed=0)
    probe = rows[1]
    assert probe.num_examples == 64
    assert probe.extra["reference_steps"] == 1
    assert probe.accuracy < probe.extra["robust_reference_mean"] - 0.01
    flags = check_results(rows)
    assert [f.code for f in flags] == ["pgd_overestimates"]
    assert flags[0].values["pgd_strength"] == probe.accuracy
    # A strong reference (the probe's own PGD-k with enough steps) leaves nothing to flag.
    strong = {"name": "pgd_strength", "params": {"eps": EPS, "step_size": STEP, "reference_steps": 20,
                                                 "steps": 20, "restarts": 2, "num_examples": 64}}
    rows = evaluate_ensemble(ens, x, y, ["average"], [{"name": "natural"}, strong], per_member=False, seed=0)
    assert rows[1].accuracy <= rows[1].extra["robust_reference_mean"]
    assert rows[1].accuracy >= rows[1].extra["robust_reference_mean"] - 0.01
    assert check_results(rows) == []
