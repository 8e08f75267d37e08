"""Compiled steps for PyTorch on the CPU: the NumPy replay (`ailib.backends._replay`) for tensors.

The step is traced once under a ``TorchFunctionMode`` that sees every torch function and tensor
method the step calls (array-api-compat's included), runs it and records it; the record becomes
a generated function of the same torch calls (`TorchReplayStep.source()`), which later steps call
instead of the layers, loss, optimizer and array-api-compat's wrappers. What PyTorch eager
spends in autograd and ``nn.Module`` calls, and ailib in its Python, is gone; the kernels are
the same.

As for NumPy: the trace runs on copies of the parameters and state (a refused trace leaves the
model as it was), a value read back to Python (``.item()``, ``bool(t)``, ``float(t)``, a
comparison such as ``torch.equal``) refuses the trace, and the second call of each shape runs the
uncompiled step next to the replay (on copies of the parameters and state) and compares every
output to the bit. Tensors made inside the step (``torch.zeros``, ``torch.arange``) are made
again by the replay. Calls that return their own input unchanged (``t.to(t.dtype)``) are left
out of the replay. The learning rate and step counts are 0-d tensors (the parameters' dtype,
int64).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from ._replay import (
    TraceError,
    _Codegen,
    _copies,
    _flatten,
    _Ref,
    _Replays,
    _same,
    _wrap_inputs,
)

__all__ = ["TorchReplayStep"]

#: names of the tensor attributes and methods that only describe a tensor (shape, dtype, device
#: and the like): not recorded, their results are constants of the replay
_METADATA = {
    "shape",
    "dtype",
    "device",
    "ndim",
    "layout",
    "requires_grad",
    "is_cuda",
    "is_sparse",
    "is_quantized",
    "is_meta",
    "is_leaf",
    "grad_fn",
    "names",
    "dim",
    "ndimension",
    "size",
    "numel",
    "nelement",
    "is_floating_point",
    "is_complex",
    "is_signed",
    "element_size",
    "stride",
    "is_contiguous",
    "storage_offset",
    "__len__",
    "get_device",
    "data_ptr",
    "_version",
    "__hash__",
    "__array_namespace__",
    "itemsize",
    "nbytes",
}

#: calls that return their input itself when there is nothing to do: left out of the replay
_ALIASES = {"to", "contiguous", "type", "type_as", "float", "double"}


def _name_of(func: Any) -> str:
    name = getattr(func, "__name__", "")
    if name in ("__get__", "__set__"):  # a property: the attribute's own name
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name


class _TorchTrace:
    """The calls of one traced step (the NumPy `_Trace`'s bookkeeping, for tensors)."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.arrays: list[Any] = []
        self.keep: list[Any] = []
        self.by_id: dict[int, int] = {}
        self.ops: list[dict[str, Any]] = []
        self.inputs: list[int] = []
        self.result: Any = None
        self.constants: dict[int, Any] = {}  # tensors made from constants only, by id

    def writes_constants(self) -> bool:
        """Whether a recorded call writes into a folded constant (an in-place method, ``out=``
        or item assignment on it): then the replay must make it afresh, and the trace is
        refused."""
        for op in self.ops:
            name = _name_of(op["fn"])
            inplace = name.endswith("_") and not name.startswith("__") or name.startswith("__i")
            targets = [op["args"][0]] if (inplace or name == "__setitem__") and op["args"] else []
            targets += _flat(op["kwargs"].get("out"))
            if any(id(t) in self.constants for t in targets):
                return True
        return False

    def _slot(self, tensor: Any) -> int:
        slot = len(self.arrays)
        self.arrays.append(tensor)
        self.keep.append(tensor)
        self.by_id[id(tensor)] = slot
        return slot

    def wrap_input(self, value: Any) -> Any:
        self.inputs.append(self._slot(value))
        return value

    def spec(self, obj: Any) -> Any:
        if isinstance(obj, self.torch.Tensor):
            slot = self.by_id.get(id(obj))
            return _Ref(slot) if slot is not None else obj  # a constant (made before the step)
        if isinstance(obj, (list, tuple)) and not isinstance(obj, self.torch.Size):
            return type(obj)(self.spec(v) for v in obj)
        if isinstance(obj, dict):
            return {k: self.spec(v) for k, v in obj.items()}
        return obj

    def _has_tensor(self, obj: Any) -> bool:
        if isinstance(obj, self.torch.Tensor):
            return True
        if isinstance(obj, (list, tuple)):
            return any(self._has_tensor(v) for v in obj)
        return False

    def record(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        name = _name_of(func)
        if name in _METADATA:
            return func(*args, **kwargs)
        result = func(*args, **kwargs)
        if not self._has_tensor(result) and result is not None:
            if isinstance(result, (bool, int, float, complex)):
                raise TraceError(f"the step reads a value back to Python ({name}) while traced")
            return result  # a dtype, a device: not data
        spec_args, spec_kwargs = self.spec(list(args)), self.spec(kwargs)
        if name in _ALIASES and any(result is a for a in args):
            return result  # nothing done: no call in the replay
        if (
            name in _FOLDABLE
            and not _refs_in((spec_args, spec_kwargs))
            and isinstance(result, self.torch.Tensor)
        ):
            # made from constants only (array-api-compat's scalar operands): a constant of the
            # replay, unless the step writes into it later (`build` checks)
            self.constants[id(result)] = result
            self.keep.append(result)
            return result
        op = {"fn": func, "args": spec_args, "kwargs": spec_kwargs, "out": None, "buffer": False}
        self.ops.append(op)
        op["out"] = self._slots_for(result)
        return result

    def _slots_for(self, value: Any) -> Any:
        """The slots of a call's result (a method: a recursive closure would be a reference
        cycle holding the trace until the garbage collector runs)."""
        if isinstance(value, self.torch.Tensor):
            known = self.by_id.get(id(value))
            return _Ref(known if known is not None else self._slot(value))
        if isinstance(value, (list, tuple)):
            return type(value)(self._slots_for(v) for v in value)
        return None


#: tensor factories whose result, made from constants only, is a constant of the replay
_FOLDABLE = {"asarray", "tensor", "as_tensor", "full", "zeros", "ones", "arange", "eye", "linspace"}


def _refs_in(spec: Any) -> bool:
    if isinstance(spec, _Ref):
        return True
    if isinstance(spec, (list, tuple)):
        return any(_refs_in(v) for v in spec)
    if isinstance(spec, dict):
        return any(_refs_in(v) for v in spec.values())
    return False


def _flat(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _flat(v)]
    return [] if value is None else [value]


#: the recording TorchFunctionMode class, made once (a class made per trace, with a closure
#: over it, would be a reference cycle holding the trace until the garbage collector runs)
_RECORDING: list[Any] = []


def _recording(torch: Any) -> Any:
    """A TorchFunctionMode whose instances, made with a `_TorchTrace`, record every call."""
    if not _RECORDING:
        from torch.overrides import TorchFunctionMode

        class Recording(TorchFunctionMode):
            def __init__(self, rec: _TorchTrace) -> None:
                super().__init__()
                self.rec = rec

            def __torch_function__(
                self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
            ) -> Any:
                return self.rec.record(func, args, kwargs or {})

        _RECORDING.append(Recording)
    return _RECORDING[0]


def trace(torch: Any, fn: Callable[..., Any], values: list[Any], lr: Any, x: Any, y: Any) -> Any:
    """Run ``fn(values, lr, x, y)`` once under a recording ``TorchFunctionMode``; returns (its
    result, the `_TorchTrace`). Raises `TraceError` for a step that cannot be replayed."""
    rec = _TorchTrace(torch)
    args = tuple(_wrap_inputs(rec, v) for v in (values, lr, x, y))
    with _recording(torch)(rec):
        result = fn(*args)
    rec.result = rec.spec(result)
    if rec.writes_constants():
        raise TraceError("the step writes into a tensor it made from constants")
    return result, rec


def _no_lowering(op: dict[str, Any], rec: Any) -> tuple[Any, list[Any], dict[str, Any]]:
    return op["fn"], list(op["args"]), dict(op["kwargs"])


class TorchReplayStep(_Replays):
    """`ailib.backends._replay.ReplayStep` for PyTorch tensors (see the module docstring)."""

    def __init__(self, torch: Any, fn: Callable[..., Any]) -> None:
        super().__init__(fn)
        self.torch = torch

    def _inputs(self, values: list[Any], lr: Any, x: Any, y: Any) -> tuple[Any, ...]:
        """The inputs as the trace and replay see them: Python numbers as 0-d tensors (step
        counts int64, the learning rate in the parameters' dtype). Each ``torch.tensor`` costs
        5-8 µs, and Adam has a step count per parameter (seven tensors a step for the MLP):
        the counts are made as one tensor whose elements stand in their places (each its own
        memory: Adam's ``t += 1`` writes into it), and the learning rate's tensor is kept while
        the rate does not change (the step only reads it)."""
        torch = self.torch
        floats = (  # the parameters' dtype and device; the batch's for a model without any
            v
            for v in (*values, *_flatten((x,)))
            if isinstance(v, torch.Tensor) and v.is_floating_point()
        )
        first = next(floats, None)
        if first is None:
            raise TypeError("a step with no floating tensor (no parameter, integer inputs)")
        places = [i for i, v in enumerate(values) if isinstance(v, int)]
        if places:
            made = torch.tensor([values[i] for i in places], dtype=torch.int64, device=first.device)
            values = list(values)
            for i, count in zip(places, made.unbind()):
                values[i] = count
        key = (lr, first.dtype, first.device)
        if self._lr is None or self._lr[0] != key:
            self._lr = (key, torch.tensor(lr, dtype=first.dtype, device=first.device))
        return values, self._lr[1], x, y

    _lr: tuple[Any, Any] | None = None  # ((lr, dtype, device), the 0-d tensor of lr)

    def __call__(self, values: list[Any], lr: Any, x: Any, y: Any) -> Any:
        torch = self.torch
        if self.broken:
            return self.fn(values, lr, x, y)
        inputs = self._inputs(values, lr, x, y)
        leaves = _flatten(inputs)
        key = tuple(
            (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else type(v) for v in leaves
        )
        entry = self.replays.get(key)
        if entry is None:
            originals = inputs[0]
            copies = _copies(originals, self._clone)
            result, rec = trace(torch, self.fn, copies, *inputs[1:])
            with torch.no_grad():
                for original, copy in zip(originals, copies):
                    if isinstance(original, torch.Tensor):
                        original.copy_(copy)
            swap = {id(c): o for o, c in zip(originals, copies)}
            replay, source = _Codegen(rec, _no_lowering).build(set())
            self.replays[key] = {"replay": replay, "source": source, "checked": False}
            return self._swap(result, swap)
        if not entry["checked"]:
            entry["checked"] = True
            # the values on copies (the step updates them in place); the batch as it is
            # (read only: a copy's other alignment may change a product's last bits)
            held = len(inputs[0])
            copies = _copies(leaves[:held], self._clone) + leaves[held:]
            replayed = entry["replay"](copies)
            result = self.fn(*inputs)
            if not _same(self._host(replayed), self._host(result)):
                self.broken = True
                warnings.warn(
                    "ailib: the replayed PyTorch step differs from the uncompiled step; the step "
                    "runs uncompiled from now on",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return result
        return entry["replay"](leaves)

    def _clone(self, v: Any) -> Any:
        return v.clone() if isinstance(v, self.torch.Tensor) else None

    def _swap(self, value: Any, swap: dict[int, Any]) -> Any:
        if isinstance(value, (list, tuple)):
            return type(value)(self._swap(v, swap) for v in value)
        return swap.get(id(value), value)

    def _host(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return type(value)(self._host(v) for v in value)
        if isinstance(value, self.torch.Tensor):
            return np.asarray(value.detach().cpu())
        return value
