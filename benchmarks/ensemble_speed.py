"""Images/second of one training step and of PGD-20 for the ensemble execution paths.

Paths (all exact, same weights):
  loop            per-member Python loop, parameters requiring grad during the attack
                  (the reference-code style)
  loop+frozen     the loop with parameters frozen during the attack (attacks need input grads only)
  loop+cl         the loop in channels_last memory format (frozen during the attack)
  fused           grouped-convolution engine (igat.models.fused), frozen during the attack

Prints one line per path and the ratio to the plain loop. Usage:
  python benchmarks/ensemble_speed.py --members 8 --batch 128 --device auto [--threads 2] [--cpu-time]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from igat.attacks.pgd import pgd
from igat.models import Ensemble
from igat.models.combiners import log_output
from igat.models.fused import FusedResNet20Ensemble


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device: torch.device, warmup: int, repeats: int, clock=time.perf_counter) -> float:
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
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    ap.add_argument("--repeats", type=int, default=3)
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

    loop = Ensemble.resnet20(n).to(device)
    loop_cl = Ensemble.resnet20(n, channels_last=True).to(device)
    loop_cl.load_member_state_dicts(loop.member_state_dicts())
    fused = FusedResNet20Ensemble.from_members(list(loop.members)).to(device)
    if device.type == "cpu":
        fused_cl = None
    else:
        fused_cl = FusedResNet20Ensemble.from_members(list(loop.members)).to(device).to(memory_format=torch.channels_last)

    def train_step(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp and device.type == "cuda"):
                logits = model(x)
                loss = F.cross_entropy(logits.reshape(-1, 10).float(), y.repeat(n))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    def attack(model, freeze: bool):
        def fwd(z):
            return log_output(model(z).softmax(-1).mean(0))

        def run():
            flags = [p.requires_grad for p in model.parameters()]
            if freeze:
                for p in model.parameters():
                    p.requires_grad_(False)
            model.eval()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp and device.type == "cuda"):
                pgd(fwd, x, y, steps=args.pgd_steps)
            for p, f in zip(model.parameters(), flags):
                p.requires_grad_(f)
            model.train()

        return run

    paths = {
        "loop": (loop, False),
        "loop+frozen": (loop, True),
        "loop+cl": (loop_cl, True),
        "fused": (fused, True),
    }
    if fused_cl is not None:
        paths["fused+cl"] = (fused_cl, True)
    clock = time.process_time if args.cpu_time and device.type == "cpu" else time.perf_counter
    print(f"device={device} threads={torch.get_num_threads()} members={n} batch={b} pgd_steps={args.pgd_steps} "
          f"amp={args.amp} clock={'process CPU time' if clock is time.process_time else 'wall'}")
    print(f"{'path':14s} {'train img/s':>12s} {'ratio':>6s} {'PGD img/s':>10s} {'ratio':>6s}")
    base_train = base_pgd = None
    warm = 1 if device.type == "cpu" else 3
    reps = args.repeats if device.type == "cpu" else max(args.repeats, 10)
    for name, (model, freeze) in paths.items():
        t_train = timeit(train_step(model), device, warm, reps, clock)
        t_pgd = timeit(attack(model, freeze), device, 1 if device.type == "cpu" else 2, max(1, reps // 2), clock)
        train_ips, pgd_ips = b / t_train, b / t_pgd
        # the train column for loop and loop+frozen is the same computation; report it once
        if base_train is None:
            base_train, base_pgd = train_ips, pgd_ips
        print(f"{name:14s} {train_ips:12.1f} {train_ips / base_train:6.2f} {pgd_ips:10.2f} {pgd_ips / base_pgd:6.2f}")


if __name__ == "__main__":
    main()
