"""``run_diagnostics``: every Section-4 quantity for a trained checkpoint, as one JSON-ready dict.

Result keys (version 1; all floats finite or None):
  version, checkpoint, params, dataset{name, split, num_classes, dim, curvature_examples, pair_pool},
  model{defense, igat, num_members},
  curvature{delta_mode, eps, pgd_steps, targets{member_i | ensemble_<comb>: distribution + values},
            lambda_tilde{target: value}, lambda_tilde_common},
  spectral  (None when spectral_examples = 0)
           {num_examples, targets{member_i: {m_norm, m_pinv_norm (distributions), B0, B, rank_min}}, B0, B},
  pairs{mode, split, pool_size, num_pairs, tau, eq10{J, xi, lambda_tilde, B, C, tau} | None,
        implied_J_kth (J making the largest kept distance the eq.-10 threshold) | None,
        definition_4_3{ambiguous, implied_J, xi, xi_needed_at_J, lambda_tilde_sq, verdict} | None,
        distances (distribution of kept pair distances), nearest_other_class (distribution over the pool),
        listed [[i, j, dist], ...] (first max_pairs_listed, pool indices)},
  conditions{J, threshold, targets{member_i | ensemble_<comb>: {condition1, condition2, both, p,
             meets_threshold, n_orderings, n_examples}}, members_pooled{...},
             assumption (Assumption 4.4 per ordering over the members, see conditions.assumption_verdict)},
  zero_one  (None with fewer than 2 members or no pairs; see igat.theory.zero_one.theorem_check),
  reference (None, or {checkpoint, curvature{targets, lambda_tilde}} for params.reference_checkpoint),
  notes [str], seconds{...}.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from igat.config import ConfigError
from igat.models.combiners import combine
from igat.models.ensemble import Ensemble
from igat.theory.conditions import P_THRESHOLD, acceptable_fractions, assumption_verdict
from igat.theory.constants import ARTIFACT_NAME
from igat.theory.curvature import curvature_distributions
from igat.theory.pairs import cross_class_pairs, eq10_threshold, implied_j
from igat.theory.params import TheoryParams, parse_params
from igat.theory.spectral import spectral_bounds
from igat.theory.summary import distribution, jsonable
from igat.theory.zero_one import theorem_check

RESULT_VERSION = 1
__all__ = ["ARTIFACT_NAME", "RESULT_VERSION", "TheoryParams", "diagnose", "parse_params", "run_diagnostics"]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError([("params.device", "'cuda' requested but no CUDA GPU is available (use auto or cpu)")])
    return torch.device(name)


def _lambda_tilde(values: Tensor, q: float) -> float | None:
    v = values[torch.isfinite(values)].double()
    return float(torch.quantile(v, q)) if len(v) else None


def curvature_section(ensemble: torch.nn.Module, x: Tensor, y: Tensor, p: TheoryParams) -> dict[str, Any]:
    vals = curvature_distributions(ensemble, x, y, p.delta_mode, p.eps, p.pgd_steps, p.batch_size,
                                   tuple(p.combiners), p.seed)
    targets = {}
    for name, v in vals.items():
        d = distribution(v, p.histogram_bins, log_hist=True)
        d["values"] = [float(f"{t:.6g}") for t in v.tolist()]
        targets[name] = d
    lam = {name: _lambda_tilde(v, p.lambda_quantile) for name, v in vals.items()}
    member_lams = [v for k, v in lam.items() if not k.startswith("ensemble_") and v is not None]
    return {"delta_mode": p.delta_mode, "eps": p.eps, "pgd_steps": p.pgd_steps, "targets": targets,
            "lambda_quantile": p.lambda_quantile, "lambda_tilde": lam,
            # Assumption 4.2 uses one lambda~ for every h in H: the largest member value
            "lambda_tilde_common": max(member_lams) if member_lams else None}


def spectral_section(members: list[torch.nn.Module], x: Tensor, p: TheoryParams) -> dict[str, Any]:
    targets = {}
    for i, m in enumerate(members):
        s = spectral_bounds(m, x, batch_size=min(p.batch_size, 32))
        targets[f"member_{i}"] = {"m_norm": distribution(s["m_norm"], p.histogram_bins),
                                  "m_pinv_norm": distribution(s["m_pinv_norm"], p.histogram_bins),
                                  "B0": s["B0"], "B": s["B"], "rank_min": int(s["rank"].min())}
    return {"num_examples": int(len(x)), "targets": targets,
            "B0": max(t["B0"] for t in targets.values()), "B": max(t["B"] for t in targets.values())}


@torch.no_grad()
def score_tables(ensemble: Ensemble, x: Tensor, combiners: list[str], batch_size: int) -> dict[str, Tensor]:
    """Softmax of every member and the combined scores of each combiner, on x (CPU tensors)."""
    ensemble.eval()
    members, combined = [], {c: [] for c in combiners}
    for s in range(0, len(x), batch_size):
        out = ensemble.forward_output(x[s : s + batch_size])
        members.append(out.probs.cpu())
        for c in combiners:
            combined[c].append(combine(out, c).cpu())
    tables = {"members": torch.cat(members, dim=1) if members else torch.empty(0)}
    tables.update({f"ensemble_{c}": torch.cat(v) for c, v in combined.items()})
    return tables


def def43_verdict(kth: float, implied: float, lam: float, b: float, num_classes: int, j: float,
                  xi: float) -> dict[str, Any]:
    """Are the kept pairs ambiguous in the sense of Definition 4.3 with the measured lambda~ and B?

    Eq. (10) with the given xi admits the largest kept distance for J = ``implied``; the pairs are
    ambiguous iff that J exceeds 2. Since xi <= lambda~^2 is free in the paper, we also report the xi
    that would admit them at the chosen J: with xi that close to lambda~^2 any pair qualifies, so the
    definition only constrains anything once xi is fixed (xi = 0 here unless set).
    """
    gap_needed = 1.0 / (j * b * num_classes**0.5 * kth) if kth > 0 else None  # lambda~^2 - xi must be <= this
    xi_needed = lam**2 - gap_needed if gap_needed is not None else None
    ambiguous = implied > 2
    verdict = (f"Definition 4.3 with the measured lambda~ = {lam:.3g}, B = {b:.3g}, xi = {xi:g}: the kept pairs "
               f"(distance <= {kth:.3g}) need J = {implied:.3g} "
               + ("> 2, so they are ambiguous pairs" if ambiguous else
                  "<= 2, so they are not ambiguous pairs (eq. 10 requires J > 2)")
               + (f"; at J = {j:g} they would need lambda~^2 - xi <= {gap_needed:.3g} (lambda~^2 = {lam**2:.3g}): "
                  "xi is free in the paper, so only a fixed xi makes the definition constrain anything"
                  if gap_needed is not None and not ambiguous else ""))
    return {"ambiguous": ambiguous, "implied_J": implied, "xi": xi, "xi_needed_at_J": xi_needed,
            "gap_needed_at_J": gap_needed,
            "lambda_tilde_sq": lam**2, "verdict": verdict}


def pairs_and_conditions(
    ensemble: Ensemble,
    pool_x: Tensor,
    pool_y: Tensor,
    num_classes: int,
    p: TheoryParams,
    lambda_tilde: float | None,
    b: float | None,
    split: str,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, list[str]]:
    notes: list[str] = []
    lam = p.lambda_tilde or lambda_tilde
    bb = p.B or b
    eq10 = None
    tau = None
    if lam is not None and bb is not None and p.xi < lam**2:
        tau = eq10_threshold(p.J, lam, bb, num_classes, p.xi)
        eq10 = {"J": p.J, "xi": p.xi, "lambda_tilde": lam, "B": bb, "C": num_classes, "tau": tau}
    if p.pair_mode == "eq10":
        if eq10 is None:
            field = "params.B" if bb is None else ("params.lambda_tilde" if lam is None else "params.xi")
            raise ConfigError([(field, "pair_mode='eq10' needs lambda~ and B (measured: set spectral_examples > 0, "
                                       "or give lambda_tilde/B) and xi < lambda~^2")])
        search = cross_class_pairs(pool_x, pool_y, k=p.k_pairs, max_distance=tau)
        if len(search) == 0:
            notes.append(f"eq. (10) threshold tau={tau:.3g} keeps no pair (nearest cross-class distance "
                         f"{float(search.nn_distance.min()):.3g}); lower J or use pair_mode='knn'")
    else:
        search = cross_class_pairs(pool_x, pool_y, k=p.k_pairs)
    kth = float(search.distances.max()) if len(search) else None
    implied = None
    ambiguity = None
    if kth is not None and lam is not None and bb is not None and p.xi < lam**2:
        implied = implied_j(kth, lam, bb, num_classes, p.xi)
        ambiguity = def43_verdict(kth, implied, lam, bb, num_classes, p.J, p.xi)
        if implied <= 2:
            notes.append(ambiguity["verdict"])
    listed = [[int(i), int(j), float(d)] for (i, j), d in zip(search.pairs[: p.max_pairs_listed].tolist(),
                                                           search.distances[: p.max_pairs_listed].tolist())]
    pairs_out = {"mode": p.pair_mode, "split": split, "pool_size": int(len(pool_x)), "num_pairs": len(search),
                 "tau": tau if p.pair_mode == "eq10" else kth, "eq10": eq10, "implied_J_kth": implied,
                 "definition_4_3": ambiguity,
                 "distances": distribution(search.distances, p.histogram_bins),
                 "nearest_other_class": distribution(search.nn_distance, p.histogram_bins), "listed": listed}

    cond: dict[str, Any] = {"J": p.J, "threshold": P_THRESHOLD, "targets": {}, "members_pooled": None,
                            "assumption": None}
    zero_one = None
    if len(search):
        used = torch.unique(search.pairs.flatten())
        remap = torch.full((len(pool_x),), -1, dtype=torch.long)
        remap[used] = torch.arange(len(used))
        local_pairs = remap[search.pairs]
        device = next(ensemble.parameters()).device
        tables = score_tables(ensemble, pool_x[used].to(device), list(p.combiners), p.batch_size)
        y_used = pool_y[used].cpu()
        member_fracs = []
        for i, scores in enumerate(tables["members"]):
            f = acceptable_fractions(scores, y_used, local_pairs, p.J)
            member_fracs.append(f)
            cond["targets"][f"member_{i}"] = f.as_dict()
        for c in p.combiners:
            cond["targets"][f"ensemble_{c}"] = acceptable_fractions(tables[f"ensemble_{c}"], y_used, local_pairs,
                                                                    p.J).as_dict()
        # the theorem takes expectations over h in H: pool the members' orderings
        n_ord = sum(f.n_orderings for f in member_fracs)
        cond["members_pooled"] = {
            key: sum(getattr(f, key) * f.n_orderings for f in member_fracs) / n_ord
            for key in ("condition1", "condition2", "both")
        }
        cond["members_pooled"]["p"] = cond["members_pooled"]["condition1"]
        cond["members_pooled"]["meets_threshold"] = cond["members_pooled"]["p"] >= P_THRESHOLD
        # ... but the assumption asks p >= 42.5 % for every ordering: judge it per ordering over the members
        cond["assumption"] = assumption_verdict(tables["members"], y_used, local_pairs, p.J)
        if len(tables["members"]) >= 2:
            zero_one = theorem_check(tables["members"], y_used, local_pairs, p.ci_method, p.confidence,
                                     p.bootstrap_resamples, p.seed)
        else:
            notes.append("single model: the ensemble vs single 0-1 loss check needs >= 2 members")
    return pairs_out, cond, zero_one, notes


def diagnose(
    ensemble: Ensemble,
    curv_x: Tensor,
    curv_y: Tensor,
    pool_x: Tensor,
    pool_y: Tensor,
    num_classes: int,
    p: TheoryParams,
    split: str = "test",
) -> dict[str, Any]:
    """All sections for an ensemble already on its device (inputs in [0, 1])."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    curvature = curvature_section(ensemble, curv_x, curv_y, p)
    seconds["curvature"] = time.perf_counter() - t
    spectral = None
    if p.spectral_examples > 0:
        t = time.perf_counter()
        spectral = spectral_section(list(ensemble.members), curv_x[: p.spectral_examples], p)
        seconds["spectral"] = time.perf_counter() - t
    t = time.perf_counter()
    pairs, cond, zero_one, notes = pairs_and_conditions(
        ensemble, pool_x, pool_y, num_classes, p, curvature["lambda_tilde_common"],
        spectral["B"] if spectral else None, split)
    seconds["pairs_conditions"] = time.perf_counter() - t
    return {"curvature": curvature, "spectral": spectral, "pairs": pairs, "conditions": cond,
            "zero_one": zero_one, "notes": notes, "seconds": seconds}


def run_diagnostics(checkpoint_path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint, measure everything of Section 4 and return a strict-JSON-able dict."""
    from igat.data import equidistant_indices, load_dataset
    from igat.training import load_ensemble

    p = parse_params(params)
    if not Path(checkpoint_path).exists():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint_path}")
    device = _device(p.device)
    t0 = time.perf_counter()
    ensemble, config, _ = load_ensemble(checkpoint_path, device)
    data = load_dataset(config.data, config.seed)
    curv_x, curv_y = data.test_tensors(p.num_examples)
    curv_x, curv_y = curv_x.to(device), curv_y.to(device)
    split_x, split_y = (data.test_x, data.test_y) if p.pair_split == "test" else (data.train_x, data.train_y)
    idx = equidistant_indices(len(split_x), p.pair_pool)
    pool_x = split_x[idx].float().div(255.0).to(device)
    pool_y = split_y[idx].to(device)
    torch.manual_seed(p.seed)
    result = diagnose(ensemble, curv_x, curv_y, pool_x, pool_y.cpu(), data.num_classes, p, p.pair_split)

    reference = None
    if p.reference_checkpoint:
        if not Path(p.reference_checkpoint).exists():
            raise ConfigError([("params.reference_checkpoint", f"checkpoint not found: {p.reference_checkpoint}")])
        ref_ens, ref_cfg, _ = load_ensemble(p.reference_checkpoint, device)
        if ref_cfg.data.num_classes != config.data.num_classes:
            raise ConfigError([("params.reference_checkpoint", "has a different number of classes")])
        t = time.perf_counter()
        ref_curv = curvature_section(ref_ens, curv_x, curv_y, p)
        result["seconds"]["reference_curvature"] = time.perf_counter() - t
        reference = {"checkpoint": str(p.reference_checkpoint), "defense": ref_cfg.defense.name,
                     "curvature": ref_curv}
    result["seconds"]["total"] = time.perf_counter() - t0
    out = {
        "version": RESULT_VERSION,
        "checkpoint": str(checkpoint_path),
        "params": p.model_dump(),
        "dataset": {"name": config.data.dataset, "source": data.source, "split": p.pair_split,
                    "num_classes": data.num_classes, "dim": int(curv_x[0].numel()),
                    "curvature_examples": int(len(curv_x)), "pair_pool": int(len(pool_x))},
        "model": {"defense": config.defense.name, "igat": bool(config.igat.enabled),
                  "num_members": ensemble.num_members},
        "reference": reference,
        **result,
    }
    return jsonable(out)
