"""Data at a model's boundary, for `ailib.training`: inputs and targets checked and moved to the
model's device (once, for arrays), and mini-batches from arrays (shuffled on the device) or from
an iterable of (x, y) pairs (for data that does not fit the device).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterable, Iterator

import array_api_compat

from . import backends, losses
from ._checks import positive_int


def input_list(model: Any, x: Any, who: str) -> list[Any]:
    """``x`` of a model with several inputs as a list of one array per input; ValueError
    (naming ``who``) where it is not a list or tuple of as many."""
    count = len(model.inputs)
    if not isinstance(x, (list, tuple)) or len(x) != count:
        raise ValueError(
            f"{who}: the model has {count} inputs; pass x as a list of {count} arrays, "
            f"received {type(x).__name__}"
            + (f" of {len(x)}" if isinstance(x, (list, tuple)) else "")
        )
    return list(x)


def check_inputs(model: Any, x: Any, who: str, check_values: bool = True) -> Any:
    """``x`` checked, still where it was (`to_device` moves it): NumPy arrays and lists hold
    real floats without NaN or inf (checked on the host), of a shape that fits the model's
    input (`model.check_input_shape`). Arrays of the model's backend are checked with two
    reductions and one read back (``check_values=False`` skips that); arrays of another
    backend or device are refused. A model with several inputs takes a list of arrays, one
    per input, with as many samples each."""
    if getattr(model, "single_input", True):
        return _check_input(model, x, who, check_values, 0, "x")
    x = input_list(model, x, who)
    xs = [_check_input(model, a, who, check_values, k, f"x[{k}]") for k, a in enumerate(x)]
    sizes = [a.shape[0] if a.ndim else 0 for a in xs]
    if len(set(sizes)) > 1:
        raise ValueError(f"{who}: the inputs have different numbers of samples: {sizes}")
    return xs


def _check_input(model: Any, x: Any, who: str, check_values: bool, k: int, what: str) -> Any:
    be = model.backend
    host = backends.host_numbers(x, who, what)
    x = host if host is not None else _own(model, x, who, what)
    floating = x.dtype.kind == "f" if host is not None else be.is_floating(x.dtype)
    integral = x.dtype.kind in "iu" if host is not None else be.xp.isdtype(x.dtype, "integral")
    reads_indices = getattr(model, "reads_indices", None)
    if integral and reads_indices is not None and reads_indices(k):
        model.check_input_shape(x, who, k)  # indices (Embedding): integers, kept as integers
        return x
    if not floating:
        name = x.dtype.name if host is not None else be.dtype_name(x.dtype)
        raise TypeError(
            f"{who}: {what} has dtype {name} but the model needs floats "
            f"({be.dtype_name(model.dtype)}); scale it first, e.g. "
            f"ailib.datasets.to_float(x) for uint8 pixels"
        )
    check_shape = getattr(model, "check_input_shape", None)
    if check_shape is not None:
        check_shape(x, who, k)
    else:
        first = model.layers[0] if model.layers else None
        features = getattr(first, "in_features", None)
        if features is not None and (x.ndim != 2 or x.shape[1] != features):
            raise ValueError(
                f"{who}: the first layer ({first.name}) expects x of shape (N, {features}), "
                f"received {tuple(x.shape)}"
            )
    if host is not None or check_values:
        _finite(be, x, who, what, model.dtype)
    return x


def check_targets(
    model: Any, y: Any, n: int, loss: losses.Loss, who: str, check_values: bool = True
) -> tuple[Any, Any]:
    """(``y`` checked, the dtype the loss needs it in): class labels (``backend.index_dtype``)
    in range of the model's outputs, or floats of the model's dtype without NaN or inf. NumPy
    arrays and lists are checked on the host and stay there (`to_device` moves them); device
    arrays cost two reductions and one read back unless ``check_values`` is False. A model
    with several outputs takes a list of targets, checked against its `OutputLosses`' items
    (then both results are lists)."""
    if getattr(model, "single_output", True):
        return _check_target(model, y, n, loss, who, check_values, 0, "y")
    count = len(model.outputs)
    if not isinstance(y, (list, tuple)) or len(y) != count:
        raise ValueError(
            f"{who}: the model has {count} outputs; pass y as a list of {count} target "
            f"arrays, received {type(y).__name__}"
        )
    items = getattr(loss, "items", [loss] * count)
    checked = [
        _check_target(model, t, n, item, who, check_values, k, f"y[{k}]")
        for k, (t, item) in enumerate(zip(y, items))
    ]
    return [t for t, _ in checked], [dtype for _, dtype in checked]


def _check_target(
    model: Any,
    y: Any,
    n: int,
    loss: losses.Loss,
    who: str,
    check_values: bool,
    k: int,
    what: str,
) -> tuple[Any, Any]:
    be = model.backend
    host = backends.host_numbers(y, who, what)
    y = host if host is not None else _own(model, y, who, what)
    if y.ndim == 0 or y.shape[0] != n:
        raise ValueError(f"{who}: x has {n} samples but {what} has {y.shape[0] if y.ndim else 0}")
    integral = (y.dtype.kind in "iu") if host is not None else be.xp.isdtype(y.dtype, "integral")
    floating = (y.dtype.kind == "f") if host is not None else be.is_floating(y.dtype)
    classes = _num_outputs(model, k) if loss.accepts_labels else None
    if integral and loss.accepts_labels:
        if y.ndim != 1:
            raise ValueError(
                f"{who}: integer {what} holds class labels and must have shape ({n},), "
                f"received {tuple(y.shape)}"
            )
        if classes is not None and n and (host is not None or check_values):
            low, high = backends.extremes(be, y)
            if low < 0 or high >= classes:
                raise ValueError(
                    f"{who}: {what}'s labels must lie in [0, {classes - 1}] for {classes} "
                    f"classes, received labels in [{low}, {high}] (the model has {classes} "
                    f"outputs)"
                )
        return y, be.index_dtype
    if floating and loss.accepts_labels and classes is not None:
        if y.ndim != 2 or y.shape[1] != classes:
            raise ValueError(
                f"{who}: float {what} must be one-hot or probability rows of shape ({n}, "
                f"{classes}) for {loss.name}, received {tuple(y.shape)}; pass integer "
                f"class labels of shape ({n},) instead"
            )
    if floating and n and (host is not None or check_values):
        _finite(be, y, who, what, model.dtype)
    return y, model.dtype


def rows(a: Any) -> int:
    """The number of samples of an array, or of the first of a list of arrays."""
    return (a[0] if isinstance(a, list) else a).shape[0]


def to_device(model: Any, a: Any, dtype: Any) -> Any:
    """A checked array on the model's device as ``dtype`` (NumPy arrays are cast on the host
    first: no float64 copy on the device); a list of them (with a list of dtypes, or one)."""
    if isinstance(a, list):
        dtypes = dtype if isinstance(dtype, list) else [dtype] * len(a)
        return [model.backend.asarray(item, dtype=d) for item, d in zip(a, dtypes)]
    return model.backend.asarray(a, dtype=dtype)


def input_dtypes(model: Any, x: Any) -> Any:
    """The dtype each checked input moves to: the model's float dtype, or the backend's index
    dtype for integer inputs of index-taking layers (a list for several inputs)."""

    def one(a: Any) -> Any:
        kind = getattr(getattr(a, "dtype", None), "kind", None)
        integral = kind in ("i", "u") if kind is not None else model.xp.isdtype(a.dtype, "integral")
        return model.backend.index_dtype if integral else model.dtype

    return [one(a) for a in x] if isinstance(x, list) else one(x)


def model_inputs(model: Any, x: Any, who: str, check_values: bool = True) -> Any:
    """``x`` checked (`check_inputs`) and on the model's device, as `input_dtypes` says."""
    x = check_inputs(model, x, who, check_values)
    return to_device(model, x, input_dtypes(model, x))


def model_targets(
    model: Any, y: Any, n: int, loss: losses.Loss, who: str, *, check: bool = True
) -> Any:
    """``y`` checked (`check_targets`) and on the model's device."""
    y, dtype = check_targets(model, y, n, loss, who, check)
    return to_device(model, y, dtype)


#: the largest float32, beyond which float64 values become inf when a float32 model casts them
FLOAT32_MAX = 3.4028234663852886e38


def _finite(be: Any, a: Any, who: str, what: str, dtype: Any) -> None:
    """Raise ValueError naming ``what`` when the floating array ``a`` holds NaN or inf, or values
    that the cast to the model's ``dtype`` would turn into inf (float64 data, float32 model)."""
    name = getattr(a.dtype, "name", None) or be.dtype_name(a.dtype)  # host arrays: NumPy's
    narrowing = name == "float64" and be.dtype_name(dtype) == "float32"
    if math.prod(a.shape) == 0 or (not narrowing and backends.quickly_finite(a)):
        return
    low, high = backends.extremes(be, a)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(
            f"{who}: {what} holds {'NaN' if math.isnan(low) or math.isnan(high) else 'inf'} "
            f"values (its range is [{low}, {high}]); remove or impute them first"
        )
    if narrowing and max(-low, high) > FLOAT32_MAX:
        raise ValueError(
            f"{who}: {what} holds values beyond float32's range (its range is [{low:g}, "
            f"{high:g}], float32 reaches ±{FLOAT32_MAX:.4g}), which the float32 model would "
            f"turn into inf; rescale them, or use a float64 model"
        )


def _own(model: Any, a: Any, who: str, what: str) -> Any:
    be = model.backend
    if be.owns(a):
        return a
    if type(a).__module__ == "numpy" or isinstance(a, (list, tuple)):
        return be.asarray(a)
    where = f"{type(a).__module__}.{type(a).__name__}"
    if array_api_compat.is_array_api_obj(a):
        where += f" on device {array_api_compat.device(a)!r}"
    raise TypeError(
        f"{who}: {what} must be a NumPy array or an array of backend {be.name!r} on device "
        f"{be.device!r}, received {where}"
    )


def _num_outputs(model: Any, k: int = 0) -> int | None:
    if hasattr(model, "num_classes"):
        return model.num_classes(k)
    for layer in reversed(model.layers):
        if hasattr(layer, "out_features"):
            return int(layer.out_features)
    return None


def _take(
    backend: Any,
    a: Any,
    index: Any,
    kept: dict[Any, Any] | None = None,
    key: Any = 0,
    in_range: bool = False,
) -> Any:
    """Rows ``index`` of ``a`` (or of each array of a list); with ``kept``, into a buffer kept
    there per (key, rows), which the next batch of that size overwrites. ``in_range``: the
    indices are a slice of a permutation of a's rows (`Backend.take_rows`)."""
    if isinstance(a, list):
        return [_take(backend, item, index, kept, (key, i), in_range) for i, item in enumerate(a)]
    if isinstance(index, slice):
        return a[index, ...]
    if kept is None:
        return backend.take_rows(a, index, in_range=in_range)
    shape = (index.shape[0], *a.shape[1:])
    buffer = kept.get((key, shape))
    if buffer is None:
        buffer = backend.xp.empty(shape, dtype=a.dtype, device=backend.device)
        kept[(key, shape)] = buffer
    return backend.take_rows(a, index, out=buffer, in_range=in_range)


def _arrays(a: Any) -> list[Any]:
    return list(a) if isinstance(a, (list, tuple)) else [a]


class ArrayBatches:
    """Mini-batches of (x, y) arrays already on the device: one pass per iteration, in a fresh
    device permutation drawn from ``rng`` when shuffling.

    A final batch of a single sample is merged into the one before it (BatchNorm cannot
    estimate a variance from one sample); ``drop_last`` drops an incomplete final batch."""

    def __init__(
        self,
        backend: Any,
        x: Any,
        y: Any,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        rng: Any = None,
        who: str = "fit",
    ) -> None:
        n = rows(x)
        counts = [a.shape[0] for a in [*_arrays(x), *_arrays(y)]]
        if any(count != n for count in counts):
            # the gathers trust the permutation of n rows to be in range for every array
            raise ValueError(f"{who}: x and y must have the same number of rows, received {counts}")
        bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
        if drop_last and n % batch_size:
            bounds.pop()
            if not bounds:
                raise ValueError(
                    f"{who}: drop_last=True with {n} samples and batch_size {batch_size} "
                    f"leaves no batch"
                )
        elif len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
            bounds[-2:] = [(bounds[-2][0], n)]
        self.backend, self.xp, self.x, self.y, self.bounds = backend, backend.xp, x, y, bounds
        self.shuffle, self.rng = shuffle, rng
        self.steps = len(bounds)
        self.samples = sum(stop - start for start, stop in bounds)

    #: gather each batch into memory kept from batch to batch (where the backend can: NumPy),
    #: for a consumer that is done with a batch before asking for the next (`fit`)
    reuse_memory = False

    def order(self, identity: bool = False) -> Any:
        """The order of the rows for one pass: a fresh permutation on the device when
        shuffling, else None, or with ``identity`` 0, 1, ..., n−1 (made once and kept), for a
        consumer that gathers ``order[start:stop]`` itself (`fit` on JAX)."""
        if self.shuffle:
            return self.rng.permutation(rows(self.x))
        if not identity:
            return None
        kept = self.__dict__.get("identity")
        if kept is None:
            be = self.backend
            with be.context():
                kept = self.identity = be.xp.arange(
                    rows(self.x), dtype=be.index_dtype, device=be.device
                )
        return kept

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        order = self.order()
        be = self.backend
        reuse = self.reuse_memory and be.takes_rows_into
        kept = self.__dict__.setdefault("kept", {}) if reuse else None
        for start, stop in self.bounds:
            with be.context():  # CuPy: the gather runs on the model's GPU
                if order is not None and be.takes_batches:  # JAX: slice and gathers, one call
                    batch = be.take_batch((self.x, self.y), order, start, stop)
                else:
                    index = slice(start, stop) if order is None else order[start:stop]
                    # the permutation's rows are in range by construction: not checked again
                    batch = (
                        _take(be, self.x, index, kept, "x", in_range=True),
                        _take(be, self.y, index, kept, "y", in_range=True),
                    )
            yield batch


class IterableBatches:
    """Mini-batches from an iterable of (x, y) pairs, each moved to the device and checked as
    it comes (NumPy labels range-checked on the host; device labels on the first batch only).

    A re-iterable source (a list, or an object whose ``__iter__`` starts over) is iterated
    afresh for every pass, up to ``steps`` batches if given. A one-shot iterator (a generator;
    ``iter(source) is source``) is shared by all passes: each takes the next ``steps`` batches,
    so ``steps`` is required for more than one pass."""

    def __init__(
        self,
        model: Any,
        source: Iterable[Any],
        loss: losses.Loss,
        who: str,
        *,
        steps: int | None = None,
        passes: int = 1,
    ) -> None:
        try:
            iterator = iter(source)
        except TypeError:
            raise TypeError(
                f"{who}: x must be an array (with y) or an iterable of (x, y) batches (with "
                f"y=None), received {type(source).__name__}"
            ) from None
        self.one_shot = iterator is source
        if self.one_shot and passes > 1 and steps is None:
            raise ValueError(
                f"{who}: x is a one-shot iterator (a generator), used up by the first epoch; "
                f"give steps_per_epoch (batches drawn from it per epoch) or a re-iterable "
                f"source (a list, or an object whose __iter__ starts over)"
            )
        self.model, self.source, self.loss, self.who = model, source, loss, who
        self.iterator = iterator if self.one_shot else None
        self.steps = steps
        self.checked = False

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        batches = self.iterator if self.one_shot else iter(self.source)
        if self.steps is not None:
            batches = itertools.islice(batches, self.steps)
        for item in batches:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(
                    f"{self.who}: each batch must be an (x, y) pair, received "
                    f"{type(item).__name__}"
                    + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
                )
            xb = model_inputs(self.model, item[0], self.who)
            yb = model_targets(
                self.model, item[1], rows(xb), self.loss, self.who, check=not self.checked
            )
            self.checked = True
            yield xb, yb


def batches_of(
    model: Any,
    x: Any,
    y: Any,
    loss: losses.Loss,
    who: str,
    *,
    batch_size: int,
    shuffle: bool = False,
    drop_last: bool = False,
    steps: int | None = None,
    passes: int = 1,
) -> ArrayBatches | IterableBatches:
    """The batches of ``x, y`` (arrays) or of ``x`` (an iterable of pairs, with ``y=None``)."""
    if y is None:
        if hasattr(x, "shape"):
            raise ValueError(
                f"{who}: y is missing; give the targets with the x array, or give x as an "
                f"iterable of (x, y) batches"
            )
        return IterableBatches(model, x, loss, who, steps=steps, passes=passes)
    if steps is not None:
        raise ValueError(
            f"{who}: steps_per_epoch is for an iterable of batches (y=None); with arrays each "
            f"epoch is one pass over them"
        )
    batch_size = positive_int(batch_size, "batch_size", who)
    x = check_inputs(model, x, who)
    if rows(x) == 0:
        raise ValueError(f"{who}: x has no samples")
    y, y_dtype = check_targets(model, y, rows(x), loss, who)
    x, y = to_device(model, x, input_dtypes(model, x)), to_device(model, y, y_dtype)  # now move
    return ArrayBatches(
        model.backend,
        x,
        y,
        batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        rng=model.rng,
        who=who,
    )


__all__ = [
    "ArrayBatches",
    "IterableBatches",
    "batches_of",
    "check_inputs",
    "check_targets",
    "model_inputs",
    "model_targets",
    "rows",
    "input_dtypes",
    "to_device",
]
