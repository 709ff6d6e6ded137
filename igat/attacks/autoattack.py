"""AutoAttack (Croce & Hein, ICML 2020) through the maintained ``pyautoattack`` package.

Not a re-implementation: this wraps ``pyautoattack.AutoAttack`` (PyPI ``pyautoattack``, a
packaging of fra31/auto-attack; the version found at run time is reported in the result's
``stats["implementation"]``, 0.2.0 when this was written). The model it attacks is the
combiner's log-output (spec §3.1/§3.5: log-probabilities used as logits, as the reference
``test_AA.py`` did).

Versions:
* ``standard`` (default; what the paper reports): APGD-CE (100 iterations, 1 restart) ->
  APGD-T (9 target classes, 100 iterations) -> FAB-T (9 targets, 100 iterations) -> Square
  (5,000 queries, p_init 0.8), each run only on points still robust, L-inf. With fewer than
  10 classes the number of target classes is capped at C - 1 (the package would index past the
  class dimension otherwise); for CIFAR-10/100 this is exactly the standard version.
* ``fast``: APGD-CE + APGD-T only (the white-box part of standard), for quick runs.
* ``custom``: any subset of the package's attacks (``attacks``); restarts and target counts as
  in standard. ``n_iter`` (APGD/FAB iterations) and ``n_queries`` (Square) may be lowered for
  ``fast``/``custom`` runs; ``standard`` always uses the package's standard settings.

The package re-seeds torch's global RNG inside every sub-attack; we fork the RNG around the
call so evaluation code that follows is unaffected, and derive the package's seed from the
evaluation generator, so results are deterministic for a fixed seed.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import torch
from torch import Tensor

from igat.attacks.base import ATTACKS, Attack, AttackResult, Model
from igat.specs.attacks import FAST_ATTACKS, AutoAttackParams, AutoAttackSpec

PACKAGE = "pyautoattack"
STANDARD_TARGETS = 9


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # pragma: no cover - dependency missing
        return "not installed"


def _set_apgd_iterations(apgd: Any, n_iter: int) -> None:
    # APGD derives its step-size checkpoints from n_iter in its constructor; keep them consistent.
    apgd.n_iter = n_iter
    apgd.n_iter_orig = n_iter
    apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
    apgd.n_iter_min = max(int(0.06 * n_iter), 1)
    apgd.size_decr = max(int(0.03 * n_iter), 1)


def build_autoattack(model: Model, params: AutoAttackParams, num_classes: int, device: torch.device | str,
                     seed: int | None = 0) -> Any:
    """A configured ``pyautoattack.AutoAttack`` for ``model`` (exposed for tests and inspection)."""
    from pyautoattack import AutoAttack

    if params.version == "standard":
        aa = AutoAttack(model, eps=params.eps, norm="Linf", version="standard", device=device, seed=seed)
    else:
        attacks = list(FAST_ATTACKS if params.version == "fast" else params.attacks or [])
        aa = AutoAttack(model, attacks=attacks, eps=params.eps, norm="Linf", version="custom", device=device, seed=seed)
        # 'custom' keeps the package's constructor defaults (5 restarts); use the standard settings.
        aa.apgd.n_restarts = 1
        aa.apgd_targeted.n_restarts = 1
        aa.fab.n_restarts = 1
        aa.square.n_queries = 5000
        if params.n_iter is not None:
            _set_apgd_iterations(aa.apgd, params.n_iter)
            _set_apgd_iterations(aa.apgd_targeted, params.n_iter)
            aa.fab.n_iter = params.n_iter
        if params.n_queries is not None:
            aa.square.n_queries = params.n_queries
    targets = max(1, min(STANDARD_TARGETS, num_classes - 1))
    aa.apgd_targeted.n_target_classes = targets
    aa.fab.n_target_classes = targets
    aa.verbose = False
    return aa


@ATTACKS.register("autoattack")
class AutoAttackAttack(AutoAttackSpec, Attack):
    """AutoAttack via pyautoattack (default: the standard version, L-inf, eps 8/255)."""

    def perturb(self, model: Model, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> AttackResult:
        p = self.params
        x = x.detach()
        stats: dict[str, Any] = {
            "implementation": f"{PACKAGE} {package_version()}",
            "version": p.version,
        }
        if len(x) == 0:
            return AttackResult(x.clone(), stats)
        seed = 0
        if generator is not None:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        aa = build_autoattack(model, p, num_classes, x.device, seed)
        stats["attacks"] = ",".join(aa.attacks_to_run)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
        return AttackResult(x_adv.detach().to(x.dtype), stats)
