"""Weight initialisers. Each draws from a seeded `Random`, so one seed gives the same weights on
every backend.

fan_in / fan_out are the number of inputs / outputs feeding one unit (for Dense: in_features /
out_features; for a convolution: channels x kernel area).

- Glorot (Xavier) uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)); normal: std = sqrt(2 / (fan_in + fan_out)).
- He (Kaiming) uniform: U(-a, a), a = sqrt(6 / fan_in); normal: std = sqrt(2 / fan_in) — for ReLU.
- normal: N(0, 1) whatever the fans — embedding tables (PyTorch's `nn.Embedding`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ..backends import Random


def glorot_uniform(
    rng: Random, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any
) -> Any:
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(shape, -a, a, dtype)


def glorot_normal(
    rng: Random, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any
) -> Any:
    return rng.normal(shape, 0.0, math.sqrt(2.0 / (fan_in + fan_out)), dtype)


def he_uniform(rng: Random, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any) -> Any:
    a = math.sqrt(6.0 / fan_in)
    return rng.uniform(shape, -a, a, dtype)


def he_normal(rng: Random, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any) -> Any:
    return rng.normal(shape, 0.0, math.sqrt(2.0 / fan_in), dtype)


def normal(rng: Random, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any) -> Any:
    """N(0, 1), whatever the fans (PyTorch's `Embedding` initialisation)."""
    return rng.normal(shape, 0.0, 1.0, dtype)


def zeros(rng: Random, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any) -> Any:
    be = rng.backend
    return be.xp.zeros(shape, dtype=be.dtype(dtype), device=be.device)


INITIALIZERS: dict[str, Callable[..., Any]] = {
    "glorot_uniform": glorot_uniform,
    "xavier_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_normal": glorot_normal,
    "he_uniform": he_uniform,
    "kaiming_uniform": he_uniform,
    "he_normal": he_normal,
    "kaiming_normal": he_normal,
    "normal": normal,
    "zeros": zeros,
}


def get(name: str) -> Callable[..., Any]:
    """The initialiser called ``name``."""
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown initialiser {name!r}; expected one of {', '.join(sorted(INITIALIZERS))}"
        ) from None
