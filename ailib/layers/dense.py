"""The Dense (fully connected) layer of the seed document, section 2; derivation in docs/math.md §2."""

from __future__ import annotations

from typing import Any

from ..backends import Backend, Random
from . import init as initializers
from .base import Layer, config_flag, config_size


class Dense(Layer):
    """Y = X·Wᵀ + B: the seed's Y = W·X + B applied to every row of a batch.

    Shapes: X (N, in_features) -> Y (N, out_features); W (out_features, in_features) as in the
    seed (row j holds the weights into output j); B (out_features,). Stored as ``params["W"]``
    and ``params["b"]``; their gradients as ``grads["W"]`` and ``grads["b"]``.

    Backward, given dE/dY (N, out) and summing the seed's per-sample formulas over the batch:
        dE/dW = (dE/dY)ᵀ·X        (out, in)   — the seed's dE/dY·Xᵀ, one outer product per sample
        dE/dB = Σₙ dE/dYₙ          (out,)
        dE/dX = dE/dY·W            (N, in)     — the seed's Wᵀ·dE/dY, in row form

    Args:
        in_features, out_features: sizes of X's and Y's last axis.
        init: initialiser of W by name ("glorot_uniform", "he_normal", ...; see `ailib.layers.init`).
        bias: whether to learn B.
        seed: seed of the initial weights (`Sequential(seed=...)` re-draws them in layer order).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        init: str = "glorot_uniform",
        bias: bool = True,
        seed: int | None = None,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, dtype=dtype)
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"Dense: in_features and out_features must be positive, received "
                f"({in_features}, {out_features})"
            )
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.init, self.bias = init, bias
        initializers.get(init)  # fail early on an unknown name
        self.x = None
        self.reset_parameters(self.backend.random(seed))

    def get_config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "init": self.init,
            "bias": self.bias,
        }

    @classmethod
    def array_shapes(cls, config: dict[str, Any]) -> dict[str, dict[str, tuple[int, ...]]]:
        n_in, n_out = (
            config_size(config, k, cls.__name__) for k in ("in_features", "out_features")
        )
        params = {"W": (n_out, n_in)}
        if config_flag(config, "bias", True, cls.__name__):
            params["b"] = (n_out,)
        return {"params": params, "buffers": {}}

    def reset_parameters(self, rng: Random) -> None:
        shape = (self.out_features, self.in_features)
        self.params["W"] = initializers.get(self.init)(
            rng, shape, self.in_features, self.out_features, self.dtype
        )
        if self.bias:
            self.params["b"] = initializers.zeros(rng, (self.out_features,), 0, 0, self.dtype)

    def forward(self, x: Any) -> Any:
        self.check_input(x, ndim=2, features=self.in_features, dtype=self.params["W"].dtype)
        self.x = x
        y = self.xp.matmul(x, self.xp.matrix_transpose(self.params["W"]))
        if self.bias:
            y += self.params["b"]
        return y

    def backward(self, grad_out: Any) -> Any:
        self.backward_params(grad_out)
        return self.xp.matmul(grad_out, self.params["W"])

    def backward_params(self, grad_out: Any) -> None:
        """dE/dW and dE/dB only (skips dE/dX: what the first layer of a model needs)."""
        self.require_forward(self.x)
        xp, x = self.xp, self.x
        self.check_grad(grad_out, (x.shape[0], self.out_features))
        self.grads.clear()  # free the previous step's dE/dW before forming the next one
        self.grads["W"] = xp.matmul(xp.matrix_transpose(grad_out), x)
        if self.bias:
            self.grads["b"] = xp.sum(grad_out, axis=0)
