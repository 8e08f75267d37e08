"""Sequential: the seed's loop end to end, agreement across backends, and bad input."""

from __future__ import annotations

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


def test_nan_loss_stops_fit_at_the_exact_step(backend: ailib.backends.Backend) -> None:
    x, y = _blobs(64)
    x[40] = np.nan  # sample 40 sits in batch 6 (1-based) without shuffling, batch size 8
    model = _mlp(backend)
    with pytest.raises(ailib.TrainingDiverged, match="at epoch 1, step 6"):
        model.fit(x, y, epochs=1, batch_size=8, shuffle=False, log_every=3)


def test_bad_fit_arguments() -> None:
    model = xor_model(ailib.backends.get("numpy"))
    for name in ("epochs", "batch_size", "log_every", "accumulate", "steps_per_epoch"):
        with pytest.raises(ValueError, match=f"{name} must be a positive int, received 0"):
            model.fit(XOR_X, XOR_Y, loss="mse", **{name: 0})
    with pytest.raises(TypeError, match="item 1 is str, not a Layer"):
        ailib.Sequential([Dense(2, 2), "relu"])
