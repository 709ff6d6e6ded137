"""A 2-D toy study of Theorem 4.1 (the setting of Section 4) with C >= 2 classes.

Data: points uniform in [0, 1]^2 in C horizontal bands separated by the parallel wavy boundaries
x2 = k / C + a sin(2 pi x1), k = 1..C-1 (class = number of boundaries below the point), so the
closest cross-class pairs (ambiguous pairs) straddle a boundary, where a classifier whose boundary
is slightly off gets one example of a pair right and the other wrong - the situation Definition 4.3
and Assumption 4.4 describe. With C = 2 the average and max combiners make the same decision and
condition 2 of Assumption 4.4 constrains nothing, so the default is C = 3. Optional label noise
(``flip_width`` > 0) moves a label across its nearest boundary with probability 0.5 exp(-dist / width);
``margin`` > 0 leaves an empty strip of that half-width around every boundary (a regime where the
closest pairs can be classified confidently, which condition 1 needs).

Models: ``num_models`` small MLPs (Assumption 4.2's form: linear layers + activation, softmax on
the logits), each with its own initialisation and bootstrap resample of the training set, so they
are independent draws h from H. Two families are trained: standard, and adversarially trained
(L-inf PGD on the inputs, the "adversarial defense applied to the base MLPs" of the theorem).
For each family the full diagnostics of :func:`igat.theory.diagnostics.diagnose` are computed on
a fresh test set: curvature, ||M_h||, ||M_h^+||, the k closest cross-class pairs, Assumption 4.4
judged per ordering over the models, Definition 4.3's verdict with the measured lambda~ and B, and
single vs two-member average/max 0-1 loss with a bootstrap over models *and* pairs.
:func:`run_toy_seeds` repeats the study over several data/model seeds and summarises them.

Eq. (10) is not invariant to the input units: measuring inputs in units s times smaller multiplies
B by s and divides lambda~ by s^2, so tau grows like s^3 while distances grow like s, and the J
that admits a pair grows like s^2. ``input_scale_for_ambiguity`` reports the s at which the kept
pairs would become ambiguous (J > 2) - the honest reading of "J is adjusted so that A(D) is non-empty".
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from igat.attacks.pgd import pgd
from igat.config import ConfigError
from igat.models.ensemble import Ensemble, frozen
from igat.stats import seed_interval
from igat.theory.curvature import compare_curvature
from igat.theory.diagnostics import TheoryParams, diagnose
from igat.theory.summary import distribution, jsonable


class ToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_train: int = Field(800, ge=20, le=100000)
    num_test: int = Field(800, ge=20, le=100000)
    num_classes: int = Field(3, ge=2, le=8, description="classes (bands); C > 2 makes average and max differ")
    amplitude: float = Field(0.1, ge=0.0, le=0.5, description="amplitude of the sine boundaries")
    flip_width: float = Field(0.0, ge=0.0, le=1.0, description="label-noise width around the boundary (0: none)")
    margin: float = Field(0.0, ge=0.0, le=0.1, description="half-width of an empty strip around each boundary")
    num_models: int = Field(8, ge=2, le=64, description="independently trained MLPs per family")
    hidden: list[int] = Field([32, 32], min_length=1, max_length=6)
    activation: str = Field("tanh", pattern="^(relu|tanh|softplus)$")
    steps: int = Field(300, ge=1, le=100000, description="full-batch Adam steps")
    lr: float = Field(0.01, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    adv_eps: float = Field(0.01, gt=0.0, le=0.5, description="L-inf radius of adversarial training")
    adv_steps: int = Field(5, ge=1, le=100)
    k_pairs: int = Field(60, ge=1, le=10000)
    J: float = Field(4.0, gt=2.0)
    curvature_eps: float = Field(0.02, gt=0.0, le=0.5)
    delta_mode: str = Field("sign", pattern="^(pgd|sign|random)$")
    ci_method: str = Field("bootstrap", pattern="^(wilson|bootstrap)$")
    families: list[str] = Field(["standard", "adversarial"], min_length=1)
    seed: int = Field(0, ge=0)


def parse_toy_params(params: dict[str, Any] | ToyParams | None) -> ToyParams:
    if isinstance(params, ToyParams):
        return params
    try:
        p = ToyParams(**(params or {}))
    except ValidationError as exc:
        raise ConfigError.from_validation(exc, prefix="toy.") from None
    bad = [f for f in p.families if f not in ("standard", "adversarial")]
    if bad:
        raise ConfigError([("toy.families", f"unknown family {bad[0]!r}; allowed: standard, adversarial")])
    if p.margin * 2 * p.num_classes >= 1:
        raise ConfigError([("toy.margin", f"the empty strips cover the square: need margin < 1 / (2 C) = "
                                          f"{1 / (2 * p.num_classes):.3g}")])
    return p


class MLP(nn.Module):
    """h(x) = softmax(W_L sigma(... sigma(W_1 x))) of eqs. (6)-(9); forward returns the logits z."""

    def __init__(self, in_dim: int = 2, hidden: list[int] | tuple[int, ...] = (32, 32), num_classes: int = 2,
                 activation: str = "relu") -> None:
        super().__init__()
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus}
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), acts[activation]()]
            prev = h
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


def boundary(x1: Tensor, amplitude: float, k: int = 1, num_classes: int = 2) -> Tensor:
    """The k-th of the C - 1 parallel boundaries (k = 1 .. C - 1)."""
    return k / num_classes + amplitude * torch.sin(2 * math.pi * x1)


def clean_labels(x: Tensor, amplitude: float, num_classes: int) -> tuple[Tensor, Tensor]:
    """(class = number of boundaries below the point, signed distance in x2 to the nearest boundary)."""
    wave = amplitude * torch.sin(2 * math.pi * x[:, 0])
    heights = torch.arange(1, num_classes, dtype=x.dtype) / num_classes  # [C-1]
    gaps = x[:, 1:2] - wave[:, None] - heights[None, :]  # [n, C-1]
    y = (gaps > 0).sum(dim=1)
    nearest = gaps.abs().argmin(dim=1)
    return y, gaps.gather(1, nearest[:, None]).squeeze(1)


def make_toy(n: int, amplitude: float, flip_width: float, generator: torch.Generator, num_classes: int = 2,
             margin: float = 0.0) -> tuple[Tensor, Tensor]:
    """Points in [0, 1]^2 (outside the empty strips) and labels with boundary-concentrated label noise."""
    parts: list[Tensor] = []
    have = 0
    while have < n:  # rejection sampling: the strips cover 2 * margin * (C - 1) of the square
        x = torch.rand(2 * n, 2, generator=generator)
        _, gap = clean_labels(x, amplitude, num_classes)
        x = x[gap.abs() >= margin]
        parts.append(x)
        have += len(x)
    x = torch.cat(parts)[:n]
    y, gap = clean_labels(x, amplitude, num_classes)
    if flip_width > 0:
        flip = torch.rand(n, generator=generator) < 0.5 * torch.exp(-gap.abs() / flip_width)
        across = torch.where(gap > 0, y - 1, y + 1)  # the class on the other side of the nearest boundary
        y = torch.where(flip, across, y)
    return x, y


def train_mlp(x: Tensor, y: Tensor, p: ToyParams, adversarial: bool, seed: int) -> MLP:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP(2, p.hidden, p.num_classes, p.activation)
    boot = torch.randint(0, len(x), (len(x),), generator=g)  # bootstrap resample: an independent h from H
    xb, yb = x[boot], y[boot]
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    for _ in range(p.steps):
        inputs = xb
        if adversarial:
            with frozen(model):
                inputs = pgd(model, xb, yb, eps=p.adv_eps, step_size=p.adv_eps / 2, steps=p.adv_steps, generator=g)
        loss = F.cross_entropy(model(inputs), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def _accuracy(models: list[nn.Module], x: Tensor, y: Tensor) -> list[float]:
    return [float((m(x).argmax(1) == y).float().mean()) for m in models]


def run_toy_study(params: dict[str, Any] | ToyParams | None = None) -> dict[str, Any]:
    """Train the MLP families and return the diagnostics of each (strict-JSON-able)."""
    p = parse_toy_params(params)
    # tiny ops are dominated by thread hand-off: one intra-op thread is ~10x faster on a busy CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_toy_study(p)
    finally:
        torch.set_num_threads(threads)


def _run_toy_study(p: ToyParams) -> dict[str, Any]:
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(p.seed)
    train_x, train_y = make_toy(p.num_train, p.amplitude, p.flip_width, g, p.num_classes, p.margin)
    test_x, test_y = make_toy(p.num_test, p.amplitude, p.flip_width, g, p.num_classes, p.margin)
    tp = TheoryParams(num_examples=p.num_test, delta_mode=p.delta_mode, eps=p.curvature_eps, pgd_steps=10,
                      pair_pool=None, k_pairs=p.k_pairs, J=p.J, spectral_examples=min(p.num_test, 200),
                      ci_method=p.ci_method, device="cpu", seed=p.seed, histogram_bins=20)
    families: dict[str, Any] = {}
    ensembles: dict[str, Ensemble] = {}
    for fam in p.families:
        t = time.perf_counter()
        models = [train_mlp(train_x, train_y, p, fam == "adversarial", p.seed * 1000 + i + (500 if fam == "adversarial" else 0))
                  for i in range(p.num_models)]
        train_seconds = time.perf_counter() - t
        ens = Ensemble(models).eval()
        ensembles[fam] = ens
        res = diagnose(ens, test_x, test_y, test_x, test_y, p.num_classes, tp, split="test")
        res["input_scale_for_ambiguity"] = _scale_for_ambiguity(res["pairs"].get("implied_J_kth"))
        res["seconds"]["training"] = train_seconds
        res["train_accuracy"] = _accuracy(models, train_x, train_y)
        res["test_accuracy"] = _accuracy(models, test_x, test_y)
        for target in res["curvature"]["targets"].values():
            target.pop("values", None)  # keep the toy report small; distributions stay
        families[fam] = res
    comparison = None
    if len(ensembles) == 2:
        curv = compare_curvature(ensembles["standard"], ensembles["adversarial"], test_x, test_y,
                                 mode=p.delta_mode, eps=p.curvature_eps, combiners=())
        comparison = {fam: {"mean_per_model": [float(v[torch.isfinite(v)].mean()) for v in d.values()],
                            "all_models": distribution(torch.cat(list(d.values())), 20, log_hist=True)}
                      for fam, d in curv.items()}
    return jsonable({"params": p.model_dump(), "families": families,
                     "curvature_comparison": comparison, "seconds": time.perf_counter() - t0,
                     "bayes_flip_fraction": _flip_fraction(test_x, test_y, p.amplitude, p.num_classes)})


def _flip_fraction(x: Tensor, y: Tensor, amplitude: float, num_classes: int) -> float:
    """Fraction of test labels that disagree with the clean boundaries (irreducible error)."""
    clean, _ = clean_labels(x, amplitude, num_classes)
    return float((clean != y).float().mean())


def _scale_for_ambiguity(implied: float | None) -> float | None:
    """The factor s by which the input units must shrink (inputs x -> s x) for the kept pairs to be
    ambiguous under eq. (10) with J just above 2: the implied J grows like s^2 (module docstring)."""
    if implied is None or implied <= 0 or not math.isfinite(implied):
        return None
    return max(1.0, math.sqrt(2.0 / implied))


def run_toy_seeds(params: dict[str, Any] | ToyParams | None, seeds: list[int]) -> dict[str, Any]:
    """:func:`run_toy_study` for each seed (fresh data and models) and a summary across seeds."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError([("toy.seeds", "give one or more distinct seeds")])
    base = parse_toy_params(params).model_dump()
    runs = {str(s): run_toy_study({**base, "seed": s}) for s in seeds}
    return jsonable({"params": {**base, "seed": None}, "seeds": list(seeds), "runs": runs,
                     "summary": summarise_seeds(runs)})


def summarise_seeds(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per family: each seed's headline numbers and the mean (t interval over seeds) of the differences."""
    out: dict[str, Any] = {}
    families = next(iter(runs.values()))["families"]
    for fam in families:
        rows = []
        for seed, r in runs.items():
            f = r["families"][fam]
            z, cond, pairs = f["zero_one"] or {}, f["conditions"], f["pairs"]
            verdict = cond.get("assumption") or {}
            curv = [f["curvature"]["targets"][k]["mean"] for k in f["curvature"]["targets"] if k.startswith("member_")]
            rows.append({
                "seed": int(seed), "test_accuracy": _avg(f["test_accuracy"]), "curvature_mean": _avg(curv),
                "lambda_tilde": f["curvature"]["lambda_tilde_common"],
                "B": (f["spectral"] or {}).get("B"), "implied_J": pairs.get("implied_J_kth"),
                "ambiguous": (pairs.get("definition_4_3") or {}).get("ambiguous"),
                "input_scale_for_ambiguity": f.get("input_scale_for_ambiguity"),
                "pooled_p": (verdict.get("condition1") or {}).get("pooled_p"),
                "share_of_orderings_meeting": (verdict.get("condition1") or {}).get("share_of_orderings_meeting"),
                "min_p": ((verdict.get("condition1") or {}).get("per_ordering_p") or {}).get("min"),
                "condition1_holds": (verdict.get("condition1") or {}).get("holds"),
                "condition2_share": (verdict.get("condition2") or {}).get("share_of_examples_all_models"),
                "condition2_holds": (verdict.get("condition2") or {}).get("holds"),
                "assumption_holds": verdict.get("holds"),
                "single": (z.get("single") or {}).get("mean"),
                **{f"{c}": (z.get(c) or {}).get("mean") for c in ("average", "max")},
                **{f"{c}_minus_single": (z.get("differences") or {}).get(f"{c}_minus_single") for c in ("average", "max")},
            })
        fam_out: dict[str, Any] = {"per_seed": rows}
        for c in ("average", "max"):
            iv = seed_interval([r[f"{c}_minus_single"]["mean"] for r in rows if r[f"{c}_minus_single"]])
            excl = sum(1 for r in rows if r[f"{c}_minus_single"] and r[f"{c}_minus_single"]["high"] < 0)
            fam_out[f"{c}_minus_single"] = {"mean_over_seeds": iv["mean"],
                                            "seed_t_interval": None if iv["low"] is None else [iv["low"], iv["high"]],
                                            "seeds_with_interval_below_0": excl, "seeds": iv["seeds"]}
        out[fam] = fam_out
    return out


def format_toy_report(result: dict[str, Any]) -> str:
    """A plain-text summary of :func:`run_toy_study` for the CLI."""
    p = result["params"]
    lines = [f"toy study (seed {p['seed']}): C = {p['num_classes']}, {p['num_models']} MLPs per family, "
             f"{p['k_pairs']} closest cross-class test pairs, J={p['J']}, margin {p['margin']}, "
             f"label flips in test set {result['bayes_flip_fraction']:.3f}, {result['seconds']:.1f}s"]
    for fam, r in result["families"].items():
        acc = r["test_accuracy"]
        lam = r["curvature"]["lambda_tilde"]
        members = [v for k, v in lam.items() if k.startswith("member_")]
        curv_means = [r["curvature"]["targets"][k]["mean"] for k in lam if k.startswith("member_")]
        lines.append(f"[{fam}] test acc mean {sum(acc) / len(acc):.3f}; curvature mean {_avg(curv_means):.3g}, "
                     f"lambda~ (max) {max(members):.3g}")
        if r["spectral"]:
            lines.append(f"  B0 = max||M_h|| = {r['spectral']['B0']:.3g}, B = max||M_h^+|| = {r['spectral']['B']:.3g}")
        pr = r["pairs"]
        lines.append(f"  pairs: {pr['num_pairs']}, max distance {pr['tau']:.3g}, implied J {_fmt(pr['implied_J_kth'])}"
                     f"; ambiguous at input scale x{_fmt(r.get('input_scale_for_ambiguity'))}")
        if pr.get("definition_4_3"):
            lines.append(f"  {pr['definition_4_3']['verdict']}")
        verdict = r["conditions"].get("assumption")
        if verdict:
            lines.append(f"  Assumption 4.4: {verdict['verdict']}")
        z = r["zero_one"]
        if z:
            for key in ("single", "average", "max"):
                mp = z[key]["models_and_pairs"]
                lines.append(f"  0-1 loss {key:7s} {z[key]['mean']:.3f}  models+pairs [{_fmt(mp['low'])}, "
                             f"{_fmt(mp['high'])}]")
            for comb in ("average", "max"):
                d = z["differences"][f"{comb}_minus_single"]
                lines.append(f"  {comb} - single = {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] "
                             f"({z['interval_basis']}); pairs only [{d['pairs_only']['low']:+.3f}, "
                             f"{d['pairs_only']['high']:+.3f}]")
    return "\n".join(lines)


def format_toy_seeds(result: dict[str, Any]) -> str:
    """Every seed's report, then the across-seed summary."""
    lines = [format_toy_report(r) for r in result["runs"].values()]
    lines.append(f"summary over seeds {', '.join(map(str, result['seeds']))}:")
    for fam, s in result["summary"].items():
        for comb in ("average", "max"):
            d = s[f"{comb}_minus_single"]
            iv = d["seed_t_interval"]
            lines.append(f"  [{fam}] {comb} - single: mean {_fmt(d['mean_over_seeds'])}"
                         + (f", t interval over seeds [{iv[0]:+.3f}, {iv[1]:+.3f}]" if iv else "")
                         + f"; {d['seeds_with_interval_below_0']}/{d['seeds']} seeds with interval below 0")
        held = [r["assumption_holds"] for r in s["per_seed"]]
        amb = [r["ambiguous"] for r in s["per_seed"]]
        lines.append(f"  [{fam}] Assumption 4.4 holds in {sum(bool(h) for h in held)}/{len(held)} seeds; "
                     f"pairs ambiguous (Def. 4.3, xi = 0) in {sum(bool(a) for a in amb)}/{len(amb)} seeds")
    return "\n".join(lines)


def _avg(v: list[float | None]) -> float:
    vals = [x for x in v if x is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"
