"""Test helpers: tolerances per dtype (defined once), host comparisons, finite differences."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

import ailib

#: (rtol, atol) for comparing a backend's result with the NumPy reference, per dtype
TOLERANCES = {"float32": (2e-5, 2e-6), "float64": (1e-10, 1e-12)}


def tol(dtype: str) -> dict[str, float]:
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol, "atol": atol}


def host(x: Any) -> np.ndarray:
    """Any backend's array as NumPy (the comparison always happens on the host)."""
    return ailib.backends.to_numpy(x)


def assert_close(actual: Any, expected: Any, dtype: str = "float32", scale: float = 1.0) -> None:
    t = tol(dtype)
    np.testing.assert_allclose(
        host(actual), host(expected), rtol=t["rtol"] * scale, atol=t["atol"] * scale
    )


def numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar function f at x (float64), one entry at a time."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f(x)
        flat[i] = old - eps
        minus = f(x)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def assert_grad_close(analytic: Any, numeric: np.ndarray, rtol: float = 1e-6) -> None:
    """Agreement to ``rtol`` relative to the gradient's scale (atol = rtol x max |numeric|)."""
    a = host(analytic)
    np.testing.assert_allclose(a, numeric, rtol=rtol, atol=rtol * max(1.0, np.abs(numeric).max()))


def layer_gradcheck(
    layer: ailib.layers.Layer,
    x: np.ndarray,
    seed: int = 0,
    rtol: float = 1e-6,
    input_grad: bool = True,
) -> None:
    """Finite-difference check, in float64, of a layer's dE/dX and every dE/d(param), for
    E = Σ R ∘ layer(X) with a fixed random R (so dE/dY = R). With ``input_grad=False`` (layers
    whose input is not differentiable, such as indices) dE/dX must be None instead."""
    be = layer.backend
    r = np.random.default_rng(seed).standard_normal(host(layer.forward(be.asarray(x))).shape)
    r_dev = be.asarray(r)

    def energy(x_host: np.ndarray) -> float:
        return float(np.sum(host(layer.forward(be.asarray(x_host))) * r))

    layer.forward(be.asarray(x))
    dx = layer.backward(r_dev)
    grads = {k: host(v) for k, v in layer.grads.items()}
    if input_grad:
        assert_grad_close(dx, numeric_grad(energy, x), rtol)
    else:
        assert dx is None
    for name in list(layer.params):
        original = host(layer.params[name]).copy()

        def energy_p(p: np.ndarray, name: str = name) -> float:
            layer.params[name] = be.asarray(p)
            return energy(x)

        numeric = numeric_grad(energy_p, original)
        layer.params[name] = be.asarray(original)
        assert_grad_close(grads[name], numeric, rtol)
