"""GELU (exact and tanh), SiLU and the erf behind GELU: references written with Python's math
module, finite differences, PyTorch, every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ailib
from ailib.layers import GELU, SiLU
from ailib.layers._special import erf, normal_cdf

from .helpers import assert_close, host, layer_gradcheck

#: GELU's exact form, from the standard library's erf (independent of ailib's)
_erf = np.vectorize(math.erf)


def _gelu(x: np.ndarray) -> np.ndarray:
    return x * 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


def _gelu_grad(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / math.sqrt(
        2.0 * math.pi
    )


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


#: one input shape for the tests on every backend (JAX compiles each operation once per shape)
SHAPE = (3, 2, 4)

#: layer factory, reference f (float64 NumPy)
CASES = {
    "gelu": (lambda **kw: GELU(**kw), _gelu),
    "gelu-tanh": (lambda **kw: GELU("tanh", **kw), _gelu_tanh),
    "silu": (lambda **kw: SiLU(**kw), _silu),
}


def test_erf_is_accurate_to_float64_rounding() -> None:
    """Cody's approximations against math.erf on a fine grid covering every branch and the
    branch boundaries (0.5, 4) from both sides."""
    x = np.concatenate([np.linspace(-9.0, 9.0, 36001), [0.5, -0.5, 4.0, -4.0, 0.0]])
    x = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)])
    np.testing.assert_allclose(erf(np, x), _erf(x), rtol=1e-15, atol=1e-16)


def test_normal_cdf_keeps_relative_accuracy_in_the_lower_tail() -> None:
    x = np.linspace(-37.0, 8.0, 4501)
    expected = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x])
    # relative to the value, where 1 + erf(x/√2) would leave nothing below x ≈ −8.3; Φ's
    # condition number in the tail is ~x², so rounding x/√2 (here and in the reference) costs ~x²·2e-16
    relative = np.abs(normal_cdf(np, x) - expected) / expected
    assert np.all(relative <= 4e-16 * (4.0 + x * x))
    assert np.all(np.isfinite(normal_cdf(np, np.array([-1e300, 1e300, -np.inf, np.inf]))))


def test_erf_on_every_backend_in_both_dtypes(backend: ailib.backends.Backend) -> None:
    x = np.linspace(-6.0, 6.0, 24).reshape(SHAPE)
    for dtype, rtol in (("float64", 1e-15), ("float32", 2e-7)):
        got = erf(backend.xp, backend.asarray(x, dtype=backend.dtype(dtype)))
        assert got.dtype == backend.dtype(dtype)  # Python float coefficients do not promote
        np.testing.assert_allclose(host(got), _erf(x), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", CASES)
def test_forward_matches_reference_and_gradcheck_float64(
    name: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    make, f = CASES[name]
    x = rng.standard_normal(SHAPE) * 3.0
    layer = make(backend=backend, dtype="float64")
    assert_close(layer.forward(backend.asarray(x)), f(x), "float64")
    layer_gradcheck(layer, x)


def test_gelu_backward_matches_the_closed_form(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    x, g = rng.standard_normal(SHAPE) * 4.0, rng.standard_normal(SHAPE)
    layer = GELU(backend=backend, dtype="float64")
    layer.forward(backend.asarray(x))
    assert_close(layer.backward(backend.asarray(g)), g * _gelu_grad(x), "float64")


@pytest.mark.parametrize("config", range(6))
def test_matches_torch_on_random_inputs(config: int) -> None:
    """Values and dE/dX against torch.nn.functional in float64, on inputs of random shape and
    scale, including the far tails."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(100 + config)
    shape = tuple(int(s) for s in rng.integers(1, 6, size=int(rng.integers(1, 4))))
    x = rng.standard_normal(shape) * float(rng.choice([0.3, 3.0, 12.0]))
    g = rng.standard_normal(shape)
    be = ailib.backends.get("numpy")
    torch_fns = {
        "gelu": lambda t: torch.nn.functional.gelu(t),
        "gelu-tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "silu": torch.nn.functional.silu,
    }
    for name, (make, _) in CASES.items():
        tx = torch.tensor(x, requires_grad=True)
        ty = torch_fns[name](tx)
        ty.backward(torch.tensor(g))
        layer = make(backend=be, dtype="float64")
        assert_close(layer.forward(be.asarray(x)), ty.detach().numpy(), "float64")
        assert_close(layer.backward(be.asarray(g)), tx.grad.numpy(), "float64")


@pytest.mark.parametrize("name", CASES)
def test_float32_agrees_with_numpy_and_keeps_its_dtype(
    name: str, other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    make = CASES[name][0]
    x = (rng.standard_normal(SHAPE) * 3).astype(np.float32)
    g = rng.standard_normal(SHAPE).astype(np.float32)
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = make(backend=be)
        y = layer.forward(be.asarray(x))
        dx = layer.backward(be.asarray(g))
        assert y.dtype == be.xp.float32 and dx.dtype == be.xp.float32
        results.append((host(y), host(dx)))
    for ref, got in zip(*results):
        assert_close(got, ref, "float32", scale=4)


def test_gelu_tanh_differs_from_the_exact_form_by_the_documented_amount() -> None:
    be = ailib.backends.get("numpy")
    x = np.linspace(-8.0, 8.0, 16001)
    exact = host(GELU(backend=be, dtype="float64").forward(be.asarray(x)))
    approx = host(GELU("tanh", backend=be, dtype="float64").forward(be.asarray(x)))
    gap = np.abs(exact - approx).max()
    assert 1e-4 < gap < 5e-4  # "up to ~5e-4" in GELU's docstring


def test_gelu_and_silu_are_finite_for_large_inputs(backend: ailib.backends.Backend) -> None:
    x = backend.asarray(np.array([[-1e4, -60.0, 60.0, 1e4]]), dtype=backend.dtype("float32"))
    for layer in (GELU(backend=backend), GELU("tanh", backend=backend), SiLU(backend=backend)):
        y = host(layer.forward(x))
        dx = host(layer.backward(backend.asarray(np.ones((1, 4)), dtype=backend.dtype("float32"))))
        np.testing.assert_allclose(y, [[0.0, 0.0, 60.0, 1e4]], atol=1e-6)
        np.testing.assert_allclose(dx, [[0.0, 0.0, 1.0, 1.0]], atol=1e-6)


def test_gelu_refuses_an_unknown_approximation_and_rebuilds_from_its_config() -> None:
    with pytest.raises(ValueError, match=r"GELU: approximate must be one of \('none', 'tanh'\)"):
        GELU("erf")
    assert GELU(**GELU("tanh").get_config()).approximate == "tanh"
    assert GELU().approximate == "none"
