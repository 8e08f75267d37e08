"""Classification metrics on the host, from NumPy labels and predictions."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """C (classes, classes) int64 with C[i, j] = how many samples of class i were predicted j."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"confusion_matrix: labels {y_true.shape} and predictions "
            f"{y_pred.shape} must be two (N,) arrays"
        )
    for name, y in (("labels", y_true), ("predictions", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(f"confusion_matrix: {name} must lie in [0, {classes - 1}]")
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(
        classes, classes
    )


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """The fraction of each class predicted correctly (NaN for a class with no samples)."""
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(confusion) / totals


def accuracy(confusion: np.ndarray) -> float:
    """The overall fraction of correct predictions."""
    return float(np.trace(confusion) / max(1, confusion.sum()))
