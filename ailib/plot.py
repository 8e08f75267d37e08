"""The training figure: loss and accuracy curves per epoch, and the test confusion matrix.

matplotlib is optional (``pip install 'ailib[plot]'``) and imported only here, when a figure is
drawn; the figure is rendered with the Agg canvas, so no display or global backend is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ._files import atomic_open


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def training_figure(
    history: dict[str, list[float]],
    confusion: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Save a three-panel PNG to ``path`` (atomically: `ailib._files.atomic_open`; the format
    follows the suffix, PNG without one): train/validation loss and accuracy (from a
    `Sequential.fit` history with ``val_*`` entries) and the confusion matrix (rows: true class,
    columns: predicted class)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(15, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, acc_ax, cm_ax = fig.subplots(1, 3, width_ratios=[1, 1, 1.15])
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key, label in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "accuracy")):
        for prefix, name in (("", "train"), ("val_", "validation")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], marker="o", label=name)
        ax.set(xlabel="epoch", ylabel=label, title=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0.5, len(epochs) + 0.5)  # whole epochs, also for a 1-epoch run
        ax.grid(alpha=0.3)
        ax.legend()
    rates = confusion / np.maximum(1, confusion.sum(axis=1, keepdims=True))
    image = cm_ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    cm_ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    cm_ax.set_yticks(ticks, class_names, fontsize=8)
    cm_ax.set(xlabel="predicted", ylabel="true", title="test confusion matrix (counts)")
    for i, j in np.ndindex(confusion.shape):
        cm_ax.text(
            j,
            i,
            str(confusion[i, j]),
            ha="center",
            va="center",
            fontsize=6,
            color="white" if rates[i, j] > 0.5 else "black",
        )
    bar = fig.colorbar(image, ax=cm_ax, fraction=0.046)
    bar.set_label("share of the true class (row)")
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_open(path) as f:  # a run killed while drawing keeps the previous figure
        fig.savefig(f, format=path.suffix.lstrip(".").lower() or "png", dpi=110)
    return path
