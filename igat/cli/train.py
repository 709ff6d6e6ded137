"""``igat train CONFIG`` and ``igat defaults DEFENSE`` / ``igat config``."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from igat.cli.common import (
    check_init_checkpoint,
    fail,
    format_config_error,
    load_config,
    output_dir_for,
    prepare_output_dir,
)
from igat.config import ConfigError, ExperimentConfig, deep_merge


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train (or fine-tune with iGAT) an ensemble from a YAML/JSON config")
    p.add_argument("config", help="experiment config file (YAML or JSON)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="overrides config.device")
    p.add_argument("--output-dir", default=None,
                   help="checkpoint directory, used as given (default: the config's output_dir, which must lie inside "
                   "the runs folder ./runs or $IGAT_RUNS_DIR, else RUNS/NAME-seedSEED)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT_DIR/last.pt exists")
    p.add_argument("--eval", action="store_true", help="run the config's evaluation after training")
    p.set_defaults(func=run_train)

    d = sub.add_parser("config", help="print a default or example config (YAML) to start from")
    d.add_argument("--defense", default="pgd_at", help="defense name (its recommended settings are applied)")
    d.add_argument("--igat", action="store_true", help="enable iGAT with the paper's defaults for that defense")
    d.add_argument("--preset", choices=["paper", "reference-code"], default="paper")
    d.add_argument("--protocol", choices=["paper", "quick", "default"], default="paper",
                   help="evaluation protocol written into eval (igat.protocols): paper (default; full test set, CW on "
                        "1,000), quick (1,000 / 500 examples) or default (natural + PGD-20 on 1,000)")
    d.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    d.set_defaults(func=run_config)

    ls = sub.add_parser("list", help="list registered defenses, attacks and combiners")
    ls.set_defaults(func=run_list)


def run_train(args: argparse.Namespace) -> int:
    from igat.data import DataNotFoundError
    from igat.training import NonFiniteLossError, Trainer

    try:
        overrides = list(args.overrides)
        if args.device:
            overrides.append(f"device={args.device}")
        cfg = load_config(args.config, overrides)
        # Everything the user can get wrong is checked here, before data loading and training.
        output_dir = output_dir_for(cfg, args.output_dir)
        check_init_checkpoint(cfg, output_dir, resume=not args.no_resume)
        prepare_output_dir(output_dir, "--output-dir" if args.output_dir else "output_dir")
    except ConfigError as exc:
        return fail(format_config_error(exc))
    try:
        from igat.cli.progress import ProgressBar

        trainer = Trainer(cfg, [ProgressBar(cfg.train.epochs)], output_dir=output_dir, resume=not args.no_resume)
        result = trainer.fit()
    except DataNotFoundError as exc:
        return fail(str(exc))
    except NonFiniteLossError as exc:
        return fail(str(exc), code=3)
    print(f"\n{cfg.display_name} ({cfg.preset} preset), {cfg.model.num_members} members, {result.epochs_completed} epochs "
          f"in {result.seconds:.1f}s")
    print(f"checkpoint: {result.checkpoint}")
    for k, v in result.final_metrics.items():
        if k.startswith("test_") and "member_" not in k:
            print(f"  {k:28s} {v:.4f}")
    if args.eval:
        from igat.cli.evaluate import announce
        from igat.evaluation import evaluate_checkpoint

        rows = evaluate_checkpoint(result.checkpoint, device=str(trainer.device), on_prepared=announce)
        for r in rows:
            if r.target == "ensemble":
                print(f"  eval {r.combiner:8s} {r.attack:12s} {r.accuracy:.4f}  n={r.num_examples} "
                      f"[{r.ci_low:.4f}, {r.ci_high:.4f}]")
    return 0


def run_config(args: argparse.Namespace) -> int:
    from igat.specs.defenses import DEFENSE_SPECS

    try:
        cls = DEFENSE_SPECS.get(args.defense)
    except KeyError as exc:
        return fail(str(exc))
    data = ExperimentConfig().to_dict()
    data["defense"] = {"name": args.defense, "params": cls.Params().model_dump(mode="json")}
    deep_merge(data, cls.recommended)
    data["name"] = args.defense
    cfg = ExperimentConfig.from_dict(data)
    if args.igat:
        from igat.presets import apply_preset, igat_defaults

        cfg = ExperimentConfig.from_dict(deep_merge(cfg.to_dict(), igat_defaults(args.defense, cfg.data.dataset)))
        cfg = apply_preset(cfg, args.preset)
    elif args.preset != "paper":
        from igat.presets import apply_preset

        cfg = apply_preset(cfg, args.preset)
    if args.protocol != "default":
        from igat.protocols import apply_protocol

        cfg = apply_protocol(cfg, args.protocol)
    out = cfg.to_dict()
    sys.stdout.write(json.dumps(out, indent=2) + "\n" if args.json else yaml.safe_dump(out, sort_keys=False))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from igat.specs.attacks import ATTACK_SPECS
    from igat.specs.combiners import combiner_names
    from igat.specs.defenses import DEFENSE_SPECS

    print("defenses:")
    for n in DEFENSE_SPECS.names():
        print(f"  {n:12s} {DEFENSE_SPECS.get(n).description}")
    print("attacks:")
    for n in ATTACK_SPECS.names():
        print(f"  {n:12s} {ATTACK_SPECS.get(n).summary}")
    print("combiners: " + ", ".join(combiner_names()))
    return 0

