"""The Dense (fully connected) layer of the seed document, section 2; derivation in docs/math.md §2."""

from __future__ import annotations

from typing import Any

from .. import backends
from ..backends import Backend, Random
from . import init as initializers
from .base import Backprop, Layer, config_flag, config_size, size_or_none


class Dense(Layer):
    """Y = X·Wᵀ + B: the seed's Y = W·X + B applied to every row of a batch.

    Shapes: X (N, in_features) -> Y (N, out_features); W (out_features, in_features) as in the
    seed (row j holds the weights into output j); B (out_features,). Stored as ``params["W"]``
    and ``params["b"]``; their gradients as ``grads["W"]`` and ``grads["b"]``.

    Backward, given dE/dY (N, out) and summing the seed's per-sample formulas over the batch:
        dE/dW = (dE/dY)ᵀ·X        (out, in)   — the seed's dE/dY·Xᵀ, one outer product per sample
        dE/dB = Σₙ dE/dYₙ          (out,)
        dE/dX = dE/dY·W            (N, in)     — the seed's Wᵀ·dE/dY, in row form

    ``Dense(128)`` gives the output size only: the input size is taken from the first input
    (the shape flowing into it in a model), and W is made then (`Layer.build`).

    Args:
        in_features, out_features: sizes of X's and Y's last axis; with one size given, it is
            out_features.
        init: initialiser of W by name ("glorot_uniform", "he_normal", ...; see `ailib.layers.init`).
        bias: whether to learn B.
        seed: seed of the initial weights when the model has no seed (a model's seed draws every
            layer's weights in order).
    """

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int | None = None,
        *,
        init: str = "glorot_uniform",
        bias: bool = True,
        seed: int | None = None,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, dtype=dtype, seed=seed)
        if out_features is None:  # Dense(128): the output size only
            in_features, out_features = None, in_features
        if out_features is None:
            raise ValueError("Dense: give the output size, e.g. Dense(128) or Dense(784, 128)")
        if not isinstance(bias, bool):  # bias="no" learned a bias; save refused bias=0 later
            raise TypeError(f"Dense: bias must be True or False, received {bias!r}")
        self.in_features = size_or_none(in_features, "in_features", self.name)
        self.out_features = int(size_or_none(out_features, "out_features", self.name) or 0)
        self.init, self.bias = init, bias
        initializers.get(init)  # fail early on an unknown name

    def get_config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "init": self.init,
            "bias": self.bias,
        }

    @property
    def sized(self) -> bool:
        return self.in_features is not None

    def infer_sizes(self, input_shape: tuple[int, ...]) -> None:
        if self.in_features is None and len(input_shape) == 1:
            self.in_features = int(input_shape[0])

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != 1 or self.in_features not in (None, shape[0]):
            raise ValueError(
                f"{self.name}: expected samples of shape ({self.in_features or 'features'},), "
                f"received {shape}" + ("; add a Flatten layer first" if len(shape) > 1 else "")
            )
        return (self.out_features,)

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

    def call(self, x: Any) -> tuple[Any, Backprop]:
        """Y = X·Wᵀ + B; backprop: dE/dW = (dE/dY)ᵀ·X, dE/dB = Σₙ dE/dYₙ, dE/dX = dE/dY·W."""
        xp, w = self.xp, self.params["W"]
        self.check_input(x, ndim=2, features=self.in_features, dtype=w.dtype)
        y = backends.affine(x, w, self.params["b"] if self.bias else None)  # one kernel on torch

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, (x.shape[0], self.out_features))
            # (backends.matmul: ``@``, or cuBLAS directly while a CUDA graph captures the step)
            self.accumulate("W", backends.matmul(grad_out.mT, x))
            if self.bias:
                self.accumulate("b", xp.sum(grad_out, axis=0))
            return backends.matmul(grad_out, w) if input_grad else None

        return y, backprop
