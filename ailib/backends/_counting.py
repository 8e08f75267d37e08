"""A backend that counts array operations: the same library underneath, every call counted.

On a GPU each array operation is (at least) one kernel launch, and at small batches the launches,
not the arithmetic, set the time; on the CPU each is a Python call and, mostly, a temporary
array. `counting(backend)` returns an `OpCounter` whose ``backend`` computes exactly what
``backend`` computes, with its arrays wrapped in `Counted` proxies: every function of the
namespace and every operator on an array (``+``, ``@``, ``>``, ``x[i]``, ``x += y``, ...) is
counted before it is passed on. A model built on ``counter.backend`` runs unchanged.

What is counted, per call:
- ``ops``: calls that compute array data (a kernel on a GPU): arithmetic, reductions, products,
  gathers, copies, creation (``zeros``, ``arange``, ``asarray``) and in-place updates;
- ``views``: calls that only re-describe an array's memory on NumPy, CuPy and PyTorch
  (``reshape``, transposes, ``expand_dims``, basic slicing ``x[a:b]``): no kernel there (JAX
  may copy);
- ``reads``: values read back to the host (``float(x)``, ``bool(x)``, `Backend.to_host`): each
  waits for the device.
Dtype and capability queries (``isdtype``, ``finfo``, ``.shape``) cost nothing and are not
counted.

A fused operation (`ailib.backends._fused`: Dense's forward pass, ReLU's backward, the
optimizers' update, softmax cross-entropy from labels) counts as the kernels of the library named by ``kernels`` (the
backend's own by default) where that library has a form of its own, and as its array-API
composition, operation by operation, where it has not. ``kernels="cupy"`` on a CPU backend counts
what CuPy launches without a GPU: the values are the CPU's, the count CuPy's.

Each count is filed under a *part*: ``where()``, a function the caller gives, names the part of
the program running when the operation was made (ailib.opcount files operations by the ailib
function that made them: forward, loss, backward, update, ...); without one, every count goes
to "all". Counting costs a Python call per operation and is meant for counting, not for speed.
"""

from __future__ import annotations

import collections
import operator
from typing import Any, Callable

import array_api_compat
import numpy as np

from ._base import Backend

#: namespace functions that never touch array data
FREE = frozenset(
    {
        "isdtype",
        "finfo",
        "iinfo",
        "result_type",
        "can_cast",
        "__array_namespace_info__",
        "__array_api_version__",
    }
)
#: namespace functions that give a view of their input on NumPy, CuPy and PyTorch
VIEWS = frozenset(
    {"reshape", "matrix_transpose", "expand_dims", "squeeze", "permute_dims", "broadcast_to"}
)


class OpCounter:
    """The counts of one counting backend (see the module docstring).

    Attributes:
        backend: the counting `Backend`; build models and data on it.
        base: the backend underneath.
        ops, views, reads: ``collections.Counter`` of part -> count.
        names: ``collections.Counter`` of (part, operation name) -> count, for reports.
        where: ``() -> str``, the part to file the next operation under.
        kernels: the library whose forms of the fused operations are counted ("numpy",
            "torch", "cupy", ...; by default the backend's own).
    """

    def __init__(
        self,
        base: Backend,
        where: Callable[[], str] | None = None,
        flat_updates: bool | None = None,
        kernels: str | None = None,
    ) -> None:
        self.base = base
        self.kernels = kernels or base.name
        self.where = where or (lambda: "all")
        self.ops: collections.Counter[str] = collections.Counter()
        self.views: collections.Counter[str] = collections.Counter()
        self.reads: collections.Counter[str] = collections.Counter()
        self.names: collections.Counter[tuple[str, str]] = collections.Counter()
        self.xp = CountingNamespace(base.xp, self)
        self.backend = Backend(
            base.name,
            self.xp,
            base.device,
            to_host=self._to_host,
            is_array=lambda x: isinstance(x, Counted),
            synchronize=lambda arrays: base.synchronize(*unwrap(list(arrays))),
            mutable=base.mutable,
            flat_updates=base.flat_updates if flat_updates is None else flat_updates,
            random_cls=base._random_cls,
            library=base.library,
            context=base.context,
            index_dtype=base.index_dtype,
            wide_dtype_hook=lambda: base.dtype("float64"),  # JAX: turns 64-bit types on
            spec=base.spec,
        )

    def reset(self) -> None:
        for counter in (self.ops, self.views, self.reads, self.names):
            counter.clear()

    @property
    def total(self) -> int:
        """Array operations counted so far (views and reads not included)."""
        return sum(self.ops.values())

    def count(self, name: str, kind: str = "ops") -> None:
        part = self.where()
        getattr(self, kind)[part] += 1
        if kind == "ops":
            self.names[(part, name)] += 1

    def _to_host(self, x: Any) -> Any:
        self.count("to_host", "reads")
        return self.base.to_host(unwrap(x))

    def wrap(self, value: Any) -> Any:
        """Wrap every array of the underlying library in ``value`` (lists and tuples too)."""
        if isinstance(value, (list, tuple)):
            return type(value)(self.wrap(v) for v in value)
        if isinstance(value, np.generic):  # NumPy's reductions give scalars, not 0-d arrays
            value = np.asarray(value)
        if self.base._is_array(value):
            return Counted(value, self)
        return value


def fused_call(
    name: str,
    launches: dict[str, int],
    fused: Callable[..., Any],
    composed: Callable[..., Any],
    args: tuple[Any, ...],
) -> Any:
    """Run the fused operation ``name`` on counted arrays: where the counter's ``kernels``
    library has a form of its own (``launches[library]`` kernels), count that many operations
    and compute with ``fused`` on the underlying arrays; elsewhere run ``composed`` on the
    counted arrays, which counts each of its operations."""
    counter = next(a._c for a in args if isinstance(a, Counted))
    n = launches.get(counter.kernels)
    if n is None:
        return composed(*args)
    for _ in range(n):
        counter.count(name)
    return counter.wrap(fused(*unwrap(args)))


def unwrap(value: Any) -> Any:
    """The underlying arrays of ``value`` (a `Counted`, or lists/tuples/dicts of them)."""
    if isinstance(value, Counted):
        return value._a
    if isinstance(value, (list, tuple)):
        return type(value)(unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


class CountingNamespace:
    """The array-API namespace ``xp`` with every function counted (see `FREE`, `VIEWS`)."""

    def __init__(self, xp: Any, counter: OpCounter) -> None:
        self._xp, self._counter = xp, counter
        self.__name__ = f"counting {getattr(xp, '__name__', 'xp')}"

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._xp, name)
        if name in ("linalg", "fft"):
            value = CountingNamespace(value, self._counter)
        if name in FREE or isinstance(value, (type, CountingNamespace)) or not callable(value):
            setattr(self, name, value)  # dtypes, constants, submodules
            return value
        counter, kind = self._counter, "views" if name in VIEWS else "ops"

        def call(*args: Any, **kwargs: Any) -> Any:
            counter.count(name, kind)
            return counter.wrap(value(*unwrap(args), **unwrap(kwargs)))

        call.__name__ = name
        setattr(self, name, call)
        return call


def _is_basic(key: Any) -> bool:
    """Whether ``x[key]`` is basic indexing (ints, slices, ellipsis, None): a view."""
    keys = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, (int, slice)) for k in keys)


def _binary(name: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def method(self: Counted, other: Any) -> Any:
        if not isinstance(other, (Counted, int, float, bool, complex)):
            return NotImplemented
        self._c.count(name)
        return Counted(fn(self._a, unwrap(other)), self._c)

    method.__name__ = f"__{name}__"
    return method


def _reflected(name: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def method(self: Counted, other: Any) -> Any:
        if not isinstance(other, (Counted, int, float, bool, complex)):
            return NotImplemented
        self._c.count(name)
        return Counted(fn(unwrap(other), self._a), self._c)

    method.__name__ = f"__r{name}__"
    return method


def _inplace(name: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    dunder = f"__i{name}__"

    def method(self: Counted, other: Any) -> Any:
        self._c.count(f"i{name}")
        inplace = getattr(type(self._a), dunder, None)
        if inplace is None:  # immutable arrays (JAX): a new array, as Python's fallback gives
            return Counted(fn(self._a, unwrap(other)), self._c)
        result = inplace(self._a, unwrap(other))
        if result is NotImplemented:
            return Counted(fn(self._a, unwrap(other)), self._c)
        self._a = result
        return self

    method.__name__ = dunder
    return method


class Counted:
    """An array of the underlying library, wrapped so that every operator is counted. It takes
    part in the array API through ``__array_namespace__`` (the counting namespace) and
    ``device``; it has no ``__array__``, so it never turns into a NumPy array silently."""

    __slots__ = ("_a", "_c")

    def __init__(self, array: Any, counter: OpCounter) -> None:
        self._a, self._c = array, counter

    def __array_namespace__(self, api_version: str | None = None) -> Any:
        return self._c.xp

    def __repr__(self) -> str:
        return f"Counted({self._a!r})"

    # metadata: free
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._a.shape)

    @property
    def dtype(self) -> Any:
        return self._a.dtype

    @property
    def ndim(self) -> int:
        return self._a.ndim

    @property
    def size(self) -> int | None:
        return array_api_compat.size(self._a)

    @property
    def device(self) -> Any:
        return array_api_compat.device(self._a)

    # views
    @property
    def T(self) -> Counted:
        self._c.count("T", "views")
        return Counted(self._a.T, self._c)

    @property
    def mT(self) -> Counted:
        self._c.count("mT", "views")
        return Counted(self._c.base.xp.matrix_transpose(self._a), self._c)

    def to_device(self, device: Any, /, **kwargs: Any) -> Counted:
        self._c.count("to_device")
        return Counted(self._a.to_device(device, **kwargs), self._c)

    def __getitem__(self, key: Any) -> Counted:
        basic = _is_basic(key)
        self._c.count("getitem", "views" if basic else "ops")
        return Counted(self._a[unwrap(key)], self._c)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._c.count("setitem")
        self._a[unwrap(key)] = unwrap(value)

    # reads back to the host
    def _read(self, cast: Callable[[Any], Any]) -> Any:
        self._c.count("read", "reads")
        return cast(self._a)

    def __float__(self) -> float:
        return self._read(float)

    def __int__(self) -> int:
        return self._read(int)

    def __bool__(self) -> bool:
        return self._read(bool)

    def __index__(self) -> int:
        return self._read(operator.index)

    def __len__(self) -> int:
        return len(self._a)

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        self._c.count("dlpack", "reads")
        return self._a.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self) -> Any:
        return self._a.__dlpack_device__()

    # unary operators
    def __neg__(self) -> Counted:
        self._c.count("neg")
        return Counted(-self._a, self._c)

    def __pos__(self) -> Counted:
        self._c.count("pos")
        return Counted(+self._a, self._c)

    def __abs__(self) -> Counted:
        self._c.count("abs")
        return Counted(abs(self._a), self._c)

    def __invert__(self) -> Counted:
        self._c.count("invert")
        return Counted(~self._a, self._c)

    __hash__ = None  # type: ignore[assignment]


_ARITHMETIC = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "matmul": operator.matmul,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
    "lshift": operator.lshift,
    "rshift": operator.rshift,
}
_COMPARISONS = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "ne": operator.ne,
}
for _name, _fn in _ARITHMETIC.items():
    setattr(Counted, f"__{_name}__", _binary(_name, _fn))
    setattr(Counted, f"__r{_name}__", _reflected(_name, _fn))
    setattr(Counted, f"__i{_name}__", _inplace(_name, _fn))
for _name, _fn in _COMPARISONS.items():
    setattr(Counted, f"__{_name}__", _binary(_name, _fn))


def counting(
    backend: Backend,
    where: Callable[[], str] | None = None,
    flat_updates: bool | None = None,
    kernels: str | None = None,
) -> OpCounter:
    """An `OpCounter` around ``backend``: build on ``counter.backend``, read ``counter.ops``.
    ``flat_updates`` overrides the backend's `Backend.flat_updates` (True: count what a GPU
    backend runs, on the CPU); ``kernels`` names the library whose fused operations are counted
    (default: the backend's own; "cupy" counts CuPy's kernels, on the CPU)."""
    return OpCounter(backend, where, flat_updates, kernels)


__all__ = ["Counted", "CountingNamespace", "OpCounter", "counting", "fused_call", "unwrap"]
