"""The `Backend` object: everything ailib needs to know about the array library underneath.

A backend bundles
- ``xp``: the array-API namespace (through array-api-compat where the library needs it),
- ``device``: where arrays live,
- ``float_dtype``: the default floating dtype (float32 on every backend),
- what the standard lacks: moving arrays to and from the host, synchronising, random numbers.

Layers, losses, optimizers and models only ever talk to a `Backend`; this package is the
only place that imports numpy, cupy, torch or jax.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, ContextManager

import numpy as np

from . import _counter

#: the array API standard's real dtypes, by name (what `Backend.dtype` takes as a string)
DTYPE_NAMES = (
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)
#: the array API standard version ailib is written against: Python scalars in `maximum`,
#: `minimum` and friends (layers use ``xp.maximum(x, 0.0)``) arrived in 2024.12
API_VERSION = "2024.12"
_NO_CONTEXT = nullcontext()


#: libraries whose arrays' ``device`` attribute is what array-api-compat's ``device`` returns
_DEVICE_ATTRIBUTE = frozenset({"torch", "cupy", "array_api_strict"})


def device_of(x: Any) -> Any:
    """``x``'s device, as array-api-compat's ``device`` reports it: NumPy's arrays are on
    "cpu", and PyTorch's, CuPy's and array-api-strict's say it themselves (``x.device``; asked
    at every layer call, where array-api-compat's lookup costs a microsecond)."""
    kind = type(x)
    if kind is np.ndarray:
        return "cpu"
    if kind.__module__.split(".")[0] in _DEVICE_ATTRIBUTE:
        return x.device
    import array_api_compat

    return array_api_compat.device(x)


class BackendUnavailable(RuntimeError):
    """A known backend that cannot run on this machine; the message says why and how to fix it."""


class Random:
    """A seeded random source for one backend, in two parts:

    - the **host generator** (NumPy's PCG64, seeded with ``seed``) draws `uniform`, `normal` and
      `permutation` on the host; the result is moved to the device once. These draws happen when
      weights are initialised and once per epoch (shuffling), never per step.
    - the **stream** (key, counter) makes `bernoulli_mask`, the one draw made at every training
      step (Dropout), on the device, with the counter-based hash of `ailib.backends._counter`:
      draw number ``counter`` is a pure function of (key, counter), computed in the standard's
      int32 operations, so nothing is copied to the device per step and no generator object is
      built on the device. ``key`` is ``seed`` (or, without a seed, a number drawn from the host
      generator).

    What holds, on every backend (NumPy, CuPy, PyTorch, JAX, array-api-strict) and device:
    the same seed gives bit-identical `uniform`, `normal` and `permutation` draws (NumPy computes
    them) and bit-identical `bernoulli_mask` draws (integer arithmetic, identical everywhere), in
    the same order. `get_state` / `set_state` capture and restore both parts exactly, so a
    training run resumed from a checkpoint draws what the uninterrupted run would have drawn.
    """

    def __init__(self, backend: Backend, seed: int | None) -> None:
        self.backend = backend
        self.seed = seed
        self.host = np.random.default_rng(seed)
        self.key = int(seed) if seed is not None else int(self.host.integers(2**63))
        self.counter = 0

    def uniform(self, shape: tuple[int, ...], low: float, high: float, dtype: Any = None) -> Any:
        """Samples of U(low, high) with the given shape, on the backend's device."""
        return self.backend.asarray(self.host.uniform(low, high, size=shape), dtype=dtype)

    def normal(self, shape: tuple[int, ...], mean: float, std: float, dtype: Any = None) -> Any:
        """Samples of N(mean, std**2) with the given shape, on the backend's device."""
        return self.backend.asarray(self.host.normal(mean, std, size=shape), dtype=dtype)

    def permutation(self, n: int) -> Any:
        """A random permutation of 0..n-1 as an index array (``backend.index_dtype``) on the
        device."""
        return self.backend.asarray(self.host.permutation(n), dtype=self.backend.index_dtype)

    def bernoulli_mask(self, shape: tuple[int, ...], keep: float, dtype: Any = None) -> Any:
        """A {0, 1} array of the given shape and dtype, made on the device, each entry 1 with
        probability ``keep`` (to within 2⁻³¹); the next draw of the stream."""
        be = self.backend
        with be.context():
            mask = _counter.bernoulli(
                be.xp, be.device, self.key, self.counter, tuple(shape), keep, be.dtype(dtype)
            )
        self.counter += 1
        return mask

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue the same sequence of draws: ``{"host": the PCG64
        state (a JSON-serialisable dict), "stream": {"key": int, "counter": int}}``."""
        return {
            "host": self.host.bit_generator.state,
            "stream": {"key": self.key, "counter": self.counter},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a state returned by `get_state` (on any backend). A bare PCG64 state
        (what checkpoints held before the stream existed) restores the host generator only."""
        if not isinstance(state, dict):
            raise TypeError(f"Random.set_state: expected a dict, received {type(state).__name__}")
        if "bit_generator" in state:
            state = {"host": state, "stream": {"key": self.key, "counter": self.counter}}
        try:
            host, stream = state["host"], state["stream"]
            key, counter = int(stream["key"]), int(stream["counter"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                "Random.set_state: expected {'host': <PCG64 state>, 'stream': {'key': int, "
                f"'counter': int}}}}, received {state!r:.200}"
            ) from exc
        if counter < 0:
            raise ValueError(f"Random.set_state: counter must be >= 0, received {counter}")
        self.host.bit_generator.state = host
        self.key, self.counter = key, counter


class Backend:
    """One array library on one device, seen through the array API standard.

    Two backends are equal when they name the same library and the same device, however the
    device was written (`ailib.backends.get` normalises it: ``"torch:cpu:0"`` and ``"torch"``
    give one backend).

    Attributes:
        name: the backend's name ("numpy", "cupy", "torch", "jax", "array_api_strict").
        spec: the name `ailib.backends.get` gives this backend back for, device included where
            it is not the library's default: "numpy", "torch:cuda:1", "jax:cpu:1",
            "array_api_strict:device1", "cupy:0". Messages and reprs that tell the reader how
            to make an array or a model for this backend use it (``name`` alone would mean
            the default device).
        xp: the array-API namespace; layers call only this. (CuPy's runs every call under the
            backend's device, see `context`.)
        device: the device arrays are created on, as the library reports it for its arrays.
        float_dtype: the default floating dtype, ``xp.float32``.
        index_dtype: the integer dtype of labels and permutations: ``xp.int64``, except
            ``xp.int32`` on JAX (whose int64 needs the process-wide x64 mode).
        mutable: whether arrays can be updated in place (False for JAX).
        inference_compiler: ``(fn, static_argnums) -> compiled fn`` for a pure function
            whose array arguments stay valid after the call (``jax.jit`` without donation, on
            JAX), or None; `Model.infer` runs inference through it (`ailib.compiling`).
        compiler: ``fn -> compiled fn`` for a pure function of arrays (``jax.jit`` on JAX),
            or None; `ailib.compiling` compiles whole training steps with it.
        loop_compiler: ``step -> run`` for a pure training step, where several steps (and
            their batches' gathers) can run as one compiled call (JAX: a loop inside
            ``jax.jit``, see `ailib.backends._libs`), or None; `fit` runs the steps between two
            reads of the losses through it (`ailib.compiling.CompiledStep.run_steps`).
        compile_default: whether models compile their steps unless told not to (JAX: yes;
            CuPy's CUDA graphs: only with ``model.compile_steps = True`` until measured).
        trace_refusals: the exceptions by which the library's `compiler` refuses a step it
            cannot compile (JAX's tracer errors: a step that reads a value to the host, as an
            `Embedding` checking its indices); ailib's own `TraceError` is one everywhere.
            `ailib.compiling` runs such a step uncompiled from then on, silently; a compiled
            step that fails otherwise where the uncompiled one runs is a fault and is warned
            about.
        compile_problem: ``() -> str | None``, why `compiler` cannot compile a training step
            here (CuPy 14 refuses cuBLAS inside a CUDA graph capture), or None where it can or
            the backend has no such check; `compile_problem()` calls it.
        flat_updates: whether optimizers keep all parameters in one flat buffer and update it
            at once (`ailib.optimizers.FlatParams`). It needs slices that are views written
            through by in-place updates (NumPy, CuPy, PyTorch; the standard leaves it open) and
            pays where launches dominate: on CUDA (CuPy, PyTorch). On the CPU the copy into
            the flat buffer costs more than the calls it saves (NumPy, Adam on the MLP: 4.5
            against 3.7 ms a step).
    """

    def __init__(
        self,
        name: str,
        xp: Any,
        device: Any,
        *,
        to_host: Callable[[Any], np.ndarray],
        is_array: Callable[[Any], bool],
        synchronize: Callable[[tuple[Any, ...]], None] = lambda arrays: None,
        mutable: bool = True,
        flat_updates: bool = False,
        compiler: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
        loop_compiler: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
        compile_default: bool = True,
        compile_problem: Callable[[], str | None] | None = None,
        trace_refusals: tuple[type[BaseException], ...] = (),
        inference_compiler: Callable[..., Callable[..., Any]] | None = None,
        random_cls: type[Random] = Random,
        library: Any = None,
        context: Callable[[], ContextManager[Any]] | None = None,
        index_dtype: Any = None,
        wide_dtype_hook: Callable[[], None] | None = None,
        take_rows: Callable[..., Any] | None = None,
        take_batch: Callable[[Any, Any, int, int], Any] | None = None,
        spec: str | None = None,
    ) -> None:
        version = getattr(xp, "__array_api_version__", None)
        if not isinstance(version, str) or version < API_VERSION:
            raise BackendUnavailable(
                f"{name}: its array-API namespace ({getattr(xp, '__name__', xp)}) implements "
                f"version {version}, ailib needs {API_VERSION} or later; upgrade it "
                f"(pip install -U 'array-api-compat>=1.11' 'array-api-strict>=2.3')"
            )
        self.name = name
        self.xp = xp
        self.device = device
        self.spec = spec if spec is not None else _spec(name, device)
        self.float_dtype = xp.float32
        self.index_dtype = xp.int64 if index_dtype is None else index_dtype
        self.mutable = mutable
        self.flat_updates = flat_updates and mutable
        self.compiler = compiler
        self.loop_compiler = loop_compiler
        self.inference_compiler = inference_compiler
        self.compile_default = compile_default
        self.trace_refusals = trace_refusals
        self._compile_problem = compile_problem
        self.library = library
        self._to_host = to_host
        self._is_array = is_array
        self._synchronize = synchronize
        self._random_cls = random_cls
        self._context = context
        self._wide_dtype_hook = wide_dtype_hook
        self._take_rows = take_rows
        #: whether `take_rows` writes into ``out`` (else it returns a new array)
        self.takes_rows_into = take_rows is not None and mutable
        self._take_batch = take_batch
        self._floating: dict[tuple[type, Any], bool] = {}
        #: whether `take_batch` is one call (else it is the slice and a gather per array)
        self.takes_batches = take_batch is not None

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device!r})"

    def compile_problem(self) -> str | None:
        """Why this backend's `compiler` cannot compile a training step here, or None: "no
        compiler" where there is none, CuPy's answer to whether a CUDA graph can capture a
        matrix product (found once per device). A compiled step that meets the problem runs
        uncompiled, with a warning."""
        if self.compiler is None:
            return f"the {self.name} backend has no compiler for training steps"
        return None if self._compile_problem is None else self._compile_problem()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Backend):
            return NotImplemented
        return self.name == other.name and self.device == other.device

    def __hash__(self) -> int:
        return hash((self.name, repr(self.device)))

    def context(self) -> ContextManager[Any]:
        """A context in which this backend's device is the current one: ``with be.context():``.

        Only CuPy has a "current device" that decides where new arrays and kernels go; its
        backend enters its own device here (never a process-wide ``use()``), and `Sequential`
        runs forward, backward and each training step inside it. JAX on a GPU sets float32
        matrix products to full precision here (its default there is TF32). Elsewhere it does
        nothing."""
        return _NO_CONTEXT if self._context is None else self._context()

    # -- dtypes ------------------------------------------------------------------------------
    def dtype(self, spec: Any = None) -> Any:
        """The namespace's dtype for ``spec``: None (the default float), a name or a dtype."""
        if spec is None:
            return self.float_dtype
        if isinstance(spec, str):
            if spec not in DTYPE_NAMES:
                raise ValueError(
                    f"unknown dtype {spec!r}; expected one of {', '.join(DTYPE_NAMES)}"
                )
            dtype = getattr(self.xp, spec)
        elif isinstance(spec, np.dtype) or (
            isinstance(spec, type) and issubclass(spec, np.generic)
        ):
            name = np.dtype(spec).name
            dtype = getattr(self.xp, name, None)
            if dtype is None:
                raise ValueError(
                    f"dtype {name!r} (NumPy's) has no counterpart on backend {self.name}; "
                    f"expected one of {', '.join(DTYPE_NAMES)}"
                )
        else:
            dtype = spec
        if self._wide_dtype_hook is not None and dtype in (self.xp.float64, self.xp.int64):
            self._wide_dtype_hook()  # JAX: an explicit request for 64-bit types turns them on
        return dtype

    def dtype_name(self, dtype: Any) -> str:
        """The standard name of a dtype of this namespace ("float32", ...; also "float16" and
        the complex ones, which some libraries have beside the standard's)."""
        for name in (*DTYPE_NAMES, "float16", "complex64", "complex128"):
            if dtype == getattr(self.xp, name, None):
                return name
        return str(dtype)

    def is_floating(self, dtype: Any) -> bool:
        """Whether ``dtype`` is a real floating dtype (kept per dtype: the namespace's
        ``isdtype`` costs microseconds, and every activation layer asks at every call)."""
        key = (type(dtype), dtype)  # the type first: array-api-strict warns at == with NumPy's
        known = self._floating.get(key)
        if known is None:
            known = self._floating[key] = bool(self.xp.isdtype(dtype, "real floating"))
        return known

    # -- arrays ------------------------------------------------------------------------------
    def owns(self, x: Any) -> bool:
        """True when ``x`` is an array of this library on this backend's device (or a traced
        array of a compiled step, which has no device yet: `ailib.compiling`)."""
        if not self._is_array(x):
            return False
        device = self.device_of(x)
        return device == self.device or (device is None and self.compiler is not None)

    def device_of(self, x: Any) -> Any:
        """``x``'s device (`device_of`)."""
        return device_of(x)

    def take_rows(self, a: Any, index: Any, out: Any = None, *, in_range: bool = False) -> Any:
        """Rows ``index`` (an integer array) of ``a``: ``xp.take(a, index, axis=0)``, as one
        compiled call where the library's eager ``take`` is several (JAX). ``out``: an array
        of the result's shape and dtype to write the rows into, where the library can (NumPy;
        elsewhere it is ignored and a new array returned): a caller that gathers batch after
        batch then reuses one batch's memory instead of allocating (and, for NumPy, faulting
        in) a new one per batch. ``in_range=True``: the caller vouches that every index lies
        in [0, rows of ``a``) (a permutation it drew itself), and NumPy skips checking them
        (two reductions and two reads per call, a third of a small batch's gather)."""
        if self._take_rows is not None:
            return self._take_rows(a, index, out, in_range=in_range)
        return self.xp.take(a, index, axis=0)

    def take_batch(self, arrays: Any, order: Any, start: int, stop: int) -> Any:
        """Rows ``order[start:stop]`` of every array in ``arrays`` (a tuple, whose items may
        be lists of arrays), in the same structure: as one compiled call where the library
        dispatches each operation separately (JAX), else a slice and a `take_rows` each.
        ``order`` must hold row indices in range for every array (a permutation of the rows,
        as `fit` draws): they are not checked (``in_range`` of `take_rows`)."""
        if self._take_batch is not None:
            return self._take_batch(arrays, order, start, stop)
        return _take_each(self, arrays, order[start:stop])

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` (a host NumPy array, a Python scalar/list or an array of this backend) on this
        backend's device, cast to ``dtype`` (a name or a dtype) when given. Without ``dtype``,
        NumPy arrays keep theirs (JAX without x64 holds int64 as int32), Python floats become
        ``float_dtype``."""
        dtype = None if dtype is None else self.dtype(dtype)
        if self._is_array(x):
            if self.device_of(x) != self.device:
                x = self.move(x)
            if dtype is not None and x.dtype != dtype:
                x = self.xp.astype(x, dtype)
            return x
        if (
            not isinstance(x, np.ndarray)
            and not np.isscalar(x)
            and not isinstance(x, (list, tuple))
        ):
            # an array of another library: go through the host, never silently through __array__
            x = to_numpy(x)
        host = np.asarray(x)
        if dtype is None and host.dtype == np.float64:
            # Python floats become the default float; a float64 NumPy array stays float64 (on
            # JAX that is the explicit request that turns 64-bit types on)
            dtype = self.dtype("float64") if isinstance(x, np.ndarray) else self.float_dtype
        host_dtype = None if dtype is None else np.dtype(self.dtype_name(dtype))
        host = np.asarray(host, dtype=host_dtype, order="C")  # ascontiguousarray makes 0-d 1-d
        return self._from_host(host)

    def _from_host(self, host: np.ndarray) -> Any:
        return self.xp.asarray(host, device=self.device)

    def move(self, x: Any) -> Any:
        """An array of this library moved onto this backend's device."""
        return self._from_host(self.to_host(x))

    def to_host(self, x: Any) -> np.ndarray:
        """A NumPy copy (or view) of ``x`` on the host. The only way ailib reads device data."""
        return self._to_host(x)

    def to_float(self, x: Any) -> float:
        """A 0-d array as a Python float (this waits for the device: call it rarely)."""
        return float(self.to_host(x))

    def synchronize(self, *arrays: Any) -> None:
        """Wait until this backend's device has finished the work queued so far (for timing).
        JAX, which has no global queue to wait on, waits for the given ``arrays`` instead."""
        self._synchronize(arrays)

    def random(self, seed: int | None = None) -> Random:
        """A seeded `Random`; the same seed gives the same draws on every backend (see there).
        Cheap: it builds a host generator only, nothing on the device."""
        return self._random_cls(self, seed)


def _take_each(backend: Backend, a: Any, index: Any) -> Any:
    """`Backend.take_rows` of every array in ``a`` (nested lists/tuples kept). Module-level: a
    recursive closure would be a reference cycle, held until the garbage collector runs."""
    if isinstance(a, (list, tuple)):
        return type(a)(_take_each(backend, item, index) for item in a)
    return backend.take_rows(a, index, in_range=True)


def _spec(name: str, device: Any) -> str:
    """``name:index`` for a device known by an integer ``id`` (CuPy's), else ``name``."""
    index = getattr(device, "id", None)
    return f"{name}:{index}" if isinstance(index, int) else name


def to_numpy(x: Any) -> np.ndarray:
    """Any supported array (NumPy, CuPy, PyTorch, JAX, array-api-strict) as a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        return x.get()
    if module == "torch":
        return x.detach().cpu().numpy()
    if module == "array_api_strict":
        import array_api_strict

        x = x.to_device(array_api_strict.Device("CPU_DEVICE"))
        try:
            return np.from_dlpack(x)
        except BufferError:  # array-api-strict < 2.4 cannot export a read-only view: copy it
            return np.from_dlpack(array_api_strict.asarray(x, copy=True))
    return np.asarray(x)
