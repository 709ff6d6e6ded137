"""Issue 17 items 6 (database unreachable) and 7 (deployment defaults) on the queue side: a database
that cannot be reached is one line and exit code 2; names are printed with control characters
escaped; the home folder, the SQLite store and broker.json are private; the embedded Redis requires a
random password that never appears on a command line."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.cli import printable

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "x\x1b]0;owned\x07\x1b[2J\r\u202eevil\x9b1m\x00"  # retitle, clear screen, CR, RTL override, CSI, NUL
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\u202e", "\x9b", "\x00")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def _igat(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("IGAT_")}
    return subprocess.run([sys.executable, "-m", "igat", *args], cwd=REPO, capture_output=True, text=True,
                          env={**base, **env}, timeout=timeout)


# --- item 6: database unreachable -------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["runs", "list"], ["runs"], ["worker"]], ids=["runs-list", "runs", "worker"])
@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_unreachable_database_is_one_clear_line_and_exit_code_2(command, kind, tmp_path):
    if kind == "postgresql":
        url = f"postgresql://igat:hunter2@127.0.0.1:{_closed_port()}/igat"
        expected = "cannot use the database postgresql://igat:***@127.0.0.1:"
    else:
        (tmp_path / "a-file").write_text("not a folder")
        url = f"sqlite:///{tmp_path / 'a-file' / 'igat.db'}"
        expected = f"cannot use the database {url}: cannot create the folder {tmp_path / 'a-file'}"
    env = {"IGAT_HOME": str(tmp_path / "home"), "IGAT_DATABASE_URL": url,
           "IGAT_BROKER_URL": f"redis://127.0.0.1:{_closed_port()}/0"}
    proc = _igat(command, env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert expected in lines[0] and "hunter2" not in proc.stderr
    reason = "refused" if kind == "postgresql" else "file exists"
    assert reason in lines[0].lower(), lines[0]
    assert proc.stdout == ""


# --- item 7: names printed escaped ------------------------------------------------------------------------
def test_printable_escapes_every_terminal_control_and_keeps_text():
    out = printable(HOSTILE)
    assert not any(c in out for c in RAW_CONTROLS)
    assert out == "x\\x1b]0;owned\\x07\\x1b[2J\\r\\u202eevil\\x9b1m\\x00"
    assert printable("ResNet-20 (α=0.5) 日本 ✓") == "ResNet-20 (α=0.5) 日本 ✓"
    assert printable("a\tb\nc") == "a\\tb\\nc"


@pytest.fixture
def hostile_store(tmp_path, monkeypatch):
    """A store with a run whose name, worker, error and metric names carry terminal escapes."""
    from tasks.store import Metric, Run, session

    monkeypatch.setenv("IGAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IGAT_DATABASE_URL", f"sqlite:///{tmp_path / 'igat.db'}")
    with session() as s:
        run = Run(name=f"evil{HOSTILE}", config_json="{}", status="failed", worker=f"w{HOSTILE}@host",
                  error=f"boom{HOSTILE}\nsecond line{HOSTILE}", attempts=1)
        s.add(run)
        s.commit()
        s.add(Metric(run_id=run.id, scope="epoch", step=1, epoch=1, name=f"acc{HOSTILE}", value=0.5))
        s.commit()
        return run.id


def test_runs_listing_and_show_print_names_escaped(hostile_store, capsys):
    from igat.cli import main

    assert main(["runs", "list"]) == 0
    listing = capsys.readouterr().out
    assert main(["runs", "show", str(hostile_store)]) == 0
    shown = capsys.readouterr().out
    for out in (listing, shown):
        assert not any(c in out for c in RAW_CONTROLS), repr(out)
        assert "evilx\\x1b]0;owned\\x07" in out
    assert f"w{printable(HOSTILE)}@host" in shown and f"acc{printable(HOSTILE)}" in shown
    assert f"boom{printable(HOSTILE)}\n" in shown and f"second line{printable(HOSTILE)}" in shown  # lines kept


# --- item 7: private home files ---------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual umask: files 0644, folders 0755 unless we say otherwise
    yield
    os.umask(old)


def test_new_home_and_sqlite_store_are_private(tmp_path, monkeypatch, umask_022):
    from sqlalchemy import text

    from tasks.store import igat_home, make_engine

    monkeypatch.setenv("IGAT_HOME", str(tmp_path / "fresh" / "home"))
    monkeypatch.delenv("IGAT_DATABASE_URL", raising=False)
    home = igat_home()
    engine = make_engine()
    with engine.begin() as conn:  # a write: SQLite creates the -wal and -shm files
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert _mode(home / "igat.db-wal") == 0o600 and _mode(home / "igat.db-shm") == 0o600
    engine.dispose()
    assert _mode(home) == 0o700 and _mode(home / "igat.db") == 0o600


def test_existing_world_readable_home_and_store_are_tightened(tmp_path, monkeypatch, umask_022):
    from tasks.store import igat_home, make_engine

    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    (home / "igat.db").touch(mode=0o644)
    monkeypatch.setenv("IGAT_HOME", str(home))
    monkeypatch.delenv("IGAT_DATABASE_URL", raising=False)
    assert _mode(home) == 0o755 and _mode(home / "igat.db") == 0o644
    igat_home()
    make_engine().dispose()
    assert _mode(home) == 0o700 and _mode(home / "igat.db") == 0o600


# --- item 7: the embedded broker's password --------------------------------------------------------------
def test_embedded_redis_requires_a_random_password_kept_off_the_command_line(tmp_path, umask_022):
    from tasks.broker import DISCOVERY_FILE, EmbeddedRedis, discovered_url, ping, redis_server_binary

    try:
        redis_server_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    home = tmp_path / "home"
    with EmbeddedRedis(home=home) as broker, EmbeddedRedis(home=tmp_path / "other") as other:
        assert broker.password and broker.password != other.password  # random per broker
        assert broker.url == f"redis://:{broker.password}@127.0.0.1:{broker.port}/0" and ping(broker.url)
        assert not ping(f"redis://127.0.0.1:{broker.port}/0"), "answers without the password"
        assert not ping(f"redis://:{other.password}@127.0.0.1:{broker.port}/0"), "answers to a wrong password"
        cmdline = Path(f"/proc/{broker.pid}/cmdline").read_bytes().decode()
        assert broker.password not in cmdline, "the password must not be visible in ps"
        path = broker.publish()
        assert path == home / DISCOVERY_FILE and _mode(path) == 0o600 and _mode(home) == 0o700
        assert _mode(home / "broker") == 0o700
        assert discovered_url(home) == broker.url  # what the workers and the dashboard connect with
        assert not list(home.glob("broker.tmp*"))
