#!/usr/bin/env bash
# Build the iGAT Lab image for real and run an experiment through the containerised stack.
#
#   sudo deploy/container-smoke.sh                 # podman (default when installed) or docker
#   sudo deploy/container-smoke.sh --remove-images # also delete the images it built at the end
#   sudo deploy/container-smoke.sh --no-cache      # rebuild every image from scratch
#
# What it does (docs/deployment.md, "Container smoke test", has a measured run):
#  1. base images: python:3.11-slim-bookworm, redis:7.2-alpine and postgres:16-alpine are pulled;
#     where no registry can be reached it builds stand-ins instead (deploy/standin/*.Containerfile)
#     on a Debian bookworm made with debootstrap: Python 3.11 at the official image's paths, Debian's
#     Redis and PostgreSQL behind the same commands and environment variables;
#  2. builds ./Dockerfile unchanged (the stand-in only through the PYTHON_BASE build argument), the
#     PyTorch layer through deploy/pypi_passthrough.py (PyPI's own index; a local wheel is used only
#     when its sha256 equals PyPI's, so the image holds exactly the files a user's build downloads);
#  3. runs the stack on host networking, every port on 127.0.0.1 and away from the defaults (Redis
#     16379, PostgreSQL 15432, dashboard 18501), each container with the command, environment and
#     healthcheck docker-compose.yml gives it (deploy/compose_service.py): config-check, Redis (AOF,
#     password), PostgreSQL, migrate, one worker, the dashboard;
#  4. checks: the placeholder passwords are refused, Redis refuses a client without the password,
#     the image runs as uid 1000 and its own HEALTHCHECK passes (an extra container with the image's
#     default command and healthcheck verbatim, network=none), the dashboard answers HTTP 200;
#  5. submits a small synthetic experiment from the host with `igat submit --wait` and checks that the
#     run succeeded, on the containerised worker, with its checkpoint in the igat-home volume;
#  6. removes every container and volume it made (trap on EXIT); images stay cached for the next run.
#
# Exits 0 on success; on any failure non-zero with one line "container-smoke: FAIL: <reason>".
# Not part of pytest (minutes, GBs). Settings (environment):
#   IGAT_SMOKE_ENGINE        podman | docker (default: podman if installed)
#   IGAT_SMOKE_WORKDIR       scratch folder (default /var/tmp/igat-smoke)
#   IGAT_SMOKE_PYTHON        host Python with the igat package (default: .venv/bin/python, else python3)
#   IGAT_SMOKE_REDIS_PORT / IGAT_SMOKE_POSTGRES_PORT / IGAT_SMOKE_DASHBOARD_PORT / IGAT_SMOKE_PYPI_PORT
#                            16379 / 15432 / 18501 / 18080
#   IGAT_SMOKE_STANDIN       auto (stand-ins only where a pull fails) | always | never
#   IGAT_SMOKE_DEBIAN_MIRROR Debian mirror for debootstrap and the stand-ins (default: the host's apt source)
#   IGAT_SMOKE_BUILD_CA      a CA bundle to trust for PyPI during `build` only (a TLS-intercepting
#                            network); mounted read-only over pip's certifi bundle, never stored in
#                            the image. Default: the `cert` of the host's pip configuration, if any.
#   IGAT_SMOKE_RUN_TIMEOUT   seconds `igat submit --wait` may take (default 900)
# shellcheck disable=SC2015,SC2001  # `test && test || fail` is meant; sed reads clearer here
set -Eeuo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=igat-smoke
WORKDIR="${IGAT_SMOKE_WORKDIR:-/var/tmp/igat-smoke}"
REDIS_PORT="${IGAT_SMOKE_REDIS_PORT:-16379}"
POSTGRES_PORT="${IGAT_SMOKE_POSTGRES_PORT:-15432}"
DASHBOARD_PORT="${IGAT_SMOKE_DASHBOARD_PORT:-18501}"
PYPI_PORT="${IGAT_SMOKE_PYPI_PORT:-18080}"
STANDIN="${IGAT_SMOKE_STANDIN:-auto}"
RUN_TIMEOUT="${IGAT_SMOKE_RUN_TIMEOUT:-900}"
IMAGE="localhost/igat-lab:smoke"
REMOVE_IMAGES=0
NO_CACHE=()
for arg in "$@"; do
    case "$arg" in
        --remove-images) REMOVE_IMAGES=1 ;;
        --no-cache) NO_CACHE=(--no-cache) ;;
        -h|--help) sed -n '2,40p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "container-smoke: FAIL: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

STEP="start"
T0=$(date +%s)
declare -A MEASURED=()
BUILT_IMAGES=()
PASSTHROUGH_PID=""

log() { printf '[%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
fail() { echo "container-smoke: FAIL: $*" >&2; exit 1; }
step() { STEP="$*"; log "== $*"; }
on_err() { local rc=$?; echo "container-smoke: FAIL: step '$STEP' (exit $rc at line $1)" >&2; exit "$rc"; }
trap 'on_err $LINENO' ERR

# --- the container engine ------------------------------------------------------------------------
ENGINE="${IGAT_SMOKE_ENGINE:-}"
if [ -z "$ENGINE" ]; then
    if command -v podman >/dev/null; then ENGINE=podman
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
    else fail "neither podman nor a running docker engine (apt-get install podman runc)"; fi
fi
ENGINE_ARGS=()
BUILD_ARGS=()
if [ "$ENGINE" = podman ]; then
    # runc and cgroupfs: crun refuses hybrid cgroup v1/v2 hosts, and sandboxes without systemd have
    # no systemd cgroup manager. No default ulimits: raising them is not permitted in such sandboxes.
    if [ -x /usr/sbin/runc ] || command -v runc >/dev/null; then
        ENGINE_ARGS+=(--runtime "$(command -v runc || echo /usr/sbin/runc)")
    fi
    ENGINE_ARGS+=(--cgroup-manager=cgroupfs)
    if [ -z "${CONTAINERS_CONF:-}" ]; then
        mkdir -p "$WORKDIR"
        printf '[containers]\ndefault_ulimits = []\n' > "$WORKDIR/containers.conf"
        export CONTAINERS_CONF="$WORKDIR/containers.conf"
    fi
    # podman's default OCI image format drops HEALTHCHECK; the docker format keeps it.
    BUILD_ARGS+=(--format docker)
fi
eng() { "$ENGINE" "${ENGINE_ARGS[@]}" "$@"; }
image_exists() { eng image inspect "$1" >/dev/null 2>&1; }

# --- host tools ---------------------------------------------------------------------------------
PY="${IGAT_SMOKE_PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY="$(command -v python3)"; fi
fi
"$PY" -c "import igat, tasks, yaml" 2>/dev/null \
    || fail "$PY cannot import the project (pip install -e . first, or set IGAT_SMOKE_PYTHON)"
command -v curl >/dev/null || fail "curl is not installed"
for port in "$REDIS_PORT" "$POSTGRES_PORT" "$DASHBOARD_PORT" "$PYPI_PORT"; do
    "$PY" - "$port" <<'EOF' || fail "port 127.0.0.1:$port is in use (set IGAT_SMOKE_*_PORT)"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))
EOF
done

mkdir -p "$WORKDIR"
ENV_FILE="$WORKDIR/smoke.env"
svc() { env -i PATH="$PATH" "$PY" "$REPO/deploy/compose_service.py" --env-file "$ENV_FILE" "$@"; }
# NUL-separated output of compose_service.py into the named array
svc_array() { local -n _out=$1; shift; mapfile -d '' -t _out < <(svc "$@"); }

CONTAINERS=(config-check redis postgres migrate worker dashboard image-check)
VOLUMES=(redis-data postgres-data igat-home gpu-locks)
cleanup() {
    local rc=$?
    trap - ERR
    set +e
    if [ "${KEEP_LOGS_ON_FAIL:-1}" = 1 ] && [ "$rc" -ne 0 ]; then
        for c in worker dashboard migrate postgres redis; do
            if eng container exists "$PREFIX-$c" 2>/dev/null || eng container inspect "$PREFIX-$c" >/dev/null 2>&1; then
                eng logs --tail 30 "$PREFIX-$c" > "$WORKDIR/$c.log" 2>&1 && echo "  log tail of $c: $WORKDIR/$c.log" >&2
            fi
        done
    fi
    for c in "${CONTAINERS[@]}"; do eng rm -f -t 10 "$PREFIX-$c" >/dev/null 2>&1; done
    for v in "${VOLUMES[@]}"; do eng volume rm -f "$PREFIX-$v" >/dev/null 2>&1; done
    if [ -n "$PASSTHROUGH_PID" ]; then kill "$PASSTHROUGH_PID" 2>/dev/null; wait "$PASSTHROUGH_PID" 2>/dev/null; fi
    if [ "$REMOVE_IMAGES" = 1 ]; then
        for img in "${BUILT_IMAGES[@]}"; do eng rmi -f "$img" >/dev/null 2>&1; done
    fi
    rm -f "$ENV_FILE" "$WORKDIR/bad.env"
    exit "$rc"
}
trap cleanup EXIT
# leftovers of an interrupted earlier run
for c in "${CONTAINERS[@]}"; do eng rm -f -t 5 "$PREFIX-$c" >/dev/null 2>&1 || true; done
for v in "${VOLUMES[@]}"; do eng volume rm -f "$PREFIX-$v" >/dev/null 2>&1 || true; done

log "engine: $ENGINE ${ENGINE_ARGS[*]}; host python: $PY; workdir: $WORKDIR"

# --- the PyPI pass-through (host side) ----------------------------------------------------------
step "PyPI pass-through on 127.0.0.1:$PYPI_PORT"
"$PY" "$REPO/deploy/pypi_passthrough.py" --port "$PYPI_PORT" --from-pip-config > "$WORKDIR/pypi-passthrough.log" 2>&1 &
PASSTHROUGH_PID=$!
for _ in $(seq 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PYPI_PORT/simple/pip/" 2>/dev/null && break
    kill -0 "$PASSTHROUGH_PID" 2>/dev/null || fail "the PyPI pass-through did not start: $(tail -1 "$WORKDIR/pypi-passthrough.log")"
    sleep 0.5
done
curl -fsS -o /dev/null "http://127.0.0.1:$PYPI_PORT/simple/pip/" || fail "the PyPI pass-through cannot read https://pypi.org/simple"
PYPI_URL="http://127.0.0.1:$PYPI_PORT/simple"
log "$(head -1 "$WORKDIR/pypi-passthrough.log")"

# --- base images: the real ones, or stand-ins ---------------------------------------------------
pull_or_standin() {  # $1 real image, $2 stand-in name; prints the image to use
    if [ "$STANDIN" != always ] && { image_exists "$1" || timeout 300 "$ENGINE" "${ENGINE_ARGS[@]}" pull -q "$1" >/dev/null 2>&1; }; then
        echo "$1"
    elif [ "$STANDIN" = never ]; then
        return 1
    else
        echo "localhost/igat-standin/$2:bookworm"
    fi
}
debian_mirror() {
    if [ -n "${IGAT_SMOKE_DEBIAN_MIRROR:-}" ]; then echo "$IGAT_SMOKE_DEBIAN_MIRROR"; return; fi
    local m
    m=$(grep -hsE '^(URIs:|deb) ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null \
        | grep -v -- '-security' | grep -oE 'https?://[^ ]+' | head -1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

step "base images"
PYTHON_BASE=$(pull_or_standin docker.io/library/python:3.11-slim-bookworm python) || fail "cannot pull python:3.11-slim-bookworm"
REDIS_IMAGE=$(pull_or_standin docker.io/library/redis:7.2-alpine redis) || fail "cannot pull redis:7.2-alpine"
POSTGRES_IMAGE=$(pull_or_standin docker.io/library/postgres:16-alpine postgres) || fail "cannot pull postgres:16-alpine"
STANDINS=()
for img in "$PYTHON_BASE" "$REDIS_IMAGE" "$POSTGRES_IMAGE"; do
    case "$img" in localhost/igat-standin/*) STANDINS+=("$img") ;; esac
done
if [ "${#STANDINS[@]}" -gt 0 ]; then
    MIRROR=$(debian_mirror)
    SECURITY_MIRROR="${IGAT_SMOKE_DEBIAN_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}"
    DEBIAN_IMAGE=localhost/igat-standin/debian:bookworm
    if [ "${#NO_CACHE[@]}" -gt 0 ] || ! image_exists "$DEBIAN_IMAGE"; then
        [ "$(id -u)" = 0 ] || fail "building the stand-in Debian base needs root (debootstrap)"
        command -v debootstrap >/dev/null || fail "debootstrap is not installed (apt-get install debootstrap)"
        log "debootstrap --variant=minbase bookworm from $MIRROR"
        t=$(date +%s)
        rm -rf "$WORKDIR/rootfs"
        nice -n 15 debootstrap --variant=minbase bookworm "$WORKDIR/rootfs" "$MIRROR" > "$WORKDIR/debootstrap.log" 2>&1 \
            || fail "debootstrap failed: $(tail -1 "$WORKDIR/debootstrap.log")"
        rm -rf "$WORKDIR/rootfs/var/cache/apt/archives/"*.deb "$WORKDIR/rootfs/var/lib/apt/lists/"*
        tar -C "$WORKDIR/rootfs" -c . | eng import - "$DEBIAN_IMAGE" >> "$WORKDIR/debootstrap.log" 2>&1
        rm -rf "$WORKDIR/rootfs"
        MEASURED[debootstrap]=$(( $(date +%s) - t ))
        BUILT_IMAGES+=("$DEBIAN_IMAGE")
    fi
    t=$(date +%s)
    for img in "${STANDINS[@]}"; do
        name=${img#localhost/igat-standin/}; name=${name%%:*}
        log "stand-in $img (deploy/standin/$name.Containerfile)"
        nice -n 15 "$ENGINE" "${ENGINE_ARGS[@]}" build --network=host "${BUILD_ARGS[@]}" "${NO_CACHE[@]}" \
            --build-arg DEBIAN_BASE="$DEBIAN_IMAGE" --build-arg DEBIAN_MIRROR="$MIRROR" \
            --build-arg DEBIAN_SECURITY_MIRROR="$SECURITY_MIRROR" --build-arg PIP_INDEX_URL="$PYPI_URL" \
            -f "$REPO/deploy/standin/$name.Containerfile" -t "$img" "$REPO/deploy/standin" > "$WORKDIR/standin-$name.log" 2>&1 \
            || fail "building the $name stand-in failed: $(grep -m1 -E '^(Error|E:)' "$WORKDIR/standin-$name.log" || tail -1 "$WORKDIR/standin-$name.log")"
        BUILT_IMAGES+=("$img")
    done
    MEASURED[standins]=$(( $(date +%s) - t ))
fi
log "python base: $PYTHON_BASE; redis: $REDIS_IMAGE; postgres: $POSTGRES_IMAGE"

# --- the project image --------------------------------------------------------------------------
step "build $IMAGE from ./Dockerfile"
CA="${IGAT_SMOKE_BUILD_CA:-$("$PY" -m pip config get global.cert 2>/dev/null || true)}"
CA="${CA:-${PIP_CERT:-}}"
CA_MOUNT=()
if [ -n "$CA" ] && [ -f "$CA" ]; then
    # Only for this network's TLS interception: pip in the build trusts the host's CA bundle through
    # a read-only mount over pip's own certifi bundle (a file the base image has), so nothing of it
    # is written into a layer.
    CERTIFI=$(eng run --rm --network=none "$PYTHON_BASE" python -c \
        "import pip._vendor.certifi as c; print(c.where())" 2>/dev/null) || fail "no pip certifi bundle in $PYTHON_BASE"
    CA_MOUNT=(-v "$CA:$CERTIFI:ro")
    log "build trusts the host CA bundle $CA (mounted at $CERTIFI during RUN steps only)"
fi
OLD_IMAGE_ID=$(eng image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
t=$(date +%s)
nice -n 15 "$ENGINE" "${ENGINE_ARGS[@]}" build --network=host "${BUILD_ARGS[@]}" "${NO_CACHE[@]}" "${CA_MOUNT[@]}" \
    --build-arg PYTHON_BASE="$PYTHON_BASE" --build-arg TORCH_INDEX_URL="$PYPI_URL" \
    -f "$REPO/Dockerfile" -t "$IMAGE" "$REPO" > "$WORKDIR/image-build.log" 2>&1 \
    || fail "docker build failed: $(grep -m1 -E '^(Error|ERROR)' "$WORKDIR/image-build.log" || tail -1 "$WORKDIR/image-build.log") (log: $WORKDIR/image-build.log)"
MEASURED[build]=$(( $(date +%s) - t ))
BUILT_IMAGES+=("$IMAGE")
# the previous build, now untagged (its layers are shared; only an image record would pile up)
if [ -n "$OLD_IMAGE_ID" ] && [ "$OLD_IMAGE_ID" != "$(eng image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    eng rmi "$OLD_IMAGE_ID" >/dev/null 2>&1 || true
fi
SIZE_BYTES=$(eng image inspect --format '{{.Size}}' "$IMAGE")
MEASURED[size]=$(awk -v b="$SIZE_BYTES" 'BEGIN { printf "%.2f GB (%d bytes)", b / 1e9, b }')
log "built in ${MEASURED[build]} s; image size ${MEASURED[size]}"
TORCH=$(eng run --rm --network=none "$IMAGE" python -c \
    "import torch, torchvision, sys; print(f'python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision {torchvision.__version__}')") \
    || fail "the image cannot import torch"
log "$TORCH"

# --- configuration: the compose file's own variables, pointed at 127.0.0.1 ----------------------
REDIS_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
POSTGRES_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$WORKDIR/igat-data"
cat > "$ENV_FILE" <<EOF
REDIS_PASSWORD=$REDIS_PASSWORD
POSTGRES_PASSWORD=$POSTGRES_PASSWORD
REDIS_HOST=127.0.0.1
REDIS_PORT=$REDIS_PORT
POSTGRES_HOST=127.0.0.1
POSTGRES_PORT=$POSTGRES_PORT
IGAT_IMAGE=$IMAGE
IGAT_DATASETS_DIR=$WORKDIR/igat-data
IGAT_DASHBOARD_BIND=127.0.0.1
IGAT_DASHBOARD_PORT=$DASHBOARD_PORT
IGAT_HEARTBEAT_SECONDS=2
OMP_NUM_THREADS=2
EOF
chmod 600 "$ENV_FILE"
[ "$(svc dashboard image)" = "$IMAGE" ] || fail "compose's IGAT_IMAGE did not resolve to $IMAGE"

env_args() {  # --env options for a service's environment (from compose) plus extra K=V
    local svc_name=$1; shift
    local -a kv
    svc_array kv "$svc_name" environment
    ENV_ARGS=()
    for e in "${kv[@]}" "$@"; do ENV_ARGS+=(-e "$e"); done
}
health_cmd() {  # the argv that runs a healthcheck test (["CMD", ...] or ["CMD-SHELL", "..."]) via exec
    "$PY" -c '
import json, sys
t = json.loads(sys.argv[1])
if t[0] == "CMD-SHELL":
    t = ["sh", "-c", t[1]]
elif t[0] == "CMD":
    t = t[1:]
else:
    raise SystemExit(f"unsupported healthcheck {t}")
sys.stdout.write("".join(a + "\0" for a in t))
' "$1"
}
wait_healthy() {  # container, seconds, test JSON; prints the seconds it took
    local c=$1 limit=$2 test=$3 start argv
    start=$(date +%s)
    mapfile -d '' -t argv < <(health_cmd "$test")
    while true; do
        if timeout 30 "$ENGINE" "${ENGINE_ARGS[@]}" exec "$c" "${argv[@]}" >/dev/null 2>&1; then
            echo $(( $(date +%s) - start )); return 0
        fi
        [ "$(eng inspect --format '{{.State.Running}}' "$c" 2>/dev/null)" = true ] \
            || { log "$c exited: $(eng logs --tail 5 "$c" 2>&1 | tr '\n' ' ')" >&2; return 1; }
        [ $(( $(date +%s) - start )) -lt "$limit" ] || { log "$c not healthy after ${limit}s" >&2; return 1; }
        sleep 2
    done
}
# (podman without systemd cannot create the healthcheck timers and says so on stderr for every
# container with a healthcheck; this script runs the healthcheck commands itself, via exec)
ENGINE_LOG="$WORKDIR/engine.log"
: > "$ENGINE_LOG"
RUN=(run --network=host --log-driver=k8s-file)
[ "$ENGINE" = docker ] && RUN=(run --network=host)

# --- config-check -------------------------------------------------------------------------------
step "config-check (compose's password check, network=none)"
svc_array CHECK_CMD config-check command
env_args config-check
eng run --rm --name "$PREFIX-config-check" --network=none "${ENV_ARGS[@]}" "$REDIS_IMAGE" "${CHECK_CMD[@]}" >/dev/null \
    || fail "config-check refused real passwords"
if eng run --rm --network=none -e REDIS_PASSWORD=change-me-redis -e POSTGRES_PASSWORD="$POSTGRES_PASSWORD" \
        "$REDIS_IMAGE" "${CHECK_CMD[@]}" >/dev/null 2>&1; then
    fail "config-check accepted the change-me placeholder of .env.example"
fi

STACK_T0=$(date +%s)
# --- Redis --------------------------------------------------------------------------------------
step "redis on 127.0.0.1:$REDIS_PORT (AOF, password)"
svc_array REDIS_CMD redis command
[ "${REDIS_CMD[0]}" = sh ] && [ "${REDIS_CMD[1]}" = -c ] || fail "unexpected redis command in docker-compose.yml: ${REDIS_CMD[*]}"
env_args redis
# host networking: the same command, bound to loopback on the smoke port
eng "${RUN[@]}" -d --name "$PREFIX-redis" "${ENV_ARGS[@]}" -v "$PREFIX-redis-data:/data" "$REDIS_IMAGE" \
    sh -c "${REDIS_CMD[2]} --bind 127.0.0.1 --port $REDIS_PORT" >/dev/null 2>>"$ENGINE_LOG"
# compose's healthcheck (redis-cli ping, authenticated by REDISCLI_AUTH) against the smoke port
REDIS_TEST=$(svc redis healthcheck | "$PY" -c "
import json, sys
t = json.load(sys.stdin)
i = t.index('redis-cli') + 1
print(json.dumps(t[:i] + ['-p', '$REDIS_PORT'] + t[i:]))")
wait_healthy "$PREFIX-redis" 60 "$REDIS_TEST" >/dev/null || fail "redis did not become healthy"
[ "$(eng exec "$PREFIX-redis" redis-cli -p "$REDIS_PORT" config get appendonly | tail -1)" = yes ] || fail "redis runs without AOF"
NOAUTH=$(eng exec -e REDISCLI_AUTH= "$PREFIX-redis" redis-cli -p "$REDIS_PORT" ping 2>&1 || true)
grep -q NOAUTH <<<"$NOAUTH" || fail "redis answers without the password: $NOAUTH"

# --- PostgreSQL ---------------------------------------------------------------------------------
step "postgres on 127.0.0.1:$POSTGRES_PORT"
env_args postgres PGPORT="$POSTGRES_PORT"
eng "${RUN[@]}" -d --name "$PREFIX-postgres" "${ENV_ARGS[@]}" -v "$PREFIX-postgres-data:/var/lib/postgresql/data" \
    "$POSTGRES_IMAGE" postgres -c listen_addresses=127.0.0.1 -c port="$POSTGRES_PORT" >/dev/null 2>>"$ENGINE_LOG"
# compose's healthcheck as it is (pg_isready over TCP; PGPORT points it at the smoke port)
wait_healthy "$PREFIX-postgres" 120 "$(svc postgres healthcheck)" >/dev/null || fail "postgres did not become healthy"

IGAT_MOUNTS=(-v "$PREFIX-igat-home:/data/igat" -v "$WORKDIR/igat-data:/data/datasets:ro")

# --- migrate ------------------------------------------------------------------------------------
step "migrate (one-shot)"
svc_array MIGRATE_CMD migrate command
env_args migrate
MIGRATE_OUT=$(eng "${RUN[@]}" --rm --name "$PREFIX-migrate" "${ENV_ARGS[@]}" "${IGAT_MOUNTS[@]}" "$IMAGE" "${MIGRATE_CMD[@]}" 2>&1) \
    || fail "migrate failed: $(echo "$MIGRATE_OUT" | tail -1)"
grep -q "database schema at" <<<"$MIGRATE_OUT" || fail "migrate did not report the schema: $MIGRATE_OUT"
log "$(echo "$MIGRATE_OUT" | tail -1)"

# --- worker -------------------------------------------------------------------------------------
step "worker"
svc_array WORKER_CMD worker command
env_args worker
eng "${RUN[@]}" -d --name "$PREFIX-worker" --hostname "$PREFIX-worker" --stop-timeout 60 "${ENV_ARGS[@]}" \
    "${IGAT_MOUNTS[@]}" -v "$PREFIX-gpu-locks:/var/lib/igat/gpu-locks" "$IMAGE" "${WORKER_CMD[@]}" >/dev/null 2>>"$ENGINE_LOG"

# --- dashboard ----------------------------------------------------------------------------------
step "dashboard on 127.0.0.1:$DASHBOARD_PORT"
env_args dashboard
mapfile -t IMAGE_CMD < <(eng image inspect --format '{{range .Config.Cmd}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
IMAGE_HEALTH=$(eng image inspect --format '{{json .Config.Healthcheck.Test}}' "$IMAGE")
[ -n "$IMAGE_HEALTH" ] && [ "$IMAGE_HEALTH" != null ] || fail "the image has no HEALTHCHECK (podman: build with --format docker)"
# compose publishes container port 8501 on IGAT_DASHBOARD_BIND:IGAT_DASHBOARD_PORT; with host
# networking the same is the image's command listening there directly
DASH_CMD=()
for a in "${IMAGE_CMD[@]}"; do
    case "$a" in
        --server.address=*) DASH_CMD+=("--server.address=127.0.0.1") ;;
        --server.port=*) DASH_CMD+=("--server.port=$DASHBOARD_PORT") ;;
        *) DASH_CMD+=("$a") ;;
    esac
done
eng "${RUN[@]}" -d --name "$PREFIX-dashboard" "${ENV_ARGS[@]}" "${IGAT_MOUNTS[@]}" "$IMAGE" "${DASH_CMD[@]}" >/dev/null 2>>"$ENGINE_LOG"

step "waiting for the stack to be healthy"
WORKER_S=$(wait_healthy "$PREFIX-worker" 300 "$(svc worker healthcheck)") || fail "the worker did not become healthy (celery ping)"
DASH_S=$(wait_healthy "$PREFIX-dashboard" 180 "${IMAGE_HEALTH//8501/$DASHBOARD_PORT}") || fail "the dashboard did not become healthy"
MEASURED[startup]=$(( $(date +%s) - STACK_T0 ))
log "stack healthy ${MEASURED[startup]} s after Redis started (worker ping ok, dashboard health ok)"
WORKER_LOG=$(eng logs "$PREFIX-worker" 2>&1)
grep -q "no GPU visible: starting a CPU worker" <<<"$WORKER_LOG" && log "worker: no GPU visible, started a CPU worker" \
    || log "worker: $(grep -m1 -E 'taking GPU|GPU' <<<"$WORKER_LOG" || echo 'started')"

# HTTP 200 from the host
for path in / /_stcore/health; do
    code=$(curl -s -o "$WORKDIR/http.out" -w '%{http_code}' "http://127.0.0.1:$DASHBOARD_PORT$path")
    [ "$code" = 200 ] || fail "dashboard GET $path answered HTTP $code"
done
log "dashboard: GET / -> 200, GET /_stcore/health -> 200 ($(head -c 20 "$WORKDIR/http.out"))"

# non-root
[ "$(eng image inspect --format '{{.Config.User}}' "$IMAGE")" = "1000:1000" ] || fail "the image's USER is not 1000:1000"
for c in worker dashboard; do
    [ "$(eng exec "$PREFIX-$c" id -u)" = 1000 ] || fail "$c runs as uid $(eng exec "$PREFIX-$c" id -u), not 1000"
done

# the image exactly as built: default command and HEALTHCHECK verbatim, own network namespace
step "image check: default command + HEALTHCHECK verbatim (network=none)"
eng run -d --name "$PREFIX-image-check" --network=none "$IMAGE" >/dev/null 2>>"$ENGINE_LOG"
IMAGE_HEALTH_S=$(wait_healthy "$PREFIX-image-check" 120 "$IMAGE_HEALTH") || fail "the image's own HEALTHCHECK never passed"
[ "$(eng exec "$PREFIX-image-check" id -u)" = 1000 ] || fail "the image's default command does not run as uid 1000"
log "image HEALTHCHECK passed after ${IMAGE_HEALTH_S} s; runs as uid 1000"
eng rm -f -t 5 "$PREFIX-image-check" >/dev/null 2>>"$ENGINE_LOG"

# --- an experiment from the host ----------------------------------------------------------------
step "igat submit --wait (synthetic experiment) from the host"
export IGAT_BROKER_URL="redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/0"
export IGAT_DATABASE_URL="postgresql+psycopg://igat:$POSTGRES_PASSWORD@127.0.0.1:$POSTGRES_PORT/igat"
export IGAT_HOME="$WORKDIR/host-igat-home"
unset IGAT_REDIS_PREFIX IGAT_RESULT_BACKEND
if [ -x "$(dirname "$PY")/igat" ]; then IGAT_CLI=("$(dirname "$PY")/igat"); else IGAT_CLI=("$PY" -m igat); fi
t=$(date +%s)
SUBMIT_OUT=$(timeout "$RUN_TIMEOUT" "${IGAT_CLI[@]}" submit "$REPO/deploy/smoke-experiment.yaml" --wait 2>&1) \
    || fail "igat submit --wait failed (rc $?): $(echo "$SUBMIT_OUT" | tail -2 | tr '\n' ' ')"
MEASURED[submit]=$(( $(date +%s) - t ))
echo "$SUBMIT_OUT" | sed 's/^/    /'
grep -qE '^run [0-9]+ .*: succeeded$' <<<"$SUBMIT_OUT" || fail "the run did not succeed: $SUBMIT_OUT"
RUN_ID=$(echo "$SUBMIT_OUT" | sed -nE 's/^run ([0-9]+) .*: succeeded$/\1/p' | head -1)
SHOW=$("${IGAT_CLI[@]}" runs show "$RUN_ID" 2>&1) || fail "igat runs show $RUN_ID failed: $SHOW"
grep -qE "worker: cpu@$PREFIX-worker" <<<"$SHOW" || fail "run $RUN_ID did not run on the containerised worker: $SHOW"
CKPT=$(echo "$SHOW" | sed -nE 's/^ *checkpoint_path: (.*)$/\1/p')
[ -n "$CKPT" ] && eng exec "$PREFIX-worker" test -s "$CKPT" || fail "checkpoint $CKPT is not in the igat-home volume"
echo "$SHOW" | sed -n '/evaluation/,$p' | sed 's/^/    /'
MEASURED[result]=$(echo "$SHOW" | sed -n '/evaluation/,$p' | grep -E '^ +[^ ]+ +[^ ]+ +(natural|pgd)' | awk '{printf "%s%s %s %s %s", (NR>1 ? "; " : ""), $1, $2, $3, $4}')
log "run $RUN_ID succeeded on cpu@$PREFIX-worker in ${MEASURED[submit]} s (submit to success); checkpoint $CKPT"

step "tear down"
eng stop -t 60 "$PREFIX-worker" >/dev/null 2>>"$ENGINE_LOG"
STOP_LOG=$(eng logs --tail 5 "$PREFIX-worker" 2>&1 | tr '\n' ' ')
log "worker stopped: ${STOP_LOG:0:200}"

echo
echo "container-smoke: OK"
echo "  engine:            $ENGINE $("$ENGINE" --version 2>/dev/null | head -1)"
echo "  base images:       python=$PYTHON_BASE redis=$REDIS_IMAGE postgres=$POSTGRES_IMAGE"
[ -n "${MEASURED[debootstrap]:-}" ] && echo "  debootstrap:       ${MEASURED[debootstrap]} s"
[ -n "${MEASURED[standins]:-}" ] && echo "  stand-in builds:   ${MEASURED[standins]} s"
echo "  image build:       ${MEASURED[build]} s ($IMAGE)"
echo "  image size:        ${MEASURED[size]}"
echo "  image contents:    $TORCH"
echo "  stack start-up:    ${MEASURED[startup]} s to healthy (worker ping after ${WORKER_S} s, dashboard health after ${DASH_S} s of waiting)"
echo "  image healthcheck: passed after ${IMAGE_HEALTH_S} s (default command, network=none), uid 1000"
echo "  experiment:        run $RUN_ID succeeded in ${MEASURED[submit]} s from submit (${MEASURED[result]:-see above})"
echo "  total:             $(( $(date +%s) - T0 )) s"
