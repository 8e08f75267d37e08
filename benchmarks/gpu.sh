#!/usr/bin/env bash
# ailib on a CUDA machine: the cross-backend tests including CuPy, then the MLP benchmark
# (ailib on CuPy vs PyTorch eager on CUDA; full 60,000-row epochs at batch 128 and 1024).
# Works offline with what is installed; says clearly what is missing. Run from anywhere:
#
#     bash benchmarks/gpu.sh            # tests + benchmark, about 5 minutes on an H200
#     bash benchmarks/gpu.sh --help
#
# Results: benchmarks/results/gpu-<UTC date>.{json,md,png}; a short table is printed at the end.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash benchmarks/gpu.sh [--help] [--dry-run] [--no-tests] [--no-bench] [--quick]
                              [--python PYTHON] [--install]

  --dry-run     print what would run (and what is missing), run nothing
  --no-tests    skip `python -m pytest -q tests` (the cross-backend suite, CuPy included)
  --no-bench    skip the MLP benchmark
  --quick       a shorter benchmark (fewer repeats, no sweep)
  --python P    the interpreter to use (default: $PYTHON, else .venv/bin/python, else python3)
  --install     if CuPy is missing, try `pip install cupy-cuda12x` (needs network access)

Stages have time limits (tests 300 s, benchmark 420 s) so the whole run stays under 10 minutes.
Environment: TEST_TIMEOUT, BENCH_TIMEOUT override the limits.
EOF
}

DRY=0; TESTS=1; BENCH=1; QUICK=0; INSTALL=0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --dry-run) DRY=1 ;;
        --no-tests) TESTS=0 ;;
        --no-bench) BENCH=0 ;;
        --quick) QUICK=1 ;;
        --install) INSTALL=1 ;;
        --python) shift; PY="${1:?--python needs a value}" ;;
        *) echo "gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ -z "$PY" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
TEST_TIMEOUT="${TEST_TIMEOUT:-300}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-420}"
STAMP="$(date -u +%Y%m%d-%H%M%S)"
OUT="$ROOT/benchmarks/results/gpu-$STAMP"
cd "$ROOT"

say() { printf '\n== %s\n' "$*"; }
run() {  # run LIMIT CMD...: with a time limit, or just print it on --dry-run
    local limit="$1"; shift
    echo "+ timeout ${limit}s $*"
    if [[ $DRY -eq 1 ]]; then return 0; fi
    timeout --signal=TERM --kill-after=15 "$limit" "$@"
}

say "what is installed ($PY)"
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "MISSING: python interpreter '$PY' (pass --python or set PYTHON)"; exit 1
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader || echo "note: nvidia-smi not found"
# Each probe prints one line; none of them fails the script.
probe() {
    "$PY" - "$1" <<'EOF' 2>/dev/null || echo "$1: MISSING (import failed)"
import importlib, sys
name = sys.argv[1]
try:
    m = importlib.import_module(name)
except Exception as exc:
    print(f"{name}: MISSING ({type(exc).__name__}: {exc})"); sys.exit(0)
extra = ""
if name == "cupy":
    try:
        n = m.cuda.runtime.getDeviceCount()
        extra = f", {n} CUDA device(s), CUDA runtime {m.cuda.runtime.runtimeGetVersion()}"
    except Exception as exc:
        extra = f", NO usable CUDA device ({type(exc).__name__}: {exc})"
if name == "torch":
    extra = f", cuda available: {m.cuda.is_available()}"
    if m.cuda.is_available():
        extra += f" ({m.cuda.get_device_name(0)})"
print(f"{name}: {getattr(m, '__version__', '?')}{extra}")
EOF
}
for lib in numpy array_api_compat array_api_strict pytest cupy torch ailib matplotlib; do probe "$lib"; done

HAVE_CUPY=0; HAVE_TORCH_CUDA=0
"$PY" -c "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0" 2>/dev/null && HAVE_CUPY=1
"$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && HAVE_TORCH_CUDA=1
if [[ $HAVE_CUPY -eq 0 && $INSTALL -eq 1 ]]; then
    say "CuPy missing: trying pip install cupy-cuda12x"
    run 180 "$PY" -m pip install -q cupy-cuda12x || echo "MISSING: cupy could not be installed (offline?)"
    "$PY" -c "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0" 2>/dev/null && HAVE_CUPY=1
fi
[[ $HAVE_CUPY -eq 1 ]] || echo "MISSING: CuPy with a CUDA device — the cupy tests skip and ailib[cupy] is left out of the benchmark (pip install cupy-cuda12x, or --install)"
[[ $HAVE_TORCH_CUDA -eq 1 ]] || echo "MISSING: PyTorch with CUDA — the PyTorch eager CUDA peer is left out"
"$PY" -c "import ailib" 2>/dev/null || { echo "MISSING: ailib is not importable from $ROOT"; exit 1; }

STATUS=0
if [[ $TESTS -eq 1 ]]; then
    say "tests on every backend (cupy included when present), limit ${TEST_TIMEOUT}s"
    if ! "$PY" -c "import pytest" 2>/dev/null; then
        echo "MISSING: pytest — tests skipped"; STATUS=1
    elif ! run "$TEST_TIMEOUT" "$PY" -m pytest -q -x -p no:cacheprovider tests; then
        echo "TESTS FAILED or timed out (exit above)"; STATUS=1
    fi
fi

if [[ $BENCH -eq 1 ]]; then
    say "MLP benchmark: ailib[cupy] vs PyTorch eager CUDA, limit ${BENCH_TIMEOUT}s"
    BACKENDS="numpy"; TORCH_DEV="cpu"
    [[ $HAVE_CUPY -eq 1 ]] && BACKENDS="cupy,numpy"
    [[ $HAVE_TORCH_CUDA -eq 1 ]] && TORCH_DEV="cuda"
    ARGS=(--backends "$BACKENDS" --torch "$TORCH_DEV" --batch-size 128,1024 --samples 60000
          --out "$OUT")
    if [[ $QUICK -eq 1 ]]; then ARGS+=(--repeats 3 --steps 50 --no-sweep); else ARGS+=(--repeats 5); fi
    if ! run "$BENCH_TIMEOUT" "$PY" -m benchmarks.mlp "${ARGS[@]}"; then
        echo "BENCHMARK FAILED or timed out"; STATUS=1
    fi
    if [[ $DRY -eq 0 && -f "$OUT.md" ]]; then
        say "summary ($OUT.md)"
        "$PY" - "$OUT.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"GPU: {r['machine'].get('gpu')}; CPU: {r['machine']['cpu']}")
for batch, block in r["training"].items():
    rows = block.get("epoch") or block.get("short")
    print(f"\nbatch {batch}:")
    for name, row in rows.items():
        vs = row.get("vs_torch")
        print(f"  {row['label']:28s} {row['samples_per_s']:>12,.0f} samples/s"
              f"  epoch {60000 / row['samples_per_s']:6.2f} s"
              + (f"  x torch eager {vs:.2f}" if vs else ""))
print("\ntargets:")
for t in r["targets"]:
    m = "n/a" if t["measured"] is None else f"{t['measured']:.2f}x"
    print(f"  [{t['status']:5s}] {t['target']}: {m} (goal {t['goal']})")
EOF
        ls -1 "$OUT".* 2>/dev/null || true
    fi
fi
exit $STATUS
