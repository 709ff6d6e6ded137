"""Theory diagnostics (Section 4): curvature, ambiguous pairs, Assumption 4.4, 0-1 loss, entry point, page."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from igat.config import ConfigError
from igat.theory import (
    acceptable_fractions,
    cross_class_pairs,
    curvature_distributions,
    eq10_threshold,
    implied_j,
    loss_curvature,
    make_delta,
    parse_params,
    spectral_bounds,
    theorem_check,
    wilson_interval,
)
from igat.theory.toy import MLP
from igat.theory.zero_one import zero_one


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: thread hand-off dominates on a shared 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- curvature ---------------------------------------------------------------------------------

def test_curvature_zero_for_linear_loss():
    w = torch.randn(5, dtype=torch.float64)
    x = torch.randn(7, 5, dtype=torch.float64)
    delta = torch.randn(7, 5, dtype=torch.float64)
    lam = loss_curvature(lambda z: z @ w + 3.0, x, delta)
    assert torch.allclose(lam, torch.zeros(7, dtype=torch.float64), atol=1e-12)


def test_curvature_quadratic_matches_analytic():
    a = torch.randn(4, 4, dtype=torch.float64)
    a = a @ a.T + torch.eye(4, dtype=torch.float64)  # symmetric: grad of x^T A x / 2 is A x
    x = torch.randn(6, 4, dtype=torch.float64)
    delta = torch.randn(6, 4, dtype=torch.float64) * torch.tensor([1e-3, 1, 10, 0.5, 2, 3], dtype=torch.float64)[:, None]
    lam = loss_curvature(lambda z: 0.5 * ((z @ a) * z).sum(1), x, delta)
    expected = (delta @ a).norm(dim=1) / delta.norm(dim=1)
    assert torch.allclose(lam, expected, rtol=1e-10)
    # the curvature along an eigenvector is its eigenvalue
    evals, evecs = torch.linalg.eigh(a)
    lam_e = loss_curvature(lambda z: 0.5 * ((z @ a) * z).sum(1), x[:4], 0.1 * evecs.T)
    assert torch.allclose(lam_e, evals, rtol=1e-10)


def test_curvature_is_per_example_and_nan_for_zero_delta():
    a = torch.eye(3, dtype=torch.float64) * 2
    x = torch.randn(2, 3, dtype=torch.float64)
    delta = torch.stack([torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)])
    lam = loss_curvature(lambda z: ((z @ a) * z).sum(1), x, delta)  # grad = 2 A x -> curvature 4
    assert math.isnan(lam[0]) and lam[1].item() == pytest.approx(4.0)


def test_delta_modes_and_distributions():
    torch.manual_seed(0)
    model = MLP(2, [8], 2).eval()
    x, y = torch.rand(10, 2), torch.randint(0, 2, (10,))
    eps = 0.05
    for mode in ("pgd", "sign", "random"):
        d = make_delta(model, x, y, mode, eps, pgd_steps=3)
        assert ((x + d) >= 0).all() and ((x + d) <= 1).all()
        if mode != "random":
            assert d.abs().max() <= eps + 1e-6
    d = make_delta(model, torch.full((4, 2), 0.5), torch.zeros(4, dtype=torch.long), "random", eps)
    assert torch.allclose(d.norm(dim=1), torch.full((4,), eps * math.sqrt(2)), rtol=1e-5)
    dists = curvature_distributions(model, x, y, mode="sign", eps=eps)
    assert set(dists) == {"model"} and dists["model"].shape == (10,) and (dists["model"] >= 0).all()


# --- ambiguous pairs ---------------------------------------------------------------------------

def _brute_force_pairs(x, y, k):
    flat = x.reshape(len(x), -1).double()
    cand = [((flat[i] - flat[j]).norm().item(), i, j)
            for i, j in itertools.combinations(range(len(x)), 2) if y[i] != y[j]]
    return sorted(cand)[:k]


@pytest.mark.parametrize("chunk", [1 << 24, 37])  # one chunk, and many chunks of a few rows
def test_pair_search_equals_brute_force(chunk):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(60, 3, 4, 4, generator=g)
    y = torch.randint(0, 3, (60,), generator=g)
    res = cross_class_pairs(x, y, k=25, chunk_elements=chunk)
    brute = _brute_force_pairs(x, y, 25)
    assert [tuple(p) for p in res.pairs.tolist()] == [(i, j) for _, i, j in brute]
    assert torch.allclose(res.distances.double(), torch.tensor([d for d, _, _ in brute], dtype=torch.float64), atol=1e-5)
    # per-example nearest other-class neighbour
    flat = x.reshape(60, -1)
    full = torch.cdist(flat.double(), flat.double())
    full[y[:, None] == y[None, :]] = math.inf
    assert torch.equal(res.nn_index, full.argmin(1))
    assert torch.allclose(res.nn_distance.double(), full.min(1).values, atol=1e-5)
    # threshold mode keeps exactly the pairs within the distance
    tau = brute[10][0] + 1e-4
    within = cross_class_pairs(x, y, k=None, max_distance=tau, chunk_elements=chunk)
    assert len(within) == 11


def test_eq10_threshold_and_implied_j_are_inverse():
    tau = eq10_threshold(4.0, 2.0, 3.0, 10, xi=1.0)
    assert tau == pytest.approx(1 / (4 * 3 * math.sqrt(10) * 3))
    assert implied_j(tau, 2.0, 3.0, 10, xi=1.0) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="J must be > 2"):
        eq10_threshold(2.0, 1.0, 1.0, 10)


# --- Assumption 4.4 ----------------------------------------------------------------------------

def test_acceptable_fractions_on_hand_made_tables():
    # 3 classes, J = 4 -> threshold 0.75. Examples 0..3; pairs (0,1) and (2,3).
    scores = torch.tensor([
        [0.80, 0.10, 0.10],  # x0, y=0, predicted 0: c in {1,2} <= (1-.8)/2 = .10 ok (ties)
        [0.20, 0.60, 0.20],  # x1, y=1, predicted 1: c in {0,2} <= (1-.6)/2 = .20 ok (ties)
        [0.10, 0.10, 0.80],  # x2, y=0, predicted 2: c=1 0.10 <= (1-.8)/2 = .10 ok
        [0.05, 0.90, 0.05],  # x3, y=2, predicted 1: c=0 0.05 <= (1-.9)/2 = .05 ok
    ], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 2])
    pairs = torch.tensor([[0, 1], [2, 3]])
    f = acceptable_fractions(scores, y, pairs, j=4.0)
    # orderings: (0,1): f_0(x0)=.8>=.75 and f_0(x1)=.2<=.75 -> yes; (1,0): f_1(x1)=.6 -> no
    #            (2,3): f_0(x2)=.1 -> no;                     (3,2): f_2(x3)=.05 -> no
    assert f.condition1 == pytest.approx(0.25)
    assert f.n_orderings == 4 and f.n_examples == 4
    assert f.condition2 == pytest.approx(1.0)
    assert f.both == pytest.approx(0.25)
    assert not f.meets_threshold
    # break condition 2 for x1 (c=2 gets 0.4 > (1-.6)/2) and make ordering (1,0) pass condition 1
    scores2 = scores.clone()
    scores2[1] = torch.tensor([0.0, 0.6, 0.4], dtype=torch.float64)  # exactly on the threshold: ">=" counts
    f2 = acceptable_fractions(scores2, y, pairs, j=10.0)  # threshold 0.6: f_1(x1) = .6 >= .6 and f_1(x0) = .1
    assert f2.condition1 == pytest.approx(0.5)
    assert f2.condition2 == pytest.approx(0.75)
    assert f2.both == pytest.approx(0.0)  # both satisfying orderings involve x1
    assert f2.meets_threshold


def test_zero_one_and_theorem_check():
    scores = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.2, 0.8]])
    y = torch.tensor([0, 0, 0])
    assert zero_one(scores, y).tolist() == [0.0, 0.0, 1.0]  # a tie is not an error (eq. 4)
    # two models that each get one example of the pair right: the average gets both right
    m0 = torch.tensor([[0.9, 0.1], [0.55, 0.45]])  # pair: x0 (y=0), x1 (y=1)
    m1 = torch.tensor([[0.45, 0.55], [0.1, 0.9]])
    res = theorem_check(torch.stack([m0, m1]), torch.tensor([0, 1]), torch.tensor([[0, 1]]), ci_method="wilson")
    assert res["single"]["mean"] == pytest.approx(0.5)
    assert res["average"]["mean"] == pytest.approx(0.0)
    assert res["theorem_holds"]["average"] is True
    lo, hi = wilson_interval(2, 4)
    assert res["single"]["low"] == pytest.approx(lo) and res["single"]["high"] == pytest.approx(hi)
    assert 0 < lo < 0.5 < hi < 1


def test_spectral_bounds_of_linear_model():
    lin = nn.Linear(3, 2, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.5, 0.0]]))
    s = spectral_bounds(lin, torch.randn(5, 3))
    assert s["B0"] == pytest.approx(3.0) and s["B"] == pytest.approx(2.0)


def test_params_errors_name_the_field():
    with pytest.raises(ConfigError) as exc:
        parse_params({"num_examples": 0})
    assert exc.value.errors[0][0] == "params.num_examples"
    with pytest.raises(ConfigError) as exc:
        parse_params({"J": 1.5, "delta_mode": "bogus"})
    assert {f for f, _ in exc.value.errors} == {"params.J", "params.delta_mode"}
    with pytest.raises(ConfigError) as exc:
        parse_params({"unknown": 1})
    assert exc.value.errors[0][0] == "params.unknown"


# --- entry point + page ------------------------------------------------------------------------

DOCUMENTED_KEYS = {"version", "checkpoint", "params", "dataset", "model", "reference", "curvature", "spectral",
                   "pairs", "conditions", "zero_one", "notes", "seconds"}


@pytest.fixture(scope="module")
def theory_result(tmp_path_factory):
    from igat.theory import run_diagnostics
    from igat.training import Trainer
    from tests.helpers import synthetic_config

    out = tmp_path_factory.mktemp("theory-run")
    cfg = synthetic_config(data={"synthetic_train_size": 64, "synthetic_test_size": 32},
                           train={"batch_size": 32, "eval_examples": 16, "eval_pgd_steps": 1})
    ckpt = Trainer(cfg, output_dir=out).fit().checkpoint
    params = {"num_examples": 12, "delta_mode": "sign", "pair_pool": 32, "k_pairs": 10, "spectral_examples": 3,
              "bootstrap_resamples": 200, "device": "cpu", "reference_checkpoint": ckpt}
    return ckpt, run_diagnostics(ckpt, params)


def test_run_diagnostics_keys_and_json(theory_result):
    ckpt, res = theory_result
    assert set(res) == DOCUMENTED_KEYS
    json.dumps(res, allow_nan=False)
    assert set(res["curvature"]["targets"]) == {"member_0", "member_1", "ensemble_average", "ensemble_max"}
    assert all(len(t["values"]) == 12 for t in res["curvature"]["targets"].values())
    assert res["pairs"]["num_pairs"] == 10 and res["pairs"]["pool_size"] == 32
    assert set(res["conditions"]["targets"]) == {"member_0", "member_1", "ensemble_average", "ensemble_max"}
    z = res["zero_one"]
    assert z["num_model_pairs"] == 1 and 0 <= z["single"]["mean"] <= 1
    assert set(res["spectral"]["targets"]) == {"member_0", "member_1"} and res["spectral"]["B0"] > 0
    # the reference (here: the same checkpoint, same seed) gives the same curvature values
    ref = res["reference"]["curvature"]["targets"]
    assert ref["member_1"]["values"] == res["curvature"]["targets"]["member_1"]["values"]
    from igat.theory import run_diagnostics

    with pytest.raises(ConfigError, match="params.k_pairs"):
        run_diagnostics(ckpt, {"k_pairs": -1})


def test_cli_theory_writes_json(theory_result, tmp_path, capsys):
    from igat.cli import main

    ckpt, _ = theory_result
    out = tmp_path / "r.json"
    rc = main(["theory", ckpt, "--num-examples", "4", "--delta-mode", "random", "--pair-pool", "16",
               "--k-pairs", "3", "--spectral-examples", "0", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["pairs"]["num_pairs"] == 3 and data["spectral"] is None
    assert "ambiguous pairs" in capsys.readouterr().out
    assert main(["theory", ckpt, "--J", "1"]) == 2
    assert "params.J" in capsys.readouterr().err


def test_toy_study_small():
    from igat.theory.toy import run_toy_study

    res = run_toy_study({"num_train": 80, "num_test": 60, "num_models": 2, "steps": 20, "k_pairs": 8,
                         "adv_steps": 1})
    json.dumps(res, allow_nan=False)
    assert set(res["families"]) == {"standard", "adversarial"}
    for fam in res["families"].values():
        assert fam["pairs"]["num_pairs"] == 8 and fam["zero_one"]["num_model_pairs"] == 1
    assert set(res["curvature_comparison"]) == {"standard", "adversarial"}


def _seed_db(result):
    """A trained run whose theory child run holds the artifact (the platform's layout), a run whose
    theory task failed, and a failed training run (not selectable)."""
    from sqlmodel import Session

    from tasks.store import Artifact, Run, get_engine

    with Session(get_engine()) as s:
        run = Run(name="trained", config_json="{}", status="succeeded", defense="standard", checkpoint_path="x.pt")
        other = Run(name="no-theory", config_json="{}", status="succeeded", defense="adp")
        failed = Run(name="broken", config_json="{}", status="failed")
        s.add_all([run, other, failed])
        s.commit()
        child = Run(name="trained-theory", kind="theory", config_json="{}", status="succeeded", parent_run_id=run.id)
        bad_child = Run(name="no-theory-theory", kind="theory", config_json="{}", status="failed",
                        parent_run_id=other.id, error="JobError: checkpoint not found: y.pt")
        s.add_all([child, bad_child])
        s.commit()
        s.add(Artifact(run_id=child.id, name="theory", data_json=json.dumps(result)))
        s.commit()
        return run.id, other.id


PAGE = str(Path(__file__).resolve().parents[1] / "app" / "views" / "theory.py")


def test_theory_page_shows_plots(theory_result, tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("IGAT_HOME", str(tmp_path))
    monkeypatch.delenv("IGAT_DATABASE_URL", raising=False)
    st.cache_resource.clear()
    run_id, other_id = _seed_db(theory_result[1])

    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["run"] = str(run_id)
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 5  # curvature, distances, conditions, per ordering, 0-1 loss
    assert any("Assumption 4.4 over the members, per ordering" in w.value for w in [*at.warning, *at.success])
    labels = at.selectbox(key="theory_run").options
    assert len(labels) == 2 and not any("broken" in o for o in labels)
    # a run without results shows an empty state, no plots
    at.selectbox(key="theory_run").set_value(other_id).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 0
    assert any("No theory results" in i.value for i in at.info)
    assert any("checkpoint not found: y.pt" in w.value for w in at.warning)
    # submitting: without tasks.api.submit_theory the page says so instead of failing ...
    import types

    import tasks

    fake = types.ModuleType("tasks.api")
    monkeypatch.setitem(sys.modules, "tasks.api", fake)
    monkeypatch.setattr(tasks, "api", fake, raising=False)
    at.button(key="submit_theory").click().run()
    assert not at.exception
    assert any("submit_theory" in w.value for w in at.warning)
    # ... and with it, the validated params reach the task API
    calls = []
    fake.submit_theory = lambda run_id, params: calls.append((run_id, params)) or (1, [9])
    at.number_input(key="k_pairs").set_value(7)
    at.button(key="submit_theory").click().run()
    assert not at.exception
    assert calls and calls[0][0] == other_id and calls[0][1]["k_pairs"] == 7 and calls[0][1]["J"] == 4.0
    assert any("submitted" in s.value and "#9" in s.value for s in at.success)
    st.cache_resource.clear()


def test_theory_page_empty_db(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("IGAT_HOME", str(tmp_path))
    monkeypatch.delenv("IGAT_DATABASE_URL", raising=False)
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    assert any("No succeeded runs" in i.value for i in at.info)
    st.cache_resource.clear()


# --- a study's arms ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def study_folder(theory_result, tmp_path_factory):
    """A study.json whose base and continued arm share a checkpoint and whose igat arm is another one."""
    from igat.training import Trainer
    from tests.helpers import synthetic_config

    ckpt, _ = theory_result
    out = tmp_path_factory.mktemp("theory-study")
    cfg = synthetic_config(seed=1, data={"synthetic_train_size": 64, "synthetic_test_size": 32},
                           train={"batch_size": 32, "eval_examples": 16, "eval_pgd_steps": 1})
    other = Trainer(cfg, output_dir=out / "igat").fit().checkpoint
    state = {"spec": {"defense": "standard"}, "seeds": {"0": {
        "base": {"done": True, "checkpoint": ckpt, "history": []},
        "arms": {"continued": {"done": True, "checkpoint": ckpt}, "igat": {"done": True, "checkpoint": other},
                 "hard": {"done": False}}}}}
    (out / "study.json").write_text(json.dumps(state))
    return out


STUDY_PARAMS = {"num_examples": 12, "pair_pool": 32, "k_pairs": 8, "spectral_examples": 0,
                "bootstrap_resamples": 200, "device": "cpu"}


def test_study_theory_compares_arms_on_shared_examples(study_folder):
    from igat.theory.study import study_theory

    res = study_theory(study_folder, STUDY_PARAMS)
    json.dumps(res, allow_nan=False)
    assert json.loads((study_folder / "theory.json").read_text())["version"] == 1
    seed = res["seeds"]["0"]
    assert set(seed["arms"]) == {"base", "continued", "igat"}  # the unfinished arm is skipped
    assert seed["dataset"]["num_pairs"] == 8 and seed["dataset"]["curvature_examples"] == 12
    # base and continued are the same checkpoint: every paired difference is exactly 0
    same = seed["comparisons"]["continued_minus_base"]
    assert same["curvature"]["members_mean"]["mean"] == 0.0 and same["curvature"]["members_mean"]["n"] == 12
    assert same["ensemble_pair_loss"]["average"] == {"mean": 0.0, "low": 0.0, "high": 0.0, "n": 8,
                                                     "verdict": "not distinguishable"}
    diff = seed["comparisons"]["igat_minus_continued"]["curvature"]["members_mean"]
    assert diff["mean"] != 0.0 and diff["low"] <= diff["mean"] <= diff["high"]
    igat_arm = seed["arms"]["igat"]
    assert "values" not in igat_arm["curvature"]["targets"]["member_0"]  # kept small
    assert igat_arm["conditions"]["assumption"]["n_models"] == 2
    rows = res["summary"]["arms"]["igat"]
    assert rows[0]["seed"] == 0 and 0 <= rows[0]["ensemble_pair_loss"]["average"]["mean"] <= 1


def test_cli_theory_study(study_folder, tmp_path, capsys):
    from igat.cli import main

    rc = main(["theory", "--study", str(study_folder), "--num-examples", "6", "--pair-pool", "16", "--k-pairs", "4",
               "--spectral-examples", "0", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "igat_minus_continued" in out and "ensemble 0-1 loss" in out
    assert main(["theory", "--study", str(tmp_path)]) == 2
    assert "no study.json" in capsys.readouterr().err


def test_theory_page_shows_a_study_side_by_side(study_folder, tmp_path, monkeypatch):
    import streamlit as st
    from sqlmodel import Session
    from streamlit.testing.v1 import AppTest

    from igat.theory.seed_summary import comparisons_over_seeds
    from igat.theory.study import study_theory
    from tasks.store import Artifact, Run, get_engine

    monkeypatch.setenv("IGAT_HOME", str(tmp_path))
    monkeypatch.delenv("IGAT_DATABASE_URL", raising=False)
    st.cache_resource.clear()
    result = study_theory(study_folder, STUDY_PARAMS, write=False)
    for rows in result["summary"]["comparisons"].values():  # a second seed, as a study of two seeds stores it
        rows.append({**rows[0], "seed": 1})
    result["summary"]["over_seeds"] = comparisons_over_seeds(result["summary"]["comparisons"])
    with Session(get_engine()) as s:
        study = Run(name="study-adp", kind="study", config_json="{}", status="succeeded")
        bare = Run(name="study-bare", kind="study", config_json="{}", status="succeeded")
        s.add_all([study, bare])
        s.commit()
        s.add(Artifact(run_id=study.id, name="study_theory", data_json=json.dumps(result)))
        s.commit()
        study_id, bare_id = study.id, bare.id
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["run"] = str(study_id)
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2  # curvature per arm, ensemble 0-1 loss per arm
    table = at.dataframe[0].value
    assert set(table["comparison"]) == {"igat - continued", "igat - base", "continued - base"}
    assert list(table["seed"]).count("mean of 2 seeds (t interval)") == 3
    assert any("Assumption 4.4" in c.value for c in at.caption)
    at.selectbox(key="theory_run").set_value(bare_id).run()
    assert not at.exception and any("igat theory --study" in i.value for i in at.info)
    st.cache_resource.clear()


def test_worker_stores_the_study_theory_artifact(study_folder, tmp_path, monkeypatch):
    from tasks import runstate
    from tasks.store import get_engine
    from tasks.studyjob import store_study_theory

    monkeypatch.setenv("IGAT_HOME", str(tmp_path))
    monkeypatch.delenv("IGAT_DATABASE_URL", raising=False)
    import igat.theory.study as study_module

    # the worker uses the cheap defaults; shrink them further for the test
    monkeypatch.setattr(study_module, "STUDY_DEFAULTS", {**study_module.STUDY_DEFAULTS, **STUDY_PARAMS})
    from sqlmodel import Session

    from tasks.store import Run

    engine = get_engine()
    with Session(engine) as s:
        studies = [Run(name=f"study-{i}", kind="study", config_json="{}", status="running") for i in range(2)]
        s.add_all(studies)
        s.commit()
        ok_id, broken_id = (r.id for r in studies)
    said: list[str] = []
    store_study_theory(engine, ok_id, study_folder, said.append)
    stored = runstate.get_artifact(engine, ok_id, "study_theory")
    assert set(stored["seeds"]["0"]["arms"]) == {"base", "continued", "igat"}
    assert said[0].startswith("theory diagnostics of the arms") and any("seed 0" in m for m in said)
    # a broken folder is an error note, not a failed study
    store_study_theory(engine, broken_id, tmp_path / "nowhere", said.append)
    assert "no study.json" in runstate.get_artifact(engine, broken_id, "study_theory")["error"]


# --- a study's comparisons over seeds (torch-free) ---------------------------------------------------------

def test_seed_interval_is_the_student_t_interval_of_the_mean():
    from igat.stats import seed_interval, t975

    iv = seed_interval([1.0, 2.0, 3.0])
    half = 4.303 / 3**0.5  # t(0.975, df 2) * sd 1 / sqrt(3)
    assert iv["mean"] == 2.0 and iv["sd"] == pytest.approx(1.0) and iv["seeds"] == 3
    assert iv["low"] == pytest.approx(2.0 - half) and iv["high"] == pytest.approx(2.0 + half)
    assert seed_interval([0.5]) == {"mean": 0.5, "sd": None, "low": None, "high": None, "seeds": 1}
    assert seed_interval([])["mean"] is None
    assert t975(0) == float("inf") and t975(11) == 2.228 and t975(31) == 1.96  # between keys: the wider one


def _comparison(seed, cur, avg):
    """One seed's row of summary["comparisons"]: (mean, low, high) of the curvature and average-combiner loss."""
    def d(m, lo, hi):
        return {"mean": m, "low": lo, "high": hi, "n": 100, "verdict": "x"}
    return {"seed": seed, "curvature": {"members_mean": d(*cur)}, "ensemble_pair_loss": {"average": d(*avg)}}


def test_comparisons_over_seeds_give_the_t_interval_and_its_verdict():
    from igat.theory.seed_summary import comparisons_over_seeds

    rows = [_comparison(0, (-0.20, -0.21, -0.19), (0.05, -0.01, 0.11)),
            _comparison(1, (-0.18, -0.19, -0.17), (-0.04, -0.09, 0.01)),
            _comparison(2, (-0.19, -0.20, -0.18), (0.02, -0.03, 0.07))]
    out = comparisons_over_seeds({"igat_minus_continued": rows, "one_seed": rows[:1]})
    o = out["igat_minus_continued"]
    assert o["seeds"] == [0, 1, 2]
    assert o["curvature_members"]["mean"] == pytest.approx(-0.19) and o["curvature_members"]["verdict"] == "lower"
    assert o["curvature_members"]["seeds_below_0"] == 3 and o["curvature_members"]["seeds_above_0"] == 0
    loss = o["ensemble_pair_loss"]["average"]
    assert loss["low"] < 0 < loss["high"] and loss["verdict"] == "not distinguishable"
    assert out["one_seed"]["curvature_members"]["verdict"] == "one seed: no interval"


def test_theory_table_adds_a_row_over_seeds_only_with_two_seeds_or_more():
    from app.theory_figures import study_comparison_rows

    rows = [_comparison(0, (-0.20, -0.21, -0.19), (0.05, -0.01, 0.11)),
            _comparison(1, (-0.18, -0.19, -0.17), (-0.04, -0.09, 0.01))]
    table = study_comparison_rows({"summary": {"comparisons": {"igat_minus_base": rows}}})  # stored before over_seeds
    assert [r["seed"] for r in table] == ["0", "1", "mean of 2 seeds (t interval)"]
    assert table[-1]["curvature verdict"] == "lower" and table[-1]["comparison"] == "igat - base"
    assert table[-1]["curvature (members)"].startswith("-0.19 [")
    single = study_comparison_rows({"summary": {"comparisons": {"igat_minus_base": rows[:1]}}})
    assert [r["seed"] for r in single] == ["0"]
