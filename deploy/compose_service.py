"""One service of docker-compose.yml as Compose resolves it, for running it without Compose.

deploy/container-smoke.sh starts the stack with plain `podman run` / `docker run` (host networking,
no Compose needed) but takes every command, environment and healthcheck from docker-compose.yml,
so the smoke test exercises the compose file itself. Interpolation follows the Compose spec:
``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``$VAR``,
``$$`` for a literal ``$``; values come from ``--env-file``, then the process environment.

    python deploy/compose_service.py --env-file smoke.env worker command      # NUL-separated argv
    python deploy/compose_service.py --env-file smoke.env worker environment  # NUL-separated K=V
    python deploy/compose_service.py --env-file smoke.env worker healthcheck  # the test as JSON
    python deploy/compose_service.py --env-file smoke.env worker image        # one line

Needs PyYAML (a dependency of the project).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import yaml

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class InterpolationError(ValueError):
    pass


def interpolate(value, env: dict[str, str]):
    """``value`` (a string, or lists / dicts of them) with Compose variable substitution applied."""
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(0) == "$$":
                return "$"
            name = m.group(1) or m.group(4)
            op, arg = m.group(2), m.group(3)
            current = env.get(name)
            unset_or_empty = current is None or (current == "" and op is not None and op.startswith(":"))
            if op and op.endswith("-"):
                return arg if unset_or_empty else current
            if op and op.endswith("?"):
                if unset_or_empty:
                    raise InterpolationError(f"required variable {name} is missing a value: {arg}")
                return current
            return current or ""

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def resolve(compose: Path, env: dict[str, str]) -> dict:
    """The whole file with merge keys expanded (PyYAML) and variables substituted."""
    return interpolate(yaml.safe_load(compose.read_text()), env)


def healthcheck_test(svc: dict) -> list[str] | None:
    """The service's healthcheck test; ``disable: true`` is ``["NONE"]``, as Compose normalises it."""
    hc = svc.get("healthcheck") or {}
    return ["NONE"] if hc.get("disable") else hc.get("test")


def service_field(resolved: dict, service: str, field: str) -> str:
    svc = resolved["services"][service]
    if field == "image":
        return svc["image"] + "\n"
    if field == "command":
        cmd = svc.get("command")
        if cmd is None:
            return ""
        if isinstance(cmd, str):
            raise SystemExit(f"{service}: a string command is not supported here; use the list form")
        return "".join(f"{a}\0" for a in cmd)
    if field == "environment":
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        return "".join(f"{k}={'' if v is None else v}\0" for k, v in env.items())
    if field == "healthcheck":
        return json.dumps(healthcheck_test(svc)) + "\n"
    raise SystemExit(f"unknown field {field!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=Path(__file__).resolve().parents[1] / "docker-compose.yml")
    ap.add_argument("--env-file", type=Path)
    ap.add_argument("service")
    ap.add_argument("field", choices=["image", "command", "environment", "healthcheck"])
    args = ap.parse_args()
    env = dict(os.environ)
    if args.env_file:
        env.update(read_env_file(args.env_file))  # (unlike Compose, the file wins: the smoke test is hermetic)
    try:
        resolved = resolve(args.file, env)
    except InterpolationError as exc:
        print(f"compose_service: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(service_field(resolved, args.service, args.field))
    return 0


if __name__ == "__main__":
    sys.exit(main())
