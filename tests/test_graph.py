"""Graph models: residual and shared-layer graphs pass the whole-model finite-difference check on
every backend, a shared layer's gradient is the sum of its uses, a chain written as a graph trains
exactly like `Sequential`, several inputs and outputs, merge layers, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.layers import (
    Add,
    BatchNorm1D,
    Concatenate,
    Dense,
    Multiply,
    ReLU,
    Sigmoid,
    Tanh,
)
from ailib.model import OutputLosses
from ailib.optimizers import SGD

from .helpers import assert_close, assert_grad_close, host, model_gradcheck, numeric_grad


def residual(backend: ailib.backends.Backend, dtype: str = "float64") -> ailib.Model:
    """x -> Dense -> Tanh -> (+ x) -> BatchNorm -> Dense -> Sigmoid: a residual block."""
    x = ailib.Input((5,))
    h = Tanh()(Dense(5)(x))
    h = BatchNorm1D()(Add()([x, h]))
    return ailib.Model(x, Sigmoid()(Dense(3)(h)), backend=backend, dtype=dtype, seed=1)


def shared(backend: ailib.backends.Backend, dtype: str = "float64") -> ailib.Model:
    """One Dense called twice (on x and on its own output), a Concatenate and a Multiply."""
    x = ailib.Input((4,))
    twice = Dense(4, init="glorot_normal")
    a = Tanh()(twice(x))
    b = Tanh()(twice(a))  # the same weights again
    gate = Sigmoid()(Dense(8)(x))
    h = Multiply()([Concatenate()([a, b]), gate])
    return ailib.Model(x, Dense(2)(h), backend=backend, dtype=dtype, seed=2)


def test_residual_graph_gradients_match_finite_differences(
    backend: ailib.backends.Backend,
) -> None:
    model = residual(backend)
    rng = np.random.default_rng(0)
    y = backend.asarray(rng.integers(0, 2, (6, 3)).astype(np.float64))
    model_gradcheck(model, rng.standard_normal((6, 5)), y, ailib.losses.BinaryCrossEntropy())


def test_shared_layer_graph_gradients_match_finite_differences(
    backend: ailib.backends.Backend,
) -> None:
    model = shared(backend)
    assert len(model.nodes) == 9 and len(model.layers) == 8  # one layer, two calls
    rng = np.random.default_rng(1)
    y = backend.asarray(rng.standard_normal((5, 2)))
    model_gradcheck(model, rng.standard_normal((5, 4)), y, ailib.losses.MSE())


def test_shared_layer_gradient_is_the_sum_of_both_uses(backend: ailib.backends.Backend) -> None:
    """The shared graph against the same graph with two separate, equal layers."""
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal((3, 3)), rng.standard_normal(3)

    def build(share: bool) -> tuple[ailib.Model, list[Dense]]:
        x = ailib.Input((3,))
        first = Dense(3)
        second = first if share else Dense(3)
        out = second(Tanh()(first(x)))
        model = ailib.Model(x, out, backend=backend, dtype="float64")
        for layer in {id(first): first, id(second): second}.values():
            layer.params["W"], layer.params["b"] = backend.asarray(w), backend.asarray(b)
        return model, [first, second]

    x = backend.asarray(rng.standard_normal((4, 3)))
    g = backend.asarray(rng.standard_normal((4, 3)))
    results = []
    for share in (True, False):
        model, (first, second) = build(share)
        model.forward(x)
        dx = model.backward(g)
        results.append((host(dx), first, second))
    (dx_shared, layer, _), (dx_split, first, second) = results
    assert_close(dx_shared, dx_split, "float64")
    for name in ("W", "b"):
        expected = host(first.grads[name]) + host(second.grads[name])
        assert_close(layer.grads[name], expected, "float64")


def _chain() -> list[ailib.layers.Layer]:
    return [Dense(20, 16), ReLU(), Dense(16, 8), Tanh(), Dense(8, 4)]


def _blobs(n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 20)) * 2
    y = rng.integers(0, 4, n)
    return (centres[y] + rng.standard_normal((n, 20))).astype(np.float32), y


def test_a_chain_as_a_graph_trains_exactly_like_sequential(backend: ailib.backends.Backend) -> None:
    x, y = _blobs()
    seq = ailib.Sequential(_chain(), backend=backend, seed=3)
    inp = ailib.Input((20,))
    out = inp
    for layer in _chain():
        out = layer(out)
    graph = ailib.Model(inp, out, backend=backend, seed=3)
    histories = []
    for model in (seq, graph):
        histories.append(
            model.fit(
                x, y, optimizer=SGD(lr=0.05, momentum=0.9), epochs=3, batch_size=32, verbose=False
            )
        )
    assert histories[0]["loss"] == histories[1]["loss"]
    assert histories[0]["accuracy"] == histories[1]["accuracy"]
    for key, value in seq.params.items():
        np.testing.assert_array_equal(host(graph.params[key]), host(value), err_msg=key)


def test_two_inputs_two_outputs_fit_and_predict(backend: ailib.backends.Backend) -> None:
    rng = np.random.default_rng(4)
    a_in, b_in = ailib.Input((6,), name="a"), ailib.Input((3,), name="b")
    joined = ReLU()(Dense(8)(Concatenate()([a_in, b_in])))
    classes, value = Dense(4)(joined), Dense(1)(joined)
    model = ailib.Model([a_in, b_in], [classes, value], backend=backend, seed=0)
    xa, xb = rng.standard_normal((64, 6)), rng.standard_normal((64, 3))
    labels, target = rng.integers(0, 4, 64), rng.standard_normal((64, 1)).astype(np.float32)
    history = model.fit(
        [xa, xb],
        [labels, target],
        loss=["softmax_cross_entropy", "mse"],
        optimizer="adam",
        epochs=3,
        batch_size=16,
    )
    assert history["loss"][-1] < history["loss"][0]
    assert "accuracy" not in history  # reported for one output only
    out = model.predict([xa, xb], batch_size=20)
    assert isinstance(out, list) and [tuple(o.shape) for o in out] == [(64, 4), (64, 1)]
    # the training error is the sum of the outputs' losses
    result = model.evaluate([xa, xb], [labels, target])
    ce = ailib.losses.SoftmaxCrossEntropy()(out[0], backend.asarray(labels))
    mse = ailib.losses.MSE()(out[1], backend.asarray(target))
    assert result["loss"] == pytest.approx(float(host(ce)) + float(host(mse)), rel=1e-5)


def test_validation_split_holds_out_the_last_rows_of_every_output() -> None:
    rng = np.random.default_rng(6)
    a_in, b_in = ailib.Input((3,)), ailib.Input((2,))
    model = ailib.Model(
        [a_in, b_in], [Dense(3)(a_in), Dense(1)(b_in)], backend="numpy", dtype="float64", seed=0
    )
    xs = [rng.standard_normal((20, 3)), rng.standard_normal((20, 2))]
    ys = [rng.integers(0, 3, 20), rng.standard_normal((20, 1))]
    history = model.fit(
        xs, ys, loss=["softmax_cross_entropy", "mse"], validation_split=0.25, verbose=False
    )
    held = model.evaluate([x[15:] for x in xs], [y[15:] for y in ys])
    assert history["val_loss"] == [held["loss"]]


def test_evaluate_without_a_loss_on_several_outputs_asks_for_one() -> None:
    x = ailib.Input((4,))
    model = ailib.Model(x, [Dense(3)(x), Dense(1)(x)], backend="numpy", seed=0)
    xs = np.zeros((5, 4), np.float32)
    ys = [np.zeros(5, np.int64), np.zeros((5, 1), np.float32)]
    with pytest.raises(ValueError, match="has 2 outputs and no loss to report; give loss="):
        model.evaluate(xs, ys)
    result = model.evaluate(xs, ys, loss=["softmax_cross_entropy", "mse"])
    assert set(result) == {"loss"}


def test_two_output_gradients_match_finite_differences(backend: ailib.backends.Backend) -> None:
    rng = np.random.default_rng(5)
    x1, x2 = ailib.Input((3,)), ailib.Input((3,))
    h = Tanh()(Dense(4)(Add()([x1, x2])))
    outputs = [Dense(2)(h), Sigmoid()(Dense(1)(x2))]
    model = ailib.Model([x1, x2], outputs, backend=backend, dtype="float64", seed=0)
    ys = [backend.asarray(rng.standard_normal((5, 2))), backend.asarray(rng.random((5, 1)))]
    loss = OutputLosses([ailib.losses.MSE(), ailib.losses.BinaryCrossEntropy()])
    model_gradcheck(model, [rng.standard_normal((5, 3)), rng.standard_normal((5, 3))], ys, loss)


# -- merge layers ---------------------------------------------------------------------------
MERGES = {
    "Add": (Add, [(2, 3, 4), (2, 3, 4), (2, 3, 4)]),
    "Multiply": (Multiply, [(3, 5), (3, 5)]),
    "Concatenate-last": (Concatenate, [(3, 2), (3, 5)]),
    "Concatenate-channels": (lambda **kw: Concatenate(axis=1, **kw), [(2, 1, 3, 3), (2, 4, 3, 3)]),
}


@pytest.mark.parametrize("name", MERGES)
def test_merge_gradients_match_finite_differences(
    name: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    make, shapes = MERGES[name]
    layer = make(backend=backend, dtype="float64")
    xs = [rng.standard_normal(s) for s in shapes]
    y, backprop = layer.call([backend.asarray(a) for a in xs])
    r = rng.standard_normal(tuple(y.shape))
    dxs = backprop(backend.asarray(r))
    assert len(dxs) == len(xs)
    for k in range(len(xs)):

        def energy(v: np.ndarray, k: int = k) -> float:
            parts = [backend.asarray(v if j == k else a) for j, a in enumerate(xs)]
            return float(np.sum(host(layer.call(parts)[0]) * r))

        assert_grad_close(dxs[k], numeric_grad(energy, xs[k]))


@pytest.mark.parametrize("name", MERGES)
def test_merge_float32_agrees_with_numpy(
    name: str, other_backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    make, shapes = MERGES[name]
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    results = []
    for be in (ailib.backends.get("numpy"), other_backend):
        layer = make(backend=be)
        y, backprop = layer.call([be.asarray(a) for a in xs])
        g = np.random.default_rng(1).standard_normal(tuple(y.shape)).astype(np.float32)
        dxs = backprop(be.asarray(g))
        assert y.dtype == be.xp.float32 and all(d.dtype == be.xp.float32 for d in dxs)
        results.append([host(y), *(host(d) for d in dxs)])
    for ref, got in zip(*results):
        assert_close(got, ref, "float32")


def test_merge_shapes_and_errors() -> None:
    a, b = ailib.Input((4,)), ailib.Input((3,))
    assert Concatenate()([a, b]).shape == (7,)
    with pytest.raises(ValueError, match=r"Add: adds inputs of one shape, received \(4,\), \(3,\)"):
        Add()([a, b])
    with pytest.raises(TypeError, match="Add: expected a list of at least two inputs"):
        Add()(a)
    with pytest.raises(TypeError, match="Dense: takes one input, received a list of 2"):
        Dense(3)([a, b])
    with pytest.raises(ValueError, match="Concatenate: axis must be a non-zero int"):
        Concatenate(axis=0)
    img1, img2 = ailib.Input((2, 5, 5)), ailib.Input((3, 4, 5))
    with pytest.raises(ValueError, match="agree on every axis but 1"):
        Concatenate(axis=1)([img1, img2])


def test_concatenate_refuses_arrays_of_different_batch_sizes(
    backend: ailib.backends.Backend,
) -> None:
    """Called on arrays, the batch axis is checked too (it is not part of the sample shapes
    `compute_output_shape` compares): the layer's error, not the library's."""
    a, b = backend.asarray(np.zeros((2, 3))), backend.asarray(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"Concatenate: .*one batch size.*\(2, 3\), \(3, 4\)"):
        Concatenate(backend=backend).forward([a, b])


# -- construction and errors ------------------------------------------------------------------
def test_shapes_flow_and_errors_are_raised_where_the_graph_is_written() -> None:
    x = ailib.Input((1, 8, 8))
    h = ailib.layers.Conv2D(out_channels=4, kernel_size=3, padding=1)(x)
    assert h.shape == (4, 8, 8)
    h = ailib.layers.MaxPool2D(2)(h)
    assert h.shape == (4, 4, 4)
    flat = ailib.layers.Flatten()(h)
    assert flat.shape == (64,)
    with pytest.raises(
        ValueError, match=r"Dense: expected samples of shape \(10,\), received \(64,\)"
    ):
        Dense(10, 3)(flat)
    with pytest.raises(ValueError, match="add a Flatten layer first"):
        Dense(3)(h)
    with pytest.raises(ValueError, match="Input: shape must be a non-empty sequence"):
        ailib.Input((0, 3))


def test_model_refuses_outputs_from_an_unlisted_input() -> None:
    a, b = ailib.Input((2,)), ailib.Input((2,))
    out = Add()([a, b])
    with pytest.raises(ValueError, match="not one of the model's inputs"):
        ailib.Model(a, out)
    with pytest.raises(TypeError, match=r"outputs\[0\] is str, not a Symbol"):
        ailib.Model(a, ["x"])
    with pytest.raises(ValueError, match="inputs\\[0\\] is the output of Add"):
        ailib.Model(out, out)


def test_sequential_refuses_a_layer_twice() -> None:
    layer = Dense(2, 2)
    with pytest.raises(ValueError, match="item 1 is the same Dense object as item 0"):
        ailib.Sequential([layer, layer])


def test_fit_checks_the_structure_of_x_and_y() -> None:
    a, b = ailib.Input((2,)), ailib.Input((2,))
    model = ailib.Model([a, b], Dense(2)(Add()([a, b])), backend="numpy", seed=0)
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="the model has 2 inputs; pass x as a list of 2 arrays"):
        model.fit(x, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"input 1 expects x\[1\] of shape \(N, 2\)"):
        model.predict([x, np.zeros((4, 3), np.float32)])
    with pytest.raises(ValueError, match="different numbers of samples"):
        model.predict([x, x[:3]])


def test_forward_and_infer_check_the_number_of_inputs() -> None:
    a, b = ailib.Input((2,)), ailib.Input((2,))
    model = ailib.Model([a, b], Dense(2)(Add()([a, b])), backend="numpy", seed=0)
    x = np.zeros((4, 2), np.float32)
    for run in (model.forward, model.infer):
        for xs, received in (([x], "list of 1"), ([x, x, x], "list of 3"), (x, "ndarray")):
            with pytest.raises(ValueError, match=f"has 2 inputs; .*received {received}"):
                run(xs)


def test_an_input_that_no_layer_reads_takes_integers_as_an_embeddings_input_does(
    backend: ailib.backends.Backend,
) -> None:
    """An input may be an integer array when every call that reads it takes indices; an unused
    Input has no such call, so it takes integers (as NumPy and as device arrays) as well as
    floats, for predict, fit and evaluate alike (before: 'x[1] has dtype int64 but the model
    needs floats'). An input that is itself an output is what the loss reads, a float array."""
    rows, ids = ailib.Input((4,)), ailib.Input((3,), name="ids")
    model = ailib.Model([rows, ids], Dense(2)(rows), backend=backend, seed=0)
    rng = np.random.default_rng(3)
    x, tokens, labels = rng.random((6, 4), np.float32), rng.integers(0, 9, (6, 3)), np.arange(6) % 2
    expected = host(model.predict([x, tokens.astype(np.float32)]))
    on_device = backend.asarray(tokens, dtype=backend.dtype("int32"))
    for t in (tokens, tokens.astype(np.uint8), on_device):
        np.testing.assert_array_equal(host(model.predict([x, t])), expected)
    before = model.evaluate([x, tokens.astype(np.float32)], labels, loss="softmax_cross_entropy")
    assert model.evaluate([x, tokens], labels, loss="softmax_cross_entropy") == before
    model.fit([x, tokens], labels, loss="softmax_cross_entropy", epochs=1, batch_size=3, verbose=0)
    assert model.evaluate([x, tokens], labels)["loss"] != before["loss"]
    x_in = ailib.Input((3,))
    same = ailib.Model(x_in, [x_in, Dense(2)(x_in)], backend=backend, seed=0)
    with pytest.raises(TypeError, match="x has dtype int64 but the model needs floats"):
        same.predict(tokens)


@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_models_and_layers_refuse_a_dtype_that_is_not_floating(dtype: str) -> None:
    x = ailib.Input((3,))
    match = f"dtype must be a floating dtype .float32, float64.*received {dtype}"
    with pytest.raises(ValueError, match=f"Model: {match}"):
        ailib.Model(x, Dense(2)(x), backend="numpy", dtype=dtype)
    with pytest.raises(ValueError, match=f"Sequential: {match}"):
        ailib.Sequential([Dense(3, 2)], backend="numpy", dtype=dtype)
    with pytest.raises(ValueError, match=f"ReLU: {match}"):
        ReLU(backend="numpy", dtype=dtype)


def test_summary_lists_calls_shapes_and_parameters() -> None:
    model = shared(ailib.backends.get("numpy"))
    text = model.summary()
    assert "input 0" in text and "(N, 8)" in text and "(shared)" in text and "reads" in text
    total = sum(int(np.prod(v.shape)) for v in model.params.values())
    assert text.splitlines()[-1].startswith(f"total: {total:,} parameters (")
    assert text.splitlines()[-1].endswith("in 8 layers; backend numpy, float64")


def test_sequential_summary_for_an_input_shape() -> None:
    """Keras' table: layers, output shapes, parameter counts, the total with thousands
    separators, the backend and dtype; shapes of a model not yet built from an input shape."""
    from ailib.layers import Dense, ReLU

    model = ailib.Sequential([Dense(256), ReLU(), Dense(128), ReLU(), Dense(10)], seed=0)
    before = model.summary()
    assert "?" in before and "at least 0 parameters" in before
    text = model.summary(input_shape=(784,))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "output", "shape", "params"]
    assert lines[2].split() == ["input", "(N,", "784)", "0"]
    assert lines[3].split() == ["1", "Dense", "(N,", "256)", "200,960"]
    assert lines[7].split() == ["5", "Dense", "(N,", "10)", "1,290"]
    assert lines[-1] == "total: 235,146 parameters (918.5 KiB) in 5 layers; backend numpy, float32"
    assert repr(text) == text  # shows as the table at the prompt
    reference = ailib.Sequential([Dense(256), ReLU(), Dense(128), ReLU(), Dense(10)], seed=0)
    reference.fit(np.zeros((4, 784), np.float32), np.zeros(4, np.int64), epochs=1, verbose=False)
    assert model.summary() == text  # the same table once data has built the model
    with pytest.raises(ValueError, match="Dense"):
        model.summary(input_shape=(783,))  # a built model: the shape is checked, not adopted


def test_gradients_are_zeroed_by_each_backward_pass() -> None:
    model = shared(ailib.backends.get("numpy"))
    x = np.random.default_rng(0).standard_normal((3, 4))
    g = np.ones((3, 2))
    model.forward(x)
    model.backward(g)
    first = {k: host(v).copy() for k, v in model.layers[0].grads.items()}
    model.backward(g)  # the same pass again: the same gradients, not twice them
    for key, value in first.items():
        np.testing.assert_array_equal(host(model.layers[0].grads[key]), value)


class Scale(ailib.layers.Layer):
    """The custom layer of docs/models.md, verbatim: Y = s·X with one learned scalar s."""

    def reset_parameters(self, rng: object) -> None:
        self.params["s"] = self.xp.ones((), dtype=self.dtype, device=self.backend.device)

    def call(self, x: object) -> tuple:
        s = self.params["s"]
        y = s * x

        def backprop(grad_out: object, input_grad: bool = True) -> object:
            self.accumulate("s", self.xp.sum(grad_out * x))
            return s * grad_out if input_grad else None

        return y, backprop


def test_the_documented_custom_layer_works_shared_in_a_graph(
    backend: ailib.backends.Backend,
) -> None:
    x = ailib.Input((3,))
    scale = Scale()
    out = Dense(2)(Tanh()(scale(Dense(3)(scale(x)))))  # one scalar, used twice
    model = ailib.Model(x, out, backend=backend, dtype="float64", seed=0)
    rng = np.random.default_rng(6)
    y = backend.asarray(rng.standard_normal((4, 2)))
    model_gradcheck(model, rng.standard_normal((4, 3)), y, ailib.losses.MSE())
