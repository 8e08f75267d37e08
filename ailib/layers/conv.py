"""2-D convolution on NCHW batches by im2col and one matrix product (docs/math.md §7)."""

from __future__ import annotations

from typing import Any, Sequence

from .._checks import flag, positive_int
from ..backends import Backend, Random, matmul
from . import init as initializers
from ._windows import fold, output_size, pad_edges, pair, windows
from .base import Backprop, Layer, config_flag, config_size, size_or_none


class Conv2D(Layer):
    """Y[n, o] = Σ_c W[o, c] ⋆ X[n, c] + B[o]: a cross-correlation, as in every deep-learning library.

    Shapes: X (N, C_in, H, W) -> Y (N, C_out, H_out, W_out) with
    H_out = ⌊(H + 2·p_h − d_h·(k_h − 1) − 1) / s_h⌋ + 1 (likewise W_out; d the dilation, 1 by
    default); W (C_out, C_in/g, k_h, k_w) for g groups (1 by default); B (C_out,).
    Stored as ``params["W"]`` and ``params["b"]``.

    ``padding="same"`` (stride 1 only, as in PyTorch) pads each axis by d·(k − 1) in all, so
    that H_out = H and W_out = W: ⌊d·(k − 1)/2⌋ rows on top and the rest (one more when
    d·(k − 1) is odd) at the bottom, likewise left and right (PyTorch's split, docs/math.md
    §7.5); ``padding="valid"`` is no padding.

    im2col (docs/math.md §7): the zero-padded input, laid out channels-first (C, N, H, W), is cut
    into its k_h·k_w strided windows (`ailib.layers._windows.windows`); stacking them gives the
    column matrix X̂ of shape (C_in·k_h·k_w, N·H_out·W_out), and then, with Ŵ = W reshaped to
    (C_out, C_in·k_h·k_w), the seed's Dense formulas apply unchanged:
        forward:  Ŷ = Ŵ·X̂ + B                           (C_out, N·H_out·W_out)
        backward: dE/dW = dE/dŶ·X̂ᵀ,  dE/dB = Σ_columns dE/dŶ,  dE/dX̂ = Ŵᵀ·dE/dŶ
    and dE/dX is col2im of dE/dX̂: each window's slice of it is added back at its offset
    (`fold`, a sum of shifted pieces built by concatenation, never by scatter), then the padding
    is cropped.

    Dilation d takes the window's taps d apart (offsets d·i); groups g split the channels into g
    blocks, output block j reading input block j only: X̂'s rows, channel-major, reshape to
    (g, C_in/g·k_h·k_w, N·H_out·W_out) and Ŵ to (g, C_out/g, C_in/g·k_h·k_w), and the products
    above become one batched matmul over the groups (docs/math.md §7.5). g = C_in is a
    depthwise convolution (each channel its own filters).

    Args:
        in_channels, out_channels: C_in and C_out.
        kernel_size, stride, dilation: an int or a (rows, cols) pair.
        padding: zeros added on every side, an int or a (rows, cols) pair; or "same" (the
            output as large as the input; stride 1 only) or "valid" (0), as in PyTorch.
        groups: g, which must divide C_in and C_out.
        init: initialiser of W by name (fan_in = C_in/g·k_h·k_w, fan_out = C_out·k_h·k_w, as
            PyTorch counts them).
        bias: whether to learn B.
        seed: seed of the initial weights when the model has no seed (a model's seed draws every
            layer's weights in order).

    ``Conv2D(out_channels=32, kernel_size=3)`` leaves C_in open: it is taken from the first
    input (the shape flowing into it in a model), and W is made then (`Layer.build`).

    The attributes ``in_channels`` and ``out_channels`` describe the expected input; the layer
    has no ``in_features`` since it takes images, not feature rows.
    """

    def __init__(
        self,
        in_channels: int | None = None,
        out_channels: int | None = None,
        kernel_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        *,
        init: str = "he_normal",
        bias: bool = True,
        seed: int | None = None,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, dtype=dtype, seed=seed)
        if out_channels is None or kernel_size is None:
            raise ValueError(
                "Conv2D: give out_channels and kernel_size, e.g. Conv2D(out_channels=32, "
                "kernel_size=3) or Conv2D(1, 32, 3)"
            )
        self.in_channels = size_or_none(in_channels, "in_channels", self.name)
        self.out_channels = int(size_or_none(out_channels, "out_channels", self.name) or 0)
        self.kernel_size = pair(kernel_size, "kernel_size", self.name)
        self.stride = pair(stride, "stride", self.name)
        self.dilation = pair(dilation, "dilation", self.name)
        #: as given: a (rows, cols) pair, or "same" or "valid"
        self.padding: tuple[int, int] | str = _padding(padding, self.name)
        if self.padding == "same" and self.stride != (1, 1):
            raise ValueError(
                f"{self.name}: padding='same' needs stride 1 (as in PyTorch), received stride "
                f"{self.stride}; give the padding as an int or a pair for a strided convolution"
            )
        self.groups = int(size_or_none(groups, "groups", self.name) or 0)
        self._check_groups("out_channels", self.out_channels)
        if self.in_channels is not None:
            self._check_groups("in_channels", self.in_channels)
        self.init, self.bias = init, flag(bias, "bias", self.name)
        initializers.get(init)  # fail early on an unknown name

    def get_config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "init": self.init,
            "bias": self.bias,
        }

    @property
    def sized(self) -> bool:
        return self.in_channels is not None

    def infer_sizes(self, input_shape: tuple[int, ...]) -> None:
        if self.in_channels is None and len(input_shape) == 3:
            self.in_channels = int(input_shape[0])

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != 3 or self.in_channels not in (None, shape[0]):
            raise ValueError(
                f"{self.name}: expected samples of shape ({self.in_channels or 'C'}, H, W), "
                f"received {shape}" + ("; add a Reshape layer first" if len(shape) == 1 else "")
            )
        self._check_groups("in_channels", shape[0])
        self._check_size(shape[1:])
        return (self.out_channels, *self.output_shape(shape[1], shape[2]))

    @classmethod
    def array_shapes(cls, config: dict[str, Any]) -> dict[str, dict[str, tuple[int, ...]]]:
        c_in, c_out = (
            config_size(config, k, cls.__name__) for k in ("in_channels", "out_channels")
        )
        kh, kw = pair(config.get("kernel_size"), "kernel_size", cls.__name__)
        groups = positive_int(config.get("groups", 1), "groups", cls.__name__)
        if c_in % groups or c_out % groups:
            raise ValueError(
                f"{cls.__name__}: in_channels {c_in} and out_channels {c_out} must both be "
                f"divisible by groups {groups}"
            )
        params = {"W": (c_out, c_in // groups, kh, kw)}
        if config_flag(config, "bias", True, cls.__name__):
            params["b"] = (c_out,)
        return {"params": params, "buffers": {}}

    def reset_parameters(self, rng: Random) -> None:
        kh, kw = self.kernel_size
        per_group = self.in_channels // self.groups
        shape = (self.out_channels, per_group, kh, kw)
        self.params["W"] = initializers.get(self.init)(
            rng, shape, per_group * kh * kw, self.out_channels * kh * kw, self.dtype
        )
        if self.bias:
            self.params["b"] = initializers.zeros(rng, (self.out_channels,), 0, 0, self.dtype)

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H_out, W_out) for an input of height × width."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom, left, right = self._pads()
        return (
            output_size(height + top + bottom, kh, sh, 0, dh),
            output_size(width + left + right, kw, sw, 0, dw),
        )

    def call(self, x: Any) -> tuple[Any, Backprop]:
        """Ŷ = Ŵ·X̂ + B (per group); backprop: dE/dW = dE/dŶ·X̂ᵀ, dE/dB = Σ_columns dE/dŶ, and
        dE/dX = col2im(Ŵᵀ·dE/dŶ) with the padding cropped."""
        self._check(x)
        xp, w, device = self.xp, self.params["W"], self.backend.device
        n, c, h, wd = x.shape
        oh, ow = self.output_shape(h, wd)
        (top, bottom, left, right), k = self._pads(), self.kernel_size[0] * self.kernel_size[1]
        out, g, cols_n = self.out_channels, self.groups, n * oh * ow
        # Ŵ and X̂ as (g, rows, cols) stacks: one product per group (g = 1: a plain matmul)
        w_hat = xp.reshape(w, (out, c * k) if g == 1 else (g, out // g, c // g * k))
        # NOTE: channels first, so that the stacked windows are already X̂'s (C·k, N·H·W) layout
        # and no transpose of the large column matrix is needed.
        image = pad_edges(xp, device, xp.permute_dims(x, (1, 0, 2, 3)), top, bottom, left, right)
        pieces = windows(image, self.kernel_size, self.stride, (oh, ow), self.dilation)
        cols = xp.reshape(
            xp.stack(pieces, axis=1),
            (c * k, cols_n) if g == 1 else (g, c // g * k, cols_n),
        )
        # (matmul: ``@``, or for g = 1 cuBLAS directly while a CUDA graph captures the step)
        y = xp.reshape(matmul(w_hat, cols), (out, cols_n))
        if self.bias:
            y += xp.expand_dims(self.params["b"], axis=1)
        y = xp.permute_dims(xp.reshape(y, (out, n, oh, ow)), (1, 0, 2, 3))

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, (n, out, oh, ow))
            grad = xp.reshape(xp.permute_dims(grad_out, (1, 0, 2, 3)), (out, cols_n))
            grad_hat = grad if g == 1 else xp.reshape(grad, (g, out // g, cols_n))
            # NOTE: dE/dW = (X̂·dE/dŶᵀ)ᵀ, not dE/dŶ·X̂ᵀ: NumPy's matmul of a wide matrix by a
            # transposed view takes a slow non-BLAS path (30-100x at N·H·W of 10⁵)
            d_w = xp.matrix_transpose(matmul(cols, xp.matrix_transpose(grad_hat)))
            self.accumulate("W", xp.reshape(d_w, w.shape))
            if self.bias:
                self.accumulate("b", xp.sum(grad, axis=1))
            if not input_grad:  # skips dE/dX̂ and its col2im
                return None
            grad_cols = matmul(xp.matrix_transpose(w_hat), grad_hat)
            grad_cols = xp.reshape(grad_cols, (c, k, n, oh, ow))
            pieces = [grad_cols[:, i, ...] for i in range(k)]
            size, crop = (top + h + bottom, left + wd + right), (top, bottom, left, right)
            image = fold(
                xp, device, pieces, self.kernel_size, self.stride, size, self.dilation, crop
            )
            return xp.permute_dims(image, (1, 0, 2, 3))

        return y, backprop

    def _check(self, x: Any) -> None:
        self.check_input(x, dtype=self.params["W"].dtype)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.name}: expected input of shape (N, {self.in_channels}, H, W) (NCHW), "
                f"received {tuple(x.shape)}"
                + ("; add a Reshape layer first for flat rows" if x.ndim == 2 else "")
            )
        self._check_size(tuple(x.shape[2:]))

    def _check_size(self, size: tuple[int, ...]) -> None:
        (kh, kw), (dh, dw), (top, bottom, left, right) = (
            self.kernel_size,
            self.dilation,
            self._pads(),
        )
        span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        if size[0] + top + bottom < span[0] or size[1] + left + right < span[1]:
            raise ValueError(
                f"{self.name}: the input's spatial size {size} plus padding "
                f"{self.padding!r} is smaller than the kernel {self.kernel_size}"
                + (
                    f" dilated by {self.dilation} (spans {span})"
                    if span != self.kernel_size
                    else ""
                )
            )

    def _pads(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right): the zero rows and columns added around X. "same":
        d·(k − 1) per axis, the odd one at the bottom or right (PyTorch's split); "valid":
        none."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            th, tw = (d * (k - 1) for d, k in zip(self.dilation, self.kernel_size))
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        ph, pw = self.padding
        return (ph, ph, pw, pw)

    def _check_groups(self, what: str, channels: int) -> None:
        if channels % self.groups:
            raise ValueError(
                f"{self.name}: groups={self.groups} must divide {what}, received {what}={channels}"
            )


def _padding(value: Any, who: str) -> tuple[int, int] | str:
    """Conv2D's ``padding``: "same" or "valid" as given, else a (rows, cols) pair of ints >= 0;
    a ValueError naming the layer for anything else."""
    if isinstance(value, str):
        if value in ("same", "valid"):
            return value
    else:
        try:
            return pair(value, "padding", who, minimum=0)
        except ValueError:
            pass
    raise ValueError(
        f"{who}: padding must be 'same', 'valid', an int >= 0 or a pair of them, received {value!r}"
    )
