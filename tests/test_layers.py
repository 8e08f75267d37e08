"""Dense and activation layers: NumPy float64 reference, finite differences, every backend."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.layers import Dense, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh

from .helpers import assert_close, host, layer_gradcheck


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


#: activation class, kwargs, reference f(x), reference f'(x) (None: not elementwise)
ACTIVATIONS = {
    "Identity": (Identity, {}, lambda x: x, lambda x: np.ones_like(x)),
    "Tanh": (Tanh, {}, np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "Sigmoid": (
        Sigmoid,
        {},
        lambda x: 1 / (1 + np.exp(-x)),
        lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2,
    ),
    "ReLU": (ReLU, {}, lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(x.dtype)),
    "LeakyReLU": (
        LeakyReLU,
        {"alpha": 0.1},
        lambda x: np.where(x > 0, x, 0.1 * x),
        lambda x: np.where(x > 0, 1.0, 0.1),
    ),
    "Softmax": (Softmax, {}, _softmax, None),
}


def _away_from_kinks(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Inputs at least 0.05 away from 0, where ReLU-like derivatives jump."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.05, 0.5, x)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_forward_and_backward_match_reference(
    name: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    cls, kwargs, f, df = ACTIVATIONS[name]
    x = _away_from_kinks(rng, (5, 7))
    g = rng.standard_normal((5, 7))
    layer = cls(**kwargs, backend=backend, dtype="float64")
    y = layer.forward(backend.asarray(x))
    assert_close(y, f(x), "float64")
    dx = layer.backward(backend.asarray(g))
    if df is not None:
        expected = g * df(x)
    else:  # softmax: explicit Jacobian, row by row
        p = _softmax(x)
        expected = np.stack([(np.diag(pi) - np.outer(pi, pi)) @ gi for pi, gi in zip(p, g)])
    assert_close(dx, expected, "float64")


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradcheck_float64(
    name: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    cls, kwargs, _, _ = ACTIVATIONS[name]
    layer_gradcheck(cls(**kwargs, backend=backend, dtype="float64"), _away_from_kinks(rng, (3, 4)))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_float32_agrees_with_numpy(
    name: str, other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    cls, kwargs, _, _ = ACTIVATIONS[name]
    x = rng.standard_normal((16, 10)).astype(np.float32)
    g = rng.standard_normal((16, 10)).astype(np.float32)
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = cls(**kwargs, backend=be)
        y = layer.forward(be.asarray(x))
        dx = layer.backward(be.asarray(g))
        assert y.dtype == be.xp.float32 and dx.dtype == be.xp.float32
        results.append((host(y), host(dx)))
    for ref, got in zip(results[0], results[1]):
        assert_close(got, ref, "float32")


def test_sigmoid_is_stable_for_large_inputs(backend: ailib.backends.Backend) -> None:
    x = backend.asarray(np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]], dtype=np.float32))
    y = host(Sigmoid(backend=backend).forward(x))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)


def test_softmax_is_stable_for_large_logits(backend: ailib.backends.Backend) -> None:
    x = backend.asarray(np.array([[1000.0, 1000.0, -1000.0]], dtype=np.float32))
    np.testing.assert_allclose(host(Softmax(backend=backend).forward(x)), [[0.5, 0.5, 0.0]])


def test_dense_forward_backward_match_the_seed_formulas(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    layer = Dense(4, 3, backend=backend, dtype="float64", seed=0)
    w = rng.standard_normal((3, 4))
    b = rng.standard_normal(3)
    layer.params["W"], layer.params["b"] = backend.asarray(w), backend.asarray(b)
    x = rng.standard_normal((5, 4))
    g = rng.standard_normal((5, 3))
    assert_close(layer.forward(backend.asarray(x)), x @ w.T + b, "float64")
    dx = layer.backward(backend.asarray(g))
    # the seed, per sample n: dE/dW = dE/dY·Xᵀ, dE/dB = dE/dY, dE/dX = Wᵀ·dE/dY; summed over n
    assert_close(layer.grads["W"], sum(np.outer(g[n], x[n]) for n in range(5)), "float64")
    assert_close(layer.grads["b"], g.sum(axis=0), "float64")
    assert_close(dx, np.stack([w.T @ g[n] for n in range(5)]), "float64")


@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradcheck_float64(
    bias: bool, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    layer = Dense(4, 3, bias=bias, backend=backend, dtype="float64", seed=1)
    layer_gradcheck(layer, rng.standard_normal((5, 4)))
    assert set(layer.params) == ({"W", "b"} if bias else {"W"})


def test_dense_float32_agrees_with_numpy(
    other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((32, 20)).astype(np.float32)
    g = rng.standard_normal((32, 8)).astype(np.float32)
    out = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = Dense(20, 8, backend=be, seed=3)
        y = layer.forward(be.asarray(x))
        dx = layer.backward(be.asarray(g))
        out.append([host(a) for a in (y, dx, layer.grads["W"], layer.grads["b"])])
        assert all(a.dtype == be.xp.float32 for a in (y, dx, *layer.grads.values()))
    for ref, got in zip(*out):
        assert_close(got, ref, "float32", scale=5)


@pytest.mark.parametrize("init", ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal"])
def test_initialisers_have_the_documented_scale(init: str) -> None:
    w = host(Dense(400, 300, init=init, backend="numpy", seed=0).params["W"])
    assert w.dtype == np.float32 and w.shape == (300, 400)
    expected_var = 2.0 / 700 if init.startswith("glorot") else 2.0 / 400
    assert abs(w.var() / expected_var - 1) < 0.05
    if init.endswith("uniform"):
        limit = np.sqrt(3 * expected_var)
        assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit


def test_leaky_relu_refuses_a_slope_that_is_not_finite() -> None:
    for alpha in (float("nan"), float("inf")):
        with pytest.raises(
            ValueError, match=f"LeakyReLU: alpha must be a finite number, received {alpha}"
        ):
            LeakyReLU(alpha)


@pytest.mark.parametrize(
    "make, fault",
    [
        (lambda: LeakyReLU(None), "LeakyReLU: alpha must be a number, received None"),
        (lambda: ailib.layers.Dropout("0.5"), "Dropout: p must be a number, received '0.5'"),
        (
            lambda: ailib.layers.BatchNorm1D(3, momentum=None),
            "BatchNorm1D: momentum must be a number, received None; PyTorch's momentum=None",
        ),
        (lambda: ailib.layers.BatchNorm2D(3, eps="1e-5"), "BatchNorm2D: eps must be a number"),
        (lambda: ailib.layers.LayerNorm(3, eps=None), "LayerNorm: eps must be a number"),
    ],
)
def test_hyperparameters_that_are_not_numbers_are_refused_by_name(make: object, fault: str) -> None:
    """Not a raw TypeError from a comparison (``0.0 <= None``): the layer, what, and what came."""
    with pytest.raises(TypeError, match=fault):
        make()  # type: ignore[operator]
    assert ailib.layers.BatchNorm1D(3, momentum=np.float32(0.5)).momentum == 0.5  # NumPy: fine


def test_a_bias_flag_that_is_not_a_bool_is_refused_by_name() -> None:
    """``bool("no")`` is True: ``Dense(4, 2, bias="no")`` made a bias, and kept "no" in its
    config."""
    with pytest.raises(TypeError, match="Dense: bias must be True or False, received 'no'"):
        Dense(4, 2, bias="no")
    assert Dense(4, 2, bias=np.bool_(False)).get_config()["bias"] is False


@pytest.mark.parametrize("bias", [0, "no", None])
def test_dense_bias_that_is_not_a_bool_is_refused(bias: object) -> None:
    """bias="no" was truthy and learned a bias; bias=0 built a layer without one that
    ``save`` then refused to write (its config is checked for a bool there)."""
    with pytest.raises(TypeError, match=f"Dense: bias must be True or False, received {bias!r}"):
        Dense(3, 2, bias=bias)  # type: ignore[arg-type]


def test_conv_and_pool_flags_that_are_not_bools_are_refused_by_name() -> None:
    """``AvgPool2D(2, count_include_pad="no")`` counted the padding; ``Conv2D(bias="no")``
    learned a bias."""
    with pytest.raises(TypeError, match="Conv2D: bias must be True or False, received 'no'"):
        ailib.layers.Conv2D(1, 2, 3, bias="no")
    with pytest.raises(TypeError, match="AvgPool2D: count_include_pad must be True or False"):
        ailib.layers.AvgPool2D(2, count_include_pad="no")


def test_unknown_initialiser_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown initialiser 'ones'"):
        Dense(2, 2, init="ones")


def test_dense_reports_bad_inputs_clearly(backend: ailib.backends.Backend) -> None:
    layer = Dense(4, 3, backend=backend)
    with pytest.raises(
        ValueError, match=r"Dense: expected 4 features along axis -1, received shape \(2, 5\)"
    ):
        layer.forward(backend.asarray(np.zeros((2, 5), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"Dense: expected a 2-d input, received shape \(4,\)"):
        layer.forward(backend.asarray(np.zeros(4, dtype=np.float32)))
    with pytest.raises(TypeError, match="Dense: expected dtype float32, received int64"):
        layer.forward(backend.asarray(np.zeros((2, 4), dtype=np.int64)))
    with pytest.raises(RuntimeError, match="Dense.backward called before forward"):
        Dense(4, 3, backend=backend).backward(backend.asarray(np.zeros((2, 3), dtype=np.float32)))


def test_layer_refuses_an_array_of_another_backend_or_device(
    backend: ailib.backends.Backend,
) -> None:
    layer = Tanh(backend=backend)
    device1 = ailib.backends.get("array_api_strict:device1")
    other = ailib.backends.get("numpy") if backend is device1 else device1
    with pytest.raises(TypeError, match=f"Tanh: expected an array of backend '{backend.name}'"):
        layer.forward(other.asarray(np.zeros((2, 2), dtype=np.float32)))


def test_layer_moves_between_backends_keeping_values(other_backend: ailib.backends.Backend) -> None:
    layer = Dense(3, 2, backend="numpy", seed=0)
    w = host(layer.params["W"]).copy()
    layer.to(other_backend)
    assert other_backend.owns(layer.params["W"])
    np.testing.assert_array_equal(host(layer.params["W"]), w)


def test_activations_follow_the_input_dtype(backend: ailib.backends.Backend) -> None:
    x64 = backend.asarray(np.ones((2, 3)), dtype="float64")
    assert Tanh(backend=backend).forward(x64).dtype == backend.xp.float64
    with pytest.raises(TypeError, match="ReLU: expected a floating array, received int64"):
        ReLU(backend=backend).forward(backend.asarray(np.ones((2, 3), dtype=np.int64)))


def test_dense_computes_in_the_dtype_of_its_parameters(backend: ailib.backends.Backend) -> None:
    layer = Dense(3, 2, backend=backend, seed=0)  # float32 by default
    layer.params["W"] = backend.asarray(np.ones((2, 3)), dtype="float64")
    layer.params["b"] = backend.asarray(np.zeros(2), dtype="float64")
    y = layer.forward(backend.asarray(np.ones((4, 3)), dtype="float64"))
    assert y.dtype == backend.xp.float64
    np.testing.assert_allclose(host(y), 3.0)


def test_relu_backward_is_the_gradient_where_y_is_positive_on_every_backend(backend):
    """`ailib.backends.relu_backward`: dE/dY where Y > 0, else 0 (Y NaN or ±0 included), in
    Y's dtype, a new array (each backend has its own fast path: check they agree)."""
    y = np.array([[0.0, 1.5, np.nan, 2.0], [-0.0, 3.0, 0.0, np.inf]], dtype=np.float32)
    g = np.array([[-1.0, 2.0, 3.0, -4.0], [5.0, -6.0, 1e30, np.inf]], dtype=np.float32)
    yd, gd = backend.asarray(y), backend.asarray(g)
    out = ailib.backends.relu_backward(yd, gd)
    expected = np.array([[0.0, 2.0, 0.0, -4.0], [0.0, -6.0, 0.0, np.inf]], dtype=np.float32)
    assert host(out).dtype == np.float32
    np.testing.assert_array_equal(host(out), expected)
    np.testing.assert_array_equal(host(gd), g)  # dE/dY is left as it was


def test_relu_backward_through_the_layer_matches_pytorch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).standard_normal((7, 5))
    x[0, :2] = 0.0  # the subgradient at 0 is 0, as PyTorch's
    g = np.random.default_rng(4).standard_normal((7, 5))
    layer = ReLU(dtype="float64")
    layer.forward(x)
    ours = layer.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    torch.relu(xt).backward(torch.tensor(g))
    np.testing.assert_array_equal(ours, xt.grad.numpy())
