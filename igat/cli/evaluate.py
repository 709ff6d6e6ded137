"""``igat eval CHECKPOINT...``: the paper's robustness evaluation of saved runs (Section 6.1).

For each checkpoint: accuracy under natural / PGD / CW / SignHunter / AutoAttack (whichever
are chosen) of the ensemble under each combiner, plus per-member accuracy; a progress bar while
it runs, a summary table and sanity flags at the end, and ``eval.csv`` / ``eval.json`` next to
the checkpoint (one row per checkpoint x target x combiner x attack, each with its 95 % interval).

The protocol (``--protocol``, :mod:`igat.protocols`) is the paper's by default: PGD-20, SignHunter and
AutoAttack on the full test set, CW on 1,000; ``quick`` runs the same attacks on 1,000 / 500 examples and
``config`` the checkpoint config's ``eval`` section. The estimated time is printed before the attacks
start. Results are written after every row; rerunning the same command resumes an interrupted
evaluation (rows computed with the same checkpoint and settings are reused), ``--fresh`` recomputes all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from igat.config import ConfigError
from igat.config_input import config_error_line

PROTOCOL_CHOICES = ("paper", "quick", "config")


def _split(values: Sequence[str] | None) -> list[str] | None:
    """Flatten repeated, comma-separated values: ``--attacks pgd,cw --attacks signhunter``."""
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate checkpoints under natural / PGD / CW / SignHunter / AutoAttack",
        description=(
            "Evaluate saved ensembles (a last.pt file or its run directory) as in the paper: every combiner, "
            "every attack, plus per-member accuracy, each accuracy with its 95 % Wilson interval. The attacks and "
            "example counts come from --protocol (default: the paper's); the rest from the checkpoint config's eval "
            "section. Writes eval.csv and eval.json next to each checkpoint after every result; rerunning resumes."
        ),
    )
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoint file or run directory")
    p.add_argument("--protocol", choices=[*PROTOCOL_CHOICES], default="paper",
                   help="paper (default): natural, PGD-20, SignHunter, AutoAttack on the full test set, CW on 1,000; "
                        "quick: the same on 1,000 (natural, PGD) / 500 (CW, SH, AA) examples; "
                        "config: the checkpoint config's eval.attacks and eval.num_examples")
    # Comma-separated and repeatable (not nargs="+", which would swallow a following CHECKPOINT).
    p.add_argument("--combiners", action="append", metavar="A,B",
                   help="combiners, e.g. average,max (default: config eval.combiners, plus soe for SoE runs)")
    p.add_argument("--attacks", action="append", metavar="A,B",
                   help="attacks, e.g. pgd,cw,cw_opt,signhunter,autoattack (default: the protocol's); natural is always run")
    p.add_argument("--num-examples", type=int, metavar="N",
                   help="equidistant test examples (default: the protocol's); per-attack caps (CW 1,000) still apply")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--config-override", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the checkpoint's config, e.g. eval.batch_size=512 (repeatable)")
    p.add_argument("--batch-size", type=int, metavar="B", help="attack batch size (default: config eval.batch_size)")
    p.add_argument("--seed", type=int, help="attack seed (default: the run's seed)")
    p.add_argument("--member-attacks", action="append", metavar="A,B",
                   help="attacks also run on each member (default: natural,pgd; 'all' = every attack)")
    p.add_argument("--no-members", action="store_true", help="skip per-member evaluation")
    p.add_argument("--out-dir", metavar="DIR", help="write eval.csv/eval.json here instead of next to the checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fresh", action="store_true",
                   help="recompute every result (default: reuse the results of an interrupted run with the same "
                        "checkpoint and settings)")
    p.set_defaults(func=run)


def announce(plan) -> None:
    """Before any attack runs: the protocol, what is resumed and the estimated time of the rest."""
    from igat.protocols import estimate_rows

    todo = plan.todo
    lines = [f"protocol: {plan.protocol}; {len(plan.rows)} results"
             + (f", {len(plan.rows) - len(todo)} already stored (resumed)" if len(todo) < len(plan.rows) else "")]
    if todo:
        attacks = ", ".join(f"{a} on {n:,}" for a, n in dict.fromkeys((r.attack, r.num_examples) for r in todo))
        lines.append(f"to compute: {len(todo)} results ({attacks} examples)")
        lines.append(estimate_rows(todo, plan.config, plan.device.type).text())
    print("\n".join(lines), flush=True)


def _evaluate_one(path: str, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from igat.evaluation import eval_dir, evaluate_checkpoint, phase_text, summary_table
    from igat.sanity import check_results, format_flags

    member_attacks = _split(args.member_attacks) or ["natural", "pgd"]
    if member_attacks == ["all"]:
        member_attacks = None
    bar = tqdm(total=0, unit="ex", desc=str(path), disable=args.no_progress, file=sys.stderr, dynamic_ncols=True,
               delay=1.0)  # delay: a file refused at once leaves its one error line, no empty bar

    def on_plan(total: int) -> None:
        bar.total = total
        bar.refresh()

    out = args.out_dir or eval_dir(path)
    stored = [0]

    def on_row(row) -> None:  # called once the row is written
        stored[0] += 1
        bar.set_postfix_str(f"{row.target}/{row.combiner}/{row.attack}: {100 * row.accuracy:.2f}%")

    def on_start(planned, index: int, total: int) -> None:
        bar.set_description_str(f"{path}: {phase_text(planned, index, total)}")

    try:
        rows = evaluate_checkpoint(
            path, combiners=_split(args.combiners), attacks=_split(args.attacks), num_examples=args.num_examples,
            device=args.device, overrides=args.config_override, batch_size=args.batch_size,
            per_member=False if args.no_members else None, member_attacks=member_attacks, seed=args.seed,
            progress=on_row, on_batch=bar.update, on_plan=on_plan, out_dir=args.out_dir,
            protocol=None if args.protocol == "config" else args.protocol, resume=not args.fresh,
            on_start=on_start, on_prepared=announce,
        )
    except KeyboardInterrupt:
        bar.close()
        print(f"\n{path}: interrupted; {stored[0]} new result(s) stored in {out}/eval.json. "
              "Run the same command again to resume.", file=sys.stderr)
        return 130
    finally:
        bar.close()
    print(f"\n{path}  ({rows[0].method}, seed {rows[0].seed}; accuracy %)" if rows else f"\n{path}")
    print(summary_table(rows))
    flags = check_results(rows)
    if flags:
        print("\nSanity flags:")
        print(format_flags(flags))
    print(f"\nwrote {out}/eval.csv and {out}/eval.json")
    return 0


def run(args: argparse.Namespace) -> int:
    status = 0
    for path in args.checkpoints:
        try:
            status = max(status, _evaluate_one(path, args))
        except ConfigError as exc:
            print(f"error: {path}: {config_error_line(exc.errors)}", file=sys.stderr)
            status = 2
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            text = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
            print(f"error: {text}", file=sys.stderr)
            status = 2
    return status
