"""Merge layers: several inputs of a graph model into one (docs/math.md §12).

A merge layer is called on a list, ``Add()([a, b])``, and its backprop returns one dE/dX per
input, in the same order. Where the inputs come from one array (a residual connection), the
model adds those dE/dX up.
"""

from __future__ import annotations

from typing import Any, Sequence

from .._checks import whole
from ..backends import Backend
from .base import Backprop, Layer


class _Merge(Layer):
    """Base of the merge layers: at least two floating inputs of one dtype."""

    multi_input = True

    def _check_all(self, xs: Sequence[Any]) -> None:
        if not isinstance(xs, (list, tuple)) or len(xs) < 2:
            raise TypeError(f"{self.name}: expected a list of at least two arrays, received {xs!r}")
        for x in xs:
            self.check_input(x, dtype=None)
        if any(x.dtype != xs[0].dtype for x in xs):
            names = ", ".join(self.backend.dtype_name(x.dtype) for x in xs)
            raise TypeError(f"{self.name}: expected inputs of one dtype, received {names}")

    def _same_shapes(self, shapes: Sequence[tuple[int, ...]], what: str) -> None:
        if any(tuple(s) != tuple(shapes[0]) for s in shapes):
            raise ValueError(
                f"{self.name}: {what} inputs of one shape, received "
                f"{', '.join(str(tuple(s)) for s in shapes)}"
            )


class Add(_Merge):
    """Y = X⁽¹⁾ + … + X⁽ᵏ⁾, inputs of one shape; dE/dX⁽ⁱ⁾ = dE/dY for every i (each input moves Y
    one for one). The skip connection of a residual block: Y = X + F(X)."""

    def compute_output_shape(self, input_shape: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
        self._same_shapes(input_shape, "adds")
        return tuple(input_shape[0])

    def call(self, xs: Sequence[Any]) -> tuple[Any, Backprop]:
        self._check_all(xs)
        self._same_shapes([tuple(x.shape) for x in xs], "adds")
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y = y + x
        count = len(xs)

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            return [grad_out] * count if input_grad else None

        return y, backprop


class Multiply(_Merge):
    """Y = X⁽¹⁾ ∘ … ∘ X⁽ᵏ⁾, inputs of one shape (e.g. a gate); by the product rule
    dE/dX⁽ⁱ⁾ = dE/dY ∘ Πⱼ≠ᵢ X⁽ʲ⁾."""

    def compute_output_shape(self, input_shape: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
        self._same_shapes(input_shape, "multiplies")
        return tuple(input_shape[0])

    def call(self, xs: Sequence[Any]) -> tuple[Any, Backprop]:
        self._check_all(xs)
        self._same_shapes([tuple(x.shape) for x in xs], "multiplies")
        xs = list(xs)
        y = xs[0] * xs[1]
        for x in xs[2:]:
            y = y * x

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            if not input_grad:
                return None
            grads = []
            for i in range(len(xs)):
                grad = grad_out
                for j, x in enumerate(xs):
                    if j != i:
                        grad = grad * x
                grads.append(grad)
            return grads

        return y, backprop


class Concatenate(_Merge):
    """Y = the inputs joined along ``axis``; dE/dX⁽ⁱ⁾ = the slice of dE/dY that X⁽ⁱ⁾ filled.

    Shapes: inputs that agree on every axis but ``axis``; e.g. rows (N, F₁) and (N, F₂) ->
    (N, F₁ + F₂) with axis=-1, or images (N, C₁, H, W) and (N, C₂, H, W) -> (N, C₁ + C₂, H, W)
    with axis=1.

    Args:
        axis: the axis of the batched arrays to join along (not 0, the batch); default -1.
    """

    def __init__(
        self, axis: int = -1, *, backend: str | Backend | None = None, dtype: Any = None
    ) -> None:
        super().__init__(backend=backend, dtype=dtype)
        if not whole(axis):
            raise ValueError(
                f"Concatenate: axis must be a non-zero int (axis 0 is the batch), received {axis!r}"
            )
        self.axis = int(axis)

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis}

    def _sample_axis(self, rank: int) -> int:
        """``axis`` as an index into one sample's shape of ``rank`` axes."""
        axis = self.axis - 1 if self.axis > 0 else rank + self.axis
        if not 0 <= axis < rank:
            raise ValueError(
                f"{self.name}: axis {self.axis} is outside inputs of {rank + 1} axes "
                f"(batch included)"
            )
        return axis

    def compute_output_shape(self, input_shape: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
        shapes = [tuple(s) for s in input_shape]
        axis = self._sample_axis(len(shapes[0]))
        rest = [s[:axis] + s[axis + 1 :] for s in shapes]
        if any(len(s) != len(shapes[0]) for s in shapes) or any(r != rest[0] for r in rest):
            raise ValueError(
                f"{self.name}: expected inputs that agree on every axis but {self.axis}, "
                f"received samples of shapes {', '.join(str(s) for s in shapes)}"
            )
        total = sum(s[axis] for s in shapes)
        return shapes[0][:axis] + (total,) + shapes[0][axis + 1 :]

    def call(self, xs: Sequence[Any]) -> tuple[Any, Backprop]:
        self._check_all(xs)
        if any(x.shape[0] != xs[0].shape[0] for x in xs):
            raise ValueError(
                f"{self.name}: expected inputs of one batch size, received shapes "
                f"{', '.join(str(tuple(x.shape)) for x in xs)}"
            )
        self.compute_output_shape([tuple(x.shape[1:]) for x in xs])
        axis = 1 + self._sample_axis(xs[0].ndim - 1)  # of the batched arrays
        y = self.xp.concat(list(xs), axis=axis)
        bounds = [0]
        for x in xs:
            bounds.append(bounds[-1] + x.shape[axis])
        lead = (slice(None),) * axis

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            if not input_grad:
                return None
            return [
                grad_out[(*lead, slice(start, stop), ...)]
                for start, stop in zip(bounds[:-1], bounds[1:])
            ]

        return y, backprop


__all__ = ["Add", "Concatenate", "Multiply"]
