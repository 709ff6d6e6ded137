"""The IGAT wrapper on tiny ensembles: global examples, the two update paths, statistics, edge cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from igat.defenses import DEFENSES, build_defense
from igat.defenses.base import MemberStat
from igat.defenses.igat import IGAT, split_batch
from igat.defenses.standard import StandardTraining
from igat.training import HistoryCallback, Trainer
from tests.helpers import synthetic_config


def _igat_config(**igat):
    # no augmentation: pad-4 crops of 8x8 images would be mostly black
    return synthetic_config(data={"augment": False}, igat={"enabled": True, "attack": {"steps": 2}, **igat})


def _trainer(cfg, tmp_path) -> Trainer:
    return Trainer(cfg, output_dir=tmp_path / "run", resume=False)


def _batch(trainer: Trainer, n: int = 16):
    x, y = next(iter(trainer.loader))
    return x[:n], y[:n]


def test_build_defense_wraps_and_forwards_hooks():
    cfg = _igat_config()
    defense = build_defense(cfg)
    assert isinstance(defense, IGAT) and isinstance(defense.base, StandardTraining)
    assert defense.base_name == "standard" and defense.has_custom_step
    with pytest.raises(ValueError, match="twice"):
        IGAT(defense, cfg)


def test_split_batch():
    x, y = torch.arange(10).float(), torch.arange(10)
    xn, yn, xa, ya = split_batch(x, y, 0.5)
    assert xn.tolist() == list(range(5)) and xa.tolist() == list(range(5, 10))
    xn, _, xa, _ = split_batch(x, y, 1.0)
    assert torch.equal(xn, x) and torch.equal(xa, x)
    _, _, xa, _ = split_batch(x, y, 0.01)
    assert xa.numel() == 1  # at least one example is attacked


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_global_examples_attack_the_combined_ensemble(tmp_path, bn_mode):
    cfg = _igat_config(bn_mode=bn_mode, attack={"steps": 3, "eps": 8 / 255})
    tr = _trainer(cfg, tmp_path)
    tr.ensemble.train()
    x, y = _batch(tr)
    bn = next(m for m in tr.ensemble.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    x_adv = tr.defense.global_examples(tr.ctx, x, y)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in tr.ensemble.parameters())  # frozen: no parameter gradients
    assert all(p.requires_grad for p in tr.ensemble.parameters())  # ... and flags restored
    assert tr.ensemble.training  # mode restored
    moved = not torch.equal(before, bn.running_mean)
    assert moved == (bn_mode == "train")  # train mode = the reference's BN behaviour
    with torch.no_grad():
        tr.ensemble.train(bn_mode == "train")  # judge the attack against the model it attacked
        model = tr.ensemble.as_model("average")
        ce = torch.nn.functional.cross_entropy
        assert ce(model(x_adv), y) > ce(model(x), y)


def test_pure_loss_base_takes_one_step_with_all_terms(tmp_path):
    tr = _trainer(_igat_config(), tmp_path)
    calls = []
    orig = tr.ctx.optimize
    tr.ctx.optimize = lambda loss, member=None, what="loss": (calls.append(what), orig(loss, member, what))
    x, y = _batch(tr)
    tr.ensemble.train()
    metrics = tr.defense.train_step(tr.ctx, x, y)
    assert calls == ["loss"]
    for key in ("igat_dist_ce", "igat_lr_reg", "igat_ens_mis", "base_loss", "loss"):
        assert math.isfinite(metrics[key])
    a, b = tr.config.igat.alpha, tr.config.igat.beta
    assert metrics["loss"] == pytest.approx(metrics["base_loss"] + a * metrics["igat_dist_ce"] + b * metrics["igat_lr_reg"],
                                            rel=1e-4)


class _CustomStepBase(StandardTraining):
    """A defense with its own update order (like DVERGE): one step per member."""

    name = "custom_test"

    def __init__(self, params, config):
        super().__init__(params, config)
        self.calls = 0
        self.seen = 0

    def member_kwargs(self):
        return {"hidden_dim": 8}

    def train_step(self, ctx, x, y):
        self.calls += 1
        self.seen = x.shape[0]
        for i in range(ctx.ensemble.num_members):
            loss = nn.functional.cross_entropy(ctx.ensemble.members[i](x), y)
            ctx.optimize(loss, member=i, what=f"member{i}")
        return {"custom": 1.0}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


@pytest.mark.parametrize("alpha_beta", [(5.0, 10.0), (0.0, 0.0)])
def test_custom_step_base_runs_base_then_joint_igat_step(tmp_path, alpha_beta):
    cfg = _igat_config(alpha=alpha_beta[0], beta=alpha_beta[1], attack_fraction=0.5, dist_domain="adversarial",
                       reg_domain="adversarial")
    tr = _trainer(cfg, tmp_path)
    igat = IGAT(_CustomStepBase(StandardTraining.Params(), cfg), cfg)
    assert igat.member_kwargs() == {"hidden_dim": 8}
    calls = []
    orig = tr.ctx.optimize
    tr.ctx.optimize = lambda loss, member=None, what="loss": (calls.append(what), orig(loss, member, what))
    x, y = _batch(tr)
    tr.ensemble.train()
    metrics = igat.train_step(tr.ctx, x, y)
    expected = ["member0", "member1"] + (["iGAT loss"] if alpha_beta != (0.0, 0.0) else [])
    assert calls == expected  # no extra (momentum/weight-decay) step when iGAT's weights are zero
    assert igat.base.calls == 1 and igat.base.seen == 8  # the base saw the natural half only
    assert metrics["custom"] == 1.0 and "igat_dist_ce" in metrics
    # nat_acc needed a separate eval-mode forward (no natural examples in the iGAT forward)
    stats = {(s.member, s.statistic): s.value for s in igat.epoch_member_stats()}
    assert 0.0 <= stats[(0, "nat_acc")] <= 1.0 and sum(stats[(i, "alloc_count")] for i in range(2)) == 8
    # state forwarding
    assert igat.state_dict() == {"base": {"calls": 1}}
    igat.load_state_dict({"base": {"calls": 7}})
    assert igat.base.calls == 7
    with pytest.raises(TypeError, match="own train_step"):
        igat.loss(tr.ctx, x, y)


def test_member_with_no_examples_gives_finite_loss(tmp_path):
    # 3 members, 2 examples: at least one member receives nothing under any rule.
    cfg = synthetic_config(model={"num_members": 3}, data={"augment": False},
                           igat={"enabled": True, "attack": {"steps": 1}, "rule": "hard", "normalisation": "per_member"})
    tr = _trainer(cfg, tmp_path)
    x, y = _batch(tr, 2)
    tr.ensemble.train()
    metrics = tr.defense.train_step(tr.ctx, x, y)
    assert all(math.isfinite(v) for v in metrics.values())
    stats = {(s.member, s.statistic): s.value for s in tr.defense.epoch_member_stats()}
    assert min(stats[(i, "alloc_count")] for i in range(3)) == 0
    assert all(math.isfinite(s.value) for s in tr.defense.epoch_member_stats())
    assert all(torch.isfinite(p).all() for p in tr.ensemble.parameters())


def test_misclassified_only_distribution_and_stats_reset(tmp_path):
    cfg = _igat_config(distribute="misclassified", normalisation="batch", reg="code_sum", reg_clip=0.99,
                       attack_fraction=0.5, dist_domain="natural+adversarial")
    tr = _trainer(cfg, tmp_path)
    x, y = _batch(tr)
    tr.ensemble.train()
    tr.defense.train_step(tr.ctx, x, y)
    rows: list[MemberStat] = tr.defense.epoch_member_stats()
    stats = {(s.member, s.statistic): s.value for s in rows}
    offered = 16  # 8 natural + 8 adversarial examples offered for distribution
    distributed = sum(stats[(i, "alloc_count")] for i in range(2))
    assert distributed == pytest.approx(stats[(-1, "dist_fraction")] * offered)
    assert sum(v for (m, k), v in stats.items() if k.startswith("rank_hist_")) == pytest.approx(1.0 if distributed else 0.0)
    tr.defense.on_epoch_start(tr.ctx)
    assert tr.defense.epoch_member_stats() == []


@pytest.mark.parametrize("name", sorted(DEFENSES.names()))
def test_igat_wraps_every_registered_defense(tmp_path, name):
    # one tiny step of iGAT on top of each defense (every attack/distillation loop cut to one iteration)
    params = {k: 1 for k in DEFENSES.get(name).Params.model_fields if k.endswith("steps")}
    cfg = synthetic_config(defense={"name": name, "params": params}, model={"num_members": 3}, data={"augment": False},
                           igat={"enabled": True, "attack": {"steps": 1}},
                           train={"steps_per_epoch": 1, "eval_examples": 0, "batch_size": 16})
    hist = HistoryCallback()
    tr = Trainer(cfg, [hist], output_dir=tmp_path / name, resume=False)
    before = [p.detach().clone() for p in tr.ensemble.parameters()]
    tr.fit()
    assert isinstance(tr.defense, IGAT) and tr.defense.base.name == name
    assert set(tr.extra.keys()) == set(tr.defense.base.extra_modules(cfg.data.num_classes).keys())
    metrics = hist.steps[-1][2]
    assert all(math.isfinite(v) for v in metrics.values()) and "igat_dist_ce" in metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.ensemble.parameters(), strict=True))
    stats = {s.statistic for _, s in hist.member_stats}
    assert {"alloc_count", "nat_acc", "adv_acc", "rank_hist_1", "ens_misclassified", "lr_reg"} <= stats
