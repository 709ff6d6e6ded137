"""``igat report RESULTS... --out DIR``: the paper's Tables 1-3 from evaluation results.

RESULTS are ``eval.csv`` / ``eval.json`` files written by ``igat eval``, or directories searched
recursively for them (``eval.csv`` preferred when a directory has both). Writes
``table1``, ``table2`` and ``table3_<method>`` as .csv, .md and .tex into DIR, and prints
Table 1 plus any sanity flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from igat.eval_plan import EVAL_CSV, EVAL_JSON


def find_result_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            csvs = sorted(p.rglob(EVAL_CSV))
            have = {c.parent for c in csvs}
            files += csvs + [j for j in sorted(p.rglob(EVAL_JSON)) if j.parent not in have]
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"results not found: {p}")
    if not files:
        raise FileNotFoundError(f"no {EVAL_CSV} or {EVAL_JSON} under {', '.join(paths)}")
    return files


def load_results(paths: list[str]):
    """One tidy DataFrame from eval.csv / eval.json files (or directories holding them)."""
    import pandas as pd

    frames = []
    for f in find_result_files(paths):
        if f.suffix == ".json":
            records = json.loads(f.read_text())
            if not isinstance(records, list):
                raise ValueError(f"{f}: expected a list of result rows")
            frame = pd.DataFrame([{k: v for k, v in r.items() if k != "extra"} for r in records])
        else:
            frame = pd.read_csv(f, keep_default_na=True)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="build the paper's Tables 1-3 (CSV, Markdown, LaTeX) from eval results",
        description="Aggregate eval.csv/eval.json results over seeds into Table 1 (mean ± std), Table 2 "
                    "(relative improvement of iGAT_X over X) and Table 3 (ablations).",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="eval.csv / eval.json files or directories")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--unit", choices=["fraction", "percent"], default="fraction",
                   help="unit of the accuracy column (igat eval writes fractions)")
    p.add_argument("--ablation-combiner", default="average", help="combiner of Table 3 (default: average)")
    p.set_defaults(func=run)


def _write(out: Path, stem: str, frame, render) -> list[Path]:
    written = []
    for fmt, ext in (("csv", "csv"), ("markdown", "md"), ("latex", "tex")):
        path = out / f"{stem}.{ext}"
        path.write_text(render(frame, fmt))
        written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    from igat import reports
    from igat.sanity import check_results, format_flags

    try:
        df = load_results(args.results)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        t1 = reports.table1(df, args.unit)
        written = _write(out, "table1", t1, reports.render_table1)
        t2 = reports.table2(df, args.unit)
        if len(t2):
            written += _write(out, "table2", t2, reports.render_table2)
        else:
            print("Table 2 skipped: no method has both X and iGAT_X results", file=sys.stderr)
        for method in reports.ablation_methods(df):
            try:
                t3 = reports.table3(df, method, args.ablation_combiner, unit=args.unit)
            except ValueError as exc:
                print(f"Table 3 for {method} skipped: {exc}", file=sys.stderr)
                continue
            written += _write(out, f"table3_{method}", t3, reports.render_table3)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(reports.render_table1(t1, "markdown"))
    flags = check_results(df, percent=args.unit == "percent")
    if flags:
        print("Sanity flags:")
        print(format_flags(flags))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
