"""Every defense's parameter model and recipe, without PyTorch (spec §2).

A spec says what a defense accepts (``Params``, validated as ``defense.params.*``), which settings it cannot run
with (:meth:`DefenseSpec.config_problems`), the recipe a researcher starts from (``recommended``), what switches
off its own adversarial training under iGAT (``adversarial_training_off``) and where its reference trainer
starts from (``warm_start_from``). The implementation in :mod:`igat.defenses` subclasses its spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from igat.config import EPS_8_255, STEP_2_255
from igat.registry import Registry
from igat.specs.architecture import MAX_DEPTH, check_layer

if TYPE_CHECKING:
    from igat.config import ExperimentConfig


class DefenseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DefenseSpec:
    name: ClassVar[str]
    Params: ClassVar[type[DefenseParams]] = DefenseParams
    description: ClassVar[str] = ""
    # Config overrides a researcher would start from for this defense (spec §2, CIFAR-10,
    # 8 x ResNet-20). The dashboard's launch form and `igat defaults DEFENSE` show them.
    recommended: ClassVar[dict[str, Any]] = {}
    # Parameter values that switch off the defense's own adversarial training, i.e. what is left is its
    # non-adversarial objective (eq. 11). iGAT applies them unless ``igat.base_adv`` (paper §5.1: the global
    # examples, distributed, replace the full adversarial set every member would otherwise train on).
    # None: the defense has no adversarial-training term to remove (standard, TRS whose inner maximisation
    # belongs to its smoothness loss).
    adversarial_training_off: ClassVar[dict[str, Any] | None] = None
    # The defense whose trained ensemble this recipe starts from (a warm start through
    # ``train.init_checkpoint``): DVERGE's reference trainer begins from a standard-trained ensemble (spec
    # §2.4). ``igat study`` and ``igat ablate`` (when they train the base) pre-train it first.
    warm_start_from: ClassVar[str | None] = None
    # Diversity terms compare members pairwise: such defenses need at least two.
    min_members: ClassVar[int] = 1

    @classmethod
    def config_problems(cls, config: ExperimentConfig) -> list[tuple[str, str]]:
        """(field, message) pairs for settings this defense cannot run with, found when the config is
        validated, so the form, a YAML import and the CLI refuse them before anything is queued."""
        n = config.model.num_members
        if n < cls.min_members:
            return [("model.num_members", f"must be an integer >= {cls.min_members} for defense {cls.name!r} "
                                          f"(its diversity terms compare member pairs), got {n}")]
        return []


DEFENSE_SPECS: Registry[type[DefenseSpec]] = Registry("defense")

# The optimiser of the DVERGE-repo family of reference trainers (ADP, GAL, CLDL ports; TRS with its own
# milestones): Adam lr 1e-3, weight decay 1e-4, eps 1e-7, lr x0.1 at epochs 100 and 150 (spec §2).
REFERENCE_ADAM: dict[str, Any] = {"name": "adam", "lr": 0.001, "weight_decay": 1e-4, "adam_eps": 1e-7,
                                  "milestones": [100, 150]}


class AdversarialParams(DefenseParams):
    """The optional PGD adversarial-training part shared by ADP, GAL, CLDL and SoE."""

    plus_adv: bool = Field(True, description="add a PGD adversarial-training term (the Table 1 variants are adversarially trained)")
    adv_eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="L-inf radius of the training attack, [0,1] pixel units")
    adv_step_size: float = Field(STEP_2_255, gt=0.0, le=1.0, description="PGD step size of the training attack")
    adv_steps: int = Field(10, ge=1, le=1000, description="PGD iterations of the training attack")
    adv_random_start: bool = Field(True, description="uniform random start in the eps-ball")
    adv_bn_mode: Literal["train", "eval"] = Field(
        "eval", description="BatchNorm mode while crafting the attack (the reference trainers leave members in train mode)"
    )


# --- standard ------------------------------------------------------------------------------------------------
@DEFENSE_SPECS.register("standard")
class StandardSpec(DefenseSpec):
    name = "standard"
    description = "No attack: each member trained with cross-entropy on natural data (vanilla ensemble)."
    recommended = {"optim": {"name": "sgd", "lr": 0.1, "milestones": [100, 150]}, "train": {"epochs": 200, "batch_size": 128}}


# --- PGD adversarial training ------------------------------------------------------------------------------
class PGDATParams(DefenseParams):
    eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="training attack L-inf radius")
    step_size: float = Field(STEP_2_255, gt=0.0, le=1.0)
    steps: int = Field(10, ge=1, le=1000)
    random_start: bool = True
    clean_weight: float = Field(0.0, ge=0.0, le=1.0, description="weight of natural CE (adversarial gets 1 - w)")
    bn_mode: Literal["train", "eval"] = Field("eval", description="BatchNorm mode while crafting the attack")


@DEFENSE_SPECS.register("pgd_at")
class PGDATSpec(DefenseSpec):
    name = "pgd_at"
    Params = PGDATParams
    adversarial_training_off = {"clean_weight": 1.0}  # natural CE of every member
    description = "Independent PGD adversarial training of every member."
    recommended = {"optim": {"name": "sgd", "lr": 0.1, "milestones": [100, 150]}, "train": {"epochs": 200, "batch_size": 128}}


# --- ADP ---------------------------------------------------------------------------------------------------
class ADPParams(AdversarialParams):
    alpha: float = Field(2.0, ge=0.0, le=100.0, description="ensemble-entropy coefficient (original flag `lamda`)")
    log_det_lamda: float = Field(0.5, ge=0.0, le=100.0, description="log-det diversity coefficient beta (`log_det_lamda`)")
    adv_steps: int = Field(20, ge=1, le=1000, description="PGD iterations of the training attack (iGAT's ADP default: 20)")
    adv_objective: Literal["ce", "adp"] = Field(
        "ce", description="loss on adversarial examples: members' CE (DVERGE/iGAT port) or full L_ADP (original)"
    )


@DEFENSE_SPECS.register("adp")
class ADPSpec(DefenseSpec):
    name = "adp"
    Params = ADPParams
    min_members = 2
    adversarial_training_off = {"plus_adv": False}
    description = ("ADP: members' CE minus ensemble entropy and log-det diversity of non-true-class predictions, "
                   "optionally with PGD training on the averaged ensemble.")
    recommended = {
        "optim": REFERENCE_ADAM,
        "train": {"epochs": 200, "batch_size": 128},
    }


# --- GAL ---------------------------------------------------------------------------------------------------
class GALParams(AdversarialParams):
    lamda: float = Field(0.5, ge=0.0, le=100.0, description="weight of the gradient-coherence penalty (`--lambda`)")


@DEFENSE_SPECS.register("gal")
class GALSpec(DefenseSpec):
    name = "gal"
    Params = GALParams
    min_members = 2
    adversarial_training_off = {"plus_adv": False}
    description = "GAL: members' CE plus a log-sum-exp penalty on pairwise cosines of their input gradients (+ PGD)."
    recommended = {
        "optim": REFERENCE_ADAM,
        "train": {"epochs": 200, "batch_size": 128},
        "data": {"noise_std": 0.045},
        "model": {"activation": "leaky_relu"},
    }


# --- TRS ---------------------------------------------------------------------------------------------------
class TRSParams(DefenseParams):
    coeff: float = Field(2.0, ge=0.0, le=100.0, description="weight of the gradient-cosine term (inside scale)")
    lamda: float = Field(2.0, ge=0.0, le=100.0, description="weight of the gradient-smoothness term (inside scale)")
    scale: float = Field(5.0, ge=0.0, le=100.0, description="overall multiplier of coeff*cos + lamda*smooth")
    plus_adv: bool = Field(True, description="measure smoothness on half-clean / half PGD-maximised inputs (`--plus-adv`)")
    init_eps: float = Field(0.1, ge=0.0, le=1.0, description=(
        "smoothness-attack radius at epoch 0 (reference CLI default; the TRS paper's CIFAR-10 value was not verifiable)"))
    adv_eps: float = Field(0.2, ge=0.0, le=1.0, description="smoothness-attack radius reached at the last epoch")
    adv_steps: int = Field(6, ge=1, le=100, description="sign-PGD steps of the smoothness maximisation (step = eps/3)")
    adv_bn_mode: Literal["train", "eval"] = Field("eval", description="BatchNorm mode during the smoothness maximisation")


@DEFENSE_SPECS.register("trs")
class TRSSpec(DefenseSpec):
    name = "trs"
    Params = TRSParams
    min_members = 2
    description = "TRS: members' CE plus |cos| of input gradients and their squared norm on PGD-maximised inputs."
    recommended = {
        "optim": {**REFERENCE_ADAM, "milestones": [40, 80]},
        "train": {"epochs": 120, "batch_size": 128},
    }


# --- DVERGE ------------------------------------------------------------------------------------------------
class DVERGEParams(DefenseParams):
    distill_eps: float = Field(0.05, ge=0.0, le=1.0, description=(
        "L-inf radius of feature distillation (iGAT's 8-member runs 0.05; DVERGE repo, 3 members: 0.07)"))
    distill_alpha: float = Field(0.005, gt=0.0, le=1.0, description="distillation step size (iGAT 0.005; repo 0.007)")
    distill_steps: int = Field(10, ge=1, le=1000, description="distillation sign-gradient steps")
    distill_momentum: float = Field(1.0, ge=0.0, le=10.0, description="momentum mu over L1-normalised gradients (0 = none)")
    layer: int | None = Field(None, ge=1, le=MAX_DEPTH, description=(
        "fixed distillation layer 1..model.depth (1..20 for ResNet-20); None = uniform per epoch"))
    coeff: float = Field(1.0, ge=0.0, le=100.0, description="weight of the distilled-data CE when plus_adv is on")
    plus_adv: bool = Field(True, description=(
        "DVERGE+AT: add CE on PGD examples crafted against each member alone (Table 1's 41 % PGD needs it)"))
    adv_eps: float = Field(8 / 255, ge=0.0, le=1.0, description="per-member PGD radius (plus_adv)")
    adv_step_size: float = Field(2 / 255, gt=0.0, le=1.0, description="per-member PGD step size (plus_adv)")
    adv_steps: int = Field(10, ge=1, le=1000, description="per-member PGD iterations (plus_adv)")
    adv_random_start: bool = Field(True, description="uniform random start of the per-member PGD")
    bn_mode: Literal["train", "eval"] = Field("eval", description="BatchNorm mode while distilling / attacking")


@DEFENSE_SPECS.register("dverge")
class DVERGESpec(DefenseSpec):
    name = "dverge"
    Params = DVERGEParams
    min_members = 2
    adversarial_training_off = {"plus_adv": False}
    warm_start_from = "standard"
    description = ("DVERGE: each member learns to classify the other members' feature-distilled images with the "
                   "source label; sequential per-member updates (optionally + per-member PGD).")
    recommended = {
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "milestones": [100, 150],
                  "per_member": True},
        "train": {"epochs": 200, "batch_size": 128},
    }

    @classmethod
    def config_problems(cls, config: ExperimentConfig) -> list[tuple[str, str]]:
        problems = super().config_problems(config)
        layer = config.defense.params.get("layer")
        if isinstance(layer, int) and not isinstance(layer, bool):
            try:
                check_layer(layer, config.model.depth)
            except ValueError as exc:
                problems.append(("defense.params.layer", str(exc).split(": ", 1)[-1].removeprefix(
                    "defense.params.layer ")))
        return problems


# --- CLDL --------------------------------------------------------------------------------------------------
class CLDLParams(AdversarialParams):
    ld_coeff: float = Field(4.0, ge=0.0, le=100.0, description="gamma: weight of the one-hot label in the SLD logits")
    alpha: float = Field(2.0, ge=0.0, le=100.0, description="weight of the JSD diversity (subtracted)")
    beta: float = Field(4.0, ge=0.0, le=100.0, description="weight of the gradient-coherence penalty")


@DEFENSE_SPECS.register("cldl")
class CLDLSpec(DefenseSpec):
    name = "cldl"
    Params = CLDLParams
    min_members = 2
    adversarial_training_off = {"plus_adv": False}
    description = ("CLDL: members fit label-confusion soft labels (KL) with JSD diversity of their confusion vectors "
                   "and a gradient-coherence penalty (+ PGD on the averaged ensemble).")
    recommended = {
        "optim": REFERENCE_ADAM,
        "train": {"epochs": 200, "batch_size": 128},
        "data": {"noise_std": 0.045},
        "model": {"activation": "leaky_relu"},
    }


# --- SoE ---------------------------------------------------------------------------------------------------
class SoEParams(AdversarialParams):
    temp_c: float = Field(1.0, gt=0.0, le=100.0, description="tempC: temperature of the expert weights softmax(tempC * d)")
    aux_weight: float = Field(1.0, ge=0.0, le=100.0, description="weight of the confidence-head BCE (`adaptivetrainlambda`)")
    adv_eps: float = Field(0.03, ge=0.0, le=1.0, description="training-attack radius (run.sh 0.03 ~ 8/255)")
    adv_step_size: float = Field(0.01, gt=0.0, le=1.0, description="training-attack step size (`alpha`)")
    adv_steps: int = Field(10, ge=1, le=1000, description="training-attack PGD steps against the selection model")
    adv_random_start: bool = Field(False, description="random start (off in run.sh)")


@DEFENSE_SPECS.register("soe")
class SoESpec(DefenseSpec):
    name = "soe"
    Params = SoEParams
    min_members = 2
    adversarial_training_off = {"plus_adv": False}
    description = ("SoE: experts with confidence heads trained with detector-weighted CE and a BCE calibration term; "
                   "predicts with the most confident expert (combiner 'soe').")
    recommended = {
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "milestones": [50, 75],
                  "per_member": True},
        "train": {"epochs": 100, "batch_size": 128},
        "eval": {"combiners": ["soe", "average", "max"]},
    }
