"""LayerNorm: float64 NumPy reference, finite differences, PyTorch, every backend, sizes taken
from the input, errors."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.layers import LayerNorm

from .helpers import assert_close, host, layer_gradcheck

#: normalized_shape, input shape
CASES = {
    "rows": (4, (5, 4)),
    "sequence-last-axis": (3, (2, 4, 3)),
    "images-chw": ((2, 3, 2), (3, 2, 3, 2)),
}


def _reference(x: np.ndarray, k: int, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    axes = tuple(range(x.ndim - k, x.ndim))
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + 1e-5) + beta


def _layer(case: str, backend: ailib.backends.Backend, rng: np.random.Generator) -> LayerNorm:
    shape = CASES[case][0]
    layer = LayerNorm(shape, backend=backend, dtype="float64")
    trailing = layer.normalized_shape
    layer.params["gamma"] = backend.asarray(rng.uniform(0.5, 2.0, trailing))
    layer.params["beta"] = backend.asarray(rng.standard_normal(trailing))
    return layer


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_reference_in_train_and_eval(
    case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    layer = _layer(case, backend, rng)
    x = rng.standard_normal(CASES[case][1]) * 3 + 1
    gamma, beta = host(layer.params["gamma"]), host(layer.params["beta"])
    expected = _reference(x, len(layer.normalized_shape), gamma, beta)
    assert_close(layer.forward(backend.asarray(x)), expected, "float64")
    layer.eval()  # no running statistics: eval computes the same
    assert_close(layer.forward(backend.asarray(x)), expected, "float64")
    assert layer.buffers == {}


@pytest.mark.parametrize("case", CASES)
def test_gradcheck_float64(
    case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    layer = _layer(case, backend, rng)
    layer_gradcheck(layer, rng.standard_normal(CASES[case][1]))
    assert set(layer.grads) == {"gamma", "beta"}


@pytest.mark.parametrize("config", range(6))
def test_matches_torch_layer_norm_on_random_configurations(config: int) -> None:
    """Forward, dE/dX, dE/dγ and dE/dβ against torch.nn.functional.layer_norm in float64, for
    random ranks, normalized shapes, scales and eps."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(200 + config)
    ndim = int(rng.integers(2, 5))
    shape = tuple(int(s) for s in rng.integers(1, 5, size=ndim))
    shape = (int(rng.integers(1, 4)), *shape[1:])
    k = int(rng.integers(1, ndim))  # normalize over the last k axes (the batch axis stays)
    trailing = shape[ndim - k :]
    if np.prod(trailing) < 2:  # one entry has no spread to normalize
        trailing, shape = (*trailing[:-1], 3), (*shape[:-1], 3)
    eps = float(rng.choice([1e-5, 1e-3]))
    x = rng.standard_normal(shape) * float(rng.choice([0.1, 1.0, 50.0])) + 2.0
    gamma, beta = rng.uniform(0.5, 2, trailing), rng.standard_normal(trailing)
    g = rng.standard_normal(shape)
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    ty = torch.nn.functional.layer_norm(tx, trailing, tg, tb, eps)
    ty.backward(torch.tensor(g))

    be = ailib.backends.get("numpy")
    layer = LayerNorm(list(trailing), eps=eps, backend=be, dtype="float64")
    layer.params["gamma"], layer.params["beta"] = be.asarray(gamma), be.asarray(beta)
    assert_close(layer.forward(be.asarray(x)), ty.detach().numpy(), "float64")
    assert_close(layer.backward(be.asarray(g)), tx.grad.numpy(), "float64")
    assert_close(layer.grads["gamma"], tg.grad.numpy(), "float64")
    assert_close(layer.grads["beta"], tb.grad.numpy(), "float64")


def test_float32_agrees_with_numpy(
    other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    x = (rng.standard_normal((6, 5, 8)) * 2).astype(np.float32)
    g = rng.standard_normal((6, 5, 8)).astype(np.float32)
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = LayerNorm(backend=be)
        y = layer.forward(be.asarray(x))
        dx = layer.backward(be.asarray(g))
        arrays = (y, dx, layer.grads["gamma"], layer.grads["beta"])
        assert all(a.dtype == be.xp.float32 for a in arrays)
        results.append([host(a) for a in arrays])
    for ref, got in zip(*results):
        assert_close(got, ref, "float32", scale=10)


def test_a_constant_sample_normalises_to_exactly_beta_in_float32(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    """x̂ = 0 for a sample whose entries are all equal, as the math says: the mean must not be
    off by an ulp of |μ|, which 1/√(0 + ε) then magnified (rows of 100 entries of 1234.567 gave
    x̂ = 0.077 in float32 on NumPy)."""
    values = np.array([1234.567, -0.4242, 3.1], np.float32)
    x = np.broadcast_to(values[:, None, None], (3, 4, 100)).astype(np.float32)
    layer = LayerNorm(100, backend=backend, dtype="float32")
    beta = rng.standard_normal(100).astype(np.float32)
    layer.params["beta"] = backend.asarray(beta)
    np.testing.assert_array_equal(
        host(layer.forward(backend.asarray(x))), np.broadcast_to(beta, x.shape)
    )


def test_a_small_spread_around_a_large_mean_keeps_float32_accuracy(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    """X = 1000 + 0.01·noise in float32, normalised over its last two axes: x̂ to float32
    accuracy against the float64 reference of the same float32 input (5e-3 off before, on
    NumPy and PyTorch alike: the mean's rounding error scaled with |μ|, not the spread)."""
    x = (1000.0 + 0.01 * rng.standard_normal((3, 16, 16))).astype(np.float32)
    layer = LayerNorm((16, 16), backend=backend, dtype="float32")
    expected = _reference(x.astype(np.float64), 2, np.ones((16, 16)), np.zeros((16, 16)))
    assert_close(layer.forward(backend.asarray(x)), expected, "float32", scale=10)


def test_size_is_taken_from_the_input_and_kept_in_the_config(
    backend: ailib.backends.Backend,
) -> None:
    layer = LayerNorm(backend=backend)
    assert not layer.sized and layer.get_config()["normalized_shape"] is None
    assert layer.compute_output_shape((7, 5)) == (7, 5)
    y = layer.forward(backend.asarray(np.ones((2, 7, 5), dtype=np.float32)))
    assert tuple(y.shape) == (2, 7, 5)
    assert layer.normalized_shape == (5,) and tuple(layer.params["gamma"].shape) == (5,)
    again = LayerNorm(**layer.get_config())
    assert again.normalized_shape == (5,) and again.get_config() == layer.get_config()


def test_errors_name_the_layer_and_the_shapes(backend: ailib.backends.Backend) -> None:
    layer = LayerNorm((3, 4), backend=backend)
    with pytest.raises(ValueError, match=r"LayerNorm: expected samples whose shape ends with"):
        layer.forward(backend.asarray(np.zeros((2, 4, 3), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"LayerNorm: expected samples.*\(4, 3\)"):
        layer.compute_output_shape((4, 3))
    with pytest.raises(TypeError, match="LayerNorm: expected dtype float32"):
        layer.forward(backend.asarray(np.zeros((2, 3, 4), dtype=np.float64)))
    for bad in (0, (3, 0), (), "3", 2.5):
        with pytest.raises(ValueError, match="LayerNorm: normalized_shape must be"):
            LayerNorm(bad)
    with pytest.raises(ValueError, match="LayerNorm: eps must be positive"):
        LayerNorm(eps=0.0)
    with pytest.raises(
        ValueError, match="LayerNorm: eps must be positive and finite, received inf"
    ):
        LayerNorm(eps=float("inf"))  # every output β, every gradient 0
    for norm in (ailib.layers.BatchNorm1D, ailib.layers.BatchNorm2D):
        with pytest.raises(ValueError, match="a finite eps > 0, received momentum=0.1, eps=inf"):
            norm(3, eps=float("inf"))
