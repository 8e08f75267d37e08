"""Host-side (NumPy) preprocessing: scaling, flattening, one-hot targets, a seeded split."""

from __future__ import annotations

import numbers

import numpy as np


def to_float(x: np.ndarray, dtype: str | np.dtype = "float32") -> np.ndarray:
    """uint8 pixels 0..255 scaled to [0, 1] as ``dtype`` (float32 by default)."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise TypeError(f"to_float: expected uint8 pixels, received {x.dtype}")
    return x.astype(dtype) / np.asarray(255, dtype=dtype)


def flatten(x: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, prod(...)): e.g. images (N, 28, 28) to rows (N, 784) for a Dense layer."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"flatten: expected samples (N, ...), received a scalar {x.dtype}")
    return x.reshape(x.shape[0], -1)


def one_hot(
    y: np.ndarray, classes: int | None = None, dtype: str | np.dtype = "float32"
) -> np.ndarray:
    """Integer labels (N,) -> rows e_label (N, classes); ``classes`` defaults to max(y) + 1."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"one_hot: expected integer labels of shape (N,), received {y.dtype} {y.shape}"
        )
    if classes is None and not y.size:
        raise ValueError("one_hot: no labels to count the classes from; pass classes=")
    classes = int(y.max()) + 1 if classes is None else int(classes)
    if classes < 1:
        raise ValueError(f"one_hot: classes must be positive, received {classes}")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(
            f"one_hot: labels must lie in [0, {classes - 1}], received [{y.min()}, {y.max()}]"
        )
    return (y[:, None] == np.arange(classes)).astype(dtype)


def train_test_split(
    x: np.ndarray, y: np.ndarray, test_size: int | float = 0.2, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A seeded shuffle of (x, y) split into ``(x_train, y_train), (x_test, y_test)``.

    ``test_size`` is a count (int) or a fraction in (0, 1); the same seed gives the same split.
    """
    n = len(x)
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise TypeError(
            f"train_test_split: test_size must be a count (int) or a fraction in (0, 1), "
            f"received {test_size!r}"
        )
    if not isinstance(test_size, numbers.Integral) and not 0 < test_size < 1:  # NaN too
        raise ValueError(
            f"train_test_split: test_size must be a count (int) or a fraction in (0, 1), "
            f"received {test_size!r}"
        )
    if len(y) != n:
        raise ValueError(f"train_test_split: x has {n} samples but y has {len(y)}")
    count = int(test_size) if isinstance(test_size, numbers.Integral) else round(test_size * n)
    if not 0 < count < n:
        raise ValueError(f"train_test_split: test_size {test_size} leaves an empty split of {n}")
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:count], order[count:]
    return (x[train], y[train]), (x[test], y[test])
