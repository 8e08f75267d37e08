"""What makes training fast, stated as behaviour (speed itself is measured in benchmarks/):
float32 end to end, data moved to the device once, host transfers bounded by the logging
interval, not by the number of steps, and in-place work only on arrays the library made itself."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import ailib
import ailib.zoo
from ailib.backends import Backend
from ailib.layers import ReLU
from ailib.optimizers import SGD, Adam

from .helpers import host


def _data(n: int = 96, features: int = 12, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, features)), rng.integers(0, classes, n)  # float64 on purpose


def _model(backend: Backend, features: int = 12, classes: int = 3) -> ailib.Sequential:
    return ailib.Sequential(
        ailib.zoo.mlp(features, (16, 8), classes, backend=backend), backend=backend, seed=0
    )


def _name(backend: Backend, array: Any) -> str:
    return backend.dtype_name(array.dtype)


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda: SGD(lr=0.05, momentum=0.9), lambda: Adam(lr=0.01)],
    ids=["sgd-momentum", "adam"],
)
def test_float32_end_to_end_after_training(backend: Backend, make_optimizer: Any) -> None:
    x, y = _data()  # float64 host data: the model casts it once, at the boundary
    model, optimizer = _model(backend), make_optimizer()
    model.fit(x, y, optimizer=optimizer, epochs=2, batch_size=32)

    xd, yd = model._inputs(x, "test"), backend.asarray(y)
    assert _name(backend, xd) == "float32"
    error = model.train_step(xd, yd, "softmax_cross_entropy", optimizer)
    assert _name(backend, error) == "float32"
    for i, layer in enumerate(model.layers):
        for key, value in {**layer.params, **layer.grads}.items():
            assert _name(backend, value) == "float32", f"layer {i} ({layer.name}) {key}"
    for key, state in optimizer.state.items():
        for slot, value in state.items():
            if hasattr(value, "dtype"):
                assert _name(backend, value) == "float32", f"optimizer state {key}.{slot}"
    activation = xd
    for layer in model.layers:  # every activation, forward
        activation = layer.forward(activation)
        assert _name(backend, activation) == "float32", layer.name
    grad = model.loss.grad(activation, yd)
    assert _name(backend, grad) == "float32"
    for layer in reversed(model.layers):  # every dE/dX, backward
        grad = layer.backward(grad)
        assert _name(backend, grad) == "float32", layer.name


class _Counter:
    """Counts host -> device moves (``Backend._from_host``) and device -> host reads
    (``Backend.to_host``) on one backend object, passing the calls through."""

    def __init__(self, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.to_device = self.to_host = 0
        original_from, original_to = backend._from_host, backend.to_host

        def from_host(a: np.ndarray) -> Any:
            self.to_device += 1
            return original_from(a)

        def to_host(a: Any) -> np.ndarray:
            self.to_host += 1
            return original_to(a)

        monkeypatch.setattr(backend, "_from_host", from_host)
        monkeypatch.setattr(backend, "to_host", to_host)


@pytest.mark.parametrize("rows", [96, 384], ids=["12-steps", "48-steps"])
def test_fit_moves_data_once_and_reads_back_per_log_interval(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    x, y = _data(rows)
    model = _model(backend)
    epochs, batch, log_every = 3, 8, 10
    steps = math.ceil(rows / batch)
    count = _Counter(backend, monkeypatch)
    history = model.fit(x, y, epochs=epochs, batch_size=batch, log_every=log_every)

    assert len(history["loss"]) == epochs
    # x and y once each, then one shuffling permutation per epoch
    assert count.to_device <= 2 + epochs
    # losses every log_every steps and at the end of the epoch, plus the accuracy count once
    assert count.to_host <= epochs * (math.ceil(steps / log_every) + 2)
    assert count.to_host < epochs * steps


def test_fit_on_device_data_moves_only_the_permutations(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = _data()
    xd, yd = backend.asarray(x, dtype="float32"), backend.asarray(y)
    model = _model(backend)
    count = _Counter(backend, monkeypatch)
    model.fit(xd, yd, epochs=2, batch_size=16)
    assert count.to_device <= 2  # one permutation per epoch (none where the host is the device)
    count.to_device = 0
    model.fit(xd, yd, epochs=2, batch_size=16, shuffle=False)
    assert count.to_device == 0


def test_training_backward_skips_only_the_input_gradient(backend: Backend) -> None:
    x, y = _data(32)
    model = _model(backend)
    xd, yd = model._inputs(x, "test"), backend.asarray(y)
    grad = ailib.losses.SoftmaxCrossEntropy().grad(model.forward(xd), yd)
    dx = model.backward(grad)
    assert tuple(dx.shape) == tuple(xd.shape)
    full = {
        f"{i}.{k}": host(v) for i, layer in enumerate(model.layers) for k, v in layer.grads.items()
    }
    assert model.backward(grad, input_grad=False) is None
    fast = {
        f"{i}.{k}": host(v) for i, layer in enumerate(model.layers) for k, v in layer.grads.items()
    }
    assert fast.keys() == full.keys()
    for key in full:
        np.testing.assert_array_equal(fast[key], full[key], err_msg=key)


def test_in_place_work_never_touches_the_callers_arrays(backend: Backend) -> None:
    rng = np.random.default_rng(1)
    x = backend.asarray(rng.standard_normal((6, 5)), dtype="float32")
    g = backend.asarray(rng.standard_normal((6, 5)), dtype="float32")
    x_before, g_before = host(x).copy(), host(g).copy()
    relu = ReLU(backend=backend)
    relu.forward(x)
    relu.backward(g)
    labels = backend.asarray(np.array([0, 1, 4, 2, 3, 0]))
    ailib.losses.SoftmaxCrossEntropy().value_and_grad(x, labels)
    np.testing.assert_array_equal(host(x), x_before)
    np.testing.assert_array_equal(host(g), g_before)
