"""The training loop (ailib.training): iterables of batches, gradient accumulation, freezing,
modes restored, batches of one sample, NaN in evaluate, and the import graph."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ailib
from ailib.callbacks import Callback
from ailib.layers import BatchNorm1D, Dense, Dropout, ReLU, Tanh
from ailib.optimizers import SGD, Adam

from .helpers import assert_close, host

ROOT = Path(__file__).resolve().parent.parent


def _data(n: int = 64, features: int = 6, classes: int = 3, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features)), rng.integers(0, classes, n)


def _mlp(backend: Any = "numpy", dtype: str = "float64", seed: int = 3) -> ailib.Sequential:
    return ailib.Sequential(
        [Dense(6, 8), Tanh(), Dense(8, 3)], backend=backend, dtype=dtype, seed=seed
    )


def _params(model: ailib.Sequential) -> dict[str, np.ndarray]:
    return {k: host(v).copy() for k, v in model.params.items()}


def _assert_same_params(a: ailib.Sequential, b: ailib.Sequential, dtype: str = "float64") -> None:
    for key, value in b.params.items():
        assert_close(a.params[key], value, dtype)


class Sizes(Callback):
    """Records the size of every batch, per epoch."""

    def __init__(self) -> None:
        self.sizes: list[list[int]] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        self.sizes.append([])

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        self.sizes[-1].append(logs["size"])


# -- gradient accumulation ----------------------------------------------------------------------
@pytest.mark.parametrize("n", [64, 56], ids=["equal-groups", "short-last-group"])
@pytest.mark.parametrize(
    "make", [lambda: SGD(lr=0.1, momentum=0.9), lambda: Adam(lr=0.01)], ids=["sgd", "adam"]
)
def test_accumulating_k_batches_equals_one_step_on_their_concatenation(
    backend: ailib.backends.Backend, n: int, make: Any
) -> None:
    x, y = _data(n)
    big, small = _mlp(backend), _mlp(backend)
    h_big = big.fit(x, y, optimizer=make(), epochs=2, batch_size=32)
    h_small = small.fit(x, y, optimizer=make(), epochs=2, batch_size=8, accumulate=4)
    _assert_same_params(small, big)
    np.testing.assert_allclose(h_small["loss"][0], h_big["loss"][0], rtol=1e-12)
    assert small.optimizer.iterations == big.optimizer.iterations == 4


def test_accumulation_is_not_one_step_per_batch() -> None:
    x, y = _data()
    a, b = _mlp(), _mlp()
    a.fit(x, y, optimizer=SGD(lr=0.1), batch_size=8, accumulate=4, shuffle=False)
    b.fit(x, y, optimizer=SGD(lr=0.1), batch_size=8, shuffle=False)
    assert a.optimizer.iterations == 2 and b.optimizer.iterations == 8
    assert not np.allclose(host(a.params["0.W"]), host(b.params["0.W"]))


# -- iterables of batches -----------------------------------------------------------------------
def _batches(x: np.ndarray, y: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def test_a_list_of_batches_trains_like_the_arrays(backend: ailib.backends.Backend) -> None:
    x, y = _data()
    by_arrays, by_list = _mlp(backend), _mlp(backend)
    expected = by_arrays.fit(x, y, optimizer="adam", epochs=3, batch_size=16, shuffle=False)
    sizes = Sizes()
    history = by_list.fit(
        _batches(x, y, 16), optimizer="adam", epochs=3, callbacks=[sizes], log_every=3
    )
    assert sizes.sizes == [[16] * 4] * 3
    _assert_same_params(by_list, by_arrays)
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-10)
    np.testing.assert_allclose(history["accuracy"], expected["accuracy"])


def test_a_one_shot_iterator_feeds_steps_per_epoch_batches_per_epoch() -> None:
    x, y = _data()
    by_arrays, by_iterator = _mlp(), _mlp()
    by_arrays.fit(x, y, epochs=3, batch_size=16, shuffle=False)
    stream = itertools.cycle(_batches(x, y, 16))  # endless: data streamed from elsewhere
    sizes = Sizes()
    by_iterator.fit(stream, epochs=3, steps_per_epoch=4, callbacks=[sizes])
    assert sizes.sizes == [[16] * 4] * 3
    _assert_same_params(by_iterator, by_arrays)


def test_a_one_shot_iterator_needs_steps_per_epoch_for_several_epochs() -> None:
    x, y = _data()
    with pytest.raises(ValueError, match="one-shot iterator .* give steps_per_epoch"):
        _mlp().fit(iter(_batches(x, y, 16)), epochs=2)
    history = _mlp().fit(iter(_batches(x, y, 16)), epochs=1)  # one pass: it is used up once
    assert len(history["loss"]) == 1


def test_an_iterator_that_runs_out_stops_training_with_a_warning() -> None:
    x, y = _data(80)
    sizes = Sizes()
    with pytest.warns(RuntimeWarning, match="ran out at epoch 4"):
        history = _mlp().fit(
            iter(_batches(x, y, 16)), epochs=5, steps_per_epoch=2, callbacks=[sizes]
        )
    assert sizes.sizes == [[16, 16], [16, 16], [16], []]
    assert len(history["loss"]) == 3


def test_steps_per_epoch_caps_a_re_iterable_source() -> None:
    x, y = _data()
    sizes = Sizes()
    _mlp().fit(_batches(x, y, 16), epochs=2, steps_per_epoch=3, callbacks=[sizes])
    assert sizes.sizes == [[16] * 3] * 2


def test_validation_and_evaluate_take_iterables_of_batches() -> None:
    x, y = _data(96)
    model = _mlp()
    history = model.fit(
        x[:64], y[:64], epochs=2, validation_data=_batches(x[64:], y[64:], 10), batch_size=16
    )
    on_arrays = model.evaluate(x[64:], y[64:])
    assert history["val_loss"][-1] == pytest.approx(on_arrays["loss"], rel=1e-12)
    assert history["val_accuracy"][-1] == on_arrays["accuracy"]
    assert model.evaluate(_batches(x[64:], y[64:], 7)) == pytest.approx(on_arrays, rel=1e-12)


def test_bad_iterables_are_refused() -> None:
    x, y = _data()
    model = _mlp()
    with pytest.raises(TypeError, match=r"each batch must be an \(x, y\) pair, received tuple"):
        model.fit([(x, y, y)])
    with pytest.raises(TypeError, match=r"x must be an array \(with y\) or an iterable"):
        model.fit(3)
    with pytest.raises(ValueError, match="steps_per_epoch is for an iterable of batches"):
        model.fit(x, y, steps_per_epoch=2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        model.fit([(x, y), (x, y + 5)])
    with pytest.raises(ValueError, match="validation_data must be .* one-shot iterator"):
        model.fit(x, y, validation_data=iter(_batches(x, y, 8)))
    with pytest.raises(ValueError, match="gave no batch in epoch 1"):
        model.fit([])
    with pytest.raises(ValueError, match="y is missing; give the targets with the x array"):
        model.evaluate(x)


# -- freezing -----------------------------------------------------------------------------------
def test_frozen_layers_are_not_updated_and_the_frozen_prefix_is_not_backpropagated(
    backend: ailib.backends.Backend,
) -> None:
    x, y = _data()
    model = ailib.Sequential(
        [Dense(6, 8), ReLU(), Dense(8, 8), Tanh(), Dense(8, 3)],
        backend=backend,
        dtype="float64",
        seed=0,
    )
    model.layers[0].trainable = False
    model.layers[2].trainable = False
    before = _params(model)
    model.fit(x, y, optimizer=Adam(lr=0.01, clip_norm=1.0), epochs=2, batch_size=16)
    after = _params(model)
    for key in ("0.W", "0.b", "2.W", "2.b"):
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert not np.allclose(after["4.W"], before["4.W"])
    assert model.layers[0].grads == model.layers[2].grads == {}  # never computed
    model.layers[0].trainable = True
    model.fit(x, y, epochs=1, batch_size=16)
    assert not np.allclose(host(model.params["0.W"]), before["0.W"])


# -- modes, batches of one, NaN in evaluate (issue 12) ------------------------------------------
def _dropout_model() -> ailib.Sequential:
    return ailib.Sequential(
        [Dense(6, 16), Dropout(0.5), Dense(16, 3)], backend="numpy", dtype="float64", seed=0
    )


@pytest.mark.parametrize("mode", [True, False], ids=["train", "eval"])
def test_predict_evaluate_and_fit_restore_the_mode_the_model_was_in(mode: bool) -> None:
    x, y = _data(32)
    model = _dropout_model().train(mode)
    for run in (
        lambda: model.predict(x),
        lambda: model.predict(x, batch_size=8),
        lambda: model.evaluate(x, y),
        lambda: model.fit(x, y, validation_data=(x, y), batch_size=8),
    ):
        run()
        assert [layer.training for layer in model.layers] == [mode] * 3
        assert model.training is mode
    if not mode:  # still in eval mode: dropout is off, so outputs repeat
        np.testing.assert_array_equal(
            host(model.forward(model._inputs(x, "t"))), host(model.predict(x))
        )


def test_train_step_with_an_optimizer_name_keeps_one_optimizer() -> None:
    x, y = _data(16)
    by_name, by_object = _mlp(), _mlp()
    be = by_name.backend
    xd, yd = be.asarray(x), be.asarray(y)
    adam = Adam()
    for _ in range(3):
        by_name.train_step(xd, yd, "softmax_cross_entropy", "adam")
        by_object.train_step(xd, yd, "softmax_cross_entropy", adam)
    _assert_same_params(by_name, by_object)
    assert isinstance(by_name.optimizer, Adam) and by_name.optimizer.iterations == 3
    by_name.train_step(xd, yd, "softmax_cross_entropy", "sgd")  # another name: a new optimizer
    assert isinstance(by_name.optimizer, SGD)


def _bn_model() -> ailib.Sequential:
    return ailib.Sequential(
        [Dense(6, 8), BatchNorm1D(8), ReLU(), Dense(8, 3)], backend="numpy", seed=0
    )


def test_a_final_batch_of_one_sample_joins_the_previous_batch() -> None:
    x, y = _data(33)
    history = _bn_model().fit(x, y, epochs=2, batch_size=8)
    assert np.isfinite(history["loss"]).all()
    sizes = Sizes()
    _bn_model().fit(x, y, epochs=2, batch_size=8, callbacks=[sizes])
    assert sizes.sizes == [[8, 8, 8, 9]] * 2
    sizes = Sizes()
    _bn_model().fit(x, y, batch_size=8, drop_last=True, callbacks=[sizes])
    assert sizes.sizes == [[8, 8, 8, 8]]
    sizes = Sizes()
    _bn_model().fit(x[:30], y[:30], batch_size=8, drop_last=True, callbacks=[sizes])
    assert sizes.sizes == [[8, 8, 8]]
    with pytest.raises(ValueError, match="drop_last=True with 5 samples and batch_size 8"):
        _bn_model().fit(x[:5], y[:5], batch_size=8, drop_last=True)


def test_a_batch_of_one_that_cannot_be_normalised_is_a_clear_error() -> None:
    x, y = _data(17)
    with pytest.raises(
        ValueError, match=r"epoch 1, step 1 is a batch of one sample.*BatchNorm1D.*drop_last"
    ):
        _bn_model().fit(x[:1], y[:1])
    with pytest.raises(ValueError, match=r"epoch 1, step 3 is a batch of one sample"):
        _bn_model().fit(_batches(x, y, 8))  # an iterable's batches are taken as they come


def test_evaluate_gives_a_nan_loss_instead_of_raising() -> None:
    x, y = _data(32)
    model = _mlp()  # inputs with NaN/inf are refused up front: a diverged model gives the NaN
    first = model.layers[0]
    w = host(first.params["W"]).copy()
    w[0, 0] = np.nan
    first.params["W"] = model.backend.asarray(w)
    result = model.evaluate(x, y, loss="softmax_cross_entropy")
    assert np.isnan(result["loss"]) and 0.0 <= result["accuracy"] <= 1.0


# -- structure ----------------------------------------------------------------------------------
def _module_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported (top level, not inside functions or
    ``if TYPE_CHECKING:``)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
            names.update(f"{node.module or ''}.{a.name}".lstrip(".") for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_io_and_the_model_do_not_import_each_other() -> None:
    io_imports = _module_imports(ROOT / "ailib" / "io.py")
    assert not io_imports & {"model", "training", "callbacks"}, io_imports
    for module in ("model.py", "training.py", "batches.py"):
        assert "io" not in _module_imports(ROOT / "ailib" / module), module


def test_fit_and_evaluate_refuse_arguments_of_the_wrong_kind_naming_them() -> None:
    from ailib import zoo

    model = ailib.Sequential(zoo.mlp(4, (3,), 2), seed=0)
    x = np.random.default_rng(0).random((10, 4)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 2, 10)
    with pytest.raises(
        TypeError, match=r"callbacks must be a list of .*Callback objects, received 3"
    ):
        model.fit(x, y, callbacks=3, verbose=False)
    with pytest.raises(TypeError, match="callbacks must be .*Callback objects, received int 3"):
        model.fit(x, y, callbacks=[3], verbose=False)
    with pytest.raises(TypeError, match="received one; pass \\[EarlyStopping"):
        model.fit(x, y, callbacks=ailib.callbacks.EarlyStopping(), verbose=False)
    with pytest.raises(
        ValueError, match=r"validation_data must be an \(x, y\) pair .* shape \(10, 4\)"
    ):
        model.fit(x, y, validation_data=x, verbose=False)
    with pytest.raises(TypeError, match="shuffle must be True or False, received 'no'"):
        model.fit(x, y, shuffle="no", verbose=False)
    with pytest.raises(ValueError, match="evaluate: the data gave no batch"):
        model.evaluate([], loss="mse")
    model.fit(x, y, shuffle=np.False_, drop_last=0, verbose=False)  # NumPy's bools and 0/1 do
