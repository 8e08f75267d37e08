"""Max, average and global average pooling over the spatial axes of NCHW batches (docs/math.md §8)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from .._checks import flag
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

    def _checked(self, x: Any) -> tuple[int, ...]:
        """X's shape, once X is checked to be a batch of images the windows fit."""
        self.check_input(x, dtype=None)
        if x.ndim != 4:
            raise ValueError(
                f"{self.name}: expected a 4-d input (N, C, H, W), received shape "
                f"{tuple(x.shape)} ({x.ndim}-d)"
            )
        self._check_size(tuple(x.shape[2:]))
        return tuple(x.shape)

    def _padded(self, x: Any, x_shape: tuple[int, ...]) -> Any:
        """X (checked, of shape ``x_shape``) with its padding added (X itself without padding)."""
        edges = self._edges(x_shape)
        if not any(edges):
            return x
        return pad_edges(self.xp, self.backend.device, x, *edges, self.pad_value)

    def tiled(self, x_shape: tuple[int, ...]) -> bool:
        """Whether the windows tile an input of shape ``x_shape`` exactly: stride = kernel, no
        padding, and the kernel divides H and W (so ``ceil_mode`` changes nothing). Then
        every entry of X lies in exactly one window, and X reshaped to
        (N, C, H/k_h, k_h, W/k_w, k_w) holds window (a, b)'s entry (i, j) at [:, :, a, i, b, j];
        `MaxPool2D` pools such an input through views of that reshape instead of the general
        strided pieces and fold (the same math, less copying)."""
        (kh, kw), (_, _, h, w) = self.kernel_size, x_shape
        return (
            self.stride == self.kernel_size
            and self.padding == (0, 0)
            and h % kh == 0
            and w % kw == 0
        )

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
        x_shape = self._checked(x)
        if self.tiled(x_shape):
            return self._call_tiled(x)
        image = self._padded(x, x_shape)
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

    def _call_tiled(self, x: Any) -> tuple[Any, Backprop]:
        """Windows that tile X (`tiled`): the max over a window is the max over its rows of
        each row's max, M[n, c, h, b] = max_j X[n, c, h, k_w·b + j] and
        Y[n, c, a, b] = max_i M[n, c, k_h·a + i, b], formed from views of X reshaped.

        Backward: the first maximum of a window in row-major order lies in its first row i
        with M = Y, at the first column j of that row with X = M (a row holds Y exactly where
        its max equals Y). So dE/dM = dE/dY at that row, 0 at the others, and
        dE/dX = dE/dM at that column, 0 at the others: the general path's T_k, as the product
        of a row mask and a column mask, and the same values, −0 and NaN included (a NaN
        window has no M = Y)."""
        xp, (kh, kw) = self.xp, self.kernel_size
        # NOTE: pooled channels-first, (C, N, H, W), the order in which Conv2D's output lies in
        # memory: N and C are alike to pooling, so Y and dE/dX keep that layout, and Conv2D's
        # backward then reads dE/dY as its (C_out, N·H·W) matrix without a copy
        x_cn = xp.permute_dims(x, (1, 0, 2, 3))
        c, n, h, w = x_cn.shape
        columns = xp.reshape(x_cn, (c, n, h, w // kw, kw))  # [..., j]: column j of the windows
        m = _maximum(xp, [columns[..., j] for j in range(kw)])  # (C, N, H, W/k_w)
        rows = xp.reshape(m, (c, n, h // kh, kh, w // kw))  # [:, :, :, i, :]: their row i
        y = _maximum(xp, [rows[:, :, :, i, :] for i in range(kh)])

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, (n, c, h // kh, w // kw))
            if not input_grad:
                return None
            grad = xp.permute_dims(grad_out, (1, 0, 2, 3))
            d_m = _to_first_max(xp, [rows[:, :, :, i, :] for i in range(kh)], y, grad)
            d_m = xp.reshape(xp.stack(d_m, axis=3), (c, n, h, w // kw))
            d_x = _to_first_max(xp, [columns[..., j] for j in range(kw)], m, d_m)
            d_x = xp.reshape(xp.stack(d_x, axis=-1), (c, n, h, w))
            return xp.permute_dims(d_x, (1, 0, 2, 3))

        return xp.permute_dims(y, (1, 0, 2, 3)), backprop

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
        self.count_include_pad = flag(count_include_pad, "count_include_pad", self.name)

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
        x_shape = self._checked(x)
        pieces = self._windows(self._padded(x, x_shape), x_shape)
        # NOTE: the sum accumulates in place in its first partial sum: one new array, not
        # k_h·k_w − 1 (the same additions in the same order)
        total = pieces[0] if len(pieces) == 1 else pieces[0] + pieces[1]
        for piece in pieces[2:]:
            total += piece
        count = self._counts(x_shape, x.dtype)
        y = total / count

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            if not input_grad:
                return None
            share = grad_out / count
            return self._fold([share] * len(pieces), x_shape)

        return y, backprop


def _maximum(xp: Any, parts: list[Any]) -> Any:
    """The elementwise max of ``parts`` (NaN wherever one is NaN: ``maximum`` propagates it)."""
    top = parts[0]
    for part in parts[1:]:
        top = xp.maximum(top, part)
    return top


def _to_first_max(xp: Any, parts: list[Any], top: Any, grad: Any) -> list[Any]:
    """``grad`` ∘ T_k per part, for ``top`` the elementwise max of ``parts``: T_k is 1 where part
    k is the first to equal ``top`` and 0 elsewhere (all 0 where ``top`` is NaN), as
    `MaxPool2D`'s general path routes dE/dY (the same products, so the same values)."""
    routed = []
    for hit in _first_max(xp, parts, top):
        share = xp.astype(hit, grad.dtype)
        share *= grad
        routed.append(share)
    return routed


def _first_max(xp: Any, parts: list[Any], top: Any) -> list[Any]:
    """T_k = [part k = top] ∧ no earlier part equals top, for ``top`` the elementwise max of
    ``parts``. The last part holds ``top`` wherever no earlier one does, unless ``top`` is NaN;
    so with two parts, T_1 = [part 0 < top]."""
    if len(parts) == 2:
        return [parts[0] == top, parts[0] < top]
    free, hits = None, []
    for part in parts:
        hit = part == top if free is None else xp.logical_and(part == top, free)
        free = xp.logical_not(hit) if free is None else xp.logical_and(free, xp.logical_not(hit))
        hits.append(hit)
    return hits


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
