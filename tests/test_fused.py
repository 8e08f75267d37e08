"""The fused operations (ailib.backends._fused): every library's form computes the same math
as the float64 reference, counts as the kernels it launches, and CuPy's kernel sources compute
what they should (compiled here by the host's C++ compiler, with CUDA's thread indices
emulated, since no GPU runs these tests; benchmarks/gpu.sh runs the real ones)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ailib
from ailib.backends import LAUNCHES, _fused
from ailib.backends._counting import unwrap

from .helpers import assert_close, assert_grad_close, host, numeric_grad, tol


def _reference(z: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, int]:
    """E, dE/dZ and the count, in float64 from the definitions (log-sum-exp; first argmax)."""
    z = z.astype(np.float64)
    n = z.shape[0]
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    value = float(np.mean(lse - z[np.arange(n), labels]))
    p = np.exp(z - lse[:, None])
    onehot = np.zeros_like(p)
    onehot[np.arange(n), labels] = 1.0
    return value, (p - onehot) / n, int(np.sum(np.argmax(z, axis=1) == labels))


def _logits(rng: np.random.Generator, n: int, c: int, dtype: str) -> np.ndarray:
    z = rng.standard_normal((n, c)) * 3.0
    z[0, :] = 2.0  # a row of ties: the first class is the top one
    z[1, 2] = z[1, 4] = z[1].max() + 1.0  # a tie for the top between classes 2 and 4
    return z.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_is_the_reference_on_every_backend(
    backend: ailib.backends.Backend, rng: np.random.Generator, dtype: str
) -> None:
    z = _logits(rng, 9, 5, dtype)
    labels = rng.integers(0, 5, 9)
    labels[:2] = [0, 4]  # the tied rows: counted for the first top class only
    want_e, want_g, want_hits = _reference(z, labels)
    zd = backend.asarray(z)
    value, grad, hits = ailib.backends.softmax_cross_entropy(
        zd, backend.asarray(labels, dtype=backend.index_dtype)
    )
    assert host(grad).dtype == np.dtype(dtype) and host(grad).shape == z.shape
    assert_close(value, want_e, dtype)
    assert_close(grad, want_g, dtype)
    assert int(host(hits)) == want_hits == int(np.sum(np.argmax(z, 1) == labels))


def test_softmax_cross_entropy_gradient_is_the_finite_difference_in_float64(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    z = rng.standard_normal((4, 3))
    labels = backend.asarray(np.array([2, 0, 1, 2]), dtype=backend.index_dtype)

    def energy(zh: np.ndarray) -> float:
        return float(host(ailib.backends.softmax_cross_entropy(backend.asarray(zh), labels)[0]))

    _, grad, _ = ailib.backends.softmax_cross_entropy(backend.asarray(z), labels)
    assert_grad_close(grad, numeric_grad(energy, z), rtol=1e-6)


def test_softmax_cross_entropy_takes_int32_labels_and_large_logits(
    backend: ailib.backends.Backend,
) -> None:
    z = np.array([[1000.0, -1000.0, 0.0], [-5e3, 5e3, 5e3]], dtype=np.float32)
    labels = np.array([1, 2], dtype=np.int32)
    value, grad, hits = ailib.backends.softmax_cross_entropy(
        backend.asarray(z), backend.asarray(labels, dtype=backend.xp.int32)
    )
    want_e, want_g, want_hits = _reference(z, labels)
    assert np.isfinite(host(value)) and np.all(np.isfinite(host(grad)))
    assert_close(value, want_e, "float32")
    assert_close(grad, want_g, "float32")
    assert int(host(hits)) == want_hits == 0


@pytest.mark.parametrize("lr_kind", ["number", "array"])
def test_subtract_scaled_is_p_minus_lr_d_on_every_backend(
    backend: ailib.backends.Backend, rng: np.random.Generator, lr_kind: str
) -> None:
    p, d = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    want = p - np.float32(0.125) * d  # (NumPy's backend updates p itself)
    lr: Any = 0.125 if lr_kind == "number" else backend.asarray(np.float32(0.125))
    got = ailib.backends.subtract_scaled(backend.asarray(p), lr, backend.asarray(d))
    np.testing.assert_allclose(host(got), want, **tol("float32"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
def test_affine_is_x_wt_plus_b_on_every_backend(
    backend: ailib.backends.Backend, rng: np.random.Generator, dtype: str, bias: bool
) -> None:
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((7, 5), (3, 5), (3,)))
    want = x.astype(np.float64) @ w.astype(np.float64).T + (b if bias else 0.0)
    got = ailib.backends.affine(
        backend.asarray(x), backend.asarray(w), backend.asarray(b) if bias else None
    )
    assert host(got).dtype == np.dtype(dtype) and host(got).shape == (7, 3)
    assert_close(got, want, dtype)


# -- counting -------------------------------------------------------------------------------
def _torch_kernels(fn: Any, *args: Any) -> int:
    """aten operations that compute (not views, not metadata) while ``fn(*args)`` runs."""
    torch = pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[str] = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
            if not func.is_view and func.overloadpacket not in (torch.ops.aten.detach,):
                seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Count():
        fn(*args)
    return len(seen)


def test_pytorchs_forms_launch_what_launches_says() -> None:
    be = _backend_or_skip("torch")
    rng = np.random.default_rng(0)
    z = be.asarray(rng.standard_normal((16, 10)).astype(np.float32))
    labels = be.asarray(rng.integers(0, 10, 16), dtype=be.index_dtype)
    y = be.asarray(np.maximum(rng.standard_normal((16, 10)), 0).astype(np.float32))
    p, d = z * 1.0, z * 2.0
    lr = be.asarray(np.float32(0.1))
    ailib.backends.softmax_cross_entropy(z, labels)  # its kept row 0…C−1 is made here
    assert (
        _torch_kernels(ailib.backends.softmax_cross_entropy, z, labels)
        == (LAUNCHES["softmax_cross_entropy"]["torch"])
    )
    assert _torch_kernels(ailib.backends.relu_backward, y, z) == LAUNCHES["relu_backward"]["torch"]
    w, b = be.asarray(np.ones((3, 10), np.float32)), be.asarray(np.ones(3, np.float32))
    assert _torch_kernels(ailib.backends.affine, z, w, b) == LAUNCHES["affine"]["torch"]
    for rate in (0.1, lr):
        assert (
            _torch_kernels(ailib.backends.subtract_scaled, p, rate, d)
            == (LAUNCHES["subtract_scaled"]["torch"])
        )


def _backend_or_skip(name: str) -> ailib.backends.Backend:
    reason = ailib.backends.why_unavailable(name)
    if reason is not None:
        pytest.skip(f"backend {name} unavailable: {reason}")
    return ailib.backends.get(name)


@pytest.mark.parametrize("kernels", ["numpy", "torch", "cupy"])
def test_a_fused_operation_counts_as_the_kernels_of_the_library_named(kernels: str) -> None:
    counter = ailib.backends.counting(ailib.backends.get("numpy"), kernels=kernels)
    be = counter.backend
    rng = np.random.default_rng(0)
    z = be.asarray(rng.standard_normal((6, 4)).astype(np.float32))
    labels = be.asarray(rng.integers(0, 4, 6), dtype=be.index_dtype)
    ailib.backends.softmax_cross_entropy(z, labels)  # the composition's kept 0…C−1 is made here
    counter.reset()
    value, grad, hits = ailib.backends.softmax_cross_entropy(z, labels)
    composed = 16  # the array API's composition, counted operation by operation
    assert counter.total == LAUNCHES["softmax_cross_entropy"].get(kernels, composed)
    want = _reference(host(unwrap(z)), host(unwrap(labels)))
    assert_close(counter.backend.to_host(value), want[0])  # the values are NumPy's either way
    assert_close(counter.backend.to_host(grad), want[1])
    counter.reset()
    ailib.backends.relu_backward(grad, z)
    assert counter.total == LAUNCHES["relu_backward"].get(kernels, 2)
    assert (
        all(name == "relu_backward" for _, name in counter.names)
        or kernels not in LAUNCHES["relu_backward"]
    )


# -- CuPy's kernel sources, on the host ---------------------------------------------------------
_HARNESS = r"""
#include <math.h>
struct Dim3 { unsigned x; };
static Dim3 blockDim, blockIdx, threadIdx;
#define __global__
%(kernel)s
template <typename T> static void relu_bwd(const T* ys, const T* gs, T* outs, long n) {
    for (long i = 0; i < n; ++i) { const T y = ys[i]; const T g = gs[i]; T& out = outs[i];
        %(relu)s; }
}
template <typename T> static void axpy(T lr, const T* ds, T* ps, long n) {
    for (long i = 0; i < n; ++i) { const T d = ds[i]; T& p = ps[i]; %(axpy)s; }
}
extern "C" void run_softmax_ce(const %(t)s* z, const long long* labels, %(t)s* grad,
                               %(t)s* rows, int* hit, int n, int c, %(t)s inv_n, unsigned block) {
    blockDim.x = block;
    for (unsigned b = 0; b < (n + block - 1) / block; ++b)
        for (unsigned t = 0; t < block; ++t) {
            blockIdx.x = b; threadIdx.x = t;
            %(name)s(z, labels, grad, rows, hit, n, c, inv_n);
        }
}
extern "C" void run_relu_bwd(const %(t)s* y, const %(t)s* g, %(t)s* out, long n) {
    relu_bwd<%(t)s>(y, g, out, n);
}
extern "C" void run_axpy(%(t)s lr, const %(t)s* d, %(t)s* p, long n) { axpy<%(t)s>(lr, d, p, n); }
"""


@pytest.fixture(scope="module", params=["float32", "float64"])
def host_kernels(request: pytest.FixtureRequest, tmp_path_factory: Any) -> tuple[Any, str]:
    """CuPy's kernel sources for one dtype compiled by the host C++ compiler, with CUDA's
    ``blockDim``/``blockIdx``/``threadIdx`` emulated: (the shared library, dtype)."""
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or clang++) to compile CuPy's kernel sources on the host")
    dtype = request.param
    source, name = _fused.softmax_ce_source(dtype)
    t = "float" if dtype == "float32" else "double"
    code = _HARNESS % {
        "kernel": source.replace('extern "C" __global__', "static"),
        "relu": _fused.RELU_BACKWARD_BODY.replace("(T)", f"({t})"),
        "axpy": _fused.SUBTRACT_SCALED_BODY,
        "t": t,
        "name": name,
    }
    folder = Path(tmp_path_factory.mktemp(f"kernels-{dtype}"))
    (folder / "k.cpp").write_text(code)
    built = subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", "-o", str(folder / "k.so"), str(folder / "k.cpp")],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    return ctypes.CDLL(str(folder / "k.so")), dtype


def _ptr(a: np.ndarray) -> Any:
    return a.ctypes.data_as(ctypes.c_void_p)


def test_cupys_softmax_cross_entropy_kernel_computes_the_reference(
    host_kernels: tuple[Any, str],
) -> None:
    lib, dtype = host_kernels
    scalar = ctypes.c_float if dtype == "float32" else ctypes.c_double
    rng = np.random.default_rng(3)
    for n, c, block in ((9, 5, 4), (130, 10, 128), (3, 1, 128), (1, 300, 32)):
        z = _logits(rng, n, c, dtype) if n > 1 and c > 4 else rng.standard_normal((n, c))
        z = np.ascontiguousarray(z, dtype=dtype)
        labels = rng.integers(0, c, n).astype(np.int64)
        if n > 1 and c > 4:
            labels[:2] = [0, 4]
        grad = np.full_like(z, np.nan)
        rows = np.full(n, np.nan, dtype=dtype)
        hit = np.full(n, -1, dtype=np.int32)
        lib.run_softmax_ce(
            _ptr(z), _ptr(labels), _ptr(grad), _ptr(rows), _ptr(hit),
            ctypes.c_int(n), ctypes.c_int(c), scalar(1.0 / n), ctypes.c_uint(block),
        )  # fmt: skip
        want_e, want_g, want_hits = _reference(z, labels)
        np.testing.assert_allclose(rows.mean(), want_e, **tol(dtype))
        np.testing.assert_allclose(grad, want_g, **tol(dtype))
        assert int(np.count_nonzero(hit)) == want_hits
    # a label out of range (never reaches it: the loss checks labels) gives a NaN error
    z = np.zeros((2, 3), dtype=dtype)
    labels = np.array([1, 7], dtype=np.int64)
    rows, hit, grad = np.zeros(2, dtype=dtype), np.zeros(2, dtype=np.int32), np.zeros_like(z)
    lib.run_softmax_ce(
        _ptr(z), _ptr(labels), _ptr(grad), _ptr(rows), _ptr(hit),
        ctypes.c_int(2), ctypes.c_int(3), scalar(0.5), ctypes.c_uint(128),
    )  # fmt: skip
    assert np.isfinite(rows[0]) and np.isnan(rows[1]) and hit[1] == 0


def test_cupys_softmax_cross_entropy_kernel_on_non_finite_logits_is_the_composition(
    host_kernels: tuple[Any, str],
) -> None:
    """A NaN is the top class, the first one, as argmax (and the composition) takes it; +inf,
    −inf and NaN rows give the composition's errors and gradients."""
    lib, dtype = host_kernels
    scalar = ctypes.c_float if dtype == "float32" else ctypes.c_double
    nan, inf = np.nan, np.inf
    z = np.array(
        [[0.0, nan, 5.0], [0.0, nan, 5.0], [nan, 1.0, nan], [1.0, nan, nan], [inf, 0.0, inf],
         [-inf, 0.0, 1.0], [-inf, -inf, -inf], [1.0, 2.0, 0.5]], dtype=dtype,
    )  # fmt: skip
    labels = np.array([1, 2, 0, 2, 0, 0, 1, 1], dtype=np.int64)
    n, c = z.shape
    grad, rows = np.zeros_like(z), np.zeros(n, dtype=dtype)
    hit = np.full(n, -1, dtype=np.int32)
    lib.run_softmax_ce(
        _ptr(z), _ptr(labels), _ptr(grad), _ptr(rows), _ptr(hit),
        ctypes.c_int(n), ctypes.c_int(c), scalar(1.0 / n), ctypes.c_uint(4),
    )  # fmt: skip
    with np.errstate(all="ignore"):
        value, want_grad, want_hits = _fused._softmax_cross_entropy_composed(z, labels)
    np.testing.assert_array_equal(hit, np.argmax(z, axis=1) == labels)
    assert int(np.count_nonzero(hit)) == int(want_hits)
    np.testing.assert_allclose(rows.mean(), value, **tol(dtype))
    np.testing.assert_allclose(grad, want_grad, **tol(dtype))


def test_cupys_elementwise_kernel_bodies_compute_relu_backward_and_the_update(
    host_kernels: tuple[Any, str],
) -> None:
    lib, dtype = host_kernels
    scalar = ctypes.c_float if dtype == "float32" else ctypes.c_double
    y = np.array([0.0, 1.5, np.nan, 2.0, -0.0, np.inf], dtype=dtype)
    g = np.array([-1.0, 2.0, 3.0, -4.0, 5.0, np.inf], dtype=dtype)
    out = np.full_like(y, 7.0)
    lib.run_relu_bwd(_ptr(y), _ptr(g), _ptr(out), ctypes.c_long(y.size))
    np.testing.assert_array_equal(out, np.array([0.0, 2.0, 0.0, -4.0, 0.0, np.inf], dtype=dtype))
    p = np.linspace(-1.0, 1.0, 9).astype(dtype)
    d = np.linspace(3.0, -2.0, 9).astype(dtype)
    want = p - p.dtype.type(0.25) * d
    lib.run_axpy(scalar(0.25), _ptr(d), _ptr(p), ctypes.c_long(p.size))
    np.testing.assert_allclose(p, want, **tol(dtype))


def test_cupys_forms_pass_their_check_on_a_gpu() -> None:
    """Where CuPy runs, each fused kernel compiles and agrees with the composition (else the
    composition would run, with a warning)."""
    be = _backend_or_skip("cupy")
    for dtype in ("float32", "float64"):
        x = be.asarray(np.zeros(2, dtype=dtype))
        for name in LAUNCHES:
            if "cupy" in LAUNCHES[name]:
                assert _fused._cupy_checked(name, x) is not None, (name, dtype)
