"""Checks of data that is still on the host (NumPy arrays, Python lists), before any of it is
moved to a device, and value ranges of device arrays read back in one transfer."""

from __future__ import annotations

import math
import sys
from contextlib import nullcontext
from typing import Any

import array_api_compat
import numpy as np

from ._base import Backend, to_numpy

_KINDS = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers"}


def host_numbers(a: Any, who: str, what: str) -> np.ndarray | None:
    """``a`` as a NumPy array when it is on the host (a NumPy array, list or tuple), after
    checking that it holds real numbers; None for arrays of other libraries.

    Raises:
        TypeError: strings, bytes, Python objects, complex numbers, dates... (naming ``what``).
        ValueError: a ragged nesting of lists.
    """
    if type(a) is np.ndarray:  # NOTE: not subclasses, which may stand for device arrays
        array = a
    elif isinstance(a, (list, tuple)):
        try:
            array = np.asarray(a)
        except ValueError as exc:
            raise ValueError(
                f"{who}: {what} is not a rectangular array of numbers ({exc})"
            ) from None
    else:
        return None
    if array.dtype.kind not in "biuf":
        hint = (
            "; map class names to integers first, e.g. names, y = np.unique(y, return_inverse=True)"
            if array.dtype.kind in "USO"
            else ""
        )
        kind = _KINDS.get(array.dtype.kind, f"dtype {array.dtype}")
        raise TypeError(f"{who}: {what} holds {kind} (dtype {array.dtype}), not numbers{hint}")
    return array


def quickly_finite(a: Any) -> bool:
    """True when one cheap pass proves the floating array ``a`` free of NaN and inf: for a
    contiguous NumPy array, Σ a² by BLAS is finite (NaN and inf propagate into it). False
    means not proven (a NaN or inf, a sum that overflowed, or an array of another kind):
    look at `extremes`."""
    if type(a) is np.ndarray and a.dtype in (np.float32, np.float64) and a.flags.c_contiguous:
        flat = a.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            return math.isfinite(float(np.dot(flat, flat)))
    return False


def all_finite(backend: Backend, a: Any) -> bool:
    """Whether the non-empty floating array ``a`` (NumPy, or of ``backend``) holds no NaN and
    no inf: `quickly_finite`, else its `extremes` (device arrays: one read back)."""
    if quickly_finite(a):
        return True
    low, high = extremes(backend, a)
    return math.isfinite(low) and math.isfinite(high)


def extremes(backend: Backend | None, a: Any) -> tuple[Any, Any]:
    """(min, max) of the non-empty array ``a`` (NumPy on the host, or of ``backend``; None:
    whatever library and device ``a`` has) as Python numbers; NaN when ``a`` holds a NaN.
    Device arrays cost two reductions and one transfer."""
    if type(a) is np.ndarray:
        return a.min().item(), a.max().item()
    library = type(a).__module__.split(".")[0]
    if library == "torch" and str(a.dtype) in ("torch.uint16", "torch.uint32", "torch.uint64"):
        # NOTE: PyTorch has no min or max for these; int64 holds them (uint64 past 2**63 wraps
        # negative, which a range check still refuses)
        a = a.to(sys.modules["torch"].int64)
    if backend is None:
        xp = array_api_compat.array_namespace(a)
        with a.device if library == "cupy" else nullcontext():  # CuPy: reduce on a's GPU
            both = xp.stack([xp.min(a), xp.max(a)])
        return tuple(to_numpy(both).tolist())
    xp = backend.xp
    with backend.context():  # CuPy: reduce on the backend's GPU
        both = xp.stack([xp.min(a), xp.max(a)])
    return tuple(backend.to_host(both).tolist())
