"""Checks of the plain Python arguments users pass (sizes, counts), shared by the layers, the
graph's `Input`, `fit` and the schedules, so that each accepts the same things."""

from __future__ import annotations

import numbers
from typing import Any


def whole(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer: an int, or any `numbers.Integral` such as
    a NumPy integer (``rng.integers(1, 9)`` gives one), but not a bool; else None. Kept sizes are
    Python ints, so that a model's config stays plain JSON."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)
