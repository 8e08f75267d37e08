"""GlobalAvgPool2D: NumPy float64 reference, finite differences, every backend, errors."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.layers import GlobalAvgPool2D

from .helpers import assert_close, host, layer_gradcheck


def test_global_average_pool_is_the_channel_mean(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((3, 4, 5, 6))
    g = rng.standard_normal((3, 4))
    layer = GlobalAvgPool2D(backend=backend, dtype="float64")
    assert_close(layer.forward(backend.asarray(x)), x.mean(axis=(2, 3)), "float64")
    dx = layer.backward(backend.asarray(g))
    assert_close(dx, np.broadcast_to(g[:, :, None, None] / 30, x.shape), "float64")


def test_global_average_pool_gradcheck_float64(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    layer_gradcheck(
        GlobalAvgPool2D(backend=backend, dtype="float64"), rng.standard_normal((2, 3, 4, 3))
    )


def test_global_average_pool_float32_agrees_with_numpy(
    other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((8, 6, 7, 7)).astype(np.float32)
    g = rng.standard_normal((8, 6)).astype(np.float32)
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = GlobalAvgPool2D(backend=be)
        y = layer.forward(be.asarray(x))
        dx = layer.backward(be.asarray(g))
        assert y.dtype == be.xp.float32 and dx.dtype == be.xp.float32
        results.append((host(y), host(dx)))
    for ref, got in zip(*results):
        assert_close(got, ref, "float32")


def test_global_average_pool_shapes_and_errors(backend: ailib.backends.Backend) -> None:
    assert GlobalAvgPool2D()(ailib.Input((16, 7, 7))).shape == (16,)
    with pytest.raises(ValueError, match=r"GlobalAvgPool2D: expected samples of shape \(C, H, W\)"):
        GlobalAvgPool2D()(ailib.Input((16,)))
    with pytest.raises(ValueError, match=r"GlobalAvgPool2D: expected a 4-d input"):
        GlobalAvgPool2D(backend=backend).forward(backend.asarray(np.zeros((2, 3), np.float32)))
    empty = backend.asarray(np.zeros((2, 3, 0, 4), np.float32))  # no entries to average
    with pytest.raises(ValueError, match=r"H, W >= 1, received \(3, 0, 4\)"):
        GlobalAvgPool2D(backend=backend).forward(empty)
