"""Inverted dropout (docs/math.md §9)."""

from __future__ import annotations

from typing import Any

from ..backends import Backend, Random
from .base import Layer


class Dropout(Layer):
    """Training: Y = X ∘ M / (1 − p), with M a fresh {0, 1} mask per call, each entry 1 with
    probability 1 − p; eval: Y = X. Any input shape; Y has X's shape and dtype.

    Dividing by 1 − p at training time ("inverted" dropout) keeps E[Y] = X, so nothing changes
    at inference. Backward uses the same mask: dE/dX = dE/dY ∘ M / (1 − p) (training), dE/dY
    (eval).

    The mask is made on the device by ``backend.random(seed).bernoulli_mask``, a counter-based
    hash of (seed, call number) in integer operations (`ailib.backends.Random`): the same seed
    gives the same masks, bit for bit, on every backend and device, with nothing copied to the
    device per call. `reset_parameters` (called by `Sequential(seed=...)`) reseeds it from the
    model's random source, so a seeded model drops the same units on every run and backend; the
    mask stream's position is part of ``rng.get_state()``, which checkpoints save.

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
        super().__init__(backend=backend, dtype=dtype)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must lie in [0, 1), received {p}")
        self.p = float(p)
        self.seed = seed
        self.rng: Random = self.backend.random(seed)
        self.scaled_mask: Any = None
        self.x_shape: tuple[int, ...] | None = None

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

    def forward(self, x: Any) -> Any:
        self.check_input(x, dtype=None)
        self.x_shape = tuple(x.shape)
        if not self.training or self.p == 0.0:
            self.scaled_mask = None
            return x
        mask = self.rng.bernoulli_mask(tuple(x.shape), 1.0 - self.p, dtype=x.dtype)
        self.scaled_mask = mask * (1.0 / (1.0 - self.p))
        return x * self.scaled_mask

    def backward(self, grad_out: Any) -> Any:
        self.require_forward(self.x_shape)
        self.check_grad(grad_out, self.x_shape)
        return grad_out if self.scaled_mask is None else grad_out * self.scaled_mask
