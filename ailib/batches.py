"""Data at a model's boundary, for `ailib.training`: inputs and targets checked and moved to the
model's device (once, for arrays), and mini-batches from arrays (shuffled on the device) or from
an iterable of (x, y) pairs (for data that does not fit the device).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

import array_api_compat

from . import losses


def model_inputs(model: Any, x: Any, who: str) -> Any:
    """``x`` as a floating array of the model's dtype on its device; NumPy arrays are moved
    once, arrays of another backend or device are refused."""
    be = model.backend
    if (
        type(x).__module__ == "numpy"
        and getattr(x, "dtype", None) is not None
        and x.dtype.kind == "f"
        and not be.owns(x)
    ):
        x = be.asarray(x, dtype=model.dtype)  # cast on the host: no float64 copy on the device
    x = _own(model, x, who, "x")
    if not be.is_floating(x.dtype):
        raise TypeError(
            f"{who}: x has dtype {be.dtype_name(x.dtype)} but the model needs floats "
            f"({be.dtype_name(model.dtype)}); scale it first, e.g. "
            f"ailib.datasets.to_float(x) for uint8 pixels"
        )
    if x.dtype != model.dtype:
        x = model.xp.astype(x, model.dtype)
    first = model.layers[0] if model.layers else None
    features = getattr(first, "in_features", None)
    if features is not None and (x.ndim != 2 or x.shape[1] != features):
        raise ValueError(
            f"{who}: the first layer ({first.name}) expects x of shape (N, {features}), "
            f"received {tuple(x.shape)}"
        )
    return x


def model_targets(
    model: Any, y: Any, n: int, loss: losses.Loss, who: str, *, check: bool = True
) -> Any:
    """``y`` on the model's device: class labels in ``backend.index_dtype`` (range-checked: on the host for NumPy
    labels, else on the device when ``check``, which reads two numbers back), other targets in
    the model's dtype."""
    xp, be = model.xp, model.backend
    classes = _num_outputs(model) if loss.accepts_labels else None
    if type(y).__module__ == "numpy" and getattr(y, "dtype", None) is not None:
        if classes is not None and y.dtype.kind in "iu":
            losses.check_labels(array_api_compat.array_namespace(y), y, classes, who)
            check = False
        elif y.dtype.kind == "f" and not be.owns(y):
            y = be.asarray(y, dtype=model.dtype)  # cast on the host, as for x
    y = _own(model, y, who, "y")
    if y.shape[0] != n:
        raise ValueError(f"{who}: x has {n} samples but y has {y.shape[0]}")
    if xp.isdtype(y.dtype, "integral"):
        if not loss.accepts_labels:
            return xp.astype(y, model.dtype)
        if check and classes is not None:
            losses.check_labels(xp, y, classes, who)
        return y if y.dtype == be.index_dtype else xp.astype(y, be.index_dtype)
    return y if y.dtype == model.dtype else xp.astype(y, model.dtype)


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


def _num_outputs(model: Any) -> int | None:
    for layer in reversed(model.layers):
        if hasattr(layer, "out_features"):
            return int(layer.out_features)
    return None


def _take(xp: Any, a: Any, index: Any) -> Any:
    return a[index, ...] if isinstance(index, slice) else xp.take(a, index, axis=0)


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
        n = x.shape[0]
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

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        order = self.rng.permutation(self.x.shape[0]) if self.shuffle else None
        for start, stop in self.bounds:
            with self.backend.context():  # CuPy: the gather runs on the model's GPU
                index = slice(start, stop) if order is None else order[start:stop]
                batch = _take(self.xp, self.x, index), _take(self.xp, self.y, index)
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
                self.model, item[1], xb.shape[0], self.loss, self.who, check=not self.checked
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
    x = model_inputs(model, x, who)
    if x.shape[0] == 0:
        raise ValueError(f"{who}: x has no samples")
    y = model_targets(model, y, x.shape[0], loss, who)
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


__all__ = ["ArrayBatches", "IterableBatches", "batches_of", "model_inputs", "model_targets"]
