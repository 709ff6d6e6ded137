"""How fast does every dashboard page settle with a store of 500 runs? (issue 16's performance goal)

Fills a fresh SQLite store with ``--runs`` runs (default 500) in ``--experiments`` experiments, ``--metrics``
metric rows (default 100,000), ``--results`` evaluation rows (default 11,000) and member statistics, starts the
dashboard alone (``streamlit run app/main.py``: no worker, no broker - the pages only read the store) and
visits every page in Debian's headless Chromium through Playwright, twice (a first and a repeated visit).

A page has *settled* when Streamlit's script run is over (the app root reports ``notRunning``, the "running"
status widget is gone) and its charts and dataframes are drawn; it is checked on every animation frame and timed by
the page's own clock from the start of the navigation (``SETTLED_JS``). Printed per page: the seconds from
navigation to settled for each visit, and the dashboard process's resident memory after it, plus whether PyTorch is loaded in that process (its
shared library mapped), since no page may import it. The goal is every page under 1.5 s.

With ``--repeat K`` the whole tour is made K times, each in a fresh browser context (empty cache, so every
tour's first visits fetch the page's scripts again), and the table shows the median of the K first visits, of the
K repeated visits and of K warm script runs: single visits vary by about +-0.6 s on a 2-core machine. ``--pages``
visits only the named pages (comma-separated, case-insensitive prefixes of the names in the table:
``--pages live,compare`` is Live and both Compare rows), still after the Runs page that opens every tour.

Each tour then reaches the same pages from the sidebar, as a user moves between them: one click per page in one
session (no page load; Streamlit swaps the page's content over its open connection), timed from the click until the
new page's title is up, nothing of the old page is left and the page has settled (``NAVIGATED_JS``). The sidebar
opens Live and Members on their default run (the running one, or the newest) and Compare on the session's last
selection, which the tour sets to the two runs of "Compare (2 runs)" first.

Each tour opens its browser context on "/" and on the Live page of run 20 (finished; the last run if fewer) before
timing anything: the first connection (websocket, Streamlit's scripts) and the first Plotly chart a browser draws are
paid once per browser, not per page. Plotly's once-per-browser cost is measured apart: a one-chart page on its own
server, its first load in a fresh context (opened on a chart-less page) against its second. (Until 2026-12-04 the
tours did not draw a chart first, and the first page with a chart, Live, carried that cost in its "first visit".)

Two more references are measured the same way (K tours, medians): Streamlit's floor, a one-line page on its own
server, and the dashboard's shell, ``app/main.py`` with every page's body replaced by its title (navigation, page
config, theme), which is what any page of this dashboard costs before its content.

Usage:
  python benchmarks/dashboard_pages.py [--runs 500] [--metrics 100000] [--results 11000] [--keep DIR]
                                       [--pages NAME,...] [--repeat K]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
DEFENSES = ["adp", "gal", "trs", "dverge", "cldl", "soe"]
ATTACKS = ["natural", "pgd", "cw", "signhunter", "autoattack"]
GOAL_SECONDS = 1.5


def fill_store(url: str, runs: int, experiments: int, metric_rows: int, results: int, seed: int = 0) -> dict[str, int]:
    """A store shaped like a busy lab's: groups of seeds and ablations, mostly finished runs, a few active."""
    from sqlmodel import Session

    from igat.config import ExperimentConfig
    from tasks.store import EvalResult, Experiment, MemberStatRow, Metric, Run, init_db, utcnow

    rng = random.Random(seed)
    engine = init_db(url)
    base_config = ExperimentConfig().to_dict()
    now = utcnow()
    per_run_metrics = max(metric_rows // runs, 8)
    per_run_results = max(results // runs, 2)
    counts = {"runs": 0, "metrics": 0, "results": 0, "member_stats": 0}
    with Session(engine) as s:
        exps = []
        for e in range(experiments):
            kind = rng.choice(["seeds", "seeds", "ablation", "single"])
            exps.append(Experiment(name=f"exp-{e}-{kind}", kind=kind, created_at=now - timedelta(hours=experiments - e)))
        s.add_all(exps)
        s.flush()
        run_objs = []
        for r in range(runs):
            exp = exps[r % experiments]
            defense, igat = rng.choice(DEFENSES), rng.random() < 0.5
            config = json.loads(json.dumps(base_config))
            config["defense"] = {"name": defense, "params": {}}
            config["igat"]["enabled"] = igat
            config["seed"] = r % 5
            config["name"] = f"{defense}-{r}"
            status = "succeeded" if r >= 10 else rng.choice(["running", "queued", "failed", "cancelled"])
            created = now - timedelta(minutes=5 * (runs - r))
            run_objs.append(Run(
                experiment_id=exp.id, name=config["name"], kind="train", config_json=json.dumps(config),
                dataset="cifar10", defense=defense, igat=igat, seed=r % 5, tags=rng.choice(["", "paper", "cpu,quick"]),
                variant=rng.choice(["", "hard", "beta0"]) if exp.kind == "ablation" else f"seed{r % 5}",
                status=status, progress=1.0 if status == "succeeded" else 0.4, epoch=5, total_epochs=5,
                created_at=created, started_at=created + timedelta(seconds=30),
                finished_at=None if status in ("running", "queued") else created + timedelta(minutes=4),
                heartbeat_at=now, worker="bench@host", checkpoint_path=f"/nonexistent/run-{r}/last.pt"))
        s.add_all(run_objs)
        s.flush()
        counts["runs"] = len(run_objs)
        for run in run_objs:
            epochs = 5
            epoch_names = ["train_loss", "test_nat_acc_average", "test_pgd_acc_average", "epoch_seconds"]
            steps = per_run_metrics - epochs * len(epoch_names)
            for i in range(steps):
                s.add(Metric(run_id=run.id, scope="step", step=i, epoch=i * epochs // max(steps, 1), name="train_loss",
                             value=2.3 * (0.995 ** i) + rng.random() * 0.05))
            for ep in range(1, epochs + 1):
                for name in epoch_names:
                    value = {"train_loss": 2.0 / ep, "test_nat_acc_average": 0.4 + 0.08 * ep + rng.random() * 0.02,
                             "test_pgd_acc_average": 0.1 + 0.05 * ep, "epoch_seconds": 40.0}[name]
                    s.add(Metric(run_id=run.id, scope="epoch", step=ep, epoch=ep, name=name, value=value))
            counts["metrics"] += per_run_metrics
            if run.status != "succeeded":
                continue
            made = 0
            for target in ["ensemble"] + [f"member_{m}" for m in range(8)]:
                for combiner in ("average", "max"):
                    for attack in ATTACKS:
                        if made >= per_run_results:
                            break
                        acc = rng.uniform(0.05, 0.9) if attack != "natural" else rng.uniform(0.6, 0.9)
                        s.add(EvalResult(run_id=run.id, target=target, combiner=combiner, attack=attack, accuracy=acc,
                                         num_examples=1000, ci_low=acc - 0.03, ci_high=acc + 0.03,
                                         eval_key=f"bench-{run.id}-{made}"))
                        made += 1
            counts["results"] += made
            for ep in range(1, 6):
                for m in range(8):
                    s.add(MemberStatRow(run_id=run.id, epoch=ep, member=m, statistic="allocated", value=rng.random()))
                    counts["member_stats"] += 1
        s.commit()
    return counts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, timeout: float, what: str) -> None:
    """Until the Streamlit server at ``base`` answers its health check; exits with one line after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/_stcore/health", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"error: {what} did not start within {timeout:.0f} s") from None
            time.sleep(0.3)


def start_streamlit(script: Path, cwd: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``streamlit run script`` alone on a free loopback port (output discarded); the process and its base URL."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
                               "--server.address", "127.0.0.1", "--server.headless", "true"],
                              cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, f"http://127.0.0.1:{port}"


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()


def launch_browser(playwright):
    """Debian's headless Chromium, as every measurement here uses it."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])


def new_page(browser):
    """A page in a fresh browser context (empty cache) with the window size every measurement uses."""
    return browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()


def dashboard_env(url: str, work: Path) -> dict[str, str]:
    """The environment of a dashboard that reads the store at ``url`` alone (no broker: the pages only read)."""
    env = {**os.environ, "IGAT_DATABASE_URL": url, "IGAT_HOME": str(work / "home")}
    env.pop("IGAT_BROKER_URL", None)
    return env


def rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def torch_loaded(pid: int) -> bool:
    """Whether the process has PyTorch's shared library mapped (i.e. some page imported torch)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


# A page has settled when Streamlit's script run is over (the app root says ``notRunning``: it says ``initial``
# until the first run ends), the "running" status widget is gone, and what the run sent has been drawn: every
# Plotly chart has its SVG (Plotly draws after its element mounts) and no element is still a loading skeleton
# (charts, dataframes, even Markdown load their code lazily, and may arrive after the script run is over).
SETTLED_JS = """() => {
  const app = document.querySelector('[data-testid=stApp]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return 0;
  if (document.querySelector('[data-testid=stStatusWidget], [data-testid=stSkeleton]')) return 0;
  for (const chart of document.querySelectorAll('[data-testid=stPlotlyChart]'))
    if (!chart.querySelector('.main-svg')) return 0;
  return performance.now() / 1000;
}"""


def settle_seconds(page, url: str) -> float:
    """Seconds from the start of the navigation to settled, read from the page's own clock.

    The condition is checked on every animation frame (``polling="raf"``, ~16 ms). Playwright's
    ``wait_for_selector`` checks at 0, 20, 50, 100, 100 ms and then only every 500 ms, so timings taken with it
    come in steps of about half a second (a page that settles at 0.55 s reads ~1.0 s): this script used it
    until 2026-12-03, and its earlier tables carry that error."""
    page.goto(url)  # "load": the old document, which had settled, is gone
    return float(page.wait_for_function(SETTLED_JS, polling="raf", timeout=120_000).json_value())


# The same condition after a click on a sidebar link (no page load: Streamlit swaps the page's elements over its open
# connection, as it does for every page change inside the dashboard). Before the new page's script run has begun,
# the old page is still there and may be settled, so the new page's title must be up and no element of the old
# page left (Streamlit marks them stale until the run that replaces them ends).
NAVIGATED_JS = """(title) => {
  const heading = document.querySelector('[data-testid=stMain] h1');
  if (!heading || !heading.innerText.trim().startsWith(title)) return 0;
  if (document.querySelector('[data-testid=stElementContainer][data-stale=true]')) return 0;
  if (!(""" + SETTLED_JS + """)()) return 0;
  return (performance.now() - window.__igatClickedAt) / 1000;
}"""


def sidebar_seconds(page, label: str, title: str) -> float:
    """Seconds from a click on the sidebar link ``label`` until the page titled ``title`` has settled."""
    page.evaluate("""(label) => {
      const link = [...document.querySelectorAll('[data-testid=stSidebarNavLink]')]
        .find(a => a.querySelector('span[label]')?.getAttribute('label') === label);
      if (!link) throw new Error('no sidebar link ' + label);
      window.__igatClickedAt = performance.now();
      link.click();
    }""", label)
    return float(page.wait_for_function(NAVIGATED_JS, arg=title, polling="raf", timeout=120_000).json_value())


def script_seconds(url: str, page: str, query: dict[str, str], repeat: int = 1) -> float:
    """The server's share: the median of ``repeat`` warm script runs of the page (AppTest, in this process, same
    store)."""
    from streamlit.testing.v1 import AppTest

    os.environ["IGAT_DATABASE_URL"] = url
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page != "runs":
        at.switch_page(f"views/{page}.py")
    at.run()  # first visit: imports, caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _visits(script: Path, paths: list[str], tours: int, what: str) -> tuple[float, float]:
    """Medians of the first and the repeated full load of each of ``paths`` on a server of ``script`` alone, over
    ``tours`` fresh browser contexts (each opened at "/" first, as the dashboard's tours are)."""
    from playwright.sync_api import sync_playwright

    server, url = start_streamlit(script, script.parent)
    firsts, agains = [], []
    try:
        wait_healthy(url, 60, what)
        with sync_playwright() as p:
            browser = launch_browser(p)
            for _ in range(tours):
                page = new_page(browser)
                settle_seconds(page, url + "/")
                for path in paths:
                    firsts.append(settle_seconds(page, url + path))
                    agains.append(settle_seconds(page, url + path))
                page.context.close()
            browser.close()
        return statistics.median(firsts), statistics.median(agains)
    finally:
        stop(server)


def floor_seconds(work: Path, tours: int = 1) -> tuple[float, float]:
    """A full load of a one-line Streamlit page (no store, no charts): what any page costs in this browser on this
    machine before the dashboard does anything."""
    script = work / "floor.py"
    script.write_text("import streamlit as st\nst.write('floor')\n")
    return _visits(script, ["/"], tours, "the floor page's server")


def plotly_once_seconds(work: Path, tours: int = 1) -> tuple[float, float]:
    """Full loads of a page with one small Plotly chart on its own server, in a fresh browser context opened on a
    chart-less page first: the first load evaluates Plotly's code for the first time in that browser, the second
    reuses the compiled code. Their difference is paid once per browser (and Streamlit version: the chunk's name
    holds its hash), on whichever page draws the browser's first chart; the tours pay it before their pages."""
    script = work / "plotly_once.py"
    script.write_text("import streamlit as st\nimport plotly.graph_objects as go\n\nst.write('plotly')\n"
                      "if st.query_params.get('chart'):\n"
                      "    st.plotly_chart(go.Figure(go.Scatter(y=[1, 3, 2, 4])))\n")
    return _visits(script, ["/?chart=1"], tours, "the Plotly reference page's server")


def shell_seconds(work: Path, tours: int = 1) -> tuple[float, float]:
    """A full load of the dashboard with every page's body replaced by its title: the navigation, page config and
    theme of ``app/main.py`` and nothing else, i.e. what a page of this dashboard costs before its content."""
    shell = work / "shell"
    shutil.rmtree(shell, ignore_errors=True)
    shutil.copytree(ROOT / "app", shell / "app", ignore=shutil.ignore_patterns("__pycache__"))
    if (ROOT / ".streamlit").is_dir():
        shutil.copytree(ROOT / ".streamlit", shell / ".streamlit")
    for view in (shell / "app" / "views").glob("*.py"):
        view.write_text(f"import streamlit as st\n\nst.title({view.stem!r})\n")
    return _visits(shell / "app" / "main.py", ["/", "/live", "/compare"], tours, "the dashboard shell's server")


# Each page's sidebar link and the start of its title. Compare (50 runs) has no row of its own there: the sidebar
# opens Compare with the session's last selection, which the tour sets to the two runs of "Compare (2 runs)".
SIDEBAR = {"Runs": ("Runs", "Runs"), "Live": ("Live training", "Live training"),
           "Compare (2 runs)": ("Compare", "Compare"), "Members": ("Members", "Member statistics"),
           "Ablation": ("Ablation", "Ablation"), "Studies": ("Studies", "Studies"), "Theory": ("Theory", "Theory"),
           "Launch": ("Launch", "Launch")}


def selected_pages(pages: list[tuple[str, str]], wanted: str) -> list[tuple[str, str]]:
    """The pages whose names start with one of the comma-separated ``wanted`` names (any case); all when empty."""
    prefixes = [w.strip().lower() for w in wanted.split(",") if w.strip()]
    if not prefixes:
        return pages
    chosen = [(name, path) for name, path in pages if any(name.lower().startswith(w) for w in prefixes)]
    if not chosen:
        raise SystemExit(f"error: --pages {wanted!r} names none of: {', '.join(name for name, _ in pages)}")
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--experiments", type=int, default=100)
    ap.add_argument("--metrics", type=int, default=100_000)
    ap.add_argument("--results", type=int, default=11_000)
    ap.add_argument("--keep", default=None, help="keep the store in this folder (default: a temporary one)")
    ap.add_argument("--pages", default="", help="comma-separated page names (prefixes, any case) to visit; default all")
    ap.add_argument("--repeat", type=int, default=1, help="tours of the pages; the table shows medians (default 1)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="igat-dash-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{work / 'igat.db'}"
    t0 = time.perf_counter()
    counts = fill_store(url, args.runs, args.experiments, args.metrics, args.results)
    print(f"store: {counts} in {time.perf_counter() - t0:.1f} s ({url})", flush=True)

    server, base = start_streamlit(ROOT / "app" / "main.py", ROOT, dashboard_env(url, work))
    try:
        wait_healthy(base, 90, "the dashboard")
        print(f"dashboard up, {rss_mb(server.pid):.0f} MB", flush=True)
        some = ",".join(str(i) for i in range(args.runs - 49, args.runs + 1))  # 50 evaluated runs on Compare
        warm_run = min(20, args.runs)  # draws the tours' first chart; a finished run (no refresh) when there are 11+
        pages = [("Runs", "/"), ("Live", f"/live?run={args.runs}"), ("Compare (2 runs)", f"/compare?runs={args.runs},{args.runs - 1}"),
                 ("Compare (50 runs)", f"/compare?runs={some}"), ("Members", f"/members?run={args.runs}"),
                 ("Ablation", "/ablation"), ("Studies", "/studies"), ("Theory", "/theory"), ("Launch", "/launch")]
        pages = selected_pages(pages, args.pages)
        scripts = {}
        for name, path in pages:
            page = path.strip("/").split("?")[0] or "runs"
            query = dict(q.split("=", 1) for q in path.split("?", 1)[1].split("&")) if "?" in path else {}
            scripts[name] = script_seconds(url, page, query, args.repeat)
        from playwright.sync_api import sync_playwright

        floor, shell = floor_seconds(work, args.repeat), shell_seconds(work, args.repeat)
        plotly_once = plotly_once_seconds(work, args.repeat)
        visits: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _ in pages}
        clicks: dict[str, list[float]] = {name: [] for name, _ in pages if name in SIDEBAR}
        memory: dict[str, tuple[float, bool]] = {}
        with sync_playwright() as p:
            browser = launch_browser(p)
            for tour in range(args.repeat):
                page = new_page(browser)
                # The first connection (websocket, static assets) and the first chart a browser draws (Plotly's code
                # evaluated once per browser, measured apart by plotly_once_seconds) are not a page's cost.
                settle_seconds(page, base + "/")
                settle_seconds(page, base + f"/live?run={warm_run}")
                for name, path in pages:
                    first = settle_seconds(page, base + path)
                    again = settle_seconds(page, base + path)
                    visits[name][0].append(first)
                    visits[name][1].append(again)
                    memory[name] = (rss_mb(server.pid), torch_loaded(server.pid))
                    print(f"{name:18s} first {first:5.2f} s  again {again:5.2f} s  script {scripts[name]:5.2f} s  "
                          f"rss {memory[name][0]:6.0f} MB  torch {memory[name][1]}"
                          + (f"  (tour {tour + 1} of {args.repeat})" if args.repeat > 1 else ""), flush=True)
                # The same pages reached from the sidebar, in one session that picked Compare's two runs first.
                settle_seconds(page, base + f"/compare?runs={args.runs},{args.runs - 1}")
                current = "Compare"
                for name in clicks:
                    label, title = SIDEBAR[name]
                    if title == current:  # already there: leave first, so that the click changes the page
                        sidebar_seconds(page, *SIDEBAR["Runs" if name != "Runs" else "Launch"])
                    clicks[name].append(sidebar_seconds(page, label, title))
                    current = title
                print("via the sidebar: " + ", ".join(f"{name} {clicks[name][-1]:.2f} s" for name in clicks)
                      + (f"  (tour {tour + 1} of {args.repeat})" if args.repeat > 1 else ""), flush=True)
                page.context.close()
            browser.close()
        rows = [(name, statistics.median(visits[name][0]), statistics.median(visits[name][1]),
                 statistics.median(clicks[name]) if name in clicks else None, scripts[name], *memory[name])
                for name, _ in pages]
        print(f"\nStreamlit's own floor (a one-line page on its own server, same browser): first {floor[0]:.2f} s, "
              f"again {floor[1]:.2f} s")
        print(f"The dashboard's shell (app/main.py with every page's body replaced by its title): first {shell[0]:.2f} s, "
              f"again {shell[1]:.2f} s")
        print(f"A new browser's first Plotly chart (a one-chart page, fresh context): first {plotly_once[0]:.2f} s, "
              f"again {plotly_once[1]:.2f} s: {plotly_once[0] - plotly_once[1]:+.2f} s once per browser, on whichever "
              f"page draws its first chart (each tour pays it before its pages, on /live?run={warm_run})")
        worst = max(max(r[1], r[2]) for r in rows)
        worst_click = max((r[3] for r in rows if r[3] is not None), default=None)
        if args.repeat > 1:
            print(f"\nmedians of {args.repeat} tours")
        print("\n| page | first visit (s) | again (s) | via the sidebar (s) | server script run (s) "
              "| dashboard RSS after (MB) | torch loaded |\n|---|---|---|---|---|---|---|")
        for name, first, again, click, script, rss, torch in rows:
            print(f"| {name} | {first:.2f} | {again:.2f} | {'-' if click is None else f'{click:.2f}'} | {script:.2f} "
                  f"| {rss:.0f} | {'yes' if torch else 'no'} |")
        print(f"\nslowest page, full load: {worst:.2f} s; goal < {GOAL_SECONDS} s: "
              f"{'met' if worst < GOAL_SECONDS else 'NOT met'}")
        if worst_click is not None:
            print(f"slowest page, via the sidebar: {worst_click:.2f} s; goal < {GOAL_SECONDS} s: "
                  f"{'met' if worst_click < GOAL_SECONDS else 'NOT met'}")
    finally:
        stop(server)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
