"""CW-opt: Carlini & Wagner's L-inf optimisation attack, as the paper's reference code ran it (spec §3.3).

This is **not** the ``cw`` attack (:mod:`igat.attacks.cw`, PGD on the CW margin loss, the
RobustBench-style "CW-inf"). The reference evaluation (``test_CW.py`` + ``attack_cw.py``, taken
from Carmon et al.'s RST repository, a Foolbox v1.9 re-implementation of Carlini's ``li_attack``)
searches for the *smallest* L-inf adversarial and only then scores it at a fixed eps:

* Per example, minimise ``sum_pixels max(|x - x0| - tau, 0) + c * max(0, z_y - max_{k != y} z_k + kappa)``
  where ``z`` is the model output (for an ensemble: the combiner's log-output, spec §3.1) and
  ``x0`` the clean input, over ``x = (tanh(w) + 1) / 2`` (tanh space, so ``x`` stays in [0, 1])
  with Adam (lr 5e-3), at most ``max_iterations`` steps per (c, tau).
* Abort early: every ``ceil(max_iterations / 10)`` iterations (the first included) the round stops
  unless the loss dropped by more than 1e-4 since the last check.
* tau loop: tau starts at ``start_tau`` (``tau_start`` = 1 for the first c). While a round finds an
  adversarial (at any of its iterates), tau becomes ``tau_decrease`` x min(tau, achieved L-inf) and
  the next round warm-starts from the round's last iterate; the loop ends when tau <= ``tau_min``
  (c succeeded) or when a round finds nothing (c succeeded iff an earlier round of this loop did;
  the failing tau becomes ``start_tau`` for the following constants, as in the reference).
* Binary search over c (``binary_search_steps``, from ``initial_const``): success sets the upper
  bound, failure the lower bound; c is multiplied by ``const_factor`` until the first success, then
  bisected. Each new c restarts from the clean input. (With 10 or more steps the last one uses the
  upper bound, the Foolbox quirk.)
* The result is the adversarial with the smallest L-inf distance among *all* misclassified iterates
  (Foolbox's ``Adversarial`` bookkeeping), unconstrained. Scoring clips it into the eps-ball (and
  [0, 1]) and re-classifies; if nothing was found the clean input is returned. Inputs misclassified
  to begin with are returned unchanged and not attacked (Foolbox skips them too).

Batched: all examples of a batch are optimised together, each with its own c, bounds, tau,
start_tau, warm start, Adam state, iteration counter and abort-early state. The loop is one
forward/backward pass per global step over the examples still running; an example whose round
ends (abort early or ``max_iterations``) moves on to its next tau round or next c at once, without
waiting for the others, and leaves the batch after its last binary-search step. The result per
example equals running the reference on that example alone (up to float rounding; our Adam uses
per-example step counts, restarted with every round as the reference's new optimiser is).

Cost: slow. Each example costs up to ``binary_search_steps`` x (tau rounds) x ``max_iterations``
forward+backward passes; tau rounds number up to log(tau_min) / log(tau_decrease) ~ 53 with the
defaults (fewer in practice: tau follows the achieved distance and abort early cuts rounds short).
A batch runs until its slowest example is done. Per-example pass counts are reported in
``stats["iterations"]``. As in the paper (following Carmon et al.) it runs on 1,000 equidistant
test examples by default (``num_examples``; :func:`igat.evaluation.evaluate_ensemble` applies it).

Statistics (``AttackResult.stats``, per-example tensors that evaluation reduces to mean / median /
max): ``success`` (bool: an unconstrained adversarial exists, clean misclassifications included;
``success_mean`` = 1 - robust accuracy at eps = infinity), ``linf`` (unconstrained L-inf of the best
adversarial, in [0, 1] pixel units, for the correctly classified examples the attack fooled),
``robust_8_255`` / ``robust_4_255`` / ``robust_2_255`` / ``robust_1_255`` (bool: still correct after
clipping into that eps-ball, so ``robust_4_255_mean`` is the accuracy at 4/255, the reference's
other columns), ``iterations`` (forward+backward passes spent on the example) and ``attacked`` (bool:
correctly classified clean, so searched).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from igat.attacks.base import ATTACKS, Attack, AttackResult, Model, project
from igat.specs.attacks import CWOptSpec

# Foolbox maps [0, 1] to (-1, 1) shrunk by this factor before arctanh, so the clean input is finite.
_TANH_SHRINK = 0.999999
_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPS = 0.9, 0.999, 10e-8  # Foolbox v1's AdamOptimizer (eps as written there)
_ABORT_TOLERANCE = 1e-4  # abort early unless the loss dropped by more than this since the last check
# The reference scored the best adversarial at these radii (attack_cw.py); reported as statistics.
REPORT_EPS: dict[str, float] = {"robust_8_255": 8 / 255, "robust_4_255": 4 / 255, "robust_2_255": 2 / 255,
                                "robust_1_255": 1 / 255}


def _to_attack_space(x: Tensor) -> Tensor:
    return torch.atanh((x * 2 - 1) * _TANH_SHRINK)


def _to_model_space(w: Tensor) -> Tensor:
    return (torch.tanh(w) + 1) / 2


@dataclass
class CWLinfResult:
    x_best: Tensor  # best (minimum L-inf) adversarial per example, unconstrained; the clean input if none
    linf: Tensor  # its L-inf distance to the clean input (inf where none was found, 0 where clean is wrong)
    clean_wrong: Tensor  # bool: misclassified without attack
    iterations: Tensor  # long: forward+backward passes spent per example


def cw_linf(
    model: Model,
    x: Tensor,
    y: Tensor,
    lr: float = 5e-3,
    max_iterations: int = 100,
    binary_search_steps: int = 5,
    initial_const: float = 1e-2,
    const_factor: float = 10.0,
    tau_start: float = 1.0,
    tau_decrease: float = 0.9,
    tau_min: float = 1 / 256,
    kappa: float = 0.0,
    abort_early: bool = True,
) -> CWLinfResult:
    """Batched Carlini-Wagner L-inf (tau formulation) searching the minimal adversarial per example.

    See the module docstring for the algorithm. ``x`` is in [0, 1]; nothing is clipped to an eps
    here: the caller scores ``x_best`` (e.g. with :func:`igat.attacks.base.project`).
    """
    if max_iterations < 1 or binary_search_steps < 1:
        raise ValueError("max_iterations and binary_search_steps must be >= 1")
    if not 0 < tau_min < tau_start:
        raise ValueError(f"need 0 < tau_min < tau_start, got tau_min={tau_min}, tau_start={tau_start}")
    if not 0 < tau_decrease < 1:
        raise ValueError(f"tau_decrease must be in (0, 1), got {tau_decrease}")
    x = x.detach()
    y = y.detach()
    batch, shape = x.shape[0], x.shape[1:]
    dev, dtype = x.device, x.dtype
    flat = x.reshape(batch, -1)
    att_original = _to_attack_space(flat)
    x0 = _to_model_space(att_original)  # the reconstructed clean input the tau-distance is measured to

    with torch.no_grad():
        clean_wrong = model(x).argmax(1) != y
    best = flat.clone()
    best_dist = torch.full((batch,), math.inf, dtype=dtype, device=dev)
    best_dist[clean_wrong] = 0.0
    iterations = torch.zeros(batch, dtype=torch.long, device=dev)
    done = clean_wrong.clone()  # already misclassified: nothing to search (Foolbox returns the input)

    def full(value: float) -> Tensor:
        return torch.full((batch,), value, dtype=dtype, device=dev)

    # Binary search over c.
    const, lower, upper = full(initial_const), full(0.0), full(math.inf)
    bs_step = torch.zeros(batch, dtype=torch.long, device=dev)
    # tau loop.
    start_tau, tau = full(tau_start), full(tau_start)
    warm = att_original.clone()
    # One round (fixed c, tau): perturbation in tanh space around the warm start, Adam, abort early.
    pert = torch.zeros_like(flat)
    adam_m, adam_v = torch.zeros_like(flat), torch.zeros_like(flat)
    adam_t = torch.zeros(batch, dtype=dtype, device=dev)
    it = torch.zeros(batch, dtype=torch.long, device=dev)
    prev_check = full(math.inf)
    found = torch.zeros(batch, dtype=torch.bool, device=dev)
    check_every = math.ceil(max_iterations / 10)

    def start_round(idx: Tensor) -> None:
        pert[idx] = 0
        adam_m[idx] = 0
        adam_v[idx] = 0
        adam_t[idx] = 0
        it[idx] = 0
        prev_check[idx] = math.inf
        found[idx] = False

    def end_tau_loop(idx: Tensor, success: Tensor) -> None:
        """Binary-search update for examples whose tau loop ended; restart the ones with steps left."""
        upper[idx] = torch.where(success, const[idx], upper[idx])
        lower[idx] = torch.where(success, lower[idx], const[idx])
        const[idx] = torch.where(torch.isinf(upper[idx]), const[idx] * const_factor, (lower[idx] + upper[idx]) / 2)
        bs_step[idx] += 1
        done[idx] = bs_step[idx] >= binary_search_steps
        nxt = idx[~done[idx]]
        if binary_search_steps >= 10:  # Foolbox: the last step uses the upper bound (when there is one)
            last = nxt[(bs_step[nxt] == binary_search_steps - 1) & torch.isfinite(upper[nxt])]
            const[last] = upper[last]
        warm[nxt] = att_original[nxt]
        tau[nxt] = start_tau[nxt]

    while True:
        idx = (~done).nonzero().squeeze(1)
        if len(idx) == 0:
            break
        yi = y[idx]
        p = pert[idx].requires_grad_(True)
        with torch.enable_grad():
            xi = _to_model_space(warm[idx] + p)
            logits = model(xi.view(-1, *shape))
            true = logits.gather(1, yi[:, None]).squeeze(1)
            other = logits.masked_fill(F.one_hot(yi, logits.shape[1]).bool(), float("-inf")).amax(1)
            adv_loss = torch.relu(true - other + kappa)
            dist_loss = torch.relu((xi - x0[idx]).abs() - tau[idx, None]).sum(1)
            loss = dist_loss + const[idx] * adv_loss
            (grad,) = torch.autograd.grad(loss.sum(), p)
        iterations[idx] += 1
        xi, loss = xi.detach(), loss.detach()
        is_adv = logits.detach().argmax(1) != yi

        # Keep the closest adversarial seen (every iterate the model classified counts).
        dist = (xi - flat[idx]).abs().amax(1)
        better = is_adv & (dist < best_dist[idx])
        b = idx[better]
        best[b] = xi[better]
        best_dist[b] = dist[better]

        # Adam step (per-example step counts: examples restart their optimiser at different times).
        adam_t[idx] += 1
        m = adam_m[idx] * _ADAM_BETA1 + grad * (1 - _ADAM_BETA1)
        v = adam_v[idx] * _ADAM_BETA2 + grad.square() * (1 - _ADAM_BETA2)
        adam_m[idx], adam_v[idx] = m, v
        t = adam_t[idx, None]
        step = (m / (1 - _ADAM_BETA1**t)) / ((v / (1 - _ADAM_BETA2**t)).sqrt() + _ADAM_EPS)
        pert[idx] = p.detach() - lr * step
        found[idx] |= is_adv

        stop = torch.zeros_like(is_adv)
        if abort_early:
            check = it[idx] % check_every == 0
            stop = check & ~(prev_check[idx] - loss > _ABORT_TOLERANCE)
            prev_check[idx] = torch.where(check & ~stop, loss, prev_check[idx])
        it[idx] += 1
        ended = idx[stop | (it[idx] >= max_iterations)]
        if len(ended) == 0:
            continue

        # Round over. Success: tighten tau to the achieved distance and warm-start from the last iterate.
        ok = found[ended]
        s = ended[ok]
        if len(s):
            x_last = _to_model_space(warm[s] + pert[s])
            achieved = (x_last - x0[s]).abs().amax(1)
            tau[s] = torch.minimum(tau[s], achieved) * tau_decrease
            warm[s] = _to_attack_space(x_last)
        # Failure: the tau loop ends; c worked iff an earlier tau of this loop did.
        f = ended[~ok]
        f_success = tau[f] < start_tau[f]
        start_tau[f] = tau[f]
        s_over = s[tau[s] <= tau_min]
        loop_over = torch.cat([s_over, f])
        if len(loop_over):
            end_tau_loop(loop_over, torch.cat([torch.ones_like(s_over, dtype=torch.bool), f_success]))
        start_round(ended[~done[ended]])

    return CWLinfResult(best.view_as(x), best_dist, clean_wrong, iterations)


@ATTACKS.register("cw_opt")
class CWOptAttack(CWOptSpec, Attack):
    """Reference-code CW: C&W L-inf optimisation (tau + binary search over c), best adversarial clipped to eps."""

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        # Deterministic: no random start, so the generator is not used.
        p = self.params
        res = cw_linf(model, x, y, p.lr, p.max_iterations, p.binary_search_steps, p.initial_const, p.const_factor,
                      p.tau_start, p.tau_decrease, p.tau_min, p.kappa, p.abort_early)
        x = x.detach()
        stats: dict[str, Tensor] = {
            "success": (res.clean_wrong | torch.isfinite(res.linf)).cpu(),
            "linf": res.linf[~res.clean_wrong & torch.isfinite(res.linf)].cpu(),
            "iterations": res.iterations.cpu(),
            "attacked": (~res.clean_wrong).cpu(),  # as the pgd / cw attacks report it
        }
        with torch.no_grad():
            for key, eps in REPORT_EPS.items():
                stats[key] = (model(project(res.x_best, x, eps)).argmax(1) == y).cpu()
        return AttackResult(project(res.x_best, x, p.eps), stats)
