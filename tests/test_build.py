"""Shapes known before weights are made: layers declared without their input size are built
once, on the model's backend and dtype, from the shapes flowing through it, with the model's
seed; no weight is drawn twice or moved through the host for nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ailib
import ailib.zoo
from ailib.backends import Backend
from ailib.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, ReLU, Tanh

from .helpers import host


class _Counts:
    """Counts random draws (`Random.uniform`/`normal`) and host <-> device moves on one backend."""

    def __init__(self, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.draws = self.to_device = self.to_host = 0
        for method in ("uniform", "normal"):
            original = getattr(ailib.backends.Random, method)

            def draw(rng: Any, *args: Any, original: Any = original, **kwargs: Any) -> Any:
                self.draws += 1
                return original(rng, *args, **kwargs)

            monkeypatch.setattr(ailib.backends.Random, method, draw)
        original_from, original_to = backend._from_host, backend.to_host

        def from_host(a: np.ndarray) -> Any:
            self.to_device += 1
            return original_from(a)

        def to_host(a: Any) -> np.ndarray:
            self.to_host += 1
            return original_to(a)

        monkeypatch.setattr(backend, "_from_host", from_host)
        monkeypatch.setattr(backend, "to_host", to_host)


def test_a_seeded_model_draws_each_weight_once_on_its_own_backend(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = _Counts(backend, monkeypatch)
    model = ailib.Sequential(ailib.zoo.mlp(20, (16, 8), 4), backend=backend, seed=0)
    # three W drawn on the host and moved at most once each (not at all where the host is the
    # device); biases made on the device; nothing read back
    assert counts.draws == 3 and counts.to_device <= 3 and counts.to_host == 0
    for layer in model.layers:
        for value in layer.params.values():
            assert backend.owns(value) and value.dtype == backend.xp.float32
    assert counts.draws == 3  # touching the parameters made nothing new


def test_layers_without_input_sizes_take_them_from_the_input_shape() -> None:
    x = ailib.Input((1, 6, 6))
    h = ReLU()(BatchNorm2D()(Conv2D(out_channels=3, kernel_size=3)(x)))
    y = Dense(5)(Flatten()(h))
    model = ailib.Model(x, y, backend="numpy", dtype="float64", seed=0)
    shapes = {
        f"{i}.{k}": tuple(v.shape)
        for i, layer in enumerate(model.layers)
        for k, v in layer.params.items()
    }
    assert shapes == {
        "0.W": (3, 1, 3, 3),
        "0.b": (3,),
        "1.gamma": (3,),
        "1.beta": (3,),
        "4.W": (5, 48),
        "4.b": (5,),
    }
    assert all(v.dtype == np.float64 for v in model.params.values())
    assert model.predict(np.zeros((2, 1, 6, 6))).shape == (2, 5)


def test_sizes_given_or_inferred_give_the_same_model(other_backend: Backend) -> None:
    """Dense(16) after an Input((20,)) is Dense(20, 16): same weights from the same seed, on
    every backend; a Sequential without input_shape builds at its first batch, the same again."""
    x = np.random.default_rng(0).standard_normal((8, 20)).astype(np.float32)
    explicit = ailib.Sequential([Dense(20, 16), Tanh(), Dense(16, 4)], backend="numpy", seed=5)
    declared = ailib.Sequential(
        [Dense(16), Tanh(), Dense(4)], backend=other_backend, seed=5, input_shape=(20,)
    )
    deferred = ailib.Sequential([Dense(16), Tanh(), Dense(4)], backend=other_backend, seed=5)
    assert deferred.params == {}  # nothing known yet, nothing made
    assert tuple(deferred.predict(x).shape) == (8, 4)
    for model in (declared, deferred):
        assert model.params.keys() == explicit.params.keys()
        for key, value in explicit.params.items():
            np.testing.assert_array_equal(host(model.params[key]), host(value), err_msg=key)


def test_a_layer_alone_builds_at_first_use_and_says_what_it_lacks(backend: Backend) -> None:
    layer = Dense(3, backend=backend, seed=0)
    assert not layer.built and layer.params == {}
    with pytest.raises(ValueError, match="Dense: its input size is not known"):
        layer.build()
    y = layer.forward(backend.asarray(np.ones((2, 5), dtype=np.float32)))
    assert tuple(y.shape) == (2, 3) and layer.in_features == 5
    assert tuple(layer.params["W"].shape) == (3, 5)
    sized = Dense(5, 3, backend=backend, seed=0)
    np.testing.assert_array_equal(host(sized.params["W"]), host(layer.params["W"]))
    with pytest.raises(ValueError, match=r"Dense: expected samples of shape \(5,\)"):
        layer.build((4,))


def test_a_model_keeps_weights_a_layer_already_has(other_backend: Backend) -> None:
    layer = Dense(4, 2, backend="numpy", seed=1)
    w = host(layer.params["W"]).copy()  # made on NumPy: the user holds these weights
    model = ailib.Sequential([layer, Tanh()], backend=other_backend, seed=7)
    assert other_backend.owns(layer.params["W"])
    np.testing.assert_array_equal(host(model.params["0.W"]), w)


def test_a_weight_of_another_library_set_into_params_is_named() -> None:
    """A NumPy array set into a torch layer's params: the dtype check said "expected dtype
    float32, received float32"; it now says an array of another library was set there."""
    if "torch" not in ailib.backends.available():
        pytest.skip("torch is not installed: no second library with its own dtypes")
    model = ailib.Sequential([Dense(4, 3)], backend="torch", seed=0)
    model.layers[0].params["W"] = np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError, match=r"not of backend 'torch' was set into the layer's params"):
        model.predict(np.zeros((2, 4), np.float32))


def test_constructor_errors_name_the_layer() -> None:
    with pytest.raises(ValueError, match="Dense: give the output size"):
        Dense()
    with pytest.raises(ValueError, match="Dense: in_features must be a positive int"):
        Dense(0, 3)
    with pytest.raises(ValueError, match="Conv2D: give out_channels and kernel_size"):
        Conv2D(out_channels=4)
    with pytest.raises(ValueError, match="BatchNorm2D: the number of features must be"):
        BatchNorm2D(-1)


def test_numpy_integers_are_taken_as_ints_and_kept_as_python_ints(tmp_path: Any) -> None:
    """Sizes, window settings, seeds and fit's counts drawn with NumPy (``rng.integers``)
    are NumPy integers: each is taken as the int it is, kept as a Python int (the saved config
    is JSON), and the result equals the one built from Python ints. Bools and floats are not
    ints."""
    from ailib import schedules
    from ailib.layers import Concatenate, Embedding, LayerNorm, MaxPool2D, Reshape

    i = np.int64
    x = np.random.default_rng(0).random((10, 1, 4, 4), dtype=np.float32)
    y = np.arange(10) % 3

    def train(n: Any) -> ailib.Sequential:
        layers = [
            Conv2D(n(1), n(2), n(3), stride=n(1), padding=(n(1), 1), seed=n(5)),
            MaxPool2D(n(2)),
            Reshape((n(8),)),
            LayerNorm(n(8)),
            Dense(n(3)),
        ]
        model = ailib.Sequential(layers, backend="numpy", seed=n(0))
        model.fit(x, y, epochs=n(2), batch_size=n(4), log_every=n(1), verbose=False)
        return model

    ours, reference = train(i), train(int)
    for name, value in reference.params.items():
        np.testing.assert_array_equal(host(ours.params[name]), host(value))
    for layer in ours.layers:
        for value in layer.get_config().values():
            for v in value if isinstance(value, list) else [value]:
                assert type(v) is not i, (layer, value)
    assert ours.seed == 0 and type(ours.seed) is int
    ours.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(
        host(ailib.load(tmp_path / "m.npz").predict(x)), host(reference.predict(x))
    )
    assert Embedding(i(10), np.int32(3)).get_config()["num_embeddings"] == 10
    assert Concatenate(i(-1)).axis == -1 and ailib.Input((i(4),)).shape == (4,)
    assert schedules.step_schedule(0.1, i(2))(i(3)) == schedules.step_schedule(0.1, 2)(3)
    for bad in (True, 3.0, np.float64(3), np.bool_(True)):
        with pytest.raises(ValueError, match="Dense: in_features must be a positive int"):
            Dense(bad, 3)
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ValueError, match="Sequential: seed must be None or an int >= 0"):
            ailib.Sequential([Dense(4, 3)], seed=bad)
        with pytest.raises(ValueError, match="Dense: seed must be None or an int >= 0"):
            Dense(4, 3, seed=bad)


def test_seeded_dropout_in_a_deferred_model_repeats_its_masks() -> None:
    def masks() -> np.ndarray:
        model = ailib.Sequential([Dense(8), Dropout(0.5)], backend="numpy", seed=3)
        return host(model.forward(np.ones((4, 6), dtype=np.float32))) != 0

    np.testing.assert_array_equal(masks(), masks())
