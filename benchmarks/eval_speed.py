"""PGD-20 evaluation speed: the library's evaluation vs torchattacks' PGD-20, on one real checkpoint, one run.

Same checkpoint, same equidistant test images, same threads and batch size; eps 8/255, step 2/255,
20 steps, one random start, the averaged ensemble's log-output (``Ensemble.as_model("average")``).

  library        ``igat.evaluation.evaluate_ensemble`` with the ``pgd`` attack, as ``igat eval`` runs it:
                 frozen parameters, BatchNorm-folded members, per-example early exit (only correctly
                 classified images are attacked; an image leaves at its first misclassified iterate)
  library-final  the functional ``pgd`` (final iterate, as adversarial training uses it) on the same frozen,
                 folded model: splits the gain into execution (folding, frozen) and early exit
  torchattacks   ``torchattacks.PGD`` on ``ensemble.as_model("average")`` as a user would run it (eval mode,
                 parameters requiring grad, no folding), final iterate

Each is timed including the classification of the adversarial images; the time is the best of ``--rounds``
interleaved rounds. Goal (issue 15): library >= 2x torchattacks at equal or lower robust accuracy. Then
AutoAttack standard (``pyautoattack`` via the ``autoattack`` attack) on ``--aa-examples`` of the images:
seconds per image. Last, the ``pgd_strength`` probe (PGD-20, then PGD-100 with 3 restarts on what it left
robust) on ``--probe-examples`` of the images: how much PGD-20 overestimates robustness here.

Checkpoint: ``--checkpoint``, else the first ``studies/*/seed0/base/last.pt``, else one is trained with
``igat train benchmarks/configs/pgdat-small.yaml`` (2-member PGD-AT on the CIFAR-10 JPEG tree, ~5 min on 2 cores).
Usage:
  python benchmarks/eval_speed.py [--checkpoint PATH] [--examples 500] [--aa-examples 50] [--threads 2]
      [--batch 250] [--rounds 2] [--probe-examples 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from igat.attacks import pgd
from igat.config import EPS_8_255, STEP_2_255, AttackSpec
from igat.data import equidistant_indices, load_dataset
from igat.evaluation import evaluate_ensemble
from igat.models.ensemble import Ensemble
from igat.sanity import check_results, format_flags
from igat.training import load_ensemble

ROOT = Path(__file__).resolve().parents[1]
SMALL_CONFIG = ROOT / "benchmarks" / "configs" / "pgdat-small.yaml"
SMALL_RUN = ROOT / "runs" / "bench" / "pgdat-small-s1"
STEPS = 20


def find_or_train_checkpoint(given: str | None) -> Path:
    if given:
        return Path(given)
    found = sorted(ROOT.glob("studies/*/seed0/base/last.pt"))
    if found:
        return found[0]
    if not (SMALL_RUN / "last.pt").exists():
        print(f"no checkpoint: training {SMALL_CONFIG.name} (~5 min)", flush=True)
        subprocess.run([sys.executable, "-m", "igat", "train", str(SMALL_CONFIG), "--device", "cpu"], check=True,
                       cwd=ROOT)
    return SMALL_RUN / "last.pt"


@torch.no_grad()
def _accuracy(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> int:
    return int((model(x).argmax(1) == y).sum())


def run_library(ens: Ensemble, x: Tensor, y: Tensor, batch: int, seed: int) -> tuple[float, dict]:
    """The library's evaluation path; returns (robust accuracy, the row's statistics)."""
    spec = AttackSpec(name="pgd", params={"eps": EPS_8_255, "step_size": STEP_2_255, "steps": STEPS})
    (row,) = evaluate_ensemble(ens, x, y, ["average"], [spec], batch_size=batch, per_member=False, seed=seed)
    return row.accuracy, row.extra


def run_library_final(ens: Ensemble, x: Tensor, y: Tensor, batch: int, seed: int) -> tuple[float, dict]:
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    with ens.frozen(eval_mode=True):
        model = ens.as_model("average")
        for s in range(0, len(x), batch):
            xb, yb = x[s:s + batch], y[s:s + batch]
            correct += _accuracy(model, pgd(model, xb, yb, EPS_8_255, STEP_2_255, STEPS, generator=gen), yb)
    return correct / len(x), {}


def run_torchattacks(ens: Ensemble, x: Tensor, y: Tensor, batch: int, seed: int) -> tuple[float, dict]:
    import torchattacks

    ens.eval()
    model = ens.as_model("average")
    torch.manual_seed(seed)  # torchattacks draws its random start from the global RNG
    atk = torchattacks.PGD(model, eps=EPS_8_255, alpha=STEP_2_255, steps=STEPS, random_start=True)
    correct = 0
    for s in range(0, len(x), batch):
        xb, yb = x[s:s + batch], y[s:s + batch]
        correct += _accuracy(model, atk(xb, yb), yb)
    return correct / len(x), {}


def timed(fn: Callable[[], tuple[float, dict]]) -> tuple[float, float, dict]:
    t0 = time.perf_counter()
    acc, extra = fn()
    return time.perf_counter() - t0, acc, extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="last.pt or run directory (default: see above)")
    ap.add_argument("--examples", type=int, default=500, help="equidistant test images for PGD-20")
    ap.add_argument("--aa-examples", type=int, default=50, help="of those, images for AutoAttack standard (0: skip)")
    ap.add_argument("--probe-examples", type=int, default=200, help="of those, images for pgd_strength (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (best time counts)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    path = find_or_train_checkpoint(args.checkpoint)
    ens, config, _ = load_ensemble(path, "cpu")
    x, y = load_dataset(config.data, config.seed).test_tensors(args.examples)
    with ens.frozen(eval_mode=True):
        natural = _accuracy(ens.as_model("average"), x, y) / len(x)
    print(f"checkpoint {path} ({config.defense.name}, {ens.num_members} members, {config.model.arch}-"
          f"{config.model.depth}); {len(x)} equidistant test images; {args.threads} threads; batch {args.batch}")
    print(f"natural accuracy {100 * natural:.2f}%", flush=True)

    runners = {"library": run_library, "library-final": run_library_final, "torchattacks": run_torchattacks}
    best: dict[str, float] = {}
    results: dict[str, tuple[float, dict]] = {}
    for r in range(args.rounds):
        for name, fn in runners.items():
            seconds, acc, extra = timed(lambda fn=fn: fn(ens, x, y, args.batch, args.seed))
            best[name] = min(best.get(name, float("inf")), seconds)
            results[name] = (acc, extra)
            print(f"  round {r + 1} {name:14s} {seconds:7.1f} s  robust {100 * acc:.2f}%", flush=True)

    print(f"\nPGD-20, eps 8/255, {len(x)} images (best of {args.rounds}):")
    print("| path | seconds | ms/image | robust accuracy | vs torchattacks |")
    print("|---|---|---|---|---|")
    for name in runners:
        acc = results[name][0]
        print(f"| {name} | {best[name]:.1f} | {1000 * best[name] / len(x):.1f} | {100 * acc:.2f}% | "
              f"{best['torchattacks'] / best[name]:.2f}x |")
    extra = results["library"][1]
    attacked = extra.get("attacked_mean", float("nan"))
    print(f"library early exit: {attacked * len(x):.0f} of {len(x)} images attacked, "
          f"{extra.get('iterations_mean', float('nan')):.2f} forward+backward passes per image on average "
          f"(final iterate: {STEPS})")
    ratio = best["torchattacks"] / best["library"]
    ok = ratio >= 2 and results["library"][0] <= results["torchattacks"][0]
    print(f"speed-up vs torchattacks: {ratio:.2f}x; robust accuracy {100 * results['library'][0]:.2f}% (library) vs "
          f"{100 * results['torchattacks'][0]:.2f}% (torchattacks); goal >= 2x at <= accuracy: "
          f"{'met' if ok else 'NOT met'}", flush=True)

    if args.aa_examples > 0:
        idx = equidistant_indices(len(x), args.aa_examples)
        xs, ys = x[idx], y[idx]
        t0 = time.perf_counter()
        (row,) = evaluate_ensemble(ens, xs, ys, ["average"], [AttackSpec(name="autoattack")], batch_size=args.batch,
                                   per_member=False, seed=args.seed)
        seconds = time.perf_counter() - t0
        pgd_acc, _ = run_library(ens, xs, ys, args.batch, args.seed)
        print(f"\nAutoAttack standard ({row.extra.get('implementation', 'pyautoattack')}), {len(xs)} images: "
              f"{seconds:.1f} s = {seconds / len(xs):.2f} s/image; robust accuracy {100 * row.accuracy:.2f}% "
              f"(library PGD-20 on the same images: {100 * pgd_acc:.2f}%)")

    if args.probe_examples > 0:
        spec = AttackSpec(name="pgd_strength", params={"num_examples": args.probe_examples})
        (row,) = evaluate_ensemble(ens, x, y, ["average"], [spec], batch_size=args.batch, per_member=False,
                                   seed=args.seed)
        flags = check_results([row])
        print(f"\npgd_strength on {row.num_examples} images ({row.extra['seconds']:.1f} s): PGD-20 "
              f"{100 * row.extra['robust_reference_mean']:.2f}% -> PGD-20 + PGD-100 x 3 restarts "
              f"{100 * row.accuracy:.2f}%; {format_flags(flags) if flags else 'no flag'}")


if __name__ == "__main__":
    main()
