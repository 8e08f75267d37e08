"""The layer protocol: ``call(X) -> (Y, backprop)`` keeps per-call state in the closure, so one
layer called twice backpropagates each call on its own and its gradients add up."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import ailib
from ailib.layers import (
    GELU,
    LAYERS,
    Add,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Concatenate,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    Identity,
    LayerNorm,
    LeakyReLU,
    MaxPool2D,
    Multiply,
    ReLU,
    Reshape,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)

from .helpers import assert_close, host

#: one instance per layer class (float64), and the per-sample shape of its input (a list of
#: shapes for merge layers)
CASES: dict[str, tuple[Callable[..., Any], Any]] = {
    "Dense": (lambda **kw: Dense(6, 4, seed=0, **kw), (6,)),
    "Identity": (Identity, (5,)),
    "Tanh": (Tanh, (5,)),
    "Sigmoid": (Sigmoid, (5,)),
    "ReLU": (ReLU, (5,)),
    "LeakyReLU": (lambda **kw: LeakyReLU(0.2, **kw), (5,)),
    "Softmax": (Softmax, (5,)),
    "Conv2D": (lambda **kw: Conv2D(2, 3, 3, padding=1, seed=0, **kw), (2, 5, 4)),
    "MaxPool2D": (lambda **kw: MaxPool2D(2, **kw), (2, 4, 6)),
    "AvgPool2D": (lambda **kw: AvgPool2D(2, **kw), (2, 4, 6)),
    "GlobalAvgPool2D": (GlobalAvgPool2D, (2, 4, 6)),
    "Flatten": (Flatten, (2, 3, 2)),
    "Reshape": (lambda **kw: Reshape((3, 2), **kw), (6,)),
    "Dropout": (lambda **kw: Dropout(0.0, **kw), (5,)),
    "BatchNorm1D": (lambda **kw: BatchNorm1D(5, **kw), (5,)),
    "BatchNorm2D": (lambda **kw: BatchNorm2D(2, **kw), (2, 3, 3)),
    "Add": (Add, [(3,), (3,)]),
    "Multiply": (Multiply, [(3,), (3,)]),
    "Concatenate": (Concatenate, [(2,), (3,)]),
    "GELU": (GELU, (5,)),
    "SiLU": (SiLU, (5,)),
    "LayerNorm": (lambda **kw: LayerNorm(4, **kw), (3, 4)),
    "Embedding": (lambda **kw: Embedding(7, 3, seed=0, **kw), (5,)),
}

#: layers whose input is indices, not differentiable: their backprop returns None
INDEX_INPUTS = {"Embedding"}


def test_every_layer_class_is_covered() -> None:
    assert set(CASES) == set(LAYERS)


def _inputs(shape: Any, seed: int, indices: bool = False) -> Any:
    """A batch of 4 samples of ``shape`` (a list of batches for a list of shapes); distinct
    values well apart, so that every pooling window has one maximum (or, with ``indices``,
    integers in [0, 7), repeated)."""
    if isinstance(shape, list):
        return [_inputs(s, seed + 10 * k) for k, s in enumerate(shape)]
    if indices:
        return np.random.default_rng(seed).integers(0, 7, size=(4, *shape))
    rng = np.random.default_rng(seed)
    return rng.permutation(4 * int(np.prod(shape))).reshape(4, *shape) * 0.01 - 0.3


def _device(backend: ailib.backends.Backend, x: Any) -> Any:
    return [backend.asarray(a) for a in x] if isinstance(x, list) else backend.asarray(x)


def _host(x: Any) -> Any:
    if x is None:  # no input gradient
        return None
    return [host(a) for a in x] if isinstance(x, list) else host(x)


@pytest.mark.parametrize("name", list(CASES))
def test_two_calls_backpropagate_independently_and_their_gradients_add(
    name: str, backend: ailib.backends.Backend
) -> None:
    make, shape = CASES[name]
    layer = make(backend=backend, dtype="float64")
    indices = name in INDEX_INPUTS
    xa, xb = _inputs(shape, 1, indices), _inputs(shape, 2, indices)

    def alone(x: Any, g: np.ndarray) -> tuple[Any, dict[str, np.ndarray]]:
        layer.forward(_device(backend, x))
        dx = layer.backward(backend.asarray(g))
        return _host(dx), {k: host(v) for k, v in layer.grads.items()}

    ya, back_a = layer.call(_device(backend, xa))
    yb, back_b = layer.call(_device(backend, xb))
    rng = np.random.default_rng(3)
    ga, gb = rng.standard_normal(tuple(ya.shape)), rng.standard_normal(tuple(yb.shape))
    layer.zero_grad()
    dxb = back_b(backend.asarray(gb))  # the later call first: each closure has its own state
    dxa = back_a(backend.asarray(ga))
    summed = {k: host(v) for k, v in layer.grads.items()}

    dxa_alone, grads_a = alone(xa, ga)
    dxb_alone, grads_b = alone(xb, gb)
    for got, expected in ((dxa, dxa_alone), (dxb, dxb_alone)):
        if indices:
            assert got is None and expected is None
            continue
        for part, ref in zip(*(v if isinstance(v, list) else [v] for v in (got, expected))):
            assert_close(part, ref, "float64")
    assert set(summed) == set(layer.params)
    for key in summed:
        assert_close(summed[key], grads_a[key] + grads_b[key], "float64")


@pytest.mark.parametrize("name", ["Dense", "Conv2D", "BatchNorm2D", "ReLU"])
def test_backprop_without_input_gradient_returns_none_and_the_same_gradients(
    name: str, backend: ailib.backends.Backend
) -> None:
    make, shape = CASES[name]
    layer = make(backend=backend, dtype="float64")
    y, backprop = layer.call(backend.asarray(_inputs(shape, 1)))
    g = backend.asarray(np.random.default_rng(0).standard_normal(tuple(y.shape)))
    backprop(g)
    full = {k: host(v) for k, v in layer.grads.items()}
    layer.zero_grad()
    assert backprop(g, input_grad=False) is None
    assert set(layer.grads) == set(full)
    for key, value in full.items():
        assert_close(layer.grads[key], value, "float64")


def test_backward_sets_the_gradients_of_the_latest_forward_only() -> None:
    """The seed's single-use API: backward assigns, it does not add to earlier calls."""
    be = ailib.backends.get("numpy")
    layer = Dense(3, 2, seed=0, backend=be, dtype="float64")
    x, g = np.ones((4, 3)), np.ones((4, 2))
    layer.forward(be.asarray(x))
    layer.backward(be.asarray(g))
    first = host(layer.grads["W"]).copy()
    layer.forward(be.asarray(x))
    layer.backward(be.asarray(g))
    np.testing.assert_array_equal(host(layer.grads["W"]), first)
