"""Test helpers: tolerances per dtype (defined once), host comparisons, finite differences."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

import ailib

#: (rtol, atol) for comparing a backend's result with the NumPy reference, per dtype
TOLERANCES = {"float32": (2e-5, 2e-6), "float64": (1e-10, 1e-12)}


REPO = Path(__file__).resolve().parents[1]


def mnist_test_dir() -> Path:
    """Where MNIST's 10,000 test digits are: $AILIB_TEST_MNIST_DIR, else ../shared/data/mnist
    beside the repository, else data/mnist-test in it (they travel with the repository)."""
    for candidate in (
        os.environ.get("AILIB_TEST_MNIST_DIR"),
        REPO.parent / "shared" / "data" / "mnist",
        REPO / "data" / "mnist-test",
    ):
        if candidate and (Path(candidate) / "t10k-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return REPO / "data" / "mnist-test"


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


def model_gradcheck(
    model: Any, x: Any, y: Any, loss: Any, rtol: float = 1e-6, input_grad: bool = True
) -> None:
    """Finite-difference check, in float64, of a whole model: dE/dX of every input and
    dE/d(param) of every parameter, for E = loss(model(X), Y). ``x`` is a host array (a list of
    them for several inputs), ``y`` the targets on the model's backend (a list for several
    outputs) and ``loss`` a loss object (an `OutputLosses` for several outputs). With
    ``input_grad=False`` (a single input of indices) dE/dX must be None instead."""
    be = model.backend
    several = isinstance(x, list)
    xs = [np.array(a, dtype=np.float64) for a in (x if several else [x])]

    def run(arrays: list[np.ndarray]) -> Any:
        inputs = [be.asarray(a) for a in arrays]
        return model.forward(inputs if several else inputs[0])

    def energy() -> float:
        return float(host(loss(run(xs), y)))

    _, grad = loss.value_and_grad(run(xs), y)
    dx = model.backward(grad)
    dxs = dx if several else [dx]
    grads = {
        (i, k): host(v).copy()
        for i, layer in enumerate(model.layers)
        for k, v in layer.grads.items()
    }
    if not input_grad:
        assert dx is None
        xs_checked: list[np.ndarray] = []
    else:
        xs_checked = xs
    for k, a in enumerate(xs_checked):

        def energy_x(v: np.ndarray, k: int = k) -> float:
            saved, xs[k] = xs[k], v
            try:
                return energy()
            finally:
                xs[k] = saved

        assert_grad_close(dxs[k], numeric_grad(energy_x, a), rtol)
    for i, layer in enumerate(model.layers):
        assert set(layer.grads) == set(layer.params), layer.name
        for name in list(layer.params):
            original = host(layer.params[name]).copy()

            def energy_p(p: np.ndarray, name: str = name, layer: Any = layer) -> float:
                layer.params[name] = be.asarray(p)
                return energy()

            numeric = numeric_grad(energy_p, original)
            layer.params[name] = be.asarray(original)
            assert_grad_close(grads[(i, name)], numeric, rtol)
