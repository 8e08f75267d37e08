"""The CuPy backend: one GPU, entered as a context around every allocation and kernel of the
backend (never a process-wide ``Device.use()``), and counted as available only after an
elementwise kernel and a matrix product have really run on it.

Why each piece:
- CuPy allocates and launches on the *current* device, and array-api-compat ignores ``device=``
  for ``zeros``, ``ones``, ``arange`` and friends. So the backend's ``xp`` is an `OnDevice`
  namespace that enters the backend's device around each call, and `Backend.context` gives the
  same context to `Sequential`, which runs forward, backward and training steps inside it (so
  operators such as ``x @ W`` launch on the right GPU too).
- ``getDeviceCount()`` succeeding says nothing about kernels: a CuPy 14 wheel without its
  ``[ctk]`` extra (and no CUDA toolkit) has no NVRTC, which compiles every elementwise kernel,
  and no cuBLAS. `_probe` runs both and says what is missing and which pip command fixes it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import types
from typing import Any, Callable

import numpy as np

from . import _cublas
from ._base import Backend, BackendUnavailable
from ._fused import matmul
from ._imports import compat, import_library

#: cudaError_t values that have their own explanation
CUDA_ERROR_INSUFFICIENT_DRIVER = 35
CUDA_ERROR_NO_DEVICE = 100


class OnDevice:
    """An array-API namespace whose every function runs on ``device``: directly where the
    device is already the current one (``current()`` is its index: inside a model's step,
    which runs in the backend's context, that is every call), else inside ``with device:``
    (a `with` costs a device query, a push and a ``setDevice`` on exit: about a microsecond of
    every array operation, on a GPU where the operations themselves are launch-bound).

    Attributes that are not functions (dtypes, constants, ``__array_api_version__``) are the
    wrapped namespace's own; submodules (``linalg``, ``fft``) are wrapped in turn."""

    def __init__(self, xp: Any, device: Any, current: Callable[[], int] | None = None) -> None:
        self._xp = xp
        self._device = device
        self._current = current
        self.__name__ = f"{getattr(xp, '__name__', 'xp')} on {device!r}"

    def __repr__(self) -> str:
        return f"<namespace {self.__name__}>"

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._xp, name)
        if isinstance(value, types.ModuleType):
            value = OnDevice(value, self._device, self._current)
        elif callable(value) and not isinstance(value, type):
            value = _on_device(value, self._device, self._current)
        setattr(self, name, value)  # looked up once per name
        return value


def _on_device(
    fn: Callable[..., Any], device: Any, current: Callable[[], int] | None = None
) -> Callable[..., Any]:
    index = int(device.id)
    current = current or (lambda: -1)  # not known: always enter the device

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if current() == index:
            return fn(*args, **kwargs)
        with device:
            return fn(*args, **kwargs)

    return call


# -- what is installed ----------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def cupy_packages() -> list[tuple[str, str]]:
    """(name, version) of every installed CuPy distribution ("cupy-cuda13x", "cupy", ...);
    read once per process."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name == "cupy" or name.startswith(("cupy-cuda", "cupy-rocm")):
            found[name] = dist.version
    return sorted(found.items())


def _cuda_version(number: int) -> str:
    """12020 -> "12.2" (CUDA's encoding: 1000 * major + 10 * minor)."""
    return f"{number // 1000}.{number % 1000 // 10}"


def ctk_command(packages: list[tuple[str, str]], cuda_major: int | None) -> str:
    """The pip command that installs CuPy together with the CUDA libraries it loads at run time
    (NVRTC, cuBLAS, ...): CuPy >= 14's ``[ctk]`` extra."""
    if packages and packages[0][0].startswith("cupy-cuda"):
        name, version = packages[0]
        if int(version.split(".")[0]) >= 14:
            return f"pip install '{name}[ctk]=={version}'"
        return f"pip install --upgrade '{name}[ctk]>=14'"
    major = cuda_major or 13
    return f"pip install 'cuda-toolkit[nvrtc,cublas,curand]=={major}.*'"


def two_packages(packages: list[tuple[str, str]]) -> str:
    listed = ", ".join(f"{n} {v}" for n, v in packages)
    return (
        f"several CuPy packages are installed ({listed}); they overwrite each other's files, so "
        f"none works reliably: pip uninstall -y {' '.join(n for n, _ in packages)}, then install "
        f"the one for your CUDA (nvidia-smi shows it), e.g. pip install 'cupy-cuda13x[ctk]'"
    )


# -- the backend ----------------------------------------------------------------------------
def _findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def make_cupy(device: Any = None) -> Backend:
    if _findable("cupy"):  # only then is the (slow) look at every installed package worth it
        packages = cupy_packages()
        if len(packages) > 1:
            raise BackendUnavailable(two_packages(packages))
    else:
        packages = []
    cupy = import_library("cupy")
    return build(cupy, compat("cupy"), device, packages)


def build(cupy: Any, xp: Any, device: Any, packages: list[tuple[str, str]]) -> Backend:
    """The CuPy backend on ``device`` of the (imported) module ``cupy`` with array-api-compat's
    namespace ``xp``; split from `make_cupy` so that tests can pass stand-ins."""
    count = _device_count(cupy, packages)
    index = _device_index(device, count)
    dev = cupy.cuda.Device(index)
    on_dev = OnDevice(xp, dev, getattr(cupy.cuda.runtime, "getDevice", None))
    _probe(cupy, on_dev, dev, count, packages)
    return Backend(
        "cupy",
        on_dev,
        dev,
        to_host=lambda x: x.get() if isinstance(x, cupy.ndarray) else np.asarray(x),
        is_array=lambda x: isinstance(x, cupy.ndarray),
        synchronize=lambda arrays: dev.synchronize(),
        flat_updates=True,
        compiler=lambda fn: GraphStep(cupy, dev, fn),
        compile_default=False,
        compile_problem=lambda: graph_capture_problem(cupy, dev),
        library=cupy,
        context=lambda: dev,
    )


def _device_count(cupy: Any, packages: list[tuple[str, str]]) -> int:
    runtime = cupy.cuda.runtime
    try:
        count = int(runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError, a missing libcuda, ...
        text = f"{type(exc).__name__}: {exc}"
        status = getattr(exc, "status", None)
        if status == CUDA_ERROR_INSUFFICIENT_DRIVER or "InsufficientDriver" in text:
            raise BackendUnavailable(_old_driver(runtime, packages, text)) from exc
        if status == CUDA_ERROR_NO_DEVICE or "NoDevice" in text:
            raise BackendUnavailable(
                f"cupy is installed but no CUDA device was found ({text})"
            ) from exc
        raise BackendUnavailable(f"cupy is installed but CUDA cannot start ({text})") from exc
    if count == 0:
        raise BackendUnavailable("cupy is installed but no CUDA device was found")
    return count


def _old_driver(runtime: Any, packages: list[tuple[str, str]], text: str) -> str:
    try:
        driver, built = runtime.driverGetVersion(), runtime.runtimeGetVersion()
    except Exception:
        return f"the NVIDIA driver is too old for this CuPy wheel ({text}); upgrade the driver"
    wheel = " ".join(packages[0]) if packages else "this CuPy"
    if not driver:
        return f"cupy is installed but no NVIDIA driver was found ({text})"
    return (
        f"the NVIDIA driver is too old for this CuPy wheel: the driver supports CUDA "
        f"{_cuda_version(driver)}, {wheel} is built for CUDA {_cuda_version(built)} ({text}); "
        f"upgrade the driver, or use the wheel for CUDA {driver // 1000}: "
        f"pip install 'cupy-cuda{driver // 1000}x[ctk]' (after uninstalling {wheel.split()[0]})"
    )


def _device_index(device: Any, count: int) -> int:
    """0 for None; N for N, "N", "cuda:N", "gpu:N" or a cupy Device; "cuda"/"gpu" mean 0."""
    raw = getattr(device, "id", device)
    text = "0" if raw is None else str(raw).lower()
    for prefix in ("cuda:", "gpu:"):
        text = text.removeprefix(prefix)
    text = "0" if text in ("cuda", "gpu") else text
    here = f"this machine has {count} CUDA device(s): " + ", ".join(
        f"'cupy:{i}'" for i in range(count)
    )
    if not text.isdigit():
        raise BackendUnavailable(f"cupy has no device {device!r} (not a device number); {here}")
    if int(text) >= count:
        raise BackendUnavailable(f"cupy has no device {device!r}; {here}")
    return int(text)


def _probe(cupy: Any, xp: Any, dev: Any, count: int, packages: list[tuple[str, str]]) -> None:
    """Run an elementwise kernel (compiled by NVRTC) and a float32 matrix product (cuBLAS) on
    ``dev`` and check their values; raise BackendUnavailable saying what failed."""
    stage = "an elementwise kernel"
    try:
        with dev:
            b = xp.asarray([1.0, 2.0, 3.0, 4.0], dtype=xp.float32) * 2.0 - 1.0
            stage = "a matrix product"
            m = xp.reshape(b, (2, 2))
            got = np.asarray((m @ m).get()).tolist()
    except Exception as exc:
        raise BackendUnavailable(_kernel_failure(cupy, stage, exc, dev, count, packages)) from exc
    if got != [[16.0, 24.0], [40.0, 64.0]]:
        raise BackendUnavailable(
            f"cupy: test kernels on device {dev.id} returned wrong values ({got})"
        )


def _kernel_failure(
    cupy: Any, stage: str, exc: Exception, dev: Any, count: int, packages: list[tuple[str, str]]
) -> str:
    text = f"{type(exc).__name__}: {exc}"
    seen = (
        f"cupy is installed and sees {count} CUDA device(s), but {stage} failed on device {dev.id}"
    )
    missing = [lib for lib in ("NVRTC", "cuBLAS") if lib.lower() in text.lower()]
    if not missing:
        return f"{seen} ({text})"
    try:
        major = int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:
        major = None
    return (
        f"{seen}: {' and '.join(missing)} cannot be loaded ({text}); install CuPy with the CUDA "
        f"libraries it loads at run time: {ctk_command(packages, major)}"
    )


# -- compiled steps: CUDA graphs ------------------------------------------------------------
class GraphStep:
    """A pure training step ``fn(values, lr, x, y) -> (values, grads, grad_norm, E, Y, hits)``
    (lr a Python float, values arrays and Python ints: step counts)
    (`ailib.compiling`) replayed as one CUDA graph per input shape: one launch per step instead
    of one per array operation.

    Per shape: the first call runs ``fn`` as it is; the second captures it on a side stream
    (relaxed capture mode, its allocations from a memory pool of its own that is never shared
    or freed, so the addresses the graph writes stay its own) reading fixed input buffers:
    the model's arrays as they are then (flat parameter and state buffers, updated in place),
    and copies of x, y and lr. Each later call copies x, y and lr in, launches the graph on the
    current stream, copies back the arrays the step replaces rather than updates in place
    (BatchNorm's statistics), and returns copies of E, Y and the count (the graph overwrites
    its own outputs at the next launch; the gradients are the graph's and are valid until
    then). A capture that fails (an operation that cannot be captured) turns graphs off for
    this step, with a warning, and the step runs uncompiled from then on.

    CuPy 14 refuses every cuBLAS call during a capture (``cublas.setStream`` raises
    NotImplementedError while the stream captures; cupy/cupy#6290, and CuPy's own
    tests/cupy_tests/cuda_tests/test_graph.py::test_stream_capture_failure_cublas). So while
    the step is captured, its 2-D products (`ailib.backends.matmul`: Dense's, and Conv2D's
    without groups) call cuBLAS directly, through a handle of ailib's own
    (`ailib.backends._cublas`), as PyTorch's captures do. Before its first capture the step
    asks `graph_capture_problem`, which captures and checks such products; where there is a
    problem (no cuBLAS library could be loaded, or the captured products were wrong), it says
    so once (a RuntimeWarning) and runs uncompiled, without a partial capture of the real
    step. Stacked products (Conv2D's with groups) are CuPy's own, so a step with them fails to
    capture on CuPy 14: said once, and uncompiled.

    Step counts (Python ints) become device scalars of the graph, refilled at each launch;
    counts equal at the capture share one (FlatParams keeps one count for all the parameters
    of its flat buffer), and which counts are equal is part of the graph's key.
    """

    def __init__(self, cupy: Any, device: Any, fn: Callable[..., Any]) -> None:
        self.cupy, self.device, self.fn = cupy, device, fn
        self.seen: set[Any] = set()
        self.graphs: dict[Any, Any] = {}
        self.broken = False

    def __call__(self, values: list[Any], lr: Any, x: Any, y: Any) -> Any:
        if isinstance(x, list) or isinstance(y, list):  # several inputs or outputs: not graphed
            return self.fn(values, lr, x, y)
        # the step counts that are equal share one device scalar in a graph (a flat buffer keeps
        # one count for all its parameters): which are equal is part of the graph's key
        counts = [v for v in values if not isinstance(v, self.cupy.ndarray)]
        shared = tuple(counts.index(v) for v in counts)
        key = (tuple(x.shape), str(x.dtype), tuple(y.shape), str(y.dtype), shared)
        if self.broken or key not in self.seen:
            self.seen.add(key)
            return self.fn(values, lr, x, y)
        entry = self.graphs.get(key)
        if entry is None:
            problem, gemm = capture_plan(self.cupy, self.device)
            if problem is not None:
                self._give_up(problem, stacklevel=4)  # warns where the step was asked for
                return self.fn(values, lr, x, y)
            entry = self._capture(values, lr, x, y, gemm)
            if entry is None:
                return self.fn(values, lr, x, y)
            self.graphs[key] = entry
        return self._launch(entry, values, lr, x, y)

    def _capture(self, values: list[Any], lr: Any, x: Any, y: Any, gemm: Any) -> Any:
        cp = self.cupy
        runtime = cp.cuda.runtime
        mode = getattr(runtime, "streamCaptureModeRelaxed", 2)
        pool, stream = cp.cuda.MemoryPool(), cp.cuda.Stream(non_blocking=True)
        with self.device:
            cp.cuda.get_current_stream().synchronize()  # inputs written before the capture
            with cp.cuda.using_allocator(pool.malloc):
                dtype = next(v.dtype for v in values if isinstance(v, cp.ndarray))
                # Python numbers (step counts): device scalars, refilled per launch, one per
                # value (equal counts share one: see __call__)
                scalars: dict[int, Any] = {}
                for v in values:
                    if not isinstance(v, cp.ndarray) and v not in scalars:
                        scalars[v] = cp.full((), v, dtype=cp.int64)
                inputs = [v if isinstance(v, cp.ndarray) else scalars[v] for v in values]
                static = (inputs, cp.full((), lr, dtype=dtype), x.copy(), y.copy())
                cp.cuda.get_current_stream().synchronize()
                try:
                    with _cublas.capturing(gemm):  # the step's products: cuBLAS directly
                        graph, out = _captured(stream, mode, lambda: self.fn(*static))
                except Exception as exc:  # an operation that cannot be captured
                    self._give_up(f"CUDA graph capture of the training step failed ({_why(exc)})")
                    return None
        return {"graph": graph, "pool": pool, "static": static, "out": out}

    def _give_up(self, reason: str, stacklevel: int = 5) -> None:
        """Graphs off for this step from now on, said once (a RuntimeWarning)."""
        import warnings

        self.broken = True
        warnings.warn(
            f"ailib: {reason}; the step runs uncompiled", RuntimeWarning, stacklevel=stacklevel
        )

    def _launch(self, entry: dict[str, Any], values: list[Any], lr: Any, x: Any, y: Any) -> Any:
        cp = self.cupy
        inputs, lr_in, x_in, y_in = entry["static"]
        new, grads, grad_norm, error, y_pred, hits = entry["out"]
        with self.device:
            for dst, src in zip(inputs, values):
                if not isinstance(src, cp.ndarray):
                    dst.fill(src)  # a step count
                elif src is not dst:  # replaced since the capture (a checkpoint was loaded)
                    dst[...] = src
            lr_in.fill(lr)
            x_in[...] = x
            y_in[...] = y
            entry["graph"].launch(cp.cuda.get_current_stream())
            for dst, src, was in zip(inputs, new, values):
                if src is not dst and isinstance(was, cp.ndarray):  # a leaf the step replaces:
                    dst[...] = src  # into the buffer the graph reads
            return (
                [dst if isinstance(was, cp.ndarray) else was for dst, was in zip(inputs, values)],
                grads,
                grad_norm,
                error.copy(),
                y_pred.copy(),
                None if hits is None else hits.copy(),
            )


def _captured(stream: Any, mode: int, run: Callable[[], Any]) -> tuple[Any, Any]:
    """(the CUDA graph of what ``run()`` queues on ``stream``, what it returned). The capture is
    always ended (a stream left capturing refuses all later work); where ``run`` fails, its
    error is the one raised, not end_capture's (cudaErrorStreamCaptureInvalidated, which only
    says that something before it broke the capture)."""
    with stream:
        stream.begin_capture(mode)
        try:
            out = run()
        except BaseException:
            try:
                stream.end_capture()
            except Exception:
                pass  # the capture was invalidated by what `run` did: its error says more
            raise
        return stream.end_capture(), out


def _why(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, NotImplementedError) and "during stream capture" in str(exc):
        # cupy_backends/cuda/libs/{cublas,curand,cusolver,cusparse}.pyx: setStream
        return f"{text}; CuPy refuses this library during a capture: cupy/cupy#6290"
    return text


#: `capture_plan`'s answer per (id of the cupy module, device id), with that module (an id is
#: only unique while its object lives)
_CAPTURE_PLANS: dict[tuple[int, int], tuple[Any, str | None, Any]] = {}


def graph_capture_problem(cupy: Any, device: Any) -> str | None:
    """Why a training step cannot be captured as a CUDA graph on ``device``, or None where it
    can (see `capture_plan`)."""
    return capture_plan(cupy, device)[0]


def capture_plan(cupy: Any, device: Any) -> tuple[str | None, Any]:
    """(None, how products are captured) where a training step can be a CUDA graph on
    ``device``, else (why not, None). How: a `_cublas.Gemm` (cuBLAS called directly), or None
    where CuPy's own products can be captured.

    Found once per process and device (a few milliseconds): with cuBLAS called directly, the
    products A·Aᵀ and Aᵀ·A of a 2x3 float32 A (one operand C-contiguous, the other a transposed
    view, as in a Dense layer's passes) are computed outside a capture and then captured on a
    side stream, the graph launched, and both results checked; where no cuBLAS library can be
    called directly, the same is tried with CuPy's own product C = A·A of a 2x2 A (which CuPy
    14 refuses: see `GraphStep`)."""
    key = (id(cupy), int(device.id))
    known = _CAPTURE_PLANS.get(key)
    if known is None or known[0] is not cupy:
        gemm, why_not = _cublas.gemm_for(cupy, device)
        if gemm is not None:
            problem = _direct_capture_problem(cupy, device, gemm)
            plan = (problem, None if problem else gemm)
        else:
            problem = _capture_problem(cupy, device)
            if problem is not None:
                problem += f"; cuBLAS could not be called directly either ({why_not})"
            plan = (problem, None)
        known = _CAPTURE_PLANS[key] = (cupy, *plan)
    return known[1], known[2]


def _direct_capture_problem(cupy: Any, device: Any, gemm: Any) -> str | None:
    version = getattr(cupy, "__version__", "?")
    host = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    want = [(host @ host.T).tolist(), (host.T @ host).tolist()]

    def products() -> tuple[Any, Any]:
        return matmul(a, a.mT), matmul(a.mT, a)

    try:
        with device, _cublas.capturing(gemm):
            a = cupy.asarray(host)
            eager = [np.asarray(c.get()).tolist() for c in products()]
            if eager != want:
                return (
                    f"CuPy {version}: cuBLAS called directly computed {eager} on device "
                    f"{device.id}, not {want}; no training step is a CUDA graph there"
                )
            stream = cupy.cuda.Stream(non_blocking=True)
            mode = getattr(cupy.cuda.runtime, "streamCaptureModeRelaxed", 2)
            graph, captured = _captured(stream, mode, products)
            graph.launch(stream)
            stream.synchronize()
            got = [np.asarray(c.get()).tolist() for c in captured]
    except Exception as exc:
        return (
            f"CuPy {version} cannot capture a matrix product of cuBLAS called directly in a "
            f"CUDA graph on device {device.id} ({_why(exc)}), so no training step can be a "
            f"CUDA graph there"
        )
    if got != want:
        return (
            f"CuPy {version}: a CUDA graph of matrix products (cuBLAS called directly) computed "
            f"{got} on device {device.id}, not {want}"
        )
    return None


def _capture_problem(cupy: Any, device: Any) -> str | None:
    version = getattr(cupy, "__version__", "?")
    try:
        with device:
            a = cupy.asarray(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
            c = a @ a  # outside the capture first: cuBLAS's handle and workspace made here
            stream = cupy.cuda.Stream(non_blocking=True)
            mode = getattr(cupy.cuda.runtime, "streamCaptureModeRelaxed", 2)
            graph, c = _captured(stream, mode, lambda: a @ a)
            graph.launch(stream)
            stream.synchronize()
            got = np.asarray(c.get()).tolist()
    except Exception as exc:
        return (
            f"CuPy {version} cannot capture a matrix product in a CUDA graph on device "
            f"{device.id} ({_why(exc)}), so no training step can be a CUDA graph there"
        )
    if got != [[7.0, 10.0], [15.0, 22.0]]:
        return (
            f"CuPy {version}: a CUDA graph of a matrix product computed {got} on device {device.id}"
        )
    return None
