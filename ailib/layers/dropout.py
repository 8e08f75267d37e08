"""Inverted dropout (docs/math.md §9)."""

from __future__ import annotations

from typing import Any

from .._checks import number
from ..backends import Backend, Random
from .base import Backprop, Layer


class Dropout(Layer):
    """Training: Y = X ∘ M / (1 − p), with M a fresh {0, 1} mask per call, each entry 1 with
    probability 1 − p; eval: Y = X. Any input shape; Y has X's shape and dtype.

    Dividing by 1 − p at training time ("inverted" dropout) keeps E[Y] = X, so nothing changes
    at inference. Backward uses the same mask: dE/dX = dE/dY ∘ M / (1 − p) (training), dE/dY
    (eval).

    The mask is made on the device by ``backend.random(seed).bernoulli_mask``, a counter-based
    hash of (seed, call number) in integer operations (`ailib.backends.Random`): the same seed
    gives the same masks, bit for bit, on every backend and device, with nothing copied to the
    device per call. Building the layer (`Layer.build`, which a model does with its own random
    source) reseeds it from the model's seed, so a seeded model drops the same units on every
    run and backend; the mask stream's position is part of ``rng.get_state()``, which
    checkpoints save.

    Args:
        p: the probability of dropping an entry, 0 <= p < 1.
        seed: seed of the masks.
    """

    def __init__(
        self,
        p: float = 0.5,
        *,
        seed: int | None = None,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, dtype=dtype, seed=seed)
        p = number(p, "p", "Dropout")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must lie in [0, 1), received {p}")
        self.p = float(p)
        self.rng: Random = self.backend.random(seed)  # reseeded by `build` in a seeded model

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}

    def reset_parameters(self, rng: Random) -> None:
        self.seed = int(rng.host.integers(2**31))
        self.rng = self.backend.random(self.seed)

    def to(self, backend: str | Backend | None = None, dtype: Any = None) -> Dropout:
        super().to(backend, dtype)
        if self.rng.backend is not self.backend:  # same draws, continued on the new backend
            state = self.rng.get_state()
            self.rng = self.backend.random(self.seed)
            self.rng.set_state(state)
        return self

    def call(self, x: Any) -> tuple[Any, Backprop]:
        self.check_input(x, dtype=None)
        x_shape = tuple(x.shape)
        if not self.training or self.p == 0.0:
            scaled_mask, y = None, x
        else:
            mask = self.rng.bernoulli_mask(x_shape, 1.0 - self.p, dtype=x.dtype)
            scaled_mask = mask * (1.0 / (1.0 - self.p))
            y = x * scaled_mask

        def backprop(grad_out: Any, input_grad: bool = True) -> Any:
            self.check_grad(grad_out, x_shape)
            if not input_grad:
                return None
            return grad_out if scaled_mask is None else grad_out * scaled_mask

        return y, backprop
