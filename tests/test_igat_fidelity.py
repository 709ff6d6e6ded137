"""iGAT as the paper describes it (issue 14 §1): one attack per step, presets' per-defense values,
warm starts for any run, and a combined-model wrapper that reports the ensemble's mode."""

from __future__ import annotations

import importlib

import pytest
import torch

from igat.config import with_overrides
from igat.defenses import build_defense
from igat.presets import apply_preset
from igat.training import Trainer
from tests.helpers import synthetic_config

pgd_module = importlib.import_module("igat.attacks.pgd")  # the package re-exports a function of the same name
igat_module = importlib.import_module("igat.defenses.igat")

SMALL = ["train.batch_size=16", "train.steps_per_epoch=1", "train.eval_examples=0", "igat.attack.steps=2",
         "model.num_members=3"]


def _igat_cfg(defense: str, preset: str, *extra: str):
    base = synthetic_config(defense={"name": defense}, model={"num_members": 3})
    return with_overrides(apply_preset(base, preset), [*SMALL, *extra])


class _CountingPGD:
    def __init__(self) -> None:
        self.calls: list[int] = []
        self.original = pgd_module.pgd

    def __call__(self, model, x, *args, **kwargs):
        self.calls.append(x.shape[0])
        return self.original(model, x, *args, **kwargs)


@pytest.fixture
def pgd_calls(monkeypatch) -> _CountingPGD:
    counter = _CountingPGD()
    monkeypatch.setattr(pgd_module, "pgd", counter)  # ensemble_pgd / per_member_attack import it lazily
    monkeypatch.setattr(igat_module, "pgd", counter)  # the global attack
    return counter


def _one_step(cfg) -> dict[str, float]:
    trainer = Trainer(cfg, resume=False, output_dir=None)
    x, y = next(iter(trainer.loader))
    trainer.ensemble.train()
    return trainer.defense.train_step(trainer.ctx, x, y)


@pytest.mark.parametrize("preset", ["paper", "reference-code"])
@pytest.mark.parametrize("defense", ["adp", "gal", "cldl", "soe"])
def test_igat_step_makes_exactly_one_attack(defense, preset, pgd_calls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _igat_cfg(defense, preset)
    assert cfg.igat.base_adv is False
    assert cfg.defense_params().plus_adv is True, "the base config keeps its AT; iGAT drops it when it wraps"
    metrics = _one_step(cfg)
    assert len(pgd_calls.calls) == 1, f"{defense}/{preset}: {len(pgd_calls.calls)} attacks in one iGAT step"
    assert "igat_dist_ce" in metrics
    assert not any(k.startswith(("adv_", "member_adv", "soe_adv")) for k in metrics), sorted(metrics)


def test_base_adv_switch_restores_the_old_second_attack(pgd_calls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_step(_igat_cfg("adp", "paper", "igat.base_adv=true"))
    assert len(pgd_calls.calls) == 2


def test_base_defense_alone_keeps_its_adversarial_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = with_overrides(synthetic_config(defense={"name": "adp"}, model={"num_members": 3}), SMALL[:3])
    assert build_defense(plain).params.plus_adv is True
    assert build_defense(_igat_cfg("adp", "paper")).base.params.plus_adv is False
    pgd_at = _igat_cfg("pgd_at", "paper")
    assert build_defense(pgd_at).base.params.clean_weight == 1.0  # natural CE is all that is left of PGD-AT
    trs = _igat_cfg("trs", "paper")
    assert build_defense(trs).base.params.plus_adv is True  # TRS's inner maximisation belongs to its loss


def test_reference_preset_soe_alpha_beta_and_dverge_attack_steps():
    soe = apply_preset(synthetic_config(defense={"name": "soe"}, model={"num_members": 3}), "reference-code")
    assert (soe.igat.alpha, soe.igat.beta) == (0.25, 0.5)
    dverge = apply_preset(synthetic_config(defense={"name": "dverge"}, model={"num_members": 3}), "reference-code")
    assert dverge.defense_params().adv_steps == 20 and dverge.defense_params().plus_adv is True
    assert dverge.igat.base_adv is True  # the reference iGAT-DVERGE trainer keeps DVERGE's per-member AT
    assert build_defense(dverge).base.params.plus_adv is True
    paper = apply_preset(synthetic_config(defense={"name": "dverge"}, model={"num_members": 3}), "paper")
    assert paper.igat.base_adv is False and build_defense(paper).base.params.plus_adv is False


def test_warm_start_applies_to_any_run(tmp_path):
    base = Trainer(synthetic_config(name="std", output_dir=str(tmp_path / "std"),
                                    train={"epochs": 1, "eval_examples": 0})).fit()
    dverge = synthetic_config(name="dv", output_dir=str(tmp_path / "dv"), defense={"name": "dverge"},
                              train={"epochs": 1, "eval_examples": 0, "init_checkpoint": base.checkpoint})
    assert not dverge.igat.enabled
    trainer = Trainer(dverge)
    want = torch.load(base.checkpoint, weights_only=True)["members"]
    for member, state in zip(trainer.ensemble.members, want, strict=True):
        for k, v in member.state_dict().items():
            assert torch.equal(v, state[k]), k
    assert trainer.start_epoch == 0  # a warm start is a new run: epochs, optimiser and RNG start fresh


def test_old_igat_init_checkpoint_key_is_migrated():
    cfg = synthetic_config(igat={"enabled": True, "init_checkpoint": "runs/x/last.pt"})
    assert cfg.train.init_checkpoint == "runs/x/last.pt" and "init_checkpoint" not in cfg.to_dict()["igat"]
    with pytest.raises(ValueError, match="conflicts with igat.init_checkpoint"):
        synthetic_config(igat={"init_checkpoint": "a.pt"}, train={"init_checkpoint": "b.pt"})


def test_combined_model_reports_the_ensembles_mode_and_torchattacks_keeps_it():
    torchattacks = pytest.importorskip("torchattacks")
    from igat.models.ensemble import Ensemble
    from igat.models.resnet import ResNet20

    ens = Ensemble([ResNet20(num_classes=4) for _ in range(2)])
    ens.eval()
    model = ens.as_model("average")
    assert model.training is False
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=2)(x, y)
    assert not ens.training and not any(m.training for m in ens.modules())
    ens.train()
    assert model.training is True
    model.eval()  # switching the wrapper switches the ensemble
    assert not ens.training and not any(m.training for m in ens.members)


def test_ablation_base_path_warm_starts_dverge_from_a_standard_ensemble(tmp_path):
    from igat.ablation import run_ablation

    cfg = with_overrides(apply_preset(synthetic_config(defense={"name": "dverge", "params": {"plus_adv": False}},
                                                       model={"num_members": 2}), "paper"),
                         ["train.batch_size=16", "train.steps_per_epoch=1", "train.eval_examples=0",
                          "igat.attack.steps=1", "eval.num_examples=16", "defense.params.distill_steps=1"])
    msgs: list[str] = []
    result = run_ablation(cfg, seeds=[0], output_root=tmp_path / "abl", progress=msgs.append)
    assert any("pre-training the standard ensemble" in m for m in msgs), msgs
    base = torch.load(tmp_path / "abl" / "base" / "last.pt", weights_only=True)
    assert base["config"]["train"]["init_checkpoint"] == str(tmp_path / "abl" / "pretrain" / "last.pt")
    assert len(result.rows) == 5


@pytest.mark.parametrize("defense", ["adp", "gal", "trs", "dverge", "cldl", "soe"])
def test_pair_defenses_refuse_one_member_when_the_config_is_validated(defense):
    from igat.config import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({"defense": {"name": defense}, "model": {"num_members": 1}})
    assert info.value.errors == [("model.num_members", f"must be an integer >= 2 for defense {defense!r} "
                                                       "(its diversity terms compare member pairs), got 1")]


def test_dverge_layer_is_checked_against_the_depth_in_the_config():
    from igat.config import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError, match=r"defense.params.layer: must be in 1..8"):
        ExperimentConfig.from_dict({"defense": {"name": "dverge", "params": {"layer": 12}}, "model": {"depth": 8}})
    assert ExperimentConfig.from_dict({"defense": {"name": "dverge", "params": {"layer": 12}}}).model.depth == 20
