"""Baseline ensemble defenses (ADP, GAL, TRS, DVERGE, CLDL, SoE): training, registry and config."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from igat.config import ConfigError, ExperimentConfig
from igat.data import load_dataset
from igat.defenses import DEFENSES, build_defense
from igat.training.builders import build_ensemble, build_optimizers
from igat.training.context import StepContext
from tests.helpers import synthetic_config


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are dominated by thread overhead; on a shared 2-core box one thread is ~10x faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BASELINES = ["adp", "gal", "trs", "dverge", "cldl", "soe"]

# Cheapest settings that still exercise every term (one PGD step, two distillation steps).
FAST_PARAMS = {
    "adp": {"adv_steps": 1},
    "gal": {"adv_steps": 1},
    "trs": {"adv_steps": 1},
    "dverge": {"adv_steps": 1, "distill_steps": 2, "layer": 5},
    "cldl": {"adv_steps": 1},
    "soe": {"adv_steps": 1},
}


def make_context(name: str, params: dict | None = None, batch: int = 16, **overrides):
    """(defense, ctx, x, y): a tiny 2-member ensemble on 8x8 synthetic data and one fixed batch."""
    cfg = synthetic_config(defense={"name": name, "params": params if params is not None else FAST_PARAMS[name]},
                           **overrides)
    data = load_dataset(cfg.data, cfg.seed)
    defense = build_defense(cfg)
    ensemble = build_ensemble(cfg, data, defense)
    extra = nn.ModuleDict(defense.extra_modules(data.num_classes))
    ctx = StepContext(ensemble=ensemble, config=cfg, device=torch.device("cpu"),
                      optimizers=build_optimizers(cfg, ensemble, extra), extra=extra,
                      generator=torch.Generator().manual_seed(1), dataset=data)
    ensemble.train()
    defense.on_epoch_start(ctx)
    x = data.train_x[:batch].float() / 255.0
    y = data.train_y[:batch]
    return defense, ctx, x, y


def fixed_loss(defense, ctx, x, y) -> float:
    """The defense's loss on (x, y) with the same attack/distillation randomness every time."""
    ctx.generator.manual_seed(123)
    return float(defense.loss(ctx, x, y).loss.detach())


@pytest.mark.parametrize("name", BASELINES)
def test_defense_trains_and_lowers_its_loss(name):
    defense, ctx, x, y = make_context(name, optim={"name": "adam", "lr": 0.003})
    before = fixed_loss(defense, ctx, x, y)
    for _ in range(4):
        ctx.step += 1
        metrics = defense.train_step(ctx, x, y)
        assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    after = fixed_loss(defense, ctx, x, y)
    assert math.isfinite(before) and math.isfinite(after)
    assert after < before, (name, before, after)


@pytest.mark.parametrize("name,components", [
    ("adp", {"ce", "entropy", "log_det", "adv_ce"}),
    ("gal", {"ce", "coherence", "adv_ce"}),
    ("trs", {"ce", "cos", "smooth"}),
    ("dverge", {"distill_ce", "adv_ce", "feature_gap", "layer"}),
    ("cldl", {"kl", "diversity", "coherence", "adv_kl"}),
    ("soe", {"weighted_ce", "aux_bce", "adv_weighted_ce", "adv_aux_bce"}),
])
def test_loss_components_are_emitted_as_metrics(name, components):
    defense, ctx, x, y = make_context(name)
    metrics = defense.train_step(ctx, x, y)
    assert components <= set(metrics), set(metrics)


@pytest.mark.parametrize("name", BASELINES)
def test_registered_with_documented_params_and_valid_recommendations(name):
    cls = DEFENSES.get(name)
    assert cls.name == name and cls.description
    for field_name, field in cls.Params.model_fields.items():
        assert field.description, f"{name}.{field_name} has no description"
    # The recommended overrides must form a valid config for the defense.
    rec = {k: dict(v) for k, v in cls.recommended.items()}
    assert {"optim", "train"} <= set(rec)
    cfg = ExperimentConfig.from_dict({**rec, "defense": {"name": name}})
    assert cfg.optim.lr == cls.recommended["optim"]["lr"]


def test_config_error_names_the_defense_param():
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({"defense": {"name": "adp", "params": {"alpha": -1}}})
    assert any(field == "defense.params.alpha" for field, _ in info.value.errors), info.value.errors
    with pytest.raises(ConfigError) as info:
        # beyond any model.depth (the check against the configured depth: tests/test_model_size.py)
        ExperimentConfig.from_dict({"defense": {"name": "dverge", "params": {"layer": 111}}})
    assert any(field == "defense.params.layer" for field, _ in info.value.errors)
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({"defense": {"name": "trs", "params": {"no_such_knob": 1}}})
    assert any(field == "defense.params.no_such_knob" for field, _ in info.value.errors)


def test_diversity_defenses_need_two_members():
    with pytest.raises(ValueError, match="model.num_members"):  # refused by the config, before any run
        synthetic_config(model={"num_members": 1}, defense={"name": "gal"})
    cfg = synthetic_config(model={"num_members": 2}, defense={"name": "gal"})
    cfg.model.__dict__["num_members"] = 1  # bypass validation: the defense still refuses on its own
    with pytest.raises(ValueError, match="model.num_members"):
        build_defense(cfg)


def test_member_kwargs_build_the_right_members():
    _, ctx, _, _ = make_context("cldl")
    assert all(m.hidden is not None and m.hidden.out_features == 64 for m in ctx.ensemble.members)
    assert "lcm" in ctx.extra and sum(p.numel() for p in ctx.extra.parameters()) > 0
    _, ctx, x, _ = make_context("soe")
    assert ctx.ensemble.forward_output(x).aux.shape == (2, len(x))


def test_cldl_trains_the_label_confusion_model_jointly():
    defense, ctx, x, y = make_context("cldl", {"plus_adv": False})
    before = [p.detach().clone() for p in ctx.extra["lcm"].parameters()]
    defense.train_step(ctx, x, y)
    after = list(ctx.extra["lcm"].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("per_member", [False, True])
def test_dverge_updates_every_member_with_one_or_per_member_optimisers(per_member):
    defense, ctx, x, y = make_context("dverge", optim={"per_member": per_member, "lr": 0.05})
    assert len(ctx.optimizers) == (2 if per_member else 1)
    before = [m.fc.weight.detach().clone() for m in ctx.ensemble.members]
    loss_before = fixed_loss(defense, ctx, x, y)
    for _ in range(3):
        defense.train_step(ctx, x, y)
    for m, b in zip(ctx.ensemble.members, before, strict=True):
        assert not torch.equal(m.fc.weight, b)
    assert fixed_loss(defense, ctx, x, y) < loss_before


def test_dverge_layer_is_drawn_per_epoch_and_checkpointed():
    defense, ctx, _, _ = make_context("dverge", {"distill_steps": 1})
    layers = set()
    for epoch in range(12):
        ctx.epoch = epoch
        defense.on_epoch_start(ctx)
        assert 1 <= defense.layer <= 20
        layers.add(defense.layer)
    assert len(layers) > 1  # random per epoch, not fixed
    state = defense.state_dict()
    other = DEFENSES.get("dverge")(defense.params, defense.config)
    other.load_state_dict(state)
    assert other.layer == defense.layer == state["layer"]


def test_dverge_resume_is_exact(tmp_path):
    """1 epoch + resume + 1 epoch == 2 uninterrupted epochs (layer, generator and weights)."""
    from igat.training.trainer import Trainer

    def cfg():
        return synthetic_config(
            defense={"name": "dverge", "params": {"distill_steps": 1, "plus_adv": False}},
            data={"synthetic_train_size": 32, "augment": False},
            optim={"per_member": True},
            train={"epochs": 2, "batch_size": 16, "steps_per_epoch": 1, "eval_examples": 0},
        )

    full = Trainer(cfg(), output_dir=tmp_path / "full", resume=False)
    full.fit()
    first = cfg().model_copy(update={"train": cfg().train.model_copy(update={"epochs": 1})})
    Trainer(first, output_dir=tmp_path / "split", resume=False).fit()
    resumed = Trainer(cfg(), output_dir=tmp_path / "split", resume=True)
    assert resumed.start_epoch == 1
    resumed.fit()
    assert resumed.defense.layer == full.defense.layer
    for a, b in zip(full.ensemble.member_state_dicts(), resumed.ensemble.member_state_dicts(), strict=True):
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_trs_handles_any_number_of_members():
    defense, ctx, x, y = make_context("trs", model={"num_members": 3})
    metrics = defense.train_step(ctx, x, y)
    assert math.isfinite(metrics["cos"]) and math.isfinite(metrics["smooth"])
    assert metrics["smooth_eps"] == pytest.approx(0.1)  # epoch 0 of the eps schedule
