"""cuBLAS called directly, for the matrix products of a CUDA graph capture of a CuPy step.

CuPy refuses every cuBLAS call while a stream captures: its ``cublas.setStream`` raises
NotImplementedError then (cupy/cupy#6290), so CuPy's own ``a @ b`` cannot be part of a CUDA
graph, and every Dense layer has products. cuBLAS itself can be captured (the cuBLAS
documentation, "CUDA Graphs Support"), on two conditions that this module keeps: the handle
has a workspace of its own (``cublasSetWorkspace``), so that nothing is allocated during the
capture, and alpha and beta are in host memory, so that their values are written into the
graph. That is how PyTorch captures its products.

`Gemm` owns one cuBLAS handle (and its 32 MiB workspace) per device, made outside any capture,
and computes C = A·B for 2-D float32 and float64 CuPy arrays with ``cublasSgemm_v2`` or
``cublasDgemm_v2`` on the current stream. `capturing` makes it the product of
`ailib.backends.matmul` for the CuPy arrays of the thread while a CUDA graph step
(`ailib.backends._cupy.GraphStep`) captures; everywhere else products are CuPy's own.

Row-major arrays in a column-major library. cuBLAS reads an m×n matrix in column-major order:
the memory of a C-contiguous (row-major) R×S array is, to cuBLAS, its S×R transpose. So
C = A·B (M×N, row-major) is computed as Cᵀ = Bᵀ·Aᵀ (N×M, column-major, ldc = N), where each
operand's memory already is its transpose (operation N) if it is C-contiguous, and is the
operand itself (operation T) if it is F-contiguous, as ``w.mT`` of a C-contiguous ``w`` is:

    gemm(op(B), op(A), m=N, n=M, k=K, 1, B, ld(B), A, ld(A), 0, C, N)
    op, ld of an R×S operand: (N, S) if C-contiguous, else (T, R) if F-contiguous,
    else a C-contiguous copy is made first.

Math: float32 products are computed in float32 (cuBLAS's default math, as CuPy's products),
in TF32 only where CuPy's are too (``CUPY_TF32=1``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from typing import Any, Iterator

#: cublasOperation_t
OP_N, OP_T = 0, 1
#: cublasMath_t: CUBLAS_TF32_TENSOR_OP_MATH
TF32_MATH = 3
#: the handle's workspace: what NVIDIA recommends for Hopper (4 MiB would do elsewhere)
WORKSPACE_BYTES = 32 << 20
#: sonames tried when no cuBLAS is mapped into the process yet (CuPy 14: CUDA 13 or 12)
SONAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so.11")


class CublasError(RuntimeError):
    """A cuBLAS call that returned a status other than CUBLAS_STATUS_SUCCESS."""


#: cublasStatus_t names, for messages
STATUS = {
    1: "CUBLAS_STATUS_NOT_INITIALIZED",
    3: "CUBLAS_STATUS_ALLOC_FAILED",
    7: "CUBLAS_STATUS_INVALID_VALUE",
    8: "CUBLAS_STATUS_ARCH_MISMATCH",
    11: "CUBLAS_STATUS_MAPPING_ERROR",
    13: "CUBLAS_STATUS_EXECUTION_FAILED",
    14: "CUBLAS_STATUS_INTERNAL_ERROR",
    15: "CUBLAS_STATUS_NOT_SUPPORTED",
}


class Cublas:
    """The few functions of a cuBLAS shared library that `Gemm` calls, through ctypes."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        self.path = path
        vp, i = ctypes.c_void_p, ctypes.c_int
        self._create = _function(lib, "cublasCreate_v2", [ctypes.POINTER(vp)])
        self._set_stream = _function(lib, "cublasSetStream_v2", [vp, vp])
        self._set_workspace = _function(lib, "cublasSetWorkspace_v2", [vp, vp, ctypes.c_size_t])
        self._set_math_mode = _function(lib, "cublasSetMathMode", [vp, i])
        self._gemm = {}
        for char, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
            pointer = ctypes.POINTER(real)
            self._gemm[char] = _function(
                lib,
                f"cublas{char.upper()}gemm_v2",
                [vp, i, i, i, i, i, pointer, vp, i, vp, i, pointer, vp, i],
            )
        self._one = {"s": ctypes.c_float(1.0), "d": ctypes.c_double(1.0)}
        self._zero = {"s": ctypes.c_float(0.0), "d": ctypes.c_double(0.0)}

    def create(self) -> int:
        handle = ctypes.c_void_p()
        _check("cublasCreate_v2", self._create(ctypes.byref(handle)))
        return int(handle.value or 0)

    def set_stream(self, handle: int, stream: int) -> None:
        _check("cublasSetStream_v2", self._set_stream(handle, stream))

    def set_workspace(self, handle: int, pointer: int, nbytes: int) -> None:
        _check("cublasSetWorkspace_v2", self._set_workspace(handle, pointer, nbytes))

    def set_tf32(self, handle: int) -> None:
        _check("cublasSetMathMode", self._set_math_mode(handle, TF32_MATH))

    def gemm(
        self,
        char: str,
        handle: int,
        op_a: int,
        op_b: int,
        m: int,
        n: int,
        k: int,
        a: int,
        lda: int,
        b: int,
        ldb: int,
        c: int,
        ldc: int,
    ) -> None:
        """C ← 1·op(A)·op(B) + 0·C, column-major, ``char`` "s" (float32) or "d" (float64)."""
        one, zero = ctypes.byref(self._one[char]), ctypes.byref(self._zero[char])
        status = self._gemm[char](handle, op_a, op_b, m, n, k, one, a, lda, b, ldb, zero, c, ldc)
        _check(f"cublas{char.upper()}gemm_v2", status)


def _function(lib: Any, name: str, argtypes: list[Any]) -> Any:
    fn = getattr(lib, name)  # AttributeError where the library lacks it
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


def _check(name: str, status: int) -> None:
    if status != 0:
        raise CublasError(f"{name} returned {STATUS.get(status, status)}")


def library_candidates() -> list[str]:
    """Paths or names of cuBLAS libraries to load, the one CuPy has mapped into this process
    first (Linux: /proc/self/maps; CuPy maps it with its first product), then the sonames."""
    found: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if os.path.basename(path).startswith("libcublas.so") and path not in found:
                    found.append(path)
    except OSError:
        pass
    found += [name for name in SONAMES if name not in found]
    system = ctypes.util.find_library("cublas")
    if system and system not in found:
        found.append(system)
    return found


def load_library() -> Cublas:
    """The first of `library_candidates` that loads and has every function `Cublas` calls.

    Raises:
        OSError: none does (the message lists what was tried)."""
    tried = []
    for candidate in library_candidates():
        try:
            return Cublas(candidate)
        except (OSError, AttributeError) as exc:
            tried.append(f"{candidate}: {exc}")
    raise OSError("no usable cuBLAS library: " + "; ".join(tried))


class Gemm:
    """C = A·B for 2-D float32/float64 CuPy arrays on ``device`` through cuBLAS directly (see
    the module's docstring): a handle of its own with its own workspace, and the current
    stream set on the handle at every call, so that a capture records the product."""

    def __init__(self, cupy: Any, device: Any, library: Any) -> None:
        self.cupy, self.device, self.library = cupy, device, library
        with device:
            self.handle = library.create()
            self.workspace = cupy.empty((WORKSPACE_BYTES,), dtype=cupy.uint8)
            library.set_workspace(self.handle, self.workspace.data.ptr, WORKSPACE_BYTES)
            if os.environ.get("CUPY_TF32", "0") == "1":
                library.set_tf32(self.handle)

    def __call__(self, a: Any, b: Any) -> Any:
        cp = self.cupy
        if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or a.dtype.char not in "fd":
            return a @ b  # stacked, mixed or other dtypes: CuPy's (not capturable)
        (m, k), (k_b, n) = a.shape, b.shape
        if k != k_b:
            raise ValueError(
                f"matmul: the inner sizes of A {tuple(a.shape)} and B {tuple(b.shape)} differ"
            )
        out = cp.empty((m, n), dtype=a.dtype)
        if m == 0 or n == 0:
            return out
        if k == 0:  # a sum of nothing
            out.fill(0)
            return out
        op_b, ld_b, b = operand(cp, b)
        op_a, ld_a, a = operand(cp, a)
        self.library.set_stream(self.handle, cp.cuda.get_current_stream().ptr)
        char = "s" if a.dtype.char == "f" else "d"
        self.library.gemm(
            char, self.handle, op_b, op_a, n, m, k, b.data.ptr, ld_b, a.data.ptr, ld_a,
            out.data.ptr, n,
        )  # fmt: skip
        return out


def operand(cupy: Any, x: Any) -> tuple[int, int, Any]:
    """(cuBLAS operation, leading dimension, array) of the R×S operand ``x`` of a row-major
    product: (N, S) for a C-contiguous ``x``, (T, R) for an F-contiguous one, and (N, S) of a
    C-contiguous copy for any other layout."""
    rows, cols = x.shape
    if x.flags.c_contiguous:
        return OP_N, max(1, cols), x
    if x.flags.f_contiguous:
        return OP_T, max(1, rows), x
    return OP_N, max(1, cols), cupy.ascontiguousarray(x)


#: `gemm_for`'s answer per (id of the cupy module, device id): (cupy, Gemm or None, why not)
_GEMMS: dict[tuple[int, int], tuple[Any, Gemm | None, str | None]] = {}


#: the environment variable that turns cuBLAS called directly off ("0")
SWITCH = "AILIB_CUBLAS_DIRECT"


def gemm_for(cupy: Any, device: Any, library: Any = None) -> tuple[Gemm | None, str | None]:
    """(the `Gemm` of ``device``, None), made once per process and device, or (None, why not):
    turned off (``AILIB_CUBLAS_DIRECT=0``), no cuBLAS library could be loaded, or its handle
    could not be made. ``library``: a loaded `Cublas` (or a stand-in); by default
    `load_library`'s."""
    if os.environ.get(SWITCH, "1") == "0":
        return None, f"{SWITCH}=0 is set"
    key = (id(cupy), int(device.id))
    known = _GEMMS.get(key)
    if known is None or known[0] is not cupy:
        try:
            gemm = Gemm(cupy, device, library if library is not None else load_library())
            known = (cupy, gemm, None)
        except Exception as exc:  # OSError, AttributeError, CublasError, CUDA errors
            known = (cupy, None, f"{type(exc).__name__}: {exc}")
        _GEMMS[key] = known
    return known[1], known[2]


_active = threading.local()


def active() -> Gemm | None:
    """The `Gemm` that this thread's CuPy products go through now (inside `capturing`), or
    None: CuPy's own products."""
    return getattr(_active, "gemm", None)


@contextlib.contextmanager
def capturing(gemm: Gemm | None) -> Iterator[None]:
    """Within: this thread's CuPy products (`ailib.backends.matmul`) go through ``gemm``
    (nothing changes where it is None)."""
    before = active()
    _active.gemm = gemm if gemm is not None else before
    try:
        yield
    finally:
        _active.gemm = before
