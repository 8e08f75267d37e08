"""ailib against PyTorch autograd in float64, on seeded random configurations: what the other
randomized torch tests (convolutions and pools, GELU/SiLU, LayerNorm, Embedding, optimizers)
leave out. Forward values and every gradient (dE/dX, dE/dW, ...) of Dense, the activations,
BatchNorm over several training steps (running statistics) then in eval, the shape layers and
Dropout in eval, the merge layers; every loss's value and dE/dY; the schedules against
torch.optim.lr_scheduler; and `Sequential.fit` against the equivalent torch training loop.

Each layer claims a torch equivalent and a layout in its docstring (Dense: W (out, in) as
``torch.nn.Linear.weight``; images NCHW); that is what is compared. NumPy backend: the other
backends are held to NumPy by the per-layer cross-backend tests."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest

import ailib
from ailib import layers as L
from ailib import losses as LS
from ailib import optimizers as O
from ailib import schedules as S

from .helpers import host

torch = pytest.importorskip("torch", reason="torch is not installed: no reference to compare")
F = torch.nn.functional
BE = ailib.backends.get("numpy")
TOL = {"rtol": 1e-9, "atol": 1e-11}


def _t(a: np.ndarray) -> Any:
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def _close(ours: Any, reference: Any, what: str, config: Any) -> None:
    ref = reference.detach().numpy() if hasattr(reference, "detach") else reference
    np.testing.assert_allclose(host(ours), ref, **TOL, err_msg=f"{what}, config {config}")


def _against(
    layer: L.Layer,
    x: np.ndarray,
    reference: Callable[..., Any],
    params: dict[str, Any],
    config: Any,
) -> None:
    """Forward and backward of ``layer`` on ``x`` against ``reference(tx, *params.values())``;
    ``params`` maps the layer's param names to torch leaves holding the same values."""
    y = layer.forward(BE.asarray(x))
    g = np.random.default_rng(1).standard_normal(tuple(y.shape))
    dx = layer.backward(BE.asarray(g))
    tx = _t(x)
    ty = reference(tx, *params.values())
    ty.backward(torch.tensor(g))
    _close(y, ty, "Y", config)
    _close(dx, tx.grad, "dE/dX", config)
    for name, leaf in params.items():
        if leaf is not None:
            _close(layer.grads[name], leaf.grad, f"dE/d{name}", config)


def _rng(family: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, sum(map(ord, family))])


@pytest.mark.parametrize("seed", range(12))
def test_dense_matches_linear(seed: int) -> None:
    r = _rng("dense", seed)
    n, n_in, n_out, bias = (*(int(v) for v in r.integers(1, 8, 3)), bool(r.random() < 0.7))
    layer = L.Dense(n_in, n_out, bias=bias, backend=BE, dtype="float64", seed=seed)
    if bias:
        layer.params["b"] = BE.asarray(r.standard_normal(n_out))
    params = {"W": _t(host(layer.params["W"])), "b": _t(host(layer.params["b"])) if bias else None}
    x = r.standard_normal((n, n_in))
    _against(layer, x, lambda t, w, b: F.linear(t, w, b), params, (n, n_in, n_out, bias))


ACTIVATIONS: dict[str, tuple[Callable[[], L.Layer], Callable[[Any], Any]]] = {
    "Identity": (L.Identity, lambda t: t * 1.0),
    "Tanh": (L.Tanh, torch.tanh),
    "Sigmoid": (L.Sigmoid, torch.sigmoid),
    "ReLU": (L.ReLU, F.relu),
    "LeakyReLU(0.2)": (lambda **kw: L.LeakyReLU(0.2, **kw), lambda t: F.leaky_relu(t, 0.2)),
    "LeakyReLU(-0.3)": (lambda **kw: L.LeakyReLU(-0.3, **kw), lambda t: F.leaky_relu(t, -0.3)),
    "Softmax": (L.Softmax, lambda t: F.softmax(t, dim=-1)),
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activations_match_torch(name: str, seed: int) -> None:
    """Any shape (batch 1, one feature, 1 to 4 axes), inputs up to ±200 (saturated sigmoid,
    large softmax logits)."""
    r = _rng(name, seed)
    shape = tuple(int(s) for s in r.integers(1, 5, int(r.integers(1, 5))))
    x = r.standard_normal(shape) * float(r.choice([1.0, 10.0, 200.0]))
    make, reference = ACTIVATIONS[name]
    _against(make(backend=BE, dtype="float64"), x, reference, {}, (name, shape))


@pytest.mark.parametrize("seed", range(8))
def test_batchnorm_matches_batch_norm_over_steps_then_in_eval(seed: int) -> None:
    r = _rng("batchnorm", seed)
    images = bool(seed % 2)
    c = int(r.integers(1, 5))
    shape = (
        (int(r.integers(1, 4)), c, int(r.integers(1, 4)), int(r.integers(2, 4)))
        if images
        else (
            int(r.integers(2, 7)),
            c,
        )
    )
    momentum, eps = float(r.uniform(0.0, 1.0)), float(10 ** r.uniform(-6, -1))
    cls = L.BatchNorm2D if images else L.BatchNorm1D
    layer = cls(c, momentum, eps, backend=BE, dtype="float64")
    for name in ("gamma", "beta"):
        layer.params[name] = BE.asarray(r.standard_normal(c))
    mean, var = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    config = (cls.__name__, shape, momentum, eps)
    for training in (True, True, True, False):
        layer.train(training)
        params = {name: _t(host(layer.params[name])) for name in ("gamma", "beta")}
        x = r.standard_normal(shape if training else (1, *shape[1:])) * 3.0 + 1.0

        def reference(t: Any, g: Any, b: Any, training: bool = training) -> Any:
            return F.batch_norm(t, mean, var, g, b, training, momentum, eps)

        _against(layer, x, reference, params, config)
        _close(layer.buffers["running_mean"], mean, "running_mean", config)
        _close(layer.buffers["running_var"], var, "running_var", config)


@pytest.mark.parametrize("seed", range(10))
def test_shape_layers_and_dropout_in_eval_match_torch(seed: int) -> None:
    r = _rng("shapes", seed)
    shape = tuple(int(s) for s in r.integers(1, 5, 4))
    x = r.standard_normal(shape)
    size = math.prod(shape[1:])
    target = (size // shape[-1], shape[-1])
    p = float(r.uniform(0.0, 0.95))
    cases = [
        (L.Flatten(backend=BE, dtype="float64"), lambda t: t.flatten(1)),
        (L.Reshape(target, backend=BE, dtype="float64"), lambda t: t.reshape(-1, *target)),
        (
            L.GlobalAvgPool2D(backend=BE, dtype="float64"),
            lambda t: F.adaptive_avg_pool2d(t, 1)[..., 0, 0],
        ),
        (L.Dropout(p, backend=BE, dtype="float64").eval(), lambda t: F.dropout(t, p, False)),
    ]
    for layer, reference in cases:
        _against(layer, x, reference, {}, (layer.name, shape))


@pytest.mark.parametrize("seed", range(10))
def test_merge_layers_match_torch(seed: int) -> None:
    r = _rng("merge", seed)
    count, rank = int(r.integers(2, 5)), int(r.integers(2, 5))
    base = [int(s) for s in r.integers(1, 4, rank)]
    axis = int(r.choice([a for a in range(-rank + 1, rank) if a != 0]))
    shapes = []
    for _ in range(count):
        shape = list(base)
        shape[axis] = int(r.integers(1, 4))
        shapes.append(tuple(shape))
    cases = [
        (L.Add(backend=BE), [tuple(base)] * count, lambda ts: sum(ts[1:], ts[0])),
        (L.Multiply(backend=BE), [tuple(base)] * count, lambda ts: torch.stack(ts).prod(0)),
        (L.Concatenate(axis, backend=BE), shapes, lambda ts: torch.cat(ts, dim=axis)),
    ]
    for layer, in_shapes, reference in cases:
        xs = [r.standard_normal(s) for s in in_shapes]
        y = layer.forward([BE.asarray(x) for x in xs])
        g = r.standard_normal(tuple(y.shape))
        grads = layer.backward(BE.asarray(g))
        txs = [_t(x) for x in xs]
        ty = reference(txs)
        ty.backward(torch.tensor(g))
        config = (layer.name, in_shapes)
        _close(y, ty, "Y", config)
        for grad, tx in zip(grads, txs):
            _close(grad, tx.grad, "dE/dX", config)


LOSS_KINDS = ["mse", "bce", "bce_logits", "cce_labels", "cce_one_hot", "sce_labels", "sce_soft"]


def _loss_case(kind: str, r: np.random.Generator) -> tuple[LS.Loss, Any, Any, Any, Callable]:
    """(loss, y_pred, our target, torch's target, the torch loss)."""
    n, c = int(r.integers(1, 7)), int(r.integers(1, 7))
    labels = r.integers(0, c, n)
    if kind in ("mse", "bce", "bce_logits"):
        shape = tuple(int(s) for s in r.integers(1, 5, int(r.integers(1, 4))))
        t = r.uniform(0.0, 1.0, shape)
        if kind == "mse":
            return LS.MSE(), r.standard_normal(shape), t, torch.tensor(t), F.mse_loss
        if kind == "bce":
            p = r.uniform(0.01, 0.99, shape)
            return LS.BinaryCrossEntropy(), p, t, torch.tensor(t), F.binary_cross_entropy
        z = r.standard_normal(shape) * 8.0
        loss = LS.BinaryCrossEntropy(from_logits=True)
        return loss, z, t, torch.tensor(t), F.binary_cross_entropy_with_logits
    if kind.startswith("cce"):
        p = r.dirichlet(np.ones(c), n) * 0.98 + 0.02 / c
        ours = np.eye(c)[labels] if kind == "cce_one_hot" else labels
        reference = lambda q, y: F.nll_loss(torch.log(q), y)  # noqa: E731
        return LS.CategoricalCrossEntropy(), p, ours, torch.tensor(labels), reference
    eps = float(r.choice([0.0, r.uniform(0.0, 0.9)]))
    target = labels if kind == "sce_labels" else r.dirichlet(np.ones(c), n)
    z = r.standard_normal((n, c)) * float(r.choice([1.0, 30.0]))
    reference = lambda q, y: F.cross_entropy(q, y, label_smoothing=eps)  # noqa: E731
    return LS.SoftmaxCrossEntropy(eps), z, target, torch.tensor(target), reference


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_losses_match_torch(kind: str, seed: int) -> None:
    loss, y_pred, ours, theirs, reference = _loss_case(kind, _rng(kind, seed))
    value, grad = loss.value_and_grad(BE.asarray(y_pred), BE.asarray(ours))
    tz = _t(y_pred)
    expected = reference(tz, theirs)
    expected.backward()
    config = (repr(loss), y_pred.shape)
    _close(value, expected, "E", config)
    _close(loss(BE.asarray(y_pred), BE.asarray(ours)), expected, "E by __call__", config)
    _close(grad, tz.grad, "dE/dY", config)


@pytest.mark.parametrize("seed", range(6))
def test_schedules_match_torch_lr_schedulers(seed: int) -> None:
    r = _rng("schedules", seed)
    base, epochs = float(r.uniform(1e-3, 1.0)), int(r.integers(1, 30))
    final, step, gamma = (
        float(r.uniform(0.0, base)),
        int(r.integers(1, 10)),
        float(r.uniform(0.05, 1)),
    )
    warm = int(r.integers(2, 10))
    sched = torch.optim.lr_scheduler
    cases = [
        (
            S.cosine_schedule(base, epochs, final),
            lambda o: sched.CosineAnnealingLR(o, epochs, final),
        ),
        (S.step_schedule(base, step, gamma), lambda o: sched.StepLR(o, step, gamma)),
        (S.warmup_schedule(base, warm), lambda o: sched.LinearLR(o, 1 / warm, 1.0, warm - 1)),
    ]
    for ours, make in cases:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
        reference = make(optimizer)
        for t in range(1, epochs + 1):  # t counts from 1, torch's epochs from 0
            assert ours(t) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
            optimizer.step()
            reference.step()


FIT_OPTIMIZERS: dict[str, tuple[Callable[[], O.Optimizer], Callable[[Any], Any]]] = {
    "sgd-nesterov": (
        lambda: O.SGD(0.1, 0.9, nesterov=True, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, 0.1, 0.9, nesterov=True, weight_decay=1e-3),
    ),
    "adam": (
        lambda: O.Adam(0.01, weight_decay=1e-3),
        lambda p: torch.optim.Adam(p, 0.01, weight_decay=1e-3),
    ),
    "adamw": (
        lambda: O.AdamW(0.01, decay_vectors=True),
        lambda p: torch.optim.AdamW(p, 0.01, weight_decay=0.01),
    ),
    "rmsprop": (
        lambda: O.RMSprop(0.005, momentum=0.5, centered=True),
        lambda p: torch.optim.RMSprop(p, 0.005, momentum=0.5, centered=True),
    ),
}
TORCH_NAMES = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}


@pytest.mark.parametrize("name", list(FIT_OPTIMIZERS))
def test_fit_matches_the_torch_training_loop(name: str) -> None:
    """`Sequential.fit` (no shuffling, two epochs, an odd final batch) against the same network
    and loss in a plain torch loop from the same weights: every param and running statistic,
    then predict and evaluate. (The convolution has no bias before BatchNorm: its gradient is
    zero there, and Adam would amplify the rounding noise in it.)"""
    r = _rng(name, 0)
    n, batch, classes = 19, 6, 3
    x, y = r.standard_normal((n, 2, 6, 6)), r.integers(0, classes, n)
    ours = [
        L.Conv2D(2, 3, 3, padding=1, bias=False),
        L.BatchNorm2D(3),
        L.ReLU(),
        L.MaxPool2D(2),
        L.Flatten(),
        L.Dense(27, 8),
        L.Tanh(),
        L.Dense(8, classes),
    ]
    model = ailib.Sequential(ours, backend=BE, dtype="float64", seed=1)
    theirs = [
        torch.nn.Conv2d(2, 3, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(27, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, classes),
    ]
    net = torch.nn.Sequential(*theirs).double()
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            for key, value in a.params.items():
                getattr(b, TORCH_NAMES[key]).copy_(torch.tensor(host(value)))
    make_ours, make_theirs = FIT_OPTIMIZERS[name]
    loss = LS.SoftmaxCrossEntropy(label_smoothing=0.1)
    model.fit(
        x, y, loss=loss, optimizer=make_ours(), epochs=2, batch_size=batch, shuffle=False, verbose=0
    )
    optimizer = make_theirs(net.parameters())
    bounds = [(0, 6), (6, 12), (12, 19)]  # fit merges the final single row into the batch before
    for _ in range(2):
        for start, stop in bounds:
            optimizer.zero_grad()
            out = net(torch.tensor(x[start:stop]))
            F.cross_entropy(out, torch.tensor(y[start:stop]), label_smoothing=0.1).backward()
            optimizer.step()
    for a, b in zip(ours, theirs):
        for key, value in [*a.params.items(), *a.buffers.items()]:
            np.testing.assert_allclose(
                host(value),
                getattr(b, TORCH_NAMES.get(key, key)).detach().numpy(),
                rtol=1e-7,
                atol=1e-9,
                err_msg=f"{a.name} {key}",
            )
    net.eval()
    with torch.no_grad():
        expected = net(torch.tensor(x))
        expected_loss = F.cross_entropy(expected, torch.tensor(y), label_smoothing=0.1).item()
    np.testing.assert_allclose(host(model.predict(x)), expected.numpy(), rtol=1e-7, atol=1e-9)
    assert model.evaluate(x, y)["loss"] == pytest.approx(expected_loss, rel=1e-7)
