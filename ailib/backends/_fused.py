"""Fused operations: the steps of training that a library can do in fewer kernels than the
array API's composition of them.

Each is a function of arrays that looks at the arrays' library and takes that library's
fastest form, and the array-API composition everywhere else (JAX, array-api-strict, and any
library without a form of its own), with the same math:

    affine(X, W, B)                    Y = X·Wᵀ + B (a Dense layer's forward pass)
    matmul(A, B)                       A·B (Dense's and Conv2D's products)
    clip(X, low, high)                 X clamped to [low, high]
    relu_backward(Y, dE/dY)            dE/dX = dE/dY ∘ 1[Y > 0]
    subtract_scaled(P, lr, D)          P ← P − lr·D
    softmax_cross_entropy(Z, labels)   (E, dE/dZ, correct count) for logits and integer labels

On a GPU every array operation is a kernel launch, and at small batches the launches set the
time (docs/performance.md, "The count"); on the CPU each is a Python call and a temporary.
`LAUNCHES` says how many array operations (kernels) each library's own form makes; a library
not listed runs the composition. The counting backend (`ailib.backends.counting`) counts a
fused operation as its library's launches (or as another library's, ``kernels=``, which is how
`ailib.opcount` counts CuPy's kernels on a machine without a GPU) and counts the composition
operation by operation.

The CuPy forms are CUDA kernels of their own (`_cupy_kernels`). Before a CuPy form is used for
the first time on a dtype, it is run on a small problem and compared with the composition
(`_cupy_checked`); a form that does not compile or disagrees is not used (with a warning, once),
and the composition runs instead.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from . import _blas, _cublas
from ._counting import Counted, fused_call
from ._replay import call_recorded

#: array operations (kernel launches) of each library's own form of each fused operation; a
#: library not listed runs the array-API composition (counted operation by operation)
LAUNCHES: dict[str, dict[str, int]] = {
    # PyTorch: addmm (what nn.Linear runs); elsewhere the product and the bias's addition
    "affine": {"torch": 1},
    # NumPy: the product with the boolean mask; PyTorch: sign and mul_; CuPy: one
    # elementwise kernel
    "relu_backward": {"numpy": 2, "torch": 2, "cupy": 1},
    # NumPy: BLAS's axpy from 32,768 elements (two ufuncs below: counted as the composition's
    # 2); PyTorch: addcmul_ (sub_ with a Python number); CuPy: one elementwise kernel
    "subtract_scaled": {"torch": 1, "cupy": 1},
    # PyTorch: log_softmax, nll_loss, argmax, eq, count_nonzero, exp_, mul_, eq, sub, where;
    # CuPy: one kernel over the rows, then the mean and the count
    "softmax_cross_entropy": {"torch": 10, "cupy": 3},
}


def library_of(x: Any) -> str:
    """The top-level module of ``x``'s type: "numpy", "torch", "cupy", "jax", ..."""
    return type(x).__module__.split(".")[0]


# -- a Dense layer's forward pass ------------------------------------------------------------
def affine(x: Any, w: Any, b: Any = None) -> Any:
    """Y = X·Wᵀ + B for X (N, in), W (out, in) and B (out,) or None: a new array.

    - PyTorch: one kernel, ``addmm(B, X, Wᵀ)`` (what ``nn.Linear`` runs; the bias is added
      inside the product, so Y may differ from the two-step form in the last bit);
    - elsewhere ``X @ W.mT``, then ``+= B`` (in place where arrays are mutable)."""
    if isinstance(x, Counted):
        return fused_call("affine", LAUNCHES["affine"], affine, _affine_composed, (x, w, b))
    if (
        b is not None
        and library_of(x) == "torch"
        and type(w) is type(x)
        and type(b) is type(x)
        and x.ndim == 2
        and x.dtype == w.dtype == b.dtype
    ):
        return _torch().addmm(b, x, w.mT)
    return _affine_composed(x, w, b)


def _affine_composed(x: Any, w: Any, b: Any) -> Any:
    y = matmul(x, w.mT)
    if b is not None:
        y += b
    return y


# -- matrix products -------------------------------------------------------------------------
def matmul(a: Any, b: Any) -> Any:
    """A·B: the operator ``a @ b`` (no namespace wrapper around the product), except for CuPy
    arrays while a CUDA graph step captures (`ailib.backends._cublas.capturing`): cuBLAS called
    directly there, as CuPy refuses its own cuBLAS calls during a capture."""
    gemm = _cublas.active()
    if gemm is not None and isinstance(a, gemm.cupy.ndarray):
        return gemm(a, b)
    return a @ b


# -- clamping ---------------------------------------------------------------------------------
def clip(x: Any, low: float, high: float) -> Any:
    """x clamped to [low, high] (NaN stays NaN), a new array of x's dtype: ``xp.clip``, except
    on NumPy, where it is NumPy's own ``np.clip`` (array-api-compat's writes into an array it
    makes outside NumPy's dispatch, which a compiled NumPy step cannot replay: every step of a
    model with GELU ran uncompiled)."""
    if isinstance(x, np.ndarray):
        return np.clip(x, low, high)
    return _namespace(x).clip(x, low, high)


# -- ReLU's backward ------------------------------------------------------------------------
def relu_backward(y: Any, grad: Any) -> Any:
    """dE/dX = dE/dY ∘ 1[Y > 0] for the output Y = max(X, 0) of a ReLU (Y is 0, positive or
    NaN) and ``grad`` = dE/dY: a new array, 0 where Y is 0 or NaN (as ``where(Y > 0, dE/dY,
    0)``; PyTorch's ReLU backward is also 0 where Y is 0). Each library's fastest form:

    - NumPy: dE/dY · (Y > 0), a product with the boolean mask (``where`` is a slow path there:
      5x the time of the two ufuncs);
    - PyTorch: sign(Y) · dE/dY with ``torch.sign`` (0 for NaN; array-api-compat's ``sign``
      mends NaN with a boolean-mask assignment, 4x the time on the CPU and a host sync on
      CUDA). aten's ``threshold_backward``, one kernel, is what ``nn.ReLU``'s backward runs,
      but it passes dE/dY where Y is NaN;
    - CuPy: one elementwise kernel, ``Y > 0 ? dE/dY : 0``;
    - elsewhere (JAX, array-api-strict): ``where(Y > 0, dE/dY, 0)``, the 0 a Python number on
      JAX (weakly typed) and elsewhere a 0-d array of dE/dY's dtype made once per namespace,
      dtype and device (array-api-strict before 2.4 takes a Python float in ``where`` as
      float64).

    (Where dE/dY is NaN or infinite at a Y of 0, the products of NumPy and PyTorch give NaN,
    the other forms 0: a gradient that is already not finite, which the loss shows. PyTorch's
    own ReLU gives dE/dY where Y is NaN; ailib gives 0 on every backend.) The result has
    dE/dY's dtype on every library (PyTorch's form runs only where Y and dE/dY share one)."""
    if isinstance(y, np.ndarray) and isinstance(grad, np.ndarray):
        return np.multiply(grad, np.greater(y, 0))
    if isinstance(y, Counted):
        return fused_call(
            "relu_backward", LAUNCHES["relu_backward"], relu_backward, _relu_backward_composed,
            (y, grad),
        )  # fmt: skip
    library = library_of(y)
    if type(grad) is type(y):
        if library == "torch" and y.dtype == grad.dtype:  # (mul_ would give Y's dtype)
            return y.sign().mul_(grad)
        if library == "cupy" and y.dtype == grad.dtype and y.shape == grad.shape:
            with y.device:
                kernel = _cupy_checked("relu_backward", y)
                if kernel is not None:
                    return kernel(y, grad)
    return _relu_backward_composed(y, grad)


def _relu_backward_composed(y: Any, grad: Any) -> Any:
    xp = _namespace(y)
    if library_of(y) == "jax":  # no array kept: one made inside a traced step would be a tracer
        return xp.where(y > 0, grad, 0.0)
    return xp.where(y > 0, grad, _zero(xp, grad))


# -- the optimizers' update ------------------------------------------------------------------
def subtract_scaled(p: Any, lr: Any, d: Any) -> Any:
    """p − lr·d, the update step of every optimizer: written into ``p`` where arrays are
    mutable (returned either way). ``lr``: a Python number or a 0-d array.

    - NumPy: from `_blas.MIN_SIZE` elements one pass of BLAS's axpy (`ailib.backends._blas`;
      OpenBLAS rounds most elements once, as PyTorch's CPU update does, and may differ from
      ``p - lr * d`` in the last bit), below it ``p -= lr * d``; a compiled NumPy step records
      it as one operation;
    - PyTorch: one kernel, ``p.sub_(d, alpha=lr)`` for a Python number and ``p.addcmul_(lr, d,
      value=-1)`` for a 0-d tensor (the compiled step's learning rate);
    - CuPy: one elementwise kernel, ``p -= lr * d``;
    - elsewhere ``p -= lr * d`` (two operations, and on JAX a new array).

    The result has p's dtype, as an update in place does: a wider lr or d (a 0-d float64
    learning rate for float32 parameters) is computed in the wider dtype and rounded to p's,
    also on JAX, whose ``p - lr * d`` would otherwise promote p (array-api-strict refuses mixed
    dtypes, as the standard's in-place operators do)."""
    if isinstance(p, np.ndarray) and isinstance(d, np.ndarray):
        call_recorded(_blas.subtract_scaled, (p, lr, d), writes=p)
        return p
    if isinstance(p, Counted):
        return fused_call(
            "subtract_scaled", LAUNCHES["subtract_scaled"], subtract_scaled,
            _subtract_scaled_composed, (p, lr, d),
        )  # fmt: skip
    library = library_of(p)
    if library == "torch" and type(d) is type(p) and d.dtype == p.dtype:
        if isinstance(lr, (int, float)):
            return p.sub_(d, alpha=lr)
        if type(lr) is type(p) and lr.ndim == 0 and lr.dtype == p.dtype:
            return p.addcmul_(lr, d, value=-1)
    if library == "cupy" and type(d) is type(p) and d.dtype == p.dtype and d.shape == p.shape:
        with p.device:
            kernel = _cupy_checked("subtract_scaled", p)
            scalar = isinstance(lr, (int, float))
            if kernel is not None and (scalar or (type(lr) is type(p) and lr.dtype == p.dtype)):
                kernel(lr, d, p)
                return p
    return _subtract_scaled_composed(p, lr, d)


def _subtract_scaled_composed(p: Any, lr: Any, d: Any) -> Any:
    dtype = p.dtype
    p -= lr * d
    if p.dtype != dtype:  # JAX's new array, promoted by a wider lr or d
        p = _namespace(p).astype(p, dtype)
    return p


# -- softmax cross-entropy from integer labels ----------------------------------------------
def softmax_cross_entropy(z: Any, labels: Any) -> tuple[Any, Any, Any]:
    """(E, dE/dZ, number of rows whose top logit is the label's) for logits Z (N, C) and
    integer labels y (N,) in 0…C−1 (not checked here: `ailib.losses` checks them):

        E = (1/N) Σₙ (log Σᵢ e^(Zₙᵢ − mₙ) − (Z_{n,yₙ} − mₙ)),   mₙ = max Zₙ
        dE/dZ = (softmax(Z) − e_y)/N

    E is a 0-d array, the count a 0-d integer array (ties: the first top class counts, as
    ``argmax``, and a NaN is the top). Labels of any integer dtype, also one too narrow for
    C−1 (uint8 labels of 300 classes). Non-finite logits give what PyTorch's
    ``F.cross_entropy`` gives: a row with a NaN or +inf has a NaN error and gradient, a row
    whose label's logit alone is −inf an infinite error. An empty batch (N = 0) gives E = 0
    and a (0, C) gradient, as ailib's other losses (PyTorch's mean gives NaN there).
    Each library's fewest operations:

    - the composition (NumPy, JAX, array-api-strict): 16 operations, no (N, C) one-hot target —
      the label's entries gathered with ``take_along_axis``, e_y applied with one ``where``, the
      argmax shared by the shift and the count;
    - PyTorch: ``log_softmax``, ``nll_loss``, the count (argmax, ==, count_nonzero), and the
      gradient formed in the log-probabilities' memory (``exp_``, ``mul_`` by 1/N, and −1/N
      at the labels with ``where`` on a comparison with 0…C−1, never a scatter): 10 kernels;
    - CuPy: one kernel with a thread per row (max, Σ e^(Z−m) and the gradient row, the row's
      error and hit), then the mean of the errors and the count of hits: 3 kernels.
    """
    if isinstance(z, Counted):
        return fused_call(
            "softmax_cross_entropy", LAUNCHES["softmax_cross_entropy"], softmax_cross_entropy,
            _softmax_cross_entropy_composed, (z, labels),
        )  # fmt: skip
    library = library_of(z)
    if library == "torch" and type(labels) is type(z) and z.dtype.is_floating_point:
        return _softmax_cross_entropy_torch(z, labels)
    if library == "cupy" and type(labels) is type(z) and z.ndim == 2 and z.shape[1] > 0:
        with z.device:
            kernel = _cupy_checked("softmax_cross_entropy", z)
            if kernel is not None:
                return _softmax_cross_entropy_cupy(_cupy_of(z), kernel, z, labels)
    return _softmax_cross_entropy_composed(z, labels)


def _softmax_cross_entropy_composed(z: Any, labels: Any) -> tuple[Any, Any, Any]:
    xp = _namespace(z)
    n = max(1, z.shape[0])
    top = xp.argmax(z, axis=1, keepdims=True)
    largest = _largest(xp, labels.dtype)
    # uint8 labels of 300 classes are compared in argmax's dtype (a uint8 0…C−1 would wrap);
    # so are uint64 labels, which the standard does not compare with argmax's int64
    if largest < z.shape[1] - 1 or largest > _largest(xp, top.dtype):
        labels = xp.astype(labels, top.dtype)
    index = xp.expand_dims(labels, axis=1)
    shifted = z - xp.take_along_axis(z, top, axis=1)
    e = xp.exp(shifted)
    total = xp.sum(e, axis=1, keepdims=True)
    rows = xp.log(total) - xp.take_along_axis(shifted, index, axis=1)
    value = xp.mean(rows) if z.shape[0] else xp.sum(rows)  # an empty batch: E = 0
    e *= (1.0 / n) / total  # P/N, in the fresh array e (in place where arrays are mutable)
    grad = xp.where(index == _classes(xp, z.shape[1], labels), e - 1.0 / n, e)
    return value, grad, xp.count_nonzero(top == index)


def _softmax_cross_entropy_torch(z: Any, labels: Any) -> tuple[Any, Any, Any]:
    torch = _torch()
    n = max(1, z.shape[0])
    if labels.dtype != torch.int64:  # nll_loss takes int64 labels
        labels = labels.to(torch.int64)
    logp = torch.log_softmax(z, 1)
    value = torch.nn.functional.nll_loss(logp, labels) if z.shape[0] else logp.sum()
    hits = torch.count_nonzero(torch.argmax(z, 1) == labels)
    grad = logp.exp_()  # P, in the memory of log P, which is not needed any more
    grad.mul_(1.0 / n)
    # e_y by a comparison with 0…C−1, not a scatter (no atomics on CUDA, and no op that
    # torch.use_deterministic_algorithms refuses)
    label = labels.unsqueeze(1) == _classes(_namespace(labels), z.shape[1], labels)
    return value, torch.where(label, grad - 1.0 / n, grad), hits


def _softmax_cross_entropy_cupy(
    cupy: Any, kernel: Any, z: Any, labels: Any
) -> tuple[Any, Any, Any]:
    n, c = z.shape
    z = cupy.ascontiguousarray(z)
    labels = cupy.ascontiguousarray(labels.astype(cupy.int64, copy=False))
    grad = cupy.empty_like(z)
    rows = cupy.empty((n,), dtype=z.dtype)
    hit = cupy.empty((n,), dtype=cupy.int32)
    if n:
        block = 128
        kernel(
            ((n + block - 1) // block,),
            (block,),
            (z, labels, grad, rows, hit, np.int32(n), np.int32(c), z.dtype.type(1.0 / n)),
        )
    return (cupy.mean(rows) if n else rows.sum()), grad, cupy.count_nonzero(hit)


# -- helpers ---------------------------------------------------------------------------------
def _namespace(x: Any) -> Any:
    from . import namespace

    return namespace(x)


def _torch() -> Any:
    import torch

    return torch


def _cupy_of(x: Any) -> Any:
    """The CuPy module of the backend that ``x``'s device belongs to."""
    from . import get

    return get("cupy", x.device.id).library


#: 0-d zeros by (namespace id, dtype, device): (namespace, zero), the namespace kept alive so
#: that its id is not reused
_ZEROS: dict[tuple[int, str, str], tuple[Any, Any]] = {}


def _zero(xp: Any, like: Any) -> Any:
    """A 0-d zero of ``like``'s dtype on its device, made once (see `relu_backward`)."""
    import array_api_compat

    device = array_api_compat.device(like)
    key = (id(xp), str(like.dtype), repr(device))
    found = _ZEROS.get(key)
    if found is None:
        found = _ZEROS[key] = (xp, xp.zeros((), dtype=like.dtype, device=device))
    return found[1]


#: the largest value of integer dtypes, by (the dtype's type, dtype) (the type first:
#: array-api-strict warns when its dtypes are compared with NumPy's)
_LARGEST: dict[tuple[type, Any], int] = {}


def _largest(xp: Any, dtype: Any) -> int:
    """``xp.iinfo(dtype).max``, asked once per dtype."""
    key = (type(dtype), dtype)
    found = _LARGEST.get(key)
    if found is None:
        found = _LARGEST[key] = int(xp.iinfo(dtype).max)
    return found


#: 0 … C−1 by (namespace id, C, dtype, device): (namespace, row)
_CLASSES: dict[tuple[int, int, str, str], tuple[Any, Any]] = {}


def _classes(xp: Any, count: int, labels: Any) -> Any:
    """0 … count−1 as a row of labels' dtype and device, made once per (namespace, size,
    dtype, device) (not under JAX, whose traced functions must not keep arrays)."""
    import array_api_compat

    device = array_api_compat.device(labels)
    if library_of(labels) == "jax":
        return xp.arange(count, dtype=labels.dtype, device=device)
    key = (id(xp), count, str(labels.dtype), repr(device))
    found = _CLASSES.get(key)
    if found is None:
        found = _CLASSES[key] = (xp, xp.arange(count, dtype=labels.dtype, device=device))
    return found[1]


# -- CuPy's kernels ---------------------------------------------------------------------------
_SOFTMAX_CE_SOURCE = r"""
extern "C" __global__ void ailib_softmax_ce_{name}(
    const {t}* z, const long long* labels, {t}* grad, {t}* rows, int* hit,
    const int n, const int c, const {t} inv_n)
{
    // one thread per row: m = max, s = sum exp(z - m), grad = exp(z - m) * (inv_n / s) with
    // inv_n taken off at the label, rows = log s - (z_y - m), hit = (first argmax == y)
    const int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i >= n) return;
    const {t}* zr = z + (long long)i * c;
    {t}* gr = grad + (long long)i * c;
    int top = 0;
    {t} m = zr[0];
    for (int j = 1; j < c; ++j) {  // a NaN is the top, the first one (as argmax)
        if (zr[j] > m || (zr[j] != zr[j] && m == m)) { m = zr[j]; top = j; }
    }
    {t} s = 0;
    for (int j = 0; j < c; ++j) {
        const {t} e = {exp}(zr[j] - m);
        gr[j] = e;
        s += e;
    }
    const {t} scale = inv_n / s;
    for (int j = 0; j < c; ++j) gr[j] *= scale;
    const long long y = labels[i];
    if (y < 0 || y >= c) {  // out of range (the loss checks labels before): a NaN error
        rows[i] = {nan};
        hit[i] = 0;
        return;
    }
    gr[y] -= inv_n;
    rows[i] = {log}(s) - (zr[y] - m);
    hit[i] = (top == (int)y) ? 1 : 0;
}
"""


#: the bodies of CuPy's elementwise kernels (``T``: the arrays' dtype)
RELU_BACKWARD_BODY = "out = y > (T)0 ? g : (T)0"
SUBTRACT_SCALED_BODY = "p -= lr * d"


def softmax_ce_source(dtype: Any) -> tuple[str, str]:
    """(CUDA C source, kernel name) of the softmax cross-entropy kernel for float32 or float64
    (one thread per row; see `softmax_cross_entropy`)."""
    single = np.dtype(dtype) == np.float32
    name = f"ailib_softmax_ce_{'f32' if single else 'f64'}"
    source = (
        _SOFTMAX_CE_SOURCE.replace("{name}", "f32" if single else "f64")
        .replace("{t}", "float" if single else "double")
        .replace("{exp}", "expf" if single else "exp")
        .replace("{log}", "logf" if single else "log")
        .replace("{nan}", 'nanf("")' if single else 'nan("")')
    )
    return source, name


def _cupy_kernels(cupy: Any, name: str, dtype: Any) -> Any:
    """The CuPy kernel of the fused operation ``name`` for ``dtype`` (float32 or float64),
    compiled by CuPy on its first launch."""
    if name == "relu_backward":
        return cupy.ElementwiseKernel("T y, T g", "T out", RELU_BACKWARD_BODY, "ailib_relu_bwd")
    if name == "subtract_scaled":
        return cupy.ElementwiseKernel("T lr, T d", "T p", SUBTRACT_SCALED_BODY, "ailib_axpy")
    if name == "softmax_cross_entropy":
        source, kernel = softmax_ce_source(dtype)
        return cupy.RawKernel(source, kernel)
    raise KeyError(name)


#: CuPy forms by (id of the cupy module, name, dtype name): (module, the kernel or None)
_CUPY_FORMS: dict[tuple[int, str, str], tuple[Any, Any]] = {}


def _cupy_checked(name: str, x: Any) -> Any:
    """The CuPy kernel of ``name`` for ``x``'s dtype, run once on a small problem against the
    composition before its first use. None (the composition runs instead) for a dtype other
    than float32/float64, a CuPy without kernels of its own (a stand-in), or a kernel that
    fails or disagrees (then with a warning, once)."""
    cupy = _cupy_of(x)
    key = (id(cupy), name, str(x.dtype))
    found = _CUPY_FORMS.get(key)
    if found is not None:
        return found[1]
    form = None
    if str(x.dtype) in ("float32", "float64") and hasattr(cupy, "RawKernel"):
        dtype = np.dtype(str(x.dtype))
        try:
            form = _cupy_kernels(cupy, name, dtype)
            ok = _CUPY_CHECKS[name](cupy, form, dtype)
        except Exception as exc:  # no NVRTC, a compile error, a launch failure
            ok, why = False, f"{type(exc).__name__}: {exc}"
        else:
            why = "its values differ from the composition's"
        if not ok:
            warnings.warn(
                f"ailib: CuPy's fused {name} kernel cannot be used for {dtype} ({why}); the "
                f"array-API composition runs instead",
                RuntimeWarning,
                stacklevel=3,
            )
            form = None
    _CUPY_FORMS[key] = (cupy, form)
    return form


def _close(cupy: Any, got: Any, want: Any, dtype: Any) -> bool:
    tol = 1e-5 if dtype == np.float32 else 1e-12
    g, w = np.asarray(cupy.asnumpy(got)), np.asarray(cupy.asnumpy(want))
    return g.shape == w.shape and bool(np.allclose(g, w, rtol=tol, atol=tol))


def _check_relu_backward(cupy: Any, kernel: Any, dtype: Any) -> bool:
    y = cupy.asarray(np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 0.25]], dtype=dtype))
    g = cupy.asarray(np.array([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]], dtype=dtype))
    return _close(cupy, kernel(y, g), _relu_backward_composed(y, g), dtype)


def _check_subtract_scaled(cupy: Any, kernel: Any, dtype: Any) -> bool:
    p = cupy.asarray(np.linspace(-1.0, 1.0, 7, dtype=dtype))
    d = cupy.asarray(np.linspace(2.0, -3.0, 7, dtype=dtype))
    want = p - dtype.type(0.125) * d
    kernel(cupy.full((), 0.125, dtype=dtype), d, p)  # a 0-d learning rate, as compiled steps give
    ok = _close(cupy, p, want, dtype)
    kernel(0.5, d, p)  # and a Python number
    return ok and _close(cupy, p, want - dtype.type(0.5) * d, dtype)


def _check_softmax_cross_entropy(cupy: Any, kernel: Any, dtype: Any) -> bool:
    z = cupy.asarray(np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 4.0, -1.0],
                               [2.5, 1.0, 1.0, 2.5]], dtype=dtype))  # fmt: skip
    labels = cupy.asarray(np.array([3, 1, 0], dtype=np.int64))
    got = _softmax_cross_entropy_cupy(cupy, kernel, z, labels)
    want = _softmax_cross_entropy_composed(z, labels)
    return all(_close(cupy, g, w, dtype) for g, w in zip(got, want))


_CUPY_CHECKS: dict[str, Callable[[Any, Any, Any], bool]] = {
    "relu_backward": _check_relu_backward,
    "subtract_scaled": _check_subtract_scaled,
    "softmax_cross_entropy": _check_softmax_cross_entropy,
}
