"""Sequential: the seed's loop end to end, agreement across backends, and bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ailib
from ailib.layers import Dense, ReLU, Sigmoid, Softmax, Tanh
from ailib.optimizers import SGD

from .helpers import host

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
XOR_Y = np.array([[0], [1], [1], [0]], dtype=np.float32)


def xor_model(backend: ailib.backends.Backend) -> ailib.Sequential:
    return ailib.Sequential([Dense(2, 3), Tanh(), Dense(3, 1), Tanh()], backend=backend, seed=0)


def test_xor_learns_on_every_backend(backend: ailib.backends.Backend) -> None:
    model = xor_model(backend)
    history = model.fit(
        XOR_X, XOR_Y, loss="mse", optimizer=SGD(lr=0.1, momentum=0.9), epochs=600, batch_size=4
    )
    assert history["loss"][-1] < 0.01
    pred = host(model.predict(XOR_X))
    np.testing.assert_array_equal(pred > 0.5, XOR_Y > 0.5)


def _blobs(n: int = 256, features: int = 20, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((classes, features)) * 2
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.standard_normal((n, features))).astype(np.float32), y


def _mlp(backend: ailib.backends.Backend) -> ailib.Sequential:
    return ailib.Sequential(
        [Dense(20, 32), ReLU(), Dense(32, 16), Tanh(), Dense(16, 4)], backend=backend, seed=42
    )


def test_first_20_training_losses_agree_across_backends(
    other_backend: ailib.backends.Backend,
) -> None:
    x, y = _blobs()
    runs = []
    for be in (ailib.backends.get("numpy"), other_backend):
        model = _mlp(be)
        opt = SGD(lr=0.05, momentum=0.9)
        xd, yd = be.asarray(x), be.asarray(y)
        losses = [
            model.train_step(
                xd[i * 16 : (i + 1) * 16, ...],
                yd[i * 16 : (i + 1) * 16],
                "softmax_cross_entropy",
                opt,
            )
            for i in range(16)
        ]
        losses += [model.train_step(xd, yd, "softmax_cross_entropy", opt) for _ in range(4)]
        runs.append(np.array([float(host(v)) for v in losses]))
    assert runs[0][-1] < runs[0][0]  # it learns
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-4, atol=1e-6)


def test_fit_history_and_evaluate(backend: ailib.backends.Backend) -> None:
    x, y = _blobs()
    model = _mlp(backend)
    history = model.fit(
        x[:200],
        y[:200],
        optimizer=SGD(lr=0.05, momentum=0.9),
        epochs=5,
        batch_size=32,
        validation_data=(x[200:], y[200:]),
    )
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert all(len(v) == 5 for v in history.values())
    assert history["loss"][-1] < history["loss"][0]
    assert history["accuracy"][-1] > 0.9
    result = model.evaluate(x[200:], y[200:])
    assert result["accuracy"] == pytest.approx(history["val_accuracy"][-1])
    assert result["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-5)
    assert backend.owns(model.predict(x[:10]))


def test_fit_accepts_arrays_of_its_own_backend_and_one_hot_targets(
    backend: ailib.backends.Backend,
) -> None:
    x, y = _blobs(64)
    model = _mlp(backend)
    onehot = backend.asarray(np.eye(4, dtype=np.float32)[y])
    history = model.fit(backend.asarray(x), onehot, epochs=2, batch_size=16)
    assert 0.0 <= history["accuracy"][-1] <= 1.0


def test_same_seed_same_weights_on_every_backend(other_backend: ailib.backends.Backend) -> None:
    a, b = _mlp(ailib.backends.get("numpy")), _mlp(other_backend)
    for key, value in a.params.items():
        np.testing.assert_array_equal(host(b.params[key]), host(value))


def test_dtype_stays_float32_end_to_end(backend: ailib.backends.Backend) -> None:
    x, y = _blobs(64)
    model = ailib.Sequential(
        [Dense(20, 8), Sigmoid(), Dense(8, 4), Softmax()], backend=backend, seed=0
    )
    model.fit(
        x.astype(np.float64),
        y,
        loss="categorical_cross_entropy",
        optimizer="adam",
        epochs=1,
        batch_size=16,
    )
    xp = backend.xp
    assert model.output.dtype == xp.float32
    for layer in model.layers:
        for arr in (*layer.params.values(), *layer.grads.values()):
            assert arr.dtype == xp.float32
    loss = model.train_step(
        backend.asarray(x[:8]), backend.asarray(y[:8]), "categorical_cross_entropy", "sgd"
    )
    assert loss.dtype == xp.float32


def test_float64_models_compute_in_float64(backend: ailib.backends.Backend) -> None:
    model = ailib.Sequential([Dense(2, 3), Tanh()], backend=backend, dtype="float64", seed=0)
    out = model.predict(XOR_X)
    assert out.dtype == backend.xp.float64


def test_model_gradient_matches_finite_differences() -> None:
    """dE/dX through the whole stack (float64) equals central differences of E."""
    from .helpers import assert_grad_close, numeric_grad

    be = ailib.backends.get("numpy")
    model = ailib.Sequential(
        [Dense(3, 4), Tanh(), Dense(4, 2), Sigmoid()], backend=be, dtype="float64", seed=0
    )
    loss = ailib.losses.BinaryCrossEntropy()
    x = np.random.default_rng(0).standard_normal((5, 3))
    t = be.asarray(np.random.default_rng(1).integers(0, 2, (5, 2)).astype(np.float64))
    grad_x = model.backward(loss.grad(model.forward(be.asarray(x)), t))
    numeric = numeric_grad(lambda v: float(loss(model.forward(be.asarray(v)), t)), x)
    assert_grad_close(grad_x, numeric)


# -- bad input ------------------------------------------------------------------------------


def test_wrong_feature_count_names_the_first_layer() -> None:
    model = xor_model(ailib.backends.get("numpy"))
    with pytest.raises(
        ValueError,
        match=r"first layer \(Dense\) expects x of shape \(N, 2\), "
        r"received \(4, 3\)",
    ):
        model.fit(np.zeros((4, 3), dtype=np.float32), XOR_Y, loss="mse")
    with pytest.raises(ValueError, match=r"expects x of shape \(N, 2\), received \(4,\)"):
        model.predict(np.zeros(4, dtype=np.float32))


def test_integer_inputs_are_refused_with_the_fix() -> None:
    model = xor_model(ailib.backends.get("numpy"))
    with pytest.raises(TypeError, match=r"x has dtype uint8 but the model needs floats .*to_float"):
        model.fit(XOR_X.astype(np.uint8), XOR_Y, loss="mse")


def test_arrays_of_another_backend_or_device_are_refused() -> None:
    model = xor_model(ailib.backends.get("array_api_strict"))
    other = ailib.backends.get("array_api_strict:device1").asarray(XOR_X)
    with pytest.raises(
        TypeError,
        match=r"x must be a NumPy array or an array of backend "
        r"'array_api_strict' on device .*received .*device1",
    ):
        model.predict(other)


def test_labels_out_of_range_are_refused_before_training() -> None:
    x, y = _blobs(32)
    model = _mlp(ailib.backends.get("numpy"))
    w = host(model.params["0.W"]).copy()
    with pytest.raises(
        ValueError,
        match=r"labels must lie in \[0, 3\] for 4 classes, received "
        r"labels in \[0, 7\]",
    ):
        model.fit(x, np.where(y == 3, 7, y), epochs=1)
    np.testing.assert_array_equal(host(model.params["0.W"]), w)  # nothing was trained


def test_mismatched_sample_counts_are_refused() -> None:
    model = xor_model(ailib.backends.get("numpy"))
    with pytest.raises(ValueError, match="x has 4 samples but y has 3"):
        model.fit(XOR_X, XOR_Y[:3], loss="mse")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_diverging_loss_stops_fit_at_the_exact_step(backend: ailib.backends.Backend) -> None:
    x, y = _blobs(64)
    targets = np.eye(4, dtype=np.float32)[y]
    targets[40] = 1e30  # finite, but its squared error overflows float32 in batch 6 (of 8)
    model = _mlp(backend)
    with pytest.raises(ailib.TrainingDiverged, match="became inf at epoch 1, step 6"):
        model.fit(x, targets, loss="mse", epochs=1, batch_size=8, shuffle=False, log_every=3)


def test_a_diverged_model_evaluates_to_a_nan_loss() -> None:
    """evaluate reports what it measures; only fit treats a non-finite loss as divergence."""
    be = ailib.backends.get("numpy")
    model = _mlp(be)
    model.layers[-1].params["W"] = be.asarray(np.full((4, 16), np.inf, dtype=np.float32))
    with np.errstate(invalid="ignore"):
        result = model.evaluate(_x, _y, loss="softmax_cross_entropy")
    assert np.isnan(result["loss"])


def _spy(monkeypatch: pytest.MonkeyPatch, be: ailib.backends.Backend, method: str) -> list:
    """Record the calls of ``be.method`` (then made as before)."""
    calls: list = []
    original = getattr(be, method)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(be, method, spy)
    return calls


_x, _y = _blobs(32)
_nan_x, _inf_x = _x.copy(), _x.copy()
_nan_x[5, 3], _inf_x[7, 0] = np.nan, -np.inf
_inf_targets = np.eye(4, dtype=np.float32)[_y]
_inf_targets[2, 1] = np.inf
# name -> (x, y, fit keywords, error, message)
BAD_DATA = {
    "string labels": (
        _x,
        np.array(["cat", "dog"] * 16),
        {},
        TypeError,
        r"y holds strings \(dtype <U3\), not numbers; map class names to integers",
    ),
    "string labels in a list": (_x, ["cat", "dog"] * 16, {}, TypeError, "y holds strings"),
    "object labels": (_x, np.array([{"a": 1}] * 32), {}, TypeError, "y holds Python objects"),
    "complex x": (_x.astype(np.complex64), _y, {}, TypeError, "x holds complex numbers"),
    "string x": (np.array([["1", "2"]] * 32), _y, {}, TypeError, "x holds strings"),
    "ragged x": (
        [[1.0, 2.0], [3.0]],
        _y[:2],
        {},
        ValueError,
        "x is not a rectangular array of numbers",
    ),
    "NaN in x": (_nan_x, _y, {}, ValueError, r"Sequential.fit: x holds NaN values"),
    "inf in x": (_inf_x, _y, {}, ValueError, r"x holds inf values \(its range is \[-inf, "),
    "NaN in validation x": (
        _x,
        _y,
        {"validation_data": (_nan_x, _y)},
        ValueError,
        r"\(validation_data\): x holds NaN",
    ),
    "inf in float targets": (_x, _inf_targets, {"loss": "mse"}, ValueError, "y holds inf values"),
    "negative labels": (
        _x,
        _y - 1,
        {},
        ValueError,
        r"y's labels must lie in \[0, 3\] for 4 classes, received labels in \[-1, 2\]",
    ),
    "labels beyond the outputs": (
        _x,
        _y + 10,
        {},
        ValueError,
        r"received labels in \[10, 13\] \(the model has 4 outputs\)",
    ),
    "float labels for cross-entropy": (
        _x,
        _y.astype(np.float32),
        {},
        ValueError,
        r"float y must be one-hot or probability rows of shape \(32, 4\)",
    ),
    "labels as a column": (
        _x,
        _y[:, None],
        {},
        ValueError,
        r"integer y holds class labels and must have shape \(32,\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_training_data_is_refused_on_the_host_naming_the_argument(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y, kwargs, error, message = BAD_DATA[case]
    be = ailib.backends.get("array_api_strict")
    model = _mlp(be)
    w = host(model.params["0.W"]).copy()
    moved = _spy(monkeypatch, be, "asarray")
    with pytest.raises(error, match=message):
        model.fit(x, y, epochs=1, **kwargs)
    assert moved == []  # nothing reached the device: every argument is checked first
    np.testing.assert_array_equal(host(model.params["0.W"]), w)  # nothing was trained


def test_evaluate_and_predict_check_their_inputs_too() -> None:
    model = _mlp(ailib.backends.get("numpy"))
    with pytest.raises(ValueError, match="Sequential.evaluate: x holds NaN"):
        model.evaluate(_nan_x, _y)
    with pytest.raises(TypeError, match="Sequential.evaluate: y holds strings"):
        model.evaluate(_x, ["cat"] * 32)
    with pytest.raises(ValueError, match="Sequential.predict: x holds inf"):
        model.predict(_inf_x)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(
            ValueError, match=f"evaluate: batch_size must be a positive int, received {bad}"
        ):
            model.evaluate(_x, _y, batch_size=bad)


def test_float64_values_a_float32_model_would_turn_into_inf_are_refused() -> None:
    """1e300 is finite in float64 but inf once cast to the model's float32: refused like inf
    (predict returned inf and fit diverged); a float64 model takes it."""
    model = _mlp(ailib.backends.get("numpy"))
    big = _x.astype(np.float64)
    big[3, 1] = -1e39
    fault = r"x holds values beyond float32's range \(its range is \[-1e\+39, "
    with pytest.raises(ValueError, match="Sequential.predict: " + fault):
        model.predict(big)
    with pytest.raises(ValueError, match="Sequential.fit: " + fault):
        model.fit(big, _y, epochs=1, verbose=0)
    targets = np.full((32, 4), 1e300)
    with pytest.raises(ValueError, match="Sequential.evaluate: y holds values beyond float32"):
        model.evaluate(_x, targets, loss="mse")
    model.predict(_x.astype(np.float64))  # float64 data within float32's range is taken
    wide = ailib.Sequential([Dense(2, 3)], backend="numpy", dtype="float64", seed=0)
    assert np.isfinite(host(wide.predict(np.full((2, 2), 1e39)))).all()


def test_device_data_is_checked_with_one_read_back(
    backend: ailib.backends.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _mlp(backend)
    x, labels = backend.asarray(_nan_x), backend.asarray(_y)
    reads = _spy(monkeypatch, backend, "to_host")
    per_check = 0 if backend.name == "numpy" else 1  # NumPy arrays are checked in place
    with pytest.raises(ValueError, match="x holds NaN values"):
        model.fit(x, labels, epochs=1)
    assert len(reads) == per_check
    reads.clear()
    with pytest.raises(ValueError, match=r"received labels in \[0, 13\]"):
        model.fit(backend.asarray(_x), backend.asarray(_y + 10 * (_y == 3)), epochs=1)
    assert len(reads) == 2 * per_check  # x's range, then the labels' range
    if backend.name != "numpy":
        model.predict(x)  # predict passes device data through unchecked: no read back
        assert len(reads) == 2 * per_check


def test_bad_fit_arguments() -> None:
    model = xor_model(ailib.backends.get("numpy"))
    for name in ("epochs", "batch_size", "log_every", "accumulate", "steps_per_epoch"):
        with pytest.raises(ValueError, match=f"{name} must be a positive int, received 0"):
            model.fit(XOR_X, XOR_Y, loss="mse", **{name: 0})
    with pytest.raises(TypeError, match="item 1 is str, not a Layer"):
        ailib.Sequential([Dense(2, 2), "relu"])
