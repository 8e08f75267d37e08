"""Batch normalization of feature rows (N, F) and of image channels (N, C, H, W), and layer
normalization of each sample (docs/math.md §10)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from .._checks import number, whole
from ..backends import Backend, Random
from .base import Backprop, Layer, config_size, size_or_none


class _BatchNorm(Layer):
    """Y = γ ∘ X̂ + β with X̂ = (X − μ) / √(σ² + ε), per feature (channel).

    Training: μ and σ² are the mean and the biased variance of the batch over the M entries that
    share a feature (M = N for rows, N·H·W for images); the running statistics move towards them,
        running_mean ← (1 − momentum)·running_mean + momentum·μ
        running_var  ← (1 − momentum)·running_var  + momentum·σ²·M/(M − 1)   (unbiased, as PyTorch)
    Eval: μ, σ² are the running statistics (constants).

    Backward (docs/math.md §10), sums over the M entries of a feature:
        dE/dγ = Σ dE/dY ∘ X̂,   dE/dβ = Σ dE/dY
        training: dE/dX = γ / (M·√(σ² + ε)) ∘ (M·dE/dY − Σ dE/dY − X̂ ∘ Σ (dE/dY ∘ X̂))
        eval:     dE/dX = γ / √(σ² + ε) ∘ dE/dY
    (the training form is the full gradient through μ and σ², which depend on every entry).

    Params ``gamma`` (ones) and ``beta`` (zeros); buffers ``running_mean`` (zeros) and
    ``running_var`` (ones), saved with the model but not trained.
    """

    #: the axes the statistics are taken over, and the rank of the input
    axes: tuple[int, ...] = ()
    ndim = 0
    layout = ""

    def __init__(
        self,
        features: int | None = None,
        momentum: float = 0.1,
        eps: float = 1e-5,
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, dtype=dtype)
        self.features = size_or_none(features, "the number of features", self.name)
        hint = "; PyTorch's momentum=None (a cumulative average) is not offered"
        momentum = number(momentum, "momentum", self.name, hint if momentum is None else "")
        eps = number(eps, "eps", self.name)
        if not 0.0 <= momentum <= 1.0 or not 0.0 < eps < math.inf:
            raise ValueError(
                f"{self.name}: need 0 <= momentum <= 1 and a finite eps > 0, received "
                f"momentum={momentum}, eps={eps}"
            )
        self.momentum, self.eps = float(momentum), float(eps)

    def get_config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "eps": self.eps}

    @property
    def sized(self) -> bool:
        return self.features is not None

    def infer_sizes(self, input_shape: tuple[int, ...]) -> None:
        if self.features is None and len(input_shape) == self.ndim - 1:
            self.features = int(input_shape[0])

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != self.ndim - 1 or self.features not in (None, shape[0]):
            raise ValueError(
                f"{self.name}: expected samples of shape ({self.layout[4:]} with "
                f"{self.features or 'any number of'} features first, received {shape}"
            )
        return shape

    #: the config key of the number of features ("features", "channels")
    size_key = "features"

    @classmethod
    def array_shapes(cls, config: dict[str, Any]) -> dict[str, dict[str, tuple[int, ...]]]:
        shape = (config_size(config, cls.size_key, cls.__name__),)
        return {
            "params": {"gamma": shape, "beta": shape},
            "buffers": {"running_mean": shape, "running_var": shape},
        }

    @classmethod
    def from_arrays(
        cls,
        config: dict[str, Any],
        params: dict[str, Any],
        buffers: dict[str, Any],
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> Layer:
        """As `Layer.from_arrays`; a running variance below 0 (which no batch gives, and which
        makes every eval output NaN) is refused with a ValueError."""
        layer = super().from_arrays(config, params, buffers, backend=backend, dtype=dtype)
        xp, var = layer.xp, layer.buffers["running_var"]
        negative = int(xp.count_nonzero(var < 0))
        if negative:
            raise ValueError(
                f"{cls.__name__}: running_var holds {negative} negative values; expected "
                f"variances >= 0"
            )
        return layer

    def reset_parameters(self, rng: Random) -> None:
        """γ = 1, β = 0 and fresh running statistics (nothing is random)."""
        xp, shape, device = self.xp, (self.features,), self.backend.device
        self.params["gamma"] = xp.ones(shape, dtype=self.dtype, device=device)
        self.params["beta"] = xp.zeros(shape, dtype=self.dtype, device=device)
        self.buffers["running_mean"] = xp.zeros(shape, dtype=self.dtype, device=device)
        self.buffers["running_var"] = xp.ones(shape, dtype=self.dtype, device=device)

    def _per_feature(self, v: Any) -> Any:
        """A (features,) vector shaped to broadcast against the input."""
        return self.xp.reshape(v, (1, self.features) + (1,) * (self.ndim - 2))

    def call(self, x: Any) -> tuple[Any, Backprop]:
        self.check_input(x, dtype=self.params["gamma"].dtype)
        if x.ndim != self.ndim or x.shape[1] != self.features:
            raise ValueError(
                f"{self.name}: expected input of shape {self.layout} with "
                f"{self.features} features on axis 1, received {tuple(x.shape)}"
            )
        xp, training = self.xp, self.training
        if training:
            count = math.prod(x.shape) // self.features  # M, the entries per feature
            if count < 2:
                raise ValueError(
                    f"{self.name}: training needs more than one value per feature "
                    f"to estimate a variance, received shape {tuple(x.shape)}"
                )
            # NOTE: the mean is taken of X − K, K the first sample's entry of each feature, and
            # μ = K + mean(X − K): the same μ, but its rounding error scales with the spread of
            # X, not with |μ|; a constant feature gives X − μ = 0 exactly (x̂ = 0, Y = β), where
            # mean(X) rounded off by one ulp of |μ| was then divided by √ε (0.39 in float32)
            shift = x[(slice(0, 1), slice(None)) + (slice(0, 1),) * (self.ndim - 2)]
            offset = x - shift
            mean_offset = xp.mean(offset, axis=self.axes, keepdims=True)
            centred = offset - mean_offset
            mean = shift + mean_offset
            var = xp.mean(centred * centred, axis=self.axes, keepdims=True)
            m = self.momentum
            self.buffers["running_mean"] = (1.0 - m) * self.buffers[
                "running_mean"
            ] + m * xp.reshape(mean, (self.features,))
            self.buffers["running_var"] = (1.0 - m) * self.buffers["running_var"] + (
                m * count / (count - 1)
            ) * xp.reshape(var, (self.features,))
        else:
            centred = x - self._per_feature(self.buffers["running_mean"])
            var = self._per_feature(self.buffers["running_var"])
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        x_hat = centred * inv_std
        gamma = self._per_feature(self.params["gamma"])
        y = gamma * x_hat + self._per_feature(self.params["beta"])

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(x_hat.shape))
            sums = (self.features,)
            self.accumulate("gamma", xp.reshape(xp.sum(grad_out * x_hat, axis=self.axes), sums))
            self.accumulate("beta", xp.reshape(xp.sum(grad_out, axis=self.axes), sums))
            if not input_grad:
                return None
            scale = gamma * inv_std
            if not training:
                return scale * grad_out
            # mean over the M entries = (1/M)·Σ; this is the formula above divided through by M
            mean_grad = xp.mean(grad_out, axis=self.axes, keepdims=True)
            mean_grad_xhat = xp.mean(grad_out * x_hat, axis=self.axes, keepdims=True)
            return scale * (grad_out - mean_grad - x_hat * mean_grad_xhat)

        return y, backprop


class BatchNorm1D(_BatchNorm):
    """Batch normalization of feature rows: X (N, F) -> Y (N, F), statistics per feature over
    the batch (M = N). See `_BatchNorm` for the formulas.

    Args:
        features: F (None: taken from the first input). momentum: weight of the new batch in the running statistics. eps: ε.
    """

    axes, ndim, layout = (0,), 2, "(N, F)"

    @property
    def in_features(self) -> int | None:
        """F, as Dense names it (lets a model check its input rows)."""
        return self.features

    def get_config(self) -> dict[str, Any]:
        return {"features": self.features, **super().get_config()}


class BatchNorm2D(_BatchNorm):
    """Batch normalization of image channels: X (N, C, H, W) -> Y (N, C, H, W), statistics per
    channel over N, H and W (M = N·H·W). See `_BatchNorm` for the formulas.

    Args:
        channels: C (None: taken from the first input). momentum: weight of the new batch in the running statistics. eps: ε.
    """

    axes, ndim, layout, size_key = (0, 2, 3), 4, "(N, C, H, W)", "channels"

    def __init__(
        self,
        channels: int | None = None,
        momentum: float = 0.1,
        eps: float = 1e-5,
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(channels, momentum, eps, backend=backend, dtype=dtype)

    @property
    def channels(self) -> int | None:
        """C (the features of `_BatchNorm`)."""
        return self.features

    def get_config(self) -> dict[str, Any]:
        return {"channels": self.channels, **super().get_config()}


class LayerNorm(Layer):
    """Layer normalization (Ba, Kiros & Hinton, 2016): each sample is normalized over its last
    axes, the D entries of ``normalized_shape``, then scaled and shifted entrywise:
        Y = γ ∘ X̂ + β,   X̂ = (X − μ) / √(σ² + ε),
    μ and σ² the mean and the biased variance of those D entries (one pair per sample and per
    leading position). Unlike batch normalization nothing depends on the other samples, so
    training and eval compute the same thing and there are no running statistics.

    Backward (docs/math.md §10.4), with means over the same D entries and G = γ ∘ dE/dY:
        dE/dγ = Σ dE/dY ∘ X̂,   dE/dβ = Σ dE/dY          (sums over every leading axis)
        dE/dX = (G − mean(G) − X̂ ∘ mean(G ∘ X̂)) / √(σ² + ε)
    (batch normalization's formula with the roles of the axes exchanged).

    Shapes: X (N, …, *normalized_shape) -> Y of the same shape; γ (``params["gamma"]``, ones)
    and β (``params["beta"]``, zeros) of shape ``normalized_shape``.

    Args:
        normalized_shape: the trailing shape normalized over, an int for the last axis only;
            None (the default): the last axis, its size taken from the first input. For images
            normalized over (C, H, W), as PyTorch's ``LayerNorm([C, H, W])``, give the three.
        eps: ε.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int] | None = None,
        eps: float = 1e-5,
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, dtype=dtype)
        self.normalized_shape = _trailing_shape(normalized_shape, self.name)
        eps = number(eps, "eps", self.name)
        if not 0.0 < eps < math.inf:  # eps = inf: every output β, every gradient 0
            raise ValueError(f"{self.name}: eps must be positive and finite, received {eps}")
        self.eps = float(eps)

    def get_config(self) -> dict[str, Any]:
        shape = self.normalized_shape
        return {"normalized_shape": None if shape is None else list(shape), "eps": self.eps}

    @classmethod
    def array_shapes(cls, config: dict[str, Any]) -> dict[str, dict[str, tuple[int, ...]]]:
        shape = config.get("normalized_shape")
        if shape is None:  # not built yet: it holds nothing
            return {"params": {}, "buffers": {}}
        if not isinstance(shape, list) or not shape:
            raise ValueError(
                f"{cls.__name__}: normalized_shape must be a non-empty list of sizes, "
                f"received {shape!r}"
            )
        sizes = tuple(config_size({"size": n}, "size", cls.__name__) for n in shape)
        return {"params": {"gamma": sizes, "beta": sizes}, "buffers": {}}

    @property
    def sized(self) -> bool:
        return self.normalized_shape is not None

    def infer_sizes(self, input_shape: tuple[int, ...]) -> None:
        if self.normalized_shape is None and len(input_shape) >= 1:
            self.normalized_shape = (int(input_shape[-1]),)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape, norm = tuple(input_shape), self.normalized_shape
        if norm is not None and (len(shape) < len(norm) or shape[len(shape) - len(norm) :] != norm):
            raise ValueError(
                f"{self.name}: expected samples whose shape ends with {norm}, received {shape}"
            )
        if not shape:
            raise ValueError(f"{self.name}: expected samples with at least one axis, received ()")
        return shape

    def reset_parameters(self, rng: Random) -> None:
        """γ = 1, β = 0 (nothing is random)."""
        xp, shape, device = self.xp, self.normalized_shape, self.backend.device
        self.params["gamma"] = xp.ones(shape, dtype=self.dtype, device=device)
        self.params["beta"] = xp.zeros(shape, dtype=self.dtype, device=device)

    def call(self, x: Any) -> tuple[Any, Backprop]:
        """Y = γ ∘ (X − μ)/√(σ² + ε) + β; backprop as in the class docstring."""
        xp, gamma = self.xp, self.params["gamma"]
        self.check_input(x, dtype=gamma.dtype)
        self.compute_output_shape(tuple(x.shape[1:]))
        k = len(self.normalized_shape)
        axes = tuple(range(x.ndim - k, x.ndim))
        lead = tuple(range(x.ndim - k))
        # NOTE: centred on the sample's first entry first, as in `_BatchNorm.call`: a constant
        # sample gives X − μ = 0 exactly, and the rounding error of μ scales with the spread
        shift = x[(..., *(slice(0, 1),) * k)]
        offset = x - shift
        centred = offset - xp.mean(offset, axis=axes, keepdims=True)
        inv_std = 1.0 / xp.sqrt(xp.mean(centred * centred, axis=axes, keepdims=True) + self.eps)
        x_hat = centred * inv_std
        y = gamma * x_hat + self.params["beta"]

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(x_hat.shape))
            self.accumulate("gamma", xp.sum(grad_out * x_hat, axis=lead))
            self.accumulate("beta", xp.sum(grad_out, axis=lead))
            if not input_grad:
                return None
            g = grad_out * gamma
            mean_g = xp.mean(g, axis=axes, keepdims=True)
            mean_g_xhat = xp.mean(g * x_hat, axis=axes, keepdims=True)
            return inv_std * (g - mean_g - x_hat * mean_g_xhat)

        return y, backprop


def _trailing_shape(value: int | Sequence[int] | None, who: str) -> tuple[int, ...] | None:
    """``value`` (an int or a sequence of positive ints) as a tuple, or None; raises ValueError
    naming the layer otherwise."""
    if value is None:
        return None
    try:
        dims = (value,) if whole(value) is not None else tuple(value)
    except TypeError:
        dims = ()
    sizes = tuple(whole(d) for d in dims)
    if not sizes or not all(d is not None and d >= 1 for d in sizes):
        raise ValueError(
            f"{who}: normalized_shape must be a positive int or a non-empty sequence of them, "
            f"received {value!r}"
        )
    return tuple(int(d) for d in dims)
