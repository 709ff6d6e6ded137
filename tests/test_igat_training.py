"""End to end: fine-tune a pgd_at ensemble with iGAT, presets in checkpoints, the ablation runner and CLI."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from igat.ablation import VARIANTS, ablation_variants, base_config_of, format_table, run_ablation
from igat.cli import main as cli_main
from igat.config import ConfigError, ExperimentConfig, with_overrides
from igat.data import load_dataset
from igat.evaluation import method_and_variant
from igat.presets import apply_preset, igat_defaults, milestones_for
from igat.training import HistoryCallback, Trainer, load_checkpoint
from tests.helpers import synthetic_config

# PGD-AT on a small eps so the tiny base learns the synthetic task in 16 steps; no augmentation
# (pad-4 crops of 8x8 images are mostly padding).
PGD_AT = {"name": "pgd_at", "params": {"steps": 2, "eps": 4 / 255, "step_size": 2 / 255, "clean_weight": 0.5}}
DATA = {"synthetic_train_size": 256, "augment": False}


def _base_config(**over):
    train = {"epochs": 2, "batch_size": 32, "eval_pgd_steps": 0, **over.pop("train", {})}
    return synthetic_config(defense=PGD_AT, data=DATA, optim={"lr": 0.05}, train=train, **over)


def _igat_config(base_ckpt: str, **igat):
    return synthetic_config(
        defense=PGD_AT, data=DATA, optim={"lr": 0.01},
        train={"epochs": 1, "batch_size": 64, "eval_pgd_steps": 0},
        igat={"enabled": True, "init_checkpoint": base_ckpt, "attack": {"steps": 3}, **igat},
    )


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("igat-base")
    hist = HistoryCallback()
    result = Trainer(_base_config(), [hist], output_dir=out / "base").fit()
    return result, hist


def test_igat_finetuning_keeps_accuracy_and_records_stats(base_run, tmp_path):
    base, base_hist = base_run
    base_nat = base.final_metrics["test_nat_acc_average"]
    assert base_nat >= 0.6  # the base really learned the task, so a drop would be visible

    cfg = _igat_config(base.checkpoint)
    hist = HistoryCallback()
    trainer = Trainer(cfg, [hist], output_dir=tmp_path / "igat")
    # fine-tuning starts from the base weights
    base_members = load_checkpoint(base.checkpoint)["members"]
    for got, want in zip(trainer.ensemble.member_state_dicts(), base_members, strict=True):
        assert all(torch.equal(got[k], want[k]) for k in want)
    result = trainer.fit()
    nat = result.final_metrics["test_nat_acc_average"]
    assert nat >= base_nat - 0.05, (base_nat, nat)

    # step metrics carry the scalar statistics
    step_metrics = hist.steps[-1][2]
    for key in ("igat_dist_ce", "igat_lr_reg", "igat_ens_mis", "base_loss"):
        assert key in step_metrics
    # per-member statistics of the epoch
    n, c = cfg.model.num_members, cfg.data.num_classes
    stats = {(s.member, s.statistic): s.value for _, s in hist.member_stats}
    adv_per_epoch = len(trainer.loader) * cfg.train.batch_size  # distribute=all: every global example is given out
    assert sum(stats[(i, "alloc_count")] for i in range(n)) == adv_per_epoch
    for i in range(n):
        assert sum(stats[(i, f"alloc_class_{k}")] for k in range(c)) == stats[(i, "alloc_count")]
        assert 0.0 <= stats[(i, "nat_acc")] <= 1.0 and 0.0 <= stats[(i, "adv_acc")] <= 1.0
    assert sum(stats[(-1, f"rank_hist_{r}")] for r in range(1, n + 1)) == pytest.approx(1.0)
    assert stats[(-1, "rank_hist_1")] > stats[(-1, f"rank_hist_{n}")]  # soft rule favours the most confident member
    assert 0.0 <= stats[(-1, "ens_misclassified")] <= 1.0
    assert stats[(-1, "lr_reg")] >= 0.0 and stats[(-1, "lr_reg")] == pytest.approx(
        result.final_metrics["train_igat_lr_reg"])


def test_reference_code_preset_fields_and_checkpoint(base_run, tmp_path):
    base, _ = base_run
    cfg = apply_preset(_igat_config(base.checkpoint), "reference-code")
    ig = cfg.igat
    assert cfg.preset == "reference-code"
    assert (ig.distribute, ig.reg, ig.reg_clip, ig.normalisation, ig.bn_mode) == (
        "misclassified", "code_sum", 0.99, "batch", "train")
    assert (ig.attack.steps, ig.attack.random_start, ig.attack_fraction) == (20, True, 0.5)
    assert ig.attack.step_size == pytest.approx(2 / 255) and ig.attack.eps == pytest.approx(8 / 255)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.milestones) == (
        "sgd", 0.001, 0.9, 1e-4, [])
    assert (cfg.train.batch_size, cfg.train.steps_per_epoch) == (512, 51)
    assert cfg.train.init_checkpoint == base.checkpoint and ig.enabled
    # the reference DVERGE trainer: per-member optimisers, max combiner (inverted flag), adversarial-only terms
    dv = apply_preset(with_overrides(cfg, ["defense.name=dverge", "defense.params={}"]), "reference-code")
    assert (dv.igat.combiner, dv.optim.per_member, dv.igat.dist_domain, dv.igat.reg_domain) == (
        "max", True, "adversarial", "adversarial")

    # the preset survives into the checkpoint (small budget for the test)
    small = with_overrides(cfg, ["igat.attack.steps=2", "train.batch_size=64", "train.steps_per_epoch=2"])
    assert small.preset == "reference-code"
    result = Trainer(small, output_dir=tmp_path / "ref").fit()
    saved = ExperimentConfig.from_dict(load_checkpoint(result.checkpoint)["config"])
    assert saved.preset == "reference-code" and saved.igat.reg == "code_sum" and saved.igat.bn_mode == "train"


def test_paper_preset_and_defaults():
    cfg = apply_preset(synthetic_config(defense={"name": "pgd_at"}, train={"epochs": 10}), "paper")
    assert cfg.preset == "paper" and cfg.igat.enabled
    assert (cfg.igat.alpha, cfg.igat.beta, cfg.igat.rule, cfg.igat.distribute, cfg.igat.normalisation, cfg.igat.reg) == (
        5.0, 10.0, "soft", "all", "per_member", "paper")
    assert (cfg.optim.lr, cfg.optim.milestones, cfg.optim.gamma, cfg.train.batch_size, cfg.train.epochs) == (
        0.01, [5], 0.2, 512, 10)
    soe = igat_defaults("soe")
    assert (soe["igat"]["alpha"], soe["igat"]["beta"]) == (0.25, 0.5)
    for name in ("adp", "cldl", "dverge", "pgd_at"):
        assert (igat_defaults(name)["igat"]["alpha"], igat_defaults(name)["igat"]["beta"]) == (5.0, 10.0)
    c100 = igat_defaults("dverge", "cifar100", epochs=40)["optim"]
    assert (c100["lr"], c100["milestones"], c100["gamma"]) == (0.1, [20, 30], 0.2)  # 0.1 -> 0.02 -> 0.004
    assert milestones_for(1, [0.5]) == []
    with pytest.raises(ConfigError, match="preset"):
        apply_preset(cfg, "folklore")


def test_ablation_variants_share_everything_but_the_rule(tmp_path):
    cfg = _igat_config(str(tmp_path / "base.pt")).model_copy(update={"output_dir": str(tmp_path / "abl")})
    variants = ablation_variants(cfg)
    assert [lab for lab, _ in variants] == [lab for lab, _, _ in VARIANTS] == ["opposite", "random", "hard", "beta0", "full"]
    got = {lab: (v.igat.rule, v.igat.beta) for lab, v in variants}
    assert got == {"opposite": ("opposite", 10.0), "random": ("random", 10.0), "hard": ("hard", 10.0),
                   "beta0": ("soft", 0.0), "full": ("soft", 10.0)}
    for lab, v in variants:
        assert method_and_variant(v) == ("iGAT_pgd_at", lab)  # the label the reports group by
        assert v.seed == cfg.seed and v.train.init_checkpoint == cfg.train.init_checkpoint and v.igat.alpha == cfg.igat.alpha
        assert v.igat.enabled and "ablation" in v.tags
    assert len({v.output_dir for _, v in variants}) == 5 and len({v.name for _, v in variants}) == 5
    base = base_config_of(cfg)
    assert not base.igat.enabled and base.train.init_checkpoint is None


def test_run_ablation_from_base_checkpoint(base_run, tmp_path):
    base, _ = base_run
    cfg = with_overrides(_igat_config(base.checkpoint), ["train.steps_per_epoch=1", "train.eval_examples=0",
                                                         "eval.num_examples=32"])
    data = load_dataset(cfg.data, cfg.seed)
    msgs: list[str] = []
    result = run_ablation(cfg, base_checkpoint=base.checkpoint, output_root=tmp_path / "abl", dataset=data,
                          progress=msgs.append)
    assert [r.variant for r in result.rows] == ["opposite", "random", "hard", "beta0", "full"]
    assert all(0.0 <= r.natural <= 1.0 and 0.0 <= r.pgd <= r.natural + 1e-9 for r in result.rows)
    # one fine-tuning step from a good base: natural accuracy stays well above chance in every variant
    assert min(r.natural for r in result.rows) > 0.5
    table = format_table(result)
    assert "Natural (%)" in table and "PGD (%)" in table and "beta=0" in table
    assert len({r.checkpoint for r in result.rows}) == 5


def test_ablate_cli_trains_base_first(tmp_path, capsys):
    cfg = _base_config(train={"epochs": 1, "steps_per_epoch": 1, "eval_examples": 0})
    data = cfg.to_dict()
    data["igat"] = {"attack": {"steps": 1}}
    data["eval"]["num_examples"] = 16
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    out_json = tmp_path / "rows.json"
    rc = cli_main(["ablate", str(path), "--output", str(tmp_path / "runs"), "--json", str(out_json),
                   "--set", "optim.lr=0.01", "--base-set", "optim.lr=0.05"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "Opposite" in printed.out and "PGD (%)" in printed.out and "training the base" in printed.err
    rows = json.loads(out_json.read_text())
    assert rows["base_checkpoint"].endswith("last.pt") and (tmp_path / "runs" / "base" / "last.pt").exists()
    assert len(rows["rows"]) == 5
    # bad override -> clear error naming the field
    assert cli_main(["ablate", str(path), "--set", "igat.rule=best"]) == 2
    assert "igat.rule" in capsys.readouterr().err


def test_presets_pick_their_cw_attack():
    attacks = [{"name": "natural"}, {"name": "cw", "params": {"steps": 5, "num_examples": 50}}]
    cfg = synthetic_config(defense={"name": "pgd_at"}, eval={"attacks": attacks})
    ref = apply_preset(cfg, "reference-code")
    assert [(a.name, a.params) for a in ref.eval.attacks] == [("natural", {}), ("cw_opt", {"num_examples": 50})]
    back = apply_preset(ref, "paper")
    assert [(a.name, a.params) for a in back.eval.attacks] == [("natural", {}), ("cw", {"num_examples": 50})]
    # both listed: a deliberate comparison, left alone
    both = synthetic_config(eval={"attacks": [{"name": "cw"}, {"name": "cw_opt"}]})
    assert [a.name for a in apply_preset(both, "reference-code").eval.attacks] == ["cw", "cw_opt"]
    # no CW at all: nothing added
    assert [a.name for a in apply_preset(synthetic_config(), "reference-code").eval.attacks] == \
        [a.name for a in synthetic_config().eval.attacks]
