"""Learning-rate schedules: plain functions t -> lr, for `ailib.callbacks.LearningRateScheduler`
(and `fit(lr_schedule=...)`, which is that callback).

t counts from 1: the epoch (the callback's default) or the optimizer update (``unit="step"``).
Schedules compose: ``warmup_schedule(1e-3, 500, then=cosine_schedule(1e-3, 10_000))``. The
schedule that depends on the validation loss, not on t, is the `ReduceLROnPlateau` callback.
"""

from __future__ import annotations

import math
from typing import Callable

from ._checks import number, whole

Schedule = Callable[[int], float]


def _positive(who: str, **values: float) -> None:
    for name, value in values.items():
        number(value, name, who)
        if not 0 < value < math.inf:
            raise ValueError(f"{who}: {name} must be positive and finite, received {value}")


def _count(who: str, **values: int) -> None:
    """Counts (epochs, steps) must be positive ints."""
    for name, value in values.items():
        count = whole(value)
        if count is None or count < 1:
            raise ValueError(f"{who}: {name} must be positive and an int, received {value!r}")


def _first(who: str, t: int) -> None:
    """t counts from 1; an earlier t (PyTorch's epoch 0 is t = 1 here) has no rate: step decay
    would give base_lr/γ there, cosine decay a rate from its second half."""
    if not t >= 1:
        raise ValueError(
            f"{who}: t counts from 1 (the first epoch or update), received t={t!r}; PyTorch's "
            f"epoch e is t = e + 1"
        )


def constant_schedule(lr: float) -> Schedule:
    """lr(t) = lr."""
    _positive("constant_schedule", lr=lr)
    return lambda t: lr


def cosine_schedule(base_lr: float, epochs: int, final_lr: float = 0.0) -> Schedule:
    """Cosine decay: t = 1..epochs trains with
    lr = final + (base − final)·(1 + cos(π(t − 1)/epochs))/2, so t = 1 uses base_lr and the rate
    falls smoothly towards final_lr (which settles the weights instead of letting the last epochs
    bounce between minima). Past ``epochs`` it stays at final_lr."""
    _positive("cosine_schedule", base_lr=base_lr)
    _count("cosine_schedule", epochs=epochs)
    number(final_lr, "final_lr", "cosine_schedule")
    if not 0 <= final_lr < math.inf:
        raise ValueError(f"cosine_schedule: final_lr must be >= 0 and finite, received {final_lr}")

    def lr(t: int) -> float:
        _first("cosine_schedule", t)
        t = min(t, epochs + 1)
        return final_lr + (base_lr - final_lr) * 0.5 * (1 + math.cos(math.pi * (t - 1) / epochs))

    return lr


def step_schedule(base_lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """Step decay: lr = base_lr·γ^⌊(t − 1)/step_size⌋ (PyTorch's StepLR, with t counted from 1):
    every ``step_size`` epochs (or steps) the rate is multiplied by γ."""
    _positive("step_schedule", base_lr=base_lr, gamma=gamma)
    _count("step_schedule", step_size=step_size)

    def lr(t: int) -> float:
        _first("step_schedule", t)
        return base_lr * gamma ** ((t - 1) // step_size)

    return lr


def warmup_schedule(base_lr: float, warmup: int, then: Schedule | None = None) -> Schedule:
    """Linear warmup: lr = base_lr·t/warmup for t <= warmup (from base_lr/warmup up to base_lr),
    then ``then(t − warmup)`` (t counted from 1 again), or base_lr if ``then`` is None.

    Warmup keeps the first updates small while Adam's second-moment estimate (or BatchNorm's
    statistics) are still noisy; it is usually counted in steps (``unit="step"``)."""
    _positive("warmup_schedule", base_lr=base_lr)
    _count("warmup_schedule", warmup=warmup)

    def lr(t: int) -> float:
        _first("warmup_schedule", t)
        if t <= warmup:
            return base_lr * t / warmup
        return base_lr if then is None else then(t - warmup)

    return lr


__all__ = ["constant_schedule", "cosine_schedule", "step_schedule", "warmup_schedule"]
