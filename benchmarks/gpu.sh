#!/usr/bin/env bash
# ailib on a CUDA machine, in one call of at most 540 s, with nothing but what is installed there:
#   1. environment: what is installed, what is missing; carried wheels installed offline;
#                   whether CuPy steps can be CUDA graphs (a child process: where cuBLAS called
#                   directly crashes it, AILIB_CUBLAS_DIRECT=0 for the later stages)
#   2. tests:       the CuPy tests and the GPU PyTorch / JAX tests (pytest -k "cupy or cuda or gpu")
#   3. train:       `ailib train --backend cupy` on MNIST's 10k test digits (data/mnist-test, 8k/2k),
#                   then the same with --compile on (each step one CUDA graph; in gpu.log only)
#   4. bench:       the MLP benchmark, ailib on CuPy (one kernel per array operation, CuPy's
#                   fused kernels for the loss, ReLU's backward and the update) and ailib on
#                   CuPy with compiled steps (one CUDA graph launch per step, its products
#                   calling cuBLAS directly; left out, with the reason, where that fails) vs
#                   PyTorch eager CUDA, batch 128 and 1024, full 60,000-row epochs; 4-bench.md
#                   also gives the array operations per step (ailib.opcount, counted on CuPy)
#
#     make gpu-wheels                   # here, once (needs PyPI): the wheels the GPU machine lacks
#     bash benchmarks/gpu.sh            # there, with .whl carried along
#     bash benchmarks/gpu.sh --dry-run  # anywhere: print the stages, run nothing
#
# The GPU machine has no network, Python 3.12 with CuPy, PyTorch and JAX, but not array-api-compat
# or array-api-strict: `make gpu-wheels` downloads those into the git-ignored folder .whl, which
# travels with the call (carry .whl) and is installed here with --no-index into a --target folder
# put on PYTHONPATH. Nothing else is installed; what is missing is said, and its stage is skipped.
#
# Output: $OUT when set (else benchmarks/results/gpu-<UTC time>/): gpu.log (everything), and one
# file per stage written while it runs, complete when it ends: 1-environment.txt, 2-tests.txt,
# 3-train.txt, 3-train-history.json, 4-bench.json (rewritten after every measured batch size, so
# a run stopped at its limit keeps what it measured) and 4-bench.md: 7 files (the device tool
# brings back at most 8).
set -uo pipefail

usage() {
    cat <<'EOF'
usage: bash benchmarks/gpu.sh [--help] [--dry-run] [--no-tests] [--no-train] [--no-bench]
                              [--python PYTHON]

  --dry-run     print each stage and its command, run nothing (exit 0)
  --no-tests    skip stage 2; --no-train skips stage 3; --no-bench skips stage 4
  --python P    the interpreter (default: $PYTHON, else .venv/bin/python, else python3)

Time limits (seconds): TOTAL_LIMIT=540 for the whole run; WHEEL_LIMIT=20, ENV_LIMIT=60,
TEST_LIMIT=250, TRAIN_LIMIT=30 (each of two), BENCH_LIMIT=120 per stage (510 s, plus 5 s to
stop each), each cut to what is left of the total.
Environment: OUT (output folder), AILIB_SITE (where wheels go, default /tmp/ailib-site),
TRAIN_EPOCHS (default 3).
EOF
}

DRY=0; TESTS=1; TRAIN=1; BENCH=1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --dry-run) DRY=1 ;;
        --no-tests) TESTS=0 ;;
        --no-train) TRAIN=0 ;;
        --no-bench) BENCH=0 ;;
        --python) shift; PY="${1:?--python needs a value}" ;;
        *) echo "gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ -z "$PY" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
TOTAL_LIMIT="${TOTAL_LIMIT:-540}"
WHEEL_LIMIT="${WHEEL_LIMIT:-20}"
ENV_LIMIT="${ENV_LIMIT:-60}"
TEST_LIMIT="${TEST_LIMIT:-250}"
TRAIN_LIMIT="${TRAIN_LIMIT:-30}"
BENCH_LIMIT="${BENCH_LIMIT:-120}"
TRAIN_EPOCHS="${TRAIN_EPOCHS:-3}"
SITE="${AILIB_SITE:-/tmp/ailib-site}"
if [[ -n "${OUT:-}" ]]; then DEST="$OUT"
elif [[ $DRY -eq 1 ]]; then DEST="$(mktemp -d)"  # a dry run leaves nothing in the repository
else DEST="$ROOT/benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M%S)"; fi
mkdir -p "$DEST"
LOG="$DEST/gpu.log"
exec > >(tee -a "$LOG") 2>&1
cd "$ROOT"

# The GPU settings every stage runs with.
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export JAX_DEFAULT_MATMUL_PRECISION=float32  # not TF32: float32 tests compare at float32 tolerance
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX takes GPU memory as needed, leaving CuPy room
export TF_CPP_MIN_LOG_LEVEL=2

STATUS=0
limit_for() {  # limit_for STAGE_LIMIT: the stage's limit, cut to what is left of the total
    local left=$((TOTAL_LIMIT - SECONDS - 10))
    if (( left < $1 )); then echo $(( left > 0 ? left : 0 )); else echo "$1"; fi
}
stage() {  # stage NAME FILE LIMIT CMD...: run CMD with a time limit, its output also in FILE
    # (FILE "-": in gpu.log only; $OUT brings back at most 8 files)
    local name="$1" file="$2" limit; limit="$(limit_for "$3")"; shift 3
    printf '\n== %s (limit %ss, %ss used of %ss)\n+ timeout %ss' \
        "$name" "$limit" "$SECONDS" "$TOTAL_LIMIT" "$limit"
    printf ' %q' "$@"; echo
    if [[ $DRY -eq 1 ]]; then return 0; fi
    if (( limit < 5 )); then echo "SKIPPED: no time left"; STATUS=1; return 1; fi
    [[ "$file" == - ]] && file=/dev/null || file="$DEST/$file"
    timeout --signal=TERM --kill-after=5 "$limit" "$@" 2>&1 | tee "$file"
    local rc=${PIPESTATUS[0]}
    (( rc == 124 )) && echo "TIMED OUT after ${limit}s"
    (( rc != 0 )) && { echo "$name: exit $rc"; STATUS=1; }
    return "$rc"
}

echo "ailib GPU run: $(date -u +%FT%TZ), output in $DEST${OUT:+ (\$OUT)}"
echo "settings: JAX_DEFAULT_MATMUL_PRECISION=$JAX_DEFAULT_MATMUL_PRECISION" \
     "XLA_PYTHON_CLIENT_PREALLOCATE=$XLA_PYTHON_CLIENT_PREALLOCATE PYTHONPATH=$PYTHONPATH"

# -- 1. environment ----------------------------------------------------------------------------
WHEELS=("$ROOT"/.whl/*.whl)
if [[ -e "${WHEELS[0]}" ]]; then
    stage "1. environment: install the carried wheels (offline)" - "$WHEEL_LIMIT" \
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${WHEELS[@]}"
else
    echo "note: no wheels in .whl (make gpu-wheels prepares them); using what is installed"
fi
stage "1. environment: what is installed" 1-environment.txt "$ENV_LIMIT" \
    "$PY" -m benchmarks.gpu_env
if [[ $DRY -eq 0 ]] && grep -q "^SET AILIB_CUBLAS_DIRECT=0" "$DEST/1-environment.txt" 2>/dev/null; then
    export AILIB_CUBLAS_DIRECT=0
    echo "note: cuBLAS called directly crashed the capture probe: AILIB_CUBLAS_DIRECT=0 from here on"
fi
if [[ $DRY -eq 0 ]] && ! grep -q "^nothing missing" "$DEST/1-environment.txt" 2>/dev/null; then
    grep "MISSING\|UNAVAILABLE" "$DEST/1-environment.txt" || echo "MISSING: the probe did not finish"
    if ! "$PY" -c "import ailib" 2>/dev/null; then
        echo "ailib cannot be imported (make gpu-wheels, then carry .whl): stopping"; exit 1
    fi
fi

# -- 2. tests ----------------------------------------------------------------------------------
if [[ $TESTS -eq 1 ]]; then
    # the files of what never ran on a GPU first (CuPy's fused kernels, its backend and graph
    # steps, the compiled steps, the counts), then the rest, so that a stage cut at its limit
    # has run them (pytest keeps the order of files named one by one, not of a folder's)
    FIRST=(tests/test_fused.py tests/test_cupy_backend.py tests/test_compiling.py
           tests/test_compiled_loops.py tests/test_opcount.py tests/test_layers.py
           tests/test_losses.py)
    REST=()
    for f in tests/test_*.py; do
        case " ${FIRST[*]} " in *" $f "*) ;; *) REST+=("$f") ;; esac
    done
    stage "2. tests: CuPy, PyTorch CUDA and JAX GPU (no -x)" 2-tests.txt "$TEST_LIMIT" \
        "$PY" -m pytest -v --tb=short -rfE -p no:cacheprovider -k "cupy or cuda or gpu" \
        "${FIRST[@]}" "${REST[@]}"
fi

# -- 3. train ----------------------------------------------------------------------------------
if [[ $TRAIN -eq 1 ]]; then
    if [[ $DRY -eq 1 ]]; then RUN_DIR="<a temporary folder>"; else RUN_DIR="$(mktemp -d)"; fi
    stage "3. train: ailib train --backend cupy on MNIST's 10k test digits" 3-train.txt \
        "$TRAIN_LIMIT" "$PY" -m ailib train --backend cupy --dataset mnist-test \
        --data-root "$ROOT/data/mnist-test" --epochs "$TRAIN_EPOCHS" --quiet --out "$RUN_DIR"
    [[ -f "$RUN_DIR/history.json" ]] && cp "$RUN_DIR/history.json" "$DEST/3-train-history.json"
    if [[ $DRY -eq 1 ]]; then GRAPH_DIR="<a temporary folder>"; else GRAPH_DIR="$(mktemp -d)"; fi
    stage "3b. train: the same with --compile on (CUDA graph steps)" - "$TRAIN_LIMIT" \
        "$PY" -m ailib train --backend cupy --dataset mnist-test --compile on \
        --data-root "$ROOT/data/mnist-test" --epochs "$TRAIN_EPOCHS" --quiet --out "$GRAPH_DIR"
fi

# -- 4. bench ----------------------------------------------------------------------------------
if [[ $BENCH -eq 1 ]]; then
    stage "4. bench: MLP, ailib on CuPy (eager and compiled) vs PyTorch eager CUDA" - \
        "$BENCH_LIMIT" "$PY" -m benchmarks.mlp --backends cupy,cupy+compiled --torch cuda --no-reference \
        --batch-size 128,1024 --samples 60000 --repeats 3 --no-sweep --no-memory \
        --out "$DEST/4-bench"
fi

printf '\n== done in %ss (limit %ss), exit %s; files in %s:\n' "$SECONDS" "$TOTAL_LIMIT" \
    "$STATUS" "$DEST"
ls -1 "$DEST"
exit $STATUS
