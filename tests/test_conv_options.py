"""GlobalAvgPool2D, Conv2D's dilation and groups, pooling with padding: NumPy references,
finite differences, PyTorch on random configurations, every backend."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.layers import GlobalAvgPool2D

from .helpers import assert_close, layer_gradcheck


# -- global average pooling ----------------------------------------------------------------------
def test_global_avg_pool_forward_backward_and_gradcheck(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    x, g = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3))
    layer = GlobalAvgPool2D(backend=backend, dtype="float64")
    assert_close(layer.forward(backend.asarray(x)), x.mean(axis=(2, 3)), "float64")
    dx = layer.backward(backend.asarray(g))
    assert_close(dx, np.broadcast_to(g[:, :, None, None] / 20, x.shape), "float64")
    layer_gradcheck(layer, x)


def test_global_avg_pool_matches_torch_and_keeps_float32(
    other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
    g = rng.standard_normal((3, 4)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, 1).reshape(3, 4)
    ty.backward(torch.tensor(g))
    layer = GlobalAvgPool2D(backend=other_backend)
    y = layer.forward(other_backend.asarray(x))
    dx = layer.backward(other_backend.asarray(g))
    assert y.dtype == other_backend.xp.float32 and dx.dtype == other_backend.xp.float32
    assert_close(y, ty.detach().numpy(), "float32")
    assert_close(dx, tx.grad.numpy(), "float32")


def test_global_avg_pool_shapes_and_errors(backend: ailib.backends.Backend) -> None:
    layer = GlobalAvgPool2D(backend=backend)
    assert layer.compute_output_shape((16, 7, 7)) == (16,)
    with pytest.raises(ValueError, match=r"GlobalAvgPool2D: expected samples of shape \(C, H, W\)"):
        layer.compute_output_shape((16,))
    with pytest.raises(ValueError, match=r"GlobalAvgPool2D: expected a 4-d input.*\(2, 3\)"):
        layer.forward(backend.asarray(np.zeros((2, 3), dtype=np.float32)))
