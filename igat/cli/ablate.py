"""``igat ablate``: the Table 3 ablation (distributing rules, beta = 0) from one base ensemble.

    igat ablate config.yaml --base runs/adp-seed0/last.pt --seeds 0 1 2 3 4
    igat ablate config.yaml --preset paper --base-set train.epochs=200 --set train.epochs=20

The config's defense is the base; its ``igat`` section (plus ``--preset`` and ``--set``) is the
fine-tuning recipe shared by every variant. Without ``--base`` the base is trained first from the same
config with iGAT switched off (plus ``--base-set`` overrides).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from igat.config import ConfigError, ExperimentConfig, with_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ablate", help="iGAT ablation (Table 3): opposite/random/hard rules, beta=0, full iGAT",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="experiment config (YAML or JSON)")
    p.add_argument("--base", default=None, help="baseline checkpoint to fine-tune from (default: train the base first)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="fine-tuning seeds (default: the config's seed)")
    p.add_argument("--preset", choices=["paper", "reference-code"], default=None, help="apply an iGAT preset first")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a fine-tuning config field (repeatable), e.g. igat.alpha=5")
    p.add_argument("--base-set", dest="base_overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the base run (repeatable), e.g. train.epochs=200")
    p.add_argument("--combiner", choices=["average", "max"], default="average", help="combiner evaluated (Table 3: average)")
    p.add_argument("--output", default=None, help="root directory for the runs (default runs/<name>-seed<seed>-ablation)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's)")
    p.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    p.set_defaults(func=run)


def _configs(args: argparse.Namespace) -> tuple[ExperimentConfig, ExperimentConfig]:
    from igat.ablation import base_config_of
    from igat.presets import apply_preset

    loaded = ExperimentConfig.load(args.config)
    base = with_overrides(base_config_of(loaded), args.base_overrides)
    tuned = apply_preset(loaded, args.preset) if args.preset else loaded
    tuned = with_overrides(tuned, args.overrides)
    return tuned, base


def run(args: argparse.Namespace) -> int:
    from igat.ablation import format_table, run_ablation
    from igat.cli.common import fail, format_config_error, output_dir_for, prepare_output_dir

    try:
        tuned, base = _configs(args)
        # --output is the user's own choice; the default comes from the config file's output_dir or
        # name, which must stay inside the runs folder like `igat train`'s.
        root = Path(args.output) if args.output else Path(f"{output_dir_for(tuned)}-ablation")
        if args.base and not Path(args.base).exists():
            return fail(f"--base checkpoint not found: {args.base}")
        prepare_output_dir(root, "--output" if args.output else "output_dir")
        if args.json:
            prepare_output_dir(Path(args.json).parent, "--json")
    except ConfigError as exc:
        return fail(format_config_error(exc))
    result = run_ablation(
        tuned, base_checkpoint=args.base, seeds=args.seeds, output_root=root, base_config=base,
        combiner=args.combiner, device=args.device, progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2))
    return 0
