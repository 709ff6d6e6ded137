"""Robust-accuracy evaluation of an ensemble under each combiner, and of each member.

``evaluate_ensemble`` returns tidy rows, one per (target, combiner, attack): target is
"ensemble" or "member_i". Attacks run in eval mode with frozen parameters, batched, with a seed
(a fresh generator per attack, so adding an attack does not change another's result). The
ensemble is attacked through its combiner's log-output (``Ensemble.as_model``, spec §3.1).

``evaluate_checkpoint`` is the protocol of the paper (Section 6.1, spec §3) for one saved run:
rebuild the ensemble, take the equidistant test examples, evaluate every combiner and attack,
and write ``eval.csv`` / ``eval.json`` (one row per checkpoint x target x combiner x attack)
next to the checkpoint. The CLI ``igat eval`` and the worker's evaluation task call it.

An attack whose parameters have ``num_examples`` (CW: 1,000 by default, as in the paper) runs
on at most that many equidistant examples of the evaluation set.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from igat.attacks import ATTACKS, Attack, build_attack
from igat.config import AttackSpec, ExperimentConfig, with_overrides
from igat.models.ensemble import Ensemble
from igat.models.fused import combined_models

EVAL_CSV = "eval.csv"
EVAL_JSON = "eval.json"
CORE_COLUMNS = ["checkpoint", "method", "variant", "seed", "target", "combiner", "attack", "accuracy", "num_examples"]

RowCallback = Callable[["EvalRow"], None]
BatchCallback = Callable[[int], None]  # number of examples just finished


@dataclass
class EvalRow:
    target: str  # "ensemble" or "member_<i>"
    combiner: str  # combiner name; "-" for a single member
    attack: str
    accuracy: float  # in [0, 1]
    num_examples: int
    extra: dict[str, Any] = field(default_factory=dict)
    # Filled by evaluate_checkpoint so rows of several runs form one tidy table.
    checkpoint: str = ""
    method: str = ""  # display name, e.g. "adp" or "iGAT_adp" (ExperimentConfig.display_name)
    variant: str = ""  # iGAT ablation variant (Table 3): full / hard / random / opposite / beta0; "" for baselines
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """One flat record (extra statistics as their own columns) for CSV / DataFrames."""
        record = {k: getattr(self, k) for k in CORE_COLUMNS}
        for k, v in self.extra.items():
            record.setdefault(k, v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v))
        return record


@torch.no_grad()
def _correct(model, x: Tensor, y: Tensor) -> Tensor:
    return model(x).argmax(1) == y


def attack_accuracy(model, attack, x: Tensor, y: Tensor, batch_size: int, seed: int,
                    device: torch.device, on_batch: BatchCallback | None = None) -> tuple[float, dict[str, Any]]:
    """Accuracy of ``model`` on ``attack``'s examples, plus the attack's merged statistics.

    Tensor statistics are concatenated over batches; other values are kept once when every
    batch reported the same value (e.g. the implementation's name), else as a list.
    """
    device = torch.device(device)
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    gen = torch.Generator(device=gen_device).manual_seed(seed)
    correct, stats_all = 0, {}
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        res = attack.perturb(model, xb, yb, gen)
        correct += int(_correct(model, res.x_adv, yb).sum())
        for k, v in res.stats.items():
            stats_all.setdefault(k, []).append(v)
        if on_batch is not None:
            on_batch(len(xb))
    merged: dict[str, Any] = {}
    for k, vs in stats_all.items():
        if isinstance(vs[0], Tensor):
            merged[k] = torch.cat([v.flatten().cpu() for v in vs])
        elif all(v == vs[0] for v in vs):
            merged[k] = vs[0]
        else:
            merged[k] = vs
    return correct / max(len(x), 1), merged


def summarise_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """Reduce tensors of per-example statistics (e.g. queries) to mean, median and max."""
    out: dict[str, Any] = {}
    for k, v in stats.items():
        if isinstance(v, Tensor):
            if v.numel():
                v = v.float()
                out[f"{k}_mean"] = float(v.mean())
                out[f"{k}_median"] = float(v.median())
                out[f"{k}_max"] = float(v.max())
        else:
            out[k] = v
    return out


def attack_subset(attack: Attack, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The equidistant subset an attack with a ``num_examples`` cap runs on (all of x otherwise)."""
    from igat.data import equidistant_indices

    cap = getattr(attack.params, "num_examples", None)
    if cap is None or cap >= len(x):
        return x, y
    idx = equidistant_indices(len(x), cap)
    return x[idx], y[idx]


def _specs(attacks: Sequence[AttackSpec | dict | str]) -> list[AttackSpec]:
    out = []
    for a in attacks:
        if isinstance(a, AttackSpec):
            out.append(a)
        elif isinstance(a, str):
            out.append(AttackSpec(name=a))
        else:
            out.append(AttackSpec(**a))
    return out


def evaluate_ensemble(
    ensemble: Ensemble,
    x: Tensor,
    y: Tensor,
    combiners: Sequence[str] = ("average", "max"),
    attacks: Sequence[AttackSpec | dict | str] = (AttackSpec(name="natural"), AttackSpec(name="pgd")),
    batch_size: int = 256,
    per_member: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: RowCallback | None = None,
    member_attacks: Sequence[str] | None = None,
    on_batch: BatchCallback | None = None,
    on_plan: Callable[[int], None] | None = None,
    engine: str = "loop",
) -> list[EvalRow]:
    """Evaluate every (target, attack); members get ``member_attacks`` (None = all attacks).

    ``engine`` executes the ensemble targets with the member loop, the fused grouped-conv engine, or
    "auto" (fused on CUDA for plain ResNet members; both are exact). ``progress`` is called with each finished row; ``on_plan`` once with the total number of
    examples that will be attacked, and ``on_batch`` with each finished batch's size (for
    progress bars over long attacks). A callback may raise to abort the evaluation (the
    worker uses this for cancellation).
    """
    device = torch.device(device)
    specs = _specs(attacks)
    # Build every attack once up front: invalid parameters fail before any work is done.
    built: list[tuple[AttackSpec, Attack]] = [(s, build_attack(s.name, s.params)) for s in specs]
    combined = combined_models(ensemble, list(combiners), engine, device)
    rows: list[EvalRow] = []
    with ensemble.frozen(eval_mode=True):
        targets: list[tuple[str, str, Any, list[tuple[AttackSpec, Attack]]]] = [
            ("ensemble", c, combined[c], built) for c in combiners
        ]
        if per_member:
            m_built = built if member_attacks is None else [b for b in built if b[0].name in set(member_attacks)]
            # inside frozen(): the members as executed now (their BatchNorm-folded copies when fold_bn is on)
            targets += [(f"member_{i}", "-", m, m_built) for i, m in enumerate(ensemble.active_members)]
        if on_plan is not None:
            on_plan(sum(len(attack_subset(attack, x, y)[0]) for *_, pairs in targets for _, attack in pairs))
        for target, combiner, model, pairs in targets:
            for spec, attack in pairs:
                xs, ys = attack_subset(attack, x, y)
                t0 = time.perf_counter()
                acc, stats = attack_accuracy(model, attack, xs, ys, batch_size, seed, device, on_batch)
                extra = {**summarise_stats(stats), "seconds": round(time.perf_counter() - t0, 3)}
                rows.append(EvalRow(target, combiner, spec.name, acc, len(xs), extra))
                if progress is not None:
                    progress(rows[-1])
    return rows


def rows_by_key(rows: Sequence[EvalRow]) -> dict[tuple[str, str, str], float]:
    return {(r.target, r.combiner, r.attack): r.accuracy for r in rows}


# --- the checkpoint protocol ------------------------------------------------------------------

def method_and_variant(config: ExperimentConfig) -> tuple[str, str]:
    """Display name (``adp`` / ``iGAT_adp``) and the iGAT ablation variant (Table 3).

    Variant: ``beta0`` when the regulariser is off, else the distributing rule, with the
    paper's soft rule called ``full``; baselines have no variant ("").
    """
    if not config.igat.enabled:
        return config.display_name, ""
    if config.igat.beta == 0:
        return config.display_name, "beta0"
    return config.display_name, "full" if config.igat.rule == "soft" else config.igat.rule


def default_combiners(config: ExperimentConfig) -> list[str]:
    """The config's eval combiners, plus SoE's selection combiner for SoE ensembles when registered."""
    from igat.models.combiners import COMBINERS

    combiners = list(config.eval.combiners)
    if config.defense.name == "soe" and "soe" in COMBINERS and "soe" not in combiners:
        combiners.append("soe")
    return combiners


def resolve_attacks(names: Sequence[str] | None, config: ExperimentConfig) -> list[AttackSpec]:
    """Attack specs for ``names`` (None = the config's eval.attacks), natural always first.

    A name listed in the config's ``eval.attacks`` takes its parameters from there, so
    ``--attacks pgd`` runs the configured PGD; other names run with their defaults.
    """
    configured = {s.name: s for s in config.eval.attacks}
    if names is None:
        specs = list(config.eval.attacks)
    else:
        unknown = [n for n in names if n not in ATTACKS]
        if unknown:
            raise ValueError(f"attacks: unknown attack(s) {', '.join(unknown)}; choose from {', '.join(ATTACKS.names())}")
        specs = [configured.get(n, AttackSpec(name=n)) for n in dict.fromkeys(names)]
    specs = [s for s in specs if s.name != "natural"]
    return [configured.get("natural", AttackSpec(name="natural")), *specs]


def eval_dir(checkpoint: str | Path) -> Path:
    path = Path(checkpoint)
    return path if path.is_dir() else path.parent


def evaluate_checkpoint(
    checkpoint: str | Path,
    combiners: Sequence[str] | None = None,
    attacks: Sequence[str] | None = None,
    num_examples: int | None = None,
    device: str | torch.device = "auto",
    overrides: Sequence[str] = (),
    batch_size: int | None = None,
    per_member: bool | None = None,
    member_attacks: Sequence[str] | None = ("natural", "pgd"),
    seed: int | None = None,
    progress: RowCallback | None = None,
    on_batch: BatchCallback | None = None,
    on_plan: Callable[[int], None] | None = None,
    write: bool = True,
    out_dir: str | Path | None = None,
) -> list[EvalRow]:
    """Evaluate one checkpoint (file or run directory); defaults come from its config's ``eval``.

    ``overrides`` (``field.path=value``) are applied to the checkpoint's config first (e.g.
    ``data.root=...`` or ``eval.batch_size=512``). Rows carry checkpoint, method, variant and
    seed so results of many runs concatenate into one tidy table. With ``write`` the rows are
    saved as ``eval.csv`` and ``eval.json`` in ``out_dir`` (default: next to the checkpoint).
    """
    from igat.data import load_dataset
    from igat.models.combiners import COMBINERS
    from igat.training import load_ensemble
    from igat.training.builders import resolve_device

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    ensemble, config, _ = load_ensemble(checkpoint, dev)
    if overrides:
        config = with_overrides(config, list(overrides))
    combiners = list(combiners) if combiners else default_combiners(config)
    bad = [c for c in combiners if c not in COMBINERS]
    if bad:
        raise ValueError(f"combiners: unknown combiner(s) {', '.join(bad)}; choose from {', '.join(COMBINERS.names())}")
    specs = resolve_attacks(attacks, config)
    n = num_examples if num_examples is not None else config.eval.num_examples
    if n is not None and n < 1:
        raise ValueError(f"num_examples must be >= 1 (or None for the whole test set), got {n}")
    data = load_dataset(config.data, config.seed)
    x, y = data.test_tensors(n)
    rows = evaluate_ensemble(
        ensemble, x, y, combiners, specs,
        batch_size=batch_size or config.eval.batch_size,
        per_member=config.eval.per_member if per_member is None else per_member,
        seed=config.seed if seed is None else seed,
        device=dev, progress=progress, member_attacks=member_attacks, on_batch=on_batch, on_plan=on_plan,
        engine=config.model.engine,
    )
    method, variant = method_and_variant(config)
    for r in rows:
        r.checkpoint, r.method, r.variant, r.seed = str(Path(checkpoint).resolve()), method, variant, config.seed
        r.extra.setdefault("data_source", data.source)
    if write:
        write_results(rows, out_dir or eval_dir(checkpoint))
    return rows


def rows_to_frame(rows: Sequence[EvalRow]):
    """The tidy table (pandas DataFrame) of rows: core columns first, then extra statistics."""
    import pandas as pd

    frame = pd.DataFrame([r.flat() for r in rows])
    if frame.empty:
        return pd.DataFrame(columns=CORE_COLUMNS)
    return frame[CORE_COLUMNS + [c for c in frame.columns if c not in CORE_COLUMNS]]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_results(rows: Sequence[EvalRow], directory: str | Path) -> tuple[Path, Path]:
    """Write ``eval.csv`` (flat) and ``eval.json`` (list of row records, extra nested)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = directory / EVAL_CSV, directory / EVAL_JSON
    rows_to_frame(rows).to_csv(csv_path, index=False)
    json_path.write_text(json.dumps([_json_safe(r.to_dict()) for r in rows], indent=2))
    return csv_path, json_path


def summary_table(rows: Sequence[EvalRow]) -> str:
    """Accuracy (%) with one line per (target, combiner) and one column per attack."""
    frame = rows_to_frame(rows)
    if frame.empty:
        return "(no results)"
    order = list(dict.fromkeys(frame["attack"]))
    pivot = frame.pivot_table(index=["target", "combiner"], columns="attack", values="accuracy", sort=False)
    pivot = (pivot[[a for a in order if a in pivot.columns]] * 100).round(2)
    return pivot.to_string(na_rep="-")


__all__ = [
    "ATTACKS", "EVAL_CSV", "EVAL_JSON", "EvalRow", "attack_accuracy", "attack_subset", "default_combiners",
    "evaluate_checkpoint", "evaluate_ensemble", "method_and_variant", "resolve_attacks", "rows_by_key",
    "rows_to_frame", "summarise_stats", "summary_table", "write_results",
]
