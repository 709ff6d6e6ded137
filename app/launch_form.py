"""The launch form's logic, kept free of Streamlit so it can be tested on its own.

The form edits a *base* config dict (from defaults, a cloned run or imported YAML). Values the
form shows are read from it (``form_values``), and the submitted values are written back into a
copy (``build_config``) which ``ExperimentConfig.from_dict`` validates; every error keeps its
dotted field path, which ``error_key`` maps back to the widget that edits the field.
"""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel

from igat.config import ConfigError, ExperimentConfig, ModelConfig, deep_merge

DATASETS = ["cifar10", "cifar100", "synthetic"]
PRESETS = ["paper", "reference-code"]
# Evaluation protocols (igat.protocols) offered as one click; "custom" = the attacks and examples as edited.
PROTOCOLS = ["paper", "quick", "custom"]
PROTOCOL_KEY = "protocol"  # widget key (outside the form: choosing one rewrites the evaluation fields)
RULES = ["soft", "hard", "random", "opposite", "opposite_argmin"]
IGAT_COMBINERS = ["average", "max"]

# Form key -> dotted config path. The keys are also the widget keys (prefixed with "launch.").
FORM_PATHS: dict[str, str] = {
    "name": "name",
    "tags": "tags",
    "preset": "preset",
    "dataset": "data.dataset",
    "members": "model.num_members",
    "depth": "model.depth",
    "width": "model.width",
    "defense": "defense.name",
    "igat": "igat.enabled",
    "alpha": "igat.alpha",
    "beta": "igat.beta",
    "rule": "igat.rule",
    "igat_combiner": "igat.combiner",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "steps_per_epoch": "train.steps_per_epoch",
    "lr": "optim.lr",
    "combiners": "eval.combiners",
    "attacks": "eval.attacks",
    "num_examples": "eval.num_examples",
    "seeds": "seed",
}
PATH_KEYS = {path: key for key, path in FORM_PATHS.items()}
# Whole-number fields. Their widgets are float-typed on purpose: an integer widget lets the browser cut a typed
# 1.5 down to 1 without a word, while a float one hands 1.5 to validation, which refuses it naming the field.
WHOLE_KEYS = ("members", "depth", "width", "epochs", "batch_size", "steps_per_epoch", "num_examples")
# Several methods call a weight "alpha" (or "beta"); on one form each is labelled by what it weighs.
IGAT_LABELS = {"alpha": "Distributed-CE weight α (igat.alpha)", "beta": "L_R regulariser weight β (igat.beta)"}
PARAM_LABELS: dict[tuple[str, str], str] = {
    ("adp", "alpha"): "Entropy weight α (alpha)",
    ("adp", "log_det_lamda"): "Log-det weight β (log_det_lamda)",
    ("cldl", "alpha"): "JSD-diversity weight α (alpha)",
    ("cldl", "beta"): "Gradient-coherence weight β (beta)",
}
DEFENSE_PARAM_PREFIX = "dp."
# The "Fine-tune from" widget: its value is a base run id (SCRATCH = train from scratch); the form
# writes that run's checkpoint into train.init_checkpoint (``build_config``).
BASE_KEY = "init_run"
SCRATCH = 0
INIT_CHECKPOINT = "train.init_checkpoint"


merge = deep_merge  # one recursive merge for the form, the CLI and the presets


def get_path(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def whole(value: Any) -> Any:
    """A float widget's value for an integer field: 2.0 -> 2; 1.5 stays 1.5 so validation refuses it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def param_label(defense: str, name: str) -> str:
    return PARAM_LABELS.get((defense, name), name)


def members_range(defense: str) -> tuple[int, int]:
    """The member counts ``defense`` accepts: its ``min_members`` (pair defenses: 2) up to the config's limit."""
    upper = next(m.le for m in ModelConfig.model_fields["num_members"].metadata if isinstance(m, annotated_types.Le))
    lower = getattr(_registry_defense(defense), "min_members", 1) if defense in defense_names() else 1
    return int(lower), int(upper)


def members_help(defense: str) -> str:
    lower, upper = members_range(defense)
    why = " (its diversity terms compare member pairs)" if lower >= 2 else ""
    return f"number of ResNet members: a whole number {lower}..{upper} for {defense}{why}"


# --- defaults ---------------------------------------------------------------------------

# The specs (igat.specs), not the implementations: the dashboard validates and plans configs without PyTorch.
def _registry_defense(name: str):
    from igat.specs.defenses import DEFENSE_SPECS

    return DEFENSE_SPECS.get(name)


def defense_names() -> list[str]:
    from igat.specs.defenses import DEFENSE_SPECS

    return list(DEFENSE_SPECS.names())


def attack_names() -> list[str]:
    from igat.specs.attacks import ATTACK_SPECS

    return list(ATTACK_SPECS.names())


def combiner_names() -> list[str]:
    from igat.specs.combiners import combiner_names as names

    return names()


def apply_preset_dict(data: dict[str, Any], preset: str) -> dict[str, Any]:
    """Apply the paper / reference-code iGAT preset (``igat.presets.apply_preset``); a run without
    iGAT only records the preset name, since the presets are iGAT recipes."""
    from igat.presets import apply_preset

    data = copy.deepcopy(data)
    data["preset"] = preset
    if not (data.get("igat") or {}).get("enabled"):
        return data
    return apply_preset(ExperimentConfig.from_dict(data), preset).to_dict()


# --- evaluation protocols -------------------------------------------------------------------

def protocol_name(data: dict[str, Any]) -> str:
    """The protocol a config dict's ``eval`` runs (paper / quick), "custom" otherwise or when it does not validate."""
    from igat.protocols import protocol_of

    try:
        return protocol_of(ExperimentConfig.from_dict(data))
    except (ConfigError, ValueError):
        return "custom"


def apply_protocol_dict(data: dict[str, Any], protocol: str) -> dict[str, Any]:
    """A copy of ``data`` whose eval.attacks / eval.num_examples run ``protocol`` (custom: unchanged). The CW
    attack follows the config (its preset's, or the one it lists)."""
    from igat.protocols import protocol_eval

    data = copy.deepcopy(data)
    if protocol == "custom":
        return data
    data["eval"] = {**(data.get("eval") or {}), **protocol_eval(protocol, ExperimentConfig.from_dict(data))}
    return data


def estimate_text(data: dict[str, Any]) -> str:
    """The evaluation's estimated time (igat.protocols cost model) on the config's device, for the form."""
    from igat.protocols import SECONDS_PER_MEMBER_PASS, confidence_note, estimate_seconds, eval_set_total

    try:
        config = ExperimentConfig.from_dict(data)
    except (ConfigError, ValueError):
        return "No time estimate: fix the fields below first."
    if not config.eval.attacks:
        return "No final evaluation (no attacks selected)."
    devices = ["cpu", "cuda"] if config.device == "auto" else [config.device]
    parts = []
    for device in devices:
        est = estimate_seconds(config, device)  # members: natural + PGD, as the worker evaluates them
        where = "a CPU worker" if device == "cpu" else "a GPU worker"
        parts.append(f"about {_duration(est.seconds)} on {where}" if est.seconds is not None
                     else f"no measured figure for {where}")
    n = min(eval_set_total(config), config.eval.num_examples or eval_set_total(config))
    const = SECONDS_PER_MEMBER_PASS["cpu"] * 1e3
    return (f"Estimated evaluation time: {'; '.join(parts)} — an estimate (test examples × attack iterations × "
            f"members × {const:.2g} ms per member forward+backward measured on the reference CPU, an upper one for "
            f"attacks that stop early). {n:,} evaluation examples: {confidence_note(n)} (95 % interval).")


def _duration(seconds: float) -> str:
    from igat.protocols import format_duration

    return format_duration(seconds)


# --- the whole run's cost, before it is queued ---------------------------------------------------

# Ask before queueing a run estimated above this on the reference CPU (the cost model's only measured device).
LONG_RUN_SECONDS = 3600.0
CIFAR_TRAIN_SIZE = 50_000


def _train_size(config: ExperimentConfig) -> int:
    total = config.data.synthetic_train_size if config.data.dataset == "synthetic" else CIFAR_TRAIN_SIZE
    return min(total, config.data.train_subset) if config.data.train_subset else total


def _attack_passes(config: ExperimentConfig) -> float:
    """Member passes per training example spent crafting attacks: iGAT's global attack on the attacked share of
    a batch, and the defense's own PGD / distillation steps where they run (under iGAT only with base_adv)."""
    p = config.defense_params()
    if hasattr(p, "plus_adv"):
        own = float(p.adv_steps) if p.plus_adv else 0.0
    else:
        own = float(getattr(p, "steps", 0) or getattr(p, "distill_steps", 0) or 0)
    if not config.igat.enabled:
        return own
    return config.igat.attack.steps * config.igat.attack_fraction + (own if config.igat.base_adv else 0.0)


def train_passes(config: ExperimentConfig) -> float:
    """Member forward+backward passes of the training: examples x (1 + attack steps) x members per epoch,
    plus the end-of-epoch probe (natural + PGD on ``train.eval_examples`` test examples)."""
    from igat.protocols import FORWARD_SHARE, eval_set_total

    n, batch = _train_size(config), config.train.batch_size
    steps = -(-n // batch)
    if config.train.steps_per_epoch:
        steps = min(steps, config.train.steps_per_epoch)
    per_epoch = min(steps * batch, n) * (1 + _attack_passes(config))
    if config.train.eval_examples:
        probe = min(config.train.eval_examples, eval_set_total(config))
        per_epoch += probe * (FORWARD_SHARE + config.train.eval_pgd_steps)
    return config.train.epochs * config.model.num_members * per_epoch


@dataclass(frozen=True)
class RunCost:
    train_passes: float
    eval_passes: float
    cpu_seconds: float  # both, at the reference CPU's measured seconds per member pass, scaled by model and image size

    def text(self) -> str:
        return (f"Estimated cost of the whole run: {self.train_passes:,.0f} member passes of training + "
                f"{self.eval_passes:,.0f} of evaluation, about {_duration(self.cpu_seconds)} on a CPU worker "
                "(no measured figure for a GPU worker). An estimate: defense-specific extra passes (e.g. DVERGE's "
                "feature distillation per member pair) are not all counted.")


def run_cost(config: ExperimentConfig) -> RunCost:
    from igat.protocols import SECONDS_PER_MEMBER_PASS, estimate_seconds, size_scale

    train = train_passes(config)
    evaluation = estimate_seconds(config, "cpu").member_passes if config.eval.attacks else 0.0
    return RunCost(train, evaluation, (train + evaluation) * SECONDS_PER_MEMBER_PASS["cpu"] * size_scale(config))


def cost_text(data: dict[str, Any]) -> str:
    try:
        return run_cost(ExperimentConfig.from_dict(data)).text()
    except (ConfigError, ValueError):
        return "No cost estimate: fix the fields below first."


def long_run(config: ExperimentConfig) -> RunCost | None:
    """The run's cost when it is long enough to ask before queueing it, else None."""
    cost = run_cost(config)
    return cost if cost.cpu_seconds > LONG_RUN_SECONDS else None


def default_config(defense: str, igat: bool = False, preset: str = "paper", dataset: str = "cifar10") -> dict[str, Any]:
    """A config a researcher would start from: the defense's ``recommended`` overrides; with iGAT on,
    the paper's iGAT defaults for that defense and dataset (``igat_defaults``), then the preset; evaluated
    with the paper's protocol (``igat.protocols``; the form's protocol switch offers the quick one)."""
    return apply_protocol_dict(method_defaults(defense, igat, preset, dataset), "paper")


def method_defaults(defense: str, igat: bool = False, preset: str = "paper", dataset: str = "cifar10") -> dict[str, Any]:
    """The method's recipe without an evaluation protocol: the defense's ``recommended`` overrides and, with
    iGAT on, the paper's iGAT defaults for that defense and dataset, then the preset."""
    from igat.presets import igat_defaults

    data = ExperimentConfig().to_dict()
    data["data"]["dataset"] = dataset
    data["defense"] = {"name": defense, "params": {}}
    merge(data, getattr(_registry_defense(defense), "recommended", {}) or {})
    data["igat"]["enabled"] = igat
    if igat:
        merge(data, igat_defaults(defense, dataset))
    return apply_preset_dict(data, preset)


def import_config(text: str) -> dict[str, Any]:
    """An imported YAML / JSON as the form's config: the fields it gives, over its method's recipe
    (``method_defaults`` for its defense, iGAT switch, preset and dataset), so a file without an ``optim``
    block trains with the defense's recommended optimiser (ADP: Adam 1e-3), as the form would, not with
    the generic SGD defaults. Raises ConfigError naming the fields (also for an empty text)."""
    from igat.config_input import parse_yaml

    plain = ExperimentConfig.from_text(text)  # refuses empty text, bad YAML and bad fields, naming them
    raw = parse_yaml(text)
    base = method_defaults(plain.defense.name, plain.igat.enabled, plain.preset, plain.data.dataset)
    return ExperimentConfig.from_dict(merge(base, raw)).to_dict()


# The base run's scale, which its fine-tuning keeps: a base trained for 1 epoch at batch 32 is a test, and
# turning it into the paper's 100 epochs at batch 512 would queue a run hundreds of times longer unasked.
FINETUNE_SCALE = ("train.epochs", "train.batch_size", "train.steps_per_epoch")


def finetune_config(run_cfg: dict[str, Any], checkpoint: str | None) -> dict[str, Any]:
    """The iGAT fine-tuning of a trained run: its config (data, model, defense, evaluation, seed, and its
    scale: epochs, batch size, steps per epoch) with iGAT on, the paper's iGAT defaults for its defense and
    dataset (learning-rate milestones placed over the base's epochs), its preset, and
    ``train.init_checkpoint`` = the run's checkpoint."""
    from igat.presets import igat_defaults

    data = copy.deepcopy(run_cfg)
    scale = {path: get_path(data, path) for path in FINETUNE_SCALE}
    data["name"] = f"{data.get('name') or 'run'}-igat"
    budget = {"epochs": int(scale["train.epochs"])} if scale["train.epochs"] else {}  # milestones over the base's epochs
    merge(data, igat_defaults(get_path(data, "defense.name") or "", get_path(data, "data.dataset") or "cifar10",
                              **budget))
    set_path(data, INIT_CHECKPOINT, checkpoint)
    data = apply_preset_dict(data, data.get("preset") or "paper")
    for path, value in scale.items():  # the preset's recipe sets its own batch / pseudo-epochs: the base's win
        set_path(data, path, value)
    return data


def _budget(data: dict[str, Any]) -> str:
    epochs, batch, steps = (get_path(data, p) for p in FINETUNE_SCALE)
    return f"{epochs} epoch(s) at batch {batch}" + (f", {steps} steps per epoch" if steps else "")


def scale_note(base: dict[str, Any], data: dict[str, Any]) -> str:
    """The fine-tuning's training budget next to its base run's (and the iGAT defaults' when it keeps the base's)."""
    import inspect

    from igat.presets import PAPER_BATCH, igat_defaults

    now, then = _budget(data), _budget(base)
    if now != then:
        return f"Training budget: {now}; the base run trained {then}."
    default_epochs = inspect.signature(igat_defaults).parameters["epochs"].default
    return (f"Training budget: {now}, the base run's (the iGAT defaults train {default_epochs} epochs at the "
            f"paper's batch {PAPER_BATCH}; set Epochs / Batch size for that).")


# --- the base run of a fine-tuning -------------------------------------------------------

@dataclass(frozen=True)
class BaseRun:
    """A succeeded run with a checkpoint that iGAT can fine-tune (``app.data.base_runs`` rows)."""

    id: int
    name: str
    defense: str
    members: int
    dataset: str
    checkpoint: str

    def label(self) -> str:
        return f"#{self.id} {self.name} ({self.defense}, {self.members} members, {self.dataset})"


def base_run_id(data: dict[str, Any], bases: dict[int, BaseRun]) -> int:
    """The widget value for a config: the base run whose checkpoint its train.init_checkpoint names."""
    path = get_path(data, INIT_CHECKPOINT)
    if path and (get_path(data, "igat.enabled") or False):
        for run in bases.values():
            if run.checkpoint == path:
                return run.id
    return SCRATCH


def base_run_errors(data: dict[str, Any], base: BaseRun) -> list[tuple[str, str]]:
    """The base must be the same ensemble the config fine-tunes: same defense, member count and data."""
    wanted = (("defense.name", base.defense), ("model.num_members", base.members), ("data.dataset", base.dataset))
    mismatches = [f"{path} {value!r} (this form: {get_path(data, path)!r})"
                  for path, value in wanted if get_path(data, path) != value]
    if not mismatches:
        return []
    return [(INIT_CHECKPOINT, f"base run #{base.id} does not match this config: it has " + "; ".join(mismatches)
             + ". Pick a base with the same defense, members and dataset, or train from scratch")]


# --- defense parameter fields -------------------------------------------------------------

@dataclass
class ParamField:
    name: str
    kind: str  # bool | int | float | choice | text
    default: Any
    description: str
    options: list[Any] | None = None
    bounds: str = ""


def _bounds(metadata: list[Any]) -> str:
    parts = []
    for m in metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                parts.append(f"{sym} {getattr(m, attr)}")
    return ", ".join(parts)


def param_fields(params_model: type[BaseModel]) -> list[ParamField]:
    """One form field per Params field: bools, ints, floats and Literals get typed widgets,
    anything else (optional values, lists, nested models) a YAML text field."""
    fields: list[ParamField] = []
    for name, info in params_model.model_fields.items():
        ann = info.annotation
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        desc = info.description or ""
        bounds = _bounds(list(info.metadata))
        if ann is bool:
            kind, options = "bool", None
        elif ann is int:
            kind, options = "int", None
        elif ann is float:
            kind, options = "float", None
        elif typing.get_origin(ann) is typing.Literal:
            kind, options = "choice", list(typing.get_args(ann))
        else:
            kind, options = "text", None
        fields.append(ParamField(name, kind, default, desc, options, bounds))
    return fields


def field_help(f: ParamField) -> str:
    parts = [f.description] if f.description else []
    if f.bounds:
        parts.append(f"allowed: {f.bounds}")
    if f.kind == "text":
        parts.append("YAML value; empty = null")
    return " — ".join(parts) or f.name


def param_to_widget(f: ParamField, value: Any) -> Any:
    if f.kind == "text":
        return "" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    if f.kind == "float" and value is not None:
        return float(value)
    if f.kind == "int" and value is not None:
        return int(value)
    if f.kind == "choice" and value not in (f.options or []):
        return f.default
    return value


def widget_to_param(f: ParamField, value: Any) -> Any:
    """The value to put in defense.params; YAML text that does not parse is kept as text so the
    validator reports it against the field."""
    if f.kind == "text":
        text = str(value or "").strip()
        if not text:
            return None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return value


# --- the Advanced section: every other config field ----------------------------------------------

ADVANCED_PREFIX = "adv."  # + dotted config path
ATTACK_PREFIX = "ap."  # + "<attack>.<param>": a selected evaluation attack's parameter
# Fields with their own place on the form (the main fields, the base-run picker, the attacks multiselect).
ELSEWHERE = ("defense", "train.init_checkpoint", "eval.attacks", "igat.init_checkpoint")


def _section_models() -> list[tuple[str, str, type[BaseModel]]]:
    from igat.config import DataConfig, EvalConfig, IGATConfig, OptimConfig, PGDParams, TrainConfig

    return [("General", "", ExperimentConfig), ("Data", "data", DataConfig), ("Model", "model", ModelConfig),
            ("Optimiser", "optim", OptimConfig), ("Training", "train", TrainConfig), ("iGAT", "igat", IGATConfig),
            ("iGAT attack", "igat.attack", PGDParams), ("Evaluation", "eval", EvalConfig)]


def advanced_fields() -> list[tuple[str, str, ParamField]]:
    """(section, dotted path, field) of every config field the main form does not show; sections themselves
    (data, igat.attack ...) are not fields."""
    main = set(FORM_PATHS.values()) | set(ELSEWHERE)
    sections = {path for _, path, _ in _section_models() if path}
    out = []
    for title, prefix, model in _section_models():
        for f in param_fields(model):
            path = f"{prefix}.{f.name}" if prefix else f.name
            if path not in main and path not in sections:
                out.append((title, path, f))
    return out


def attack_param_fields(attack: str) -> list[ParamField]:
    from igat.specs.attacks import ATTACK_SPECS

    return param_fields(ATTACK_SPECS.get(attack).Params) if attack in ATTACK_SPECS else []


def _attack_params(old: dict[str, Any], name: str, values: dict[str, Any]) -> dict[str, Any]:
    """An attack's params from its widgets: the ones the config had, plus any set away from its default (so a
    protocol's attack keeps exactly its listed params and still reads as that protocol)."""
    params = dict(old)
    for f in attack_param_fields(name):
        key = f"{ATTACK_PREFIX}{name}.{f.name}"
        if key in values:
            value = widget_to_param(f, values[key])
            if f.name in old or value != f.default:
                params[f.name] = value
    return params


# --- form <-> config ---------------------------------------------------------------------

def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in str(text).replace(";", ",").replace(" ", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            seed = int(part)
        except ValueError:
            raise ConfigError([("seed", f"{part!r} is not an integer; give seeds like 0, 1, 2")]) from None
        if seed not in seeds:
            seeds.append(seed)
    if not seeds:
        raise ConfigError([("seed", "give at least one seed, e.g. 0 or 0, 1, 2")])
    return seeds


def form_values(data: dict[str, Any]) -> dict[str, Any]:
    """Widget values (keys of FORM_PATHS plus ``dp.<param>``) for a config dict."""
    values = {key: get_path(data, path) for key, path in FORM_PATHS.items()}
    values["tags"] = ", ".join(data.get("tags") or [])
    values["seeds"] = str(data.get("seed", 0))
    values["steps_per_epoch"] = int(values["steps_per_epoch"] or 0)
    values["num_examples"] = int(values["num_examples"] or 0)
    for size in ("depth", "width"):  # configs stored before the size knobs have neither: the defaults
        values[size] = int(values[size] or ModelConfig.model_fields[size].default)
    for key in WHOLE_KEYS:  # float widgets (see WHOLE_KEYS)
        values[key] = float(values[key])
    values["attacks"] = [a["name"] for a in (get_path(data, "eval.attacks") or [])]
    values[PROTOCOL_KEY] = protocol_name(data)
    values["combiners"] = list(values["combiners"] or [])
    values["alpha"] = float(values["alpha"])
    values["beta"] = float(values["beta"])
    values["lr"] = float(values["lr"])
    defense = values["defense"]
    if defense in defense_names():
        params = dict(get_path(data, "defense.params") or {})
        for f in param_fields(_registry_defense(defense).Params):
            values[DEFENSE_PARAM_PREFIX + f.name] = param_to_widget(f, params.get(f.name, f.default))
    for _, path, f in advanced_fields():
        value = get_path(data, path)
        values[ADVANCED_PREFIX + path] = param_to_widget(f, f.default if value is None and f.kind != "text" else value)
    for spec in get_path(data, "eval.attacks") or []:
        for f in attack_param_fields(spec["name"]):
            value = (spec.get("params") or {}).get(f.name, f.default)
            values[f"{ATTACK_PREFIX}{spec['name']}.{f.name}"] = param_to_widget(f, value)
    return values


def build_config(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with the form's values written in (seed: the first one given)."""
    data = copy.deepcopy(base)
    for key, path in FORM_PATHS.items():
        if key in ("tags", "seeds", "attacks", "steps_per_epoch", "num_examples") or key not in values:
            continue
        set_path(data, path, whole(values[key]) if key in WHOLE_KEYS else values[key])
    if "tags" in values:
        data["tags"] = [t.strip() for t in str(values["tags"]).split(",") if t.strip()]
    for key, path in (("steps_per_epoch", "train.steps_per_epoch"), ("num_examples", "eval.num_examples")):
        if key in values:  # 0 = none (a full pass / the whole test set)
            set_path(data, path, whole(values[key]) or None)
    if BASE_KEY in values:  # a BaseRun or None (scratch); absent: keep the base config's value
        set_path(data, INIT_CHECKPOINT, values[BASE_KEY].checkpoint if values[BASE_KEY] else None)
    for _, path, f in advanced_fields():
        if ADVANCED_PREFIX + path in values:
            set_path(data, path, widget_to_param(f, values[ADVANCED_PREFIX + path]))
    if "attacks" in values:
        # Keep the parameters (and the protocol's example cap) the base config had for an attack that stays
        # selected; the Advanced section's attack widgets edit those parameters.
        old = {a["name"]: a for a in (get_path(data, "eval.attacks") or [])}
        set_path(data, "eval.attacks", [{"name": n, "params": _attack_params(old.get(n, {}).get("params") or {}, n, values),
                                         "num_examples": old.get(n, {}).get("num_examples")}
                                        for n in values["attacks"]])
    defense = values.get("defense", get_path(data, "defense.name"))
    if defense in defense_names():
        keep = dict(get_path(data, "defense.params") or {}) if defense == get_path(base, "defense.name") else {}
        params: dict[str, Any] = {}
        for f in param_fields(_registry_defense(defense).Params):
            key = DEFENSE_PARAM_PREFIX + f.name
            if key in values:
                params[f.name] = widget_to_param(f, values[key])
            elif f.name in keep:
                params[f.name] = keep[f.name]
        data["defense"] = {"name": defense, "params": params}
    return data


def validate(base: dict[str, Any], values: dict[str, Any]) -> tuple[list[ExperimentConfig], list[tuple[str, str]]]:
    """One validated config per seed, or the list of (field, message) errors."""
    data = build_config(base, values)
    errors: list[tuple[str, str]] = []
    try:
        seeds = parse_seeds(values.get("seeds", "0"))
    except ConfigError as exc:
        errors.extend(exc.errors)
        seeds = [int(data.get("seed") or 0)]
    configs: list[ExperimentConfig] = []
    for seed in seeds:
        try:
            configs.append(ExperimentConfig.from_dict({**data, "seed": seed}))
        except ConfigError as exc:
            errors.extend(e for e in (whole_number_error(data, *e) for e in exc.errors) if e not in errors)
    base_run = values.get(BASE_KEY)
    if base_run is not None and get_path(data, "igat.enabled"):
        errors.extend(base_run_errors(data, base_run))
    if errors:
        # A field error stops pydantic before the registry checks of defense/attack parameters run;
        # check those too so the user sees every problem at once.
        errors.extend(e for e in registry_param_errors(data) if e not in errors)
    return ([] if errors else configs), errors


def whole_number_error(data: dict[str, Any], field: str, message: str) -> tuple[str, str]:
    """pydantic's "got a number with a fractional part" for a form field, said with the value that was typed."""
    value = get_path(data, field)
    if "fractional part" in message and isinstance(value, float):
        return field, f"must be a whole number, got {value:g}"
    return field, message


def registry_param_errors(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Errors of defense.params and eval.attacks.<i>.params against the registered Params models."""
    from pydantic import ValidationError

    from igat.specs.attacks import ATTACK_SPECS
    from igat.specs.defenses import DEFENSE_SPECS

    errors: list[tuple[str, str]] = []
    defense = get_path(data, "defense.name")
    if defense in DEFENSE_SPECS:
        try:
            DEFENSE_SPECS.get(defense).Params(**(get_path(data, "defense.params") or {}))
        except ValidationError as exc:
            errors.extend(ConfigError.from_validation(exc, "defense.params.").errors)
    for i, spec in enumerate(get_path(data, "eval.attacks") or []):
        if isinstance(spec, dict) and spec.get("name") in ATTACK_SPECS:
            try:
                ATTACK_SPECS.get(spec["name"]).Params(**(spec.get("params") or {}))
            except ValidationError as exc:
                errors.extend(ConfigError.from_validation(exc, f"eval.attacks.{i}.params.").errors)
    return errors


def error_key(field: str) -> str | None:
    """The form key of the widget that edits ``field`` (None: not on the form)."""
    if field in PATH_KEYS:
        return PATH_KEYS[field]
    if field.startswith("defense.params."):
        return DEFENSE_PARAM_PREFIX + field.split(".")[2]
    if field.startswith("eval.attacks"):
        return "attacks"
    if field.startswith("eval.combiners"):
        return "combiners"
    if field == INIT_CHECKPOINT:
        return BASE_KEY
    if field in {path for _, path, _ in advanced_fields()}:
        return ADVANCED_PREFIX + field
    if field.startswith("igat.attack"):
        return None
    return None
