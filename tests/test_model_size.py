"""Member size knobs ``model.depth`` / ``model.width``: the network, its folded and fused engines, DVERGE's
layer features, configs and checkpoints for CIFAR ResNets other than ResNet-20."""

from types import SimpleNamespace

import pytest
import torch

from igat.config import ConfigError, ExperimentConfig
from igat.defenses import build_defense
from igat.models import Ensemble, count_parameters
from igat.models.folded import FoldedResNet20
from igat.models.fused import FusedResNet20Ensemble, fusable
from igat.models.resnet import CifarResNet, ResNet20
from igat.training import Trainer, load_checkpoint, load_ensemble
from tests.helpers import synthetic_config
from tests.test_defenses_baselines import make_context
from tests.test_models import _randomise_bn


def closed_form_parameters(depth: int, width: int, num_classes: int = 10) -> int:
    """Parameters of a CIFAR ResNet (option-B shortcuts), c = 16 * width, n = (depth - 2) / 6 blocks per stage:
    stem 29c; stage 1 n(18c^2 + 4c); stage 2 56c^2 + 12c + (n-1)(72c^2 + 8c); stage 3 224c^2 + 24c +
    (n-1)(288c^2 + 16c); classifier 4c*C + C. Summed: (378n - 80)c^2 + (28n + 41)c + 4cC + C."""
    n, c = (depth - 2) // 6, 16 * width
    return (378 * n - 80) * c * c + (28 * n + 41) * c + 4 * c * num_classes + num_classes


@pytest.mark.parametrize(("depth", "width"), [(8, 1), (14, 1), (20, 1), (32, 1), (8, 2), (20, 2), (14, 4)])
def test_parameter_count_matches_the_closed_form(depth, width):
    assert count_parameters(CifarResNet(depth=depth, width=width)) == closed_form_parameters(depth, width)


def test_defaults_are_the_papers_resnet20():
    assert closed_form_parameters(20, 1) == 272_474
    m = ResNet20()
    assert (m.depth, m.width, m.num_feature_layers, m.feature_dim) == (20, 1, 20, 64)
    cfg = ExperimentConfig()
    assert (cfg.model.depth, cfg.model.width) == (20, 1)
    # wide members: every head reads the 64w-d pooled feature (CLDL hidden layer, SoE head)
    wide = CifarResNet(depth=8, width=2, hidden_dim=64, aux_head=True)
    assert (wide.hidden.in_features, wide.aux.in_features, wide.fc.in_features) == (128, 128, 64)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("depth", 21, "6n+2 in 8..110"), ("depth", 2, "6n+2 in 8..110"), ("depth", 116, "6n+2 in 8..110"),
    ("width", 0, "in 1..8"), ("width", 9, "in 1..8"),
])
def test_invalid_sizes_are_refused_with_field_level_messages(field, value, message):
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({"model": {field: value}})
    assert [f for f, _ in info.value.errors] == [f"model.{field}"]
    assert message in info.value.errors[0][1] and f"got {value}" in info.value.errors[0][1]
    with pytest.raises(ValueError, match=f"{field} must be"):
        CifarResNet(**{field: value})


def test_valid_sizes_are_accepted():
    for depth in (8, 14, 44, 110):
        assert ExperimentConfig.from_dict({"model": {"depth": depth}}).model.depth == depth
    assert ExperimentConfig.from_dict({"model": {"width": 8}}).model.width == 8


def _member(dtype=torch.float64, **kwargs) -> CifarResNet:
    torch.manual_seed(0)
    ens = Ensemble([CifarResNet(depth=8, width=2, **kwargs) for _ in range(2)]).to(dtype)
    _randomise_bn(ens)
    return ens.members[1].eval()


@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_depth8_width2_equals_the_member(channels_last):
    member = _member(hidden_dim=8, aux_head=True)
    folded = FoldedResNet20(member, channels_last, flipped_backward=True)
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = member(xa), folded(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-9, atol=1e-9)
    w = torch.randn_like(ya)
    (ga,) = torch.autograd.grad((ya * w).sum(), xa)
    (gb,) = torch.autograd.grad((yb * w).sum(), xb)
    torch.testing.assert_close(gb, ga, rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        for layer in range(1, 9):
            torch.testing.assert_close(folded.layer_features(x, layer), member.layer_features(x, layer))
        full_a, full_b = member.forward_full(x), folded.forward_full(x)
    for name in ("logits", "aux", "hidden", "features"):
        torch.testing.assert_close(getattr(full_b, name), getattr(full_a, name))
    with pytest.raises(ValueError, match="layer must be in 1..8"):
        folded.layer_features(x, 9)


@pytest.mark.parametrize("train_mode", [False, True])
def test_fused_depth8_width2_equals_the_member_loop(train_mode):
    torch.manual_seed(0)
    ens = Ensemble([CifarResNet(depth=8, width=2) for _ in range(3)]).to(torch.float64)
    _randomise_bn(ens)
    fused = FusedResNet20Ensemble.from_members(list(ens.members)).to(torch.float64)
    assert (fused.depth, fused.width, len(fused.blocks)) == (8, 2, 3)
    assert count_parameters(fused) == 3 * closed_form_parameters(8, 2)
    ens.train(train_mode)
    fused.train(train_mode)
    x = torch.rand(3, 4, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 10, dtype=torch.float64)
    out_loop, out_fused = ens(x), fused(x)
    torch.testing.assert_close(out_fused, out_loop, rtol=1e-9, atol=1e-9)
    (g_loop,) = torch.autograd.grad((out_loop * w).sum(), x)
    (g_fused,) = torch.autograd.grad((out_fused * w).sum(), x)
    torch.testing.assert_close(g_fused, g_loop, rtol=1e-9, atol=1e-9)
    for a, b in zip(ens.member_state_dicts(), fused.member_state_dicts(), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fused_engine_refuses_members_of_different_sizes():
    members = [CifarResNet(depth=8), CifarResNet(depth=14)]
    assert not fusable(members)
    with pytest.raises(ValueError, match="one depth and width, got 8x1, 14x1"):
        FusedResNet20Ensemble.from_members(members)


def test_layer_features_span_1_to_depth():
    member = _member(dtype=torch.float32)
    x = torch.rand(2, 3, 32, 32)
    # stem, then two per block (1 block per stage at depth 8), then the logits; width 2 doubles the channels
    shapes = {1: (32, 32), 2: (32, 32), 3: (32, 32), 4: (64, 16), 5: (64, 16), 6: (128, 8), 7: (128, 8)}
    with torch.no_grad():
        for layer, (ch, side) in shapes.items():
            assert member.layer_features(x, layer).shape == (2, ch, side, side)
        torch.testing.assert_close(member.layer_features(x, 8), member(x))
    for bad in (0, 9):
        with pytest.raises(ValueError, match="layer must be in 1..8"):
            member.layer_features(x, bad)


def test_dverge_layer_is_checked_against_and_drawn_from_the_depth():
    with pytest.raises(ValueError, match=r"defense.params.layer:? must be in 1..8 .*model.depth 8.*got 9"):
        build_defense(synthetic_config(model={"num_members": 2, "depth": 8},
                                       defense={"name": "dverge", "params": {"layer": 9}}))
    deep = build_defense(synthetic_config(model={"num_members": 2, "depth": 32},
                                          defense={"name": "dverge", "params": {"layer": 30}}))
    assert deep.layer == 30
    shallow = build_defense(synthetic_config(model={"num_members": 2, "depth": 8}, defense={"name": "dverge"}))
    ctx = SimpleNamespace(generator=torch.Generator().manual_seed(0), ensemble=SimpleNamespace(num_members=2))
    drawn = set()
    for _ in range(200):
        shallow.on_epoch_start(ctx)
        drawn.add(shallow.layer)
    assert drawn == set(range(1, 9))


def test_dverge_steps_on_a_depth8_ensemble():
    defense, ctx, x, y = make_context("dverge", {"adv_steps": 1, "distill_steps": 2, "layer": 7},
                                      model={"num_members": 2, "depth": 8})
    assert all(m.depth == 8 for m in ctx.ensemble.members)
    before = [p.clone() for p in ctx.ensemble.parameters()]
    metrics = defense.train_step(ctx, x, y)
    assert metrics["layer"] == 7.0 and torch.isfinite(torch.tensor(metrics["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, ctx.ensemble.parameters(), strict=True))


def test_depth8_width2_ensemble_trains_and_its_checkpoint_rebuilds_the_same_size(tmp_path):
    cfg = synthetic_config(output_dir=str(tmp_path / "small"), model={"num_members": 2, "depth": 8, "width": 2},
                           train={"epochs": 1, "batch_size": 32, "steps_per_epoch": 1, "eval_examples": 0})
    trainer = Trainer(cfg)
    result = trainer.fit()
    ckpt = load_checkpoint(result.checkpoint)
    assert (ckpt["config"]["model"]["depth"], ckpt["config"]["model"]["width"]) == (8, 2)
    ens, cfg2, _ = load_ensemble(result.checkpoint)
    assert (cfg2.model.depth, cfg2.model.width) == (8, 2)
    assert all((m.depth, m.width) == (8, 2) for m in ens.members)
    assert count_parameters(ens) == 2 * closed_form_parameters(8, 2, num_classes=4)
    x = torch.rand(5, 3, 8, 8)
    trainer.ensemble.eval()
    with torch.no_grad():
        torch.testing.assert_close(ens(x), trainer.ensemble(x), rtol=0, atol=0)
    # a warm start into members of another size is refused, naming the checkpoint's model
    other = synthetic_config(output_dir=str(tmp_path / "other"), model={"num_members": 2, "depth": 14},
                             train={"epochs": 1, "init_checkpoint": result.checkpoint})
    with pytest.raises(ValueError, match="does not fit this model.*'depth': 8"):
        Trainer(other)


@pytest.mark.parametrize("name", ["cldl", "soe"])
def test_head_defenses_step_on_shallow_wide_members(name):
    # CLDL's hidden layer and SoE's confidence head read the 128-d pooled feature of width-2 members
    defense, ctx, x, y = make_context(name, model={"num_members": 2, "depth": 8, "width": 2})
    member = ctx.ensemble.members[0]
    assert member.feature_dim == 128 and (member.hidden is not None or member.aux is not None)
    metrics = defense.train_step(ctx, x, y)
    assert torch.isfinite(torch.tensor(metrics["loss"]))
