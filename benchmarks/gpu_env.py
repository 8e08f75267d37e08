"""What `benchmarks/gpu.sh` finds installed: one line per library and per GPU backend of ailib,
whether ailib's CuPy training steps can be CUDA graphs (found in a child process: cuBLAS called
directly through ctypes, which has never run before its first GPU run, must not end the run if
it crashes; then a line "SET AILIB_CUBLAS_DIRECT=0" tells gpu.sh to turn it off for the later
stages), then "nothing missing" or "MISSING: <names>". Imports nothing it does not report on.

    python -m benchmarks.gpu_env
"""

from __future__ import annotations

import importlib
import platform
import shutil
import subprocess
import sys

LIBRARIES = ["numpy", "array_api_compat", "array_api_strict", "pytest", "cupy", "torch", "jax"]
GPU_BACKENDS = ["cupy", "torch:cuda", "jax:gpu"]


def main() -> int:
    print(f"python {platform.python_version()} at {sys.executable}")
    if shutil.which("nvidia-smi"):
        query = [
            "nvidia-smi",
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
        ]
        print("gpu:", subprocess.run(query, capture_output=True, text=True).stdout.strip())
    else:
        print("gpu: nvidia-smi not found")
    missing = []
    for name in LIBRARIES:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            print(f"{name}: MISSING ({type(exc).__name__}: {exc})")
            missing.append(name)
        else:
            print(f"{name}: {getattr(module, '__version__', '?')}")
    try:
        import ailib
    except Exception as exc:
        print(f"ailib: NOT IMPORTABLE ({type(exc).__name__}: {exc})")
        missing.append("ailib")
    else:
        for name in GPU_BACKENDS:
            reason = ailib.backends.why_unavailable(name)
            print(f"ailib backend {name}: {'runs' if reason is None else 'UNAVAILABLE: ' + reason}")
            if reason is not None:
                missing.append(f"backend {name}")
        if ailib.backends.why_unavailable("cupy") is None:
            line, crashed = capture_line()
            print(line)
            if crashed:
                print("SET AILIB_CUBLAS_DIRECT=0")
    print("MISSING: " + ", ".join(missing) if missing else "nothing missing")
    return 0


#: what the child process of `capture_line` runs
CAPTURE_PROBE = """
from ailib import backends
from ailib.backends import _cupy
be = backends.get("cupy")
problem, gemm = _cupy.capture_plan(be.library, be.device)
if problem is not None:
    print("UNAVAILABLE: " + problem)
elif gemm is not None:
    print("yes, products by cuBLAS called directly (" + str(gemm.library.path) + ")")
else:
    print("yes, products by CuPy (it captures them)")
"""


def capture_line(timeout: float = 30.0) -> tuple[str, bool]:
    """("ailib CUDA graph steps on cupy: ...", whether the probe crashed or hung), from
    `ailib.backends._cupy.capture_plan` run in a child process."""
    head = "ailib CUDA graph steps on cupy:"
    try:
        done = subprocess.run(
            [sys.executable, "-c", CAPTURE_PROBE], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"{head} the probe HUNG (no answer after {timeout:.0f} s)", True
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        return f"{head} the probe CRASHED (exit {done.returncode}): {tail}", True
    return f"{head} {done.stdout.strip()}", False


if __name__ == "__main__":
    sys.exit(main())
