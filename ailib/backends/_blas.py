"""W ← W − lr·D in one pass over memory: BLAS's axpy for NumPy arrays.

An optimizer's last step, ``p -= lr * d``, is two passes in NumPy: ``lr * d`` into a temporary
the size of the parameter, then the subtraction. BLAS has the one-pass form, ``y ← a·x + y``
(axpy), and NumPy already links a BLAS for its products. `subtract_scaled` calls the axpy of
that BLAS (found through ctypes) for C-contiguous float32/float64 arrays of at least
`MIN_SIZE` elements, else computes ``p -= lr * d``. (A call through ctypes costs about 3 µs
more than NumPy's two calls; one pass saves about 0.12 ns an element, so below some 30,000
elements — biases, small layers — the two passes are faster.)

Rounding: OpenBLAS's vector loop computes p − lr·d with a fused multiply-add (rounded once,
as PyTorch's CPU update ``p.add_(d, alpha=-lr)`` is) and its loop over the last few elements
rounds lr·d first, as NumPy does. Either way an element differs from NumPy's two-pass result
in the last bit at most. The axpy found is checked once, on first use, against those two
results (element by element, one or the other) and left unused if it gives anything else.
`available()` says whether it was found here.
"""

from __future__ import annotations

import ctypes
import glob
import os
from typing import Any, Callable

import numpy as np

__all__ = ["MIN_SIZE", "UpdateSite", "available", "axpy_library", "subtract_scaled"]

#: (symbol pattern, integer type of n and the strides): ILP64 builds (NumPy's wheels since
#: 2.0: scipy-openblas64; 1.2x: openblas64_) first, then the LP64 names of other builds
_SYMBOLS = (
    ("scipy_cblas_{}axpy64_", ctypes.c_int64),
    ("cblas_{}axpy64_", ctypes.c_int64),
    ("scipy_cblas_{}axpy", ctypes.c_int),
    ("cblas_{}axpy", ctypes.c_int),
)

_found: dict[str, Any] | None = None  # {"path": str, "s": fn, "d": fn}; {} when none works


def _candidates() -> list[str]:
    """Shared libraries that may be NumPy's BLAS: those bundled with its wheel, then (Linux)
    any BLAS already mapped into this process."""
    here = os.path.dirname(np.__file__)
    paths: list[str] = []
    for pattern in ("../numpy.libs/*blas*", ".dylibs/*blas*"):
        for path in sorted(glob.glob(os.path.join(here, pattern))):
            if os.path.realpath(path) not in paths:
                paths.append(os.path.realpath(path))
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                real = os.path.realpath(path)
                if "blas" in os.path.basename(path).lower() and real not in paths:
                    paths.append(real)
    except OSError:
        pass
    return paths


def _load(path: str) -> dict[str, Any] | None:
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for pattern, int_type in _SYMBOLS:
        fns = {}
        for char, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
            fn = getattr(lib, pattern.format(char), None)
            if fn is None:
                break
            fn.restype = None
            fn.argtypes = [int_type, real, ctypes.c_void_p, int_type, ctypes.c_void_p, int_type]
            fns[char] = fn
        if len(fns) == 2 and _agrees(fns):
            return {"path": path, **fns}
    return None


def _agrees(fns: dict[str, Callable[..., None]]) -> bool:
    """Whether the axpy found computes p − a·d: every element the exactly rounded result or
    NumPy's (a·d rounded first), on a self-test made once."""
    rng = np.random.default_rng(0)
    for char, dtype in (("s", np.float32), ("d", np.float64)):
        p = rng.standard_normal(101).astype(dtype)
        d = rng.standard_normal(101).astype(dtype)
        lr = dtype(0.37)
        if dtype == np.float32:
            once = (p.astype(np.float64) - np.float64(lr) * d.astype(np.float64)).astype(dtype)
        else:
            once = (p.astype(np.longdouble) - np.longdouble(lr) * d).astype(dtype)
        twice = p - lr * d
        got = p.copy()
        fns[char](got.size, -float(lr), d.ctypes.data, 1, got.ctypes.data, 1)
        if not np.all((got == once) | (got == twice)):
            return False
    return True


def _library() -> dict[str, Any]:
    global _found
    if _found is None:
        _found = {}
        for path in _candidates():
            loaded = _load(path)
            if loaded is not None:
                _found = loaded
                break
    return _found


def available() -> bool:
    """Whether NumPy's BLAS axpy was found here (else `subtract_scaled` computes in two
    passes)."""
    return bool(_library())


def axpy_library() -> str | None:
    """The path of the library whose axpy `subtract_scaled` calls, or None."""
    return _library().get("path")


_CHARS = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}

#: the fewest elements for which `subtract_scaled` calls BLAS (below: NumPy's two passes)
MIN_SIZE = 32768


def _address(a: np.ndarray) -> int:
    """The address of the first byte of a C-contiguous array (writable ones through the
    buffer protocol, 1 µs; read-only ones through ``__array_interface__``, 2-3 µs)."""
    if a.flags.writeable:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    return int(a.__array_interface__["data"][0])


def subtract_scaled(p: np.ndarray, lr: Any, d: np.ndarray) -> np.ndarray:
    """p − lr·d written into ``p`` (see the module docstring); returns ``p``. ``lr``: a Python
    number or a 0-d array.

    BLAS runs whenever ``p`` is C-contiguous, writable (parameters are) and has at least
    `MIN_SIZE` elements: a ``d`` in any other layout, or sharing ``p``'s memory, is first
    copied to C order, so the rounding of an element depends on ``p`` alone, never on how
    ``d`` was laid out."""
    fn = _axpy_for(p, d)
    if fn is not None:
        if not d.flags.c_contiguous or np.may_share_memory(p, d):
            d = np.array(d, order="C")
        fn(p.size, -float(lr), _address(d), 1, _address(p), 1)
        return p
    p -= lr * d
    return p


def _axpy_for(p: np.ndarray, d: np.ndarray) -> Any:
    """The BLAS axpy `subtract_scaled` runs for ``p`` and ``d``, or None (NumPy's two
    passes)."""
    char = _CHARS.get(p.dtype)
    if char is not None and p.size >= MIN_SIZE and d.dtype == p.dtype and d.shape == p.shape:
        fn = _library().get(char)
        if fn is not None and p.flags.c_contiguous and p.flags.writeable:
            return fn
    return None


class UpdateSite:
    """`subtract_scaled` at one place of a replayed NumPy step (`ailib.backends.ReplayStep`),
    which passes the same two arrays at every step: a parameter, updated in place, and a
    gradient buffer of the replay's. What `subtract_scaled` decides from the arrays (the path,
    the BLAS function, the arrays' addresses) is decided once per pair of arrays instead of
    at every call, where it was 5-6 µs of a 12 µs call at 32,768 elements; the computation is
    the same, to the bit. The site keeps the last pair (so that their identity, and with it
    their memory, stays what it decided on)."""

    __slots__ = ("p", "d", "bound")

    def __init__(self) -> None:
        self.p: Any = None
        self.d: Any = None
        self.bound: Callable[[Any], Any] | None = None

    def __call__(self, p: np.ndarray, lr: Any, d: np.ndarray) -> np.ndarray:
        if p is not self.p or d is not self.d:
            self.p, self.d, self.bound = p, d, _bind(p, d)
        bound = self.bound
        if bound is None:
            return subtract_scaled(p, lr, d)
        bound(lr)
        return p


def _bind(p: np.ndarray, d: np.ndarray) -> Callable[[Any], Any] | None:
    """``lr -> (p ← p − lr·d)`` as `subtract_scaled` computes it for these two arrays, with
    everything but lr decided now; None where it copies ``d`` first (then it runs as is)."""
    if not (isinstance(p, np.ndarray) and isinstance(d, np.ndarray)):
        return None
    fn = _axpy_for(p, d)
    if fn is None:
        return lambda lr: p.__isub__(lr * d)  # p -= lr * d
    if not d.flags.c_contiguous or np.may_share_memory(p, d):
        return None  # copied first, at every call: left to subtract_scaled
    n, x, y = p.size, _address(d), _address(p)
    return lambda lr: fn(n, -float(lr), x, 1, y, 1)
