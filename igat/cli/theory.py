"""``igat theory``: Section-4 diagnostics of a checkpoint, or the 2-D MLP toy study (``--toy``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from igat.config import ConfigError
from igat.config_input import InputError, config_error_line, read_config_file


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "theory",
        help="theory diagnostics: curvature, ambiguous pairs, Assumption 4.4, ensemble vs single 0-1 loss",
        description="Measure the quantities of the paper's Section 4 on a trained checkpoint "
                    "(or run the 2-D MLP toy study with --toy) and write them as JSON.",
    )
    p.add_argument("checkpoint", nargs="?", help="checkpoint file or run directory (holding last.pt)")
    p.add_argument("--toy", action="store_true", help="run the 2-D MLP toy study instead")
    p.add_argument("--study", metavar="FOLDER",
                   help="an `igat study` folder: diagnose its base / continued / iGAT arms on shared examples and "
                        "pairs and compare them (writes FOLDER/theory.json)")
    p.add_argument("--num-examples", type=int, help="test examples for curvature/spectral (default 200)")
    p.add_argument("--delta-mode", choices=["pgd", "sign", "random"], help="delta of eq. (2) (default pgd)")
    p.add_argument("--eps", type=float, help="delta radius in [0,1] pixel units (default 8/255)")
    p.add_argument("--pgd-steps", type=int, help="PGD steps for --delta-mode pgd (default 10)")
    p.add_argument("--pair-split", choices=["test", "train"], help="split searched for ambiguous pairs")
    p.add_argument("--pair-pool", type=int, help="examples searched for pairs (default 2000)")
    p.add_argument("--pair-mode", choices=["knn", "eq10"], help="k closest pairs or the eq. (10) threshold")
    p.add_argument("--k-pairs", type=int, help="pairs kept (default 100)")
    p.add_argument("-J", "--J", dest="J", type=float, help="control variable J > 2 (default 4)")
    p.add_argument("--spectral-examples", type=int, help="examples for ||M_h||, ||M_h^+|| (0 skips)")
    p.add_argument("--ci-method", choices=["wilson", "bootstrap"])
    p.add_argument("--reference", dest="reference_checkpoint", help="second checkpoint to compare curvature with")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int)
    p.add_argument("--params", help="JSON file (or inline JSON) with more parameters; flags override it")
    p.add_argument("--toy-models", type=int, help="--toy: MLPs per family (default 8)")
    p.add_argument("--toy-classes", type=int, help="--toy: classes C (default 3; C = 2 makes average = max)")
    p.add_argument("--toy-margin", type=float, help="--toy: empty strip half-width around each boundary (default 0)")
    p.add_argument("--toy-seeds", help="--toy: comma-separated seeds, one study each plus a summary (e.g. 0,1,2)")
    p.add_argument("--out", help="write the full result JSON here")
    p.set_defaults(func=run)


FLAG_FIELDS = ("num_examples", "delta_mode", "eps", "pgd_steps", "pair_split", "pair_pool", "pair_mode", "k_pairs",
               "J", "spectral_examples", "ci_method", "reference_checkpoint", "device", "seed")


def _base_params(spec: str | None) -> dict[str, Any]:
    if not spec:
        return {}
    try:
        # A path is read like a config file (size limit, UTF-8 text, not a directory); else inline JSON.
        text = read_config_file(spec) if Path(spec).exists() else spec
        data = json.loads(text, parse_constant=_refuse_non_finite)
    except InputError as exc:
        raise ConfigError([("--params", exc.message)]) from None
    except json.JSONDecodeError as exc:
        raise ConfigError([("--params", f"not a JSON file or JSON object: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([("--params", "must be a JSON object")])
    return data


def _seed_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ConfigError([("--toy-seeds", f"expected comma-separated integers, got {text!r}")]) from None


def _refuse_non_finite(constant: str) -> Any:
    raise ConfigError([("--params", f"{constant} is not allowed; give finite numbers")])


def run(args: argparse.Namespace) -> int:
    try:
        params = _base_params(args.params)
        if args.out:  # checked now, not after a long computation
            from igat.cli.common import prepare_output_dir

            prepare_output_dir(Path(args.out).parent, "--out")
        if args.toy:
            from igat.theory.toy import format_toy_report, format_toy_seeds, run_toy_seeds, run_toy_study

            for flag, field in (("toy_models", "num_models"), ("toy_classes", "num_classes"),
                                ("toy_margin", "margin"), *((f, f) for f in ("J", "seed", "k_pairs", "delta_mode",
                                                                              "ci_method"))):
                if getattr(args, flag) is not None:
                    params[field] = getattr(args, flag)
            if args.toy_seeds:
                result = run_toy_seeds(params, _seed_list(args.toy_seeds))
                print(format_toy_seeds(result))
            else:
                result = run_toy_study(params)
                print(format_toy_report(result))
        elif args.study:
            if args.checkpoint:
                print("error: give a CHECKPOINT or --study FOLDER, not both", file=sys.stderr)
                return 2
            from igat.theory.study import format_study_theory, study_theory

            params.update({f: getattr(args, f) for f in FLAG_FIELDS if getattr(args, f) is not None})
            result = study_theory(args.study, params,
                                  progress=lambda m: print(m, file=sys.stderr, flush=True))
            print(format_study_theory(result))
            print(f"wrote {Path(args.study) / 'theory.json'}")
        else:
            if not args.checkpoint:
                print("error: give a CHECKPOINT (or --toy, or --study FOLDER)", file=sys.stderr)
                return 2
            from igat.theory.diagnostics import run_diagnostics

            params.update({f: getattr(args, f) for f in FLAG_FIELDS if getattr(args, f) is not None})
            result = run_diagnostics(args.checkpoint, params)
            print(format_summary(result))
    except ConfigError as exc:
        print(f"error: {config_error_line(exc.errors)}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, allow_nan=False))
        print(f"wrote {args.out}")
    return 0


def _f(v: Any, fmt: str = ".3g") -> str:
    return "n/a" if v is None else format(v, fmt)


def format_summary(r: dict[str, Any]) -> str:
    """Plain-text summary of a run_diagnostics result."""
    cur = r["curvature"]
    lines = [f"{r['checkpoint']}: {r['model']['defense']} x{r['model']['num_members']} on {r['dataset']['name']} "
             f"({r['dataset']['curvature_examples']} curvature examples, delta={cur['delta_mode']}, eps={cur['eps']:.4g})",
             "curvature (mean / median / max):"]
    for name, d in cur["targets"].items():
        lines.append(f"  {name:18s} {_f(d['mean'])} / {_f(d['quantiles'].get('0.5'))} / {_f(d['max'])}")
    if r["spectral"]:
        lines.append(f"spectral: B0 = {_f(r['spectral']['B0'])}, B = {_f(r['spectral']['B'])} "
                     f"({r['spectral']['num_examples']} examples)")
    pr = r["pairs"]
    lines.append(f"ambiguous pairs ({pr['mode']}, {pr['split']} pool {pr['pool_size']}): {pr['num_pairs']}, "
                 f"distance <= {_f(pr['tau'])}, implied J {_f(pr['implied_J_kth'])}")
    if (pr.get("definition_4_3") or {}).get("verdict"):
        lines.append(pr["definition_4_3"]["verdict"])
    if r["conditions"].get("assumption"):
        lines.append(f"Assumption 4.4 over the members, per ordering: {r['conditions']['assumption']['verdict']}")
    lines.append(f"Assumption 4.4 (J={r['conditions']['J']}) per classifier: condition 1 (share of orderings) / "
                 "condition 2:")
    for name, c in r["conditions"]["targets"].items():
        lines.append(f"  {name:18s} {_f(c['condition1'], '.3f')} / {_f(c['condition2'], '.3f')}")
    z = r["zero_one"]
    if z:
        lines.append(f"0-1 loss on A(D) ({z['ci_method']} {z['confidence']:.0%} CI):")
        for key in ("single", "average", "max"):
            lines.append(f"  {key:8s} {_f(z[key]['mean'], '.3f')} [{_f(z[key]['low'], '.3f')}, {_f(z[key]['high'], '.3f')}]")
        for comb in ("average", "max"):
            d = z["differences"][f"{comb}_minus_single"]
            lines.append(f"  {comb} - single {_f(d['mean'], '+.3f')} [{_f(d['low'], '+.3f')}, {_f(d['high'], '+.3f')}] "
                         f"({z.get('interval_basis', 'pairs_only')})")
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)
