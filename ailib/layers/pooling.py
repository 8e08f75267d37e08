"""Max and average pooling over the spatial axes of NCHW batches (docs/math.md §8)."""

from __future__ import annotations

from typing import Any, Sequence

from ..backends import Backend
from ._windows import fold, output_size, pair, windows
from .base import Backprop, Layer


class _Pool2D(Layer):
    """Shared shape logic: windows of k_h × k_w moved by the stride (default: the kernel size,
    non-overlapping), no padding; H_out = ⌊(H − k_h) / s_h⌋ + 1, likewise W_out. Rows and columns
    no window reaches (when the stride does not divide H − k_h) get zero gradient."""

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, dtype=dtype)
        self.kernel_size = pair(kernel_size, "kernel_size", self.name)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", self.name)

    def get_config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride)}

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H_out, W_out) for an input of height × width."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return output_size(height, kh, sh), output_size(width, kw, sw)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(f"{self.name}: expected samples of shape (C, H, W), received {shape}")
        self._check_size(shape[1:])
        return (shape[0], *self.output_shape(shape[1], shape[2]))

    def _check_size(self, size: tuple[int, ...]) -> None:
        if size[0] < self.kernel_size[0] or size[1] < self.kernel_size[1]:
            raise ValueError(
                f"{self.name}: the input's spatial size {size} is "
                f"smaller than the kernel {self.kernel_size}"
            )

    def _pieces(self, x: Any) -> list[Any]:
        self.check_input(x, dtype=None)
        if x.ndim != 4:
            raise ValueError(
                f"{self.name}: expected a 4-d input (N, C, H, W), received shape "
                f"{tuple(x.shape)} ({x.ndim}-d)"
            )
        self._check_size(tuple(x.shape[2:]))
        return self._windows(x)

    def _windows(self, x: Any) -> list[Any]:
        return windows(x, self.kernel_size, self.stride, self.output_shape(*x.shape[2:]))

    def _fold(self, pieces: list[Any], x_shape: tuple[int, ...]) -> Any:
        _, _, h, w = x_shape
        return fold(self.xp, self.backend.device, pieces, self.kernel_size, self.stride, (h, w))


class MaxPool2D(_Pool2D):
    """Y[n, c, a, b] = max over the window at (s_h·a, s_w·b) of X[n, c].

    Shapes: X (N, C, H, W) -> Y (N, C, H_out, W_out).

    Backward (docs/math.md §8): the max is locally the selection of one entry, so dE/dY[a, b]
    goes, whole, to the position of the window's maximum and every other entry of the window
    gets 0; with overlapping windows an input entry adds up what it receives from each window.
    Ties: the gradient goes to the FIRST maximal entry of the window in row-major order, never
    split, so the rule is the same on every backend. It is found with comparisons only: offset k
    receives dE/dY where X at k equals Y and no earlier offset did.
    """

    def call(self, x: Any) -> tuple[Any, Backprop]:
        pieces = self._pieces(x)
        y = pieces[0]
        for piece in pieces[1:]:
            y = self.xp.maximum(y, piece)  # NOTE: maximum propagates NaN, so a NaN input shows

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            if not input_grad:
                return None
            xp = self.xp
            # NOTE: masks multiply (not xp.where): on NumPy, where is ~10x slower than a product
            free, grads = None, []
            for piece in self._windows(x):
                hit = piece == y
                if free is not None:
                    hit = xp.logical_and(hit, free)
                free = (
                    xp.logical_not(hit)
                    if free is None
                    else xp.logical_and(free, xp.logical_not(hit))
                )
                grads.append(grad_out * xp.astype(hit, grad_out.dtype))
            return self._fold(grads, tuple(x.shape))

        return y, backprop


class AvgPool2D(_Pool2D):
    """Y[n, c, a, b] = (1 / (k_h·k_w)) Σ over the window at (s_h·a, s_w·b) of X[n, c].

    Shapes: X (N, C, H, W) -> Y (N, C, H_out, W_out).

    Backward (docs/math.md §8): every entry of a window receives dE/dY[a, b] / (k_h·k_w); with
    overlapping windows the shares add up.
    """

    def call(self, x: Any) -> tuple[Any, Backprop]:
        pieces, x_shape = self._pieces(x), tuple(x.shape)
        count = len(pieces)  # k_h·k_w
        total = pieces[0]
        for piece in pieces[1:]:
            total = total + piece
        y = total / float(count)

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            if not input_grad:
                return None
            share = grad_out / float(count)
            return self._fold([share] * count, x_shape)

        return y, backprop


class GlobalAvgPool2D(Layer):
    """Y[n, c] = (1 / (H·W)) Σ_{h,w} X[n, c, h, w]: each channel's mean over the whole image.

    Shapes: X (N, C, H, W) -> Y (N, C), rows a `Dense` layer takes as they are (the head of a
    ResNet: no Flatten, and any image size).

    Backward (docs/math.md §8): every entry of a channel receives dE/dY[n, c] / (H·W).
    """

    def __init__(self, *, backend: str | Backend | None = None, dtype: Any = None) -> None:
        super().__init__(backend=backend, dtype=dtype)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(f"{self.name}: expected samples of shape (C, H, W), received {shape}")
        return shape[:1]

    def call(self, x: Any) -> tuple[Any, Backprop]:
        """Y = mean of X over H and W; backprop: dE/dX = dE/dY / (H·W) at every position."""
        self.check_input(x, dtype=None)
        if x.ndim != 4:
            raise ValueError(
                f"{self.name}: expected a 4-d input (N, C, H, W), received shape "
                f"{tuple(x.shape)} ({x.ndim}-d)"
            )
        xp, x_shape = self.xp, tuple(x.shape)
        y = xp.mean(x, axis=(2, 3))

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            if not input_grad:
                return None
            share = grad_out / float(x_shape[2] * x_shape[3])
            # a fresh (N, C, H, W) array, not a broadcast view: the layer before may write to it
            ones = xp.ones((1, 1, *x_shape[2:]), dtype=share.dtype, device=self.backend.device)
            return ones * xp.reshape(share, (*x_shape[:2], 1, 1))

        return y, backprop
