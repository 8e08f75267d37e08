"""Checks of the plain Python arguments users pass (sizes, counts, settings), shared by the
layers, the graph's `Input`, `fit`, the losses, optimizers and schedules, so that each accepts
the same things."""

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


def positive_int(value: Any, what: str, who: str) -> int:
    """``value`` as a Python int >= 1 (`whole`), else a ValueError naming ``who`` and ``what``."""
    size = whole(value)
    if size is None or size < 1:
        raise ValueError(f"{who}: {what} must be a positive int, received {value!r}")
    return size


def count(value: Any, what: str, who: str) -> int:
    """``value`` as a Python int >= 0 (`whole`), else a ValueError naming ``who`` and ``what``
    (a patience of 2.5 is not quietly 2, nor "3" a comparison's TypeError)."""
    n = whole(value)
    if n is None or n < 0:
        raise ValueError(f"{who}: {what} must be an int >= 0, received {value!r}")
    return n


def seed(value: Any, who: str) -> int | None:
    """A seed: None, or ``value`` as a Python int >= 0; else a ValueError naming ``who``."""
    if value is None:
        return None
    if whole(value) is None or value < 0:
        raise ValueError(f"{who}: seed must be None or an int >= 0, received {value!r}")
    return int(value)


def number(value: Any, what: str, who: str, hint: str = "") -> float:
    """``value`` as a float when it is a real number (a NumPy scalar too, not a bool); else a
    TypeError naming ``who`` and the setting, instead of a comparison's own error further on."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {what} must be a number, received {value!r}{hint}")
    return float(value)


def flag(value: Any, what: str, who: str) -> bool:
    """``value`` as a Python bool when it is one (a NumPy bool too); else a TypeError naming
    ``who`` and the setting: ``bool("false")`` is True, so a string must not pass as a flag."""
    if isinstance(value, bool):
        return value
    if getattr(value, "dtype", None) is not None and getattr(value, "shape", None) == ():
        if str(value.dtype) == "bool":
            return bool(value)
    raise TypeError(f"{who}: {what} must be True or False, received {value!r}")


def floating_dtype(backend: Any, spec: Any, who: str) -> Any:
    """The floating dtype of ``backend`` for ``spec`` (None: its default float), else a
    ValueError naming ``who``: parameters and activations are real floats."""
    dtype = backend.dtype(spec)
    if not backend.is_floating(dtype):
        raise ValueError(
            f"{who}: dtype must be a floating dtype (float32, float64, ...), received "
            f"{backend.dtype_name(dtype)}"
        )
    return dtype
