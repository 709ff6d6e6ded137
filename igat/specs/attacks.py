"""Every evaluation attack's parameter model, without PyTorch (spec §3).

A spec says what an attack accepts (``Params``, validated as ``eval.attacks.<i>.params.*``), its kind and a
one-line summary (``igat list``). The implementations in :mod:`igat.attacks` subclass their spec.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from igat.config import EPS_8_255, STEP_2_255
from igat.registry import Registry


class AttackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttackSpec:
    name: ClassVar[str]
    Params: ClassVar[type[AttackParams]] = AttackParams
    kind: ClassVar[str] = "white-box"  # or "black-box", "natural", "ensemble"
    summary: ClassVar[str] = ""


ATTACK_SPECS: Registry[type[AttackSpec]] = Registry("attack")


class RestartingParams(AttackParams):
    """Parameters of an attack with ``random_start`` and ``restarts`` (each subclass declares both, in its own field
    order and wording): a restart without a random start would repeat the same trajectory."""

    @model_validator(mode="after")
    def _restarts_need_random_start(self) -> RestartingParams:
        if self.restarts > 1 and not self.random_start:  # type: ignore[attr-defined]  (declared by the subclass)
            raise ValueError("restarts > 1 needs random_start (every restart would repeat the same trajectory)")
        return self


# --- natural -----------------------------------------------------------------------------------------------
@ATTACK_SPECS.register("natural")
class NaturalSpec(AttackSpec):
    name = "natural"
    kind = "natural"
    summary = "No attack: natural (clean) accuracy."


# --- PGD family ----------------------------------------------------------------------------------------------
class PGDAttackParams(RestartingParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="L-inf radius in [0,1] pixel units")
    step_size: float = Field(STEP_2_255, gt=0.0, le=1.0)
    steps: int = Field(20, ge=1, le=10000)
    random_start: bool = True
    restarts: int = Field(1, ge=1, le=100, description="random starts; later ones attack only the still-robust "
                          "examples, the worst case counts")
    loss: Literal["ce", "cw"] = "ce"
    targeted: bool = False
    target_offset: int = Field(1, ge=1, description="targeted mode: target = (y + offset) mod C")


@ATTACK_SPECS.register("pgd")
class PGDSpec(AttackSpec):
    name = "pgd"
    Params = PGDAttackParams
    summary = "PGD-k with cross-entropy (default PGD-20, eps 8/255, step 2/255, one random start), early exit per example."


class FGSMParams(AttackParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0)
    targeted: bool = False
    target_offset: int = Field(1, ge=1)


@ATTACK_SPECS.register("fgsm")
class FGSMSpec(AttackSpec):
    name = "fgsm"
    Params = FGSMParams
    summary = "One signed-gradient step of size eps (no random start); misclassified clean inputs are kept as they are."


class PGDStrengthParams(AttackParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="L-inf radius in [0,1] pixel units")
    step_size: float = Field(STEP_2_255, gt=0.0, le=1.0)
    reference_steps: int = Field(20, ge=1, le=10000, description="the PGD-k whose accuracy is checked")
    steps: int = Field(100, ge=1, le=10000, description="steps of the stronger PGD")
    restarts: int = Field(3, ge=1, le=100, description="random starts of the stronger PGD")
    num_examples: int | None = Field(
        200, ge=1, description="probe at most this many equidistant examples of the evaluation set (None = all)"
    )


@ATTACK_SPECS.register("pgd_strength")
class PGDStrengthSpec(AttackSpec):
    name = "pgd_strength"
    Params = PGDStrengthParams
    summary = "Strength probe: PGD-k (reference), then PGD-100 with restarts on what PGD-k left robust, same examples."


# --- CW ------------------------------------------------------------------------------------------------------
class CWParams(RestartingParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="L-inf radius in [0,1] pixel units")
    step_size: float = Field(STEP_2_255, gt=0.0, le=1.0, description="step size per iteration")
    steps: int = Field(30, ge=1, le=10000, description="number of PGD iterations on the margin loss")
    random_start: bool = Field(True, description="uniform start in the eps-ball")
    restarts: int = Field(1, ge=1, le=100, description="random starts; later ones attack only the still-robust "
                          "examples, the worst case counts")
    num_examples: int | None = Field(
        1000, ge=1, description="evaluate on at most this many equidistant examples of the evaluation set (None = all)"
    )


@ATTACK_SPECS.register("cw")
class CWSpec(AttackSpec):
    name = "cw"
    Params = CWParams
    summary = "CW-Linf = PGD on the CW margin loss (default 30 steps of 2/255, eps 8/255, 1,000 examples)."


class CWOptParams(AttackParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="L-inf radius the best adversarial is clipped to for "
                       "scoring, in [0,1] pixel units (4/255, 2/255, 1/255 are reported as statistics)")
    lr: float = Field(5e-3, gt=0.0, le=1.0, description="Adam learning rate in tanh space")
    max_iterations: int = Field(100, ge=1, le=100_000, description="Adam iterations per (c, tau) round")
    binary_search_steps: int = Field(5, ge=1, le=50, description="binary-search steps over the constant c")
    initial_const: float = Field(1e-2, gt=0.0, le=1e6, description="first constant c (weight of the margin term)")
    const_factor: float = Field(10.0, gt=1.0, le=1e3, description="c is multiplied by this until the first success")
    tau_start: float = Field(1.0, gt=0.0, le=1.0, description="initial tau (per-pixel L-inf threshold)")
    tau_decrease: float = Field(0.9, gt=0.0, lt=1.0, description="after a success, tau = this x achieved L-inf")
    tau_min: float = Field(1 / 256, gt=0.0, lt=1.0, description="the tau loop stops once tau <= this")
    kappa: float = Field(0.0, ge=0.0, le=1e3, description="confidence margin of the misclassification term")
    abort_early: bool = Field(True, description="stop a round when the loss stalls (checked every 10% of iterations)")
    num_examples: int | None = Field(
        1000, ge=1, description="evaluate on at most this many equidistant examples of the evaluation set (None = all)"
    )

    @model_validator(mode="after")
    def _tau_range(self) -> CWOptParams:
        if self.tau_min >= self.tau_start:
            raise ValueError(f"tau_min ({self.tau_min}) must be below tau_start ({self.tau_start})")
        return self


@ATTACK_SPECS.register("cw_opt")
class CWOptSpec(AttackSpec):
    name = "cw_opt"
    Params = CWOptParams
    summary = "Reference-code CW: C&W L-inf optimisation (tau + binary search over c), best adversarial clipped to eps."


# --- SignHunter ------------------------------------------------------------------------------------------------
class SignHunterParams(AttackParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="L-inf radius in [0,1] pixel units")
    max_queries: int = Field(500, ge=1, le=10_000_000, description="model calls per example, the clean one included")
    loss: Literal["margin", "ce"] = Field("margin", description="score to maximise: CW margin (reference) or CE")


@ATTACK_SPECS.register("signhunter")
class SignHunterSpec(AttackSpec):
    name = "signhunter"
    Params = SignHunterParams
    kind = "black-box"
    summary = "SignHunter, L-inf, margin loss, 500 queries per example (counted honestly), early stop."


# --- AutoAttack ------------------------------------------------------------------------------------------------
AAAttackName = Literal["apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"]
STANDARD_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")
FAST_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t")


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


@ATTACK_SPECS.register("autoattack")
class AutoAttackSpec(AttackSpec):
    name = "autoattack"
    Params = AutoAttackParams
    summary = "AutoAttack via pyautoattack (default: the standard version, L-inf, eps 8/255)."
