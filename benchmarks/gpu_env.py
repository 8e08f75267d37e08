"""What `benchmarks/gpu.sh` finds installed: one line per library and per GPU backend of ailib,
then "nothing missing" or "MISSING: <names>". Imports nothing it does not report on.

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
    print("MISSING: " + ", ".join(missing) if missing else "nothing missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
