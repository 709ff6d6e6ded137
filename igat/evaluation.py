"""Robust-accuracy evaluation of an ensemble under each combiner, and of each member.

``evaluate_ensemble`` returns tidy rows, one per (target, combiner, attack): target is
"ensemble" or "member_i". Attacks run in eval mode with frozen parameters, batched, with a seed
(a fresh generator per attack, so adding an attack does not change another's result). The
ensemble is attacked through its combiner's log-output (``Ensemble.as_model``, spec §3.1).

``evaluate_checkpoint`` is the protocol of the paper (Section 6.1, spec §3) for one saved run:
rebuild the ensemble, take the equidistant test examples, evaluate every combiner and attack,
and write ``eval.csv`` / ``eval.json`` (one row per checkpoint x target x combiner x attack)
next to the checkpoint. The CLI ``igat eval`` and the worker's evaluation task call it.

An attack whose parameters have ``num_examples`` (CW: 1,000 by default, as in the paper), or whose
spec has one (the evaluation protocol's cap, :mod:`igat.protocols`), runs on at most that many
equidistant examples of the evaluation set.

Every accuracy comes with its 95 % Wilson interval (``ci_low`` / ``ci_high``, :mod:`igat.stats`).

Resumable: every row carries ``eval_key``, a hash of everything its number depends on (the evaluation
settings -- checkpoint content, data, seed, batch size, device -- plus target, combiner, the attack's
full parameters and its number of examples). ``evaluate_ensemble(done=...)`` reuses stored rows whose key
it plans and computes only the missing ones; ``evaluate_checkpoint`` rewrites ``eval.csv`` / ``eval.json``
(atomically) after every row and resumes from them, so an interrupted ``igat eval`` loses at most the
row in progress, and a changed checkpoint or setting never reuses a stale number.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from igat.attacks import ATTACKS, Attack, build_attack
from igat.config import AttackSpec, ExperimentConfig, with_overrides
from igat.eval_plan import EVAL_CSV, EVAL_JSON, PlannedRow, attack_cap, plan_rows, row_key
from igat.models.ensemble import Ensemble
from igat.models.fused import combined_models
from igat.stats import wilson_of_accuracy

CORE_COLUMNS = ["checkpoint", "method", "variant", "seed", "target", "combiner", "attack", "accuracy", "num_examples",
                "ci_low", "ci_high", "eval_key"]

RowCallback = Callable[["EvalRow"], None]
BatchCallback = Callable[[int], None]  # number of examples just finished
StartCallback = Callable[["PlannedRow", int, int], None]  # row about to be computed, its 1-based index, rows to compute


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
    # 95 % Wilson interval of the accuracy (filled from accuracy and num_examples when not given).
    ci_low: float | None = None
    ci_high: float | None = None
    eval_key: str = ""  # what the number depends on, hashed (row_key); "" for rows made without settings

    def __post_init__(self) -> None:
        if (self.ci_low is None or self.ci_high is None) and self.num_examples > 0:
            self.ci_low, self.ci_high = wilson_of_accuracy(self.accuracy, self.num_examples)

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
    """Accuracy of ``model`` on ``attack``'s examples, plus the attack's merged statistics."""
    correct, merged = attack_correctness(model, attack, x, y, batch_size, seed, device, on_batch)
    return int(correct.sum()) / max(len(x), 1), merged


def attack_correctness(model, attack, x: Tensor, y: Tensor, batch_size: int, seed: int, device: torch.device,
                       on_batch: BatchCallback | None = None) -> tuple[Tensor, dict[str, Any]]:
    """Each example's correctness (bool, CPU) under ``attack``, plus the attack's merged statistics.

    Tensor statistics are concatenated over batches; other values are kept once when every
    batch reported the same value (e.g. the implementation's name), else as a list.
    """
    device = torch.device(device)
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    gen = torch.Generator(device=gen_device).manual_seed(seed)
    correct: list[Tensor] = []
    stats_all: dict[str, list[Any]] = {}
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        res = attack.perturb(model, xb, yb, gen)
        correct.append(_correct(model, res.x_adv, yb).cpu())
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
    return (torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)), merged


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


def attack_subset(attack: Attack, x: Tensor, y: Tensor, spec: AttackSpec | None = None) -> tuple[Tensor, Tensor]:
    """The equidistant subset an attack with a ``num_examples`` cap runs on (all of x otherwise)."""
    from igat.data import equidistant_indices

    cap = attack_cap(attack.params, spec)
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
    settings: str = "",
    done: Mapping[str, EvalRow] | None = None,
    on_start: StartCallback | None = None,
) -> list[EvalRow]:
    """Evaluate every (target, attack); members get ``member_attacks`` (None = all attacks).

    ``engine`` executes the ensemble targets with the member loop, the fused grouped-conv engine, or
    "auto" (fused on CUDA for plain ResNet members; both are exact). ``progress`` is called with each
    finished row; ``on_plan`` once with the total number of examples that will be attacked, and ``on_batch``
    with each finished batch's size (for progress bars over long attacks); ``on_start`` before each row is
    computed. A callback may raise to abort the evaluation (the worker uses this for cancellation).

    Resuming: each row gets ``eval_key`` from ``settings`` (see :func:`row_key`); a row whose key is in
    ``done`` is taken from there and not computed again (no callback sees it; it is in the returned list).
    """
    device = torch.device(device)
    specs = _specs(attacks)
    # Plan (and so build every attack) up front: invalid parameters fail before any work is done.
    plan = plan_rows(specs, combiners, ensemble.num_members, len(x), per_member, member_attacks, settings)
    done = done or {}
    todo = [p for p in plan if p.eval_key not in done]
    built = {id(p.spec): build_attack(p.spec.name, p.spec.params) for p in todo}
    combined = combined_models(ensemble, list(combiners), engine, device) if todo else {}
    rows: list[EvalRow] = []
    started = 0
    with ensemble.frozen(eval_mode=True):
        # inside frozen(): the members as executed now (their BatchNorm-folded copies when fold_bn is on)
        members = list(ensemble.active_members)
        if on_plan is not None:
            on_plan(sum(p.num_examples for p in todo))
        for p in plan:
            if p.eval_key in done:
                rows.append(done[p.eval_key])
                continue
            started += 1
            if on_start is not None:
                on_start(p, started, len(todo))
            model = combined[p.combiner] if p.target == "ensemble" else members[int(p.target.split("_")[1])]
            attack = built[id(p.spec)]
            xs, ys = attack_subset(attack, x, y, p.spec)
            t0 = time.perf_counter()
            acc, stats = attack_accuracy(model, attack, xs, ys, batch_size, seed, device, on_batch)
            extra = {**summarise_stats(stats), "seconds": round(time.perf_counter() - t0, 3)}
            rows.append(EvalRow(p.target, p.combiner, p.attack, acc, len(xs), extra, eval_key=p.eval_key))
            if progress is not None:
                progress(rows[-1])
    return rows


def phase_text(planned: PlannedRow, index: int, total: int) -> str:
    """"evaluating: PGD on ensemble/average, 2 of 5": the row about to run, among the rows left to compute."""
    from igat.reports import ATTACK_LABELS

    where = planned.target if planned.target != "ensemble" else f"ensemble/{planned.combiner}"
    return f"evaluating: {ATTACK_LABELS.get(planned.attack, planned.attack)} on {where}, {index} of {total}"


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


def checkpoint_digest(checkpoint: str | Path) -> str:
    """SHA-256 of the checkpoint file's content (a run directory means its last.pt): a retrained or replaced
    checkpoint never matches results stored for the old one, a copied one does."""
    from igat.training.checkpoint import LAST

    path = Path(checkpoint)
    path = path / LAST if path.is_dir() else path
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluation_settings(checkpoint_hash: str, config: ExperimentConfig, data_source: str, num_eval: int,
                        seed: int, batch_size: int, device: torch.device | str) -> str:
    """What every result of one evaluation depends on besides its own row, as one string for :func:`row_key`.

    The random starts are drawn per batch from a per-attack generator, so the batch size and the device
    (CPU and CUDA generators differ) belong here; the data is named by its test-set fields and source.
    """
    data = config.data
    record = {"checkpoint": checkpoint_hash, "dataset": data.dataset, "source": data_source,
              "test_subset": data.test_subset, "num_eval": int(num_eval), "seed": int(seed),
              "batch_size": int(batch_size), "device": torch.device(device).type}
    if data.dataset == "synthetic":
        record.update(size=data.synthetic_test_size, classes=data.synthetic_classes, side=data.synthetic_image_size)
    return json.dumps(record, sort_keys=True)


@dataclass
class EvalPlan:
    """What ``evaluate_checkpoint`` is about to do, given to ``on_prepared`` before any attack runs."""

    config: ExperimentConfig  # the checkpoint's config with overrides and the protocol applied
    protocol: str  # paper / quick / custom
    rows: list[PlannedRow]
    stored: frozenset[str]  # keys of rows already stored with the same settings (reused, not computed again)
    device: torch.device

    @property
    def todo(self) -> list[PlannedRow]:
        return [r for r in self.rows if r.eval_key not in self.stored]


def stored_rows(directory: str | Path) -> dict[str, EvalRow]:
    """Rows of an earlier (possibly interrupted) evaluation in ``directory``'s eval.json, by ``eval_key``.

    A missing or unreadable file (e.g. written by a version without keys) gives nothing to resume from."""
    path = Path(directory) / EVAL_JSON
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, EvalRow] = {}
    if not isinstance(records, list):
        return out
    names = {f for f in EvalRow.__dataclass_fields__}
    for rec in records:
        if isinstance(rec, dict) and rec.get("eval_key"):
            try:
                out[rec["eval_key"]] = EvalRow(**{k: v for k, v in rec.items() if k in names})
            except TypeError:
                continue
    return out


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
    protocol: str | None = None,
    resume: bool = True,
    on_start: StartCallback | None = None,
    on_prepared: Callable[[EvalPlan], None] | None = None,
) -> list[EvalRow]:
    """Evaluate one checkpoint (file or run directory); defaults come from its config's ``eval``.

    ``overrides`` (``field.path=value``) are applied to the checkpoint's config first (e.g.
    ``data.root=...`` or ``eval.batch_size=512``), then ``protocol`` ("paper" / "quick", see
    :mod:`igat.protocols`; None = the config's ``eval`` as it is) sets the attacks and example counts;
    ``attacks`` then picks among them (natural always runs) and ``num_examples`` resizes the evaluation set.
    Rows carry checkpoint, method, variant and seed so results of many runs concatenate into one tidy
    table. With ``write`` the rows are saved as ``eval.csv`` and ``eval.json`` in ``out_dir`` (default: next
    to the checkpoint) after every row; with ``resume`` the rows already there with the same key (same
    checkpoint content and settings) are reused instead of computed again.
    """
    from igat.data import load_dataset
    from igat.models.combiners import COMBINERS
    from igat.protocols import CUSTOM, apply_protocol, protocol_of
    from igat.training import load_ensemble
    from igat.training.builders import resolve_device

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    ensemble, config, _ = load_ensemble(checkpoint, dev)
    if overrides:
        config = with_overrides(config, list(overrides))
    if protocol is not None:
        config = apply_protocol(config, protocol)
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
    seed = config.seed if seed is None else seed
    batch_size = batch_size or config.eval.batch_size
    per_member = config.eval.per_member if per_member is None else per_member
    out = Path(out_dir) if out_dir is not None else eval_dir(checkpoint)
    settings = evaluation_settings(checkpoint_digest(checkpoint), config, data.source, len(x), seed, batch_size, dev)
    plan = plan_rows(specs, combiners, ensemble.num_members, len(x), per_member, member_attacks, settings)
    planned = {p.eval_key for p in plan}
    done = {k: r for k, r in stored_rows(out).items() if k in planned} if (write and resume) else {}
    # The protocol each row records: the one asked for or the one the config's eval matches; a resized set is custom.
    protocol_label = CUSTOM if num_examples is not None else (protocol or protocol_of(config))
    if on_prepared is not None:
        on_prepared(EvalPlan(config, protocol_label, plan, frozenset(done), dev))
    method, variant = method_and_variant(config)
    results: dict[str, EvalRow] = dict(done)

    def label(row: EvalRow) -> EvalRow:
        row.checkpoint, row.method, row.variant, row.seed = str(Path(checkpoint).resolve()), method, variant, config.seed
        row.extra.setdefault("data_source", data.source)
        row.extra.setdefault("protocol", protocol_label)
        return row

    def store(row: EvalRow) -> None:
        # Written before the caller's callback runs: a callback that aborts (Ctrl-C, cancel) keeps this row.
        results[row.eval_key] = label(row)
        if write:
            write_results([results[p.eval_key] for p in plan if p.eval_key in results], out)
        if progress is not None:
            progress(row)

    rows = evaluate_ensemble(
        ensemble, x, y, combiners, specs, batch_size=batch_size, per_member=per_member, seed=seed, device=dev,
        progress=store, member_attacks=member_attacks, on_batch=on_batch, on_plan=on_plan,
        engine=config.model.engine, settings=settings, done=done, on_start=on_start,
    )
    rows = [label(r) for r in rows]
    if write:
        write_results(rows, out)  # the complete table (also when every row was reused)
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


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: a reader (or a crash) never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(rows: Sequence[EvalRow], directory: str | Path) -> tuple[Path, Path]:
    """Write ``eval.csv`` (flat) and ``eval.json`` (list of row records, extra nested), each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = directory / EVAL_CSV, directory / EVAL_JSON
    _write_atomic(json_path, json.dumps([_json_safe(r.to_dict()) for r in rows], indent=2))
    _write_atomic(csv_path, rows_to_frame(rows).to_csv(index=False))
    return csv_path, json_path


def summary_table(rows: Sequence[EvalRow]) -> str:
    """Accuracy (%) +- the half-width of its 95 % Wilson interval, one line per (target, combiner), one column
    per attack."""
    frame = rows_to_frame(rows)
    if frame.empty:
        return "(no results)"
    order = list(dict.fromkeys(frame["attack"]))
    frame["cell"] = [f"{100 * a:.2f} ±{50 * (hi - lo):.2f}" if _present(lo) and _present(hi) else f"{100 * a:.2f}"
                     for a, lo, hi in zip(frame["accuracy"], frame["ci_low"], frame["ci_high"], strict=True)]
    pivot = frame.pivot_table(index=["target", "combiner"], columns="attack", values="cell", aggfunc="first",
                              sort=False)
    pivot = pivot[[a for a in order if a in pivot.columns]]
    return pivot.to_string(na_rep="-") + "\n(accuracy % ± half-width of the 95 % Wilson interval)"


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


__all__ = [
    "ATTACKS", "EVAL_CSV", "EVAL_JSON", "EvalPlan", "EvalRow", "PlannedRow", "attack_accuracy", "attack_cap",
    "attack_subset", "checkpoint_digest", "default_combiners", "evaluate_checkpoint", "evaluate_ensemble",
    "evaluation_settings", "method_and_variant", "phase_text", "plan_rows", "resolve_attacks", "row_key", "rows_by_key",
    "rows_to_frame", "stored_rows", "summarise_stats", "summary_table", "write_results",
]
