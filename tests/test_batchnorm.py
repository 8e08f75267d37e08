"""BatchNorm1D and BatchNorm2D: float64 references, finite differences in train and eval mode,
running statistics, every backend, errors."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.layers import BatchNorm1D, BatchNorm2D

from .helpers import assert_close, host, layer_gradcheck

#: layer class, input shape, axes the statistics are taken over
CASES = {"1d": (BatchNorm1D, (6, 4), (0,)), "2d": (BatchNorm2D, (3, 4, 3, 2), (0, 2, 3))}


def _set_affine(layer: ailib.layers.Layer, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    be, f = layer.backend, layer.features
    gamma, beta = rng.uniform(0.5, 2.0, f), rng.standard_normal(f)
    layer.params["gamma"], layer.params["beta"] = be.asarray(gamma), be.asarray(beta)
    return gamma, beta


def _bcast(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


@pytest.mark.parametrize("case", CASES)
def test_batchnorm_training_forward_and_running_statistics(
    case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    cls, shape, axes = CASES[case]
    layer = cls(shape[1], momentum=0.1, backend=backend, dtype="float64")
    gamma, beta = _set_affine(layer, rng)
    x = rng.standard_normal(shape) * 3 + 1
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    expected = _bcast(gamma, x.ndim) * (x - mean) / np.sqrt(var + 1e-5) + _bcast(beta, x.ndim)
    assert_close(layer.forward(backend.asarray(x)), expected, "float64")
    count = x.size // shape[1]
    assert_close(layer.buffers["running_mean"], 0.1 * mean.ravel(), "float64")
    assert_close(
        layer.buffers["running_var"], 0.9 + 0.1 * var.ravel() * count / (count - 1), "float64"
    )


@pytest.mark.parametrize("case", CASES)
def test_batchnorm_eval_uses_running_statistics(
    case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    cls, shape, _ = CASES[case]
    layer = cls(shape[1], backend=backend, dtype="float64")
    gamma, beta = _set_affine(layer, rng)
    rm, rv = rng.standard_normal(shape[1]), rng.uniform(0.5, 2, shape[1])
    layer.buffers["running_mean"], layer.buffers["running_var"] = (
        backend.asarray(rm),
        backend.asarray(rv),
    )
    layer.eval()
    x = rng.standard_normal(shape)
    nd = x.ndim
    expected = _bcast(gamma, nd) * (x - _bcast(rm, nd)) / np.sqrt(_bcast(rv, nd) + 1e-5)
    assert_close(layer.forward(backend.asarray(x)), expected + _bcast(beta, nd), "float64")
    assert_close(layer.buffers["running_mean"], rm, "float64")  # eval leaves the buffers alone
    layer_gradcheck(layer, x)


@pytest.mark.parametrize("case", CASES)
def test_batchnorm_gradcheck_float64_training(
    case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    cls, shape, _ = CASES[case]
    layer = cls(shape[1], backend=backend, dtype="float64")
    _set_affine(layer, rng)
    layer_gradcheck(layer, rng.standard_normal(shape))


def test_batchnorm2d_matches_torch_batch_norm(rng: np.random.Generator) -> None:
    """An independent check of forward, running statistics and every gradient."""
    torch = pytest.importorskip("torch")
    layer = BatchNorm2D(3, momentum=0.2, backend="numpy", dtype="float64")
    gamma, beta = _set_affine(layer, rng)
    x, g = rng.standard_normal((4, 3, 5, 2)), rng.standard_normal((4, 3, 5, 2))
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    ty = torch.nn.functional.batch_norm(tx, rm, rv, tg, tb, training=True, momentum=0.2)
    ty.backward(torch.tensor(g))
    assert_close(layer.forward(layer.backend.asarray(x)), ty.detach().numpy(), "float64")
    assert_close(layer.backward(layer.backend.asarray(g)), tx.grad.numpy(), "float64")
    assert_close(layer.grads["gamma"], tg.grad.numpy(), "float64")
    assert_close(layer.grads["beta"], tb.grad.numpy(), "float64")
    assert_close(layer.buffers["running_mean"], rm.numpy(), "float64")
    assert_close(layer.buffers["running_var"], rv.numpy(), "float64")


@pytest.mark.parametrize("case", CASES)
def test_batchnorm_float32_agrees_with_numpy(
    case: str, other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    cls, shape, _ = CASES[case]
    big = (32, *shape[1:])
    x = (rng.standard_normal(big) * 2 + 1).astype(np.float32)
    g = rng.standard_normal(big).astype(np.float32)
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = cls(shape[1], backend=be)
        y = layer.forward(be.asarray(x))
        dx = layer.backward(be.asarray(g))
        assert y.dtype == be.xp.float32 and dx.dtype == be.xp.float32
        assert layer.buffers["running_var"].dtype == be.xp.float32
        results.append(
            [host(a) for a in (y, dx, layer.grads["gamma"], layer.buffers["running_var"])]
        )
    for ref, got in zip(*results):
        assert_close(got, ref, "float32", scale=10)


@pytest.mark.parametrize("case", CASES)
def test_a_constant_feature_normalises_to_exactly_beta_in_float32(
    case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    """x̂ = 0 where every value of a feature is the same, as the math says (and PyTorch gives):
    the batch mean must not be off by an ulp of |μ|, which 1/√(0 + ε) then magnified (a
    feature of 1234.567 over 100 rows gave x̂ = 0.39 in float32 on NumPy)."""
    cls, shape, _ = CASES[case]
    big = (100, *shape[1:])
    values = np.array([1234.567, -0.4242, 3.1, -9876.5], np.float32)[: shape[1]]
    x = np.broadcast_to(_bcast(values, len(big)), big).astype(np.float32)
    layer = cls(shape[1], backend=backend, dtype="float32")
    gamma, beta = (rng.uniform(0.5, 2.0, shape[1]).astype(np.float32) for _ in range(2))
    layer.params["gamma"], layer.params["beta"] = backend.asarray(gamma), backend.asarray(beta)
    y = host(layer.forward(backend.asarray(x)))
    np.testing.assert_array_equal(y, np.broadcast_to(_bcast(beta, len(big)), big))
    assert_close(layer.buffers["running_mean"], 0.1 * values, "float32")
    assert_close(layer.buffers["running_var"], np.full(shape[1], 0.9), "float32")


@pytest.mark.parametrize("case", CASES)
def test_a_small_spread_around_a_large_mean_keeps_float32_accuracy(
    case: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    """X = 1000 + 0.01·noise in float32: x̂ to float32 accuracy against the float64 reference
    of the same float32 input (the mean's rounding error had scaled with |μ| = 1000, not with
    the spread: 2e-2 off on NumPy, 3e-3 on PyTorch)."""
    cls, shape, axes = CASES[case]
    big = (256, *shape[1:])
    x = (1000.0 + 0.01 * rng.standard_normal(big)).astype(np.float32)
    exact = x.astype(np.float64)
    mean, var = exact.mean(axis=axes, keepdims=True), exact.var(axis=axes, keepdims=True)
    layer = cls(shape[1], backend=backend, dtype="float32")
    y = layer.forward(backend.asarray(x))
    assert_close(y, (exact - mean) / np.sqrt(var + 1e-5), "float32", scale=10)
    assert_close(layer.buffers["running_mean"], 0.1 * mean.ravel(), "float32")


def test_batchnorm_errors_name_the_layer_and_the_shapes(backend: ailib.backends.Backend) -> None:
    bn1, bn2 = BatchNorm1D(4, backend=backend), BatchNorm2D(3, backend=backend)
    with pytest.raises(
        ValueError,
        match=r"BatchNorm1D: expected input of shape \(N, F\) with 4 "
        r"features.*\(5, 3\)",
    ):
        bn1.forward(backend.asarray(np.zeros((5, 3), dtype=np.float32)))
    with pytest.raises(
        ValueError,
        match=r"BatchNorm2D: expected input of shape \(N, C, H, W\).*"
        r"\(5, 3\)",
    ):
        bn2.forward(backend.asarray(np.zeros((5, 3), dtype=np.float32)))
    with pytest.raises(ValueError, match="BatchNorm1D: training needs more than one value"):
        bn1.forward(backend.asarray(np.zeros((1, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match="BatchNorm2D: the number of features"):
        BatchNorm2D(0)
    assert BatchNorm2D(**bn2.get_config()).get_config() == {
        "channels": 3,
        "momentum": 0.1,
        "eps": 1e-5,
    }
    assert set(bn2.params) == {"gamma", "beta"}
    assert set(bn2.buffers) == {"running_mean", "running_var"}
