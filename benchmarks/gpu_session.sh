#!/usr/bin/env bash
# The prepared check for a lent GPU machine (the `device` tool; about 15 minutes of device time per task, the
# machine's start included), in one command, so that a session that is lent one spends its minutes measuring:
#
#   1. the GPU speed table: benchmarks/ensemble_speed.py (8 ResNet-20 members; train step, PGD-20, AT step; every
#      execution path, the fused engine included) in fp32 and bf16 autocast, batch 128 and 512;
#   2. a short real run of the study: `igat study --defense adp --scale cpu-mini --seeds 0` on a class-balanced
#      slice of the CIFAR-10 JPEG tree (10,000 train / 2,000 test images: ../shared does not travel), and the
#      theory diagnostics of its arms, with their wall times.
#
# Every step has its own time limit and writes into $OUT (what the device tool brings back); a step that fails or
# runs out of time is written down and the next one runs. docs/benchmarks.md §9 says what to do with the output.
#
# Here, once per session (downloads pydantic's wheels for the device's Python 3.12, copies the data slice):
#   bash benchmarks/gpu_session.sh prepare
# There (the device tool's run, timeout_s 540, carry [".whl", ".gpu-data"]):
#   bash benchmarks/gpu_session.sh run
# On this CPU, with tiny sizes and synthetic data (what tests/test_gpu_session.py runs):
#   OUT=/tmp/out bash benchmarks/gpu_session.sh smoke
set -uo pipefail

mode="${1:-}"
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-$PWD/gpu-session-out}"

case "$mode" in
prepare)
    # pydantic is the only package the library needs that the device's image lacks (docs of the device tool).
    rm -rf .whl && mkdir -p .whl
    for dist in pydantic pydantic-core annotated-types typing-inspection; do
        version="$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$dist'))")" || exit 1
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .whl "$dist==$version" || { echo "error: could not download $dist==$version for Python 3.12" >&2; exit 1; }
    done
    .venv/bin/python benchmarks/data_slice.py --dst .gpu-data --train-per-class 1000 --test-per-class 200 || exit 1
    ls .whl
    du -sh .whl .gpu-data
    exit 0
    ;;
run)
    DEVICE=cuda
    PY=python3
    if [ -d .whl ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            || { echo "error: the carried wheels did not install" >&2; exit 1; }
        export PYTHONPATH="/tmp/site:$PWD"
    else
        export PYTHONPATH="$PWD"
    fi
    export IGAT_DATA_DIR="$PWD/.gpu-data"
    SPEED_ARGS=(--members 8 --rounds 3)
    BATCHES=(128 512)
    STUDY_ARGS=(--dataset cifar10)
    THEORY_ARGS=()
    LIMIT_SPEED=100
    LIMIT_STUDY=270
    LIMIT_THEORY=90
    ;;
smoke)
    DEVICE=cpu
    PY="${PYTHON:-.venv/bin/python}"
    export PYTHONPATH="$PWD"
    SPEED_ARGS=(--members 2 --rounds 1 --repeats 1 --pgd-steps 2 --at-steps 2 --paths loop+cl)
    BATCHES=(8)
    STUDY_ARGS=(--dataset synthetic --pretrain-epochs 1 --base-min-epochs 1 --base-max-epochs 1 --arm-epochs 1
                --eval-examples 16 --set data.synthetic_train_size=64 --set data.synthetic_test_size=32
                --set data.synthetic_image_size=16 --set train.batch_size=32 --set train.eval_examples=16)
    THEORY_ARGS=(--num-examples 4 --pair-pool 16 --k-pairs 4 --spectral-examples 0)
    LIMIT_SPEED=120
    LIMIT_STUDY=300
    LIMIT_THEORY=120
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh prepare|run|smoke" >&2
    exit 2
    ;;
esac

mkdir -p "$OUT"
export IGAT_HOME="${TMPDIR:-/tmp}/igat-gpu-session-home"
export PYTHONUNBUFFERED=1
log="$OUT/session.log"
: >"$log"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$log"; }

# step NAME LIMIT_SECONDS COMMAND...: runs it with its output in $OUT/NAME.txt; notes its status and wall time.
step() {
    local name="$1" limit="$2"
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    case $rc in
    0) say "$name: ok in $((SECONDS - t0)) s" ;;
    124) say "$name: stopped at its limit of $limit s (what it printed is in $name.txt)" ;;
    *) say "$name: failed (exit $rc) after $((SECONDS - t0)) s; the end of $name.txt:"; tail -n 5 "$OUT/$name.txt" | tee -a "$log" ;;
    esac
}

say "mode $mode, device $DEVICE, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
  nproc; } >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt" >>"$log"

for b in "${BATCHES[@]}"; do
    step "speed-fp32-b$b" "$LIMIT_SPEED" "$PY" benchmarks/ensemble_speed.py --device "$DEVICE" --batch "$b" "${SPEED_ARGS[@]}"
    if [ "$DEVICE" = cuda ]; then
        step "speed-bf16-b$b" "$LIMIT_SPEED" "$PY" benchmarks/ensemble_speed.py --device "$DEVICE" --batch "$b" --amp "${SPEED_ARGS[@]}"
    fi
done

study="${TMPDIR:-/tmp}/igat-gpu-session-study"
rm -rf "$study"
step study "$LIMIT_STUDY" "$PY" -m igat study --defense adp --scale cpu-mini --seeds 0 --device "$DEVICE" \
    --out "$study" "${STUDY_ARGS[@]}"
cp "$study/study.md" "$OUT/study.md" 2>/dev/null
cp "$study/study.json" "$OUT/study.json" 2>/dev/null
if [ -f "$study/study.md" ]; then
    step theory "$LIMIT_THEORY" "$PY" -m igat theory --study "$study" --device "$DEVICE" "${THEORY_ARGS[@]}"
    cp "$study/theory.json" "$OUT/theory.json" 2>/dev/null
fi
say "done"
