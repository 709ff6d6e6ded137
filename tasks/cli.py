"""``igat worker``, ``igat up``, ``igat submit``, ``igat runs``: the queue from the command line.

Celery, Redis and the store are imported inside the command functions, so ``igat train`` and
``igat --help`` never import the queue.

    igat up [--port 8501] [--address 127.0.0.1] [--no-browser]   # broker + worker + dashboard
    igat worker [--gpu 0] [--queues gpu,cpu]                       # one worker per GPU
    igat submit CONFIG.yaml [--seeds 0,1,2] [--wait]
    igat runs [list|show|cancel|retry|requeue-stale] ...
    igat runs [rename|note|tag|archive|unarchive|delete] ID ...
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def register(subparsers) -> None:
    w = subparsers.add_parser("worker", help="start a Celery worker for the gpu/cpu queues (one per GPU)",
                              description="Start a Celery worker (prefork, concurrency 1). Without IGAT_BROKER_URL it "
                              "joins the embedded broker of a running `igat up`, or starts one itself.")
    w.add_argument("--queues", default="gpu,cpu", help="comma-separated queues to consume (default gpu,cpu)")
    w.add_argument("--gpu", type=int, default=None, help="GPU index: sets CUDA_VISIBLE_DEVICES and the hostname gpuN@host")
    w.add_argument("--hostname", default=None, help="worker node name (default igat@%%h or gpuN@%%h)")
    w.add_argument("--concurrency", type=int, default=1, help="parallel runs (keep 1 per GPU)")
    w.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"],
                   help="prefork (default) gives revoke(terminate) and a fresh process per run")
    w.add_argument("--loglevel", default="info")
    w.add_argument("--no-recover", action="store_true",
                   help="do not re-enqueue runs whose worker died (stale heartbeat), neither at start-up nor "
                   "periodically; leave them to Redis' visibility timeout")
    w.add_argument("--stale-after", type=float, default=None, metavar="SECONDS",
                   help="a running run without a heartbeat for this long counts as dead (default IGAT_STALE_AFTER "
                   "or 60)")
    w.add_argument("--stale-check", type=float, default=None, metavar="SECONDS",
                   help="how often this worker looks for dead runs to re-queue (default IGAT_STALE_CHECK_SECONDS or "
                   "15); a crashed run resumes within stale-after + stale-check seconds")
    w.set_defaults(func=cmd_worker)

    u = subparsers.add_parser("up", help="start everything: embedded broker, a worker and the dashboard",
                              description="One command for a single machine: an embedded Redis (unless IGAT_BROKER_URL "
                              "is set), one worker and the Streamlit dashboard. Ctrl-C stops all of it.")
    u.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    u.add_argument("--address", default="127.0.0.1", help="dashboard address (default 127.0.0.1; 0.0.0.0 to share)")
    u.add_argument("--no-browser", action="store_true", help="do not open a browser")
    u.add_argument("--workers", type=int, default=1, help="workers to start (one per GPU; default 1)")
    u.add_argument("--no-dashboard", action="store_true", help="broker and worker only")
    u.add_argument("--loglevel", default="warning", help="worker log level (default warning)")
    u.set_defaults(func=cmd_up)

    s = subparsers.add_parser("submit", help="queue a config (several seeds, an ablation) on the workers")
    s.add_argument("config", help="YAML/JSON experiment config")
    s.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2 (one run each)")
    s.add_argument("--ablation", action="store_true", help="queue the iGAT ablation variants of the config")
    s.add_argument("--name", default=None, help="experiment name (default: the config's name)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field, e.g. --set train.epochs=5 (repeatable)")
    s.add_argument("--wait", action="store_true", help="wait until the runs finish and print their status")
    s.set_defaults(func=cmd_submit)

    r = subparsers.add_parser("runs", help="list, show, cancel or retry queued runs")
    r.set_defaults(func=cmd_runs_list, experiment=None, status=None, limit=30, json=False)
    rs = r.add_subparsers(dest="action", metavar="ACTION")
    ls = rs.add_parser("list", help="list runs, newest first (default action)")
    ls.add_argument("--experiment", type=int, default=None)
    ls.add_argument("--status", default=None, help="queued|running|succeeded|failed|cancelled")
    ls.add_argument("--limit", type=int, default=30)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_runs_list)
    sh = rs.add_parser("show", help="a run's fields, last metrics and evaluation")
    sh.add_argument("run_id", type=int)
    sh.set_defaults(func=cmd_runs_show)
    for name, fn, text in (("cancel", cmd_runs_cancel, "cancel runs (queued: now; running: at the next batch)"),
                           ("retry", cmd_runs_retry, "queue failed/cancelled runs again (resume from checkpoint)")):
        p = rs.add_parser(name, help=text)
        p.add_argument("run_ids", type=int, nargs="+")
        p.set_defaults(func=fn)
    rn = rs.add_parser("rename", help="give a run a new name")
    rn.add_argument("run_id", type=int)
    rn.add_argument("name")
    rn.set_defaults(func=cmd_runs_rename)
    nt = rs.add_parser("note", help="replace a run's notes ('' clears them)")
    nt.add_argument("run_id", type=int)
    nt.add_argument("text")
    nt.set_defaults(func=cmd_runs_note)
    tg = rs.add_parser("tag", help="replace a run's tags (comma-separated, '' clears them)")
    tg.add_argument("run_id", type=int)
    tg.add_argument("tags")
    tg.set_defaults(func=cmd_runs_tag)
    for name, archived, text in (("archive", True, "hide a run from the dashboard's Runs table (nothing is removed)"),
                                 ("unarchive", False, "show an archived run in the Runs table again")):
        p = rs.add_parser(name, help=text)
        p.add_argument("run_id", type=int)
        p.set_defaults(func=cmd_runs_archive, archived=archived)
    dl = rs.add_parser("delete", help="delete a finished run: its rows and its folder under $IGAT_HOME/runs")
    dl.add_argument("run_id", type=int)
    dl.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    dl.add_argument("--keep-files", action="store_true", help="delete the rows only; leave the run's folder")
    dl.set_defaults(func=cmd_runs_delete)
    rq = rs.add_parser("requeue-stale", help="re-enqueue running runs whose worker died (stale heartbeat)")
    rq.add_argument("--stale-after", type=float, default=None, help="seconds (default IGAT_STALE_AFTER or 120)")
    rq.set_defaults(func=cmd_runs_requeue)


# --- helpers ----------------------------------------------------------------------------------------
def _err(msg: str) -> int:
    print(f"error: {printable_lines(msg)}", file=sys.stderr)
    return 2


# Bidirectional-text controls reorder what a terminal shows ("Trojan Source"); the C0/C1 controls
# (ESC, CR, backspace, ...) can rewrite the screen, retitle the window or hide text.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(value: object) -> str:
    """``value`` as text safe to print on a terminal: control characters become Python-style escapes
    (``\\x1b``, ``\\n``, ``\\u202e``). Names, errors and metric names come from configs anyone can submit."""
    text = str(value)
    return "".join(_escape(ch) if _is_control(ch) else ch for ch in text)


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F or ch in _BIDI_CONTROLS


def _escape(ch: str) -> str:
    return repr(ch)[1:-1] if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def printable_lines(value: object) -> str:
    """Like :func:`printable` but keeps line breaks (a stored error with its traceback stays readable)."""
    # split("\n"), not splitlines(): that also breaks at \r, \x1c.. and \x85, which must be escaped
    return "\n".join(printable(line) for line in str(value).split("\n"))


def _database_problem(exc: Exception) -> str:
    """One line naming the database (password hidden) and the driver's first line of complaint."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from tasks.store import database_url

    try:
        where = make_url(database_url()).render_as_string(hide_password=True)
    except ArgumentError:
        where = "IGAT_DATABASE_URL (not a database URL)"
    reason = str(getattr(exc, "orig", None) or exc)
    first = next((ln.strip() for ln in reason.splitlines() if ln.strip()), type(exc).__name__)
    return f"cannot use the database {printable(where)}: {printable(first)} (check IGAT_DATABASE_URL / IGAT_HOME)"


def _database_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A database that cannot be reached or opened (server down, wrong URL, unwritable folder) is the
    user's setup, not our bug: one line and exit code 2 instead of a traceback."""

    @functools.wraps(command)
    def guarded(args: argparse.Namespace) -> int:
        from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

        from tasks.store import DatabaseUnavailable

        try:
            return command(args)
        except (OperationalError, InterfaceError, ArgumentError, DatabaseUnavailable) as exc:
            return _err(_database_problem(exc))

    return guarded


def _set_pdeathsig(sig: int) -> None:
    """preexec_fn (Linux): the child gets ``sig`` when `igat up` dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)


def _ensure_broker() -> tuple[str, object | None]:
    """(broker URL, the EmbeddedRedis we started or None)."""
    from tasks.broker import EmbeddedRedis, configured_url

    url = configured_url()
    if url:
        return url, None
    broker = EmbeddedRedis().start()
    broker.publish()
    os.environ["IGAT_BROKER_URL"] = broker.url  # our children use it too
    return broker.url, broker


def _pool_child_dies_with_worker(**_kwargs) -> None:
    # Celery prefork children do not inherit PDEATHSIG: if the worker main process is killed, its
    # pool child (the one training) must not go on alone.
    _set_pdeathsig(signal.SIGKILL)


# --- igat worker ------------------------------------------------------------------------------------
def _apply_recovery_settings(args: argparse.Namespace) -> str | None:
    """Export --stale-after / --stale-check as the environment the pool processes and the sweep read, and
    check the resulting settings; returns an error message or None."""
    for value, name in ((args.stale_after, "IGAT_STALE_AFTER"), (args.stale_check, "IGAT_STALE_CHECK_SECONDS")):
        if value is not None:
            os.environ[name] = repr(value)
    from tasks.jobs import JobSettings

    try:
        JobSettings.from_env()
    except ValueError as exc:
        return str(exc)
    return None


@_database_errors
def cmd_worker(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        return _err("--concurrency must be >= 1")
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    from tasks.celery_app import QUEUES

    bad = [q for q in queues if q not in QUEUES]
    if not queues or bad:
        return _err(f"--queues: {', '.join(bad) or 'empty'} not allowed; choose from {', '.join(QUEUES)}")
    if args.gpu is not None:
        if args.gpu < 0:
            return _err("--gpu must be a GPU index >= 0")
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    hostname = args.hostname or (f"gpu{args.gpu}@%h" if args.gpu is not None else "igat@%h")
    problem = _apply_recovery_settings(args)
    if problem:
        return _err(problem)

    from celery.signals import worker_process_init
    from kombu.utils.url import maybe_sanitize_url

    from tasks.celery_app import make_celery
    from tasks.store import igat_home, init_db

    init_db()  # migrate once here, not in every pool process; and before a broker is started for nothing
    url, broker = _ensure_broker()
    if broker is not None:
        print(f"embedded broker started at {maybe_sanitize_url(url)} (published in {igat_home() / 'broker.json'})",
              flush=True)
    import igat.training  # noqa: F401  (preload torch + igat before forking: each run starts warm)

    worker_process_init.connect(_pool_child_dies_with_worker, weak=False)
    app = make_celery(url)
    if not args.no_recover:
        from tasks import recovery

        recovery.install(app)  # and from now on every IGAT_STALE_CHECK_SECONDS
        # A starting worker is the natural moment to pick up runs whose worker died: their message
        # would otherwise only come back after the (long) visibility timeout.
        from tasks import api

        try:
            recovered = api.requeue_stale(app=app)
        except Exception as exc:  # noqa: BLE001 - recovery is best effort; the worker must start
            print(f"warning: could not re-enqueue stale runs: {exc}", file=sys.stderr, flush=True)
        else:
            if recovered:
                print(f"re-enqueued runs whose worker died: {', '.join(map(str, recovered))}", flush=True)
    state_dir = igat_home() / "workers"
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = ["worker", "-Q", ",".join(queues), "-c", str(args.concurrency), "-P", args.pool, "-n", hostname,
            "--loglevel", args.loglevel, f"--statedb={state_dir / '%n.state'}"]
    try:
        app.worker_main(argv)
    finally:
        if broker is not None:
            broker.stop()
    return 0


# --- igat up --------------------------------------------------------------------------------------
def _dashboard_entry() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("app")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        entry = Path(loc) / "main.py"
        if entry.exists():
            return entry
    return None


def _wait_http(url: str, timeout: float, alive) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _stop_group(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _release_interrupted(worker_names: list[str]) -> list[int]:
    """Runs our workers were on when we stopped go back to queued (the next start resumes them)."""
    from sqlalchemy import update

    from tasks.store import Run, RunStatus, get_engine

    table = Run.__table__
    with get_engine().begin() as conn:
        ids = [r.id for r in conn.execute(table.select().where(
            table.c.status == RunStatus.running, table.c.worker.in_(worker_names))).all()]
        if ids:
            conn.execute(update(table).where(table.c.id.in_(ids)).values(status=RunStatus.queued))
    return ids


def cmd_up(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        return _err(f"--port must be in 1..65535, got {args.port}")
    if args.workers < 1:
        return _err("--workers must be >= 1")
    entry = None if args.no_dashboard else _dashboard_entry()
    if not args.no_dashboard and entry is None:
        return _err("the dashboard entry app/main.py was not found (install the app package, or use --no-dashboard)")

    from tasks import api
    from tasks.jobs import JobSettings
    from tasks.store import database_url, igat_home, init_db

    stopping = {"flag": False}

    def _on_signal(signum, _frame):
        stopping["flag"] = True

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    children: list[tuple[str, subprocess.Popen]] = []
    broker = None
    worker_names: list[str] = []
    rc = 0
    try:
        url, broker = _ensure_broker()
        init_db()
        from kombu.utils.url import maybe_sanitize_url
        from sqlalchemy.engine import make_url

        print(f"iGAT Lab home: {igat_home()}\ndatabase: {make_url(database_url()).render_as_string(hide_password=True)}"
              f"\nbroker: {maybe_sanitize_url(url)}"
              f"{' (embedded)' if broker is not None else ''}", flush=True)
        if broker is not None:
            # A fresh embedded broker holds no messages: runs left queued or running by a previous
            # session (heartbeat stopped) are enqueued again and resume from their checkpoints.
            settings = JobSettings.from_env()
            requeued = api.requeue_stale(stale_after=3 * settings.heartbeat_seconds, include_queued=True)
            if requeued:
                print(f"re-queued runs from a previous session: {', '.join(map(str, requeued))}", flush=True)
        env = {**os.environ, "IGAT_BROKER_URL": url}
        host = socket.gethostname()
        for i in range(args.workers):
            name = f"igat-up-{os.getpid()}-{i}@{host}"
            worker_names.append(name)
            cmd = [sys.executable, "-m", "igat", "worker", "--hostname", name, "--loglevel", args.loglevel]
            wenv = dict(env)
            if args.workers > 1:
                wenv["CUDA_VISIBLE_DEVICES"] = str(i)
            children.append(("worker", subprocess.Popen(cmd, env=wenv, start_new_session=True,
                                                         preexec_fn=lambda: _set_pdeathsig(signal.SIGKILL))))
        if entry is not None:
            cmd = [sys.executable, "-m", "streamlit", "run", str(entry), "--server.port", str(args.port),
                   "--server.address", args.address, "--server.headless", "true" if args.no_browser else "false",
                   "--browser.gatherUsageStats", "false"]
            dash = subprocess.Popen(cmd, env=env, start_new_session=True, cwd=str(entry.parent.parent),
                                    preexec_fn=lambda: _set_pdeathsig(signal.SIGTERM))
            children.append(("dashboard", dash))
            shown = "127.0.0.1" if args.address in ("0.0.0.0", "::", "") else args.address
            if _wait_http(f"http://{shown}:{args.port}/_stcore/health", 90, lambda: dash.poll() is None and not stopping["flag"]):
                print(f"iGAT Lab dashboard: http://{shown}:{args.port}  (Ctrl-C stops everything)", flush=True)
        else:
            print("worker running without dashboard (Ctrl-C stops everything)", flush=True)
        while not stopping["flag"]:
            dead = [(n, p) for n, p in children if p.poll() is not None]
            if dead:
                name, proc = dead[0]
                print(f"error: the {name} exited with code {proc.returncode}; stopping", file=sys.stderr, flush=True)
                rc = 1
                break
            # Runs a previous session left 'running' turn stale after a while: the workers' periodic
            # stale-run check (tasks/recovery.py) re-queues them.
            time.sleep(0.5)
    except Exception as exc:  # noqa: BLE001 - report, then clean up below
        print(f"error: {exc}", file=sys.stderr, flush=True)
        rc = 1
    finally:
        print("stopping ...", flush=True)
        for _name, proc in reversed(children):
            _stop_group(proc, 15)
        if worker_names:
            try:
                released = _release_interrupted(worker_names)
                if released:
                    print(f"interrupted runs {', '.join(map(str, released))} will resume from their last checkpoint "
                          "at the next `igat up`", flush=True)
            except Exception as exc:  # noqa: BLE001
                print(f"warning: could not release interrupted runs: {exc}", file=sys.stderr)
        if broker is not None:
            broker.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return rc


# --- igat submit ----------------------------------------------------------------------------------
@_database_errors
def cmd_submit(args: argparse.Namespace) -> int:
    from igat.config import ConfigError, ExperimentConfig, with_overrides
    from igat.config_input import config_error_line, name_problem
    from tasks import api

    # The whole input is checked before the store or the broker is touched: a refused config leaves
    # no row and needs no broker.
    try:
        cfg = ExperimentConfig.load(args.config)
        if args.overrides:
            cfg = with_overrides(cfg, args.overrides)
        if args.name is not None and (problem := name_problem(args.name)) is not None:
            raise ConfigError([("--name", problem)])
    except ConfigError as exc:
        return _err(config_error_line(exc.errors))
    try:
        if args.seeds and args.ablation:
            return _err("use either --seeds or --ablation")
        if args.seeds:
            try:
                seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
            except ValueError:
                return _err(f"--seeds must be comma-separated integers, got {args.seeds!r}")
            exp_id, run_ids = api.submit_seeds(cfg, seeds, args.name)
        elif args.ablation:
            exp_id, run_ids = api.submit_ablation(cfg, args.name)
        else:
            exp_id, run_ids = api.submit_runs([cfg], args.name or cfg.name)
    except ConfigError as exc:  # a variant the seeds or the ablation derive (e.g. seed -1, a name too long)
        return _err(config_error_line(exc.errors))
    except (api.SubmitError, ConnectionError, RuntimeError) as exc:
        return _err(str(exc))
    print(f"experiment {exp_id}: queued runs {', '.join(map(str, run_ids))}", flush=True)
    if not args.wait:
        return 0
    from tasks.store import FINAL_STATUSES

    while True:
        runs = [api.get_run(r) for r in run_ids]
        if all(r.status in FINAL_STATUSES for r in runs):
            break
        time.sleep(2)
    for r in runs:
        print(f"run {r.id} {printable(r.name)}: {r.status}"
              + (f" - {printable(r.error.splitlines()[0])}" if r.error and r.error.strip() else ""))
    return 0 if all(r.status == "succeeded" for r in runs) else 1


# --- igat runs ------------------------------------------------------------------------------------
def _fmt_time(dt) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt else "-"


@_database_errors
def cmd_runs_list(args: argparse.Namespace) -> int:
    from tasks import api

    try:
        runs = api.list_runs(experiment_id=args.experiment, status=args.status, limit=args.limit)
    except api.SubmitError as exc:
        return _err(str(exc))
    if args.json:
        print(json.dumps([r.model_dump(mode="json", exclude={"config_json"}) for r in runs], indent=2))
        return 0
    print(f"{'id':>5} {'exp':>4} {'kind':<8} {'status':<10} {'epoch':>9} {'prog':>5} {'name':<32} worker")
    for r in runs:
        print(f"{r.id:>5} {r.experiment_id or '-':>4} {printable(r.kind):<8} {printable(r.status):<10} "
              f"{f'{r.epoch}/{r.total_epochs}':>9} {r.progress:>5.0%} {printable(r.name)[:32]:<32} "
              f"{printable(r.worker or '-')}")
    return 0


@_database_errors
def cmd_runs_show(args: argparse.Namespace) -> int:
    from tasks import api

    try:
        run = api.get_run(args.run_id)
    except KeyError as exc:
        return _err(str(exc.args[0]))
    for field in ("id", "name", "kind", "status", "experiment_id", "defense", "igat", "seed", "variant", "epoch",
                  "total_epochs", "progress", "attempts", "worker", "checkpoint_path"):
        print(f"{field:>16}: {printable(getattr(run, field))}")
    if run.phase:  # a study's current step
        print(f"{'phase':>16}: {printable(run.phase)}")
    for field in ("created_at", "started_at", "finished_at", "heartbeat_at"):
        print(f"{field:>16}: {_fmt_time(getattr(run, field))}")
    if run.error:
        print(f"{'error':>16}: {printable_lines(run.error)}")
    epochs = api.metrics_frame(run.id, "epoch")
    if len(epochs):
        last = epochs[epochs.step == epochs.step.max()]
        print("last epoch metrics:")
        for _, row in last.iterrows():
            print(f"  {printable(row['name']):<32} {row['value']:.4f}")
    ev = api.eval_results_frame([run.id])
    if len(ev):
        print("evaluation (accuracy, examples, 95 % Wilson interval):")
        for _, row in ev.iterrows():
            ci = "" if _missing(row["ci_low"]) else f"  [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
            print(f"  {printable(row['target']):<10} {printable(row['combiner']):<8} {printable(row['attack']):<12} "
                  f"{row['accuracy']:.4f}  n={int(row['num_examples'])}{ci}")
    return 0


def _missing(value) -> bool:
    """None or NaN (a result stored before intervals existed and not backfilled)."""
    return value is None or value != value


@_database_errors
def cmd_runs_cancel(args: argparse.Namespace) -> int:
    from tasks import api

    rc = 0
    for rid in args.run_ids:
        try:
            print(f"run {rid}: {api.cancel_run(rid)}")
        except KeyError as exc:
            rc = _err(str(exc.args[0]))
    return rc


@_database_errors
def cmd_runs_retry(args: argparse.Namespace) -> int:
    from tasks import api

    rc = 0
    for rid in args.run_ids:
        try:
            api.retry_run(rid)
            print(f"run {rid}: queued again")
        except (KeyError, api.SubmitError, ConnectionError) as exc:
            rc = _err(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    return rc


@_database_errors
def cmd_runs_requeue(args: argparse.Namespace) -> int:
    from tasks import api

    try:
        ids = api.requeue_stale(args.stale_after)
    except ConnectionError as exc:
        return _err(str(exc))
    print(f"re-queued: {', '.join(map(str, ids)) or 'none'}")
    return 0


def _edit(action: Callable[[], object], run_id: int) -> int | None:
    """Run an edit of ``run_id``; its refusal (absent run, bad value) is one line and exit code 2."""
    from tasks import api

    try:
        action()
    except KeyError as exc:
        return _err(str(exc.args[0]))
    except api.RunEditError as exc:
        return _err(f"run {run_id}: {exc}")
    return None


@_database_errors
def cmd_runs_rename(args: argparse.Namespace) -> int:
    from tasks import api

    failed = _edit(lambda: api.rename_run(args.run_id, args.name), args.run_id)
    if failed is not None:
        return failed
    print(f"run {args.run_id}: renamed to {printable(api.get_run(args.run_id).name)}")
    return 0


@_database_errors
def cmd_runs_note(args: argparse.Namespace) -> int:
    from tasks import api

    failed = _edit(lambda: api.set_run_notes(args.run_id, args.text), args.run_id)
    if failed is not None:
        return failed
    notes = api.get_run(args.run_id).notes
    print(f"run {args.run_id}: notes {'saved (' + str(len(notes)) + ' characters)' if notes else 'cleared'}")
    return 0


@_database_errors
def cmd_runs_tag(args: argparse.Namespace) -> int:
    from tasks import api

    failed = _edit(lambda: api.set_run_tags(args.run_id, args.tags), args.run_id)
    if failed is not None:
        return failed
    print(f"run {args.run_id}: tags {printable(api.get_run(args.run_id).tags) or '(none)'}")
    return 0


@_database_errors
def cmd_runs_archive(args: argparse.Namespace) -> int:
    from tasks import api

    failed = _edit(lambda: api.archive_run(args.run_id, args.archived), args.run_id)
    if failed is not None:
        return failed
    print(f"run {args.run_id}: {'archived' if args.archived else 'unarchived'}")
    return 0


@_database_errors
def cmd_runs_delete(args: argparse.Namespace) -> int:
    from tasks import api

    try:
        plan = api.deletion_plan(args.run_id)
    except KeyError as exc:
        return _err(str(exc.args[0]))
    if plan.blocked:
        return _err(plan.blocked)
    files = ("the folder is kept (--keep-files)" if args.keep_files else
             f"the folder {plan.folder} ({api.size_text(plan.folder_bytes)})" if plan.folder else "no folder")
    print(f"run {plan.run_id} {printable(plan.name)} ({plan.status}): {plan.rows_text()}; {printable(files)}")
    if plan.kept:
        print(f"note: {printable(plan.kept)}")
    if not args.yes:
        if not sys.stdin.isatty():
            return _err(f"run {args.run_id}: not deleted; add --yes to delete without a prompt")
        if input(f"delete run {args.run_id}? type its id to confirm: ").strip() != str(args.run_id):
            print("not deleted")
            return 1
    try:
        api.delete_run(args.run_id, delete_files=not args.keep_files)
    except KeyError as exc:
        return _err(str(exc.args[0]))
    except api.RunEditError as exc:
        return _err(str(exc))
    except OSError as exc:  # the rows are gone; the folder could not be removed completely
        return _err(f"run {args.run_id}: rows deleted, but its folder could not be removed: {exc}")
    print(f"run {args.run_id}: deleted")
    return 0
