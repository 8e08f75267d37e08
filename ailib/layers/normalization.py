"""Batch normalization of feature rows (N, F) and of image channels (N, C, H, W) (docs/math.md §10)."""

from __future__ import annotations

import math
from typing import Any

from ..backends import Backend, Random
from .base import Layer, config_size


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
        features: int,
        momentum: float = 0.1,
        eps: float = 1e-5,
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, dtype=dtype)
        if not isinstance(features, int) or features < 1:
            raise ValueError(
                f"{self.name}: the number of features must be a positive int, received {features!r}"
            )
        if not 0.0 <= momentum <= 1.0 or not eps > 0.0:
            raise ValueError(
                f"{self.name}: need 0 <= momentum <= 1 and eps > 0, received "
                f"momentum={momentum}, eps={eps}"
            )
        self.features, self.momentum, self.eps = features, float(momentum), float(eps)
        self.cache: tuple[Any, Any, bool] | None = None
        self.reset_parameters(self.backend.random(0))

    def get_config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "eps": self.eps}

    #: the config key of the number of features ("features", "channels")
    size_key = "features"

    @classmethod
    def array_shapes(cls, config: dict[str, Any]) -> dict[str, dict[str, tuple[int, ...]]]:
        shape = (config_size(config, cls.size_key, cls.__name__),)
        return {
            "params": {"gamma": shape, "beta": shape},
            "buffers": {"running_mean": shape, "running_var": shape},
        }

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

    def forward(self, x: Any) -> Any:
        self.check_input(x, dtype=self.params["gamma"].dtype)
        if x.ndim != self.ndim or x.shape[1] != self.features:
            raise ValueError(
                f"{self.name}: expected input of shape {self.layout} with "
                f"{self.features} features on axis 1, received {tuple(x.shape)}"
            )
        xp = self.xp
        if self.training:
            count = math.prod(x.shape) // self.features  # M, the entries per feature
            if count < 2:
                raise ValueError(
                    f"{self.name}: training needs more than one value per feature "
                    f"to estimate a variance, received shape {tuple(x.shape)}"
                )
            mean = xp.mean(x, axis=self.axes, keepdims=True)
            centred = x - mean
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
        self.cache = (x_hat, inv_std, self.training)
        return self._per_feature(self.params["gamma"]) * x_hat + self._per_feature(
            self.params["beta"]
        )

    def backward(self, grad_out: Any) -> Any:
        self.require_forward(self.cache)
        x_hat, inv_std, training = self.cache
        self.check_grad(grad_out, tuple(x_hat.shape))
        xp = self.xp
        self.grads["gamma"] = xp.reshape(xp.sum(grad_out * x_hat, axis=self.axes), (self.features,))
        self.grads["beta"] = xp.reshape(xp.sum(grad_out, axis=self.axes), (self.features,))
        scale = self._per_feature(self.params["gamma"]) * inv_std
        if not training:
            return scale * grad_out
        # mean over the M entries = (1/M)·Σ; this is the formula above divided through by M
        mean_grad = xp.mean(grad_out, axis=self.axes, keepdims=True)
        mean_grad_xhat = xp.mean(grad_out * x_hat, axis=self.axes, keepdims=True)
        return scale * (grad_out - mean_grad - x_hat * mean_grad_xhat)


class BatchNorm1D(_BatchNorm):
    """Batch normalization of feature rows: X (N, F) -> Y (N, F), statistics per feature over
    the batch (M = N). See `_BatchNorm` for the formulas.

    Args:
        features: F. momentum: weight of the new batch in the running statistics. eps: ε.
    """

    axes, ndim, layout = (0,), 2, "(N, F)"

    def __init__(
        self,
        features: int,
        momentum: float = 0.1,
        eps: float = 1e-5,
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(features, momentum, eps, backend=backend, dtype=dtype)
        self.in_features = features  # lets Sequential check the model's input rows

    def get_config(self) -> dict[str, Any]:
        return {"features": self.features, **super().get_config()}


class BatchNorm2D(_BatchNorm):
    """Batch normalization of image channels: X (N, C, H, W) -> Y (N, C, H, W), statistics per
    channel over N, H and W (M = N·H·W). See `_BatchNorm` for the formulas.

    Args:
        channels: C. momentum: weight of the new batch in the running statistics. eps: ε.
    """

    axes, ndim, layout, size_key = (0, 2, 3), 4, "(N, C, H, W)", "channels"

    def __init__(
        self,
        channels: int,
        momentum: float = 0.1,
        eps: float = 1e-5,
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(channels, momentum, eps, backend=backend, dtype=dtype)
        self.channels = channels

    def get_config(self) -> dict[str, Any]:
        return {"channels": self.channels, **super().get_config()}
