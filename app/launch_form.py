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


# --- defaults ---------------------------------------------------------------------------

def _registry_defense(name: str):
    from igat.defenses import DEFENSES

    return DEFENSES.get(name)


def defense_names() -> list[str]:
    from igat.defenses import DEFENSES

    return list(DEFENSES.names())


def attack_names() -> list[str]:
    from igat.attacks import ATTACKS

    return list(ATTACKS.names())


def combiner_names() -> list[str]:
    from igat.models.combiners import COMBINERS

    return list(COMBINERS.names())


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


def default_config(defense: str, igat: bool = False, preset: str = "paper", dataset: str = "cifar10") -> dict[str, Any]:
    """A config a researcher would start from: the defense's ``recommended`` overrides; with iGAT on,
    the paper's iGAT defaults for that defense and dataset (``igat_defaults``), then the preset; evaluated
    with the paper's protocol (``igat.protocols``; the form's protocol switch offers the quick one)."""
    from igat.presets import igat_defaults

    data = ExperimentConfig().to_dict()
    data["data"]["dataset"] = dataset
    data["defense"] = {"name": defense, "params": {}}
    merge(data, getattr(_registry_defense(defense), "recommended", {}) or {})
    data["igat"]["enabled"] = igat
    if igat:
        merge(data, igat_defaults(defense, dataset))
    return apply_protocol_dict(apply_preset_dict(data, preset), "paper")


def finetune_config(run_cfg: dict[str, Any], checkpoint: str | None) -> dict[str, Any]:
    """The iGAT fine-tuning of a trained run: its config (data, model, defense, evaluation, seed)
    with iGAT on, the paper's iGAT defaults for its defense and dataset, its preset, and
    ``train.init_checkpoint`` = the run's checkpoint."""
    from igat.presets import igat_defaults

    data = copy.deepcopy(run_cfg)
    data["name"] = f"{data.get('name') or 'run'}-igat"
    merge(data, igat_defaults(get_path(data, "defense.name") or "", get_path(data, "data.dataset") or "cifar10"))
    set_path(data, INIT_CHECKPOINT, checkpoint)
    return apply_preset_dict(data, data.get("preset") or "paper")


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
    return values


def build_config(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with the form's values written in (seed: the first one given)."""
    data = copy.deepcopy(base)
    for key, path in FORM_PATHS.items():
        if key in ("tags", "seeds", "attacks", "steps_per_epoch", "num_examples") or key not in values:
            continue
        set_path(data, path, values[key])
    if "tags" in values:
        data["tags"] = [t.strip() for t in str(values["tags"]).split(",") if t.strip()]
    if "steps_per_epoch" in values:
        set_path(data, "train.steps_per_epoch", int(values["steps_per_epoch"]) or None)
    if "num_examples" in values:
        set_path(data, "eval.num_examples", int(values["num_examples"]) or None)
    if BASE_KEY in values:  # a BaseRun or None (scratch); absent: keep the base config's value
        set_path(data, INIT_CHECKPOINT, values[BASE_KEY].checkpoint if values[BASE_KEY] else None)
    if "attacks" in values:
        # Keep the parameters (and the protocol's example cap) the base config had for an attack that stays selected.
        old = {a["name"]: a for a in (get_path(data, "eval.attacks") or [])}
        set_path(data, "eval.attacks", [{"name": n, "params": old.get(n, {}).get("params", {}),
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
            errors.extend(e for e in exc.errors if e not in errors)
    base_run = values.get(BASE_KEY)
    if base_run is not None and get_path(data, "igat.enabled"):
        errors.extend(base_run_errors(data, base_run))
    if errors:
        # A field error stops pydantic before the registry checks of defense/attack parameters run;
        # check those too so the user sees every problem at once.
        errors.extend(e for e in registry_param_errors(data) if e not in errors)
    return ([] if errors else configs), errors


def registry_param_errors(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Errors of defense.params and eval.attacks.<i>.params against the registered Params models."""
    from pydantic import ValidationError

    from igat.attacks import ATTACKS
    from igat.defenses import DEFENSES

    errors: list[tuple[str, str]] = []
    defense = get_path(data, "defense.name")
    if defense in DEFENSES:
        try:
            DEFENSES.get(defense).Params(**(get_path(data, "defense.params") or {}))
        except ValidationError as exc:
            errors.extend(ConfigError.from_validation(exc, "defense.params.").errors)
    for i, spec in enumerate(get_path(data, "eval.attacks") or []):
        if isinstance(spec, dict) and spec.get("name") in ATTACKS:
            try:
                ATTACKS.get(spec["name"]).Params(**(spec.get("params") or {}))
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
    if field.startswith("igat.attack"):
        return None
    return None
