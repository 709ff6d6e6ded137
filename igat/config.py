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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from igat.config_input import (
    InputError,
    bool_for_number,
    holds_model,
    name_problem,
    one_line,
    param_problems,
    parse_yaml,
    path_problem,
    read_config_file,
    tags_problem,
    text_problem,
)

EPS_8_255 = 8 / 255
STEP_2_255 = 2 / 255


class ConfigError(ValueError):
    """A configuration problem, with one human-readable line per offending field."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in errors))

    def one_line(self, limit: int = 5) -> str:
        """The errors on one line for a terminal (control characters escaped, at most ``limit``)."""
        return one_line(self.errors, limit)

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
    # inf/nan are never a meaningful setting (``grad_clip: .inf`` would silently disable clipping).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_ambiguous_input(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads ``num_members: true`` as 1 and a control character would reach the database
        # and terminals; both are refused for every field of every config section.
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and bool_for_number(field.annotation, value):
            raise ValueError("must be a number, not a boolean")
        # Sections are checked by their own models, so the error names the innermost field.
        if (field is None or not holds_model(field.annotation)) and (problem := text_problem(value)) is not None:
            raise ValueError(problem)
        return value


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
    arch: Literal["resnet20"] = Field(
        "resnet20", description="member family: CIFAR ResNet (BasicBlocks, option-B shortcuts); its size is "
        "model.depth x model.width (the name is kept so every stored config still loads)")
    depth: int = Field(20, description="CIFAR ResNet depth 6n+2 in 8..110 (8, 14, 20, 32, 44, 56, 110 ...); "
                       "20 = the paper's ResNet-20")
    width: int = Field(1, description="integer channel multiplier 1..8: stages of 16w/32w/64w channels; "
                       "1 = the paper's 16/32/64")
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

    @field_validator("depth")
    @classmethod
    def _cifar_resnet_depth(cls, v: int) -> int:
        # one rule for the config and the model itself (igat.models.resnet re-exports it)
        from igat.specs.architecture import depth_error

        if problem := depth_error(v):
            raise ValueError(problem)
        return v

    @field_validator("width")
    @classmethod
    def _channel_multiplier(cls, v: int) -> int:
        from igat.specs.architecture import width_error

        if problem := width_error(v):
            raise ValueError(problem)
        return v


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
    log_every: int = Field(10, ge=1, description="steps between step-metric emissions (at most: a short run logs more often, so its curves get at least 100 points)")
    eval_examples: int = Field(512, ge=0, le=100000, description="test examples for the per-epoch natural/PGD accuracy (0 = off)")
    eval_pgd_steps: int = Field(10, ge=0, le=1000, description="PGD steps of the per-epoch robust-accuracy probe (0 = natural only)")
    init_checkpoint: str | None = Field(
        None, max_length=4096, description="warm start: initialise the members (and jointly trained modules) from this "
        "checkpoint's weights, e.g. a baseline to fine-tune with iGAT or the standard-trained ensemble DVERGE starts "
        "from (None = random initialisation)")


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
    base_adv: bool = Field(
        False, description="keep the base defense's own adversarial-training term (its plus_adv PGD) under iGAT. "
        "Off (paper §5.1, both presets): the only attack of a step is the global one and the base contributes its "
        "non-adversarial terms (eq. 11/16). On: the earlier behaviour (a second ensemble attack per step whose "
        "examples train every member). The reference iGAT-DVERGE trainer keeps DVERGE's per-member AT; its preset "
        "sets this on for DVERGE")


class AttackSpec(StrictModel):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    # The evaluation protocol's cap (igat.protocols), kept apart from the attack's parameters because every
    # attack can have one; an attack's own params.num_examples (CW) caps it as well: the smaller one applies.
    num_examples: int | None = Field(
        None, ge=1, description="run this attack on at most this many equidistant examples of the evaluation set")


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
    name: str = Field("experiment", min_length=1, max_length=200,
                      description="a plain name (letters, digits, space, - _ . +): it names the run's folder")
    tags: list[str] = Field(default_factory=list, description="at most 32 short labels, no commas")
    preset: Preset = "paper"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_dir: str | None = Field(
        None, description="where checkpoints go, inside the runs folder for `igat train` (./runs or $IGAT_RUNS_DIR); "
        "default runs/<name>-seed<seed>; workers always use $IGAT_HOME/runs/<run id>")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    igat: IGATConfig = Field(default_factory=IGATConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _migrate_init_checkpoint(cls, data: Any) -> Any:
        # The warm start used to be ``igat.init_checkpoint`` (iGAT fine-tunes only); it is now
        # ``train.init_checkpoint`` for any run. Stored configs and YAML files of the old form keep working.
        if not isinstance(data, dict) or not isinstance(data.get("igat"), dict) or "init_checkpoint" not in data["igat"]:
            return data
        data = dict(data)
        igat = dict(data["igat"])
        old = igat.pop("init_checkpoint")
        data["igat"] = igat
        train = data.get("train")
        if old is not None and isinstance(train, dict | type(None)):
            train = dict(train or {})
            if train.get("init_checkpoint") not in (None, old):
                raise ValueError("train.init_checkpoint: conflicts with igat.init_checkpoint (the old name of the "
                                 "same field); give only train.init_checkpoint")
            train["init_checkpoint"] = old
            data["train"] = train
        return data

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        # The name becomes a folder (runs/<name>-seed<seed>), a database value and a terminal line.
        if (problem := name_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("tags")
    @classmethod
    def _plain_tags(cls, value: list[str]) -> list[str]:
        if (problem := tags_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("output_dir")
    @classmethod
    def _usable_path(cls, value: str | None) -> str | None:
        # Only the form is checked here; where a run may write is decided by whoever runs it (the CLI
        # confines it to its runs folder, workers ignore it).
        if value is not None and (problem := path_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check_registered(self) -> ExperimentConfig:
        # Validate the defense/attack/combiner names and their parameter models against the
        # registries, so errors name e.g. ``defense.params.alpha``. The specs, not the implementations: checking
        # a config must not load PyTorch (the dashboard and `igat submit` check configs).
        from igat.specs.attacks import ATTACK_SPECS
        from igat.specs.combiners import combiner_names
        from igat.specs.defenses import DEFENSE_SPECS

        errors: list[tuple[str, str]] = []
        if self.defense.name not in DEFENSE_SPECS:
            errors.append(("defense.name", f"unknown defense {self.defense.name!r}; choose one of {', '.join(DEFENSE_SPECS.names())}"))
        else:
            params_model = DEFENSE_SPECS.get(self.defense.name).Params
            problems = param_problems(params_model, self.defense.params)
            errors.extend((f"defense.params.{k}", m) for k, m in problems)
            try:
                if not problems:
                    params_model(**self.defense.params)
                    errors.extend(DEFENSE_SPECS.get(self.defense.name).config_problems(self))
            except ValidationError as exc:
                errors.extend(ConfigError.from_validation(exc, "defense.params.").errors)
        for i, spec in enumerate(self.eval.attacks):
            if spec.name not in ATTACK_SPECS:
                errors.append((f"eval.attacks.{i}.name", f"unknown attack {spec.name!r}; choose one of {', '.join(ATTACK_SPECS.names())}"))
                continue
            attack_params = ATTACK_SPECS.get(spec.name).Params
            problems = param_problems(attack_params, spec.params)
            errors.extend((f"eval.attacks.{i}.params.{k}", m) for k, m in problems)
            try:
                if not problems:
                    attack_params(**spec.params)
            except ValidationError as exc:
                errors.extend(ConfigError.from_validation(exc, f"eval.attacks.{i}.params.").errors)
        for i, c in enumerate(self.eval.combiners):
            if c not in combiner_names():
                errors.append((f"eval.combiners.{i}", f"unknown combiner {c!r}; choose one of {', '.join(combiner_names())}"))
        if errors:
            raise ValueError("; ".join(f"{f}: {m}" for f, m in errors))
        return self

    # --- typed access to registry-validated parameters ------------------------------
    def defense_params(self) -> BaseModel:
        from igat.specs.defenses import DEFENSE_SPECS

        return DEFENSE_SPECS.get(self.defense.name).Params(**self.defense.params)

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
        """Parse YAML or JSON (YAML is a superset) within size limits, refusing duplicate keys and an
        empty document (an empty file is a mistake, not a request for every default; ``{}`` is)."""
        try:
            data = parse_yaml(text)
        except InputError as exc:
            raise ConfigError([(exc.field, exc.message)]) from None
        if data is None:
            raise ConfigError([("config", "the config is empty; give at least one field (or {} for all defaults)")])
        if not isinstance(data, dict):
            raise ConfigError([("config", "the top level must be a mapping of fields")])
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read a config file: a regular UTF-8 text file within the size limit (see :meth:`from_text`)."""
        try:
            text = read_config_file(path)
        except InputError as exc:
            raise ConfigError([(exc.field, exc.message)]) from None
        return cls.from_text(text)

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
    """Apply ``a.b.c=value`` overrides (value parsed as YAML, with the config file's limits) and re-validate."""
    data = cfg.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError([(item, "override must look like field.path=value")])
        key = ".".join(parts)
        node: Any = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError([(key, "cannot set a field inside a non-mapping value")])
        try:
            node[parts[-1]] = parse_yaml(raw, what=key)
        except InputError as exc:
            raise ConfigError([(exc.field, exc.message)]) from None
    return ExperimentConfig.from_dict(data)
