"""A 2-D two-class toy study of Theorem 4.1 (the setting of Section 4).

Data: points uniform in [0, 1]^2, class 1 above the wavy boundary x2 = 0.5 + a sin(2 pi x1), so the
closest cross-class pairs (ambiguous pairs) straddle the boundary, where a classifier whose boundary
is slightly off gets one example of a pair right and the other wrong - the situation Definition 4.3
and Assumption 4.4 describe. Optional label noise (``flip_width`` > 0) flips labels near the boundary
with probability 0.5 exp(-dist / width).

Models: ``num_models`` small MLPs (Assumption 4.2's form: linear layers + activation, softmax on
the logits), each with its own initialisation and bootstrap resample of the training set, so they
are independent draws h from H. Two families are trained: standard, and adversarially trained
(L-inf PGD on the inputs, the "adversarial defense applied to the base MLPs" of the theorem).
For each family the full diagnostics of :func:`igat.theory.diagnostics.diagnose` are computed on
a fresh test set: curvature, ||M_h||, ||M_h^+||, the k closest cross-class pairs, Assumption 4.4
fractions and single vs two-member average/max 0-1 loss with confidence intervals.
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
from igat.theory.curvature import compare_curvature
from igat.theory.diagnostics import TheoryParams, diagnose
from igat.theory.summary import distribution, jsonable


class ToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_train: int = Field(800, ge=20, le=100000)
    num_test: int = Field(800, ge=20, le=100000)
    amplitude: float = Field(0.15, ge=0.0, le=0.5, description="amplitude of the sine boundary")
    flip_width: float = Field(0.0, ge=0.0, le=1.0, description="label-noise width around the boundary (0: none)")
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


def boundary(x1: Tensor, amplitude: float) -> Tensor:
    return 0.5 + amplitude * torch.sin(2 * math.pi * x1)


def make_toy(n: int, amplitude: float, flip_width: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Points in [0, 1]^2 and labels with boundary-concentrated label noise."""
    x = torch.rand(n, 2, generator=generator)
    gap = x[:, 1] - boundary(x[:, 0], amplitude)
    y = (gap > 0).long()
    if flip_width > 0:
        flip = torch.rand(n, generator=generator) < 0.5 * torch.exp(-gap.abs() / flip_width)
        y = torch.where(flip, 1 - y, y)
    return x, y


def train_mlp(x: Tensor, y: Tensor, p: ToyParams, adversarial: bool, seed: int) -> MLP:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP(2, p.hidden, 2, p.activation)
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
    train_x, train_y = make_toy(p.num_train, p.amplitude, p.flip_width, g)
    test_x, test_y = make_toy(p.num_test, p.amplitude, p.flip_width, g)
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
        res = diagnose(ens, test_x, test_y, test_x, test_y, 2, tp, split="test")
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
                     "bayes_flip_fraction": _flip_fraction(test_x, test_y, p.amplitude)})


def _flip_fraction(x: Tensor, y: Tensor, amplitude: float) -> float:
    """Fraction of test labels that disagree with the clean boundary (irreducible error)."""
    clean = (x[:, 1] > boundary(x[:, 0], amplitude)).long()
    return float((clean != y).float().mean())


def format_toy_report(result: dict[str, Any]) -> str:
    """A plain-text summary of :func:`run_toy_study` for the CLI."""
    lines = [f"toy study: {result['params']['num_models']} MLPs per family, "
             f"{result['params']['k_pairs']} closest cross-class test pairs, J={result['params']['J']}, "
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
        lines.append(f"  pairs: {pr['num_pairs']}, max distance {pr['tau']:.3g}, implied J {_fmt(pr['implied_J_kth'])}")
        pooled = r["conditions"]["members_pooled"]
        if pooled:
            lines.append(f"  Assumption 4.4: p (cond.1) = {pooled['p']:.3f} (>= 0.425: {pooled['meets_threshold']}), "
                         f"cond.2 = {pooled['condition2']:.3f}")
        z = r["zero_one"]
        if z:
            for key in ("single", "average", "max"):
                lines.append(f"  0-1 loss {key:7s} {z[key]['mean']:.3f}  [{z[key]['low']:.3f}, {z[key]['high']:.3f}]")
            for comb in ("average", "max"):
                d = z["differences"][f"{comb}_minus_single"]
                lines.append(f"  {comb} - single = {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]  "
                             f"theorem direction holds: {z['theorem_holds'][comb]}")
    return "\n".join(lines)


def _avg(v: list[float | None]) -> float:
    vals = [x for x in v if x is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"
