"""The experiment configuration: the single source of truth from form to worker to database.

Pydantic models with field-level validation (errors name the dotted field path and the allowed
range), YAML/JSON round-trip, and the per-defense / per-attack parameter models looked up in
their registries so ``defense.params.alpha`` is validated by the ADP defense itself.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

EPS_8_255 = 8 / 255
STEP_2_255 = 2 / 255


class ConfigError(ValueError):
    """A configuration problem, with one human-readable line per offending field."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in errors))

    @classmethod
    def from_validation(cls, exc: ValidationError, prefix: str = "") -> ConfigError:
        errs = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"] if p != "__root__")
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            errs.append((f"{prefix}{loc}" if loc else prefix.rstrip(".") or "config", msg))
        return cls(errs)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PGDParams(StrictModel):
    """An L-inf PGD attack's knobs; used by training attacks and by the ``pgd`` attack."""

    eps: float = Field(EPS_8_255, ge=0.0, le=1.0, description="L-inf radius in [0,1] pixel units")
    step_size: float = Field(STEP_2_255, gt=0.0, le=1.0, description="step size per iteration")
    steps: int = Field(10, ge=1, le=10000, description="number of iterations")
    random_start: bool = Field(True, description="uniform start in the eps-ball")


class DataConfig(StrictModel):
    dataset: Literal["cifar10", "cifar100", "synthetic"] = "cifar10"
    root: str | None = Field(None, description="data directory; default $IGAT_DATA_DIR, ../shared/data, ~/.cache/igat/data")
    download: bool = Field(True, description="download through torchvision when the data is absent")
    augment: bool = Field(True, description="random crop (pad 4) + horizontal flip on training data")
    noise_std: float = Field(0.0, ge=0.0, le=1.0, description="Gaussian-noise augmentation std (GAL, CLDL use 0.045)")
    train_subset: int | None = Field(None, ge=1, description="use only n equidistant training examples (class-balanced on class-sorted data)")
    test_subset: int | None = Field(None, ge=1, description="evaluate on n equidistant test examples")
    synthetic_train_size: int = Field(2048, ge=16, le=200000)
    synthetic_test_size: int = Field(512, ge=16, le=100000)
    synthetic_classes: int = Field(10, ge=2, le=100)
    synthetic_image_size: int = Field(32, ge=8, le=64, description="side of synthetic images (small = fast tests)")

    @property
    def num_classes(self) -> int:
        return {"cifar10": 10, "cifar100": 100}.get(self.dataset, self.synthetic_classes)


class ModelConfig(StrictModel):
    arch: Literal["resnet20"] = "resnet20"
    num_members: int = Field(8, ge=1, le=64, description="number of ensemble members N")
    activation: Literal["relu", "leaky_relu"] = "relu"
    leaky_slope: float = Field(0.1, ge=0.0, le=1.0)
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="channels_last memory format for the member loop; auto = on for the CPU, where it "
        "was the fastest exact path measured (docs/benchmarks.md), off elsewhere until measured")
    engine: Literal["auto", "loop", "fused"] = Field(
        "auto", description="ensemble execution for evaluation: member loop, fused grouped convolutions, "
        "or auto (the fastest exact path per device: loop on CPU, fused on CUDA for plain members)")
    fold_bn: bool = Field(
        True, description="run eval-mode attacks and evaluation on member copies with BatchNorm folded into the "
        "convolutions (the same function up to float rounding; faster, docs/benchmarks.md); off = execute the "
        "BatchNorm layers as the reference code does")


class OptimConfig(StrictModel):
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    nesterov: bool = False
    adam_eps: float = Field(1e-8, gt=0.0, le=1.0)
    milestones: list[int] = Field(default_factory=list, description="epochs at which the lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    per_member: bool = Field(False, description="one optimiser per member (DVERGE-style) instead of one for all")

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v):
            raise ValueError("milestones must be epochs >= 1")
        if v != sorted(set(v)):
            raise ValueError("milestones must be strictly increasing")
        return v


class TrainConfig(StrictModel):
    epochs: int = Field(200, ge=1, le=100000)
    batch_size: int = Field(128, ge=1, le=65536)
    steps_per_epoch: int | None = Field(None, ge=1, description="cap mini-batches per epoch (reference code's pseudo-epochs)")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")
    grad_clip: float | None = Field(None, gt=0.0)
    log_every: int = Field(10, ge=1, description="steps between step-metric emissions")
    eval_examples: int = Field(512, ge=0, le=100000, description="test examples for the per-epoch natural/PGD accuracy (0 = off)")
    eval_pgd_steps: int = Field(10, ge=0, le=1000, description="PGD steps of the per-epoch robust-accuracy probe (0 = natural only)")


class DefenseConfig(StrictModel):
    name: str = "pgd_at"
    params: dict[str, Any] = Field(default_factory=dict)


IGATRule = Literal["soft", "hard", "random", "opposite", "opposite_argmin"]
IGATDomain = Literal["adversarial", "natural+adversarial"]


class IGATConfig(StrictModel):
    """iGAT (paper §5). ``preset`` (see :mod:`igat.presets`) picks the paper equations or the public code's behaviours.

    rule: soft = eq. 14 roulette (p_i = 2^(N-r_i)/(2^N-1)); hard = eq. 13 argmax; random = uniform;
    opposite = reversed roulette p_i = 2^(r_i-1)/(2^N-1) (spec §1.4 recommendation for the Table 3 ablation);
    opposite_argmin = deterministic argmin of the true-class probability.
    """

    enabled: bool = False
    alpha: float = Field(5.0, ge=0.0, le=1000.0, description="weight of the distributed adversarial CE")
    beta: float = Field(10.0, ge=0.0, le=1000.0, description="weight of the L_R regulariser")
    rule: IGATRule = "soft"
    combiner: Literal["average", "max"] = "average"
    mask_combiner: Literal["average", "max"] | None = Field(
        None, description="combiner for the misclassification indicator delta_0/1 (None = same as combiner)")
    attack: PGDParams = Field(default_factory=lambda: PGDParams(steps=20))
    attack_fraction: float = Field(
        1.0, gt=0.0, le=1.0,
        description="fraction of each batch (its last examples) attacked; the reference code attacks half of 512")
    distribute: Literal["all", "misclassified"] = "all"
    dist_domain: IGATDomain = Field(
        "adversarial", description="examples that are distributed: X~ (paper) or X and X~ (reference ADP trainer)")
    normalisation: Literal["per_member", "batch"] = "per_member"
    reg: Literal["paper", "code_sum", "code_max2"] = "paper"
    reg_clip: float | None = Field(None, gt=0.0, lt=1.0, description="clip member probabilities inside L_R")
    reg_domain: IGATDomain = Field("natural+adversarial", description="examples L_R is averaged over (paper: X and X~)")
    reg_true_class: bool = Field(
        False, description="include the true class in L_R's max (eq. 15 read literally); default: wrong classes only")
    bn_mode: Literal["train", "eval"] = "eval"
    init_checkpoint: str | None = Field(None, description="baseline checkpoint to fine-tune from (None = from scratch)")


class AttackSpec(StrictModel):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class EvalConfig(StrictModel):
    combiners: list[str] = Field(default_factory=lambda: ["average", "max"])
    attacks: list[AttackSpec] = Field(
        default_factory=lambda: [AttackSpec(name="natural"), AttackSpec(name="pgd", params={"steps": 20})]
    )
    num_examples: int | None = Field(1000, ge=1, description="equidistant test examples (None = all)")
    batch_size: int = Field(256, ge=1, le=65536)
    per_member: bool = True

    @field_validator("combiners")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("choose at least one combiner")
        return v


Preset = Literal["paper", "reference-code"]


class ExperimentConfig(StrictModel):
    name: str = Field("experiment", min_length=1, max_length=200)
    tags: list[str] = Field(default_factory=list)
    preset: Preset = "paper"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_dir: str | None = Field(None, description="where checkpoints go; default runs/<name>-<seed>")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    igat: IGATConfig = Field(default_factory=IGATConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _check_registered(self) -> ExperimentConfig:
        # Validate the defense/attack/combiner names and their parameter models against the
        # registries, so errors name e.g. ``defense.params.alpha``.
        from igat.attacks import ATTACKS
        from igat.defenses import DEFENSES
        from igat.models.combiners import COMBINERS

        errors: list[tuple[str, str]] = []
        if self.defense.name not in DEFENSES:
            errors.append(("defense.name", f"unknown defense {self.defense.name!r}; choose one of {', '.join(DEFENSES.names())}"))
        else:
            params_model = DEFENSES.get(self.defense.name).Params
            try:
                params_model(**self.defense.params)
            except ValidationError as exc:
                errors.extend(ConfigError.from_validation(exc, "defense.params.").errors)
        for i, spec in enumerate(self.eval.attacks):
            if spec.name not in ATTACKS:
                errors.append((f"eval.attacks.{i}.name", f"unknown attack {spec.name!r}; choose one of {', '.join(ATTACKS.names())}"))
                continue
            try:
                ATTACKS.get(spec.name).Params(**spec.params)
            except ValidationError as exc:
                errors.extend(ConfigError.from_validation(exc, f"eval.attacks.{i}.params.").errors)
        for i, c in enumerate(self.eval.combiners):
            if c not in COMBINERS:
                errors.append((f"eval.combiners.{i}", f"unknown combiner {c!r}; choose one of {', '.join(COMBINERS.names())}"))
        if errors:
            raise ValueError("; ".join(f"{f}: {m}" for f, m in errors))
        return self

    # --- typed access to registry-validated parameters ------------------------------
    def defense_params(self) -> BaseModel:
        from igat.defenses import DEFENSES

        return DEFENSES.get(self.defense.name).Params(**self.defense.params)

    @property
    def display_name(self) -> str:
        base = self.defense.name
        return f"iGAT_{base}" if self.igat.enabled else base

    # --- (de)serialisation -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _flatten(exc) from None

    @classmethod
    def from_text(cls, text: str) -> ExperimentConfig:
        try:
            data = yaml.safe_load(text)  # YAML is a superset of JSON
        except yaml.YAMLError as exc:
            raise ConfigError([("config", f"not valid YAML/JSON: {exc}")]) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError([("config", "the top level must be a mapping of fields")])
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        return cls.from_text(Path(path).read_text())

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.write_text(self.to_json() if path.suffix == ".json" else self.to_yaml())


def _flatten(exc: ValidationError) -> ConfigError:
    """Turn pydantic's errors (including our model-validator's joined message) into field/message pairs."""
    errors: list[tuple[str, str]] = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if not loc and ": " in msg:
            for part in msg.split("; "):
                field, _, m = part.partition(": ")
                errors.append((field, m))
        else:
            errors.append((loc or "config", msg))
    return ConfigError(errors)


def deep_merge(into: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (overrides win), in place; returns ``into``. Used to layer a defense's
    recommended settings, iGAT defaults and presets over a config's dict form."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def with_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) and re-validate."""
    data = cfg.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError([(item, "override must look like field.path=value")])
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError([(key, "cannot set a field inside a non-mapping value")])
        node[parts[-1]] = yaml.safe_load(raw)
    return ExperimentConfig.from_dict(data)
