import pytest
import torch

from igat.models import COMBINERS, Ensemble, EnsembleOutput, ResNet20, combine, count_parameters, log_output
from igat.models.fused import FusedResNet20Ensemble


def _randomise_bn(ens: Ensemble) -> None:
    # Fresh BN layers are the identity; random statistics make the equality tests meaningful.
    g = torch.Generator().manual_seed(1)
    for mod in ens.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=g) * 0.2 - 0.1)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
            mod.bias.data.copy_(torch.rand(mod.bias.shape, generator=g) * 0.2 - 0.1)


def test_resnet20_parameter_count():
    assert count_parameters(ResNet20(num_classes=10)) == 272_474
    # CLDL's hidden layer and SoE's confidence head are extra parameters on top
    assert count_parameters(ResNet20(hidden_dim=64)) == 272_474 + 64 * 64 + 64 + 64 * 10 - 64 * 10
    assert count_parameters(ResNet20(aux_head=True)) == 272_474 + 65


def test_layer_features_shapes_and_logits():
    m = ResNet20().eval()
    x = torch.rand(2, 3, 32, 32)
    assert m.layer_features(x, 1).shape == (2, 16, 32, 32)
    assert m.layer_features(x, 9).shape == (2, 32, 16, 16)
    assert torch.allclose(m.layer_features(x, 20), m(x))
    with pytest.raises(ValueError, match="layer must be in 1..20"):
        m.layer_features(x, 21)


def test_ensemble_shared_and_per_member_inputs():
    ens = Ensemble.resnet20(3).eval()
    x = torch.rand(4, 3, 16, 16)
    shared = ens(x)
    per = ens(x.unsqueeze(0).expand(3, *x.shape))
    assert shared.shape == (3, 4, 10)
    assert torch.allclose(shared, per)
    for i, m in enumerate(ens.members):
        assert torch.allclose(shared[i], m(x))
    with pytest.raises(ValueError, match="2 batches but the ensemble has 3 members"):
        ens(torch.rand(2, 4, 3, 16, 16))


@pytest.mark.parametrize("train_mode", [False, True])
def test_fused_engine_equals_member_loop(train_mode):
    # float64: the two paths are mathematically identical, and in float64 they agree to rounding;
    # in float32 BatchNorm's batch-statistics backward amplifies rounding (~1e-2 for random weights).
    dtype = torch.float64
    torch.manual_seed(0)
    ens = Ensemble.resnet20(3).to(dtype)
    _randomise_bn(ens)
    fused = FusedResNet20Ensemble.from_members(list(ens.members)).to(dtype)
    ens.train(train_mode)
    fused.train(train_mode)
    x = torch.rand(3, 8, 3, 32, 32, dtype=dtype, requires_grad=True)
    w = torch.randn(3, 8, 10, dtype=dtype)
    out_loop, out_fused = ens(x), fused(x)
    assert torch.allclose(out_loop, out_fused, atol=1e-5)
    g_loop = torch.autograd.grad((out_loop * w).sum(), [x, *ens.members[1].parameters()])
    g_fused = torch.autograd.grad((out_fused * w).sum(), [x, fused.conv1.weight, fused.fc_weight])
    assert torch.allclose(g_loop[0], g_fused[0], atol=1e-5)
    # member 1's stem conv weight = fused stem channels 16..32; its fc = fused fc_weight[1]
    assert torch.allclose(g_loop[1], g_fused[1][16:32], atol=1e-5)
    assert torch.allclose(g_loop[-2], g_fused[2][1], atol=1e-5)


def test_fused_engine_float32_outputs():
    ens = Ensemble.resnet20(3).eval()
    _randomise_bn(ens)
    fused = FusedResNet20Ensemble.from_members(list(ens.members)).eval()
    x = torch.rand(5, 3, 32, 32)
    assert torch.allclose(ens(x), fused(x), atol=1e-5)


def test_state_dict_round_trip_is_exact():
    ens = Ensemble.resnet20(4)
    _randomise_bn(ens)
    fused = FusedResNet20Ensemble.from_members(list(ens.members))
    back = fused.member_state_dicts()
    for a, b in zip(ens.member_state_dicts(), back):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    # and into a fresh per-member ensemble / a plain ResNet20
    other = Ensemble.resnet20(4)
    other.load_member_state_dicts(back)
    plain = ResNet20()
    plain.load_state_dict(back[2])
    x = torch.rand(2, 3, 32, 32)
    ens.eval(), other.eval(), plain.eval()
    assert torch.equal(ens(x), other(x))
    assert torch.equal(ens.members[2](x), plain(x))


def test_combiners_on_hand_made_probabilities():
    # two members, two examples, three classes; logits = log p so softmax gives p back
    p = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], [[0.1, 0.6, 0.3], [0.2, 0.5, 0.3]]])
    out = EnsembleOutput(p.log())
    assert torch.allclose(combine(out, "average"), torch.tensor([[0.4, 0.4, 0.2], [0.15, 0.3, 0.55]]))
    assert torch.allclose(combine(out, "max"), torch.tensor([[0.7, 0.6, 0.3], [0.2, 0.5, 0.8]]))
    assert torch.allclose(log_output(combine(out, "average")), torch.tensor([[0.4, 0.4, 0.2], [0.15, 0.3, 0.55]]).log())
    assert log_output(torch.zeros(1, 2)).isfinite().all()  # clamp at 1e-40, no -inf
    assert {"average", "max"} <= set(COMBINERS.names())


def test_ensemble_log_output_matches_members():
    ens = Ensemble.resnet20(2).eval()
    x = torch.rand(3, 3, 16, 16)
    probs = torch.stack([m(x).softmax(-1) for m in ens.members])
    assert torch.allclose(ens.log_output(x, "average"), probs.mean(0).log(), atol=1e-6)
    assert torch.allclose(ens.as_model("max")(x), probs.amax(0).log(), atol=1e-6)


def test_frozen_restores_flags_and_mode():
    ens = Ensemble.resnet20(2).train()
    with ens.frozen():
        assert not any(p.requires_grad for p in ens.parameters())
        assert not ens.training
    assert all(p.requires_grad for p in ens.parameters())
    assert ens.training and ens.members[0].bn1.training


def test_engine_resolution_and_fused_evaluation_match_the_loop():
    from igat.evaluation import evaluate_ensemble
    from igat.models.fused import FusedCombinedModel, combined_models, resolve_engine

    ens = Ensemble.resnet20(2, num_classes=4).eval()
    _randomise_bn(ens)
    assert resolve_engine("auto", list(ens.members), "cpu") == "loop"
    assert resolve_engine("auto", list(ens.members), "cuda") == "fused"
    assert resolve_engine("auto", list(Ensemble.resnet20(2, aux_head=True).members), "cuda") == "loop"
    with pytest.raises(ValueError, match="plain ResNet members"):
        resolve_engine("fused", list(Ensemble.resnet20(2, hidden_dim=8).members), "cpu")
    assert isinstance(combined_models(ens, ["average"], "fused", "cpu")["average"], FusedCombinedModel)
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 4, (16,))
    attacks = [{"name": "natural"}, {"name": "pgd", "params": {"steps": 3, "eps": 0.1}}]
    loop = evaluate_ensemble(ens, x, y, ["average", "max"], attacks, per_member=False, engine="loop")
    fused = evaluate_ensemble(ens, x, y, ["average", "max"], attacks, per_member=False, engine="fused")
    assert [r.accuracy for r in loop] == [r.accuracy for r in fused]
    assert all(p.requires_grad for p in ens.parameters())  # the loop ensemble is left trainable
