"""The ``igat`` command line. Each sub-command lives in its own module with a
``register(subparsers)`` function; the list below is the whole CLI."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "igat.cli.train",       # igat train, igat defaults
    "igat.cli.evaluate",    # igat eval
    "igat.cli.report",      # igat report
    "igat.cli.ablate",      # igat ablate
    "igat.cli.theory",      # igat theory
    "igat.cli.checkpoint",  # igat checkpoint convert / inspect
    "igat.cli.study",       # igat study
    "tasks.cli",            # igat worker / up / runs / submit (imports the queue lazily)
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="igat", description="iGAT Lab: ensemble adversarial-defense experiments")
    parser.add_argument("--version", action="version", version=f"igat-lab {__import__('igat').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from igat.errors import CheckpointError  # torch-free: commands that train nothing start without PyTorch

    try:
        return int(args.func(args) or 0)
    except CheckpointError as exc:  # a refused or unusable checkpoint is the user's file, not our bug: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
