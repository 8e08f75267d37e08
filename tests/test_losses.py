"""Losses: value and gradient against NumPy float64 references, finite differences, backends."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import numpy as np
import pytest

import ailib
from ailib.losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy, SoftmaxCrossEntropy
from ailib.optimizers import Adam

from .helpers import assert_close, assert_grad_close, host, numeric_grad


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _case(name: str, rng: np.random.Generator) -> tuple[Any, np.ndarray, np.ndarray, float]:
    """(loss, y_pred, y_true, reference E) for a batch of 6 rows and 4 columns."""
    if name == "MSE":
        p, t = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
        return MSE(), p, t, np.mean((p - t) ** 2)
    if name == "BinaryCrossEntropy":
        p, t = rng.uniform(0.05, 0.95, (6, 4)), rng.integers(0, 2, (6, 4)).astype(float)
        return BinaryCrossEntropy(), p, t, -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    if name == "BinaryCrossEntropy(from_logits)":
        z, t = rng.standard_normal((6, 4)) * 4, rng.uniform(0.0, 1.0, (6, 4))  # soft targets
        p = 1 / (1 + np.exp(-z))
        return (
            BinaryCrossEntropy(from_logits=True),
            z,
            t,
            -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)),
        )
    labels = rng.integers(0, 4, 6)
    onehot = np.eye(4)[labels]
    if name == "CategoricalCrossEntropy":
        p = _softmax(rng.standard_normal((6, 4)))
        return CategoricalCrossEntropy(), p, onehot, -np.mean(np.log(p[np.arange(6), labels]))
    z = rng.standard_normal((6, 4)) * 3
    return SoftmaxCrossEntropy(), z, onehot, -np.mean(np.log(_softmax(z)[np.arange(6), labels]))


NAMES = [
    "MSE",
    "BinaryCrossEntropy",
    "BinaryCrossEntropy(from_logits)",
    "CategoricalCrossEntropy",
    "SoftmaxCrossEntropy",
]


@pytest.mark.parametrize("name", NAMES)
def test_loss_value_matches_reference(
    name: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    loss, p, t, expected = _case(name, rng)
    value = loss(backend.asarray(p), backend.asarray(t))
    assert value.ndim == 0
    np.testing.assert_allclose(float(host(value)), expected, rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_loss_gradcheck_float64(
    name: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    loss, p, t, _ = _case(name, rng)
    t_dev = backend.asarray(t)
    analytic = loss.grad(backend.asarray(p), t_dev)
    numeric = numeric_grad(lambda q: float(host(loss(backend.asarray(q), t_dev))), p)
    assert_grad_close(analytic, numeric, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_loss_float32_agrees_with_numpy(
    name: str, other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    loss, p, t, _ = _case(name, rng)
    p32, t32 = p.astype(np.float32), t.astype(np.float32)
    out = []
    for be in (ailib.backends.get("numpy"), other_backend):
        value, grad = loss.value_and_grad(be.asarray(p32), be.asarray(t32))
        assert value.dtype == be.xp.float32 and grad.dtype == be.xp.float32
        out.append((host(value), host(grad)))
    for ref, got in zip(*out):
        assert_close(got, ref, "float32")


@pytest.mark.parametrize("loss", [CategoricalCrossEntropy(), SoftmaxCrossEntropy()])
def test_integer_labels_equal_one_hot(
    loss: Any, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    labels = rng.integers(0, 5, 8)
    p = _softmax(rng.standard_normal((8, 5))).astype(np.float32)
    p_dev = backend.asarray(p)
    by_label = loss.value_and_grad(p_dev, backend.asarray(labels))
    by_onehot = loss.value_and_grad(p_dev, backend.asarray(np.eye(5, dtype=np.float32)[labels]))
    for a, b in zip(by_label, by_onehot):
        assert_close(a, b, "float32")


@pytest.mark.parametrize("loss", [CategoricalCrossEntropy(), SoftmaxCrossEntropy(0.1)])
def test_uint8_labels_of_more_than_256_classes_equal_one_hot(
    loss: Any, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    """Labels stored as uint8 (as IDX files hold them) for a model of 300 classes: 0…299 in
    uint8 would wrap, and class 256 would count as label 0. (Softmax cross-entropy without
    smoothing: tests/test_fused_hostile.py.)"""
    labels = np.array([0, 255, 3, 0])
    p = _softmax(rng.standard_normal((4, 300)))
    p_dev = backend.asarray(p)
    uint8 = backend.asarray(labels.astype(np.uint8))
    by_label = loss.value_and_grad(p_dev, uint8)
    by_onehot = loss.value_and_grad(p_dev, backend.asarray(np.eye(300)[labels]))
    for a, b in zip(by_label, by_onehot):
        assert_close(a, b, "float64")


def test_softmax_cross_entropy_gradient_is_p_minus_y_over_n(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    z = rng.standard_normal((7, 3))
    labels = rng.integers(0, 3, 7)
    grad = SoftmaxCrossEntropy().grad(backend.asarray(z), backend.asarray(labels))
    assert_close(grad, (_softmax(z) - np.eye(3)[labels]) / 7, "float64")


def test_softmax_cross_entropy_is_stable_for_huge_logits(backend: ailib.backends.Backend) -> None:
    z = backend.asarray(np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 0.0]], dtype=np.float32))
    value, grad = SoftmaxCrossEntropy().value_and_grad(z, backend.asarray(np.array([2, 1])))
    assert np.isfinite(host(value)) and np.all(np.isfinite(host(grad)))
    np.testing.assert_allclose(float(host(value)), 1e4, rtol=1e-6)


def test_labels_out_of_range_are_refused(backend: ailib.backends.Backend) -> None:
    z = backend.asarray(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(
        ValueError,
        match=r"labels must lie in \[0, 3\] for 4 classes, received "
        r"labels in \[0, 4\]",
    ):
        SoftmaxCrossEntropy()(z, backend.asarray(np.array([0, 4, 1])))
    with pytest.raises(ValueError, match="labels in \\[-1, 1\\]"):
        CategoricalCrossEntropy()(z, backend.asarray(np.array([0, -1, 1])))


def test_shape_and_library_mismatches_are_refused(backend: ailib.backends.Backend) -> None:
    p = backend.asarray(np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"MSE: y_true must have y_pred's shape \(3, 2\)"):
        MSE()(p, backend.asarray(np.zeros((3, 1), dtype=np.float32)))
    with pytest.raises(TypeError, match="MSE: y_true must be floating"):
        MSE()(p, backend.asarray(np.zeros((3, 2), dtype=np.int64)))
    device1 = ailib.backends.get("array_api_strict:device1")
    other = "numpy" if backend is device1 else "array_api_strict:device1"
    with pytest.raises(TypeError, match="y_true must be an array of y_pred's library and device"):
        MSE()(p, ailib.backends.get(other).asarray(np.zeros((3, 2), dtype=np.float32)))


def test_loss_lookup_by_name() -> None:
    assert isinstance(ailib.losses.get("mse"), MSE)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        ailib.losses.get("hinge")


def test_softmax_cross_entropy_gradient_is_exact_for_unnormalised_soft_targets(
    backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    z = rng.standard_normal((4, 3))
    t = backend.asarray(rng.uniform(0.0, 1.0, (4, 3)))  # rows do not sum to 1
    loss = SoftmaxCrossEntropy()
    numeric = numeric_grad(lambda q: float(host(loss(backend.asarray(q), t))), z)
    assert_grad_close(loss.grad(backend.asarray(z), t), numeric)


# -- label smoothing ---------------------------------------------------------------------------
def _smoothed(eps: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits (6, 4), labels (6,) and the smoothed one-hot targets (1 − ε)·Y + ε/C."""
    z = rng.standard_normal((6, 4)) * 3
    labels = rng.integers(0, 4, 6)
    return z, labels, np.eye(4)[labels] * (1 - eps) + eps / 4


@pytest.mark.parametrize("eps", [0.1, 0.37])
def test_label_smoothing_value_and_gradcheck_float64(
    eps: float, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    z, labels, smooth = _smoothed(eps, rng)
    loss = SoftmaxCrossEntropy(label_smoothing=eps)
    expected = -np.mean(np.sum(smooth * np.log(_softmax(z)), axis=1))
    for target in (backend.asarray(labels), backend.asarray(np.eye(4)[labels])):
        value, grad = loss.value_and_grad(backend.asarray(z), target)
        np.testing.assert_allclose(float(host(value)), expected, rtol=1e-12)
        assert_close(grad, (_softmax(z) - smooth) / 6, "float64")
        numeric = numeric_grad(lambda q, t=target: float(host(loss(backend.asarray(q), t))), z)
        assert_grad_close(grad, numeric)


def test_label_smoothing_float32_agrees_with_numpy(
    other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    z, labels, _ = _smoothed(0.2, rng)
    loss = SoftmaxCrossEntropy(label_smoothing=0.2)
    out = []
    for be in (ailib.backends.get("numpy"), other_backend):
        value, grad = loss.value_and_grad(be.asarray(z.astype(np.float32)), be.asarray(labels))
        assert value.dtype == be.xp.float32 and grad.dtype == be.xp.float32
        out.append((host(value), host(grad)))
    for ref, got in zip(*out):
        assert_close(got, ref, "float32")


@pytest.mark.parametrize("targets", ["labels", "probabilities"])
def test_label_smoothing_matches_torch_cross_entropy(
    targets: str, rng: np.random.Generator
) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed: no reference")
    be = ailib.backends.get("numpy")
    for eps in rng.uniform(0.0, 0.9, 5):
        z = rng.standard_normal((7, 5)) * 2
        t = rng.integers(0, 5, 7) if targets == "labels" else _softmax(rng.standard_normal((7, 5)))
        zt = torch.tensor(z, requires_grad=True)
        ref = torch.nn.functional.cross_entropy(zt, torch.tensor(t), label_smoothing=float(eps))
        ref.backward()
        value, grad = SoftmaxCrossEntropy(label_smoothing=eps).value_and_grad(
            be.asarray(z), be.asarray(t)
        )
        np.testing.assert_allclose(float(value), ref.item(), rtol=1e-12)
        np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_label_smoothing_zero_is_the_plain_loss_and_bad_values_are_refused(
    rng: np.random.Generator,
) -> None:
    z, labels, _ = _smoothed(0.0, rng)
    plain = SoftmaxCrossEntropy().value_and_grad(z, labels)
    zero = SoftmaxCrossEntropy(label_smoothing=0.0).value_and_grad(z, labels)
    for a, b in zip(plain, zero):
        np.testing.assert_array_equal(a, b)
    assert repr(SoftmaxCrossEntropy(label_smoothing=0.1)) == (
        "SoftmaxCrossEntropy(label_smoothing=0.1)"
    )
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="label_smoothing must lie in \\[0, 1\\)"):
            SoftmaxCrossEntropy(label_smoothing=bad)


# -- BinaryCrossEntropy(from_logits=True) -----------------------------------------------------
def test_bce_from_logits_keeps_the_true_gradient_of_saturated_logits(
    backend: ailib.backends.Backend,
) -> None:
    z = backend.asarray(np.array([[20.0, -20.0, 40.0, -40.0]], dtype=np.float32))
    t = backend.asarray(np.array([[0.0, 1.0, 1.0, 0.0]], dtype=np.float32))
    value, grad = BinaryCrossEntropy(from_logits=True).value_and_grad(z, t)
    np.testing.assert_allclose(float(host(value)), (20.0 + 20.0) / 4, rtol=1e-6)
    np.testing.assert_allclose(host(grad), [[0.25, -0.25, 0.0, 0.0]], atol=1e-8)


def test_bce_from_logits_equals_torch_bce_with_logits_in_float64(
    rng: np.random.Generator,
) -> None:
    torch = pytest.importorskip("torch")
    z = np.concatenate([rng.standard_normal((5, 3)) * 6, [[35.0, -35.0, 0.0]]])
    t = rng.uniform(0.0, 1.0, z.shape)
    zt = torch.tensor(z, requires_grad=True)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.tensor(t))
    expected.backward()
    numpy = ailib.backends.get("numpy")
    value, grad = BinaryCrossEntropy(from_logits=True).value_and_grad(
        numpy.asarray(z), numpy.asarray(t)
    )
    np.testing.assert_allclose(float(value), expected.item(), rtol=1e-13)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-13, atol=1e-17)


def test_bce_from_logits_trains_a_logistic_regression_in_fit() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2)).astype(np.float32)
    y = (x[:, :1] + x[:, 1:] > 0).astype(np.float32)
    model = ailib.Sequential([ailib.layers.Dense(2, 1)], backend="numpy", seed=0)
    history = model.fit(
        x,
        y,
        loss=BinaryCrossEntropy(from_logits=True),
        optimizer=Adam(lr=0.1),
        epochs=10,
        batch_size=20,
    )
    assert history["accuracy"][-1] > 0.95  # accuracy thresholds logits at 0, not at 0.5


# -- no host syncs --------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_no_loss_uses_clip(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """array-api-compat's clip goes through boolean masks on CuPy (two host syncs per bound)."""
    import array_api_compat.numpy

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("xp.clip used: clamp with xp.maximum / xp.minimum")

    monkeypatch.setattr(array_api_compat.numpy, "clip", refuse)
    loss, p, t, _ = _case(name, np.random.default_rng(0))
    numpy = ailib.backends.get("numpy")
    loss.value_and_grad(numpy.asarray(p), numpy.asarray(t))


@pytest.mark.parametrize("name", NAMES)
def test_no_loss_reads_values_back_from_the_device(name: str) -> None:
    """PyTorch's "meta" tensors have shapes but no data: any read of a value (a host sync,
    a data-dependent shape) raises."""
    torch = pytest.importorskip("torch")
    loss, p, t, _ = _case(name, np.random.default_rng(0))
    y_pred = torch.empty(p.shape, dtype=torch.float32, device="meta")
    targets = [torch.empty(t.shape, dtype=torch.float32, device="meta")]
    if loss.accepts_labels:
        targets.append(torch.empty((p.shape[0],), dtype=torch.int64, device="meta"))
    for y_true in targets:
        value, grad = loss.value_and_grad(y_pred, y_true, check=False)
        assert value.device.type == "meta" and tuple(grad.shape) == p.shape


@pytest.mark.parametrize(
    "make, fault",
    [
        (lambda: BinaryCrossEntropy(eps=0.6), r"eps must lie in \(0, 0.5\), received 0.6"),
        (lambda: BinaryCrossEntropy(eps=-1e-7), r"eps must lie in \(0, 0.5\)"),
        (lambda: CategoricalCrossEntropy(eps=0.0), r"eps must lie in \(0, 1\), received 0.0"),
    ],
)
def test_clamping_eps_outside_its_range_is_refused(make: Any, fault: str) -> None:
    """eps = 0.6 clamped every probability to 0.4; eps = 0 let a zero probability give log 0."""
    with pytest.raises(ValueError, match=fault):
        make()


@pytest.mark.parametrize(
    "make, fault",
    [
        (lambda: BinaryCrossEntropy(eps=None), "BinaryCrossEntropy: eps must be a number"),
        (lambda: CategoricalCrossEntropy(eps="1e-7"), "CategoricalCrossEntropy: eps must be a"),
        (lambda: SoftmaxCrossEntropy(None), "label_smoothing must be a number, received None"),
        # bool("false") is True: a string flag once gave logits where probabilities were meant
        (
            lambda: BinaryCrossEntropy(from_logits="false"),
            "BinaryCrossEntropy: from_logits must be True or False, received 'false'",
        ),
        (lambda: BinaryCrossEntropy(from_logits=1), "from_logits must be True or False"),
    ],
)
def test_settings_that_are_not_numbers_are_refused_by_name(make: Any, fault: str) -> None:
    with pytest.raises(TypeError, match=fault):
        make()


@pytest.mark.parametrize("flag", ["no", 0, None])
def test_bce_from_logits_that_is_not_a_bool_is_refused(flag: Any) -> None:
    """from_logits="no" (or "False") was truthy: the loss read probabilities as logits."""
    with pytest.raises(TypeError, match=rf"from_logits must be True or False, received {flag!r}"):
        BinaryCrossEntropy(from_logits=flag)


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4)])
def test_labels_for_predictions_that_are_not_rows_name_the_prediction_shape(
    shape: tuple[int, ...],
) -> None:
    be = ailib.backends.get("numpy")
    z, labels = be.asarray(np.ones(shape, np.float32)), be.asarray(np.zeros(shape[0], np.int64))
    for loss in (SoftmaxCrossEntropy(), CategoricalCrossEntropy()):
        fault = rf"integer labels need y_pred of shape \(N, classes\), received y_pred of shape {re.escape(str(shape))}"
        with pytest.raises(ValueError, match=fault):
            loss(z, labels)


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4), (), (2, 0)])
def test_rows_losses_refuse_predictions_that_are_not_rows_of_classes(
    shape: tuple[int, ...],
) -> None:
    """With one-hot or probability targets too: a row (3,) was divided by its 3 classes (PyTorch
    reads it as one unbatched sample), (2, 3, 4) summed over its middle axis and divided by 2,
    a 0-d y_pred raised an IndexError, and (2, 0) a reduction's error."""
    be = ailib.backends.get("numpy")
    z = be.asarray(np.full(shape, 0.25))
    for loss in (SoftmaxCrossEntropy(), SoftmaxCrossEntropy(0.1), CategoricalCrossEntropy()):
        fault = (
            r"one-hot or probability rows need y_pred of shape \(N, classes\), received y_pred "
            rf"of shape {re.escape(str(shape))}"
            + ("; it has no classes" if len(shape) == 2 else "")
        )
        with pytest.raises(ValueError, match=fault):
            loss(z, be.asarray(np.full(shape, 0.25)))


@pytest.mark.parametrize("dtype", [np.float64, np.bool_])
def test_labels_that_are_not_integers_are_refused_with_the_cast_to_make(dtype: Any) -> None:
    be = ailib.backends.get("numpy")
    z, labels = be.asarray(np.zeros((4, 3))), be.asarray(np.array([0, 1, 1, 0], dtype=dtype))
    for loss in (SoftmaxCrossEntropy(), CategoricalCrossEntropy()):
        fault = (
            rf"{loss.name}: y_true must have y_pred's shape \(4, 3\), received \(4,\) of dtype "
            rf"{np.dtype(dtype).name}; class labels must be integers: cast them, e.g. "
            r"xp.astype\(y_true, xp.int64\)"
        )
        with pytest.raises(ValueError, match=fault):
            loss(z, labels)


def test_a_losss_repr_states_its_settings() -> None:
    """What compiled steps compare to tell two loss objects apart (`ailib.compiling`)."""
    assert repr(CategoricalCrossEntropy()) == "CategoricalCrossEntropy()"
    assert repr(CategoricalCrossEntropy(eps=0.01)) == "CategoricalCrossEntropy(eps=0.01)"
    assert repr(BinaryCrossEntropy(0.1, from_logits=True)) == (
        "BinaryCrossEntropy(eps=0.1, from_logits=True)"
    )
    assert repr(BinaryCrossEntropy()) == "BinaryCrossEntropy()"


#: every loss class, with settings other than its defaults
SETTINGS: dict[type, dict[str, Any]] = {
    MSE: {},
    BinaryCrossEntropy: {"eps": 0.01, "from_logits": True},
    CategoricalCrossEntropy: {"eps": 0.2},
    SoftmaxCrossEntropy: {"label_smoothing": 0.3},
}


def test_the_settings_cover_every_loss_class() -> None:
    assert set(SETTINGS) == set(ailib.losses.LOSSES.values())


@pytest.mark.parametrize("cls", list(SETTINGS), ids=lambda cls: cls.__name__)
def test_get_config_holds_every_constructor_argument(cls: type) -> None:
    """What a model file stores of a loss (`ailib.io`): every argument, so that the loss
    rebuilt from it computes the very same E and dE/dY."""
    loss = cls(**SETTINGS[cls])
    assert loss.get_config() == SETTINGS[cls]
    assert set(loss.get_config()) == set(inspect.signature(cls).parameters)
    rebuilt = cls(**json.loads(json.dumps(loss.get_config())))
    assert repr(rebuilt) == repr(loss)
    rng = np.random.default_rng(0)
    z, labels = rng.uniform(0.05, 0.95, (6, 3)), rng.integers(0, 3, 6)
    y = labels if loss.accepts_labels else rng.integers(0, 2, (6, 3)).astype(np.float64)
    for a, b in zip(rebuilt.value_and_grad(z, y), loss.value_and_grad(z, y)):
        np.testing.assert_array_equal(a, b)
