"""Compiled steps for NumPy: trace the step once, replay it as straight-line NumPy calls.

NumPy has no compiler, but a training step of ailib is the same sequence of NumPy calls every
time for a given batch shape: only the arrays change. `ReplayStep` (the NumPy backend's
``Backend.compiler``, used by `ailib.compiling`) records that sequence once and turns it into a
generated Python function of the step's inputs:

    s12 = matmul(s3, s7, out=b12)
    s13 = add(s12, s4, out=(s12,))
    ...

What this removes is everything between the NumPy calls: the layers' and optimizer's Python,
array-api-compat's wrappers, the checks. What it adds: the fresh arrays of intermediate results
(activations, dE/dY, temporaries such as lr·g) are written into buffers kept from one step to
the next (``out=``), so a step allocates only the arrays it returns (new parameters where not
updated in place, gradients, E, Y). The NumPy calls themselves are the uncompiled step's, with
the same arguments in the same order, so the results are the same to the bit.

How the sequence is recorded: the inputs (parameters, state, learning rate, batch) are wrapped
in `Traced`, an ndarray subclass that sees every ufunc (``__array_ufunc__``: arithmetic,
``matmul``, in-place operators, reductions), every NumPy function (``__array_function__``) and
the array methods that make views or copies, runs each on the real data and records it. The
traced run is the real step (its results are returned).

What cannot be replayed is refused, and the step then runs uncompiled from then on:
- a value read back to Python inside the step (``float(x)``, ``bool(x)``, ``int(x)``: the
  step's control flow would depend on the data),
- a write into an array made outside the step's recorded arrays, or an array of the subclass
  that no recorded call produced,
- and, as a final check, a replay that does not equal the uncompiled step to the bit: the second
  call of each shape runs both (the replay on copies of the parameters and state, and on the
  batch itself) and compares every output. This catches what a trace cannot see: a step's
  array copied out by NumPy without a call that dispatches (``np.array(x)``), or passed where
  NumPy does not look for overrides (the ``indices`` of ``np.take(constant, indices)``): its
  value in the traced run would be a constant of the replay.

Constants of the replay: shapes, dtypes, the layer structure, hyperparameters other than the
learning rate (as for ``jax.jit``). The learning rate and integer state (step counts) are
inputs: 0-d arrays of the parameters' dtype and of int64.
"""

from __future__ import annotations

import operator
import threading
import warnings
from typing import Any, Callable

import numpy as np

from . import _blas

__all__ = ["ReplayStep", "Traced", "TraceError", "call_recorded", "trace"]


class TraceError(RuntimeError):
    """The step does something a replay cannot repeat (see the module docstring)."""


_local = threading.local()  # .trace: the _Trace being recorded in this thread, if any


def _active() -> _Trace | None:
    return getattr(_local, "trace", None)


class _Ref:
    """A reference to slot ``slot`` of a trace (an array the step makes or receives)."""

    __slots__ = ("slot",)

    def __init__(self, slot: int) -> None:
        self.slot = slot


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T


def _matrix_transpose(a: np.ndarray) -> np.ndarray:
    return a.mT


#: NumPy functions that only look at shapes and dtypes: not recorded, their results are constants
_METADATA = {np.shape, np.ndim, np.size, np.result_type, np.can_cast, np.min_scalar_type}
for _name in ("iscomplexobj", "isrealobj"):
    if hasattr(np, _name):
        _METADATA.add(getattr(np, _name))

#: NumPy functions whose fresh result may be written into a kept buffer (they take ``out=``)
_TAKES_OUT = {
    getattr(np, name)
    for name in (
        "sum",
        "prod",
        "mean",
        "max",
        "min",
        "amax",
        "amin",
        "argmax",
        "argmin",
        "take",
        "concatenate",
        "concat",
        "dot",
        "clip",
        "cumsum",
    )
    if hasattr(np, name)
}

#: ufuncs whose NumPy loop with one scalar operand is much slower than with two arrays
_SCALAR_SLOW = {np.maximum, np.minimum, np.fmax, np.fmin}

#: ufunc methods whose fresh result may be written into a kept buffer
_UFUNC_OUT = {"__call__", "reduce", "accumulate"}


class Traced(np.ndarray):
    """An ndarray whose NumPy calls are recorded while a trace is active (else it computes as
    a plain ndarray). Reading a value back to Python raises `TraceError`."""

    _slot: int | None = None

    def __array_finalize__(self, obj: Any) -> None:
        self._slot = None  # made by NumPy itself, not by a recorded call (checked when used)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return _call(getattr(ufunc, method), inputs, kwargs, ufunc_method=method)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        if func in _METADATA:
            return func(*_plain(args), **_plain(kwargs))
        return _call(func, args, kwargs, out_ok=func in _TAKES_OUT)

    def __getitem__(self, key: Any) -> Any:
        return _call(operator.getitem, (self, key), {})

    def __setitem__(self, key: Any, value: Any) -> None:
        _call(operator.setitem, (self, key, value), {}, writes=self)

    @property
    def T(self) -> Any:  # noqa: N802 (ndarray's name)
        return _call(_transpose, (self,), {})

    @property
    def mT(self) -> Any:  # noqa: N802 (ndarray's name)
        return _call(_matrix_transpose, (self,), {})

    def reshape(self, *args: Any, **kwargs: Any) -> Any:
        return _call(np.ndarray.reshape, (self, *args), kwargs)

    def astype(self, *args: Any, **kwargs: Any) -> Any:
        return _call(np.ndarray.astype, (self, *args), kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        return _call(np.ndarray.copy, (self, *args), kwargs)

    def transpose(self, *args: Any) -> Any:
        return _call(np.ndarray.transpose, (self, *args), {})

    def swapaxes(self, *args: Any) -> Any:
        return _call(np.ndarray.swapaxes, (self, *args), {})

    def ravel(self, *args: Any) -> Any:
        return _call(np.ndarray.ravel, (self, *args), {})

    def flatten(self, *args: Any) -> Any:
        return _call(np.ndarray.flatten, (self, *args), {})

    def squeeze(self, *args: Any, **kwargs: Any) -> Any:
        return _call(np.ndarray.squeeze, (self, *args), kwargs)

    def fill(self, value: Any) -> None:
        _call(np.ndarray.fill, (self, value), {}, writes=self)

    # -- reading a value back: the replay could not repeat what follows from it ---------------
    def _read(self, what: str) -> Any:
        if _active() is not None:
            raise TraceError(f"the step reads a value back to Python ({what}) while traced")
        return getattr(np.ndarray.view(self, np.ndarray), what)

    def __float__(self) -> float:
        return float(self._read("__float__")())

    def __int__(self) -> int:
        return int(self._read("__int__")())

    def __index__(self) -> int:
        return int(self._read("__index__")())

    def __bool__(self) -> bool:
        return bool(self._read("__bool__")())

    def __complex__(self) -> complex:
        return complex(self._read("__complex__")())

    def item(self, *args: Any) -> Any:
        return self._read("item")(*args)

    def tolist(self) -> Any:
        return self._read("tolist")()


def _plain(obj: Any) -> Any:
    """``obj`` with every `Traced` in it seen as a plain ndarray (same memory)."""
    if isinstance(obj, Traced):
        return np.ndarray.view(obj, np.ndarray)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _call(
    fn: Callable[..., Any],
    args: Any,
    kwargs: dict[str, Any],
    *,
    ufunc_method: str | None = None,
    out_ok: bool = False,
    writes: Any = None,
) -> Any:
    trace = _active()
    if trace is None:  # a Traced array kept somewhere, used after its trace: plain NumPy
        return fn(*_plain(args), **_plain(kwargs))
    out_ok = out_ok or ufunc_method in _UFUNC_OUT
    if ufunc_method is not None and ufunc_method not in _UFUNC_OUT:
        writes = args[0]  # ufunc.at(a, ...) updates a in place
    return trace.record(fn, args, kwargs, out_ok=out_ok and "where" not in kwargs, writes=writes)


def call_recorded(fn: Callable[..., Any], args: tuple[Any, ...], writes: Any) -> Any:
    """``fn(*args)``, a function of NumPy arrays that writes into ``writes`` (one of them),
    recorded as one operation of the step while a trace is active: for work done outside
    NumPy's dispatch (a BLAS call through ctypes), which the trace would not see otherwise."""
    if _active() is None and not any(isinstance(a, Traced) for a in args):
        return fn(*args)  # no trace, plain arrays: nothing to record or unwrap
    return _call(fn, args, {}, writes=writes)


class _Trace:
    """The calls of one traced step: slots (arrays made or received) and the ops on them."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray | Any] = []  # slot -> its value in the traced run
        self.owner: list[int | None] = []  # slot -> the slot whose memory it is (None: constant)
        self.producer: list[int | None] = []  # slot -> index of the op that made it
        self.keep: list[Any] = []  # every object whose id is in `by_id`, kept alive
        self.by_id: dict[int, int] = {}  # id(Traced or plain array) -> slot
        self.ops: list[dict[str, Any]] = []
        self.inputs: list[int] = []

    # -- slots ---------------------------------------------------------------------------------
    def _new_slot(self, value: Any, owner: int | None, producer: int | None) -> int:
        slot = len(self.arrays)
        self.arrays.append(value)
        self.owner.append(slot if owner == -1 else owner)
        self.producer.append(producer)
        return slot

    def _track(self, obj: Any, slot: int) -> None:
        self.keep.append(obj)
        self.by_id[id(obj)] = slot

    def wrap_input(self, value: Any) -> Traced:
        array = np.asarray(value)
        slot = self._new_slot(array, -1, None)
        self.inputs.append(slot)
        traced = array.view(Traced)
        traced._slot = slot
        self._track(traced, slot)
        self._track(array, slot)
        base = array.base  # an input that is a view (a slice of the data set): its owner too,
        while isinstance(base, np.ndarray):  # for views of it that NumPy hangs on the owner
            if id(base) not in self.by_id:
                self._track(base, slot)
            base = base.base
        return traced

    def _owner_of_view(self, array: np.ndarray) -> int | None:
        """The slot owning the memory ``array`` views (through its ``.base`` chain), or None."""
        base = array.base
        while base is not None:
            slot = self.by_id.get(id(base))
            if slot is not None:
                return self.owner[slot]
            base = getattr(base, "base", None)
        return None

    def _spec(self, obj: Any) -> Any:
        """``obj`` (an argument) with every array the step made or received as a `_Ref`."""
        if isinstance(obj, Traced):
            if obj._slot is None:
                raise TraceError("an array of the step that no recorded call made")
            return _Ref(obj._slot)
        if isinstance(obj, np.ndarray):
            slot = self.by_id.get(id(obj))
            if slot is not None:
                return _Ref(slot)
            owner = self._owner_of_view(obj)
            if owner is not None:
                whole = self.arrays[owner]
                if (
                    obj.shape == whole.shape
                    and obj.strides == whole.strides
                    and obj.dtype == whole.dtype
                    and obj.__array_interface__["data"][0] == whole.__array_interface__["data"][0]
                ):
                    return _Ref(owner)  # e.g. np.asarray(traced): the same array, untyped
                raise TraceError("a view of a step's array made outside the recorded calls")
            return obj  # a constant (made before the step, or from constants only)
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._spec(v) for v in obj)
        if isinstance(obj, dict):
            return {k: self._spec(v) for k, v in obj.items()}
        return obj

    def _wrap(self, value: Any, op: int, args: list[Any], plain_args: list[Any]) -> Any:
        """Give every array (or number) in a call's result a slot; returns it as `Traced`."""
        if isinstance(value, (list, tuple)):
            return type(value)(self._wrap(v, op, args, plain_args) for v in value)
        if isinstance(value, np.ndarray):
            for original, plain in zip(args, plain_args):
                if value is plain:  # a call that returns its argument (astype(copy=False))
                    return original
            owner = -1 if value.base is None else self._owner_of_view(value)
        elif isinstance(value, (np.generic, int, float, complex, bool)):
            if not isinstance(value, np.generic):  # a Python number (np.count_nonzero): the
                self.ops[op]["number"] = True  # replay makes it a 0-d array, as here
            value, owner = np.asarray(value), -1
        else:
            return value  # not data (a dtype, None)
        slot = self._new_slot(value, owner, op)
        traced = value.view(Traced)
        traced._slot = slot
        self._track(traced, slot)
        self._track(value, slot)
        return traced

    # -- calls ---------------------------------------------------------------------------------
    def record(
        self,
        fn: Callable[..., Any],
        args: Any,
        kwargs: dict[str, Any],
        *,
        out_ok: bool,
        writes: Any,
    ) -> Any:
        spec_args, spec_kwargs = self._spec(list(args)), self._spec(kwargs)
        out = kwargs.get("out")
        targets = [writes] if writes is not None else []
        if out is not None:
            targets += list(out) if isinstance(out, tuple) else [out]
        for target in targets:
            ref = self._spec(target)
            if not isinstance(ref, _Ref):
                raise TraceError("the step writes into an array made outside it")
        plain_args = _plain(list(args))
        result = fn(*plain_args, **_plain(kwargs))
        index = len(self.ops)
        op = {"fn": fn, "args": spec_args, "kwargs": spec_kwargs, "out": None, "buffer": False}
        self.ops.append(op)
        if targets:  # in place: the result is the target itself
            if out is None:
                return None
            return out if isinstance(out, tuple) and len(out) > 1 else targets[-1]
        wrapped = self._wrap(result, index, list(args), plain_args)
        op["out"] = self._spec(wrapped)
        op["buffer"] = (
            out_ok
            and isinstance(op["out"], _Ref)
            and isinstance(result, np.ndarray)
            and self.owner[op["out"].slot] == op["out"].slot
            and self.producer[op["out"].slot] == index
        )
        return wrapped


def _wrap_inputs(rec: Any, v: Any) -> Any:
    """``v`` (an array, or lists/tuples of them) as the trace's inputs. (Module-level: a
    recursive closure would be a reference cycle holding the whole trace, its arrays and the
    parameters' copies until the garbage collector runs.)"""
    if isinstance(v, (list, tuple)):
        return type(v)(_wrap_inputs(rec, u) for u in v)
    return rec.wrap_input(v)


def trace(fn: Callable[..., Any], values: list[Any], lr: Any, x: Any, y: Any) -> tuple[Any, Any]:
    """Run ``fn(values, lr, x, y)`` once on `Traced` inputs; returns (its result with plain
    arrays, the `_Trace`). Raises `TraceError` for a step that cannot be replayed."""
    rec = _Trace()
    args = tuple(_wrap_inputs(rec, v) for v in (values, lr, x, y))
    _local.trace = rec
    try:
        result = fn(*args)
    finally:
        _local.trace = None
    rec.result = rec._spec(result)
    return result, rec


def _mean(a: np.ndarray, axis: Any, count: int, out: np.ndarray | None = None) -> Any:
    """``np.mean(a, axis, out=out)`` for a float32/float64 ``a`` of a known size: NumPy's own
    arithmetic (a sum, then a true division by the count), without its Python wrapper; into
    ``out`` when a kept buffer is given (`_Codegen._buffers`)."""
    return np.true_divide(np.add.reduce(a, axis=axis, out=out), count, out=out)


def _along_axis_index(shape: tuple[int, ...], axis: int, indices: Any) -> tuple[Any, ...]:
    """The fancy index ``np.take_along_axis(a, indices, axis)`` builds for ``a`` of ``shape``:
    an ``arange`` grid for every other axis, ``indices`` on ``axis``."""
    grids: list[Any] = []
    for i, n in enumerate(shape):
        if i == axis:
            grids.append(indices)
        else:
            grid_shape = [1] * len(shape)
            grid_shape[i] = n
            grids.append(np.arange(n).reshape(grid_shape))
    return tuple(grids)


def _lower(op: dict[str, Any], rec: _Trace) -> tuple[Any, list[Any], dict[str, Any]]:
    """The op as a call without NumPy's Python-level wrapper where one computes exactly the
    same: methods and ufunc reductions instead of ``np.sum``/``np.max``/``np.argmax``/
    ``np.take``/``np.swapaxes``, a reshape for ``np.expand_dims``, the fancy index that
    ``np.take_along_axis`` builds, made once."""
    fn, args, kwargs = op["fn"], list(op["args"]), dict(op["kwargs"])

    def value(spec: Any) -> Any:
        return rec.arrays[spec.slot] if isinstance(spec, _Ref) else spec

    first = value(args[0]) if args else None
    floating = isinstance(first, np.ndarray) and first.dtype in (np.float32, np.float64)
    out = op["out"]
    result = rec.arrays[out.slot] if isinstance(out, _Ref) else None
    simple = set(kwargs) <= {"axis", "keepdims", "out"}
    owner = getattr(fn, "__self__", None)
    if (
        owner in _SCALAR_SLOW
        and fn.__name__ == "__call__"
        and len(args) == 2
        and set(kwargs) <= {"out"}
        and isinstance(result, np.ndarray)
    ):
        # a constant scalar operand: NumPy's loop for (array, scalar) is not vectorised for
        # these ufuncs; the scalar as a constant array of the result's shape and dtype (what
        # the loop casts it to) computes the same, several times faster
        for i, j in ((0, 1), (1, 0)):
            other, constant = value(args[i]), args[j]
            if (
                isinstance(args[i], _Ref)
                and not isinstance(constant, _Ref)
                and np.ndim(constant) == 0
                and isinstance(other, np.ndarray)
                and other.shape == result.shape
                and other.dtype == result.dtype
            ):
                args[j] = np.full(result.shape, constant, dtype=result.dtype)
                return fn, args, kwargs
    if fn is _blas.subtract_scaled and not kwargs:
        return _blas.UpdateSite(), args, kwargs  # one per place: its arrays' checks made once
    if fn is np.swapaxes and not kwargs:
        return np.ndarray.swapaxes, args, kwargs
    if fn in (np.argmax, np.argmin) and len(args) == 1 and simple:
        return getattr(np.ndarray, fn.__name__), args, kwargs
    if fn is np.take and len(args) == 2 and set(kwargs) <= {"axis", "out"}:
        return np.ndarray.take, args, kwargs
    if fn in (np.sum, np.max, np.amax, np.min, np.amin) and floating and len(args) == 1 and simple:
        ufunc = np.add if fn is np.sum else np.maximum if fn in (np.max, np.amax) else np.minimum
        return ufunc.reduce, args, {"axis": kwargs.pop("axis", None), **kwargs}
    if fn is np.mean and floating and len(args) == 1 and set(kwargs) <= {"axis"}:
        axis = kwargs.get("axis")
        axes = range(first.ndim) if axis is None else axis if isinstance(axis, tuple) else (axis,)
        count = int(np.prod([first.shape[a] for a in axes]))
        return _mean, [args[0], axis, count], {}
    if fn is np.expand_dims and isinstance(result, np.ndarray) and len(args) + len(kwargs) == 2:
        return np.ndarray.reshape, [args[0], result.shape], {}
    if fn is np.take_along_axis and isinstance(first, np.ndarray):
        axis = kwargs.get("axis", args[2] if len(args) > 2 else None)
        if isinstance(axis, int) and len(args) >= 2 and set(kwargs) <= {"axis"}:
            axis = axis % first.ndim
            return operator.getitem, [args[0], _along_axis_index(first.shape, axis, args[1])], {}
    return fn, args, kwargs


class _Codegen:
    """The straight-line function of a `_Trace` (see the module docstring)."""

    def __init__(self, rec: Any, lower: Callable[..., Any] | None = None) -> None:
        self.rec = rec
        self.lower = _lower if lower is None else lower
        self.names: dict[str, Any] = {}
        self.lines: list[str] = []

    def constant(self, value: Any, stem: str = "c") -> str:
        name = f"{stem}{len(self.names)}"
        self.names[name] = value
        return name

    def expr(self, spec: Any) -> str:
        if isinstance(spec, _Ref):
            return f"s{spec.slot}"
        if isinstance(spec, list):
            return "[" + ", ".join(self.expr(v) for v in spec) + "]"
        if isinstance(spec, tuple):
            return "(" + "".join(self.expr(v) + ", " for v in spec) + ")"
        if isinstance(spec, dict):
            return "{" + ", ".join(f"{k!r}: {self.expr(v)}" for k, v in spec.items()) + "}"
        if spec is None or type(spec) in (bool, int):
            return repr(spec)
        return self.constant(spec)

    def build(self, escaping: set[int]) -> tuple[Callable[..., Any], str]:
        rec = self.rec
        self.lines.append("def replay(inputs):")
        self.lines.append("    " + ", ".join(f"s{s}" for s in rec.inputs) + ", = inputs")
        lowered_ops = [self.lower(op, rec) for op in rec.ops]
        buffers = self._buffers(escaping, lowered_ops)
        for index, (op, (lowered, op_args, op_kwargs)) in enumerate(zip(rec.ops, lowered_ops)):
            fn = self.constant(lowered, _name(op["fn"]) + "_")
            args = ", ".join(self.expr(a) for a in op_args)
            kwargs = [f"{k}={self.expr(v)}" for k, v in op_kwargs.items()]
            target = op["out"]
            if index in buffers:
                kwargs.append(f"out={buffers[index]}")
            call = f"{fn}({', '.join([args] * bool(args) + kwargs)})"
            if op.get("number"):
                call = f"{self.constant(np.asarray, 'asarray_')}({call})"
            lhs = _target(target)
            self.lines.append(f"    {lhs} = {call}" if _slots(target) else f"    {call}")
        self.lines.append(f"    return {self.expr(rec.result)}")
        source = "\n".join(self.lines) + "\n"
        scope = dict(self.names)
        exec(compile(source, "<ailib replayed step>", "exec"), scope)  # noqa: S102 (our own code)
        return scope["replay"], source

    def _buffers(self, escaping: set[int], lowered_ops: list[Any]) -> dict[int, str]:
        """The buffer (a kept array's name) each buffered op writes into: one whose memory no
        later op reads (nor the result) where one of the same shape, dtype and strides is
        free, else a new one. An elementwise ufunc may write into a buffer it reads itself (the
        exact alias NumPy computes in place), as the reference's ``np.maximum(z, 0, out=z)``:
        fewer buffers, less memory for the caches to hold. (The replay check compares the
        result with the uncompiled step's to the bit.)"""
        rec = self.rec
        if not any(op["buffer"] for op in rec.ops):
            return {}  # nothing kept (the PyTorch replay: its library allocates)
        end = len(rec.ops)
        last: dict[int, int] = {}  # owner slot -> index of the last op that reads or writes it
        for index, op in enumerate(rec.ops):
            for slot in _slots(op["args"]) + _slots(op["kwargs"]):
                owner = rec.owner[slot]
                if owner is not None:
                    last[owner] = index
        for slot in _slots(rec.result):
            owner = rec.owner[slot]
            if owner is not None:
                last[owner] = end  # returned: alive after the step
        pool: list[tuple[str, np.ndarray]] = []
        holds: dict[str, int] = {}  # buffer name -> the owner slot whose memory it is now
        chosen: dict[int, str] = {}
        for index, (op, (fn, _, _)) in enumerate(zip(rec.ops, lowered_ops)):
            target = op["out"]
            if not op["buffer"] or target.slot in escaping:
                continue
            value = rec.arrays[target.slot]
            ufunc = getattr(fn, "__self__", None)
            elementwise = (
                isinstance(ufunc, np.ufunc)
                and getattr(fn, "__name__", "") == "__call__"
                and ufunc.signature is None
            )
            name = None
            for candidate, array in pool:
                if (
                    array.shape == value.shape
                    and array.dtype == value.dtype
                    and array.strides == value.strides
                ):
                    dead_at = last.get(holds[candidate], end)
                    if dead_at < index or (dead_at == index and elementwise):
                        name = candidate
                        break
            if name is None:
                array = np.empty_like(value)
                name = self.constant(array, "b")
                pool.append((name, array))
            holds[name] = target.slot
            chosen[index] = name
        return chosen


def _name(fn: Any) -> str:
    """A readable stem for a called function in the generated source: ``matmul``, ``add``."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, np.ufunc):  # a ufunc's method: add, add_reduce
        name = owner.__name__ + ("" if fn.__name__ == "__call__" else "_" + fn.__name__)
    else:
        name = getattr(fn, "__name__", "") or type(fn).__name__
    return "".join(c if c.isalnum() else "_" for c in name).strip("_") or "f"


def _target(spec: Any) -> str:
    """The left-hand side that receives a call's result: its slots, ``_`` for the rest."""
    if isinstance(spec, _Ref):
        return f"s{spec.slot}"
    if isinstance(spec, (list, tuple)):
        return "(" + "".join(_target(v) + ", " for v in spec) + ")"
    return "_"


def _slots(spec: Any) -> list[int]:
    if isinstance(spec, _Ref):
        return [spec.slot]
    if isinstance(spec, (list, tuple)):
        return [s for v in spec for s in _slots(v)]
    if isinstance(spec, dict):
        return [s for v in spec.values() for s in _slots(v)]
    return []


def _flatten(obj: Any) -> list[Any]:
    if isinstance(obj, (list, tuple)):
        return [leaf for v in obj for leaf in _flatten(v)]
    return [obj]


def _leaves(values: list[Any], lr: Any, x: Any, y: Any) -> list[Any]:
    """The step's inputs in trace order (`values` is flat; ``x`` and ``y`` may be lists)."""
    leaves = [*values, lr]
    for xy in (x, y):
        if isinstance(xy, np.ndarray):
            leaves.append(xy)
        else:
            leaves += _flatten(xy)
    return leaves


def _signature(leaves: list[Any]) -> Any:
    """The shapes and dtypes of the step's inputs (what a replay is made for)."""
    try:
        return tuple([(v.shape, v.dtype) for v in leaves])  # ndarrays (every step of `fit`)
    except AttributeError:
        return tuple(
            (v.shape, v.dtype) if isinstance(v, np.ndarray) else type(v).__name__ for v in leaves
        )


def _same(a: Any, b: Any) -> bool:
    """Equal to the bit (NaN equal to NaN), in the same nested structure."""
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (
            isinstance(a, (list, tuple))
            and isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(_same(u, v) for u, v in zip(a, b))
        )
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


class _Replays:
    """What a replaying compiler keeps: its step ``fn``, one generated function per input
    signature (``replays``) and whether a check turned it off (``broken``)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.replays: dict[Any, dict[str, Any]] = {}
        self.broken = False

    def source(self, signature: Any = None) -> str:
        """The generated function of one signature (default: the first traced)."""
        if not self.replays:
            return ""
        entry = (
            self.replays[signature] if signature is not None else next(iter(self.replays.values()))
        )
        return str(entry["source"])


class ReplayStep(_Replays):
    """A pure training step ``fn(values, lr, x, y)`` (`ailib.compiling`) replayed as one
    generated function of NumPy calls per input signature (see the module docstring).

    Per signature: the first call traces ``fn`` (that run is the step); the second runs the
    uncompiled step and, on copies of the parameters and state, the replay, and compares them
    to the bit (a difference turns replays off for this step, with a warning); later calls
    replay.
    ``source(signature)`` shows a generated function.
    """

    def _inputs(self, values: list[Any], lr: Any, x: Any, y: Any) -> tuple[Any, ...]:
        """The inputs as the trace and replay see them: Python numbers as 0-d arrays (step
        counts int64, the learning rate in the parameters' dtype)."""
        dtype = self.lr_dtype
        if dtype is None:
            dtype = next(
                (v.dtype for v in values if isinstance(v, np.ndarray) and v.dtype.kind == "f"),
                np.dtype(np.float32),
            )
        values = [np.asarray(v, dtype=np.int64) if isinstance(v, int) else v for v in values]
        return values, np.asarray(lr, dtype=dtype), x, y

    lr_dtype: Any = None

    def __call__(self, values: list[Any], lr: Any, x: Any, y: Any) -> Any:
        if self.broken:
            return self.fn(values, lr, x, y)
        inputs = self._inputs(values, lr, x, y)
        leaves = _leaves(*inputs)
        key = _signature(leaves)
        entry = self.replays.get(key)
        if entry is None:
            # traced on copies: a trace refused halfway must leave the model as it was (the
            # step then runs uncompiled); once it succeeds the originals take the results
            originals = inputs[0]
            # (copies keep each array's memory layout: a result that depends on it, such as a
            # reduction's order or `subtract_scaled`'s path, is then the uncompiled step's)
            copies = _copies(originals, _copy_keeping_layout)
            result, rec = trace(self.fn, copies, *inputs[1:])
            for original, copy in zip(originals, copies):
                if isinstance(original, np.ndarray):
                    np.copyto(original, copy)
            swap = {id(c): o for o, c in zip(originals, copies)}
            result = _restore(result, rec, swap)
            self.lr_dtype = inputs[1].dtype
            # what the caller keeps gets fresh arrays each step; the gradients (``result[1]``)
            # are the step's own, valid until the next step, so they may live in buffers
            kept = [v for i, v in enumerate(rec.result) if i != 1]
            escaping = {rec.owner[s] for s in _slots(kept)} | set(rec.inputs)
            replay, source = _Codegen(rec).build({s for s in escaping if s is not None})
            self.replays[key] = {"replay": replay, "source": source, "checked": False}
            return result
        if not entry["checked"]:
            entry["checked"] = True
            # the values on copies (the step updates them in place); the batch as it is
            # (read only: a copy's other alignment may change a product's last bits)
            held = len(inputs[0])
            copies = _copies(leaves[:held], _copy_keeping_layout) + leaves[held:]
            replayed = entry["replay"](copies)
            result = self.fn(*inputs)
            if not _same(replayed, result):
                self.broken = True
                warnings.warn(
                    "ailib: the replayed NumPy step differs from the uncompiled step; the step "
                    "runs uncompiled from now on",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return result
        return entry["replay"](leaves)


def _copy_keeping_layout(v: Any) -> Any:
    return v.copy(order="K") if isinstance(v, np.ndarray) else None


def _copies(values: list[Any], copy: Callable[[Any], Any]) -> list[Any]:
    """``values`` with each array replaced by ``copy(array)`` (None for what is no array,
    kept as it is), one copy per array: an array given in two places (two layers given the
    same weights) is one copy in both, so that the traced and checked runs update it twice, in
    place, as the uncompiled step does."""
    made: dict[int, Any] = {}
    out = []
    for v in values:
        if id(v) not in made:
            made[id(v)] = copy(v)
        out.append(v if made[id(v)] is None else made[id(v)])
    return out


def _restore(result: Any, rec: _Trace, swap: dict[int, Any]) -> Any:
    """The traced run's result with plain ndarrays: an input returned (updated in place) as
    the array ``swap`` maps its traced copy to, every other array as a plain view."""
    return _plain_result(result, rec, set(rec.inputs), swap)


def _plain_result(v: Any, rec: _Trace, inputs: set[int], swap: dict[int, Any]) -> Any:
    if isinstance(v, (list, tuple)):
        return type(v)(_plain_result(u, rec, inputs, swap) for u in v)
    if isinstance(v, Traced):
        if v._slot in inputs:
            array = rec.arrays[v._slot]
            return swap.get(id(array), array)
        return np.ndarray.view(v, np.ndarray)
    return v
