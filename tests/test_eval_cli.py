"""``igat eval`` / ``igat report`` on a tiny checkpoint trained with the real Trainer."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from igat.cli import main
from igat.evaluation import evaluate_checkpoint, method_and_variant, resolve_attacks
from tests.helpers import synthetic_config

# Cheap attack settings for the CLI (the defaults are the paper's and take minutes on CPU).
CHEAP_ATTACKS = (
    "eval.attacks=[{name: pgd, params: {steps: 3}}, {name: cw, params: {steps: 3}}, "
    "{name: signhunter, params: {max_queries: 20}}, "
    "{name: autoattack, params: {version: fast, n_iter: 3}}]"
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from igat.training import Trainer

    out = tmp_path_factory.mktemp("run")
    config = synthetic_config(name="evaltest", seed=3, train={"eval_examples": 0})
    result = Trainer(config, output_dir=out, device="cpu", resume=False).fit()
    yield result.checkpoint
    torch.set_num_threads(threads)


def _copy_checkpoint(src: str, dst_dir) -> str:
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / "last.pt"
    dst.write_bytes(open(src, "rb").read())
    return str(dst)


def test_igat_eval_writes_the_tidy_table(checkpoint, tmp_path, capsys):
    ckpt = _copy_checkpoint(checkpoint, tmp_path / "a")
    code = main(["eval", ckpt, "--protocol", "config", "--attacks", "pgd,cw,signhunter,autoattack", "--num-examples",
                 "16", "--device", "cpu", "--config-override", CHEAP_ATTACKS, "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "signhunter" in out and "autoattack" in out and "wrote" in out

    frame = pd.read_csv(tmp_path / "a" / "eval.csv", keep_default_na=False)
    attacks = ["natural", "pgd", "cw", "signhunter", "autoattack"]
    expected = {("ensemble", c, a) for c in ("average", "max") for a in attacks}
    expected |= {(f"member_{i}", "-", a) for i in range(2) for a in ("natural", "pgd")}
    assert set(zip(frame["target"], frame["combiner"], frame["attack"], strict=True)) == expected
    assert len(frame) == len(expected)
    assert frame["accuracy"].between(0, 1).all()
    assert (frame["num_examples"] == 16).all()
    assert (frame["method"] == "standard").all() and (frame["seed"] == 3).all()
    assert (frame["checkpoint"] == str((tmp_path / "a" / "last.pt").resolve())).all()
    sh = frame[frame["attack"] == "signhunter"]
    assert (sh["queries_max"].astype(float) <= 20).all() and (sh["queries_median"].astype(float) >= 1).all()
    aa = frame[frame["attack"] == "autoattack"].iloc[0]
    assert aa["version"] == "fast" and aa["implementation"].startswith("pyautoattack ")

    records = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert len(records) == len(frame)
    assert {(r["target"], r["combiner"], r["attack"]) for r in records} == expected
    by_key = {(r["target"], r["combiner"], r["attack"]): r["accuracy"] for r in records}
    for row in frame.itertuples():
        assert by_key[(row.target, row.combiner, row.attack)] == pytest.approx(row.accuracy)


def test_defaults_come_from_the_checkpoint_config(checkpoint, tmp_path):
    ckpt = _copy_checkpoint(checkpoint, tmp_path / "b")
    assert main(["eval", ckpt, "--protocol", "config", "--device", "cpu", "--no-progress", "--combiners", "average",
                 "--no-members"]) == 0
    frame = pd.read_csv(tmp_path / "b" / "eval.csv")
    # synthetic_config: eval.attacks = natural + PGD-5 on 64 examples
    assert list(frame["attack"]) == ["natural", "pgd"]
    assert list(frame["combiner"]) == ["average", "average"]
    assert (frame["num_examples"] == 64).all()
    nat, adv = frame["accuracy"]
    assert adv <= nat


def test_evaluate_checkpoint_library_function(checkpoint, tmp_path):
    rows = evaluate_checkpoint(checkpoint, combiners=["max"], attacks=["fgsm"], num_examples=8, device="cpu",
                               per_member=False, out_dir=tmp_path)
    assert [(r.target, r.combiner, r.attack) for r in rows] == [("ensemble", "max", "natural"), ("ensemble", "max", "fgsm")]
    assert all(r.num_examples == 8 and r.seed == 3 and r.method == "standard" and r.variant == "" for r in rows)
    assert (tmp_path / "eval.csv").exists() and (tmp_path / "eval.json").exists()
    # Same seed, same result: the evaluation is deterministic.
    again = evaluate_checkpoint(checkpoint, combiners=["max"], attacks=["fgsm"], num_examples=8, device="cpu",
                                per_member=False, write=False)
    assert [r.accuracy for r in again] == [r.accuracy for r in rows]


def test_bad_names_give_clear_errors(checkpoint, tmp_path, capsys):
    ckpt = _copy_checkpoint(checkpoint, tmp_path / "c")
    assert main(["eval", ckpt, "--combiners", "median", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "combiners" in err and "median" in err and "average" in err
    assert main(["eval", ckpt, "--attacks", "deepfool", "--device", "cpu", "--no-progress"]) == 2
    assert "deepfool" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing"), "--device", "cpu", "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "c" / "eval.csv").exists()


def test_resolve_attacks_and_variants():
    cfg = synthetic_config()
    specs = resolve_attacks(["pgd", "signhunter", "pgd"], cfg)
    assert [s.name for s in specs] == ["natural", "pgd", "signhunter"]
    assert specs[1].params == {"steps": 5}  # taken from the config's eval.attacks
    assert method_and_variant(cfg) == ("standard", "")
    # iGAT variants for Table 3 (the config model validates igat fields without the IGAT defense module)
    assert method_and_variant(cfg.model_copy(update={"igat": cfg.igat.model_copy(update={"enabled": True})})) == (
        "iGAT_standard", "full")
    igat_hard = cfg.igat.model_copy(update={"enabled": True, "rule": "hard"})
    assert method_and_variant(cfg.model_copy(update={"igat": igat_hard}))[1] == "hard"
    igat_b0 = cfg.igat.model_copy(update={"enabled": True, "beta": 0.0})
    assert method_and_variant(cfg.model_copy(update={"igat": igat_b0}))[1] == "beta0"


def test_igat_report_builds_tables_from_eval_files(tmp_path, capsys):
    # Hand-made eval results of two methods and two seeds, in two layouts (csv and json).
    def rows(method, seed, nat, pgd):
        return [{"checkpoint": f"{method}-{seed}", "method": method, "variant": "full" if "iGAT" in method else "",
                 "seed": seed, "target": "ensemble", "combiner": "average", "attack": a, "accuracy": v,
                 "num_examples": 100} for a, v in (("natural", nat), ("pgd", pgd))]

    (tmp_path / "r1").mkdir()
    pd.DataFrame(rows("adp", 0, 0.80, 0.40) + rows("adp", 1, 0.82, 0.42)).to_csv(tmp_path / "r1" / "eval.csv", index=False)
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "eval.json").write_text(json.dumps(rows("iGAT_adp", 0, 0.84, 0.46) + rows("iGAT_adp", 1, 0.86, 0.46)))
    out = tmp_path / "tables"
    assert main(["report", str(tmp_path / "r1"), str(tmp_path / "r2"), "--out", str(out)]) == 0
    for stem in ("table1", "table2"):
        for ext in ("csv", "md", "tex"):
            assert (out / f"{stem}.{ext}").exists()
    t2 = pd.read_csv(out / "table2.csv")
    pgd = t2[t2["attack"] == "pgd"].iloc[0]
    assert pgd["improvement"] == pytest.approx((46 - 41) / 41 * 100)
    assert "**46.00 ± 0.00**" in (out / "table1.md").read_text()
    assert "iGAT_ADP" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing"), "--out", str(out)]) == 2
