import pytest
import torch

from igat.attacks import ATTACKS, build_attack, pgd
from igat.training import Trainer
from tests.helpers import synthetic_config


@pytest.fixture(scope="module")
def trained():
    cfg = synthetic_config(model={"num_members": 1}, train={"epochs": 6, "batch_size": 32, "eval_examples": 0},
                           data={"synthetic_train_size": 256, "augment": False})
    tr = Trainer(cfg, resume=False)
    for epoch in range(cfg.train.epochs):
        tr.ctx.epoch = epoch
        for x, y in tr.loader:
            tr.ctx.step += 1
            tr.defense.train_step(tr.ctx, x, y)
    x, y = tr.dataset.test_tensors()
    return tr.ensemble.eval(), x, y


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_pgd_stays_in_ball_and_range(trained):
    ens, x, y = trained
    model = ens.as_model("average")
    for eps in (0.0, 2 / 255, 0.1):
        with ens.frozen():
            x_adv = pgd(model, x, y, eps=eps, step_size=eps / 4 + 1e-3, steps=5, generator=torch.Generator().manual_seed(0))
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_lowers_accuracy_of_trained_model(trained):
    ens, x, y = trained
    model = ens.as_model("average")
    nat = _acc(model, x, y)
    with ens.frozen():
        x_adv = pgd(model, x, y, eps=0.1, step_size=0.025, steps=10, generator=torch.Generator().manual_seed(0))
    assert nat > 0.8
    assert _acc(model, x_adv, y) < nat - 0.4


def test_targeted_pgd_reaches_the_target(trained):
    ens, x, y = trained
    model = ens.as_model("average")
    target = (y + 1) % 4
    with ens.frozen():
        x_adv = pgd(model, x, y, eps=0.2, step_size=0.02, steps=20, targeted=True, target=target)
    with torch.no_grad():
        hit = (model(x_adv).argmax(1) == target).float().mean()
    assert hit > 0.5


def test_fgsm_and_registry(trained):
    ens, x, y = trained
    model = ens.as_model("max")
    attack = build_attack("fgsm", {"eps": 0.1})
    with ens.frozen():
        x_adv = attack(model, x, y)
    assert torch.allclose((x_adv - x).abs().amax(), torch.tensor(0.1), atol=1e-6) or (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert _acc(model, x_adv, y) < _acc(model, x, y)
    assert {"natural", "fgsm", "pgd"} <= set(ATTACKS.names())


def test_pgd_is_deterministic_for_a_seed(trained):
    ens, x, y = trained
    model = ens.as_model("average")
    with ens.frozen():
        a = pgd(model, x, y, steps=3, generator=torch.Generator().manual_seed(7))
        b = pgd(model, x, y, steps=3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
