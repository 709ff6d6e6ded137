"""Images/second of one training step, of PGD-20, and of one PGD adversarial-training step for the
ensemble execution paths.

Paths (all exact: the same function of the same weights, up to float rounding):
  loop            per-member Python loop, parameters requiring grad during the attack
                  (the reference-code style)
  loop+frozen     the loop with parameters frozen during the attack (attacks need input grads only)
  loop+cl         the loop in channels_last memory format (frozen during the attack)
  loop+cl+fold    loop+cl, and the attack runs on BatchNorm-folded member copies
                  (igat.models.folded; the library's default on the CPU)
  fused           grouped-convolution engine (igat.models.fused), frozen during the attack

Columns: "train" = one SGD step (forward + backward + update, cross-entropy on every member);
"PGD-20" = PGD-20 (eps 8/255, step 2/255) on the averaged ensemble's log-output, eval mode;
"AT step" = what pgd_at does per batch: PGD-10 against every member (eval mode, per-member
inputs) and then the training step on those examples. Prints the ratio to the plain loop.
Usage:
  python benchmarks/ensemble_speed.py --members 8 --batch 128 --device auto [--threads 2] [--cpu-time]
      [--rounds 3] [--paths loop+cl loop+cl+fold]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time

import torch
import torch.nn.functional as F

from igat.attacks.pgd import pgd
from igat.models import Ensemble
from igat.models.combiners import log_output
from igat.models.ensemble import frozen
from igat.models.fused import FusedResNet20Ensemble


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device: torch.device, warmup: int, repeats: int, clock=time.perf_counter) -> float:
    """Mean seconds per call over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = clock()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (clock() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--at-steps", type=int, default=10, help="PGD steps inside the adversarial-training step")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repetitions of the train step per round "
                    "(half as many, at least one, for PGD and the AT step)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the paths; the best is reported")
    ap.add_argument("--paths", nargs="*", default=None,
                    help="measure only these paths (the plain loop, the baseline, is always measured)")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with this process's CPU time instead of wall time: with --threads 1 it is robust "
                         "to other load on a shared machine (CPU only)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(0)
    n, b = args.members, args.batch
    x = torch.rand(b, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (b,), device=device)

    loop = Ensemble.resnet20(n, fold_bn=False).to(device)
    loop_cl = Ensemble.resnet20(n, channels_last=True, fold_bn=False).to(device)
    loop_cl.load_member_state_dicts(loop.member_state_dicts())
    loop_cl_fold = Ensemble.resnet20(n, channels_last=True, fold_bn=True).to(device)
    loop_cl_fold.load_member_state_dicts(loop.member_state_dicts())
    fused = FusedResNet20Ensemble.from_members(list(loop.members)).to(device)
    if device.type == "cpu":
        fused_cl = None
    else:
        fused_cl = FusedResNet20Ensemble.from_members(list(loop.members)).to(device).to(memory_format=torch.channels_last)

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp and device.type == "cuda")

    def train_step(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            with amp():
                logits = model(x)
                loss = F.cross_entropy(logits.reshape(-1, 10).float(), y.repeat(n))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    def attack_context(model, freeze: bool):
        """Eval mode (+ frozen parameters): Ensemble.frozen folds BatchNorm when the ensemble's fold_bn is on."""
        if not freeze:
            @contextlib.contextmanager
            def eval_only():
                model.eval()
                try:
                    yield
                finally:
                    model.train()
            return eval_only()
        return model.frozen() if isinstance(model, Ensemble) else frozen(model)

    def attack(model, freeze: bool):
        def fwd(z):
            return log_output(model(z).softmax(-1).mean(0))

        def run():
            with attack_context(model, freeze), amp():
                pgd(fwd, x, y, steps=args.pgd_steps)

        return run

    def adversarial_step(model, freeze: bool):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        xs = x.unsqueeze(0).expand(n, *x.shape).contiguous()
        ys = y.repeat(n)

        def flat(z):
            return model(z).reshape(-1, 10)

        def step():
            with attack_context(model, freeze), amp():
                adv = pgd(flat, xs, ys, steps=args.at_steps)
            with amp():
                loss = F.cross_entropy(flat(adv).float(), ys)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    paths = {
        "loop": (loop, False),
        "loop+frozen": (loop, True),
        "loop+cl": (loop_cl, True),
        "loop+cl+fold": (loop_cl_fold, True),
        "fused": (fused, True),
    }
    if fused_cl is not None:
        paths["fused+cl"] = (fused_cl, True)
    if args.paths:
        unknown = set(args.paths) - set(paths)
        if unknown:
            raise SystemExit(f"--paths: unknown {sorted(unknown)}; choose from {sorted(paths)}")
        paths = {k: v for k, v in paths.items() if k in args.paths or k == "loop"}
    clock = time.process_time if args.cpu_time and device.type == "cpu" else time.perf_counter
    print(f"device={device} threads={torch.get_num_threads()} members={n} batch={b} pgd_steps={args.pgd_steps} "
          f"at_steps={args.at_steps} amp={args.amp} rounds={args.rounds} "
          f"clock={'process CPU time' if clock is time.process_time else 'wall'}")
    cpu = device.type == "cpu"
    reps = args.repeats if cpu else max(args.repeats, 10)
    work = {name: (train_step(model), attack(model, freeze), adversarial_step(model, freeze))
            for name, (model, freeze) in paths.items()}
    for fns in work.values():  # warm-up (allocator, kernels, cuDNN autotuning) before any timing
        for fn in fns:
            for _ in range(1 if cpu else 3):
                fn()
    # Rounds interleave the paths so slow phases of a shared machine hit all of them; report the best
    # (minimum) time of each path and column over the rounds.
    best: dict[str, list[float]] = {name: [math.inf] * 3 for name in work}
    for _ in range(args.rounds):
        for name, fns in work.items():
            for col, (fn, r) in enumerate(zip(fns, (reps, max(1, reps // 2), max(1, reps // 2)), strict=True)):
                best[name][col] = min(best[name][col], timeit(fn, device, 0, r, clock))
    print(f"{'path':14s} {'train img/s':>12s} {'ratio':>6s} {'PGD img/s':>10s} {'ratio':>6s} "
          f"{'AT step img/s':>14s} {'ratio':>6s}")
    base = [b / t for t in best["loop"]]
    for name, times in best.items():
        ips = [b / t for t in times]
        print(f"{name:14s} {ips[0]:12.1f} {ips[0] / base[0]:6.2f} {ips[1]:10.2f} {ips[1] / base[1]:6.2f} "
              f"{ips[2]:14.2f} {ips[2] / base[2]:6.2f}", flush=True)

if __name__ == "__main__":
    main()
