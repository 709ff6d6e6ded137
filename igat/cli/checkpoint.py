"""``igat checkpoint``: convert checkpoints of the older format once, and inspect a checkpoint safely."""

from __future__ import annotations

import argparse
import json

from igat.cli.common import fail


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checkpoint", help="convert an older checkpoint to the safe format, or inspect one",
                       description="Checkpoints are read with torch.load(weights_only=True): tensors and plain "
                       "types only. Checkpoints written before that format stored numpy RNG state and are refused; "
                       "`igat checkpoint convert` rewrites them once (reading numpy arrays only, never running code).")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    conv = verbs.add_parser("convert", help="rewrite an igat-checkpoint-v1 file in the current format")
    conv.add_argument("path", help="checkpoint file or run directory (holding last.pt)")
    conv.add_argument("--out", default=None, help="write here instead of replacing PATH")
    conv.set_defaults(func=_convert)
    show = verbs.add_parser("inspect", help="print a checkpoint's format, epoch, run binding and model")
    show.add_argument("path", help="checkpoint file or run directory (holding last.pt)")
    show.set_defaults(func=_inspect)


def _convert(args: argparse.Namespace) -> int:
    from igat.training.checkpoint import convert_checkpoint

    out = convert_checkpoint(args.path, args.out)
    print(f"converted: {out}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from igat.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.path)
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    if not config:
        return fail(f"{args.path} holds no config")
    summary = {"format": ckpt.get("format"), "epoch": ckpt.get("epoch"), "binding": ckpt.get("binding"),
               "name": config.get("name"), "defense": config.get("defense", {}).get("name"),
               "igat": config.get("igat", {}).get("enabled"), "model": config.get("model"),
               "metrics": ckpt.get("metrics")}
    print(json.dumps(summary, indent=2, default=str))
    return 0
