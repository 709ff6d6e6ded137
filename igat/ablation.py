"""Table 3 ablation (paper §6.3, spec §1.4 / §4.1): iGAT's distributing rule and L_R, one base ensemble.

Variants, in the paper's column order: opposite distributing (reversed roulette, spec §1.4), random
distributing (uniform), hard distributing (eq. 13), beta = 0 (soft rule, L_R removed) and the full iGAT
(soft rule, eq. 14). Everything else is the given fine-tuning config: every variant starts from the same
base checkpoint, with the same seeds and the same data, so the table isolates the rule and L_R.

:func:`ablation_variants` gives the configs (the platform submits them as a group of runs);
:func:`run_ablation` trains them here (training the base first when no checkpoint is given), evaluates
natural and PGD accuracy of one combiner with :func:`igat.evaluation.evaluate_ensemble`, and
:func:`format_table` prints the Table 3 layout (mean +- std over seeds).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from igat.ablation_variants import TITLES, VARIANTS
from igat.config import AttackSpec, ExperimentConfig
from igat.data import Dataset, load_dataset
from igat.evaluation import evaluate_ensemble
from igat.specs.defenses import DEFENSE_SPECS
from igat.training import Callback, Trainer
from igat.training.trainer import default_output_dir

# VARIANTS / TITLES live in a module without PyTorch, so the dashboard can read them.


def ablation_variants(config: ExperimentConfig) -> list[tuple[str, ExperimentConfig]]:
    """The Table 3 variants of an iGAT fine-tuning config, as (label, validated config).

    Labels: opposite, random, hard, beta0, full. Each config keeps ``config``'s seed, base checkpoint
    (``train.init_checkpoint``), data and budget and changes only the rule / beta; names get the label
    and ``output_dir`` (when set) a sub-directory, so the runs never share a checkpoint directory.
    The "full" variant uses the soft rule with ``config``'s beta (if that is 0, it equals "beta0").
    """
    out: list[tuple[str, ExperimentConfig]] = []
    for label, _title, igat_over in VARIANTS:
        data = config.to_dict()
        data["igat"].update(enabled=True, **igat_over)
        data["name"] = f"{config.name}-{label}"
        data["tags"] = [*config.tags, "ablation", f"ablation:{label}"]
        if config.output_dir:
            data["output_dir"] = str(Path(config.output_dir) / label)
        out.append((label, ExperimentConfig.from_dict(data)))
    return out


def base_config_of(config: ExperimentConfig) -> ExperimentConfig:
    """The base-defense run behind an iGAT config: the same config with iGAT switched off."""
    data = config.to_dict()
    data["igat"]["enabled"] = False
    data["train"]["init_checkpoint"] = None
    data["name"] = f"{config.name}-base"
    return ExperimentConfig.from_dict(data)


@dataclass
class AblationRow:
    variant: str
    seed: int
    natural: float  # accuracy in [0, 1]
    pgd: float
    checkpoint: str


@dataclass
class AblationResult:
    base_checkpoint: str
    combiner: str
    rows: list[AblationRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"base_checkpoint": self.base_checkpoint, "combiner": self.combiner, "rows": [asdict(r) for r in self.rows]}


def _pgd_spec(config: ExperimentConfig) -> AttackSpec:
    """The config's PGD evaluation attack (the first ``pgd`` in eval.attacks), else PGD-20 at 8/255."""
    for spec in config.eval.attacks:
        if spec.name == "pgd":
            return spec
    return AttackSpec(name="pgd", params={"steps": 20})


def evaluate_variant(trainer: Trainer, config: ExperimentConfig, combiner: str, seed: int) -> tuple[float, float]:
    x, y = trainer.dataset.test_tensors(config.eval.num_examples)
    rows = evaluate_ensemble(
        trainer.ensemble, x, y, combiners=[combiner], attacks=[AttackSpec(name="natural"), _pgd_spec(config)],
        batch_size=config.eval.batch_size, per_member=False, seed=seed, device=trainer.device,
        engine=config.model.engine,
    )
    acc = {r.attack: r.accuracy for r in rows}
    return acc["natural"], acc["pgd"]


def run_ablation(
    config: ExperimentConfig,
    base_checkpoint: str | None = None,
    seeds: Sequence[int] | None = None,
    output_root: str | Path | None = None,
    base_config: ExperimentConfig | None = None,
    combiner: str = "average",
    device: str | None = None,
    dataset: Dataset | None = None,
    callbacks: Sequence[Callback] = (),
    progress: Callable[[str], None] | None = None,
) -> AblationResult:
    """Train (base if needed and) every variant for every seed, and evaluate them.

    The data are loaded once (at ``config.seed``) and shared by every run, so seeds only change the
    fine-tuning randomness (initial order, attack starts, roulette draws), never the task.
    Re-running with the same ``output_root`` resumes/reuses finished runs (Trainer's resume).
    """
    dataset = dataset if dataset is not None else load_dataset(config.data, config.seed)
    root = Path(output_root) if output_root else Path(f"{default_output_dir(config)}-ablation")
    say = progress or (lambda _msg: None)
    if base_checkpoint is None:
        base_cfg = base_config or base_config_of(config)
        warm = DEFENSE_SPECS.get(base_cfg.defense.name).warm_start_from
        if warm and not base_cfg.train.init_checkpoint:
            # The recipe starts from another defense's ensemble (DVERGE: standard training, spec §2.4): train it
            # first with the base's budget, model and data, then warm-start the base from it.
            pre = base_cfg.model_copy(deep=True)
            pre.defense = type(pre.defense)(name=warm, params={})
            pre.name = f"{base_cfg.name}-{warm}"
            say(f"pre-training the {warm} ensemble the {base_cfg.defense.name} recipe starts from")
            pre_ckpt = Trainer(pre, list(callbacks), output_dir=root / "pretrain", device=device,
                               dataset=dataset).fit().checkpoint
            base_cfg = base_cfg.model_copy(deep=True)
            base_cfg.train.init_checkpoint = str(pre_ckpt)
        say(f"training the base ({base_cfg.defense.name}) for {base_cfg.train.epochs} epochs")
        base_checkpoint = Trainer(base_cfg, list(callbacks), output_dir=root / "base", device=device,
                                  dataset=dataset).fit().checkpoint
    result = AblationResult(str(base_checkpoint), combiner)
    for seed in seeds if seeds is not None else [config.seed]:
        seeded = config.model_copy(deep=True)
        seeded.seed = seed
        seeded.train.init_checkpoint = str(base_checkpoint)
        for label, cfg in ablation_variants(seeded):
            out_dir = root / f"{label}-seed{seed}"
            say(f"fine-tuning {label} (seed {seed}) -> {out_dir}")
            trainer = Trainer(cfg, list(callbacks), output_dir=out_dir, device=device, dataset=dataset)
            fit = trainer.fit()
            nat, adv = evaluate_variant(trainer, cfg, combiner, seed)
            result.rows.append(AblationRow(label, seed, nat, adv, fit.checkpoint))
            say(f"  {label}: natural {100 * nat:.2f} %, PGD {100 * adv:.2f} %")
    return result


def _cell(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def format_table(result: AblationResult) -> str:
    """Table 3 layout: one column per variant, rows Natural (%) and PGD (%), mean (± std over seeds)."""
    labels = [lab for lab, _, _ in VARIANTS if any(r.variant == lab for r in result.rows)]
    cols = {lab: [r for r in result.rows if r.variant == lab] for lab in labels}
    titles = [TITLES[lab] for lab in labels]
    cells = {
        "Natural (%)": [_cell([r.natural for r in cols[lab]]) for lab in labels],
        "PGD (%)": [_cell([r.pgd for r in cols[lab]]) for lab in labels],
    }
    widths = [max(len(t), *(len(cells[k][i]) for k in cells)) for i, t in enumerate(titles)]
    head_w = max(len(k) for k in cells)
    seeds = sorted({r.seed for r in result.rows})
    lines = [f"Ablation ({result.combiner} combiner, seeds {', '.join(map(str, seeds))}; base {result.base_checkpoint})"]
    lines.append(" | ".join([" " * head_w, *(t.rjust(w) for t, w in zip(titles, widths, strict=True))]))
    lines.append("-+-".join(["-" * head_w, *("-" * w for w in widths)]))
    for key, vals in cells.items():
        lines.append(" | ".join([key.ljust(head_w), *(v.rjust(w) for v, w in zip(vals, widths, strict=True))]))
    return "\n".join(lines)


__all__ = ["TITLES", "VARIANTS", "AblationResult", "AblationRow", "ablation_variants", "base_config_of", "format_table",
           "run_ablation"]
