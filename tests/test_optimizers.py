"""Optimizers: update rules against NumPy references; in-place and immutable (JAX) paths agree."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.layers import Dense
from ailib.optimizers import SGD, Adam

from .helpers import assert_close, host


def _reference(kind: str, w: np.ndarray, grads: list[np.ndarray], **kw: float) -> np.ndarray:
    """The textbook rules, written out in float64."""
    v = np.zeros_like(w)
    m = np.zeros_like(w)
    s = np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        if kind == "sgd":
            w = w - kw["lr"] * g
        elif kind == "momentum":
            v = kw["mu"] * v + g
            w = w - kw["lr"] * v
        elif kind == "nesterov":
            v = kw["mu"] * v + g
            w = w - kw["lr"] * (g + kw["mu"] * v)
        else:  # adam, in the paper's form
            m = 0.9 * m + 0.1 * g
            s = 0.999 * s + 0.001 * g * g
            w = w - kw["lr"] * (m / (1 - 0.9**t)) / (np.sqrt(s / (1 - 0.999**t)) + 1e-8)
    return w


CASES = {
    "sgd": (lambda: SGD(lr=0.1), {"lr": 0.1}),
    "momentum": (lambda: SGD(lr=0.1, momentum=0.9), {"lr": 0.1, "mu": 0.9}),
    "nesterov": (lambda: SGD(lr=0.1, momentum=0.9, nesterov=True), {"lr": 0.1, "mu": 0.9}),
    "adam": (lambda: Adam(lr=0.01), {"lr": 0.01}),
}


@pytest.mark.parametrize("kind", CASES)
def test_update_rule_matches_reference(
    kind: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    make, kw = CASES[kind]
    layer = Dense(3, 2, bias=False, backend=backend, dtype="float64", seed=0)
    w0 = host(layer.params["W"]).copy()
    grads = [rng.standard_normal((2, 3)) for _ in range(4)]
    opt = make()
    for g in grads:
        layer.grads["W"] = backend.asarray(g)
        opt.step([layer])
    # Adam's bias correction is folded into the step size, with ε rescaled: the same rule exactly
    assert_close(layer.params["W"], _reference(kind, w0, grads, **kw), "float64")


def test_updates_are_in_place_where_the_backend_allows(backend: ailib.backends.Backend) -> None:
    layer = Dense(3, 2, backend=backend, seed=0)
    before = layer.params["W"]
    layer.forward(backend.asarray(np.ones((4, 3), dtype=np.float32)))
    layer.backward(backend.asarray(np.ones((4, 2), dtype=np.float32)))
    SGD(lr=0.1, momentum=0.9).step([layer])
    assert (layer.params["W"] is before) == backend.mutable
    assert layer.params["W"].dtype == backend.xp.float32


def test_optimizer_state_stays_float32(backend: ailib.backends.Backend) -> None:
    layer = Dense(3, 2, backend=backend, seed=0)
    opt = Adam()
    for _ in range(2):
        layer.forward(backend.asarray(np.ones((4, 3), dtype=np.float32)))
        layer.backward(backend.asarray(np.ones((4, 2), dtype=np.float32)))
        opt.step([layer])
    for state in opt.state.values():
        for key in ("M", "V"):
            assert state[key].dtype == backend.xp.float32


def test_bad_hyperparameters_are_refused() -> None:
    with pytest.raises(ValueError, match="lr must be positive"):
        SGD(lr=0)
    with pytest.raises(ValueError, match="nesterov=True needs a momentum"):
        SGD(nesterov=True)
    with pytest.raises(ValueError, match="beta1 must lie in"):
        Adam(beta1=1.0)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        ailib.optimizers.get("lbfgs")


def test_cosine_schedule_starts_at_base_and_decays_to_final() -> None:
    lr = ailib.optimizers.cosine_schedule(0.1, epochs=4, final_lr=0.01)
    values = [lr(e) for e in range(1, 5)]
    assert values[0] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] > 0.01
    with pytest.raises(ValueError, match="epochs must be positive"):
        ailib.optimizers.cosine_schedule(0.1, epochs=0)


def test_fit_applies_the_schedule_each_epoch() -> None:
    x = np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    model = ailib.Sequential([Dense(3, 1)], backend="numpy", seed=0)
    opt = SGD(lr=1.0)
    history = model.fit(x, y, loss="mse", optimizer=opt, epochs=3, lr_schedule=lambda e: 0.1 / e)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert opt.lr == pytest.approx(0.1 / 3)
