"""The deployment files, checked offline (no Docker engine runs here or in CI).

docker-compose.yml: validated by docker-compose v1 (Debian's package, `config -q`) and by the
Compose Specification JSON schema (check-jsonschema); broken copies must fail both validators.
The resolved configuration (as docker-compose itself merges and interpolates it) is checked for
what the deployment promises: no published Redis/PostgreSQL, AOF persistence, the dashboard on
loopback, GPU reservations, the one-shot migration. The commands the services run are executed
here where possible (the migration on a fresh PostgreSQL database, the GPU picker of the worker
replicas with a stand-in `igat`). Dockerfile: hadolint plus structural checks.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
IGAT_SERVICES = ("migrate", "dashboard", "worker", "worker-gpu1")
ALL_PROFILES = ("monitoring", "pinned")


def _tool(name: str) -> str:
    """The tool from this interpreter's environment (dev extras) or PATH; skip if truly absent."""
    for candidate in (VENV_BIN / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.skip(f"{name} is not installed (docker-compose: apt-get install docker-compose; "
                f"hadolint/check-jsonschema: pip install -e '.[dev]')")


def _env_file(tmp_path: Path, **values: str) -> Path:
    values = {"REDIS_PASSWORD": "redis-secret-1", "POSTGRES_PASSWORD": "pg-secret-2", **values}
    path = tmp_path / "test.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def _compose(args: list[str], compose_file: Path = COMPOSE, env_file: Path | None = None,
             profiles: tuple[str, ...] = ALL_PROFILES) -> subprocess.CompletedProcess:
    cmd = [_tool("docker-compose"), "-f", str(compose_file), "--project-directory", str(REPO)]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    for p in profiles:
        cmd += ["--profile", p]
    # A clean environment: a developer's exported REDIS_PASSWORD or IGAT_* must not mask a missing default.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    return subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=60, cwd=REPO)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    """The configuration docker-compose resolves from the file and a minimal env file."""
    proc = _compose(["config"], env_file=_env_file(tmp_path_factory.mktemp("env")))
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


# --- compose: validators ------------------------------------------------------------------------------
def _broken_copies(tmp_path: Path) -> dict[str, Path]:
    """A faithful copy (the control) and copies with one mistake each, in tmp (build context absolute)."""
    text = COMPOSE.read_text().replace("context: .", f"context: {REPO}")
    mutations = {
        "control": text,
        # a misspelt key on the dashboard
        "typo": text.replace("  dashboard:\n    <<: *igat-service\n", "  dashboard:\n    <<: *igat-service\n    depnds_on: [redis]\n", 1),
        # a port given as a mapping instead of a string/number
        "port-type": text.replace("- ${IGAT_DASHBOARD_BIND:-127.0.0.1}:${IGAT_DASHBOARD_PORT:-8501}:8501",
                                  "- {published: {bad: 1}}", 1),
        # a GPU reservation with an unknown key
        "device-key": text.replace("count: all", "count: all\n              gpus: 2", 1),
    }
    out = {}
    for name, body in mutations.items():
        assert name == "control" or body != text, f"mutation {name} did not apply: the compose file changed"
        path = tmp_path / f"{name}.yml"
        path.write_text(body)
        out[name] = path
    return out


def test_compose_file_passes_docker_compose_config(tmp_path, resolved):
    proc = _compose(["config", "-q"], env_file=_env_file(tmp_path))
    assert proc.returncode == 0, proc.stderr
    # profiles: flower and the pinned example start only on request, the rest on a plain `up`
    default = {name for name, svc in resolved["services"].items() if not svc.get("profiles")}
    assert default == {"config-check", "redis", "postgres", "migrate", "dashboard", "worker"}
    assert resolved["services"]["flower"]["profiles"] == ["monitoring"]


def test_broken_compose_copies_fail_docker_compose_config(tmp_path):
    copies = _broken_copies(tmp_path)
    env = _env_file(tmp_path)
    control = _compose(["config", "-q"], compose_file=copies.pop("control"), env_file=env)
    assert control.returncode == 0, control.stderr
    expected = {"typo": "depnds_on", "port-type": "ports", "device-key": "gpus"}
    for name, path in copies.items():
        proc = _compose(["config", "-q"], compose_file=path, env_file=env)
        assert proc.returncode != 0, f"docker-compose accepted the {name} mutation"
        assert expected[name] in proc.stderr, proc.stderr


def test_compose_requires_the_passwords(tmp_path):
    env = tmp_path / "empty.env"
    env.write_text("POSTGRES_PASSWORD=x\n")
    proc = _compose(["config", "-q"], env_file=env)
    assert proc.returncode != 0 and "set REDIS_PASSWORD in .env" in proc.stderr


def _depends_on(services: dict, name: str) -> set[str]:
    """Every service ``name`` waits for, directly or through others."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dep in services[todo.pop()].get("depends_on", {}):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _run_config_check(resolved: dict, **env: str) -> subprocess.CompletedProcess:
    """The config-check service's script, run by sh with the environment compose gives it (plus ``env``)."""
    service_env = {**resolved["services"]["config-check"]["environment"], **env}
    return subprocess.run(["sh", "-ec", _shell_script(resolved, "config-check")], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **service_env}, timeout=30)


def test_env_example_placeholder_passwords_are_refused_before_anything_starts(tmp_path, resolved):
    example = _compose(["config"], env_file=REPO / ".env.example")
    assert example.returncode == 0, example.stderr
    as_shipped = yaml.safe_load(example.stdout)
    # every service of the stack waits for the check (redis and postgres directly, the rest through them)
    services = as_shipped["services"]
    check = services["config-check"]
    assert check["restart"] == "no" and check["network_mode"] == "none"
    for name in ("redis", "postgres"):
        assert services[name]["depends_on"]["config-check"]["condition"] == "service_completed_successfully"
    for name in services:
        if name != "config-check":
            assert "config-check" in _depends_on(services, name), f"{name} can start before the password check"
    # with .env.example as it is, the check fails and says why
    proc = _run_config_check(as_shipped)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "REDIS_PASSWORD POSTGRES_PASSWORD still hold the change-me placeholder" in proc.stderr
    # each placeholder alone is refused, whatever its case and suffix
    one = _run_config_check(resolved, POSTGRES_PASSWORD="CHANGE-ME")
    assert one.returncode == 1 and "refusing to start: POSTGRES_PASSWORD still" in one.stderr
    # real passwords pass (the env file of the other tests)
    ok = _run_config_check(resolved)
    assert ok.returncode == 0 and ok.stdout.strip() == "passwords set", ok.stderr
    # a password that merely contains the words is a real password
    assert _run_config_check(resolved, REDIS_PASSWORD="x-change-me").returncode == 0


def test_compose_file_matches_the_compose_spec_schema(tmp_path):
    tool = _tool("check-jsonschema")
    copies = _broken_copies(tmp_path)

    def check(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([tool, "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True,
                              text=True, timeout=60)

    ok = check(COMPOSE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert check(copies.pop("control")).returncode == 0
    for name, path in copies.items():
        proc = check(path)
        assert proc.returncode != 0, f"the compose-spec schema accepted the {name} mutation"


# --- compose: what the deployment promises --------------------------------------------------------------
def test_redis_and_postgres_are_private_and_persistent(resolved):
    redis, pg = resolved["services"]["redis"], resolved["services"]["postgres"]
    assert "ports" not in redis and "ports" not in pg, "Redis/PostgreSQL must not be published on the host"
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--requirepass" in command
    assert "redis-secret-1" not in command, "the password belongs in the environment, not the command line"
    assert redis["environment"]["REDIS_PASSWORD"] == "redis-secret-1"
    assert any(v.endswith(":/data:rw") or v.split(":")[1] == "/data" for v in redis["volumes"])
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in pg["volumes"])
    assert pg["environment"]["POSTGRES_PASSWORD"] == "pg-secret-2"
    for svc in (redis, pg):
        assert svc["healthcheck"]["test"], "dependants wait for service_healthy"


def test_igat_services_share_image_configuration_and_igat_home(resolved):
    services = resolved["services"]
    images = {services[s]["image"] for s in IGAT_SERVICES}
    assert len(images) == 1
    for name in IGAT_SERVICES:
        env = services[name]["environment"]
        assert env["IGAT_BROKER_URL"] == "redis://:redis-secret-1@redis:6379/0"
        assert env["IGAT_DATABASE_URL"] == "postgresql+psycopg://igat:pg-secret-2@postgres:5432/igat"
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert mounts.get(env["IGAT_HOME"]) == "igat-home", f"{name}: IGAT_HOME must be the shared volume"
        assert mounts.get(env["IGAT_DATA_DIR"]), f"{name}: the datasets must be mounted"
    assert "igat-home" in resolved["volumes"]


def test_dashboard_binds_loopback_by_default(resolved, tmp_path):
    ports = resolved["services"]["dashboard"]["ports"]
    assert ports == ["127.0.0.1:8501:8501/tcp"]
    flower = resolved["services"]["flower"]
    assert flower["profiles"] == ["monitoring"] and flower["ports"][0].startswith("127.0.0.1:")
    moved = _compose(["config"], env_file=_env_file(tmp_path, IGAT_DASHBOARD_BIND="10.0.0.5", IGAT_DASHBOARD_PORT="9000"))
    assert moved.returncode == 0, moved.stderr
    assert yaml.safe_load(moved.stdout)["services"]["dashboard"]["ports"] == ["10.0.0.5:9000:8501/tcp"]


def test_workers_reserve_gpus_and_wait_for_migration(resolved):
    services = resolved["services"]
    (dev,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"] and dev["count"] == "all"
    (pinned,) = services["worker-gpu1"]["deploy"]["resources"]["reservations"]["devices"]
    assert pinned["device_ids"] == ["1"] and services["worker-gpu1"]["profiles"] == ["pinned"]
    # inside a container pinned to one GPU, that GPU is CUDA device 0
    assert services["worker-gpu1"]["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert services["migrate"]["restart"] == "no"
    for name in ("dashboard", "worker", "worker-gpu1"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # the GPU locks are per host: a local volume of their own, not IGAT_HOME
    assert any(v.startswith("gpu-locks:") for v in services["worker"]["volumes"])


def _interpolated_vars(text: str) -> set[str]:
    text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    text = text.replace("$$", "")  # escaped: evaluated by the container's shell, not by compose
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))


def test_every_setting_is_in_env_example_and_documented():
    used = _interpolated_vars(COMPOSE.read_text())
    example = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, flags=re.M))
    assert used - listed == set(), f"compose variables missing from .env.example: {sorted(used - listed)}"
    assert listed - used == set(), f".env.example lists variables compose does not use: {sorted(listed - used)}"
    docs = (REPO / "docs" / "deployment.md").read_text()
    env_names = set(yaml.safe_load(COMPOSE.read_text())["x-igat-environment"])
    missing = sorted(v for v in used | env_names if v not in docs)
    assert not missing, f"not documented in docs/deployment.md: {missing}"
    assert "## Scaling out" in docs


# --- compose: the commands the services run -------------------------------------------------------------
def _shell_script(resolved: dict, service: str) -> str:
    cmd = resolved["services"][service]["command"]
    assert cmd[:2] == ["sh", "-ec"], cmd
    return cmd[2].replace("$$", "$")  # compose's escape for a literal $


@pytest.fixture
def fake_igat(tmp_path) -> Path:
    """A stand-in `igat` that records its arguments and keeps running (holding inherited fds)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "igat"
    script.write_text('#!/bin/sh\necho "$@" > "$IGAT_ARGS_FILE"\nexec sleep 60\n')
    script.chmod(0o755)
    return bin_dir


def test_worker_replicas_take_distinct_gpus(resolved, fake_igat, tmp_path):
    if not shutil.which("flock"):
        pytest.skip("flock (util-linux) is not installed")
    script = _shell_script(resolved, "worker")
    locks = tmp_path / "locks"
    procs: list[subprocess.Popen] = []

    def replica(i: int, gpus: str) -> subprocess.Popen:
        env = {"PATH": f"{fake_igat}:{os.environ['PATH']}", "IGAT_GPUS": gpus, "IGAT_GPU_LOCK_DIR": str(locks),
               "IGAT_ARGS_FILE": str(tmp_path / f"args{i}")}
        p = subprocess.Popen(["sh", "-ec", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        procs.append(p)
        return p

    def args_of(i: int) -> str:
        deadline = time.monotonic() + 10
        path = tmp_path / f"args{i}"
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().strip():
                return path.read_text().strip()
            time.sleep(0.05)
        raise AssertionError(f"replica {i} did not start a worker")

    try:
        replica(0, "2")
        assert args_of(0) == "worker --gpu 0"
        replica(1, "2")
        assert args_of(1) == "worker --gpu 1"
        third = replica(2, "2")
        _, err = third.communicate(timeout=10)
        assert third.returncode == 1 and "all 2 GPUs already have a worker" in err
        # the first replica exits: its GPU is free again for the next replica
        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait(10)
        replica(3, "2")
        assert args_of(3) == "worker --gpu 0"
        replica(4, "0")
        assert args_of(4) == "worker --hostname cpu@%h"
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_igat_commands_of_the_services_parse(resolved):
    from igat.cli import build_parser
    from tasks import cli

    parser = build_parser()
    pinned = resolved["services"]["worker-gpu1"]["command"]
    assert pinned[0] == "igat"
    args = parser.parse_args(pinned[1:])
    assert args.func is cli.cmd_worker and args.gpu == 0 and args.hostname == "gpu1@%h"
    for line in re.findall(r"exec (igat [^\n]*)", _shell_script(resolved, "worker")):
        argv = [a.strip('"').replace("$i", "3") for a in line.split()[1:]]
        assert parser.parse_args(argv).func is cli.cmd_worker, line
    # the dashboard runs the image's default command: Streamlit on app/main.py
    cmd = _dockerfile_instructions()["CMD"][-1]
    assert "app/main.py" in cmd and (REPO / "app" / "main.py").is_file()


def test_migrate_command_creates_the_schema_on_a_fresh_postgres(resolved):
    psycopg = pytest.importorskip("psycopg")
    admin = os.environ.get("IGAT_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except Exception as exc:
        pytest.skip(f"no PostgreSQL at {admin}: {exc}")
    name = f"igat_deploy_{os.getpid()}"
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    try:
        cmd = resolved["services"]["migrate"]["command"]
        assert cmd[0] == "python"
        env = {**os.environ, "IGAT_DATABASE_URL": url, "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, text=True, timeout=120,
                              cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        from tasks.migrate import head_revision

        assert f"database schema at {head_revision()}" in proc.stdout
        with psycopg.connect(admin.rsplit("/", 1)[0] + f"/{name}") as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision()
            tables = {r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"experiment", "run", "metric", "evalresult"} <= tables
        again = subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, text=True, timeout=120,
                               cwd=REPO)
        assert again.returncode == 0, "the one-shot migration must be safe to repeat: " + again.stderr
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Dockerfile ----------------------------------------------------------------------------------------
def _dockerfile_instructions(text: str | None = None) -> dict[str, list[str]]:
    """Instruction -> its arguments in order (continuation lines joined, comments dropped)."""
    text = DOCKERFILE.read_text() if text is None else text
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    out: dict[str, list[str]] = {}
    for item in logical:
        key, _, rest = item.partition(" ")
        out.setdefault(key.upper(), []).append(rest.strip())
    out["_order"] = [item.partition(" ")[0].upper() + " " + item.partition(" ")[2] for item in logical]
    return out


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("hadolint"), "--no-color", "--failure-threshold", "style", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_dockerfile_passes_hadolint():
    proc = _hadolint(DOCKERFILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_broken_dockerfile_fails_hadolint(tmp_path):
    text = DOCKERFILE.read_text()
    broken = {
        "latest-base": (re.sub(r"^FROM \S+", "FROM python:latest", text, count=1, flags=re.M), "DL3007"),
        "unpinned-pip": (text.replace("USER 1000:1000", "RUN pip install --no-cache-dir flask\nUSER 1000:1000"), "DL3013"),
        "root-user": (text.replace("USER 1000:1000", "USER root"), "DL3002"),
    }
    for name, (body, rule) in broken.items():
        assert body != text, f"mutation {name} did not apply"
        path = tmp_path / f"Dockerfile.{name}"
        path.write_text(body)
        proc = _hadolint(path)
        assert proc.returncode != 0 and rule in proc.stdout, f"{name}: {proc.stdout}"


def test_dockerfile_runs_as_non_root_with_a_healthcheck():
    ins = _dockerfile_instructions()
    user = ins["USER"][-1].split(":")[0]
    assert user not in ("root", "0"), "the image must run as a non-root user"
    assert re.fullmatch(r"\d+", user), "numeric uid: verifiable by runAsNonRoot"
    (health,) = ins["HEALTHCHECK"]
    assert "/_stcore/health" in health and "8501" in health
    assert "8501" in ins["EXPOSE"][0]


def test_dockerfile_pins_torch_within_pyproject_and_installs_deps_before_source():
    from packaging.requirements import Requirement

    ins = _dockerfile_instructions()
    args = dict(a.split("=", 1) for a in ins.get("ARG", []) if "=" in a)
    deps = {Requirement(d).name: Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    for pkg, arg in (("torch", "TORCH_VERSION"), ("torchvision", "TORCHVISION_VERSION")):
        assert arg in args, f"{arg} must pin {pkg}"
        assert deps[pkg].specifier.contains(args[arg]), f"{pkg}=={args[arg]} is outside pyproject's {deps[pkg].specifier}"
    order = ins["_order"]
    first_source = min(i for i, s in enumerate(order) if re.match(r"COPY (igat|tasks|app)/", s))
    deps_install = next(i for i, s in enumerate(order) if s.startswith("RUN") and "-r /tmp/requirements.txt" in s)
    torch_install = next(i for i, s in enumerate(order) if s.startswith("RUN") and "torch==" in s)
    assert torch_install < deps_install < first_source, "dependency layers must come before the source copy (cache)"
    assert any(re.match(r"COPY pyproject.toml", s) for s in order[:deps_install])
    # the dependency layer's requirement list, computed as the RUN line computes it
    code = re.search(r'python -c "(.*?)"\s*>\s*/tmp/requirements.txt', order[deps_install]).group(1)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    listed = [Requirement(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [str(r) for r in listed] == [str(r) for r in deps.values()]


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches a path's parents."""

    def regex(p: str) -> re.Pattern:
        p = p.strip("/")
        out = ""
        i = 0
        while i < len(p):
            if p.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif p.startswith("**", i):
                out += ".*"
                i += 2
            elif p[i] == "*":
                out += "[^/]*"
                i += 1
            elif p[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(p[i])
                i += 1
        return re.compile(out + "$")

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        rx = regex(pat[1:] if neg else pat)
        if any(rx.match(p) for p in prefixes):
            ignored = not neg
    return ignored


def test_dockerignore_sends_the_sources_and_keeps_secrets_out():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.strip().startswith("#")]
    for src in ("pyproject.toml", "README.md", ".streamlit/config.toml", "igat/config.py", "tasks/migrations/env.py",
                "tasks/alembic.ini", "app/main.py"):
        assert not _dockerignored(src, patterns), f"{src} would be missing from the build context"
    for secret in (".env", ".git/config", ".venv/bin/python", "tests/test_deploy.py", "igat/__pycache__/x.pyc",
                   "runs/1/last.pt", "igat_lab.egg-info/PKG-INFO"):
        assert _dockerignored(secret, patterns), f"{secret} must not reach the build context"
    # every COPY source of the Dockerfile survives the ignore file
    for copy in _dockerfile_instructions()["COPY"]:
        for src in copy.split()[:-1]:
            if not src.startswith("--"):
                assert not _dockerignored(src.rstrip("/"), patterns), src
                assert (REPO / src).exists(), src


# --- deploy/container-smoke.sh (the real build and run; by hand, never in pytest) -------------------------
SMOKE = REPO / "deploy" / "container-smoke.sh"


def test_container_smoke_script_parses_and_passes_shellcheck():
    proc = subprocess.run(["bash", "-n", str(SMOKE)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert os.access(SMOKE, os.X_OK), "deploy/container-smoke.sh must be executable"
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run([shellcheck, str(SMOKE), str(REPO / "deploy" / "standin" / "postgres-entrypoint.sh")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_base_is_the_official_image_unless_a_stand_in_is_asked_for():
    ins = _dockerfile_instructions()
    (frm,) = ins["FROM"]
    assert frm == "${PYTHON_BASE}"
    assert "PYTHON_BASE=python:3.11-slim-bookworm" in ins["ARG"]
    # the stand-in has the same Debian release and Python minor
    standin = (REPO / "deploy" / "standin" / "python.Containerfile").read_text()
    assert "python3 -m venv /usr/local" in standin and "(3, 11)" in standin


def test_compose_service_resolver_agrees_with_docker_compose(tmp_path, resolved):
    """deploy/compose_service.py (what the smoke test runs) resolves services as docker-compose does."""
    sys.path.insert(0, str(REPO / "deploy"))
    try:
        import compose_service
    finally:
        sys.path.pop(0)
    env = compose_service.read_env_file(_env_file(tmp_path))
    mine = compose_service.resolve(COMPOSE, env)
    # `docker-compose config` prints a compose file, so it keeps `$$` escaped; the containers get `$`
    theirs_all = yaml.safe_load(yaml.safe_dump(resolved).replace("$$", "$"))
    for name in ("config-check", "redis", "postgres", "migrate", "dashboard", "worker", "worker-gpu1"):
        theirs, ours = theirs_all["services"][name], mine["services"][name]
        assert ours.get("command") == theirs.get("command"), name
        assert {k: str(v) for k, v in (ours.get("environment") or {}).items()} == theirs.get("environment", {}), name
        assert compose_service.healthcheck_test(ours) == (theirs.get("healthcheck") or {}).get("test"), name
    with pytest.raises(compose_service.InterpolationError, match="set REDIS_PASSWORD in .env"):
        compose_service.resolve(COMPOSE, {"POSTGRES_PASSWORD": "x"})
    assert compose_service.interpolate("a$${X}b${Y:-d}${Z-e}", {"Y": "", "Z": ""}) == "a${X}bd"
