"""Interleaved A/B of two checkouts of the dashboard: which pages got faster, measured in the same minutes.

The machine's speed drifts by tens of percent within minutes (the benchmark's one-line floor page took 0.45-0.75 s
in one afternoon), so two runs of ``dashboard_pages.py`` at different times cannot say whether a change helped. This
script starts both dashboards (``A``: ``--a``, e.g. a ``git worktree`` of an older commit; ``B``: ``--b``, default
this checkout) on one store, and loads each page alternately from A and B (ABAB, then BABA, ...) ``--visits``
times, timed like ``dashboard_pages.py``. Printed per page: the median of each and B - A.

Usage:
  git worktree add /tmp/igat-old <commit>
  python benchmarks/dashboard_ab.py --a /tmp/igat-old [--b .] [--visits 8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dashboard_pages as B  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="checkout A (its app/main.py is started)")
    ap.add_argument("--b", default=str(B.ROOT), help="checkout B (default: this one)")
    ap.add_argument("--visits", type=int, default=8)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--keep", default=None, help="the store's folder: reused when it holds igat.db, else filled")
    args = ap.parse_args()
    roots = {"A": Path(args.a).resolve(), "B": Path(args.b).resolve()}
    for name, root in roots.items():
        if not (root / "app" / "main.py").is_file():
            raise SystemExit(f"error: --{name.lower()} {root} has no app/main.py")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="igat-dash-ab-"))
    work.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{work / 'igat.db'}"
    if not (work / "igat.db").exists():
        print(f"store: {B.fill_store(url, args.runs, 100, 100_000, 11_000)}", flush=True)
    n = args.runs
    some = ",".join(str(i) for i in range(n - 49, n + 1))
    paths = [f"/?run={n}", f"/live?run={n}", f"/compare?runs={n},{n - 1}", f"/compare?runs={some}",
             f"/members?run={n}", "/ablation", "/studies", "/theory", "/launch"]
    servers, bases = [], {}
    from playwright.sync_api import sync_playwright

    try:
        for name, root in roots.items():
            server, bases[name] = B.start_streamlit(root / "app" / "main.py", root, B.dashboard_env(url, work))
            servers.append(server)
        for name, base in bases.items():
            B.wait_healthy(base, 90, f"dashboard {name}")
        times: dict[tuple[str, str], list[float]] = {(k, p): [] for k in bases for p in paths}
        with sync_playwright() as p:
            browser = B.launch_browser(p)
            pages = {k: B.new_page(browser) for k in bases}
            for k in bases:  # every page's code and data once, untimed
                for path in paths:
                    B.settle_seconds(pages[k], bases[k] + path)
            for i in range(args.visits):
                for path in paths:
                    for k in ("A", "B") if i % 2 == 0 else ("B", "A"):
                        times[(k, path)].append(B.settle_seconds(pages[k], bases[k] + path))
            browser.close()
        print(f"\nmedians of {args.visits} interleaved full loads; A = {roots['A']}, B = {roots['B']}\n")
        print("| page | A (s) | B (s) | B - A (s) |\n|---|---|---|---|")
        for path in paths:
            a, b = statistics.median(times[("A", path)]), statistics.median(times[("B", path)])
            shown = path if len(path) < 40 else path[:30] + "... (50 runs)"
            print(f"| `{shown}` | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    finally:
        for server in servers:
            B.stop(server)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
