"""How many array operations one training step makes, part by part (docs/performance.md).

On a GPU every array operation is a kernel launch, and at small batches launches, not
arithmetic, set the time; on the CPU every operation is a Python call and a temporary.
`count_step` trains a model on a counting backend (`ailib.backends.counting`) and reports
the operations of one `fit` step, filed under the part of the step that made them:

    gather    the batch taken from the shuffled data (ailib.batches)
    forward   the layers' forward pass (Model._run)
    loss      error, dE/dY and, where formed with them, the correct-prediction count
              (ailib.losses)
    backward  the layers' backprops (Model._backward)
    update    the optimizer (ailib.optimizers)
    metrics   the running loss and accuracy sums of `fit` (ailib.training.Meter)

Per-epoch work (the permutation, reading the losses back) is left out: a step's count is the
difference between an epoch of ``2k`` and one of ``k`` steps, divided by ``k``, after a first
epoch that creates the optimizer's state.

    >>> from ailib import opcount, zoo, optimizers
    >>> opcount.count_step(zoo.mlp(), optimizers.SGD(0.05))["total"]
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

import numpy as np

from . import backends

PARTS = ("gather", "forward", "loss", "backward", "update", "metrics")

_HERE = os.path.dirname(os.path.abspath(__file__))
_FILES = {
    os.path.join(_HERE, "optimizers.py"): "update",
    os.path.join(_HERE, "losses.py"): "loss",
    os.path.join(_HERE, "batches.py"): "gather",
}
_MODEL = os.path.join(_HERE, "model.py")
_TRAINING = os.path.join(_HERE, "training.py")
_MODEL_PARTS = {"_run": "forward", "_backward": "backward"}


def part_of_caller() -> str:
    """The part of a training step (one of `PARTS`, or "other") that the running code belongs
    to: the innermost ailib function on the call stack that names one."""
    frame: Any = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        path = code.co_filename
        if path in _FILES:
            return _FILES[path]
        if path == _MODEL and code.co_name in _MODEL_PARTS:
            return _MODEL_PARTS[code.co_name]
        if path == _TRAINING and type(frame.f_locals.get("self")).__name__ == "Meter":
            return "metrics"
        frame = frame.f_back
    return "other"


def count_step(
    layers: Sequence[Any] | Callable[[Any], Sequence[Any]],
    optimizer: Any,
    *,
    backend: str | backends.Backend = "numpy",
    batch_size: int = 128,
    features: int = 784,
    classes: int = 10,
    loss: str = "softmax_cross_entropy",
    steps: int = 3,
    seed: int = 0,
    flat_updates: bool | None = True,
    kernels: str | None = None,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """The array operations of one `fit` step of ``Sequential(layers)`` with ``optimizer``
    at ``batch_size``, on random rows of ``features`` values with integer labels < ``classes``.

    ``layers`` is a list of layers, or a function of a backend that returns them (e.g.
    ``lambda be: zoo.mlp(backend=be)``). ``flat_updates`` (default True) counts the optimizer
    as GPU backends run it, on one flat buffer (`Backend.flat_updates`); None counts what
    ``backend`` itself runs. ``kernels`` names the library whose fused operations
    (`ailib.backends.LAUNCHES`) are counted: by default ``backend``'s own; "cupy" counts CuPy's
    kernels on any backend (the model computes on ``backend``). Returns ``{"ops": {part: n}, "views": {...},
    "reads": {...}, "names": {part: {operation: n}}, "total": ops of the step}``.
    """
    from .model import Sequential

    counter = backends.counting(backends.get(backend), part_of_caller, flat_updates, kernels)
    made = layers(counter.backend) if callable(layers) else layers
    model = Sequential(made, backend=counter.backend, seed=seed)
    rng = np.random.default_rng(seed)
    n = 2 * steps * batch_size
    x = rng.random((n, features), dtype=np.float32)
    y = rng.integers(0, classes, n)
    fit = dict(
        loss=loss, optimizer=optimizer, batch_size=batch_size, log_every=10**9, verbose=False
    )
    fit.update(fit_kwargs)

    def epoch(k: int) -> dict[str, dict[Any, int]]:
        counter.reset()
        model.fit(x[: k * batch_size], y[: k * batch_size], **fit)
        return {
            "ops": dict(counter.ops),
            "views": dict(counter.views),
            "reads": dict(counter.reads),
            "names": dict(counter.names),
        }

    epoch(1)  # the optimizer's state is made here
    short, long = epoch(steps), epoch(2 * steps)
    out: dict[str, Any] = {}
    for kind in ("ops", "views", "reads", "names"):
        keys = set(short[kind]) | set(long[kind])
        diff = {k: (long[kind].get(k, 0) - short[kind].get(k, 0)) / steps for k in keys}
        out[kind] = {k: _number(v) for k, v in sorted(diff.items()) if v}
    names: dict[str, dict[str, Any]] = {}
    for (part, name), v in out["names"].items():
        names.setdefault(part, {})[name] = v
    out["names"] = names
    out["total"] = _number(sum(out["ops"].values()))
    return out


def _number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(v, 2)


def table(counts: dict[str, Any]) -> str:
    """One line per part: ``forward 8 (matmul 3, iadd 3, maximum 2)``, then the total."""
    lines = []
    for part in (*PARTS, "other"):
        n = counts["ops"].get(part)
        if not n:
            continue
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts["names"].get(part, {}).items()))
        lines.append(f"{part:9s} {n:>5} ({detail})")
    lines.append(f"{'total':9s} {counts['total']:>5}")
    return "\n".join(lines)


__all__ = ["PARTS", "count_step", "part_of_caller", "table"]
