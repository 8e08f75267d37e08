"""The fused operations (ailib.backends._fused) on hostile inputs, every form against PyTorch's
float64 definitions: non-finite and huge logits, ties, a NaN top class, one class, one row, no
rows, labels of every integer dtype (also too narrow for the classes), transposed and strided
views, and arguments of mixed dtypes; then the public path, `Sequential.fit` with integer labels
on every backend, against a hand-written PyTorch loop."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import ailib
from ailib import optimizers
from ailib.layers import Dense, Embedding, ReLU
from ailib.losses import SoftmaxCrossEntropy

from .helpers import assert_close, host

torch = pytest.importorskip("torch")
F = torch.nn.functional

#: logits (2 rows of 3 classes) and labels, by what makes them hostile; the second row is
#: ordinary, so a non-finite first row must not spill into it
HOSTILE = {
    "+inf at the label": ([[np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]], [0, 2]),
    "+inf elsewhere": ([[0.0, np.inf, 1.0], [0.0, 1.0, 2.0]], [2, 2]),
    "-inf elsewhere": ([[-np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]], [1, 2]),
    "-inf at the label": ([[-np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]], [0, 2]),
    "all -inf": ([[-np.inf, -np.inf, -np.inf], [0.0, 1.0, 2.0]], [0, 2]),
    "NaN first": ([[np.nan, 0.0, 1.0], [0.0, 1.0, 2.0]], [0, 2]),
    "NaN at the label": ([[0.0, np.nan, 5.0], [0.0, 1.0, 2.0]], [1, 2]),
    "NaN below the max": ([[0.0, np.nan, 5.0], [0.0, 1.0, 2.0]], [2, 2]),
    "huge": ([[1e30, -1e30, 0.0], [-1e30, -1e30, 1e30]], [0, 1]),
    "all equal": ([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]], [0, 1]),
    "tied tops": ([[1.0, 3.0, 3.0], [3.0, 0.0, 3.0]], [2, 0]),
}


def _pytorch(z: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, int]:
    """E, dE/dZ (autograd) and the argmax count by PyTorch in float64."""
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    lt = torch.tensor(labels.astype(np.int64))
    value = F.cross_entropy(zt, lt)
    value.backward()
    hits = int(torch.count_nonzero(torch.argmax(zt.detach(), 1) == lt))
    return float(value.detach()), zt.grad.numpy(), hits


def _assert_pytorchs(
    got: tuple[Any, Any, Any],
    z: np.ndarray,
    labels: np.ndarray,
    what: str = "",
    value_atol: float = 0.0,
) -> None:
    """``got`` = (E, dE/dZ, correct count) equals PyTorch's float64 ones (`_pytorch`)."""
    value, grad, hits = got
    want_e, want_g, want_hits = _pytorch(z, labels)
    np.testing.assert_allclose(
        float(host(value)), want_e, rtol=1e-12, atol=value_atol, err_msg=what
    )
    np.testing.assert_allclose(host(grad), want_g, rtol=1e-12, atol=1e-15, err_msg=what)
    assert int(host(hits)) == want_hits, what


def _fused(be: ailib.backends.Backend, z: np.ndarray, labels: Any) -> tuple[float, Any, int]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's "invalid value" for inf − inf
        value, grad, hits = ailib.backends.softmax_cross_entropy(be.asarray(z), labels)
    return float(host(value)), host(grad), int(host(hits))


def _labels(be: ailib.backends.Backend, labels: np.ndarray, dtype: str) -> Any:
    """Labels of ``dtype`` (any integer dtype, not only those `Backend.asarray` names)."""
    return be.xp.asarray(labels.astype(dtype), device=be.device)


def test_softmax_cross_entropy_on_hostile_logits_is_pytorchs(
    backend: ailib.backends.Backend,
) -> None:
    for case, (z, labels) in HOSTILE.items():
        z, labels = np.array(z), np.array(labels)
        want_e, want_g, want_hits = _pytorch(z, labels)
        for dtype in ("float32", "float64"):
            value, grad, hits = _fused(backend, z.astype(dtype), _labels(backend, labels, "int32"))
            assert grad.dtype == np.dtype(dtype)
            np.testing.assert_allclose(value, want_e, rtol=1e-6, err_msg=f"{case} {dtype}")
            np.testing.assert_allclose(
                grad, want_g, rtol=1e-6, atol=1e-7, err_msg=f"{case} {dtype}"
            )
            assert hits == want_hits, (case, dtype)


def test_softmax_cross_entropy_takes_labels_of_every_integer_dtype(
    backend: ailib.backends.Backend,
) -> None:
    """int8, uint8, int32, int64 and uint64 labels; also labels too narrow for the classes (uint8
    labels of 300 classes lie in 0…255, but 0…C−1 in uint8 would wrap, and class 256 would
    take label 0's −1/N)."""
    rng = np.random.default_rng(5)
    cases = [(5, "int8"), (5, "uint8"), (5, "int32"), (300, "uint8")]
    cases += [(5, "int64"), (5, "uint64")] * (backend.name != "jax")  # 64 bits: JAX's x64 mode
    for classes, dtype in cases:
        z = rng.standard_normal((4, classes))
        labels = np.array([0, min(classes - 1, np.iinfo(dtype).max), 1, 3])
        got = _fused(backend, z, _labels(backend, labels, dtype))
        _assert_pytorchs(got, z, labels, f"{classes} {dtype}")


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_public_loss_and_embedding_take_wide_unsigned_labels(
    backend: ailib.backends.Backend, dtype: str
) -> None:
    """Their range checks read min and max, which PyTorch has no kernel for on uint16, uint32
    and uint64 (it raised NotImplementedError): the labels are checked, and refused out of
    range, with the layer's and the loss's own message on every backend."""
    z, labels = np.random.default_rng(6).standard_normal((3, 4)), np.array([0, 3, 1])
    loss = SoftmaxCrossEntropy()
    value = loss(backend.asarray(z), _labels(backend, labels, dtype))
    want_e, _, _ = _pytorch(z, labels)
    assert float(value) == pytest.approx(want_e, rel=1e-6)
    with pytest.raises(
        ValueError, match=r"labels must lie in \[0, 3\].*received labels in \[0, 4\]"
    ):
        loss(backend.asarray(z), _labels(backend, np.array([0, 4, 1]), dtype))
    table = Embedding(4, 2, backend=backend, dtype="float64", seed=0)
    assert_close(
        table.forward(_labels(backend, labels, dtype)), host(table.params["W"])[labels], "float64"
    )
    with pytest.raises(ValueError, match=r"received indices in \[0, 4\]"):
        table.forward(_labels(backend, np.array([0, 4, 1]), dtype))


def test_softmax_cross_entropy_of_one_row_one_class_and_no_rows(
    backend: ailib.backends.Backend,
) -> None:
    """N = 1 and C = 1 as PyTorch; N = 0: E = 0 (as ailib's other losses, and this loss with
    one-hot targets; PyTorch's mean is NaN there), an empty gradient, no count, no warning."""
    rng = np.random.default_rng(7)
    for shape in [(1, 4), (3, 1), (0, 4)]:
        z = rng.standard_normal(shape)
        labels = rng.integers(0, shape[1], shape[0])
        value, grad, hits = ailib.backends.softmax_cross_entropy(
            backend.asarray(z), backend.asarray(labels, dtype=backend.index_dtype)
        )
        assert host(grad).shape == shape
        if shape[0] == 0:
            assert float(host(value)) == 0.0 and int(host(hits)) == 0
            onehot = backend.asarray(np.zeros(shape))
            assert float(host(SoftmaxCrossEntropy()(backend.asarray(z), onehot))) == 0.0
            continue
        _assert_pytorchs((value, grad, hits), z, labels, value_atol=1e-15)


def test_softmax_cross_entropy_takes_transposed_and_strided_views(
    backend: ailib.backends.Backend,
) -> None:
    rng = np.random.default_rng(8)
    z = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 12)
    zt = backend.xp.permute_dims(backend.asarray(np.ascontiguousarray(z.T)), (1, 0))
    strided = backend.asarray(labels, dtype=backend.index_dtype)[::2]
    got = ailib.backends.softmax_cross_entropy(zt, strided)
    _assert_pytorchs(got, z, labels[::2])


def test_the_public_loss_is_pytorchs_error_gradient_and_count(
    backend: ailib.backends.Backend,
) -> None:
    rng = np.random.default_rng(9)
    z = np.round(rng.standard_normal((9, 5)), 1)  # rounded: ties for the top class
    z[0] = 1.5
    labels = rng.integers(0, 5, 9)
    loss = SoftmaxCrossEntropy()
    zd, yd = backend.asarray(z), backend.asarray(labels, dtype=backend.index_dtype)
    value, grad = loss.value_and_grad(zd, yd)
    _assert_pytorchs((value, grad, loss.correct(zd, yd)), z, labels)


# -- ReLU's backward and the update on mixed dtypes --------------------------------------------
def test_relu_backward_has_the_gradients_dtype_on_every_backend(
    backend: ailib.backends.Backend,
) -> None:
    y = np.array([[0.0, 1.5, 2.0], [0.0, 0.25, 3.0]])
    g = np.array([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]])
    for y_dtype, grad_dtype in (("float32", "float64"), ("float64", "float32")):
        got = ailib.backends.relu_backward(
            backend.asarray(y, dtype=y_dtype), backend.asarray(g, dtype=grad_dtype)
        )
        assert host(got).dtype == np.dtype(grad_dtype), (y_dtype, grad_dtype)
        np.testing.assert_array_equal(host(got), np.where(y > 0, g, 0.0).astype(grad_dtype))


@pytest.mark.parametrize("name", ["numpy", "torch", "jax"])
@pytest.mark.parametrize("wider", ["lr", "d"])
def test_subtract_scaled_keeps_the_parameters_dtype(name: str, wider: str) -> None:
    """A float32 p with a 0-d float64 lr or a float64 d stays float32, as an update in place
    (NumPy and PyTorch write into p; JAX's new array is rounded back). array-api-strict refuses
    the mixed dtypes, as the standard's in-place operators."""
    reason = ailib.backends.why_unavailable(name)
    if reason is not None:
        pytest.skip(f"backend {name} unavailable: {reason}")
    be = ailib.backends.get(name)
    rng = np.random.default_rng(10)
    p, d = rng.standard_normal(20).astype(np.float32), rng.standard_normal(20)
    lr = be.asarray(np.array(0.125)) if wider == "lr" else 0.125  # a 0-d float64 array
    dd = be.asarray(d) if wider == "d" else be.asarray(d, dtype="float32")
    want = p - 0.125 * d
    got = ailib.backends.subtract_scaled(be.asarray(p.copy()), lr, dd)
    assert host(got).dtype == np.float32
    np.testing.assert_allclose(host(got), want, rtol=1e-6, atol=1e-6)


def test_pytorchs_update_takes_every_kind_of_learning_rate_as_sgd_does() -> None:
    """A Python float or int, 0-d tensors of p's dtype, of float64 and of int64, and a float64
    gradient of a float32 parameter: p stays float32 and is what ``torch.optim.SGD`` makes of
    it (to float32's rounding: a 0-d lr is rounded to p's dtype first), or, for the float64
    gradient, p − lr·d formed in float64 and rounded once, as NumPy's in-place update."""
    be = ailib.backends.get("torch")
    rng = np.random.default_rng(11)
    for lr, grad_dtype in (
        (0.1, torch.float32),
        (2, torch.float32),
        (torch.tensor(0.1, dtype=torch.float32), torch.float32),
        (torch.tensor(0.1, dtype=torch.float64), torch.float32),
        (torch.tensor(2, dtype=torch.int64), torch.float32),
        (0.1, torch.float64),
    ):
        p = torch.tensor(rng.standard_normal(50), dtype=torch.float32)
        d = torch.tensor(rng.standard_normal(50), dtype=grad_dtype)
        reference = torch.nn.Parameter(p.clone())
        reference.grad = d.to(torch.float32) if grad_dtype == torch.float64 else d.clone()
        torch.optim.SGD([reference], lr=float(lr)).step()
        got = ailib.backends.subtract_scaled(be.asarray(p.clone()), lr, d)
        assert got.dtype == torch.float32
        if grad_dtype == torch.float64:  # p − lr·d in float64, rounded once
            want = (p.double() - float(lr) * d).float()
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        else:
            torch.testing.assert_close(got, reference.detach())


# -- the public path: fit with integer labels, against a hand-written PyTorch loop -------------
FIT = {
    "sgd-momentum": (
        lambda: optimizers.SGD(0.05, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    ),
    "adam": (lambda: optimizers.Adam(0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
}


@pytest.mark.parametrize("name", list(FIT))
def test_fit_with_integer_labels_is_a_pytorch_loop(
    backend: ailib.backends.Backend, name: str
) -> None:
    """Dense/ReLU layers, softmax cross-entropy from integer labels (the fused loss, ReLU's
    backward, the affine forward pass and the update, compiled where the backend compiles),
    two epochs in float64: every weight as nn.Linear/ReLU, F.cross_entropy and torch.optim's
    after the same batches, to 1e-10."""
    rng = np.random.default_rng(12)
    sizes, n, batch = (5, 9, 7, 4), 16, 8
    x, y = rng.standard_normal((n, sizes[0])), rng.integers(0, sizes[-1], n)
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [Dense(a, b)] + ([ReLU()] if i < len(sizes) - 2 else [])
    model = ailib.Sequential(layers, backend=backend, dtype="float64", seed=2)
    modules = [
        torch.nn.Linear(layer.in_features, layer.out_features).double()
        if isinstance(layer, Dense)
        else torch.nn.ReLU()
        for layer in layers
    ]
    with torch.no_grad():
        for ours, theirs in zip(layers, modules):
            if isinstance(ours, Dense):
                theirs.weight.copy_(torch.tensor(host(ours.params["W"])))
                theirs.bias.copy_(torch.tensor(host(ours.params["b"])))
    make_ours, make_theirs = FIT[name]
    model.fit(x, y, optimizer=make_ours(), epochs=2, batch_size=batch, shuffle=False, verbose=0)
    net = torch.nn.Sequential(*modules)
    optimizer = make_theirs(net.parameters())
    for _ in range(2):
        for start in range(0, n, batch):
            optimizer.zero_grad()
            xb, yb = torch.tensor(x[start : start + batch]), torch.tensor(y[start : start + batch])
            F.cross_entropy(net(xb), yb).backward()
            optimizer.step()
    for ours, theirs in zip(layers, modules):
        if isinstance(ours, Dense):
            for key, param in (("W", theirs.weight), ("b", theirs.bias)):
                np.testing.assert_allclose(
                    host(ours.params[key]), param.detach().numpy(), rtol=1e-10, atol=1e-12
                )
