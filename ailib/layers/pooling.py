"""Max, average and global average pooling over the spatial axes of NCHW batches (docs/math.md §8)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..backends import Backend
from ._windows import fold, output_size, pad_edges, pair, windows
from .base import Backprop, Layer


class _Pool2D(Layer):
    """Shared shape logic: windows of k_h × k_w moved by the stride (default: the kernel size,
    non-overlapping) over X with p rows and columns of `pad_value` added on every side (none by
    default); H_out = ⌊(H + 2·p_h − k_h) / s_h⌋ + 1, likewise W_out. As in PyTorch, p <= k/2, so
    every window holds an entry of X. Rows and columns no window reaches (when the stride does
    not divide H + 2·p_h − k_h) get zero gradient.

    ``ceil_mode=True`` (PyTorch's): H_out = ⌈(H + 2·p_h − k_h) / s_h⌉ + 1, minus 1 where the last
    window would start in the bottom padding ((H_out − 1)·s_h >= H + p_h), so every window
    still holds an entry of X; a last window that runs past the padded input reads
    `pad_value` there (docs/math.md §8)."""

    #: what the padding holds (the subclass says)
    pad_value = 0.0

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        *,
        ceil_mode: bool = False,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, dtype=dtype)
        self.kernel_size = pair(kernel_size, "kernel_size", self.name)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", self.name)
        self.padding = pair(padding, "padding", self.name, minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(
                f"{self.name}: padding must be at most half the kernel size, received padding "
                f"{self.padding} for kernel {self.kernel_size}"
            )
        if not isinstance(ceil_mode, bool):
            raise ValueError(
                f"{self.name}: ceil_mode must be True or False, received {ceil_mode!r}"
            )
        self.ceil_mode = ceil_mode

    def get_config(self) -> dict[str, Any]:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "ceil_mode": self.ceil_mode,
        }

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H_out, W_out) for an input of height × width."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (
            output_size(height, kh, sh, ph, ceil_mode=self.ceil_mode),
            output_size(width, kw, sw, pw, ceil_mode=self.ceil_mode),
        )

    def _edges(self, x_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """(top, bottom, left, right): the rows and columns of `pad_value` around X: p on each
        side, and at the bottom and right also what the last window (``ceil_mode``) runs past
        the padded input."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (_, _, h, w), (oh, ow) = x_shape, self.output_shape(*x_shape[2:])
        over_h = max(0, (oh - 1) * sh + kh - (h + 2 * ph))
        over_w = max(0, (ow - 1) * sw + kw - (w + 2 * pw))
        return ph, ph + over_h, pw, pw + over_w

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(f"{self.name}: expected samples of shape (C, H, W), received {shape}")
        self._check_size(shape[1:])
        return (shape[0], *self.output_shape(shape[1], shape[2]))

    def _check_size(self, size: tuple[int, ...]) -> None:
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if size[0] + 2 * ph < kh or size[1] + 2 * pw < kw:
            raise ValueError(
                f"{self.name}: the input's spatial size {size}"
                + (f" plus padding {self.padding}" if ph or pw else "")
                + f" is smaller than the kernel {self.kernel_size}"
            )

    def _padded(self, x: Any) -> Any:
        """X checked, with its padding added (X itself without padding)."""
        self.check_input(x, dtype=None)
        if x.ndim != 4:
            raise ValueError(
                f"{self.name}: expected a 4-d input (N, C, H, W), received shape "
                f"{tuple(x.shape)} ({x.ndim}-d)"
            )
        self._check_size(tuple(x.shape[2:]))
        edges = self._edges(tuple(x.shape))
        if not any(edges):
            return x
        return pad_edges(self.xp, self.backend.device, x, *edges, self.pad_value)

    def _windows(self, image: Any, x_shape: tuple[int, ...]) -> list[Any]:
        """The k_h·k_w pieces of the padded image of an input of shape ``x_shape``."""
        return windows(image, self.kernel_size, self.stride, self.output_shape(*x_shape[2:]))

    def _fold(self, pieces: list[Any], x_shape: tuple[int, ...]) -> Any:
        """dE/dX from per-offset pieces: folded into the padded image, the padding cropped."""
        (_, _, h, w), (top, bottom, left, right) = x_shape, self._edges(x_shape)
        size = (top + h + bottom, left + w + right)
        xp, device, crop = self.xp, self.backend.device, (top, bottom, left, right)
        return fold(xp, device, pieces, self.kernel_size, self.stride, size, crop=crop)


class MaxPool2D(_Pool2D):
    """Y[n, c, a, b] = max over the window at (s_h·a, s_w·b) of X[n, c].

    Shapes: X (N, C, H, W) -> Y (N, C, H_out, W_out).

    Backward (docs/math.md §8): the max is locally the selection of one entry, so dE/dY[a, b]
    goes, whole, to the position of the window's maximum and every other entry of the window
    gets 0; with overlapping windows an input entry adds up what it receives from each window.
    Ties: the gradient goes to the FIRST maximal entry of the window in row-major order, never
    split, so the rule is the same on every backend. It is found with comparisons only: offset k
    receives dE/dY where X at k equals Y and no earlier offset did.

    Padding (and, with ``ceil_mode``, what a last window runs past it) holds −∞ (as PyTorch's)
    and never takes gradient: where the window's maximum is −∞ itself (an input of −∞, e.g. a
    mask), the first entry of X that holds it does, as in PyTorch.
    A window holding a NaN gives Y = NaN and passes no gradient (PyTorch sends it to a NaN
    entry; the same rule as `ReLU`'s at NaN, and no extra work per window for it).
    """

    pad_value = -math.inf

    def call(self, x: Any) -> tuple[Any, Backprop]:
        image, x_shape = self._padded(x), tuple(x.shape)
        pieces = self._windows(image, x_shape)
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
            inside = self._inside(x_shape)
            for piece, within in zip(self._windows(image, x_shape), inside):
                hit = piece == y
                if within is not None:  # the padding's −∞ equals a Y of −∞
                    hit = xp.logical_and(hit, within)
                if free is not None:
                    hit = xp.logical_and(hit, free)
                free = (
                    xp.logical_not(hit)
                    if free is None
                    else xp.logical_and(free, xp.logical_not(hit))
                )
                grads.append(grad_out * xp.astype(hit, grad_out.dtype))
            return self._fold(grads, x_shape)

        return y, backprop

    def _inside(self, x_shape: tuple[int, ...]) -> list[Any]:
        """Per window offset (i, j), a boolean (H_out, W_out) mask of the windows whose entry
        there lies in X, not in the padding; None where every window's does (without padding,
        at every offset), which the shapes alone tell."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        (_, _, h, w), (oh, ow) = x_shape, self.output_shape(*x_shape[2:])
        edges = self._edges(x_shape)
        top, _, left, _ = edges

        def clear(i: int, pad: int, stride: int, out: int, size: int) -> bool:
            return pad <= i and i + stride * (out - 1) < pad + size

        masks: list[Any] = [None] * (kh * kw)
        if not any(edges):
            return masks
        xp, device = self.xp, self.backend.device
        ones = xp.ones((h, w), dtype=xp.bool, device=device)
        pieces = self._windows(pad_edges(xp, device, ones, *edges), x_shape)
        for i in range(kh):
            for j in range(kw):
                if not (clear(i, top, sh, oh, h) and clear(j, left, sw, ow, w)):
                    masks[i * kw + j] = pieces[i * kw + j]
        return masks


class AvgPool2D(_Pool2D):
    """Y[n, c, a, b] = (1 / n_ab) Σ over the window at (s_h·a, s_w·b) of the zero-padded X[n, c].

    Shapes: X (N, C, H, W) -> Y (N, C, H_out, W_out).

    n_ab = k_h·k_w when ``count_include_pad`` is True (the default, PyTorch's: the padding's zeros
    count), else the number of the window's entries that lie inside X (without padding the two
    agree). With ``ceil_mode``, a last window that runs past the padded input counts, as
    PyTorch's does, only its entries inside the padded input when ``count_include_pad`` is True:
    n_ab = (min(h₀ + k_h, H + p_h) − h₀)·(min(w₀ + k_w, W + p_w) − w₀) for the window at
    (h₀, w₀) = (s_h·a − p_h, s_w·b − p_w) in X's coordinates.

    Backward (docs/math.md §8): every entry of a window receives dE/dY[a, b] / n_ab; with
    overlapping windows the shares add up.
    """

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        count_include_pad: bool = True,
        *,
        ceil_mode: bool = False,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            kernel_size, stride, padding, ceil_mode=ceil_mode, backend=backend, dtype=dtype
        )
        self.count_include_pad = bool(count_include_pad)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count_include_pad": self.count_include_pad}

    def _counts(self, x_shape: tuple[int, ...], dtype: Any) -> Any:
        """n_ab: the rows of window a that count times its columns that count (inside X, or,
        with ``count_include_pad``, inside the padded X); k_h·k_w as a float where every
        window's all count, else an (H_out, W_out) array."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = self.output_shape(*x_shape[2:])
        include = self.count_include_pad

        def inside(size: int, kernel: int, stride: int, pad: int, count: int) -> list[float]:
            low, high = (-pad, size + pad) if include else (0, size)
            starts = [a * stride - pad for a in range(count)]
            return [float(min(s + kernel, high) - max(s, low)) for s in starts]

        rows = inside(x_shape[2], kh, sh, ph, oh)
        cols = inside(x_shape[3], kw, sw, pw, ow)
        if all(r == kh for r in rows) and all(c == kw for c in cols):
            return float(kh * kw)
        xp, device = self.xp, self.backend.device
        row_counts = xp.reshape(xp.asarray(rows, dtype=dtype, device=device), (oh, 1))
        return row_counts * xp.asarray(cols, dtype=dtype, device=device)

    def call(self, x: Any) -> tuple[Any, Backprop]:
        x_shape = tuple(x.shape)
        pieces = self._windows(self._padded(x), x_shape)
        total = pieces[0]
        for piece in pieces[1:]:
            total = total + piece
        count = self._counts(x_shape, x.dtype)
        y = total / count

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            if not input_grad:
                return None
            share = grad_out / count
            return self._fold([share] * len(pieces), x_shape)

        return y, backprop


class GlobalAvgPool2D(Layer):
    """Y[n, c] = (1 / (H·W)) Σ_{h,w} X[n, c, h, w]: each channel's mean over the whole image.

    Shapes: X (N, C, H, W) -> Y (N, C): the usual last step of a convolutional network before
    its Dense classifier, whatever the image size.

    Backward (docs/math.md §8, a window as large as the image): every entry of channel c
    receives dE/dY[n, c] / (H·W).
    """

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != 3 or not (shape[1] and shape[2]):
            raise ValueError(
                f"{self.name}: expected samples of shape (C, H, W) with H, W >= 1, received {shape}"
            )
        return (shape[0],)

    def call(self, x: Any) -> tuple[Any, Backprop]:
        self.check_input(x, ndim=4, dtype=None)
        xp, x_shape = self.xp, tuple(x.shape)
        n, c, h, w = x_shape
        if not (h and w):  # the mean of no entries: NaN, which a model should not meet silently
            self.compute_output_shape(x_shape[1:])
        y = xp.mean(x, axis=(2, 3))

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, (n, c))
            if not input_grad:
                return None
            share = xp.reshape(grad_out / float(h * w), (n, c, 1, 1))
            return xp.broadcast_to(share, x_shape)

        return y, backprop
