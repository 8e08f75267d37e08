"""Layers that only change the shape of each sample: `Flatten` and `Reshape` (docs/math.md §9).

A reshape changes no value (entry k of a sample, in row-major order, stays entry k), so its
Jacobian is the identity on the entries and backward just reshapes dE/dY back to X's shape.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .._checks import whole
from ..backends import Backend
from .base import Backprop, Layer


class Flatten(Layer):
    """Y = X reshaped to (N, D) with D the product of X's non-batch sizes, e.g. (N, C, H, W) ->
    (N, C·H·W) in row-major (C, H, W) order; dE/dX = dE/dY reshaped to X's shape."""

    def __init__(self, *, backend: str | Backend | None = None, dtype: Any = None) -> None:
        super().__init__(backend=backend, dtype=dtype)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(input_shape),)

    def call(self, x: Any) -> tuple[Any, Backprop]:
        self.check_input(x, dtype=None)
        if x.ndim < 2:
            raise ValueError(
                f"{self.name}: expected at least a 2-d input (N, ...), received "
                f"shape {tuple(x.shape)}"
            )
        x_shape = tuple(x.shape)
        y = self.xp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            return self.xp.reshape(grad_out, x_shape) if input_grad else None

        return y, backprop


class Reshape(Layer):
    """Y = each sample of X reshaped to ``shape``: (N, ...) -> (N, *shape), row-major order.

    Any input whose samples hold prod(shape) entries is accepted, so `Reshape((1, 28, 28))` takes
    both flat rows (N, 784) and images (N, 1, 28, 28). dE/dX = dE/dY reshaped to X's shape.

    Args:
        shape: the target shape of one sample (without the batch axis); an int for one axis.
    """

    def __init__(
        self, shape: int | Sequence[int], *, backend: str | Backend | None = None, dtype: Any = None
    ) -> None:
        super().__init__(backend=backend, dtype=dtype)
        shape = tuple(shape) if isinstance(shape, (list, tuple)) else (shape,)
        sizes = tuple(whole(s) for s in shape)
        if not sizes or not all(s is not None and s >= 1 for s in sizes):
            raise ValueError(
                f"Reshape: shape must be a non-empty sequence of positive ints, received {shape!r}"
            )
        self.shape: tuple[int, ...] = sizes  # type: ignore[assignment]
        self.size = math.prod(self.shape)

    def get_config(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if math.prod(input_shape) != self.size:
            raise ValueError(
                f"{self.name}: expected samples of {self.size} entries to reshape to "
                f"{self.shape}, received samples of shape {tuple(input_shape)}"
            )
        return self.shape

    def call(self, x: Any) -> tuple[Any, Backprop]:
        self.check_input(x, dtype=None)
        if x.ndim < 1 or math.prod(x.shape[1:]) != self.size:
            raise ValueError(
                f"{self.name}: expected samples of {self.size} entries to reshape to "
                f"{self.shape}, e.g. input shape (N, {self.size}) or (N, *{self.shape}), "
                f"received {tuple(x.shape)}"
            )
        x_shape = tuple(x.shape)
        y = self.xp.reshape(x, (x.shape[0], *self.shape))

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            return self.xp.reshape(grad_out, x_shape) if input_grad else None

        return y, backprop
