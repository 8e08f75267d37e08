"""What a benchmark ran on: CPU, cores, load, GPU, library versions, BLAS kernel, thread settings.

Figures without the machine they came from mean little; every result file embeds `describe()`.
"""

from __future__ import annotations

import ctypes
import datetime
import importlib
import os
import platform
from typing import Any

LIBRARIES = ("numpy", "array_api_compat", "array_api_strict", "torch", "jax", "jaxlib", "cupy")
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    """Installed versions of the array libraries (None where not installed). Importing them
    here is fine: the benchmark uses them anyway."""
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception:  # ImportError, or a broken CUDA install raising something else
            found[name] = None
    return found


def openblas() -> dict[str, Any] | None:
    """The OpenBLAS that NumPy loaded, asked directly (what threadpoolctl does): its build
    config, the kernel it chose ("corename": OPENBLAS_CORETYPE can force a slower one) and its
    thread count. None when NumPy does not use OpenBLAS."""
    import numpy  # noqa: F401  (loads the library)

    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower()})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (
            ("scipy_openblas_", "64_"),
            ("openblas_", ""),
            ("scipy_openblas_", ""),
        ):
            try:
                config = getattr(lib, f"{prefix}get_config{suffix}")
                corename = getattr(lib, f"{prefix}get_corename{suffix}")
                threads = getattr(lib, f"{prefix}get_num_threads{suffix}")
            except AttributeError:
                continue
            config.restype = corename.restype = ctypes.c_char_p
            return {
                "library": os.path.basename(path),
                "config": config().decode(),
                "corename": corename().decode(),
                "threads": int(threads()),
            }
    return None


def gpu() -> str | None:
    """The first CUDA device's name, via torch or cupy (None without one)."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:
        pass
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    except Exception:
        return None


def describe() -> dict[str, Any]:
    """Everything above as one JSON-serialisable dict (taken at the start of a run)."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
        "openblas": openblas(),
        "environment": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "gpu": gpu(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except Exception:
        info["torch_threads"] = None
    return info


def warnings(info: dict[str, Any]) -> list[str]:
    """Conditions that make the figures less trustworthy, in words."""
    notes = []
    load = info.get("load_average")
    cores = info.get("cores") or 1
    if load and load[0] > 0.5 * cores:
        notes.append(
            f"the machine was busy (1-min load average {load[0]:.1f} on {cores} cores "
            f"at the start): absolute figures are low and noisy; the interleaved ratios "
            f"are the figures to read"
        )
    env = info.get("environment", {})
    if "OPENBLAS_CORETYPE" in env or "OPENBLAS_L2_SIZE" in env:
        blas = info.get("openblas") or {}
        notes.append(
            f"OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set ({env}); OpenBLAS uses the "
            f"{blas.get('corename', '?')} kernel. Run with `env -u OPENBLAS_CORETYPE -u "
            f"OPENBLAS_L2_SIZE` to let it pick the CPU's own"
        )
    return notes
