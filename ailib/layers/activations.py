"""Activation functions modelled as layers of their own (seed document, section 3; docs/math.md §3).

An elementwise activation Y = f(X) has a diagonal Jacobian, so backward is the Hadamard product
dE/dX = dE/dY ∘ f′(X). Softmax is the exception: every output depends on every input of its row,
so its backward is a true Jacobian-vector product (docs/math.md §4).
"""

from __future__ import annotations

import math
from typing import Any

from .. import backends
from .._checks import number
from ..backends import Backend
from ._special import normal_cdf, normal_pdf
from .base import Backprop, Layer


class Activation(Layer):
    """Base of the activation layers: no parameters, any input shape and floating dtype; Y has
    X's shape and dtype. A subclass writes the function `f` and, right under it, `vjp`."""

    def call(self, x: Any) -> tuple[Any, Backprop]:
        self.check_input(x, dtype=None)
        y = self.f(x)

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            return self.vjp(grad_out, x, y) if input_grad else None

        return y, backprop

    def f(self, x: Any) -> Any:
        """Y = f(X)."""
        raise NotImplementedError

    def vjp(self, grad_out: Any, x: Any, y: Any) -> Any:
        """dE/dX from dE/dY, given this call's X and Y."""
        raise NotImplementedError


class Identity(Activation):
    """Y = X; dE/dX = dE/dY."""

    def f(self, x: Any) -> Any:
        return x

    def vjp(self, grad_out: Any, x: Any, y: Any) -> Any:
        return grad_out


class Tanh(Activation):
    """Y = tanh(X); f′(X) = 1 − Y², so dE/dX = dE/dY ∘ (1 − Y²)."""

    def f(self, x: Any) -> Any:
        return self.xp.tanh(x)

    def vjp(self, grad_out: Any, x: Any, y: Any) -> Any:
        return grad_out * (1.0 - y * y)


class Sigmoid(Activation):
    """Y = σ(X) = 1 / (1 + e^(−X)); f′(X) = Y(1 − Y), so dE/dX = dE/dY ∘ Y ∘ (1 − Y)."""

    def f(self, x: Any) -> Any:
        return sigmoid(self.xp, x)

    def vjp(self, grad_out: Any, x: Any, y: Any) -> Any:
        return grad_out * y * (1.0 - y)


class ReLU(Activation):
    """Y = max(X, 0); f′(X) = 1 where X > 0 else 0, so dE/dX = dE/dY where X > 0, else 0.

    At X = 0 the derivative does not exist; we take the subgradient 0 (as PyTorch does).
    """

    def f(self, x: Any) -> Any:
        # NOTE: maximum, not where(x > 0, x, 0): the standard's maximum propagates NaN, so a
        # diverging model shows in the loss instead of being silently zeroed here (and it is one
        # pass, where `where` is a slow path on NumPy).
        return self.xp.maximum(x, 0.0)

    def vjp(self, grad_out: Any, x: Any, y: Any) -> Any:
        # NOTE: 1[X > 0] = 1[Y > 0], formed from Y in two array operations by the backends
        # package, the fastest way each library has (where(Y > 0, dE/dY, 0) is a slow path on
        # NumPy, array-api-compat's sign is on PyTorch); where Y is NaN the gradient is 0
        return backends.relu_backward(y, grad_out)


class LeakyReLU(Activation):
    """Y = X where X > 0, else αX; dE/dX = dE/dY where X > 0, else α·dE/dY.

    Args:
        alpha: the slope α for negative inputs (default 0.01).
    """

    def __init__(
        self, alpha: float = 0.01, *, backend: str | Backend | None = None, dtype: Any = None
    ) -> None:
        super().__init__(backend=backend, dtype=dtype)
        alpha = number(alpha, "alpha", "LeakyReLU")
        if not math.isfinite(alpha):
            raise ValueError(f"LeakyReLU: alpha must be a finite number, received {alpha}")
        self.alpha = float(alpha)

    def get_config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def f(self, x: Any) -> Any:
        return self.xp.where(x > 0, x, self.alpha * x)

    def vjp(self, grad_out: Any, x: Any, y: Any) -> Any:
        return self.xp.where(x > 0, grad_out, self.alpha * grad_out)


class Softmax(Activation):
    """Yᵢ = e^(Xᵢ) / Σₖ e^(Xₖ) along the last axis.

    The Jacobian is dYᵢ/dXⱼ = Yᵢ(δᵢⱼ − Yⱼ), not diagonal, so backward is the Jacobian-vector
    product dE/dX = Y ∘ (dE/dY − Σⱼ dE/dYⱼ·Yⱼ), computed row by row without forming the Jacobian.
    (Followed by cross-entropy, prefer `SoftmaxCrossEntropy` on the logits: it is fused and stable.)
    """

    def f(self, x: Any) -> Any:
        return softmax(self.xp, x)

    def vjp(self, grad_out: Any, x: Any, y: Any) -> Any:
        xp = self.xp
        return y * (grad_out - xp.sum(grad_out * y, axis=-1, keepdims=True))


def softmax(xp: Any, x: Any) -> Any:
    """Softmax along the last axis; subtracting the row maximum first keeps exp from overflowing
    and does not change the result (the factor e^(−max) cancels)."""
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def sigmoid(xp: Any, x: Any) -> Any:
    """σ(x) = 1 / (1 + e^(−x)) without overflow: with e = e^(−|x|) <= 1, σ(x) = 1/(1 + e) for
    x >= 0 and e/(1 + e) for x < 0."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715  # the cubic coefficient of GELU's tanh approximation


class GELU(Activation):
    """Y = X·Φ(X), Φ the standard normal CDF (Hendrycks & Gimpel, 2016); docs/math.md §3.1.

    Exact form (``approximate="none"``, the default, as PyTorch's ``GELU()``): Φ(x) = ½(1 +
    erf(x/√2)) with erf evaluated by `ailib.layers._special` to ~1e-16 (the array API has no erf);
        f′(X) = Φ(X) + X·φ(X),   φ(x) = e^(−x²/2) / √(2π).
    ``approximate="tanh"`` (PyTorch's ``GELU(approximate="tanh")``, GPT-2's form):
        Y = ½X(1 + T),  T = tanh(u),  u = √(2/π)(X + 0.044715·X³),
        f′(X) = ½(1 + T) + ½X(1 − T²)·√(2/π)(1 + 3·0.044715·X²).
    The two differ by up to ~5e-4: pick the one the weights were trained with. Cost: the exact
    form evaluates three rational approximations for every entry (~100 elementwise operations;
    on NumPy ~20x the tanh form's forward time, measured at 256×1024 float32); the backward pass
    reuses the forward's Φ, so it costs a few operations only.

    Shapes: any; Y has X's shape and dtype.
    """

    APPROXIMATIONS = ("none", "tanh")

    def __init__(
        self,
        approximate: str = "none",
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, dtype=dtype)
        if approximate not in self.APPROXIMATIONS:
            raise ValueError(
                f"GELU: approximate must be one of {self.APPROXIMATIONS}, received {approximate!r}"
            )
        self.approximate = approximate

    def get_config(self) -> dict[str, Any]:
        return {"approximate": self.approximate}

    def call(self, x: Any) -> tuple[Any, Backprop]:
        """As `Activation.call`, but the factor Φ(X) (or ½(1 + T)) of the forward pass is kept
        for backward: with ~100 elementwise operations behind Φ, evaluating it again would
        double the cost of backprop, for one array held per call."""
        self.check_input(x, dtype=None)
        factor = self._factor(x)
        y = x * factor

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, tuple(y.shape))
            return grad_out * self._slope(x, factor) if input_grad else None

        return y, backprop

    def f(self, x: Any) -> Any:
        return x * self._factor(x)

    def vjp(self, grad_out: Any, x: Any, y: Any) -> Any:
        return grad_out * self._slope(x, self._factor(x))

    def _factor(self, x: Any) -> Any:
        """Φ(X), or ½(1 + T) for the tanh form: Y = X·factor."""
        xp = self.xp
        if self.approximate == "tanh":
            return 0.5 + 0.5 * xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * (x * x * x)))
        return normal_cdf(xp, x)

    def _slope(self, x: Any, factor: Any) -> Any:
        """f′(X) from X and its factor: Φ + X·φ(X), or, with h = ½(1 + T) (so that
        ½(1 − T²) = 2h(1 − h)), h + 2X·h(1 − h)·√(2/π)(1 + 3·0.044715·X²)."""
        if self.approximate == "tanh":
            slope = _SQRT_2_OVER_PI * (1.0 + (3.0 * _GELU_CUBIC) * (x * x))
            return factor + 2.0 * x * (factor * (1.0 - factor)) * slope
        return factor + x * normal_pdf(self.xp, x)


class SiLU(Activation):
    """Y = X·σ(X) (the sigmoid-weighted linear unit, also called swish); docs/math.md §3.1.

    f′(X) = σ(X) + X·σ(X)(1 − σ(X)) = σ(X)(1 + X(1 − σ(X))), so dE/dX = dE/dY ∘ f′(X).
    Shapes: any; Y has X's shape and dtype.
    """

    def f(self, x: Any) -> Any:
        return x * sigmoid(self.xp, x)

    def vjp(self, grad_out: Any, x: Any, y: Any) -> Any:
        s = sigmoid(self.xp, x)
        return grad_out * (s * (1.0 + x * (1.0 - s)))
