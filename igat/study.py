"""``igat study``: the paired experiment that answers "does iGAT make this defense more robust?".

For a defense D and seeds s1..sK, per seed:

1. **Base.** D's recipe (``Defense.recommended`` plus the scale), warm-started where the recipe says so
   (``Defense.warm_start_from``: DVERGE starts from a standard-trained ensemble, spec §2.4) or the scale
   does (``cpu-mini``: every base, so that it can plateau within the CPU budget), trained until
   its natural accuracy has plateaued (gain < ``plateau_tol`` over the last ``plateau_window`` epochs, on
   the per-epoch test probe) or ``base_max_epochs`` is reached.
2. **Arms**, all from that base checkpoint, the same number of epochs, the same optimiser and schedule,
   the same seed (hence the same data order): ``continued`` = D's own loss (its adversarial training
   included), ``igat`` = the iGAT_D fine-tune (``paper`` preset: the base's non-adversarial loss +
   distributed global examples + L_R), and optionally the Table 3 ablations (``opposite``, ``random``,
   ``hard``, ``beta0``). The two arms differ only in the loss.
3. **Evaluation** of base and arms on the same test images with the same attacks and attack seeds, every
   combiner, keeping each example's correctness so differences can be paired.

The analysis (:func:`analyse`) gives per cell (attack x combiner) the mean +- std over seeds of every arm
and the paired difference igat - continued with two 95 % intervals: over seeds (Student t, the verdict's
basis: it holds training randomness) and over examples pooled across seeds (the evaluation noise only).
Verdict: "better" / "worse" when the seed interval excludes 0, else "not distinguishable".

Everything is resumable: the Trainer resumes each run from its own checkpoint, finished evaluations are
kept in ``study.json`` under the study folder, and a rerun continues from the first missing piece.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from igat.config import STEP_2_255, AttackSpec, ConfigError, ExperimentConfig, StrictModel, deep_merge, with_overrides
from igat.stats import t975

STATE_FILE = "study.json"
REPORT_FILE = "study.md"
ABLATION_ARMS = ("opposite", "random", "hard", "beta0")
ARMS = ("continued", "igat", *ABLATION_ARMS)


# --- scales -------------------------------------------------------------------------------------------
# cpu-mini: chosen by measurement on the 2-core CPU (docs/reproduction.md): 3 ResNet-8 members (78k
# parameters each, ~3x cheaper than ResNet-20), 5,000 class-balanced training images, a 3-step training
# attack (eps 8/255, step 3/255) for the base's adversarial training and iGAT's global examples alike, and
# PGD-20 at eps 8/255 on 500 equidistant test images for evaluation. Every base starts from a standard-
# trained ensemble (``warm_start``, what the DVERGE recipe does anyway): ADP with PGD training from scratch
# reached only 26 % / 29 % natural accuracy after 1 / 2 epochs (2 min each), too slow to plateau here.
_MINI_ATTACK = {"steps": 3, "step_size": 3 / 255}
SCALES: dict[str, dict[str, Any]] = {
    "cpu-mini": {
        "config": {
            "model": {"num_members": 3, "depth": 8, "width": 1},
            "data": {"train_subset": 5000},
            "train": {"batch_size": 128, "eval_examples": 1000, "eval_pgd_steps": 0, "log_every": 10},
        },
        "defense_attack": {"adv_steps": 3, "adv_step_size": 3 / 255},
        "igat_attack": _MINI_ATTACK,
        "warm_start": "standard", "pretrain_epochs": 8, "base_min_epochs": 3, "base_max_epochs": 6,
        "plateau_window": 2, "plateau_tol": 0.01, "arm_epochs": 2, "arm_lr": 0.01, "eval_examples": 500,
        "eval_attacks": [{"name": "natural"}, {"name": "pgd", "params": {"steps": 20}}],
    },
    "paper": {
        "config": {"model": {"num_members": 8, "depth": 20, "width": 1}, "train": {"eval_examples": 1000}},
        "defense_attack": {},
        "igat_attack": {"steps": 20, "step_size": STEP_2_255},
        "warm_start": None, "pretrain_epochs": 200, "base_min_epochs": 200, "base_max_epochs": 200, "plateau_window": 10,
        "plateau_tol": 0.01, "arm_epochs": 100, "arm_lr": None, "eval_examples": None,
        "eval_attacks": [{"name": "natural"}, {"name": "pgd", "params": {"steps": 20}},
                         {"name": "cw", "params": {"num_examples": 1000}}, {"name": "signhunter"},
                         {"name": "autoattack"}],
    },
}


class StudySpec(StrictModel):
    """What to study; scale defaults fill every field left as None."""

    defense: str = "adp"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    scale: Literal["cpu-mini", "paper"] = "cpu-mini"
    dataset: Literal["cifar10", "cifar100", "synthetic"] = "cifar10"
    arms: list[str] = Field(default_factory=lambda: ["continued", "igat"])
    device: Literal["auto", "cpu", "cuda"] = "auto"
    combiners: list[str] = Field(default_factory=lambda: ["average", "max"])
    base_min_epochs: int | None = Field(None, ge=1, le=100000)
    base_max_epochs: int | None = Field(None, ge=1, le=100000)
    pretrain_epochs: int | None = Field(None, ge=1, le=100000)
    plateau_window: int | None = Field(None, ge=1, le=1000)
    plateau_tol: float | None = Field(None, ge=0.0, le=1.0)
    arm_epochs: int | None = Field(None, ge=1, le=100000)
    eval_examples: int | None = Field(None, ge=1, le=100000, description="test images (None at paper scale: all)")
    eval_attacks: list[AttackSpec] | None = None
    overrides: list[str] = Field(default_factory=list, description="field=value applied to every run's config")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(v) > 20 or len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError("give 1 to 20 distinct seeds >= 0")
        return v

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ARMS]
        if bad or "continued" not in v or "igat" not in v or len(set(v)) != len(v):
            raise ValueError(f"arms must include continued and igat, without repeats, from {', '.join(ARMS)}; got {v}")
        return v

    def resolved(self, key: str) -> Any:
        value = getattr(self, key)
        return SCALES[self.scale][key] if value is None else value

    def attacks(self) -> list[AttackSpec]:
        specs = self.eval_attacks if self.eval_attacks is not None else SCALES[self.scale]["eval_attacks"]
        return [s if isinstance(s, AttackSpec) else AttackSpec(**s) for s in specs]


# --- the configs ---------------------------------------------------------------------------------------
def recipe_config(defense: str, spec: StudySpec, seed: int) -> ExperimentConfig:
    """D's recommended recipe at the study's scale (no iGAT)."""
    from igat.specs.defenses import DEFENSE_SPECS

    cls = DEFENSE_SPECS.get(defense)
    scale = SCALES[spec.scale]
    data = ExperimentConfig().to_dict()
    data["defense"] = {"name": defense, "params": {}}
    deep_merge(data, cls.recommended)
    deep_merge(data, scale["config"])
    params = cls.Params.model_fields
    data["defense"]["params"].update({k: v for k, v in scale["defense_attack"].items() if k in params})
    data["data"]["dataset"] = spec.dataset
    data.update(name=f"study-{spec.defense}-{defense}", seed=seed, device=spec.device)
    data["eval"] = {"combiners": list(spec.combiners), "attacks": [a.model_dump() for a in spec.attacks()],
                    "num_examples": spec.resolved("eval_examples"), "per_member": False}
    cfg = ExperimentConfig.from_dict(data)
    return with_overrides(cfg, spec.overrides) if spec.overrides else cfg


def arm_config(arm: str, base: ExperimentConfig, spec: StudySpec, base_checkpoint: str) -> ExperimentConfig:
    """One arm's config: the base's data/model/seed, warm-started from ``base_checkpoint``; the same
    optimiser and schedule for every arm (iGAT's paper schedule, the lr ladder at the study scale)."""
    from igat.presets import apply_preset, igat_defaults

    epochs = spec.resolved("arm_epochs")
    schedule = igat_defaults(base.defense.name, base.data.dataset, epochs)["optim"]
    if SCALES[spec.scale]["arm_lr"] is not None:
        schedule["lr"] = SCALES[spec.scale]["arm_lr"]
    data = base.to_dict()
    data["name"] = f"{base.name}-{arm}"
    data["optim"] = {**data["optim"], **schedule, "per_member": base.optim.per_member}
    data["train"].update(epochs=epochs, init_checkpoint=base_checkpoint)
    if arm == "continued":
        return ExperimentConfig.from_dict(data)
    tuned = apply_preset(ExperimentConfig.from_dict(data), "paper")
    over = [f"train.batch_size={base.train.batch_size}", f"optim.lr={schedule['lr']}",
            f"optim.milestones={json.dumps(schedule['milestones'])}", f"optim.per_member={str(base.optim.per_member).lower()}"]
    for k, v in SCALES[spec.scale]["igat_attack"].items():
        over.append(f"igat.attack.{k}={v}")
    tuned = with_overrides(tuned, over + list(spec.overrides))
    if arm in ABLATION_ARMS:
        from igat.ablation import ablation_variants

        tuned = dict(ablation_variants(tuned))[arm]
    return tuned


# --- state ---------------------------------------------------------------------------------------------
@dataclass
class StudyPaths:
    root: Path

    def run(self, seed: int, label: str) -> Path:
        return self.root / f"seed{seed}" / label

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE


def _load_state(paths: StudyPaths, spec: StudySpec) -> dict[str, Any]:
    """The study's state in its folder, or a new one. The same settings resume it; the same settings with more
    seeds or more arms (the old ones kept, first and in their order) extend it: what is finished is kept (the
    bases too, so new arms start from the same base checkpoints), the rest runs."""
    wanted = spec.model_dump(mode="json")
    if not paths.state.exists():
        return {"spec": wanted, "seeds": {}, "started": time.time(), "seconds": {}}
    state = json.loads(paths.state.read_text())
    held = state.get("spec") or {}
    if held == wanted:
        return state
    old_seeds, old_arms = list(held.get("seeds") or []), list(held.get("arms") or [])
    same_settings = {**held, "seeds": None, "arms": None} == {**wanted, "seeds": None, "arms": None}
    if same_settings and wanted["seeds"][:len(old_seeds)] == old_seeds and wanted["arms"][:len(old_arms)] == old_arms:
        state["spec"] = wanted  # more seeds or arms of the same study: the analysis covers them all
        return state
    differing = sorted(k for k in set(held) | set(wanted) if held.get(k) != wanted.get(k))
    raise ConfigError([("study", f"{paths.root} holds a different study ({paths.state}; differs in "
                                 f"{', '.join(differing)}); use another output folder, or the same settings to "
                                 f"resume it (seeds may be added after {old_seeds}, arms after {old_arms})")])


def _save_state(paths: StudyPaths, state: dict[str, Any]) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(paths.state)


# --- running -------------------------------------------------------------------------------------------
Progress = Callable[[str], None]
CallbackFactory = Callable[[str, ExperimentConfig], list]


def plateaued(acc: Sequence[float], window: int, tol: float) -> bool:
    """Natural accuracy gained less than ``tol`` over the last ``window`` epochs."""
    if len(acc) <= window:
        return False
    return acc[-1] - max(acc[: len(acc) - window]) < tol


def _train(cfg: ExperimentConfig, out: Path, dataset, callbacks: list, device) -> tuple[str, list[dict[str, float]]]:
    from igat.training import HistoryCallback, Trainer, load_checkpoint

    def record(epoch: int, metrics: dict[str, Any]) -> dict[str, float]:
        return {"epoch": epoch, **{k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}}

    history = HistoryCallback()
    trainer = Trainer(cfg, [history, *callbacks], output_dir=out, device=device, dataset=dataset)
    result = trainer.fit()
    epochs = [record(epoch, metrics) for epoch, metrics in history.epochs]
    if not epochs:  # resumed at its last epoch (a crash after the checkpoint, before the study's record)
        ckpt = load_checkpoint(result.checkpoint)
        epochs.append(record(int(ckpt["epoch"]), ckpt.get("metrics", {})))
    return result.checkpoint, epochs


def evaluate_per_example(checkpoint: str, spec: StudySpec, dataset, device) -> dict[str, dict[str, Any]]:
    """Per (attack, combiner): accuracy, n and each example's correctness ("0"/"1" string)."""
    import torch

    from igat.attacks import build_attack
    from igat.evaluation import attack_correctness, attack_subset
    from igat.models.fused import combined_models
    from igat.training import load_ensemble

    ensemble, config, _ = load_ensemble(checkpoint, device)
    x, y = dataset.test_tensors(spec.resolved("eval_examples"))
    out: dict[str, dict[str, Any]] = {}
    models = combined_models(ensemble, list(spec.combiners), config.model.engine, torch.device(device))
    with ensemble.frozen(eval_mode=True):
        for a_idx, attack_spec in enumerate(spec.attacks()):
            attack = build_attack(attack_spec.name, attack_spec.params)
            xs, ys = attack_subset(attack, x, y)
            for comb in spec.combiners:
                t0 = time.perf_counter()
                # the same attack seed for every model, so the arms are compared on identical attacks
                c, _ = attack_correctness(models[comb], attack, xs, ys, 256, 10_000 + a_idx, torch.device(device))
                out[f"{attack_spec.name}|{comb}"] = {
                    "attack": attack_spec.name, "combiner": comb, "accuracy": float(c.float().mean()), "n": len(c),
                    "correct": "".join("1" if v else "0" for v in c.tolist()),
                    "seconds": round(time.perf_counter() - t0, 2)}
    return out


def warm_start_of(spec: StudySpec) -> str | None:
    """The defense whose ensemble the base starts from: the recipe's (DVERGE), else the scale's (cpu-mini);
    never a defense from itself."""
    from igat.specs.defenses import DEFENSE_SPECS

    warm = DEFENSE_SPECS.get(spec.defense).warm_start_from or SCALES[spec.scale]["warm_start"]
    return None if warm == spec.defense else warm


# Child-run labels are "seed{S}/pretrain", "seed{S}/base" and "seed{S}/<arm>"; progress messages start with
# "seed {S}:". The platform's phase text and child runs depend on both: keep them stable.
def run_study(spec: StudySpec, root: str | Path, progress: Progress | None = None,
              callbacks_for: CallbackFactory | None = None) -> dict[str, Any]:
    """Run (or resume) the study in ``root``; returns the analysis (also written to study.json / study.md)."""
    from igat.data import load_dataset
    from igat.training.builders import resolve_device

    say = progress or (lambda _m: None)
    cbs = callbacks_for or (lambda _label, _cfg: [])
    paths = StudyPaths(Path(root))
    state = _load_state(paths, spec)
    _save_state(paths, state)
    warm = warm_start_of(spec)
    for seed in spec.seeds:
        st = state["seeds"].setdefault(str(seed), {"arms": {}, "eval": {}})
        base_cfg = recipe_config(spec.defense, spec, seed)
        device = resolve_device(base_cfg.device)
        dataset = load_dataset(base_cfg.data, seed)
        t0 = time.time()
        if warm and "pretrain" not in st:
            pre = recipe_config(warm, spec, seed)
            pre = with_overrides(pre, [f"train.epochs={spec.resolved('pretrain_epochs')}", "eval.attacks=[]"])
            say(f"seed {seed}: pre-training the {warm} ensemble the {spec.defense} recipe starts from")
            ckpt, hist = _train(pre, paths.run(seed, "pretrain"), dataset, cbs(f"seed{seed}/pretrain", pre), device)
            st["pretrain"] = {"checkpoint": ckpt, "history": hist, "seconds": time.time() - t0}
            _save_state(paths, state)
        if warm:
            base_cfg = with_overrides(base_cfg, [f"train.init_checkpoint={st['pretrain']['checkpoint']}"])
        base = st.setdefault("base", {"history": [], "done": False})
        window, tol = spec.resolved("plateau_window"), spec.resolved("plateau_tol")
        lo, hi = spec.resolved("base_min_epochs"), spec.resolved("base_max_epochs")
        while not base["done"]:
            epoch = len(base["history"]) + 1
            cfg = with_overrides(base_cfg, [f"train.epochs={epoch}"])
            say(f"seed {seed}: base {spec.defense} epoch {epoch} (max {hi})")
            t1 = time.time()
            ckpt, hist = _train(cfg, paths.run(seed, "base"), dataset, cbs(f"seed{seed}/base", cfg), device)
            base["history"].extend(hist)
            base["checkpoint"] = ckpt
            base["seconds"] = base.get("seconds", 0.0) + time.time() - t1
            acc = [h.get("test_nat_acc_average", 0.0) for h in base["history"]]
            base["plateaued"] = plateaued(acc, window, tol)
            base["done"] = len(acc) >= hi or (len(acc) >= lo and base["plateaued"])
            _save_state(paths, state)
        base_used = with_overrides(base_cfg, [f"train.epochs={len(base['history'])}"])
        for arm in spec.arms:
            if st["arms"].get(arm, {}).get("done"):
                continue
            cfg = arm_config(arm, base_used, spec, base["checkpoint"])
            say(f"seed {seed}: arm {arm} ({cfg.display_name}, {cfg.train.epochs} epochs from the base)")
            t1 = time.time()
            ckpt, hist = _train(cfg, paths.run(seed, arm), dataset, cbs(f"seed{seed}/{arm}", cfg), device)
            st["arms"][arm] = {"checkpoint": ckpt, "history": hist, "done": True, "seconds": time.time() - t1,
                               "config": cfg.to_dict()}
            _save_state(paths, state)
        for label in ("base", *spec.arms):
            if label in st["eval"]:
                continue
            ckpt = base["checkpoint"] if label == "base" else st["arms"][label]["checkpoint"]
            say(f"seed {seed}: evaluating {label}")
            t1 = time.time()
            st["eval"][label] = evaluate_per_example(ckpt, spec, dataset, device)
            st["eval"][label]["_seconds"] = time.time() - t1
            _save_state(paths, state)
    analysis = analyse(state)
    state["analysis"] = analysis
    state["finished"] = time.time()
    _save_state(paths, state)
    (paths.root / REPORT_FILE).write_text(format_report(analysis))
    return analysis


# --- analysis ------------------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def paired_difference(per_seed: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Paired igat - continued from per-seed correctness strings (a, b): seed-level t interval and a
    pooled example-level normal interval."""
    diffs_seed = []
    d_examples: list[int] = []
    for a, b in per_seed:
        da = [int(cb) - int(ca) for ca, cb in zip(a, b, strict=True)]
        d_examples.extend(da)
        diffs_seed.append(sum(da) / len(da))
    k = len(diffs_seed)
    mean, sd = _mean_std(diffs_seed)
    half = t975(k - 1) * sd / math.sqrt(k) if k > 1 else math.inf
    n = len(d_examples)
    m_ex = sum(d_examples) / n
    var_ex = sum((d - m_ex) ** 2 for d in d_examples) / (n - 1) if n > 1 else 0.0
    half_ex = 1.96 * math.sqrt(var_ex / n) if n > 1 else math.inf
    lo, hi = mean - half, mean + half
    verdict = "better" if lo > 0 else "worse" if hi < 0 else "not distinguishable"
    return {"mean": mean, "seed_ci": [lo, hi], "per_seed": diffs_seed, "seeds": k,
            "example_ci": [m_ex - half_ex, m_ex + half_ex], "examples": n, "verdict": verdict}


def analyse(state: dict[str, Any]) -> dict[str, Any]:
    spec = StudySpec.model_validate(state["spec"])
    seeds = [str(s) for s in spec.seeds if str(s) in state["seeds"] and state["seeds"][str(s)].get("eval")]
    labels = ["base", *spec.arms]
    cells: list[dict[str, Any]] = []
    keys = sorted({k for s in seeds for k in state["seeds"][s]["eval"].get("base", {}) if not k.startswith("_")},
                  key=lambda k: ([a.name for a in spec.attacks()].index(k.split("|")[0]), k.split("|")[1]))
    for key in keys:
        attack, comb = key.split("|")
        row: dict[str, Any] = {"attack": attack, "combiner": comb, "arms": {}}
        for label in labels:
            accs = [state["seeds"][s]["eval"][label][key]["accuracy"] for s in seeds if label in state["seeds"][s]["eval"]]
            if accs:
                m, sd = _mean_std(accs)
                n = state["seeds"][seeds[0]]["eval"][label][key]["n"]
                row["arms"][label] = {"mean": m, "std": sd, "per_seed": accs, "n": n}

        def paired(a: str, b: str, key: str = key) -> dict[str, Any] | None:
            """b - a over the seeds where both arms are evaluated (None: no such seed yet)."""
            pairs = [(state["seeds"][s]["eval"][a][key]["correct"], state["seeds"][s]["eval"][b][key]["correct"])
                     for s in seeds if {a, b} <= set(state["seeds"][s]["eval"])]
            return paired_difference(pairs) if pairs else None

        if (d := paired("continued", "igat")) is not None:
            row["igat_minus_continued"] = d
        # Table 3: each ablation variant against iGAT with the soft rule (the igat arm), from the same base per seed
        for arm in (a for a in spec.arms if a in ABLATION_ARMS):
            if (d := paired("igat", arm)) is not None:
                row.setdefault("ablations", {})[arm] = d  # arm - igat
        cells.append(row)
    base_info = {s: {"epochs": len(state["seeds"][s]["base"]["history"]),
                     "plateaued": state["seeds"][s]["base"].get("plateaued"),
                     "nat_acc_history": [h.get("test_nat_acc_average") for h in state["seeds"][s]["base"]["history"]]}
                 for s in seeds}
    seconds = {s: {"pretrain": state["seeds"][s].get("pretrain", {}).get("seconds", 0.0),
                   "base": state["seeds"][s]["base"].get("seconds", 0.0),
                   **{a: state["seeds"][s]["arms"].get(a, {}).get("seconds", 0.0) for a in spec.arms},
                   "eval": sum(v.get("_seconds", 0.0) for v in state["seeds"][s]["eval"].values())} for s in seeds}
    return {"spec": state["spec"], "seeds_done": [int(s) for s in seeds], "cells": cells, "bases": base_info,
            "seconds": seconds}


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def _mean_pm_std(arm: dict[str, Any] | None) -> str:
    return f"{_pct(arm['mean'])} +- {_pct(arm['std'])}" if arm else "-"


def _difference_cells(d: dict[str, Any] | None) -> list[str]:
    """A paired difference's four report cells: points, seed interval, example interval, verdict."""
    if not d:
        return ["-"] * 4
    return [f"{100 * d['mean']:+.2f}", f"[{100 * d['seed_ci'][0]:+.2f}, {100 * d['seed_ci'][1]:+.2f}]",
            f"[{100 * d['example_ci'][0]:+.2f}, {100 * d['example_ci'][1]:+.2f}]", d["verdict"]]


def format_report(analysis: dict[str, Any]) -> str:
    spec = analysis["spec"]
    arms = ["base", *spec["arms"]]
    lines = [f"# Study: does iGAT help {spec['defense']}? ({spec['scale']}, {spec['dataset']}, "
             f"seeds {', '.join(map(str, analysis['seeds_done']))})", "",
             "Accuracy in %, mean +- std over seeds; diff = igat - continued (paired), 95 % intervals over seeds "
             "(t) and over examples (pooled).", "",
             "| attack | combiner | n | " + " | ".join(arms) + " | diff | seed CI | example CI | verdict |",
             "|---|---|---|" + "---|" * len(arms) + "---|---|---|---|"]
    for c in analysis["cells"]:
        vals = [_mean_pm_std(c["arms"].get(a)) for a in arms]
        n = next(iter(c["arms"].values()))["n"] if c["arms"] else 0
        dtxt = _difference_cells(c.get("igat_minus_continued"))
        lines.append(f"| {c['attack']} | {c['combiner']} | {n} | " + " | ".join(vals) + " | " + " | ".join(dtxt) + " |")
    ablations = [a for a in spec["arms"] if a in ABLATION_ARMS]
    if ablations:
        lines += ["", "Ablations of iGAT (the paper's Table 3): each variant - igat (soft rule), paired per seed and "
                  "image, 95 % intervals over seeds (t) and over examples (pooled); better = the variant is more "
                  "accurate.", "",
                  "| attack | combiner | variant | variant | igat | diff | seed CI | example CI | verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in analysis["cells"]:
            for arm, d in (c.get("ablations") or {}).items():
                cols = [_mean_pm_std(c["arms"].get(arm)), _mean_pm_std(c["arms"].get("igat")), *_difference_cells(d)]
                lines.append(f"| {c['attack']} | {c['combiner']} | {arm} | " + " | ".join(cols) + " |")
    lines += ["", "Bases (natural accuracy of the average combiner on the per-epoch probe, by epoch):"]
    for s, b in analysis["bases"].items():
        hist = ", ".join(_pct(v) for v in b["nat_acc_history"] if v is not None)
        lines.append(f"- seed {s}: {b['epochs']} epochs, plateaued: {b['plateaued']}; {hist}")
    lines += ["", "Wall time (s): " + "; ".join(
        f"seed {s}: " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()) for s, t in analysis["seconds"].items())]
    return "\n".join(lines) + "\n"


__all__ = ["SCALES", "StudySpec", "analyse", "arm_config", "format_report", "paired_difference", "plateaued",
           "recipe_config", "run_study"]
