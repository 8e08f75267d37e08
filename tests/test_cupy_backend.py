"""The CuPy backend without a GPU: a stand-in `cupy` module (NumPy arrays, a "current device"
that `with Device(i):` switches) checks that every allocation and kernel of a backend runs on
that backend's device, that availability means a kernel and a matrix product ran, and that every
way CuPy can fail to run gives `BackendUnavailable` with the reason and the fix."""

from __future__ import annotations

import contextlib
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import array_api_compat.numpy as npx
import numpy as np
import pytest

import ailib
from ailib.backends import BackendUnavailable, _cupy, _imports
from ailib.layers import BatchNorm1D, Dense, Dropout, Layer

CUPY14 = [("cupy-cuda13x", "14.2.0")]


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
        return np.asarray(self)

    @property
    def device(self) -> FakeDevice:
        return FakeDevice(1)

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
        out = np.empty_like(getattr(ufunc, method)(*plain, **kwargs)).view(FakeArray)
        out[...] = np.nan  # queued, not run: written by each launch
        self.ops.append((ufunc, method, plain, kwargs, out))
        return out


class FakeGraph:
    launches = 0

    def __init__(self, ops: list[tuple[Any, ...]]) -> None:
        self.ops = ops

    def launch(self, stream: Any = None) -> None:
        FakeGraph.launches += 1
        for ufunc, method, inputs, kwargs, out in self.ops:
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

    return types.SimpleNamespace(
        __version__="14.2.0",
        cuda=cuda,
        ndarray=FakeArray,
        asarray=asarray,
        full=full,
        int64=np.int64,
    )


class CudaError(RuntimeError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


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
