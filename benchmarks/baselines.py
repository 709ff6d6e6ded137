"""Small-budget comparison of the baseline ensemble defenses on CPU.

Trains every baseline (plus ``standard`` and ``pgd_at`` for reference) for the same tiny budget
and prints natural and PGD-20 accuracy of the averaged ensemble (and SoE's own selection
combiner for SoE) with the training and evaluation seconds. Real CIFAR-10 from ../shared/data
when present (the offline JPEG re-encoding), else the synthetic task.

Each defense starts from its ``recommended`` optimiser / data / activation settings (without lr
milestones: the budget is far below the first one); the training attacks and distillation are
shortened to ``--train-steps`` iterations so the run stays CPU-feasible.

    .venv/bin/python benchmarks/baselines.py                       # defaults below
    .venv/bin/python benchmarks/baselines.py --train 1000 --defenses adp gal
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from igat.config import ExperimentConfig  # noqa: E402
from igat.data import DataNotFoundError, Dataset, equidistant_indices, load_dataset  # noqa: E402
from igat.defenses import DEFENSES  # noqa: E402
from igat.evaluation import evaluate_ensemble  # noqa: E402
from igat.training.trainer import Trainer  # noqa: E402

ALL = ["standard", "pgd_at", "adp", "gal", "trs", "dverge", "cldl", "soe"]


def shortened_params(name: str, steps: int) -> dict:
    """Training-attack / distillation iterations cut to ``steps`` (step sizes scaled to keep the reach)."""
    two = 2 / 255
    if name == "pgd_at":
        return {"steps": steps, "step_size": max(two, 2.5 * (8 / 255) / steps)}
    if name in ("adp", "gal", "cldl"):
        return {"adv_steps": steps, "adv_step_size": max(two, 2.5 * (8 / 255) / steps)}
    if name == "soe":
        return {"adv_steps": steps, "adv_step_size": max(0.01, 0.03 / steps * 2)}
    if name == "trs":
        return {"adv_steps": steps}
    if name == "dverge":
        return {"adv_steps": steps, "adv_step_size": max(two, 2.5 * (8 / 255) / steps),
                "distill_steps": steps, "distill_alpha": max(0.005, 0.05 / steps * 2)}
    return {}


def make_config(name: str, args: argparse.Namespace, dataset: str) -> ExperimentConfig:
    rec = {k: dict(v) for k, v in DEFENSES.get(name).recommended.items()}
    optim = {**rec.get("optim", {}), "milestones": []}
    data = {**rec.get("data", {}), "dataset": dataset}
    if dataset == "synthetic":
        data.update(synthetic_train_size=max(args.train, 16), synthetic_test_size=max(args.eval, 16))
    model = {**rec.get("model", {}), "num_members": args.members}
    return ExperimentConfig.from_dict({
        "name": f"bench-{name}", "seed": args.seed, "device": "cpu",
        "data": data, "model": model, "optim": optim,
        "defense": {"name": name, "params": shortened_params(name, args.train_steps)},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "eval_examples": 0, "log_every": 1000},
    })


def training_subset(data: Dataset, n: int) -> Dataset:
    """n equidistant training images: the JPEG ImageFolder is sorted by class, so the first n
    (``data.train_subset``) would all be airplanes; a stride keeps the classes balanced."""
    idx = equidistant_indices(len(data.train_x), n)
    return Dataset(data.train_x[idx], data.train_y[idx], data.test_x, data.test_y, data.num_classes,
                   data.mean, data.std, data.source)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defenses", nargs="+", default=ALL, choices=ALL)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--train", type=int, default=2000, help="training images (first n)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=3, help="iterations of training attacks / distillation")
    ap.add_argument("--eval", type=int, default=200, help="equidistant test images")
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", choices=["auto", "cifar10", "synthetic"], default="auto")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    dataset = args.dataset
    if dataset == "auto":
        try:
            load_dataset(ExperimentConfig.from_dict({"data": {"download": False}}).data)
            dataset = "cifar10"
        except DataNotFoundError:
            dataset = "synthetic"
    print(f"# data={dataset} members={args.members} train={args.train} epochs={args.epochs} "
          f"batch={args.batch_size} train_steps={args.train_steps} eval={args.eval} pgd={args.pgd_steps}", flush=True)
    print(f"| defense | natural (avg) | PGD-{args.pgd_steps} (avg) | train s | eval s | notes |")
    print("|---|---|---|---|---|---|", flush=True)
    attacks = [{"name": "natural"}, {"name": "pgd", "params": {"steps": args.pgd_steps}}]
    for name in args.defenses:
        cfg = make_config(name, args, dataset)
        with tempfile.TemporaryDirectory() as out:
            data = training_subset(load_dataset(cfg.data, cfg.seed), args.train)
            trainer = Trainer(cfg, output_dir=out, resume=False, dataset=data)
            t0 = time.perf_counter()
            trainer.fit()
            train_s = time.perf_counter() - t0
        x, y = trainer.dataset.test_tensors(args.eval)
        combiners = ["average", "soe"] if name == "soe" else ["average"]
        t0 = time.perf_counter()
        rows = evaluate_ensemble(trainer.ensemble, x, y, combiners, attacks, batch_size=200, per_member=False,
                                 seed=args.seed)
        eval_s = time.perf_counter() - t0
        acc = {(r.combiner, r.attack): r.accuracy for r in rows}
        notes = ""
        if name == "soe":
            notes = f"soe combiner: {acc[('soe', 'natural')]:.1%} / {acc[('soe', 'pgd')]:.1%}"
        print(f"| {name} | {acc[('average', 'natural')]:.1%} | {acc[('average', 'pgd')]:.1%} | "
              f"{train_s:.0f} | {eval_s:.0f} | {notes} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
