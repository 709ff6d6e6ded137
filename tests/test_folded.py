"""The BatchNorm-folded execution used inside Ensemble.frozen(eval_mode=True)."""

import pytest
import torch
import torch.nn.functional as F

from igat.models import Ensemble
from igat.models.folded import FoldedResNet20, fold_member
from tests.test_models import _randomise_bn


def _ensemble(dtype=torch.float64, **kwargs) -> Ensemble:
    torch.manual_seed(0)
    ens = Ensemble.resnet20(2, **kwargs).to(dtype)
    _randomise_bn(ens)
    return ens.eval()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_folded_member_equals_eval_member_outputs_and_input_gradients(channels_last, activation):
    # float64: folding is exact math, so only rounding separates the two paths
    ens = _ensemble(activation=activation)
    member = ens.members[0]
    folded = FoldedResNet20(member, channels_last, flipped_backward=True).to(torch.float64)
    x = torch.rand(5, 3, 32, 32, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = member(xa), folded(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-9, atol=1e-9)
    w = torch.randn_like(ya)
    (ga,) = torch.autograd.grad((ya * w).sum(), xa)
    (gb,) = torch.autograd.grad((yb * w).sum(), xb)
    torch.testing.assert_close(gb, ga, rtol=1e-9, atol=1e-9)


def test_flipped_backward_equals_autograd_and_supports_double_backward():
    ens = _ensemble()
    a = FoldedResNet20(ens.members[0], False, flipped_backward=False)
    b = FoldedResNet20(ens.members[0], False, flipped_backward=True)
    assert b.blocks[0][0].weight_t is not None and a.blocks[0][0].weight_t is None
    assert b.blocks[3][0].weight_t is None  # stride 2: the library's own backward
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2])
    (ga,) = torch.autograd.grad(F.cross_entropy(a(x), y), x, create_graph=True)
    (gb,) = torch.autograd.grad(F.cross_entropy(b(x), y), x, create_graph=True)
    torch.testing.assert_close(gb, ga, rtol=1e-9, atol=1e-12)
    v = torch.randn_like(x)
    (ha,) = torch.autograd.grad((ga * v).sum(), x)
    (hb,) = torch.autograd.grad((gb * v).sum(), x)
    torch.testing.assert_close(hb, ha, rtol=1e-7, atol=1e-10)


def test_folded_layer_features_and_heads_match():
    ens = _ensemble(hidden_dim=8, aux_head=True)
    member = ens.members[1]
    folded = FoldedResNet20(member, True).to(torch.float64)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    for layer in (1, 2, 3, 8, 19, 20):
        torch.testing.assert_close(folded.layer_features(x, layer), member.layer_features(x, layer))
    full_a, full_b = member.forward_full(x), folded.forward_full(x)
    for name in ("logits", "aux", "hidden", "features"):
        torch.testing.assert_close(getattr(full_b, name), getattr(full_a, name))
    with pytest.raises(ValueError, match="layer must be in 1..20"):
        folded.layer_features(x, 0)


def test_frozen_eval_uses_folded_copies_and_train_mode_does_not():
    ens = _ensemble(dtype=torch.float32)
    x = torch.rand(4, 3, 16, 16)
    reference = ens(x)
    with ens.frozen(eval_mode=True):
        assert all(isinstance(m, FoldedResNet20) for m in ens.active_members)
        torch.testing.assert_close(ens(x), reference, rtol=1e-5, atol=1e-5)
        with ens.frozen(eval_mode=False):  # nested: train-mode BN cannot be folded
            assert list(ens.active_members) == list(ens.members)
        assert isinstance(ens.active_members[0], FoldedResNet20)
    assert list(ens.active_members) == list(ens.members)
    with ens.frozen(eval_mode=False):
        assert list(ens.active_members) == list(ens.members)
    off = Ensemble(list(ens.members), fold_bn=False)
    with off.frozen(eval_mode=True):
        assert list(off.active_members) == list(off.members)


def test_folded_snapshot_follows_the_current_weights():
    ens = _ensemble(dtype=torch.float32)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ens.members[0].bn1.running_mean += 0.5
    with ens.frozen():
        torch.testing.assert_close(ens(x)[0], ens.members[0](x), rtol=1e-5, atol=1e-5)


def test_non_resnet_members_run_unchanged():
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    assert fold_member(mlp, False) is mlp
    ens = Ensemble([mlp, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))])
    with ens.frozen():
        assert ens.active_members[0] is mlp


def test_evaluation_with_and_without_folding_agree():
    from igat.evaluation import evaluate_ensemble

    ens = _ensemble(dtype=torch.float32, num_classes=4)
    x, y = torch.rand(24, 3, 16, 16), torch.randint(0, 4, (24,))
    attacks = [{"name": "natural"}, {"name": "pgd", "params": {"steps": 3, "eps": 0.03}}]
    folded = evaluate_ensemble(ens, x, y, ["average", "max"], attacks, per_member=True, seed=0)
    ens.fold_bn = False
    plain = evaluate_ensemble(ens, x, y, ["average", "max"], attacks, per_member=True, seed=0)
    assert [(r.target, r.attack) for r in folded] == [(r.target, r.attack) for r in plain]
    for a, b in zip(folded, plain, strict=True):
        # the same function up to float rounding: at most one example may flip on a PGD boundary
        assert abs(a.accuracy - b.accuracy) <= 1 / 24 + 1e-9, (a, b)
    assert all(p.requires_grad for p in ens.parameters())


def test_config_switch_reaches_the_ensemble():
    from igat.config import ExperimentConfig
    from igat.training.builders import build_ensemble

    cfg = ExperimentConfig.model_validate({"model": {"num_members": 2, "fold_bn": False}})
    assert build_ensemble(cfg, None).fold_bn is False
    assert build_ensemble(ExperimentConfig(), None).fold_bn is True
