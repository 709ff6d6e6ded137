"""Theory diagnostics on the arms of an ``igat study`` (issue #18): did iGAT lower the curvature and
the ensemble's 0-1 loss on the closest cross-class pairs, compared with its base and the continued arm?

For each seed of a study folder, every arm's checkpoint (``base``, ``continued``, ``igat``, ablations)
gets :func:`igat.theory.diagnostics.diagnose` on the *same* test examples, the same deltas' recipe and
the same ambiguous pairs (the k closest cross-class pairs of an equidistant test pool depend on the
data only), so arms are compared paired:

* curvature: per example, the mean over members of lambda_f(x, delta) of eq. (2) (and the average
  ensemble's own), difference arm - reference with a bootstrap interval over the n examples;
* 0-1 loss of the whole ensemble (each combiner) on the pairs, difference with a bootstrap interval
  over the P pairs;
* Assumption 4.4 judged per ordering over the ensemble's members, Definition 4.3's verdict, and the
  member-level Theorem 4.1 check (single member vs two-member ensembles) of each arm.

The intervals hold the evaluation noise of one trained model per arm and seed; training randomness
is only covered by repeating seeds (the summary lists each seed). Defaults keep it cheap: 200
curvature examples with the sign delta, a 2,000-image pair pool and 100 pairs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from igat.config import ConfigError
from igat.theory.constants import STUDY_THEORY_FILE
from igat.theory.diagnostics import _device, diagnose, score_tables
from igat.theory.pairs import cross_class_pairs
from igat.theory.params import TheoryParams, parse_params
from igat.theory.seed_summary import comparisons_over_seeds, direction
from igat.theory.summary import jsonable
from igat.theory.zero_one import bootstrap_interval, zero_one

RESULT_VERSION = 1
# cheap defaults: a study should not grow much (the sign delta costs one extra gradient per example)
STUDY_DEFAULTS: dict[str, Any] = {"num_examples": 200, "delta_mode": "sign", "pair_pool": 2000, "k_pairs": 100,
                                  "spectral_examples": 8, "bootstrap_resamples": 1000, "max_pairs_listed": 0}
Progress = Callable[[str], None]


def study_params(params: dict[str, Any] | TheoryParams | None) -> TheoryParams:
    if isinstance(params, TheoryParams):
        return params
    return parse_params({**STUDY_DEFAULTS, **(params or {})})


def arm_checkpoints(state: dict[str, Any]) -> dict[str, dict[str, str]]:
    """seed -> {arm label: checkpoint} for every finished base and arm recorded in a study.json state."""
    out: dict[str, dict[str, str]] = {}
    for seed, st in state.get("seeds", {}).items():
        arms: dict[str, str] = {}
        base = st.get("base") or {}
        if base.get("done") and base.get("checkpoint"):
            arms["base"] = base["checkpoint"]
        for label, arm in (st.get("arms") or {}).items():
            if arm.get("done") and arm.get("checkpoint"):
                arms[label] = arm["checkpoint"]
        if arms:
            out[seed] = arms
    return out


def _member_mean_curvature(values: dict[str, Tensor]) -> Tensor:
    members = [v for k, v in values.items() if k.startswith("member_")]
    return torch.stack(members).mean(dim=0)


def _paired(diff: Tensor, p: TheoryParams) -> dict[str, Any]:
    d = diff[torch.isfinite(diff)].double()
    lo, hi = bootstrap_interval(d, p.confidence, p.bootstrap_resamples, p.seed)
    mean = float(d.mean()) if len(d) else None
    verdict = None if mean is None else direction(lo, hi)
    return {"mean": mean, "low": lo, "high": hi, "n": int(len(d)), "verdict": verdict}


def _compact(result: dict[str, Any]) -> dict[str, Any]:
    """The per-arm result without per-example values (kept small for the artifact)."""
    cur = dict(result["curvature"])
    cur["targets"] = {k: {kk: vv for kk, vv in v.items() if kk != "values"} for k, v in cur["targets"].items()}
    return {**result, "curvature": cur}


def diagnose_seed(arms: dict[str, str], p: TheoryParams, device: torch.device,
                  say: Progress = lambda _m: None) -> dict[str, Any]:
    """Diagnostics of every arm of one seed on shared examples and pairs, plus paired comparisons."""
    from igat.data import equidistant_indices, load_dataset
    from igat.training import load_ensemble

    first_ckpt = next(iter(arms.values()))
    _, config, _ = load_ensemble(first_ckpt, device)
    data = load_dataset(config.data, config.seed)
    curv_x, curv_y = data.test_tensors(p.num_examples)
    curv_x, curv_y = curv_x.to(device), curv_y.to(device)
    idx = equidistant_indices(len(data.test_x), p.pair_pool)
    pool_x = data.test_x[idx].float().div(255.0)
    pool_y = data.test_y[idx]
    search = cross_class_pairs(pool_x, pool_y, k=p.k_pairs)
    used = torch.unique(search.pairs.flatten())
    remap = torch.full((len(pool_x),), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    local_pairs = remap[search.pairs]

    per_arm: dict[str, dict[str, Any]] = {}
    curvature: dict[str, dict[str, Tensor]] = {}
    pair_loss: dict[str, dict[str, Tensor]] = {}
    for label, ckpt in arms.items():
        say(f"theory: {label}")
        ensemble, cfg, _ = load_ensemble(ckpt, device)
        if cfg.data.num_classes != data.num_classes:
            raise ConfigError([("study", f"arm {label} has {cfg.data.num_classes} classes, the base {data.num_classes}")])
        t0 = time.perf_counter()
        torch.manual_seed(p.seed)
        res = diagnose(ensemble, curv_x, curv_y, pool_x.to(device), pool_y, data.num_classes, p)
        values = {k: torch.tensor([float("nan") if v is None else v for v in t["values"]])
                  for k, t in res["curvature"]["targets"].items()}
        curvature[label] = {"members_mean": _member_mean_curvature(values),
                            **({"ensemble_average": values["ensemble_average"]} if "ensemble_average" in values else {})}
        tables = score_tables(ensemble, pool_x[used].to(device), list(p.combiners), p.batch_size)
        pair_loss[label] = {c: _pair_loss(tables[f"ensemble_{c}"], pool_y[used], local_pairs) for c in p.combiners}
        res["ensemble_pair_loss"] = {c: {"mean": float(v.mean()), **_interval(v, p)} for c, v in pair_loss[label].items()}
        res["checkpoint"] = ckpt
        res["seconds"]["arm_total"] = time.perf_counter() - t0
        per_arm[label] = _compact(res)
        del ensemble

    comparisons: dict[str, Any] = {}
    for arm, ref in (("igat", "continued"), ("igat", "base"), ("continued", "base")):
        if arm not in per_arm or ref not in per_arm:
            continue
        comparisons[f"{arm}_minus_{ref}"] = {
            "curvature": {k: _paired(curvature[arm][k] - curvature[ref][k], p) for k in curvature[arm]
                          if k in curvature[ref]},
            "ensemble_pair_loss": {c: _paired(pair_loss[arm][c] - pair_loss[ref][c], p) for c in p.combiners},
        }
    return {"dataset": {"name": config.data.dataset, "num_classes": data.num_classes,
                        "curvature_examples": int(len(curv_x)), "pair_pool": int(len(pool_x)),
                        "num_pairs": int(len(search)), "pair_examples": int(len(used)),
                        "max_pair_distance": float(search.distances.max()) if len(search) else None},
            "arms": per_arm, "comparisons": comparisons}


def _pair_loss(scores: Tensor, y: Tensor, pairs: Tensor) -> Tensor:
    err = zero_one(scores, y)
    return (err[pairs[:, 0]] + err[pairs[:, 1]]) / 2


def _interval(values: Tensor, p: TheoryParams) -> dict[str, float]:
    lo, hi = bootstrap_interval(values, p.confidence, p.bootstrap_resamples, p.seed)
    return {"low": lo, "high": hi, "n": int(len(values))}


def study_theory(root: str | Path, params: dict[str, Any] | TheoryParams | None = None,
                 progress: Progress | None = None, write: bool = True) -> dict[str, Any]:
    """Theory diagnostics of every finished arm of the study in ``root``; written to root/theory.json."""
    root = Path(root)
    state_file = root / "study.json"
    if not state_file.exists():
        raise FileNotFoundError(f"not a study folder (no study.json): {root}")
    state = json.loads(state_file.read_text())
    p = study_params(params)
    say = progress or (lambda _m: None)
    seeds = arm_checkpoints(state)
    if not seeds:
        raise ConfigError([("study", f"{root} has no finished base or arm yet")])
    device = _device(p.device)
    t0 = time.perf_counter()
    out_seeds = {}
    for seed, arms in seeds.items():
        say(f"seed {seed}: theory diagnostics of {', '.join(arms)}")
        out_seeds[seed] = diagnose_seed(arms, p, device, say)
    result = jsonable({"version": RESULT_VERSION, "study": str(root), "spec": state.get("spec"),
                       "params": p.model_dump(), "seeds": out_seeds, "summary": summarise(out_seeds),
                       "seconds": time.perf_counter() - t0})
    if write:
        (root / STUDY_THEORY_FILE).write_text(json.dumps(result, indent=1, allow_nan=False))
    return result


def summarise(seeds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per arm and seed the headline numbers; per comparison and seed the paired differences, and per comparison
    their mean over seeds with a t interval (``over_seeds``)."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for seed, s in seeds.items():
        for label, r in s["arms"].items():
            targets = r["curvature"]["targets"]
            members = [t["mean"] for k, t in targets.items() if k.startswith("member_") and t["mean"] is not None]
            verdict = (r["conditions"] or {}).get("assumption") or {}
            z = r.get("zero_one") or {}
            arms.setdefault(label, []).append({
                "seed": int(seed),
                "curvature_members_mean": sum(members) / len(members) if members else None,
                "curvature_ensemble_average": (targets.get("ensemble_average") or {}).get("mean"),
                "lambda_tilde": r["curvature"]["lambda_tilde_common"],
                "B": (r.get("spectral") or {}).get("B"),
                "ensemble_pair_loss": r["ensemble_pair_loss"],
                "pooled_p": (verdict.get("condition1") or {}).get("pooled_p"),
                "share_of_orderings_meeting": (verdict.get("condition1") or {}).get("share_of_orderings_meeting"),
                "assumption_holds": verdict.get("holds"),
                "assumption_verdict": verdict.get("verdict"),
                "ambiguous_def43": ((r["pairs"] or {}).get("definition_4_3") or {}).get("ambiguous"),
                "member_single_loss": (z.get("single") or {}).get("mean"),
                "member_pair_average_loss": (z.get("average") or {}).get("mean"),
            })
    comparisons: dict[str, list[dict[str, Any]]] = {}
    for seed, s in seeds.items():
        for name, c in s["comparisons"].items():
            comparisons.setdefault(name, []).append({"seed": int(seed), **c})
    return {"arms": arms, "comparisons": comparisons, "over_seeds": comparisons_over_seeds(comparisons)}


def format_study_theory(result: dict[str, Any]) -> str:
    """Plain-text summary for the CLI."""
    lines = [f"theory diagnostics of {result['study']} ({result['params']['num_examples']} curvature examples, "
             f"delta {result['params']['delta_mode']}, {result['params']['k_pairs']} closest cross-class pairs "
             f"of a {result['params']['pair_pool']}-image test pool; 95 % bootstrap intervals)"]
    for label, rows in result["summary"]["arms"].items():
        for r in rows:
            loss = ", ".join(f"{c} {v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"
                             for c, v in r["ensemble_pair_loss"].items())
            lines.append(f"  seed {r['seed']} {label:10s} curvature (member mean) {_f(r['curvature_members_mean'])}, "
                         f"ensemble 0-1 loss on pairs: {loss}; p pooled {_f(r['pooled_p'])}, orderings >= 42.5 %: "
                         f"{_f(r['share_of_orderings_meeting'])}")
    for name, rows in result["summary"]["comparisons"].items():
        for r in rows:
            cur = r["curvature"].get("members_mean") or {}
            loss = r["ensemble_pair_loss"]
            lines.append(f"  seed {r['seed']} {name}: curvature {_f(cur.get('mean'))} [{_f(cur.get('low'))}, "
                         f"{_f(cur.get('high'))}] ({cur.get('verdict')}, n={cur.get('n')}); ensemble 0-1 loss "
                         + ", ".join(f"{c} {v['mean']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}] ({v['verdict']}, "
                                     f"n={v['n']} pairs)" for c, v in loss.items()))
    for name, o in (result["summary"].get("over_seeds") or {}).items():
        if len(o["seeds"]) < 2:
            continue
        lines.append(f"  over seeds {', '.join(map(str, o['seeds']))}, {name} (mean, 95 % t interval over seeds): "
                     f"curvature {_iv(o['curvature_members'])}; ensemble 0-1 loss "
                     + ", ".join(f"{c} {_iv(v)}" for c, v in o["ensemble_pair_loss"].items()))
    return "\n".join(lines)


def _iv(v: dict[str, Any]) -> str:
    if v["low"] is None:
        return f"{_f(v['mean'])} ({v['verdict']})"
    return (f"{v['mean']:+.3g} [{v['low']:+.3g}, {v['high']:+.3g}] ({v['verdict']}; seeds whose own interval is "
            f"below / above 0: {v['seeds_below_0']} / {v['seeds_above_0']})")


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


__all__ = ["STUDY_DEFAULTS", "arm_checkpoints", "diagnose_seed", "format_study_theory", "study_params",
           "study_theory", "summarise"]
