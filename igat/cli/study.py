"""``igat study``: base vs continued vs iGAT, paired over seeds (see :mod:`igat.study`)."""

from __future__ import annotations

import argparse
import sys
import time

from igat.cli.common import fail


def _ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study", help="does iGAT help? base -> (continued D | iGAT_D) over seeds, with paired intervals",
        description="Per seed: train D's recipe until it plateaus, then run D continued and the iGAT_D fine-tune "
        "(paper preset) for the same epochs from that base; evaluate all three on identical images and attacks; "
        "report mean +- std over seeds and the paired difference with 95 % intervals. Resumable: rerun the same "
        "command to continue; rerun it with more seeds or arms (the old ones first, e.g. --seeds 0,1,2 -> 0,1,2,3,4, "
        "--arms continued,igat -> continued,igat,opposite) to add them to the same bases.")
    p.add_argument("--defense", default="adp", help="base defense (default adp)")
    p.add_argument("--scale", default="cpu-mini", choices=["cpu-mini", "paper"])
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "synthetic"])
    p.add_argument("--arms", default="continued,igat",
                   help="comma-separated arms: continued, igat (both required), opposite, random, hard, beta0")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default=None, help="study folder (default runs/study-DEFENSE-SCALE; not with --submit)")
    p.add_argument("--submit", action="store_true",
                   help="queue the study on the workers (`igat up` / `igat worker`) instead of running it here; prints "
                   "its id; follow it on the dashboard's Studies page")
    p.add_argument("--name", default=None, help="with --submit: the study's name (default study-DEFENSE-SCALE)")
    for name, kind in (("base-min-epochs", int), ("base-max-epochs", int), ("pretrain-epochs", int),
                       ("plateau-window", int), ("plateau-tol", float), ("arm-epochs", int), ("eval-examples", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help="override the scale's value")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of every run's config, e.g. data.train_subset=2000 (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from igat.config import ConfigError
    from igat.study import StudySpec, run_study

    try:
        spec = StudySpec.model_validate({
            "defense": args.defense, "seeds": args.seeds, "scale": args.scale, "dataset": args.dataset,
            "arms": [a.strip() for a in args.arms.split(",") if a.strip()], "device": args.device,
            "overrides": args.overrides,
            **{k: getattr(args, k) for k in ("base_min_epochs", "base_max_epochs", "pretrain_epochs", "plateau_window",
                                             "plateau_tol", "arm_epochs", "eval_examples") if getattr(args, k) is not None},
        })
    except ValueError as exc:
        return fail(f"invalid study: {exc}".splitlines()[0] if "\n" not in str(exc) else _pydantic_line(exc))
    if args.submit:
        if args.out is not None:
            return fail("--out is for a study run here; a queued study lives in IGAT_HOME/studies/<id>")
        from tasks.cli import _database_errors  # the queue only when asked for: `igat study` runs without it

        return _database_errors(lambda a: _submit(a, spec))(args)
    if args.name is not None:
        return fail("--name names a queued study: use it with --submit")
    out = args.out or f"runs/study-{spec.defense}-{spec.scale}"
    started = time.time()

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{time.time() - started:.0f}s] {msg}", file=sys.stderr, flush=True)

    try:
        from igat.study import format_report

        analysis = run_study(spec, out, progress=say)
    except ConfigError as exc:
        return fail("; ".join(f"{f}: {m}" for f, m in exc.errors))
    print(format_report(analysis))
    print(f"study folder: {out}")
    return 0


def _submit(args: argparse.Namespace, spec) -> int:
    from igat.config import ConfigError
    from igat.config_input import config_error_line
    from tasks import api

    try:
        exp_id, run_id = api.submit_study(spec, name=args.name)
    except ConfigError as exc:
        return fail(config_error_line(exc.errors))
    except (api.SubmitError, ConnectionError) as exc:
        return fail(str(exc))
    print(f"study {run_id} queued (experiment {exp_id}); follow it on the dashboard's Studies page "
          f"(?study={run_id}) or with `igat runs show {run_id}`", file=sys.stderr)
    print(run_id)
    return 0


def _pydantic_line(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "invalid study: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
    return f"invalid study: {str(exc).splitlines()[0]}"
