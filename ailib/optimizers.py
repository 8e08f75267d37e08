"""Optimizers: the "step towards a better model" that follows backpropagation (docs/math.md §6).

Layers compute gradients; an optimizer updates. Every optimizer shares one loop over the layers'
parameters (`Optimizer.step`) and differs only in the per-parameter rule (`update`), sorted here
in order of increasing complexity.

Updates are written with augmented assignment (``p -= lr * g``) and the result is stored back:
on NumPy, CuPy and PyTorch this updates the arrays in place (no new parameter arrays per step);
on JAX, whose arrays are immutable, Python falls back to ``p = p - lr * g`` and the new array
is what gets stored.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import array_api_compat

from .layers.base import Layer


class Optimizer:
    """Base class. ``step(layers)`` applies `update` to every (parameter, gradient) pair.

    Args:
        lr: the learning rate ("step size" in the seed).
        weight_decay: L2 penalty λ; adds λ·W to each gradient before the rule (0 = off).
    """

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, received {lr}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.state: dict[str, dict[str, Any]] = {}
        self.iterations = 0

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def step(self, layers: Iterable[Layer]) -> None:
        """Update every parameter of ``layers`` from its gradient (filled by backward)."""
        self.iterations += 1
        for index, layer in enumerate(layers):
            for name, grad in layer.grads.items():
                param = layer.params[name]
                if self.weight_decay:
                    grad = grad + self.weight_decay * param
                state = self.state.setdefault(f"{index}.{name}", {})
                layer.params[name] = self.update(param, grad, state)

    def update(self, param: Any, grad: Any, state: dict[str, Any]) -> Any:
        """The per-parameter rule: returns the updated parameter (in place where possible)."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum μ (and Nesterov's look-ahead).

    plain:     W ← W − lr·g
    momentum:  V ← μV + g;  W ← W − lr·V
    Nesterov:  V ← μV + g;  W ← W − lr·(g + μV)
    """

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must lie in [0, 1), received {momentum}")
        if nesterov and momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs a momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}

    def update(self, param: Any, grad: Any, state: dict[str, Any]) -> Any:
        if self.momentum == 0.0:
            param -= self.lr * grad
            return param
        if "V" not in state:
            state["V"] = grad * 1.0  # a copy: the first V is g
        else:
            v = state["V"]
            v *= self.momentum
            v += grad
            state["V"] = v
        step = grad + self.momentum * state["V"] if self.nesterov else state["V"]
        param -= self.lr * step
        return param


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction:

        M ← β₁M + (1 − β₁)g;   V ← β₂V + (1 − β₂)g²
        W ← W − lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · M / (√V + ε̂)

    (the bias corrections folded into the step size, as in the paper's section 2).
    """

    def __init__(
        self,
        lr: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Adam: {name} must lie in [0, 1), received {beta}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def update(self, param: Any, grad: Any, state: dict[str, Any]) -> Any:
        t = state["t"] = state.get("t", 0) + 1
        if "M" not in state:
            state["M"] = (1.0 - self.beta1) * grad
            state["V"] = (1.0 - self.beta2) * (grad * grad)
        else:
            m, v = state["M"], state["V"]
            m *= self.beta1
            m += (1.0 - self.beta1) * grad
            v *= self.beta2
            v += (1.0 - self.beta2) * (grad * grad)
            state["M"], state["V"] = m, v
        step = self.lr * math.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
        eps_hat = self.eps * math.sqrt(1.0 - self.beta2**t)
        param -= (
            step * state["M"] / (array_api_compat.array_namespace(param).sqrt(state["V"]) + eps_hat)
        )
        return param


def cosine_schedule(base_lr: float, epochs: int, final_lr: float = 0.0) -> Callable[[int], float]:
    """Cosine decay for `Sequential.fit(lr_schedule=...)`: epoch e (1..epochs) trains with
    lr = final + (base − final)·(1 + cos(π(e − 1)/epochs))/2, so epoch 1 uses base_lr and the
    rate falls smoothly towards final_lr (which settles the weights instead of letting the last
    epochs bounce between minima)."""
    if epochs < 1:
        raise ValueError(f"cosine_schedule: epochs must be positive, received {epochs}")

    def lr(epoch: int) -> float:
        return final_lr + (base_lr - final_lr) * 0.5 * (
            1 + math.cos(math.pi * (epoch - 1) / epochs)
        )

    return lr


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam}


def get(optimizer: str | Optimizer, **kwargs: Any) -> Optimizer:
    """An optimizer from a name ("sgd", "adam") and keyword arguments, or the object itself."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    try:
        cls = OPTIMIZERS[optimizer.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}"
        ) from None
    return cls(**kwargs)


__all__ = ["SGD", "Adam", "Optimizer", "cosine_schedule", "get"]
