"""Activation functions modelled as layers of their own (seed document, section 3; docs/math.md §3).

An elementwise activation Y = f(X) has a diagonal Jacobian, so backward is the Hadamard product
dE/dX = dE/dY ∘ f′(X). Softmax is the exception: every output depends on every input of its row,
so its backward is a true Jacobian-vector product (docs/math.md §4).
"""

from __future__ import annotations

from typing import Any

from ..backends import Backend
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
        xp = self.xp
        # NOTE: e = exp(-|x|) never overflows; σ(x) = 1/(1+e) for x >= 0 and e/(1+e) for x < 0.
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

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
        # NOTE: dE/dY ∘ 1[X > 0] as a product into the fresh mask (in place where arrays are
        # mutable), not where(X > 0, dE/dY, 0): a third of the time on NumPy.
        grad = self.xp.astype(x > 0, grad_out.dtype)
        grad *= grad_out
        return grad


class LeakyReLU(Activation):
    """Y = X where X > 0, else αX; dE/dX = dE/dY where X > 0, else α·dE/dY.

    Args:
        alpha: the slope α for negative inputs (default 0.01).
    """

    def __init__(
        self, alpha: float = 0.01, *, backend: str | Backend | None = None, dtype: Any = None
    ) -> None:
        super().__init__(backend=backend, dtype=dtype)
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
