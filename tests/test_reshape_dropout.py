"""Flatten, Reshape and Dropout: references, finite differences, train/eval, every backend."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.layers import Dense, Dropout, Flatten, Reshape

from .helpers import assert_close, host, layer_gradcheck


def test_flatten_forward_backward(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((3, 2, 4, 5))
    layer = Flatten(backend=backend, dtype="float64")
    assert_close(layer.forward(backend.asarray(x)), x.reshape(3, 40), "float64")
    g = rng.standard_normal((3, 40))
    assert_close(layer.backward(backend.asarray(g)), g.reshape(3, 2, 4, 5), "float64")
    layer_gradcheck(Flatten(backend=backend, dtype="float64"), rng.standard_normal((2, 3, 2)))


def test_reshape_accepts_flat_rows_and_images(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    layer = Reshape((1, 4, 3), backend=backend, dtype="float64")
    for shape in [(2, 12), (2, 1, 4, 3), (2, 3, 4)]:
        x = rng.standard_normal(shape)
        y = layer.forward(backend.asarray(x))
        assert_close(y, x.reshape(2, 1, 4, 3), "float64")
        g = rng.standard_normal((2, 1, 4, 3))
        assert_close(layer.backward(backend.asarray(g)), g.reshape(shape), "float64")
    layer_gradcheck(layer, rng.standard_normal((2, 12)))


def test_reshape_and_flatten_errors(backend: ailib.backends.Backend) -> None:
    layer = Reshape((1, 28, 28), backend=backend)
    with pytest.raises(ValueError, match=r"Reshape: expected samples of 784 entries.*\(5, 780\)"):
        layer.forward(backend.asarray(np.zeros((5, 780), dtype=np.float32)))
    with pytest.raises(ValueError, match="Reshape: shape must be"):
        Reshape((0, 3))
    with pytest.raises(ValueError, match=r"Reshape: shape must be.*received \(True, 4\)"):
        Reshape((True, 4))  # a bool is not a size
    for bad in (784.0, -1, "784"):  # not a sequence (tuple() raised a raw TypeError on floats)
        with pytest.raises(ValueError, match=f"Reshape: shape must be.*received \\({bad!r},\\)"):
            Reshape(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Flatten: expected at least a 2-d input.*\(5,\)"):
        Flatten(backend=backend).forward(backend.asarray(np.zeros(5, dtype=np.float32)))
    assert Reshape(**layer.get_config()).shape == (1, 28, 28)
    assert not hasattr(layer, "in_features")  # Sequential must not demand (N, features) rows


# -- dropout -------------------------------------------------------------------------------------
def test_dropout_is_the_identity_in_eval_mode(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((4, 6)).astype(np.float32)
    layer = Dropout(0.5, seed=0, backend=backend).eval()
    assert_close(layer.forward(backend.asarray(x)), x)
    assert_close(layer.backward(backend.asarray(2 * x)), 2 * x)


def test_dropout_training_scales_kept_units_and_backward_reuses_the_mask(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    p = 0.3
    layer = Dropout(p, seed=1, backend=backend)
    y = layer.forward(backend.asarray(np.ones((200, 500), dtype=np.float32)))
    assert y.dtype == backend.xp.float32
    y = host(y)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)
    assert abs(1 - kept.mean() - p) < 0.01  # 100k draws: the std of the rate is 0.0014
    g = rng.standard_normal((200, 500)).astype(np.float32)
    assert_close(layer.backward(backend.asarray(g)), g * y)
    again = host(layer.forward(backend.asarray(np.ones((200, 500), dtype=np.float32))))
    assert not np.array_equal(again != 0, kept)  # a fresh mask each call


def test_dropout_gradcheck_float64_with_a_fixed_mask(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    layer = Dropout(0.4, backend=backend, dtype="float64")
    forward = layer.forward

    def same_mask_forward(x: object) -> object:
        layer.rng = backend.random(5)  # the same mask on every call of the FD check
        return forward(x)

    layer.forward = same_mask_forward
    layer_gradcheck(layer, rng.standard_normal((4, 5)))


def test_dropout_same_seed_same_mask_and_p_zero_is_identity(
    backend: ailib.backends.Backend,
) -> None:
    x = backend.asarray(np.ones((8, 16), dtype=np.float32))
    a = host(Dropout(0.5, seed=3, backend=backend).forward(x))
    b = host(Dropout(0.5, seed=3, backend=backend).forward(x))
    np.testing.assert_array_equal(a, b)
    assert_close(Dropout(0.0, backend=backend).forward(x), np.ones((8, 16)))
    with pytest.raises(ValueError, match=r"Dropout: p must lie in \[0, 1\)"):
        Dropout(1.0)


def test_seeded_model_moves_dropout_to_its_backend_and_repeats_masks(
    other_backend: ailib.backends.Backend,
) -> None:
    def masks() -> np.ndarray:
        model = ailib.Sequential([Dense(4, 64), Dropout(0.5)], backend=other_backend, seed=9)
        y = model.forward(other_backend.asarray(np.ones((3, 4), dtype=np.float32)))
        assert other_backend.owns(y)
        return host(y) != 0

    np.testing.assert_array_equal(masks(), masks())
