"""Evaluation protocols (which attacks on how many test examples) and their estimated cost.

* ``paper`` (spec §3, the paper's Section 6.1 and its reference scripts): natural, PGD-20, SignHunter and
  AutoAttack (standard) on the whole test set, CW on 1,000 equidistant examples. The CW attack is the run's
  own: ``cw_opt`` for the reference-code preset (or a config listing only cw_opt), else ``cw``.
* ``quick``: the same attacks on fewer examples (natural and PGD on 1,000, CW / SignHunter / AutoAttack on
  500), for a first look: at ~45 % accuracy 500 examples carry a +-4.4 point 95 % interval, 1,000 +-3.1,
  10,000 +-1.0 (see :mod:`igat.stats`).

A protocol expands into a config's ``eval`` section (:func:`protocol_eval`): ``eval.num_examples`` is the
evaluation set, and each attack's ``num_examples`` caps the examples that attack runs on. The attack
parameters are the protocol's (registry defaults, PGD 20 steps), not the config's: a protocol is a fixed
procedure whose numbers can be compared between runs. :func:`protocol_of` names the protocol a config's
``eval`` section matches ("custom" when none).

Cost model (:func:`estimate_seconds`): examples x member passes per example x members x the device's
seconds per member forward+backward pass per example (:data:`SECONDS_PER_MEMBER_PASS`, ResNet-20 on
32x32 images, scaled by depth, width and image size). It is an *estimate*, an upper one for attacks that
stop early (SignHunter's queries, CW-opt's abort-early, early exit of examples already fooled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from igat.config import AttackSpec, ExperimentConfig

if TYPE_CHECKING:
    from igat.eval_plan import PlannedRow

CUSTOM = "custom"


@dataclass(frozen=True)
class ProtocolAttack:
    name: str  # "cw" stands for the run's CW attack (cw or cw_opt, see cw_attack_name)
    num_examples: int | None = None  # cap within the evaluation set; None = all of it
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    eval_examples: int | None  # the evaluation set: equidistant test examples, None = the whole test set
    attacks: tuple[ProtocolAttack, ...]


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol(
        "paper", "the paper's protocol: PGD-20, SignHunter and AutoAttack on the full test set, CW on 1,000",
        None,
        (ProtocolAttack("natural"), ProtocolAttack("pgd", params={"steps": 20}), ProtocolAttack("cw", 1000),
         ProtocolAttack("signhunter"), ProtocolAttack("autoattack")),
    ),
    "quick": Protocol(
        "quick", "a first look: natural and PGD-20 on 1,000 test examples, CW, SignHunter and AutoAttack on 500",
        1000,
        (ProtocolAttack("natural"), ProtocolAttack("pgd", params={"steps": 20}), ProtocolAttack("cw", 500),
         ProtocolAttack("signhunter", 500), ProtocolAttack("autoattack", 500)),
    ),
}
PROTOCOL_NAMES: tuple[str, ...] = tuple(PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"protocol: unknown protocol {name!r}; choose from {', '.join(PROTOCOL_NAMES)}")
    return PROTOCOLS[name]


def cw_attack_name(config: ExperimentConfig) -> str:
    """The CW attack of this run: the one its config lists when it lists exactly one, else its preset's."""
    names = {a.name for a in config.eval.attacks}
    if ("cw" in names) != ("cw_opt" in names):
        return "cw" if "cw" in names else "cw_opt"
    return "cw_opt" if config.preset == "reference-code" else "cw"


def protocol_specs(name: str, config: ExperimentConfig) -> list[AttackSpec]:
    """The protocol's attacks for this run, each with its example cap."""
    cw = cw_attack_name(config)
    return [AttackSpec(name=cw if a.name == "cw" else a.name, params=dict(a.params), num_examples=a.num_examples)
            for a in get_protocol(name).attacks]


def protocol_eval(name: str, config: ExperimentConfig) -> dict[str, Any]:
    """The ``eval`` fields the protocol sets (attacks with their caps, the evaluation set's size)."""
    return {"attacks": [s.model_dump() for s in protocol_specs(name, config)],
            "num_examples": get_protocol(name).eval_examples}


def apply_protocol(config: ExperimentConfig, name: str) -> ExperimentConfig:
    """A new, validated config whose ``eval`` runs the protocol (combiners and per-member kept)."""
    data = config.to_dict()
    data["eval"] = {**data["eval"], **protocol_eval(name, config)}
    return ExperimentConfig.from_dict(data)


def _normalised(attacks: list[AttackSpec]) -> list[tuple[str, dict[str, Any], int | None]]:
    return [(a.name, dict(sorted(a.params.items())), a.num_examples) for a in attacks]


def protocol_of(config: ExperimentConfig) -> str:
    """The protocol the config's ``eval`` section runs, or "custom"."""
    for name, proto in PROTOCOLS.items():
        if config.eval.num_examples == proto.eval_examples and \
                _normalised(list(config.eval.attacks)) == _normalised(protocol_specs(name, config)):
            return name
    return CUSTOM


# --- the cost model -----------------------------------------------------------------------------

# Seconds per member forward+backward pass per example, ResNet-20 on a 32x32 image, in the library's default
# evaluation path (eval mode, BatchNorm folded, channels_last on the CPU, PGD with early exit but nothing exiting).
# Measured once with ``OMP_NUM_THREADS=1 python benchmarks/eval_cost.py --cpu-time --threads 1`` (PGD-25 minus PGD-5
# over 20 x 2 members x 256 examples, so fixed costs drop out) on this project's 2-core development CPU, process CPU
# time at one thread: 2.38e-3 s (2026-12-03, other jobs running; 2.94e-3 under heavier load). See docs/benchmarks.md,
# "Evaluation cost model". A worker with two idle cores runs about 1.6x faster, so CPU estimates lean long. No GPU was available to
# measure a CUDA constant: estimates for cuda say so instead of guessing.
SECONDS_PER_MEMBER_PASS: dict[str, float] = {"cpu": 2.4e-3}
FORWARD_SHARE = 1 / 3  # a forward pass costs about a third of a forward+backward pass
AA_ROBUST_SHARE = 0.5  # assumed share of examples still robust after APGD-CE (AutoAttack's later attacks run on those)
AA_TARGETS = 9  # APGD-T / FAB-T target classes (the standard version; fewer with fewer classes)


def _aa_passes(params: dict[str, Any], num_classes: int) -> float:
    version = params.get("version", "standard")
    n_iter = 100 if version == "standard" else int(params.get("n_iter") or 100)
    n_queries = 5000 if version == "standard" else int(params.get("n_queries") or 5000)
    targets = min(AA_TARGETS, num_classes - 1)
    per = {"apgd-ce": n_iter, "apgd-dlr": n_iter, "apgd-t": targets * n_iter, "fab": n_iter * num_classes,
           "fab-t": targets * 2 * n_iter, "square": n_queries * FORWARD_SHARE}
    if version == "standard":
        subs = ["apgd-ce", "apgd-t", "fab-t", "square"]
    elif version == "fast":
        subs = ["apgd-ce", "apgd-t"]
    else:
        subs = list(params.get("attacks") or [])
    if not subs:
        return 0.0
    # The first sub-attack sees every example; the rest only those still robust.
    return per.get(subs[0], n_iter) + AA_ROBUST_SHARE * sum(per.get(s, n_iter) for s in subs[1:])


def passes_per_example(spec: AttackSpec, num_classes: int = 10) -> float:
    """Member forward+backward passes one example costs under ``spec`` (an upper estimate), incl. the final check."""
    from igat.eval_plan import attack_params

    p = attack_params(spec).model_dump()
    check = FORWARD_SHARE  # the final classification of the adversarial example
    if spec.name == "natural":
        return check
    if spec.name in ("pgd", "cw"):
        return p["steps"] + check
    if spec.name == "fgsm":
        return 1 + check
    if spec.name == "cw_opt":
        return p["binary_search_steps"] * p["max_iterations"] + check
    if spec.name == "signhunter":
        return p["max_queries"] * FORWARD_SHARE + check
    if spec.name == "autoattack":
        return _aa_passes(p, num_classes) + check
    return 20 + check  # an attack the model does not know: PGD-20-like


def size_scale(config: ExperimentConfig) -> float:
    """Cost of one member pass relative to ResNet-20 on 32x32 (compute grows with depth, width^2 and pixels)."""
    side = config.data.synthetic_image_size if config.data.dataset == "synthetic" else 32
    return (config.model.depth - 2) / 18 * config.model.width ** 2 * side * side / 1024


def eval_set_total(config: ExperimentConfig) -> int:
    total = config.data.synthetic_test_size if config.data.dataset == "synthetic" else 10_000
    return min(total, config.data.test_subset) if config.data.test_subset else total


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: no measured constant for the device
    member_passes: float  # member forward+backward passes in total (examples x passes per example x members)
    device: str
    by_attack: dict[str, float]  # member passes per attack (every target together)

    def text(self) -> str:
        if self.seconds is None:
            return (f"no time estimate for {self.device}: the seconds per member pass were measured on the CPU "
                    f"only ({self.member_passes:,.0f} member forward+backward passes)")
        return (f"estimated time on {self.device}: {_about(self.seconds)} "
                f"({self.member_passes:,.0f} member forward+backward passes; an estimate, see igat.protocols)")


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours = minutes / 60
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _about(seconds: float) -> str:
    text = format_duration(seconds)
    return text if text.startswith("under") else f"about {text}"


def estimate_rows(rows: Sequence[PlannedRow], config: ExperimentConfig, device: str = "cpu") -> Estimate:
    """The estimated time of computing ``rows`` (:func:`igat.eval_plan.plan_rows`) on ``device`` ("cpu" / "cuda")."""
    classes = config.data.num_classes
    by_attack: dict[str, float] = {}
    for r in rows:
        by_attack[r.attack] = by_attack.get(r.attack, 0.0) + r.num_examples * passes_per_example(r.spec, classes) * r.members
    passes = sum(by_attack.values())
    const = SECONDS_PER_MEMBER_PASS.get(device)
    seconds = None if const is None else passes * const * size_scale(config)
    return Estimate(seconds, passes, device, by_attack)


def estimate_seconds(config: ExperimentConfig, device: str = "cpu",
                     member_attacks: Sequence[str] | None = ("natural", "pgd")) -> Estimate:
    """The estimated time of the config's whole ``eval`` on ``device`` (members get ``member_attacks``, None = all)."""
    from igat.eval_plan import plan_rows

    total = eval_set_total(config)
    ev = config.eval
    n = min(total, ev.num_examples) if ev.num_examples else total
    rows = plan_rows(list(ev.attacks), list(ev.combiners), config.model.num_members, n, ev.per_member, member_attacks)
    return estimate_rows(rows, config, device)


def confidence_note(n: int, accuracy: float = 0.45) -> str:
    """"+-x.x points" of the 95 % interval at ``accuracy`` on ``n`` examples (for help texts)."""
    from igat.stats import half_width, wilson_of_accuracy

    if n <= 0:
        return ""
    return f"+-{100 * half_width(*wilson_of_accuracy(accuracy, n)):.1f} points at {accuracy:.0%}"


__all__ = [
    "CUSTOM", "PROTOCOLS", "PROTOCOL_NAMES", "SECONDS_PER_MEMBER_PASS", "Estimate", "Protocol", "ProtocolAttack",
    "apply_protocol", "confidence_note", "cw_attack_name", "estimate_rows", "estimate_seconds", "format_duration",
    "eval_set_total", "get_protocol", "passes_per_example", "protocol_eval", "protocol_of", "protocol_specs",
    "size_scale",
]
