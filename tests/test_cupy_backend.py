"""The CuPy backend without a GPU: a stand-in `cupy` module (NumPy arrays, a "current device"
that `with Device(i):` switches) checks that every allocation and kernel of a backend runs on
that backend's device, that availability means a kernel and a matrix product ran, and that every
way CuPy can fail to run gives `BackendUnavailable` with the reason and the fix.

Its streams capture as CUDA's do: while one captures, every computing call (ufuncs, NumPy's
functions, indexing, ``astype``, ``copy``, writes) is queued with placeholder outputs (NaN)
and runs at each launch of the graph, reading its inputs' memory then; so a captured training
step is checked against the uncompiled one, value by value. cuBLAS called directly is NumPy's
own BLAS (`CpuCublas`), whose column-major ``cblas_?gemm`` takes cuBLAS's arguments."""

from __future__ import annotations

import contextlib
import ctypes
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import array_api_compat.numpy as npx
import numpy as np
import pytest

import ailib
from ailib.backends import BackendUnavailable, _cublas, _cupy, _imports
from ailib.layers import BatchNorm1D, Dense, Dropout, Layer

CUPY14 = [("cupy-cuda13x", "14.2.0")]
#: the real search (the autouse fixture `_no_real_cublas` replaces it in every test)
LIBRARY_CANDIDATES = _cublas.library_candidates


class FakeDevice:
    """cupy.cuda.Device: ``with`` makes it current; ``synchronize`` is recorded."""

    current = 0
    synced: list[tuple[int, int]] = []  # (device synchronised, device current at the time)

    def __init__(self, id: int = 0) -> None:
        self.id = int(id)
        self._stack: list[int] = []

    def __enter__(self) -> FakeDevice:
        self._stack.append(FakeDevice.current)
        FakeDevice.current = self.id
        return self

    def __exit__(self, *exc: object) -> None:
        FakeDevice.current = self._stack.pop()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeDevice) and other.id == self.id

    def __hash__(self) -> int:
        return self.id

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"

    def synchronize(self) -> None:
        FakeDevice.synced.append((self.id, FakeDevice.current))


class FakeArray(np.ndarray):
    """A CuPy array stand-in: every ufunc (what launches a kernel on CuPy: arithmetic,
    comparisons, matmul, reductions) records the device that was current when it ran."""

    kernels: list[int] = []

    def get(self) -> np.ndarray:
        _host_read()
        return np.asarray(self)

    # a value read back to the host waits for the device: refused while a stream captures
    def __bool__(self) -> bool:
        _host_read()
        return bool(np.asarray(self))

    def __float__(self) -> float:
        _host_read()
        return float(np.asarray(self))

    def __int__(self) -> int:
        _host_read()
        return int(np.asarray(self))

    def __index__(self) -> int:
        _host_read()
        return np.asarray(self).__index__()

    def item(self, *args: Any) -> Any:
        _host_read()
        return np.asarray(self).item(*args)

    def tolist(self) -> Any:
        _host_read()
        return np.asarray(self).tolist()

    @property
    def device(self) -> FakeDevice:
        return FakeDevice(1)

    @property
    def data(self) -> Any:  # type: ignore[override]
        """cupy's MemoryPointer: ``.ptr``, the address of the first element."""
        return types.SimpleNamespace(ptr=self.ctypes.data)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        """NumPy's functions (argmax, where, concatenate, ...) give FakeArrays, as CuPy's give
        CuPy arrays; while a stream captures they are queued as kernels are."""

        def run() -> Any:
            result = np.ndarray.__array_function__(self, func, types, args, kwargs)
            if isinstance(result, np.generic) or (func is np.count_nonzero and axis_none(kwargs)):
                result = np.asarray(result)  # CuPy's reductions give 0-d arrays, not numbers
            return tuple(_fake(r) for r in result) if isinstance(result, tuple) else _fake(result)

        return _deferred(run, [self, *args, *kwargs.values()])

    # methods that compute (CuPy launches kernels for them): queued while capturing
    def __getitem__(self, key: Any) -> Any:
        return _deferred(lambda: _fake(np.ndarray.__getitem__(self, key)), [self, key])

    def __setitem__(self, key: Any, value: Any) -> None:
        capture = FakeStream.capturing()
        if capture is None:
            np.ndarray.__setitem__(self, key, value)
        else:
            capture.ops.append(lambda: np.ndarray.__setitem__(self, key, value))

    def astype(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _deferred(lambda: _fake(np.ndarray.astype(self, *args, **kwargs)), [self])

    def copy(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _deferred(lambda: _fake(np.ndarray.copy(self, *args, **kwargs)), [self])

    def reshape(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _deferred(lambda: _fake(np.ndarray.reshape(self, *args, **kwargs)), [self])

    def fill(self, value: Any) -> None:
        self.__setitem__(Ellipsis, value)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        FakeArray.kernels.append(FakeDevice.current)
        capture = FakeStream.capturing()
        if capture is not None:
            return capture.queue(ufunc, method, inputs, kwargs)
        plain = [np.asarray(a) if isinstance(a, FakeArray) else a for a in inputs]
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(np.asarray(o) if isinstance(o, FakeArray) else o for o in out)
        result = getattr(ufunc, method)(*plain, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return result.view(FakeArray) if isinstance(result, np.ndarray) else result


def axis_none(kwargs: dict[str, Any]) -> bool:
    return kwargs.get("axis") is None


def _host_read() -> None:
    """A device value read on the host: CUDA refuses it during a capture, and the capture is
    invalidated (as ``synchronize`` is)."""
    capture = FakeStream.capturing()
    if capture is not None:
        capture.synchronize()


def _fake(x: Any) -> Any:
    return x.view(FakeArray) if type(x) is np.ndarray else x


def _deferred(run: Callable[[], Any], inputs: list[Any]) -> Any:
    """``run()`` now, or while a FakeStream captures: its result's shape and dtype now (from
    the placeholders), its values at each launch of the graph (a view of an input is returned
    as it is: no kernel makes it)."""
    capture = FakeStream.capturing()
    if capture is None:
        return run()
    with np.errstate(all="ignore"):  # placeholders: NaN
        result = run()
    arrays = [np.asarray(x) for x in inputs if isinstance(x, np.ndarray)]  # (no dispatch)
    results = result if isinstance(result, tuple) else (result,)
    outs = []
    for r in results:
        if not isinstance(r, np.ndarray) or any(
            np.may_share_memory(np.asarray(r), a) for a in arrays
        ):
            outs.append(r)  # a number, or a view
            continue
        # queued, not run: written at each launch (NaN, or 0 where an index must be valid)
        out = np.full_like(np.asarray(r), np.nan if r.dtype.kind == "f" else 0).view(FakeArray)
        outs.append(out)
    fresh = [(i, o) for i, (o, r) in enumerate(zip(outs, results)) if o is not r]
    if fresh:

        def launch() -> None:
            with np.errstate(all="ignore"):
                now = run()
            now = now if isinstance(now, tuple) else (now,)
            for i, out in fresh:
                np.copyto(np.asarray(out), np.asarray(now[i]))

        capture.ops.append(launch)
    return tuple(outs) if isinstance(result, tuple) else outs[0]


class CudaRuntimeError(RuntimeError):
    pass


class FakeStream:
    """cupy.cuda.Stream with CuPy 14's capture rules: ``with`` makes it current; during a
    capture, kernels are queued into the graph (their outputs not yet written), a matrix
    product raises CuPy's NotImplementedError where ``refuse_cublas`` (cublas.setStream), and
    ``synchronize`` raises and invalidates the capture."""

    current: FakeStream | None = None
    refuse_cublas = True
    captures = 0  # begin_capture calls

    def __init__(self, null: bool = False, non_blocking: bool = False) -> None:
        self.non_blocking = non_blocking
        self.ptr = id(self)  # cudaStream_t
        self.ops: list[tuple[Any, ...]] | None = None  # queued kernels while capturing
        self.invalid = False
        self._stack: list[FakeStream | None] = []

    @staticmethod
    def capturing() -> FakeStream | None:
        s = FakeStream.current
        return s if s is not None and s.ops is not None else None

    def __enter__(self) -> FakeStream:
        self._stack.append(FakeStream.current)
        FakeStream.current = self
        return self

    def __exit__(self, *exc: object) -> None:
        FakeStream.current = self._stack.pop()

    def begin_capture(self, mode: int | None = None) -> None:
        assert self.non_blocking and mode == 2  # cudaStreamCaptureModeRelaxed
        FakeStream.captures += 1
        self.ops, self.invalid = [], False

    def end_capture(self) -> FakeGraph:
        ops, invalid, self.ops = self.ops, self.invalid, None
        if invalid:
            raise CudaRuntimeError("cudaErrorStreamCaptureInvalidated: operation failed")
        return FakeGraph(ops or [])

    def synchronize(self) -> None:
        if self.ops is not None:
            self.invalid = True
            raise CudaRuntimeError("cudaErrorStreamCaptureUnsupported: operation not permitted")

    def queue(self, ufunc: Any, method: str, inputs: Any, kwargs: dict[str, Any]) -> Any:
        if ufunc is np.matmul and FakeStream.refuse_cublas:
            raise NotImplementedError(
                "calling cuBLAS API during stream capture is currently unsupported"
            )
        plain = [np.asarray(a) if isinstance(a, FakeArray) else a for a in inputs]
        given = kwargs.get("out")
        if given is not None:  # in place (x += y): into the given arrays at each launch
            kwargs = {**kwargs, "out": tuple(np.asarray(o) for o in given)}
            self.ops.append(lambda: getattr(ufunc, method)(*plain, **kwargs))
            return given[0] if len(given) == 1 else given
        result = getattr(ufunc, method)(*plain, **kwargs)
        # queued, not run: written at each launch (NaN, or 0 where an index must be valid)
        out = np.full_like(result, np.nan if result.dtype.kind == "f" else 0).view(FakeArray)
        self.ops.append((ufunc, method, plain, kwargs, out))
        return out


class FakeGraph:
    launches = 0

    def __init__(self, ops: list[tuple[Any, ...]]) -> None:
        self.ops = ops

    def launch(self, stream: Any = None) -> None:
        FakeGraph.launches += 1
        for op in self.ops:
            if callable(op):  # a library call queued as it is (cuBLAS called directly)
                op()
                continue
            ufunc, method, inputs, kwargs, out = op
            np.asarray(out)[...] = getattr(ufunc, method)(*inputs, **kwargs)


class FakePool:
    def malloc(self, size: int) -> None:
        raise AssertionError("not called by the stand-ins")


class RecordingXP:
    """array-api-compat's NumPy namespace; records (function, current device) for every call
    and returns FakeArrays. ``fail`` maps a function name to an exception it raises."""

    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = fail or {}
        self.__array_api_version__ = npx.__array_api_version__

    def __getattr__(self, name: str) -> Any:
        value = getattr(npx, name)
        if not callable(value) or isinstance(value, type):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, FakeDevice.current))
            if name in self.fail:
                raise self.fail[name]
            kwargs.pop("device", None)
            out = value(*args, **kwargs)
            return out.view(FakeArray) if isinstance(out, np.ndarray) else out

        return call


def fake_cupy(count: int = 2, count_error: Exception | None = None) -> Any:
    def get_device_count() -> int:
        if count_error is not None:
            raise count_error
        return count

    runtime = types.SimpleNamespace(
        getDeviceCount=get_device_count,
        getDevice=lambda: FakeDevice.current,
        driverGetVersion=lambda: 12020,
        runtimeGetVersion=lambda: 13000,
        streamCaptureModeRelaxed=2,
    )
    default_stream = FakeStream()

    @contextlib.contextmanager
    def using_allocator(allocator: Any = None) -> Iterator[None]:
        yield

    cuda = types.SimpleNamespace(
        runtime=runtime,
        Device=FakeDevice,
        Stream=FakeStream,
        MemoryPool=FakePool,
        using_allocator=using_allocator,
        get_current_stream=lambda: FakeStream.current or default_stream,
    )

    def asarray(a: Any, dtype: Any = None) -> FakeArray:
        return np.array(a, dtype=dtype).view(FakeArray)

    def full(shape: Any, value: Any, dtype: Any = None) -> FakeArray:
        return np.full(shape, value, dtype=dtype).view(FakeArray)

    def empty(shape: Any, dtype: Any = None) -> FakeArray:
        return np.full(shape, np.nan if np.dtype(dtype).kind == "f" else 7, dtype=dtype).view(
            FakeArray
        )  # not zeroed: what a product leaves unwritten shows

    def ascontiguousarray(a: FakeArray) -> FakeArray:
        return np.positive(a, order="C")  # a kernel: queued while capturing

    return types.SimpleNamespace(
        __version__="14.2.0",
        cuda=cuda,
        ndarray=FakeArray,
        asarray=asarray,
        full=full,
        empty=empty,
        ascontiguousarray=ascontiguousarray,
        int64=np.int64,
        uint8=np.uint8,
    )


class CpuCublas:
    """`ailib.backends._cublas.Cublas` on the CPU: its sgemm/dgemm are NumPy's own BLAS's
    column-major ``cblas_?gemm`` (the same arguments as cuBLAS's), run at once, or queued into
    the stand-in graph while a FakeStream captures (as a captured cuBLAS call runs at each
    launch). Records the streams set, the workspaces and whether TF32 was asked for. ``wrong``:
    every product comes out doubled."""

    def __init__(self, wrong: bool = False) -> None:
        from ailib.backends import _blas

        path = _blas.axpy_library()
        if path is None:
            pytest.skip("NumPy's BLAS was not found through ctypes (see ailib.backends._blas)")
        lib = ctypes.CDLL(path)
        self.fns = {}
        for pattern, int_type in (
            ("scipy_cblas_{}gemm64_", ctypes.c_int64),
            ("cblas_{}gemm64_", ctypes.c_int64),
            ("scipy_cblas_{}gemm", ctypes.c_int),
            ("cblas_{}gemm", ctypes.c_int),
        ):
            for char, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
                fn = getattr(lib, pattern.format(char), None)
                if fn is not None:
                    fn.restype = None
                    fn.argtypes = [ctypes.c_int] * 3 + [int_type] * 3 + [
                        real, ctypes.c_void_p, int_type, ctypes.c_void_p, int_type,
                        real, ctypes.c_void_p, int_type,
                    ]  # fmt: skip
                    self.fns[char] = fn
            if len(self.fns) == 2:
                break
        else:
            pytest.skip(f"no cblas_sgemm/dgemm in {path}")
        self.wrong = wrong
        self.streams: list[int] = []
        self.workspaces: list[tuple[int, int]] = []
        self.tf32 = False

    def create(self) -> int:
        return 12345

    def set_stream(self, handle: int, stream: int) -> None:
        assert handle == 12345
        self.streams.append(stream)

    def set_workspace(self, handle: int, pointer: int, nbytes: int) -> None:
        self.workspaces.append((pointer, nbytes))

    def set_tf32(self, handle: int) -> None:
        self.tf32 = True

    def gemm(self, char: str, handle: int, op_a: int, op_b: int, *args: int) -> None:
        m, n, k, a, lda, b, ldb, c, ldc = args
        cblas = {0: 111, 1: 112}  # CblasNoTrans, CblasTrans
        alpha = 2.0 if self.wrong else 1.0

        def run() -> None:  # 102: CblasColMajor
            self.fns[char](
                102, cblas[op_a], cblas[op_b], m, n, k, alpha, a, lda, b, ldb, 0.0, c, ldc
            )

        capture = FakeStream.capturing()
        if capture is not None:
            capture.ops.append(run)
        else:
            run()


class CudaError(RuntimeError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


@pytest.fixture(autouse=True)
def _no_real_cublas(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-ins never reach a real cuBLAS (on a GPU machine it would be handed host
    memory): none is found unless a test gives one (CpuCublas); workspaces are small, and the
    handles and plans made are dropped after each test."""
    monkeypatch.setattr(_cublas, "library_candidates", lambda: [])
    monkeypatch.setattr(_cublas, "WORKSPACE_BYTES", 4096)
    monkeypatch.setattr(_cublas, "_GEMMS", {})
    monkeypatch.setattr(_cupy, "_CAPTURE_PLANS", {})


@pytest.fixture(autouse=True)
def _current_device_zero() -> None:
    FakeDevice.current = 0
    FakeDevice.synced = []
    FakeStream.current, FakeStream.refuse_cublas, FakeStream.captures = None, True, 0
    FakeGraph.launches = 0


def _build(device: Any = 1, **kwargs: Any) -> tuple[ailib.backends.Backend, RecordingXP]:
    xp = RecordingXP(kwargs.pop("fail", None))
    be = _cupy.build(fake_cupy(**kwargs), xp, device, CUPY14)
    be.device_of = lambda x: be.device  # NumPy stand-ins do not know their device
    return be, xp


# -- the device context -----------------------------------------------------------------------
def test_probe_and_every_allocation_run_on_the_backends_device_not_the_current_one() -> None:
    be, xp = _build("cuda:1")
    assert be.device == FakeDevice(1)
    assert {"asarray", "reshape"} <= {name for name, _ in xp.calls}  # the probe ran
    xp.calls.clear()
    be.xp.zeros((2, 3), dtype=be.float_dtype)
    be.xp.arange(4, dtype=be.index_dtype)
    be.asarray(np.ones((2, 2), dtype=np.float32))
    BatchNorm1D(3, backend=be)  # ones/zeros for gamma, beta and the running statistics
    be.random(0).bernoulli_mask((4, 4), 0.5, "float32")
    assert xp.calls and all(device == 1 for _, device in xp.calls), xp.calls
    assert FakeDevice.current == 0  # nothing was made current for the process


class _WhereAmI(Layer):
    """Records the current device when forward and backward run."""

    seen: list[int] = []

    def call(self, x: Any) -> Any:
        _WhereAmI.seen.append(FakeDevice.current)

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            _WhereAmI.seen.append(FakeDevice.current)
            return grad_out if input_grad else None

        return x, backprop


def test_training_steps_and_predictions_run_under_the_backends_device() -> None:
    be, xp = _build(1)
    model = ailib.Sequential([Dense(3, 4), _WhereAmI(), Dropout(0.5), Dense(4, 2)], backend=be)
    x = be.asarray(np.ones((5, 3), dtype=np.float32))
    y = be.asarray(np.array([0, 1, 0, 1, 1]), dtype=be.index_dtype)
    xp.calls.clear()
    _WhereAmI.seen = []
    model.train_step(x, y, "softmax_cross_entropy", "adam")
    model.predict(x)
    assert _WhereAmI.seen == [1, 1, 1]
    assert xp.calls and all(device == 1 for _, device in xp.calls)
    assert FakeDevice.current == 0


def test_fit_evaluate_and_losses_launch_every_kernel_on_the_backends_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    be, _ = _build(1)
    monkeypatch.setattr(FakeArray, "__module__", "cupy._core.core")  # a CuPy array to ailib
    monkeypatch.setitem(ailib.backends._cache, ("cupy", repr(1)), be)
    rng = np.random.default_rng(0)
    x = be.asarray(rng.standard_normal((12, 3)).astype(np.float32))
    y = be.asarray(rng.integers(0, 2, 12), dtype=be.index_dtype)
    model = ailib.Sequential(
        [Dense(3, 4), BatchNorm1D(4), Dropout(0.5), Dense(4, 2)], backend=be, seed=0
    )
    FakeArray.kernels = []
    model.fit(x, y, epochs=2, batch_size=5, optimizer="adam", validation_data=(x, y))
    model.evaluate(x, y)
    ailib.losses.SoftmaxCrossEntropy().value_and_grad(model.predict(x), y)  # standalone
    assert len(FakeArray.kernels) > 100
    assert set(FakeArray.kernels) == {1}
    assert FakeDevice.current == 0


def test_synchronize_waits_on_the_backends_device() -> None:
    be, _ = _build(1)
    be.synchronize()
    assert FakeDevice.synced == [(1, 0)]


def test_random_sources_build_nothing_on_the_device_until_a_mask_is_drawn() -> None:
    be, xp = _build(0)
    xp.calls.clear()
    rng = be.random(0)
    assert xp.calls == []
    rng.bernoulli_mask((2, 2), 0.5)
    assert xp.calls


# -- why it cannot run ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "cupy is installed but no CUDA device was found"),
        (
            {"count_error": CudaError(100, "cudaErrorNoDevice: no CUDA-capable device")},
            "no CUDA device was found .*cudaErrorNoDevice",
        ),
        (
            {"count_error": CudaError(35, "cudaErrorInsufficientDriver: driver too old")},
            r"driver is too old for this CuPy wheel: the driver supports CUDA 12\.2, "
            r"cupy-cuda13x 14\.2\.0 is built for CUDA 13\.0.*pip install 'cupy-cuda12x\[ctk\]'",
        ),
        (
            {"fail": {"asarray": RuntimeError("CuPy failed to load libnvrtc.so.13: OSError")}},
            r"an elementwise kernel failed on device 1: NVRTC cannot be loaded .*"
            r"pip install 'cupy-cuda13x\[ctk\]==14\.2\.0'",
        ),
        (
            {"fail": {"reshape": ImportError("CuPy failed to load libcublas.so.13")}},
            r"a matrix product failed on device 1: cuBLAS cannot be loaded .*"
            r"pip install 'cupy-cuda13x\[ctk\]==14\.2\.0'",
        ),
        (
            {"fail": {"asarray": MemoryError("out of memory")}},
            r"an elementwise kernel failed on device 1 \(MemoryError: out of memory\)",
        ),
    ],
    ids=["no-device", "no-device-error", "old-driver", "no-nvrtc", "no-cublas", "other"],
)
def test_cupy_that_cannot_run_kernels_is_unavailable_with_the_reason(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(BackendUnavailable, match=message):
        _build(1, **kwargs)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda:5", r"cupy has no device 'cuda:5'; this machine has 2 CUDA device\(s\): 'cupy:0'"),
        ("cuda:x", r"cupy has no device 'cuda:x' \(not a device number\)"),
        (7, r"cupy has no device 7;"),
    ],
)
def test_cupy_devices_that_do_not_exist(device: Any, message: str) -> None:
    with pytest.raises(BackendUnavailable, match=message):
        _build(device)


@pytest.mark.parametrize("device", [None, 0, "0", "cuda", "gpu", "cuda:0", FakeDevice(0)])
def test_cupy_device_spellings_normalise(device: Any) -> None:
    assert _build(device)[0].device == FakeDevice(0)


def test_ctk_command_matches_the_installed_wheel() -> None:
    assert _cupy.ctk_command(CUPY14, 13) == "pip install 'cupy-cuda13x[ctk]==14.2.0'"
    assert (
        _cupy.ctk_command([("cupy-cuda12x", "13.6.0")], 12)
        == "pip install --upgrade 'cupy-cuda12x[ctk]>=14'"
    )
    assert "cuda-toolkit[nvrtc,cublas" in _cupy.ctk_command([("cupy", "14.0.0")], 12)


# -- importing --------------------------------------------------------------------------------
@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """Forget every backend and import; ``install(source)`` puts a package called cupy with
    that ``__init__.py`` first on the path."""
    monkeypatch.setattr(ailib.backends, "_cache", {})
    monkeypatch.setattr(_imports, "_import_warnings", {})
    monkeypatch.setattr(_cupy, "cupy_packages", lambda: [])

    def install(source: str) -> None:
        (tmp_path / "cupy").mkdir()
        (tmp_path / "cupy" / "__init__.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))

    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] == "cupy"}
    yield install
    for k in [k for k in sys.modules if k.split(".")[0] == "cupy"]:
        del sys.modules[k]
    sys.modules.update(saved)


def test_two_cupy_packages_are_named_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, fresh: Callable[[str], None]
) -> None:
    fresh("raise AssertionError('imported although two packages are installed')\n")
    both = [("cupy-cuda12x", "13.6.0"), ("cupy-cuda13x", "14.2.0")]
    monkeypatch.setattr(_cupy, "cupy_packages", lambda: both)
    reason = ailib.backends.why_unavailable("cupy")
    assert reason is not None
    assert (
        "several CuPy packages are installed (cupy-cuda12x 13.6.0, cupy-cuda13x 14.2.0)" in reason
    )
    assert "pip uninstall -y cupy-cuda12x cupy-cuda13x" in reason


def test_an_import_that_fails_in_any_way_makes_cupy_unavailable(
    fresh: Callable[[str], None],
) -> None:
    fresh("raise OSError('libcudart.so.13: cannot open shared object file')\n")
    assert "cupy" not in ailib.backends.available()
    reason = ailib.backends.why_unavailable("cupy")
    assert reason is not None
    assert "cupy is installed but importing it failed (OSError: libcudart.so.13" in reason


def test_an_import_warning_under_warnings_as_errors_does_not_escape_available(
    fresh: Callable[[str], None],
) -> None:
    fresh("import warnings\nwarnings.warn('CuPy may not function correctly', UserWarning)\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "cupy" not in ailib.backends.available()
        reason = ailib.backends.why_unavailable("cupy")
        assert reason is not None and "importing cupy warns" in reason
        assert "CuPy may not function correctly" in reason
        assert "numpy" in ailib.backends.available()


def test_the_cuda_extras_install_what_cupy_needs_to_run_kernels() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("cupy-cuda12x[ctk]") for r in extras["cuda12"]), extras["cuda12"]
    assert any(r.startswith("cupy-cuda13x[ctk]") for r in extras["cuda13"]), extras["cuda13"]


# -- compiled steps: CUDA graphs ------------------------------------------------------------
def test_graph_capture_problem_names_cupys_refusal_of_cublas_once_per_device() -> None:
    cupy = fake_cupy()
    reason = _cupy.graph_capture_problem(cupy, FakeDevice(1))
    assert reason is not None
    assert "CuPy 14.2.0 cannot capture a matrix product in a CUDA graph on device 1" in reason
    assert "NotImplementedError: calling cuBLAS API during stream capture" in reason
    assert "cupy/cupy#6290" in reason
    assert FakeStream.capturing() is None and FakeDevice.current == 0  # capture ended, device left
    assert _cupy.graph_capture_problem(cupy, FakeDevice(1)) == reason
    assert FakeStream.captures == 1  # asked once per process and device
    _cupy.graph_capture_problem(cupy, FakeDevice(0))
    assert FakeStream.captures == 2


def test_graph_capture_problem_is_none_where_a_captured_matrix_product_replays() -> None:
    FakeStream.refuse_cublas = False
    assert _cupy.graph_capture_problem(fake_cupy(), FakeDevice(0)) is None
    assert FakeGraph.launches == 1  # the graph ran, and its product was checked
    broken = fake_cupy()
    real_launch = FakeGraph.launch
    try:
        FakeGraph.launch = lambda self, stream=None: None  # type: ignore[method-assign]
        reason = _cupy.graph_capture_problem(broken, FakeDevice(0))
    finally:
        FakeGraph.launch = real_launch  # type: ignore[method-assign]
    assert reason is not None and "computed [[nan, nan], [nan, nan]]" in reason


def test_a_failed_capture_raises_what_failed_not_the_invalidated_capture() -> None:
    stream = FakeStream(non_blocking=True)

    def sync_inside() -> None:
        stream.synchronize()  # invalid in a capture: the capture is invalidated too

    with pytest.raises(CudaRuntimeError, match="cudaErrorStreamCaptureUnsupported"):
        _cupy._captured(stream, 2, sync_inside)
    assert stream.ops is None  # the capture was ended all the same
    graph, out = _cupy._captured(stream, 2, lambda: 3)
    assert isinstance(graph, FakeGraph) and out == 3


def test_compiled_steps_on_a_cupy_that_refuses_cublas_in_captures_run_uncompiled_once_said() -> (
    None
):
    """CuPy 14: the graph step asks once, warns once, then every step runs as the uncompiled one
    does, without a capture of the real step."""
    be, _ = _build(1)
    rng = np.random.default_rng(0)
    x = be.asarray(rng.standard_normal((8, 3)))
    y = be.asarray(rng.integers(0, 2, 8), dtype=be.index_dtype)
    models = []
    for compiled in (True, False):
        model = ailib.Sequential([Dense(3, 4), Dense(4, 2)], backend=be, dtype="float64", seed=0)
        model.compile_steps = compiled
        models.append(model)
    opts = [ailib.optimizers.Adam(0.01), ailib.optimizers.Adam(0.01)]
    with pytest.warns(RuntimeWarning) as caught:
        for _ in range(5):
            for model, opt in zip(models, opts):
                model.train_step(x, y, "softmax_cross_entropy", opt)
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and "the step runs uncompiled" in said[0], said
    assert "cannot capture a matrix product" in said[0] and "cuBLAS" in said[0]
    assert FakeStream.captures == 1  # the probe's: the step itself was never captured
    for a, b in zip(*(m.layers for m in models)):
        for name in a.params:
            np.testing.assert_array_equal(np.asarray(a.params[name]), np.asarray(b.params[name]))
    assert opts[0].iterations == opts[1].iterations == 5


# -- cuBLAS called directly: the products of a captured step ---------------------------------
def _operands(rng: np.random.Generator, m: int, k: int, n: int, layout: str, dtype: Any) -> Any:
    """A (m, k) and B (k, n) as FakeArrays laid out as ``layout`` says, per operand: "c"
    C-contiguous, "f" a transposed view of a C-contiguous array (``w.mT``), "s" strided (every
    other column of a wider array: neither)."""

    def one(rows: int, cols: int, kind: str) -> FakeArray:
        if kind == "c":
            x = rng.standard_normal((rows, cols))
        elif kind == "f":
            x = rng.standard_normal((cols, rows)).T
        else:
            x = rng.standard_normal((rows, 2 * cols))[:, ::2]
        return np.asarray(x, dtype=dtype).view(FakeArray)

    return one(m, k, layout[0]), one(k, n, layout[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["cc", "cf", "fc", "ff", "sc", "fs"])
@pytest.mark.parametrize(("m", "k", "n"), [(5, 3, 4), (1, 7, 1), (6, 1, 2), (2, 4, 1), (1, 1, 1)])
def test_cublas_called_directly_computes_row_major_products_of_every_layout(
    dtype: Any, layout: str, m: int, k: int, n: int
) -> None:
    """Cᵀ = Bᵀ·Aᵀ in column-major terms: the operations and leading dimensions of C- and
    F-contiguous operands (and a copy of any other), checked with a column-major BLAS."""
    library = CpuCublas()
    cupy = fake_cupy()
    gemm = _cublas.Gemm(cupy, FakeDevice(1), library)
    a, b = _operands(np.random.default_rng(m * 100 + k * 10 + n), m, k, n, layout, dtype)
    got = gemm(a, b)
    assert type(got) is FakeArray and got.dtype == dtype and got.shape == (m, n)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(np.asarray(got), np.asarray(a) @ np.asarray(b), rtol=tol, atol=tol)
    assert library.streams == [cupy.cuda.get_current_stream().ptr]  # the current stream


def test_cublas_called_directly_handles_empty_products_and_refuses_mismatched_sizes() -> None:
    library = CpuCublas()
    gemm = _cublas.Gemm(fake_cupy(), FakeDevice(1), library)
    zero_k = gemm(np.ones((3, 0)).view(FakeArray), np.ones((0, 2)).view(FakeArray))
    np.testing.assert_array_equal(np.asarray(zero_k), np.zeros((3, 2)))  # a sum of nothing
    assert gemm(np.ones((0, 4)).view(FakeArray), np.ones((4, 2)).view(FakeArray)).shape == (0, 2)
    assert library.streams == []  # cuBLAS was not called for an empty product
    with pytest.raises(ValueError, match=r"inner sizes of A \(3, 4\) and B \(5, 2\) differ"):
        gemm(np.ones((3, 4)).view(FakeArray), np.ones((5, 2)).view(FakeArray))
    stacked = np.ones((2, 3, 4)).view(FakeArray)  # not 2-D: CuPy's own product
    assert gemm(stacked, np.ones((4, 5)).view(FakeArray)).shape == (2, 3, 5)


def test_cublas_handle_has_its_own_workspace_and_tf32_only_where_cupy_uses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUPY_TF32", raising=False)
    library = CpuCublas()
    gemm = _cublas.Gemm(fake_cupy(), FakeDevice(1), library)
    assert library.workspaces == [(gemm.workspace.data.ptr, _cublas.WORKSPACE_BYTES)]
    assert gemm.workspace.nbytes == _cublas.WORKSPACE_BYTES and not library.tf32
    monkeypatch.setenv("CUPY_TF32", "1")
    library = CpuCublas()
    _cublas.Gemm(fake_cupy(), FakeDevice(1), library)
    assert library.tf32


def test_cublas_library_candidates_start_with_the_one_mapped_into_the_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    maps = tmp_path / "maps"
    lib = "/opt/site-packages/nvidia/cu13/lib/libcublas.so.13"
    maps.write_text(
        f"7f00-7f10 r-xp 00000000 08:01 1 {lib}\n"
        "7f10-7f20 r-xp 00000000 08:01 2 /opt/site-packages/nvidia/cu13/lib/libcublasLt.so.13\n"
        f"7f20-7f30 r--p 00000000 08:01 1 {lib}\n"
    )
    real_open = open
    monkeypatch.setattr(
        "builtins.open",
        lambda path, *a, **k: real_open(maps if path == "/proc/self/maps" else path, *a, **k),
    )
    found = LIBRARY_CANDIDATES()
    assert found[0] == lib and found.count(lib) == 1
    assert not any("libcublasLt" in f for f in found)
    assert found[1:4] == list(_cublas.SONAMES)


def test_no_cublas_library_is_said_with_what_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cublas, "library_candidates", lambda: ["/nowhere/libcublas.so.13"])
    with pytest.raises(OSError, match="no usable cuBLAS library: /nowhere/libcublas.so.13"):
        _cublas.load_library()
    gemm, why = _cublas.gemm_for(fake_cupy(), FakeDevice(0))
    assert gemm is None and why is not None and "/nowhere/libcublas.so.13" in why


def test_cublas_called_directly_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cublas, "load_library", CpuCublas)
    monkeypatch.setenv("AILIB_CUBLAS_DIRECT", "0")
    assert _cublas.gemm_for(fake_cupy(), FakeDevice(0)) == (None, "AILIB_CUBLAS_DIRECT=0 is set")
    reason = _cupy.graph_capture_problem(fake_cupy(), FakeDevice(0))
    assert reason is not None and "cannot capture a matrix product" in reason
    assert "cuBLAS could not be called directly either (AILIB_CUBLAS_DIRECT=0 is set)" in reason
    monkeypatch.setenv("AILIB_CUBLAS_DIRECT", "1")
    gemm, why = _cublas.gemm_for(fake_cupy(), FakeDevice(0))
    assert gemm is not None and why is None


def test_graph_capture_of_cublas_called_directly_where_cupy_refuses_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CuPy 14 refuses its cuBLAS calls in a capture; the products called directly are
    captured, replayed and checked (A·Aᵀ and Aᵀ·A: both layouts)."""
    library = CpuCublas()
    monkeypatch.setattr(_cublas, "load_library", lambda: library)
    cupy = fake_cupy()
    problem, gemm = _cupy.capture_plan(cupy, FakeDevice(1))
    assert problem is None and isinstance(gemm, _cublas.Gemm)
    assert _cupy.graph_capture_problem(cupy, FakeDevice(1)) is None
    assert FakeStream.captures == 1 and FakeGraph.launches == 1  # captured, launched, checked
    assert FakeStream.capturing() is None and FakeDevice.current == 0
    assert _cublas.active() is None  # products are CuPy's own again


@pytest.mark.parametrize("kind", ["wrong", "broken"])
def test_graph_capture_of_cublas_called_directly_that_misbehaves_is_refused(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    library = CpuCublas(wrong=kind == "wrong")
    if kind == "broken":
        library.gemm = lambda *args: (_ for _ in ()).throw(  # type: ignore[method-assign]
            _cublas.CublasError("cublasSgemm_v2 returned CUBLAS_STATUS_EXECUTION_FAILED")
        )
    monkeypatch.setattr(_cublas, "load_library", lambda: library)
    problem, gemm = _cupy.capture_plan(fake_cupy(), FakeDevice(1))
    assert gemm is None and problem is not None
    if kind == "wrong":
        assert "cuBLAS called directly computed [[[28.0, 64.0], [64.0, 154.0]], [[34.0," in problem
        assert "not [[[14.0, 32.0], [32.0, 77.0]], [[17.0, 22.0, 27.0]," in problem
    else:
        assert "CUBLAS_STATUS_EXECUTION_FAILED" in problem
    assert FakeStream.capturing() is None and _cublas.active() is None


def _graph_and_eager(
    layers: Callable[[], list[Layer]],
    x: Any,
    y: Any,
    make_opt: Callable[[], Any],
    dtype: str,
    steps: int,
) -> tuple[list[Any], list[Any], list[str]]:
    """The same model trained ``steps`` steps with compiled steps (CUDA graphs on the stand-in)
    and without: (models, errors per step of each, what was said)."""
    be, _ = _build(1)
    models, opts, errors = [], [], [[], []]
    for compiled in (True, False):
        model = ailib.Sequential(layers(), backend=be, dtype=dtype, seed=0)
        model.compile_steps = compiled
        models.append(model)
        opts.append(make_opt())
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        for step in range(steps):
            xb, yb = np.roll(x, step, axis=0), np.roll(y, step)  # another batch each step
            for i, (model, opt) in enumerate(zip(models, opts)):
                error = model.train_step(
                    be.asarray(xb, dtype=dtype), be.asarray(yb), "softmax_cross_entropy", opt
                )
                errors[i].append(float(np.asarray(error)))
    return models, errors, [str(w.message) for w in said]


def _assert_same(models: list[Any], errors: list[Any], dtype: str) -> None:
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(errors[0], errors[1], rtol=tol, atol=tol)
    for a, b in zip(*(m.layers for m in models)):
        for key in a.params:
            np.testing.assert_allclose(
                np.asarray(a.params[key]), np.asarray(b.params[key]), rtol=tol, atol=tol
            )


@pytest.mark.parametrize(
    ("name", "dtype", "norm"),
    [
        ("adam", "float64", False),
        ("momentum", "float32", False),
        ("adam", "float64", True),
        ("amsgrad", "float64", False),
    ],
)
def test_compiled_steps_on_cupy14_are_cuda_graphs_whose_products_call_cublas_directly(
    monkeypatch: pytest.MonkeyPatch, name: str, dtype: str, norm: bool
) -> None:
    """CuPy 14 refuses its own cuBLAS in captures: the step is captured once (its second call
    of a shape), its Dense layers' products calling cuBLAS directly, and launched from then on,
    with nothing said; its errors and weights equal the uncompiled step's (the stand-in graph
    replays every queued operation at each launch, reading its inputs' memory then)."""
    library = CpuCublas()
    queued = []
    real_gemm = library.gemm
    library.gemm = lambda *args: (  # type: ignore[method-assign]
        queued.append(FakeStream.capturing() is not None),
        real_gemm(*args),
    )
    monkeypatch.setattr(_cublas, "load_library", lambda: library)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
    models, errors, said = _graph_and_eager(
        lambda: [
            Dense(3, 5),
            *([BatchNorm1D(5)] if norm else []),
            ailib.layers.ReLU(),
            Dense(5, 2),
        ],
        x,
        y,
        {
            "adam": lambda: ailib.optimizers.Adam(0.01),
            "amsgrad": lambda: ailib.optimizers.Adam(0.01, amsgrad=True),
            "momentum": lambda: ailib.optimizers.SGD(0.05, 0.9),
        }[name],
        dtype,
        steps=6,
    )
    assert said == []  # the step is a graph
    assert FakeStream.captures == 2  # the probe's, then the step's (once)
    assert FakeGraph.launches == 1 + 5  # the probe's, then steps 2 to 6
    # the probe's 2 products (outside, then inside its capture), then the step's: the forward
    # products of both layers, dE/dW of both and dE/dX of the second, all captured
    assert queued[:4] == [False, False, True, True] and queued[4:9] == [True] * 5
    assert _cublas.active() is None
    _assert_same(models, errors, dtype)
    assert len(set(errors[0])) == 6  # it trained: each step's error is another
    if norm:  # the running statistics, which the step replaces: copied back at each launch
        for stat in ("running_mean", "running_var"):
            a, b = (np.asarray(m.layers[1].buffers[stat]) for m in models)
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
            assert not np.allclose(a, 0.0 if stat == "running_mean" else 1.0)  # they moved


@pytest.mark.parametrize(("groups", "captured"), [(1, True), (2, False)])
def test_cnn_steps_are_cuda_graphs_on_cupy14_where_their_products_are_2d(
    monkeypatch: pytest.MonkeyPatch, groups: int, captured: bool
) -> None:
    """Conv2D's products are 2-D for groups = 1 and call cuBLAS directly in the capture; with
    groups they are stacked (CuPy's own, refused by CuPy 14): said once, then uncompiled. Either
    way the steps equal the uncompiled ones."""
    library = CpuCublas()
    monkeypatch.setattr(_cublas, "load_library", lambda: library)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 2, 5, 5)), rng.integers(0, 3, 4)
    models, errors, said = _graph_and_eager(
        lambda: [
            ailib.layers.Conv2D(2, 4, 3, groups=groups),
            ailib.layers.ReLU(),
            ailib.layers.Flatten(),
            Dense(36, 3),
        ],
        x,
        y,
        lambda: ailib.optimizers.Adam(0.01),
        "float64",
        steps=4,
    )
    if captured:
        assert said == [] and FakeGraph.launches == 1 + 3
    else:
        assert len(said) == 1 and "CUDA graph capture of the training step failed" in said[0]
        assert "cupy/cupy#6290" in said[0] and FakeGraph.launches == 1  # the probe's only
    _assert_same(models, errors, "float64")


def test_the_nccl_communicator_is_made_on_the_ranks_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """ncclCommInitRank binds the device current at the call: the rank's, not GPU 0."""
    from ailib.distributed import _launch, _nccl

    be, _ = _build(1)
    made_on = []
    monkeypatch.setattr(
        _nccl, "NCCLCommunicator", lambda comm, timeout: made_on.append(FakeDevice.current)
    )
    _launch._make("nccl", be, types.SimpleNamespace(comm=None), None)
    assert made_on == [1] and FakeDevice.current == 0


def test_backend_compile_problem_says_why_steps_cannot_be_compiled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks.mlp import contender_names

    be, _ = _build(1)
    problem = be.compile_problem()
    assert problem is not None and "cannot capture a matrix product" in problem
    assert ailib.backends.get("numpy").compile_problem() is None  # the NumPy replay
    assert "no compiler" in str(ailib.backends.get("array_api_strict").compile_problem())
    # the benchmark leaves out a compiled contender that would run uncompiled, saying why
    monkeypatch.setitem(ailib.backends._cache, ("cupy", repr(None)), be)
    names, notes = contender_names(["numpy+compiled", "cupy", "cupy+compiled"], ["none"], False)
    assert names == ["ailib:numpy+compiled", "ailib:cupy"]
    assert any("ailib[cupy+compiled] left out" in n and "cannot capture" in n for n in notes)


def test_namespace_calls_switch_devices_only_when_not_already_on_the_backends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    be, xp = _build(1)
    entered: list[int] = []
    real_enter = FakeDevice.__enter__

    def enter(self: FakeDevice) -> FakeDevice:
        entered.append(self.id)
        return real_enter(self)

    monkeypatch.setattr(FakeDevice, "__enter__", enter)
    be.xp.zeros((2,))  # device 0 is current: the call switches to 1 and back
    assert entered == [1] and xp.calls[-1] == ("zeros", 1) and FakeDevice.current == 0
    entered.clear()
    with be.context():  # as a model's step runs: already on device 1
        be.xp.zeros((2,))
        be.xp.ones((2,))
    assert entered == [1]  # the context's own switch, none per call
    assert xp.calls[-2:] == [("zeros", 1), ("ones", 1)] and FakeDevice.current == 0
