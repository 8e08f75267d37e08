"""Embedding: gathered rows, dE/dW summed over repeated indices (NumPy's add.at as the
reference), finite differences, PyTorch, every backend, index checks."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.layers import Embedding, embedding

from .helpers import assert_close, host, layer_gradcheck

#: index shapes: one index per sample, sequences, and a grid of them
SHAPES = {"rows": (7,), "sequences": (3, 5), "grid": (2, 3, 2)}


def _reference_grad(indices: np.ndarray, grad: np.ndarray, rows: int) -> np.ndarray:
    dim = grad.shape[-1]
    total = np.zeros((rows, dim))
    np.add.at(total, indices.reshape(-1), grad.reshape(-1, dim))  # repeated indices add up
    return total


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_gathers_rows_and_backward_sums_repeated_indices(
    shape: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    layer = Embedding(6, 4, backend=backend, dtype="float64", seed=1)
    w = host(layer.params["W"])
    indices = rng.integers(0, 6, size=SHAPES[shape])
    indices.reshape(-1)[:3] = 2  # repeated for sure
    y = layer.forward(backend.asarray(indices))
    assert_close(y, w[indices], "float64")
    g = rng.standard_normal((*SHAPES[shape], 4))
    assert layer.backward(backend.asarray(g)) is None  # indices have no gradient
    assert_close(layer.grads["W"], _reference_grad(indices, g, 6), "float64")


def test_gradcheck_float64(backend: ailib.backends.Backend, rng: np.random.Generator) -> None:
    layer = Embedding(5, 3, backend=backend, dtype="float64", seed=2)
    layer_gradcheck(layer, rng.integers(0, 5, size=(4, 3)), input_grad=False)


def test_the_one_hot_product_in_slices_gives_the_same_gradient(
    backend: ailib.backends.Backend, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    indices, g = rng.integers(0, 9, size=(5, 4)), rng.standard_normal((5, 4, 2))
    layer = Embedding(9, 2, backend=backend, dtype="float64", seed=0)
    monkeypatch.setattr(embedding, "ONE_HOT_BUDGET", 9 * 3)  # slices of 3 rows, the last of 2
    layer.forward(backend.asarray(indices))
    layer.backward(backend.asarray(g))
    assert_close(layer.grads["W"], _reference_grad(indices, g, 9), "float64")


@pytest.mark.parametrize("config", range(5))
def test_matches_torch_embedding_on_random_configurations(config: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(300 + config)
    rows, dim = int(rng.integers(1, 30)), int(rng.integers(1, 6))
    shape = tuple(int(s) for s in rng.integers(1, 6, size=int(rng.integers(1, 4))))
    indices = rng.integers(0, rows, size=shape)
    be = ailib.backends.get("numpy")
    layer = Embedding(rows, dim, backend=be, dtype="float64", seed=config)
    tw = torch.tensor(host(layer.params["W"]), requires_grad=True)
    ty = torch.nn.functional.embedding(torch.tensor(indices), tw)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    assert_close(layer.forward(be.asarray(indices)), ty.detach().numpy(), "float64")
    layer.backward(be.asarray(g))
    assert_close(layer.grads["W"], tw.grad.numpy(), "float64")


def test_float32_agrees_with_numpy(
    other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    indices = rng.integers(0, 50, size=(8, 6))
    g = rng.standard_normal((8, 6, 5)).astype(np.float32)
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = Embedding(50, 5, backend=be, seed=4)
        y = layer.forward(be.asarray(indices))
        layer.backward(be.asarray(g))
        assert y.dtype == be.xp.float32 and layer.grads["W"].dtype == be.xp.float32
        results.append((host(y), host(layer.grads["W"])))
    for ref, got in zip(*results):
        assert_close(got, ref, "float32")


def test_indices_of_any_integer_dtype_or_whole_floats_are_taken(
    backend: ailib.backends.Backend,
) -> None:
    layer = Embedding(300, 2, backend=backend, dtype="float64", seed=0)
    w = host(layer.params["W"])
    expected = w[np.array([[0, 5, 299]])]
    for dtype in ("int32", "int64", "float32", "float64"):
        x = backend.asarray(np.array([[0, 5, 299]]), dtype=backend.dtype(dtype))
        assert_close(layer.forward(x), expected, "float64")
    small = Embedding(4, 2, backend=backend, dtype="float64", seed=0)
    x = backend.asarray(np.array([[3, 1, 3]]), dtype=backend.dtype("uint8"))
    assert_close(small.forward(x), host(small.params["W"])[[[3, 1, 3]]], "float64")


def test_bad_indices_are_refused_with_what_was_received(backend: ailib.backends.Backend) -> None:
    layer = Embedding(4, 2, backend=backend)
    bad = {
        r"indices must lie in \[0, 3\] for 4 rows, received indices in \[0, 4\]": [[0, 4]],
        r"indices must lie in \[0, 3\].*\[-1, 2\]": [[-1, 2]],
        r"indices must lie in \[0, 3\].*inf": [[0.0, np.inf]],
        "expected integer indices, received floats that are not whole": [[0.5, 1.0]],
    }
    for message, values in bad.items():
        array = np.array(values)
        with pytest.raises(ValueError, match=f"Embedding: {message}"):
            layer.forward(backend.asarray(array))
    with pytest.raises(ValueError, match="Embedding: .*not whole numbers"):
        layer.forward(backend.asarray(np.array([[np.nan, 1.0]], dtype=np.float32)))
    with pytest.raises(TypeError, match="Embedding: expected integer indices, received dtype bool"):
        layer.forward(backend.asarray(np.array([[True, False]])))
    with pytest.raises(ValueError, match=r"Embedding: expected indices of shape \(N, ...\)"):
        layer.forward(backend.xp.reshape(backend.asarray(np.array([1])), ()))
    for args in ((0, 2), (3, 0), (2.0, 3), (True, 3)):
        with pytest.raises(ValueError, match="Embedding: .* must be a positive int"):
            Embedding(*args)


def test_shapes_config_and_initialisation() -> None:
    layer = Embedding(1000, 64, seed=0)
    assert layer.compute_output_shape((12,)) == (12, 64)
    assert layer.compute_output_shape((3, 4)) == (3, 4, 64)
    again = Embedding(**layer.get_config())
    assert again.get_config() == {"num_embeddings": 1000, "embedding_dim": 64, "init": "normal"}
    w = host(layer.params["W"])
    assert w.shape == (1000, 64) and abs(w.std() - 1.0) < 0.02 and abs(w.mean()) < 0.02
    glorot = host(Embedding(1000, 64, init="glorot_uniform", seed=0).params["W"])
    assert np.abs(glorot).max() <= np.sqrt(6 / 1064)
