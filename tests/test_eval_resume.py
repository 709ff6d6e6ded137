"""Trustworthy evaluation: Wilson intervals, protocols and their cost estimate, incremental and resumable
``igat eval`` (an evaluation killed half-way finishes with every result present once, nothing recomputed)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
import yaml

import igat.evaluation as evaluation
from igat.cli import main
from igat.config import AttackSpec, ExperimentConfig
from igat.evaluation import EvalRow, evaluate_checkpoint, summary_table
from igat.protocols import (
    SECONDS_PER_MEMBER_PASS,
    apply_protocol,
    estimate_seconds,
    passes_per_example,
    protocol_of,
)
from igat.stats import half_width, overlap, wilson, wilson_of_accuracy
from tests.helpers import synthetic_config

# Cheap attacks: 2 combiners x 3 attacks + 2 members x 3 attacks = 12 results.
CHEAP = ("eval.attacks=[{name: natural}, {name: pgd, params: {steps: 2}}, {name: fgsm}]", "eval.num_examples=32")


# --- Wilson ------------------------------------------------------------------------------------------

def test_wilson_of_45_in_100_matches_the_hand_computation():
    # p = 0.45, z = 1.96, z^2 = 3.8416: centre = (0.45 + 3.8416/200) / (1 + 3.8416/100) = 0.469208 / 1.038416
    # = 0.451850; half = 1.96 sqrt(0.45 * 0.55 / 100 + 3.8416 / 40000) / 1.038416 = 1.96 * 0.0507054 / 1.038416
    # = 0.095706 -> [0.356144, 0.547556]
    lo, hi = wilson(45, 100)
    assert lo == pytest.approx(0.356144, abs=2e-6) and hi == pytest.approx(0.547556, abs=2e-6)
    assert half_width(lo, hi) == pytest.approx(0.095706, abs=2e-6)
    assert wilson_of_accuracy(0.45, 100) == (lo, hi)


def test_wilson_edges_stay_in_the_unit_interval():
    assert wilson(0, 50)[0] == 0.0 and 0.0 < wilson(0, 50)[1] < 0.1
    assert wilson(50, 50)[1] == 1.0 and 0.9 < wilson(50, 50)[0] < 1.0
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(1, -1)
    # more examples, narrower interval; the paper's 10,000 at 45 % is about +-1 point
    assert half_width(*wilson(4500, 10000)) == pytest.approx(0.00975, abs=1e-4)
    assert overlap((0.1, 0.3), (0.3, 0.5)) and not overlap((0.1, 0.29), (0.3, 0.5))


def test_every_eval_row_carries_its_interval():
    row = EvalRow("ensemble", "average", "pgd", 0.45, 100)
    assert (row.ci_low, row.ci_high) == wilson(45, 100)
    flat = row.flat()
    assert flat["ci_low"] == row.ci_low and flat["num_examples"] == 100


# --- protocols and the cost model ----------------------------------------------------------------------

def test_the_paper_protocol_is_the_spec_and_quick_caps_it():
    config = ExperimentConfig()
    paper = apply_protocol(config, "paper")
    assert paper.eval.num_examples is None  # the whole test set
    caps = {a.name: a.num_examples for a in paper.eval.attacks}
    assert caps == {"natural": None, "pgd": None, "cw": 1000, "signhunter": None, "autoattack": None}
    assert next(a for a in paper.eval.attacks if a.name == "pgd").params == {"steps": 20}
    assert protocol_of(paper) == "paper" and protocol_of(config) == "custom"
    quick = apply_protocol(config, "quick")
    assert quick.eval.num_examples == 1000
    assert {a.name: a.num_examples for a in quick.eval.attacks}["autoattack"] == 500
    assert protocol_of(quick) == "quick"
    # the reference-code preset's CW is the C&W optimisation attack
    ref = apply_protocol(ExperimentConfig(preset="reference-code"), "paper")
    assert [a.name for a in ref.eval.attacks] == ["natural", "pgd", "cw_opt", "signhunter", "autoattack"]


def test_the_estimate_is_examples_times_iterations_times_members_times_the_constant():
    config = ExperimentConfig.from_dict({
        "model": {"num_members": 2}, "eval": {"combiners": ["average"], "per_member": False, "num_examples": 100,
                                              "attacks": [{"name": "natural"}, {"name": "pgd", "params": {"steps": 20}}]}})
    est = estimate_seconds(config, "cpu")
    forward = 1 / 3
    passes = 100 * 2 * forward + 100 * 2 * (20 + forward)
    assert est.member_passes == pytest.approx(passes)
    assert est.seconds == pytest.approx(passes * SECONDS_PER_MEMBER_PASS["cpu"])
    assert "estimate" in est.text()
    assert estimate_seconds(config, "cuda").seconds is None  # never measured: no number rather than a guess
    # the paper protocol on the paper's 8-member ensemble takes far longer than quick
    big = ExperimentConfig()
    assert estimate_seconds(apply_protocol(big, "paper")).seconds > 10 * estimate_seconds(apply_protocol(big, "quick")).seconds
    assert passes_per_example(AttackSpec(name="signhunter")) > passes_per_example(AttackSpec(name="pgd"))


# --- resumable igat eval ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from igat.training import Trainer

    out = tmp_path_factory.mktemp("run")
    config = synthetic_config(name="resume", seed=5, train={"eval_examples": 0})
    result = Trainer(config, output_dir=out, device="cpu", resume=False).fit()
    yield result.checkpoint
    torch.set_num_threads(threads)


def _copy(src: str, folder) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, folder / "last.pt")
    return str(folder / "last.pt")


class Counter:
    """Counts attack runs (igat.evaluation.attack_accuracy calls), optionally failing on call ``fail_at``."""

    def __init__(self, monkeypatch, fail_at: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_at = fail_at
        real = evaluation.attack_accuracy

        def counted(*args, **kwargs):
            self.calls.append(len(args[2]))
            if self.fail_at is not None and len(self.calls) == self.fail_at:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the middle of this attack
            return real(*args, **kwargs)

        monkeypatch.setattr(evaluation, "attack_accuracy", counted)


def _stop_after(k: int):
    seen = []

    def progress(row) -> None:
        seen.append(row)
        if len(seen) == k:
            raise RuntimeError("killed")  # the process dies right after the k-th result was stored

    return progress


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame([r.flat() for r in rows]).sort_values(["target", "combiner", "attack"]).reset_index(drop=True)


def test_a_killed_evaluation_resumes_with_the_same_table_and_recomputes_nothing(checkpoint, tmp_path, monkeypatch):
    whole = evaluate_checkpoint(_copy(checkpoint, tmp_path / "whole"), device="cpu", overrides=CHEAP,
                                member_attacks=None)
    assert len(whole) == 12

    ckpt = _copy(checkpoint, tmp_path / "killed")
    counter = Counter(monkeypatch)
    with pytest.raises(RuntimeError, match="killed"):
        evaluate_checkpoint(ckpt, device="cpu", overrides=CHEAP, member_attacks=None, progress=_stop_after(5))
    assert len(counter.calls) == 5
    stored = json.loads((tmp_path / "killed" / "eval.json").read_text())
    assert len(stored) == 5 and len(pd.read_csv(tmp_path / "killed" / "eval.csv")) == 5
    assert len({r["eval_key"] for r in stored}) == 5

    counter.calls.clear()
    resumed = evaluate_checkpoint(ckpt, device="cpu", overrides=CHEAP, member_attacks=None)
    assert len(counter.calls) == 12 - 5  # the stored results are not computed again
    cols = ["target", "combiner", "attack", "accuracy", "num_examples", "ci_low", "ci_high", "eval_key"]
    pd.testing.assert_frame_equal(_frame(resumed)[cols], _frame(whole)[cols])
    assert summary_table(resumed) == summary_table(whole)
    final = pd.read_csv(tmp_path / "killed" / "eval.csv")
    assert len(final) == 12 and final["eval_key"].is_unique
    assert set(zip(final["target"], final["combiner"], final["attack"])) == \
        {(r.target, r.combiner, r.attack) for r in whole}

    counter.calls.clear()  # a third run finds everything stored
    assert len(evaluate_checkpoint(ckpt, device="cpu", overrides=CHEAP, member_attacks=None)) == 12
    assert counter.calls == []


def test_a_changed_checkpoint_or_setting_never_reuses_stale_results(checkpoint, tmp_path, monkeypatch):
    ckpt = _copy(checkpoint, tmp_path / "c")
    evaluate_checkpoint(ckpt, device="cpu", overrides=CHEAP, per_member=False)
    counter = Counter(monkeypatch)
    evaluate_checkpoint(ckpt, device="cpu", overrides=CHEAP, per_member=False, seed=99)  # another attack seed
    assert len(counter.calls) == 6
    counter.calls.clear()
    evaluate_checkpoint(ckpt, device="cpu", overrides=CHEAP, per_member=False, seed=99, resume=False)
    assert len(counter.calls) == 6  # resume off: everything again
    counter.calls.clear()
    ck = torch.load(ckpt, weights_only=True)
    first = next(iter(ck["members"][0]))
    ck["members"][0][first] = ck["members"][0][first] + 0.01  # a retrained checkpoint in the same place
    torch.save(ck, ckpt)
    rows = evaluate_checkpoint(ckpt, device="cpu", overrides=CHEAP, per_member=False, seed=99)
    assert len(counter.calls) == 6 and len(rows) == 6
    assert len(json.loads((tmp_path / "c" / "eval.json").read_text())) == 6  # stale rows replaced, not kept


def test_igat_eval_prints_the_estimate_resumes_after_ctrl_c_and_records_n(checkpoint, tmp_path, monkeypatch, capsys):
    ckpt = _copy(checkpoint, tmp_path / "cli")
    args = ["eval", ckpt, "--protocol", "quick", "--attacks", "pgd", "--device", "cpu", "--no-progress",
            "--combiners", "average"]
    counter = Counter(monkeypatch, fail_at=3)
    assert main(args) == 130
    captured = capsys.readouterr()
    assert "protocol: quick; 6 results" in captured.out
    assert "estimated time on cpu: " in captured.out and "an estimate" in captured.out
    assert "interrupted; 2 new result(s) stored" in captured.err and "again to resume" in captured.err

    counter.fail_at, counter.calls = None, []
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 already stored (resumed)" in out and len(counter.calls) == 4
    frame = pd.read_csv(tmp_path / "cli" / "eval.csv")
    # quick: natural and PGD-20 on min(1,000, the 64 test examples); each with n and its interval
    assert sorted(frame["attack"]) == ["natural"] * 3 + ["pgd"] * 3 and (frame["num_examples"] == 64).all()
    assert (frame["protocol"] == "quick").all()
    for r in frame.itertuples():
        assert (r.ci_low, r.ci_high) == pytest.approx(wilson_of_accuracy(r.accuracy, r.num_examples))
        assert r.ci_low <= r.accuracy <= r.ci_high
    assert "±" in out and "Wilson" in out


def test_igat_config_writes_the_paper_protocol_by_default(capsys):
    assert main(["config", "--defense", "adp"]) == 0
    cfg = ExperimentConfig.from_dict(yaml.safe_load(capsys.readouterr().out))
    assert protocol_of(cfg) == "paper" and cfg.eval.num_examples is None
    assert main(["config", "--defense", "adp", "--protocol", "quick"]) == 0
    assert protocol_of(ExperimentConfig.from_dict(yaml.safe_load(capsys.readouterr().out))) == "quick"


def test_runs_show_prints_each_result_with_n_and_its_interval(tmp_path, monkeypatch, capsys):
    from tasks.store import EvalResult, Run, session

    monkeypatch.setenv("IGAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IGAT_DATABASE_URL", f"sqlite:///{tmp_path / 'igat.db'}")
    lo, hi = wilson(45, 100)
    with session() as s:
        run = Run(name="ev", config_json="{}", status="succeeded", attempts=1)
        s.add(run)
        s.commit()
        s.add(EvalResult(run_id=run.id, combiner="average", attack="pgd", accuracy=0.45, num_examples=100,
                         ci_low=lo, ci_high=hi, eval_key="k"))
        s.add(EvalResult(run_id=run.id, combiner="max", attack="pgd", accuracy=0.4, num_examples=50))  # no interval
        s.commit()
        run_id = run.id
    assert main(["runs", "show", str(run_id)]) == 0
    out = capsys.readouterr().out
    assert f"0.4500  n=100  [{lo:.4f}, {hi:.4f}]" in out
    assert "0.4000  n=50\n" in out
