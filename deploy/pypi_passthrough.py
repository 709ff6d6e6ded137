"""A pass-through PyPI index that serves wheels from local folders when they are byte-identical.

Used by deploy/container-smoke.sh for the image's PyTorch layer (TORCH_INDEX_URL): the project
pages come from PyPI itself, so pip resolves exactly what a user's build resolves; a link is
pointed at a local copy only when a local file has the same name *and* the sha256 PyPI publishes
for it (pip checks that hash again on download). Every other file is relayed from PyPI by this
host (so a build container needs no TLS trust of its own: where the network intercepts TLS, only
the host trusts the interceptor). This saves the ~3 GB download of torch and its CUDA wheels on
machines that hold them already.

    python deploy/pypi_passthrough.py --port 18080 --from-pip-config [--wheel-dir DIR ...]
    pip install --index-url http://127.0.0.1:18080/simple torch==2.14.1

Standard library only; binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

UPSTREAM = "https://pypi.org/simple"
FILES_HOST = "files.pythonhosted.org"
HREF = re.compile(r'href="([^"]+)"')


class LocalFiles:
    """filename -> local path, with sha256 from local simple-index pages or hashed on first use."""

    def __init__(self) -> None:
        self.paths: dict[str, Path] = {}
        self.known: dict[str, str] = {}
        self._lock = threading.Lock()

    def add_dir(self, folder: Path) -> None:
        for p in folder.glob("*.whl"):
            self.paths.setdefault(p.name, p)

    def add_simple_index(self, root: Path) -> None:
        """A file:// simple index (root/<project>/index.html with relative links and #sha256=)."""
        for page in root.glob("*/index.html"):
            for href in HREF.findall(page.read_text(errors="replace")):
                url, _, frag = html.unescape(href).partition("#")
                if url.startswith(("http:", "https:")):
                    continue
                path = (page.parent / urllib.parse.unquote(url)).resolve()
                if path.is_file():
                    self.paths.setdefault(path.name, path)
                    if frag.startswith("sha256="):
                        self.known.setdefault(path.name, frag[7:])

    def sha256(self, name: str) -> str:
        with self._lock:
            if name not in self.known:
                h = hashlib.sha256()
                with open(self.paths[name], "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                self.known[name] = h.hexdigest()
            return self.known[name]


def sources_from_pip_config(files: LocalFiles) -> None:
    """The local wheel sources the host's pip is configured with (find-links folders, file:// indexes)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if not key.endswith(("find-links", "extra-index-url", "index-url")):
            continue
        for item in value.strip().strip("'\"").split():
            path = Path(urllib.parse.urlparse(item).path) if item.startswith("file:") else Path(item)
            if item.startswith("file:") and path.is_dir() and not any(path.glob("*.whl")):
                files.add_simple_index(path)
            elif path.is_dir():
                files.add_dir(path)


def make_handler(files: LocalFiles, counters: dict[str, int]):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet: the smoke script shows pip's own log
            pass

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            path = urllib.parse.urlparse(self.path).path
            if path.startswith("/simple/"):
                return self._project_page(path[len("/simple/"):].strip("/"))
            if path.startswith("/remote/"):
                return self._remote(path[len("/remote"):])
            if path.startswith("/files/"):
                return self._file(urllib.parse.unquote(path[len("/files/"):]))
            self._send(404, b"not found\n")

        def _project_page(self, project: str) -> None:
            req = urllib.request.Request(f"{UPSTREAM}/{project}/", headers={"Accept": "text/html"})
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    page = resp.read().decode()
            except Exception as exc:  # noqa: BLE001
                code = getattr(exc, "code", 502)
                return self._send(code, f"upstream: {exc}\n".encode())

            def local(match: re.Match) -> str:
                url = html.unescape(match.group(1))
                base, _, frag = url.partition("#")
                name = urllib.parse.unquote(base.rsplit("/", 1)[-1])
                if name in files.paths and frag.startswith("sha256=") and files.sha256(name) == frag[7:]:
                    counters["local"] += 1
                    return f'href="/files/{urllib.parse.quote(name)}#{frag}"'
                parts = urllib.parse.urlsplit(url)
                if parts.scheme == "https" and parts.hostname == FILES_HOST:
                    # relayed by this host: a client that cannot verify PyPI's TLS itself still gets
                    # the file, and still checks its sha256
                    return f'href="/remote{parts.path}{"#" + frag if frag else ""}"'
                return match.group(0)

            self._send(200, HREF.sub(local, page).encode(), "text/html; charset=utf-8")

        def _remote(self, path: str) -> None:
            metadata = path.endswith(".metadata")
            try:
                resp = urllib.request.urlopen(f"https://{FILES_HOST}{path}", timeout=120)
            except Exception as exc:  # noqa: BLE001
                return self._send(getattr(exc, "code", 502), f"upstream: {exc}\n".encode())
            with resp:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if resp.headers.get("Content-Length"):
                    self.send_header("Content-Length", resp.headers["Content-Length"])
                self.end_headers()
                shutil.copyfileobj(resp, self.wfile, 1 << 20)
            if not metadata:
                counters["relayed"] += 1

        def _file(self, name: str) -> None:
            if name.endswith(".metadata") and name[: -len(".metadata")] in files.paths:
                with zipfile.ZipFile(files.paths[name[: -len(".metadata")]]) as zf:
                    meta = next(n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
                    return self._send(200, zf.read(meta), "application/octet-stream")
            if name not in files.paths:
                return self._send(404, b"not a local file\n")
            p = files.paths[name]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(p.stat().st_size))
            self.end_headers()
            with open(p, "rb") as f:
                shutil.copyfileobj(f, self.wfile, 1 << 20)
            counters["served"] += 1

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--wheel-dir", action="append", default=[], type=Path, help="a folder of wheels")
    ap.add_argument("--simple-index", action="append", default=[], type=Path, help="a local simple-index root")
    ap.add_argument("--from-pip-config", action="store_true", help="also use the local sources of `pip config list`")
    args = ap.parse_args()
    files = LocalFiles()
    for d in args.wheel_dir:
        files.add_dir(d)
    for d in args.simple_index:
        files.add_simple_index(d)
    if args.from_pip_config:
        sources_from_pip_config(files)
    counters = {"local": 0, "served": 0, "relayed": 0}
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(files, counters))
    print(f"pypi pass-through on http://127.0.0.1:{args.port}/simple ({len(files.paths)} local wheels)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        print(f"served {counters['served']} files from local copies, relayed {counters['relayed']} from PyPI", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
