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
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from igat.attacks.base import ATTACKS, Attack, AttackParams, AttackResult, Model
from igat.config import EPS_8_255

PACKAGE = "pyautoattack"
AAAttackName = Literal["apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"]
STANDARD_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")
FAST_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t")
STANDARD_TARGETS = 9


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # pragma: no cover - dependency missing
        return "not installed"


class AutoAttackParams(AttackParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="L-inf radius in [0,1] pixel units")
    version: Literal["standard", "fast", "custom"] = Field(
        "standard", description="standard = APGD-CE, APGD-T, FAB-T, Square; fast = APGD-CE + APGD-T; custom = `attacks`"
    )
    attacks: list[AAAttackName] | None = Field(None, description="sub-attacks to run, only with version 'custom'")
    n_iter: int | None = Field(None, ge=1, le=100_000, description="APGD/FAB iterations (fast/custom only; default 100)")
    n_queries: int | None = Field(None, ge=1, le=1_000_000, description="Square queries (fast/custom only; default 5000)")

    @model_validator(mode="after")
    def _check_version(self) -> AutoAttackParams:
        if self.version == "custom":
            if not self.attacks:
                raise ValueError("attacks: version 'custom' needs a non-empty list of sub-attacks")
        elif self.attacks is not None:
            raise ValueError(f"attacks: only allowed with version 'custom' (version is {self.version!r})")
        if self.version == "standard" and (self.n_iter is not None or self.n_queries is not None):
            raise ValueError("n_iter/n_queries: the standard version uses the package's settings; use 'fast' or 'custom'")
        return self


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
class AutoAttackAttack(Attack):
    """AutoAttack via pyautoattack (default: the standard version, L-inf, eps 8/255)."""

    name = "autoattack"
    Params = AutoAttackParams

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
