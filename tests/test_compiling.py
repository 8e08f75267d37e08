"""Compiled training steps (ailib.compiling) equal the uncompiled ones, compile once per shape,
and stay off where they must (Dropout, accumulation, the flag)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import ailib
from ailib import compiling, optimizers, zoo
from ailib.callbacks import Callback, EarlyStopping
from ailib.layers import BatchNorm1D, Dense, Dropout, Embedding, Flatten, ReLU

from .helpers import assert_close, host

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _jax(name: str = "jax") -> ailib.backends.Backend:
    reason = ailib.backends.why_unavailable(name)
    if reason is not None:
        pytest.skip(f"backend {name} unavailable: {reason}")
    return ailib.backends.get(name)


def _data(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 6)), rng.integers(0, 3, n)


def _train(dtype: str, make_opt: Any, compiled: bool, steps: int = 20, name: str = "jax") -> Any:
    be = _jax(name)
    x, y = _data()
    model = ailib.Sequential(zoo.mlp(6, (8, 5), 3), backend=be, dtype=dtype, seed=0)
    model.compile_steps = compiled
    xd, yd = be.asarray(x.astype(dtype)), be.asarray(y, dtype=be.index_dtype)
    opt, loss = make_opt(), ailib.losses.get("softmax_cross_entropy")
    errors = []
    for k in range(steps):
        rows = slice(4 * (k % 5), 4 * (k % 5) + 8)
        errors.append(ailib.training.train_step(model, xd[rows, ...], yd[rows], loss, opt)[0])
    return model, opt, errors


OPTIMIZERS = {
    "sgd": lambda: optimizers.SGD(0.1),
    "momentum": lambda: optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-3),
    "adam": lambda: optimizers.Adam(0.01, clip_norm=1.0),
    "amsgrad": lambda: optimizers.Adam(0.01, amsgrad=True, clip_norm=1.0),
    "adamw-amsgrad": lambda: optimizers.AdamW(0.01, amsgrad=True, weight_decay=0.1),
}


def _assert_same_training(
    dtype: str, fast: Any, fast_errors: Any, eager: Any, eager_errors: Any, *, grads: bool
) -> None:
    """Errors and parameters (and gradients) of two runs equal to float64 1e-12 / float32 1e-5."""
    scale = 1e-12 if dtype == "float64" else 1e-5
    tolerance = {"rtol": scale, "atol": scale}
    np.testing.assert_allclose(
        [float(host(e)) for e in fast_errors], [float(host(e)) for e in eager_errors], **tolerance
    )
    for a, b in zip(fast.layers, eager.layers):
        for key in a.params:
            np.testing.assert_allclose(host(a.params[key]), host(b.params[key]), **tolerance)
            if grads:
                np.testing.assert_allclose(host(a.grads[key]), host(b.grads[key]), **tolerance)


def _assert_compiled_with_the_same_weights(fast: Any, eager: Any) -> None:
    """``fast`` trained with compiled steps (one step, never turned off) to ``eager``'s
    parameters, float64 to 1e-12."""
    assert [s.off for _, _, s in compiling._STEPS[fast]] == [False]  # it did compile
    for a, b in zip(fast.layers, eager.layers):
        for key in a.params:
            np.testing.assert_allclose(host(a.params[key]), host(b.params[key]), rtol=1e-12)


@pytest.mark.parametrize(
    ("dtype", "name"), [("float64", "adam"), ("float32", "momentum"), ("float32", "amsgrad")]
)
def test_compiled_steps_equal_uncompiled_steps(dtype: str, name: str) -> None:
    eager, eager_opt, eager_errors = _train(dtype, OPTIMIZERS[name], compiled=False)
    fast, fast_opt, fast_errors = _train(dtype, OPTIMIZERS[name], compiled=True)
    assert [s.off for _, _, s in compiling._STEPS[fast]] == [False]  # it did compile
    _assert_same_training(dtype, fast, fast_errors, eager, eager_errors, grads=True)
    assert fast_opt.iterations == eager_opt.iterations == 20


class _OwnStateSGD(optimizers.SGD):
    """A rule that makes its own state in `update` (says nothing of its initial state)."""

    def initial_state(self, param: Any) -> dict[str, Any] | None:
        return None


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
@pytest.mark.parametrize("own_state", [False, True])
def test_the_first_step_compiles_from_zeroed_optimizer_state(
    name: str, own_state: bool, monkeypatch: Any
) -> None:
    """The optimizer's state is made zeroed before the first step, which then compiles like
    every other; a rule that makes its own state runs its first step uncompiled, as before.
    Either way the steps equal the uncompiled ones."""
    answers: list[bool] = []
    real = compiling.compiled_step

    def recording(*args: Any) -> Any:
        known = compiling._STEPS.get(args[0])
        if known and known[0][2].tracing:
            return real(*args)  # the trace's own call of train_step
        step = real(*args)
        answers.append(step is not None)
        return step

    monkeypatch.setattr(compiling, "compiled_step", recording)
    make = (lambda: _OwnStateSGD(0.1, momentum=0.9)) if own_state else OPTIMIZERS["momentum"]
    fast, fast_opt, fast_errors = _train("float64", make, compiled=True, steps=5, name=name)
    assert answers == [not own_state, True, True, True, True]
    eager, _, eager_errors = _train("float64", make, compiled=False, steps=5, name=name)
    _assert_same_training("float64", fast, fast_errors, eager, eager_errors, grads=True)
    assert sorted(fast_opt.state[(fast.layers[0], "W")]) == ["V"]


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
@pytest.mark.parametrize("kind", ["amsgrad", "adamw-amsgrad"])
def test_amsgrad_steps_compile_to_the_uncompiled_steps(kind: str, name: str) -> None:
    """Adam's and AdamW's amsgrad (V_max, a new array each step) in JAX's jit and the NumPy and
    PyTorch replays: 20 compiled steps equal the uncompiled ones, V_max included."""
    fast, fast_opt, fast_errors = _train("float64", OPTIMIZERS[kind], compiled=True, name=name)
    eager, eager_opt, eager_errors = _train("float64", OPTIMIZERS[kind], compiled=False, name=name)
    assert [s.off for _, _, s in compiling._STEPS[fast]] == [False]  # it did compile
    _assert_same_training("float64", fast, fast_errors, eager, eager_errors, grads=True)
    for key, state in eager_opt.state.items():
        mine = fast_opt.state[(fast.layers[eager.layers.index(key[0])], key[1])]
        assert sorted(mine) == ["M", "V", "V_max", "t"] and mine["t"] == state["t"] == 20
        np.testing.assert_allclose(host(mine["V_max"]), host(state["V_max"]), rtol=1e-12)


def _graph_capture_problem() -> str | None:
    """Why this machine's CuPy cannot capture a step as a CUDA graph (CuPy 14 refuses cuBLAS
    during a capture), or None; skips where CuPy does not run."""
    from ailib.backends import _cupy

    be = _jax("cupy")
    return _cupy.graph_capture_problem(be.library, be.device)


@pytest.mark.parametrize(("dtype", "name"), [("float64", "adam"), ("float32", "momentum")])
def test_cuda_graph_steps_equal_uncompiled_steps_on_cupy(dtype: str, name: str) -> None:
    """CuPy: compile_steps=True captures the step as a CUDA graph (from the third step of a
    shape on); 20 steps equal the uncompiled ones."""
    problem = _graph_capture_problem()
    if problem is not None:
        pytest.skip(problem)
    eager, _, eager_errors = _train(dtype, OPTIMIZERS[name], compiled=False, name="cupy")
    fast, fast_opt, fast_errors = _train(dtype, OPTIMIZERS[name], compiled=True, name="cupy")
    steps = [s for _, _, s in compiling._STEPS[fast]]
    assert len(steps) == 1 and not steps[0].off and steps[0].compiled.graphs  # it did capture
    _assert_same_training(dtype, fast, fast_errors, eager, eager_errors, grads=False)
    assert fast_opt.iterations == 20


@pytest.mark.parametrize("kind", ["cnn", "batchnorm"])
def test_cuda_graph_steps_of_a_cnn_and_of_batchnorm_equal_uncompiled_steps_on_cupy(
    kind: str,
) -> None:
    """On a GPU: a CNN's step (Conv2D's products are 2-D: cuBLAS called directly in the
    capture) and an MLP with BatchNorm (running statistics replaced by the step, copied back
    at each launch) as CUDA graphs, with Adam on the flat buffer: 12 steps of other batches
    equal the uncompiled ones, and each step after the first of its shape is a launch."""
    problem = _graph_capture_problem()
    if problem is not None:
        pytest.skip(problem)
    be = _jax("cupy")
    rng = np.random.default_rng(0)
    if kind == "cnn":
        x = rng.standard_normal((24, 64))
        layers = lambda: zoo.cnn(1, 3, size=8, channels=(4,), hidden=16, dropout=0.0)  # noqa: E731
    else:
        x = rng.standard_normal((24, 6))
        layers = lambda: [  # noqa: E731
            ailib.layers.Dense(6, 8),
            ailib.layers.BatchNorm1D(8),
            ailib.layers.ReLU(),
            ailib.layers.Dense(8, 3),
        ]
    y = rng.integers(0, 3, 24)
    runs = []
    for compiled in (True, False):
        model = ailib.Sequential(layers(), backend=be, dtype="float64", seed=0)
        model.compile_steps = compiled
        opt, loss = optimizers.Adam(0.01), ailib.losses.get("softmax_cross_entropy")
        xd, yd = be.asarray(x), be.asarray(y, dtype=be.index_dtype)
        errors = []
        for k in range(12):
            rows = slice(4 * (k % 4), 4 * (k % 4) + 8)
            errors.append(ailib.training.train_step(model, xd[rows, ...], yd[rows], loss, opt)[0])
        runs.append((model, errors))
    (fast, fast_errors), (eager, eager_errors) = runs
    steps = [s for _, _, s in compiling._STEPS[fast]]
    assert len(steps) == 1 and not steps[0].off and steps[0].compiled.graphs
    _assert_same_training("float64", fast, fast_errors, eager, eager_errors, grads=False)
    if kind == "batchnorm":
        for stat in ("running_mean", "running_var"):
            np.testing.assert_allclose(
                host(fast.layers[1].buffers[stat]), host(eager.layers[1].buffers[stat]), 1e-12
            )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cublas_called_directly_equals_cupys_products_on_cupy(dtype: str) -> None:
    """On a GPU: the products of cuBLAS called directly (`ailib.backends._cublas`, what a
    captured step's Dense layers use) equal CuPy's own, for every operand layout, sizes of 1
    and 0, and a view into a larger buffer (as the flat parameter buffer's)."""
    from ailib.backends import _cublas

    be = _jax("cupy")
    cp = be.library
    gemm, why = _cublas.gemm_for(cp, be.device)
    if gemm is None:
        pytest.skip(f"cuBLAS cannot be called directly here: {why}")
    rng = np.random.default_rng(0)
    with be.device:
        buffer = cp.asarray(rng.standard_normal(1000), dtype=dtype)
        for m, k, n in [(128, 784, 256), (5, 3, 4), (1, 7, 1), (6, 1, 2), (3, 0, 2), (0, 4, 2)]:
            for layout in ["cc", "cf", "fc", "ff", "sc"]:

                def one(rows: int, cols: int, kind: str) -> Any:
                    x = rng.standard_normal((cols, rows) if kind == "f" else (rows, 2 * cols))
                    x = cp.asarray(x, dtype=dtype)
                    return x.T if kind == "f" else x[:, ::2] if kind == "s" else x[:, :cols].copy()

                a, b = one(m, k, layout[0]), one(k, n, layout[1])
                got, want = gemm(a, b), a @ b
                tol = 1e-4 if dtype == "float32" else 1e-12
                np.testing.assert_allclose(cp.asnumpy(got), cp.asnumpy(want), rtol=tol, atol=tol)
        w = buffer[10 : 10 + 12].reshape(3, 4)  # a view at an offset
        x = cp.asarray(rng.standard_normal((5, 4)), dtype=dtype)
        np.testing.assert_allclose(
            cp.asnumpy(gemm(x, w.mT)), cp.asnumpy(x @ w.mT), rtol=1e-5, atol=1e-5
        )


def test_cuda_graph_steps_that_cannot_be_captured_warn_once_and_run_uncompiled_on_cupy() -> None:
    """CuPy 14 refuses cuBLAS during a capture: compile_steps=True then says so once and trains
    exactly as the uncompiled steps do."""
    problem = _graph_capture_problem()
    if problem is None:
        pytest.skip("this CuPy captures matrix products: the step is a CUDA graph")
    eager, _, eager_errors = _train("float64", OPTIMIZERS["adam"], compiled=False, name="cupy")
    with pytest.warns(RuntimeWarning) as caught:
        fast, fast_opt, fast_errors = _train(
            "float64", OPTIMIZERS["adam"], compiled=True, name="cupy"
        )
    assert [str(w.message) for w in caught] == [f"ailib: {problem}; the step runs uncompiled"]
    _assert_same_training("float64", fast, fast_errors, eager, eager_errors, grads=True)
    assert fast_opt.iterations == 20


def test_cupy_compiles_only_when_asked() -> None:
    be = _jax("cupy")
    assert be.compiler is not None and not be.compile_default
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, seed=0)
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=8)
    assert model not in compiling._STEPS


def test_fit_compiles_once_per_batch_shape() -> None:
    be = _jax()
    x, y = _data(50)  # batches of 16: three of 16 rows, one of 2
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, seed=0)
    traces = []
    real = compiling.CompiledStep._pure

    def counting(self: Any, refs: Any, **kwargs: Any) -> Any:
        pure = real(self, refs, **kwargs)

        def traced(*args: Any) -> Any:
            traces.append(args[2].shape[0])
            return pure(*args)

        return traced

    compiling.CompiledStep._pure = counting  # type: ignore[method-assign]
    adam = ailib.optimizers.Adam()
    try:
        model.fit(x, y, optimizer=adam, epochs=1, batch_size=16)
        first = list(traces)
        history = model.fit(x, y, optimizer=adam, epochs=3, batch_size=16)
    finally:
        compiling.CompiledStep._pure = real  # type: ignore[method-assign]
    # the short last batch compiles once more (JAX traces a compiled loop's step twice: once
    # for the shapes it carries), and later epochs reuse both
    assert set(first) == {2, 16} and traces == first
    assert np.isfinite(history["loss"]).all() and 0.0 <= history["accuracy"][-1] <= 1.0


def test_dropout_and_accumulation_run_uncompiled() -> None:
    be = _jax()
    x, y = _data()
    layers = [Dense(6, 8), ReLU(), Dropout(0.5), Dense(8, 3)]
    model = ailib.Sequential(layers, backend=be, seed=0)
    model.fit(x, y, epochs=1, batch_size=8)
    assert model not in compiling._STEPS  # a traced mask would repeat: never compiled
    counters = [layers[2].rng.counter]
    model.fit(x, y, epochs=1, batch_size=8)
    assert layers[2].rng.counter == counters[0] + 5  # one fresh mask per step
    same = [Dense(6, 8), ReLU(), Dropout(0.5), Dense(8, 3)]
    eager = ailib.Sequential(same, backend=be, seed=0)
    eager.compile_steps = False
    for _ in range(2):
        eager.fit(x, y, epochs=1, batch_size=8)
    for a, b in zip(model.layers, eager.layers):  # every step ran eagerly: bit for bit
        for key in a.params:
            np.testing.assert_array_equal(host(a.params[key]), host(b.params[key]))
    plain = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, seed=0)
    plain.fit(x, y, epochs=1, batch_size=8, accumulate=2)
    assert plain not in compiling._STEPS  # accumulation steps never ask for a compiled step


def test_the_flag_turns_it_off_and_other_backends_have_no_compiler() -> None:
    assert ailib.backends.get("numpy").compiler is not None  # NumPy replays (test_replay.py)
    assert ailib.backends.get("array_api_strict").compiler is None
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend="array_api_strict", seed=0)
    assert compiling.step_for(model, None, None) is None
    be = _jax()
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, seed=0)
    model.compile_steps = False
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=8)
    assert model not in compiling._STEPS
    assert_close(host(model.predict(x[:2])), host(model.predict(x[:2])))


def test_jax_steps_donate_parameters_and_state_and_copy_an_array_given_twice() -> None:
    be = _jax()
    x, y = _data()
    xd, yd = be.asarray(x.astype("float32")), be.asarray(y, dtype=be.index_dtype)
    loss = ailib.losses.get("softmax_cross_entropy")
    runs = []
    for compiled in (True, False):
        model = ailib.Sequential(zoo.mlp(6, (8, 8, 8), 3), backend=be, seed=0)
        model.compile_steps = compiled
        opt = optimizers.SGD(0.1, momentum=0.9)
        ailib.training.train_step(model, xd[:8], yd[:8], loss, opt)  # uncompiled: makes state
        before = model.layers[0].params["W"]
        ailib.training.train_step(model, xd[:8], yd[:8], loss, opt)
        if compiled:
            (step,) = [s for _, _, s in compiling._STEPS[model]]
            assert not step.off and before.is_deleted()  # its memory now holds the new W
        # one array in two places (two layers given the same weights): donated once
        model.layers[4].params["W"] = model.layers[2].params["W"]
        for _ in range(2):
            ailib.training.train_step(model, xd[8:16], yd[8:16], loss, opt)
        if compiled:
            assert not step.off
        runs.append([host(p) for layer in model.layers for p in layer.params.values()])
    for fast, eager in zip(*runs):
        np.testing.assert_allclose(fast, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_a_replayed_step_updates_an_array_given_twice_as_the_uncompiled_step(name: str) -> None:
    """Two layers given the same weights, before the first step: NumPy's and PyTorch's
    uncompiled steps update that one array twice, in place, and so do the traced and checked
    runs of their replays. (They traced on one copy per place, so that one layer's update was
    lost, and the check then warned and turned compiling off.)"""
    be = _jax(name)
    x, y = _data()
    runs = []
    for compiled in (None, False):
        model = ailib.Sequential(zoo.mlp(6, (8, 8, 8), 3), backend=be, dtype="float64", seed=0)
        model.compile_steps = compiled
        model.layers[4].params["W"] = model.layers[2].params["W"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (the check's warning, where the replay differs)
            model.fit(x, y, optimizer=optimizers.SGD(0.1, momentum=0.9), batch_size=8, verbose=0)
        assert model.layers[4].params["W"] is model.layers[2].params["W"]
        runs.append(model)
    fast, eager = runs
    assert [s.off for _, _, s in compiling._STEPS[fast]] == [False]  # it did compile
    for a, b in zip(fast.layers, eager.layers):
        for key in a.params:
            np.testing.assert_array_equal(host(a.params[key]), host(b.params[key]))


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_a_replay_is_checked_on_the_batch_itself(name: str) -> None:
    """Unshuffled, `fit`'s batches are views into the data at any alignment, and PyTorch's
    CPU products round by alignment: the check of a replay (its second call) runs it on the
    batch itself, not on a copy (which, aligned otherwise, differed in the last bits of the
    output: the check warned and turned compiling off)."""
    be = _jax(name)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((23, 5)), rng.integers(0, 3, 23)
    runs = []
    for compiled in (None, False):
        model = ailib.Sequential(zoo.mlp(5, (7, 6), 3), backend=be, dtype="float64", seed=0)
        model.compile_steps = compiled
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.fit(x, y, optimizer="sgd", batch_size=5, shuffle=False, verbose=False)
        runs.append(model)
    fast, eager = runs
    assert [s.off for _, _, s in compiling._STEPS[fast]] == [False]
    assert not any(s.compiled.broken for _, _, s in compiling._STEPS[fast])  # still replayed
    for a, b in zip(fast.layers, eager.layers):
        for key in a.params:
            np.testing.assert_allclose(host(a.params[key]), host(b.params[key]), rtol=1e-12)


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
def test_a_cnn_with_same_padding_and_ceil_mode_pooling_compiles_to_the_uncompiled_steps(
    name: str,
) -> None:
    """Conv2D(padding="same") with an even kernel (asymmetric edges) and pools with ceil_mode
    (a last window past the input): the compiled steps (JAX's jit, the NumPy and PyTorch
    replays) equal the uncompiled ones."""
    be = _jax(name)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 2, 7, 6)), rng.integers(0, 3, 16)
    runs = []
    for compiled in (None, False):
        model = ailib.Sequential(
            [
                ailib.layers.Conv2D(2, 3, (2, 3), padding="same"),
                ailib.layers.MaxPool2D(2, ceil_mode=True),  # 7 x 6 -> 4 x 3
                ailib.layers.AvgPool2D(3, 2, 1, count_include_pad=False, ceil_mode=True),  # 3 x 2
                Flatten(),
                Dense(18, 3),
            ],
            backend=be,
            dtype="float64",
            seed=0,
        )
        model.compile_steps = compiled
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (the replay's check warns where it differs)
            model.fit(x, y, optimizer=optimizers.Adam(0.01), batch_size=4, epochs=2, verbose=0)
        runs.append(model)
    _assert_compiled_with_the_same_weights(*runs)


def test_a_jax_step_that_fails_after_taking_its_inputs_says_so() -> None:
    be = _jax()
    x, y = _data()
    xd, yd = be.asarray(x.astype("float32")), be.asarray(y, dtype=be.index_dtype)
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, seed=0)
    opt, loss = optimizers.SGD(0.1), ailib.losses.get("softmax_cross_entropy")
    for _ in range(2):
        ailib.training.train_step(model, xd[:8], yd[:8], loss, opt)
    (step,) = [s for _, _, s in compiling._STEPS[model]]

    def fails_after_donation(values: Any, *args: Any) -> Any:
        for v in values:
            v.delete()  # what a donated call does to its inputs
        raise ValueError("RESOURCE_EXHAUSTED: out of memory")

    step.compiled = fails_after_donation
    with pytest.raises(RuntimeError, match="failed after taking its inputs .*out of memory"):
        ailib.training.train_step(model, xd[:8], yd[:8], loss, opt)


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
def test_a_model_with_compiled_steps_is_freed_with_its_last_reference(name: str) -> None:
    import gc
    import weakref

    be = _jax(name)
    x, y = _data()
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, seed=0)
    model.fit(x, y, epochs=2, batch_size=8, verbose=False)
    model.predict(x)
    assert model in compiling._STEPS
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None  # the compiled step and inference keep no strong reference to it


def _fit_twice(be: Any, compiled: bool | None, change: str) -> Any:
    """Two `fit` calls on one model and optimizer, with ``change`` made in between."""
    x, y = _data()
    model = ailib.Sequential(zoo.mlp(6, (8, 5), 3), backend=be, dtype="float64", seed=0)
    model.compile_steps = compiled
    opt = optimizers.SGD(0.1, momentum=0.0 if change == "momentum from none" else 0.5)
    if change == "unfreeze":
        model.layers[0].trainable = False  # trained frozen first: it has no optimizer state
    model.fit(x, y, optimizer=opt, epochs=2, batch_size=8, verbose=False)
    if change == "freeze":
        model.layers[0].trainable = False
    elif change == "unfreeze":
        model.layers[0].trainable = True
    elif change == "settings":
        opt.momentum, opt.weight_decay = 0.9, 0.01
    elif change == "momentum from none":
        opt.momentum = 0.9  # a state the compiled step did not have
    model.fit(x, y, optimizer=opt, epochs=2, batch_size=8, verbose=False)
    return model


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
@pytest.mark.parametrize("change", ["freeze", "unfreeze", "settings", "momentum from none"])
def test_a_change_after_compiling_is_seen_by_the_next_step(name: str, change: str) -> None:
    """A layer frozen or unfrozen (``trainable``), or an optimizer setting changed, after the
    step was compiled: the compiled steps do what the uncompiled ones do. (They used to go on
    updating a frozen layer with the old settings; a state the change needs, such as a
    momentum where there was none, is made by one uncompiled step, not inside a trace.)"""
    be = _jax(name)
    fast = _fit_twice(be, None, change)
    eager = _fit_twice(be, False, change)
    _assert_compiled_with_the_same_weights(fast, eager)


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
def test_a_model_built_by_its_first_batch_compiles_from_its_second_step(name: str) -> None:
    """Layers without their input sizes (``Dense(8)``, no ``input_shape``) make their weights
    in the first step's forward pass: that step runs uncompiled, the next ones compile. (It
    was traced: JAX raised UnexpectedTracerError, NumPy's replay made the weights and the
    optimizer's state constants of its trace, PyTorch's warned and gave up compiling.)"""
    be = _jax(name)
    x, y = _data()
    runs = []
    for compiled in (None, False):
        layers = [Dense(8), ReLU(), Dense(3)]
        model = ailib.Sequential(layers, backend=be, dtype="float64", seed=0)
        model.compile_steps = compiled
        assert not model.built
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.fit(x, y, optimizer=optimizers.Adam(0.01), batch_size=8, verbose=False)
        runs.append(model)
    fast, eager = runs
    _assert_compiled_with_the_same_weights(fast, eager)


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
def test_a_model_without_parameters_fits_compiled_without_a_warning(name: str) -> None:
    """``Sequential([ReLU()])`` and ``Model(x, x)`` have no parameter: the step's dtype and
    device come from the batch. (PyTorch's replay looked for them among the parameters only:
    "the compiled training step failed (StopIteration)", then ran uncompiled.)"""
    be = _jax(name)
    x = np.random.default_rng(0).standard_normal((8, 4))
    inp = ailib.Input((4,))
    for model in (
        ailib.Sequential([ReLU()], backend=be, dtype="float64", seed=0),
        ailib.Model(inp, inp, backend=be, dtype="float64", seed=0),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            history = model.fit(x, x, loss="mse", epochs=2, batch_size=4, verbose=False)
        relu = np.maximum(x, 0)  # nothing to learn: every epoch the same loss
        want = float(np.mean((relu - x) ** 2)) if model.layers else 0.0
        np.testing.assert_allclose(history["loss"], [want, want], rtol=1e-12)
        np.testing.assert_array_equal(host(model.predict(x)), relu if model.layers else x)


def _adam_frozen_between(be: Any, compiled: bool | None) -> tuple[Any, Any]:
    """Adam for a `fit`, the first layer frozen for the next, unfrozen for a third."""
    x, y = _data()
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, dtype="float64", seed=0)
    model.compile_steps = compiled
    opt = optimizers.Adam(0.01)
    for trainable in (True, False, True):
        model.layers[0].trainable = trainable
        model.fit(x, y, optimizer=opt, epochs=1, batch_size=8, verbose=False)
    return model, opt


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
def test_a_frozen_layers_adam_step_count_stays_in_compiled_steps(name: str) -> None:
    """Adam's step count t of a frozen layer's parameters stays where it is, as uncompiled
    (the compiled steps used to advance every integer state entry, the frozen layers'
    included, so that the unfrozen layer's bias corrections were those of a later step)."""
    be = _jax(name)
    fast, fast_opt = _adam_frozen_between(be, None)
    eager, eager_opt = _adam_frozen_between(be, False)
    assert [s.off for _, _, s in compiling._STEPS[fast]] == [False]  # it did compile
    counts = {k: s["t"] for k, s in fast_opt.named_state(fast.layers).items()}
    assert counts == {k: s["t"] for k, s in eager_opt.named_state(eager.layers).items()}
    assert counts["0.W"] == 10 and counts["2.W"] == 15  # 5 steps per fit; frozen for one
    for a, b in zip(fast.layers, eager.layers):
        for key in a.params:
            np.testing.assert_allclose(host(a.params[key]), host(b.params[key]), rtol=1e-12)


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
def test_rmsprop_turned_centered_between_two_fits_starts_its_mean_gradient(name: str) -> None:
    """``centered`` set on an RMSprop that has trained: the mean gradient G starts from 0 at
    the next step, compiled or not (both raised KeyError 'G': only V was there)."""
    be = _jax(name)
    x, y = _data()
    runs = []
    for compiled in (None, False):
        model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, dtype="float64", seed=0)
        model.compile_steps = compiled
        opt = optimizers.RMSprop(0.01)
        model.fit(x, y, optimizer=opt, batch_size=8, verbose=False)
        opt.centered = True
        model.fit(x, y, optimizer=opt, batch_size=8, verbose=False)
        assert all("G" in slots for slots in opt.state.values())
        runs.append(model)
    fast, eager = runs
    for a, b in zip(fast.layers, eager.layers):
        for key in a.params:
            np.testing.assert_allclose(host(a.params[key]), host(b.params[key]), rtol=1e-12)


class _ScaledMSE(ailib.losses.MSE):
    """A loss of the user's: a setting of its own, and the repr it inherits does not say it."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def _value_and_grad(self, xp: Any, y_pred: Any, target: Any) -> tuple[Any, Any]:
        value, grad = super()._value_and_grad(xp, y_pred, target)
        return self.scale * value, self.scale * grad


def _fit_with_losses(be: Any, compiled: bool | None) -> Any:
    x, y = _data()
    layers = [*zoo.mlp(6, (8,), 3), ailib.layers.Softmax()]
    model = ailib.Sequential(layers, backend=be, dtype="float64", seed=0)
    model.compile_steps = compiled
    opt = optimizers.SGD(0.5)
    xd, targets = be.asarray(x[:8]), be.asarray(np.eye(3)[y[:8]])
    for loss in (
        ailib.losses.CategoricalCrossEntropy(),
        ailib.losses.CategoricalCrossEntropy(eps=0.3),
        _ScaledMSE(1.0),
        _ScaledMSE(20.0),
    ):
        for _ in range(2):
            model.train_step(xd, targets, loss, opt)
    return model


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
def test_a_loss_with_other_settings_is_compiled_afresh(name: str) -> None:
    """Each loss here is a new object of the class before it, with another setting: the
    compiled step is made for it, as the uncompiled step uses it. (A new loss was taken to
    compute what the last one did where their reprs were equal, and neither
    CategoricalCrossEntropy's nor BinaryCrossEntropy's repr said eps.)"""
    be = _jax(name)
    fast, eager = _fit_with_losses(be, None), _fit_with_losses(be, False)
    _assert_compiled_with_the_same_weights(fast, eager)


class _FreezeAt(Callback):
    """Freezes the first layer at the end of batch ``step`` of the first epoch."""

    def __init__(self, model: Any, step: int) -> None:
        self.target, self.step = model, step

    def on_batch_end(self, batch: int, logs: Any = None) -> None:
        if batch == self.step:
            self.target.layers[0].trainable = False


@pytest.mark.parametrize("name", ["numpy", "jax", "torch"])
def test_a_layer_frozen_by_a_callback_during_an_epoch_is_seen_by_the_next_step(name: str) -> None:
    """With callbacks, the compiled step compares the layers at every step (`fit` vouches for
    nothing changing between steps only when it runs no code of the user's between them)."""
    be = _jax(name)
    x, y = _data()
    models = []
    for compiled in (None, False):
        model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, dtype="float64", seed=0)
        model.compile_steps = compiled
        opt = optimizers.SGD(0.1, momentum=0.5)
        model.fit(x, y, optimizer=opt, epochs=2, batch_size=4, verbose=False,
                  callbacks=[_FreezeAt(model, 3)])  # fmt: skip
        models.append(model)
    fast, eager = models
    _assert_compiled_with_the_same_weights(fast, eager)


class _Reports(Callback):
    """A callback that only reports (``writes``), as a progress bar."""

    writes = True

    def on_batch_end(self, batch: int, logs: Any = None) -> None:
        self.last = batch


def test_fit_without_callbacks_checks_the_layers_once_per_epoch(monkeypatch: Any) -> None:
    """Over arrays, with callbacks that have no batch hooks or only report, nothing runs
    between `fit`'s steps that changes the model: the compiled step compares layers and
    settings once per epoch (`compiling.unchanged`); in `train_step` and with other batch
    hooks, at every step."""
    x, y = _data()
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), dtype="float64", seed=0)
    opt = optimizers.SGD(0.1)
    model.fit(x, y, optimizer=opt, epochs=1, batch_size=4, verbose=False)  # compiles
    checks = []
    real = compiling.CompiledStep._check
    monkeypatch.setattr(
        compiling.CompiledStep, "_check", lambda self, *a: checks.append(1) or real(self, *a)
    )
    model.fit(x, y, optimizer=opt, epochs=3, batch_size=4, verbose=False)
    assert len(checks) == 3
    checks.clear()
    model.fit(x, y, optimizer=opt, epochs=1, batch_size=4, verbose=False,
              callbacks=[_FreezeAt(model, 100)])  # fmt: skip
    assert len(checks) == -(-x.shape[0] // 4)
    checks.clear()
    model.fit(x, y, optimizer=opt, epochs=2, batch_size=4, verbose=False,
              callbacks=[_Reports()])  # fmt: skip
    assert len(checks) == 2  # a callback that only reports changes nothing
    checks.clear()
    model.fit(x, y, optimizer=opt, epochs=2, batch_size=4, verbose=False,
              callbacks=[EarlyStopping(monitor="loss", patience=5)])  # fmt: skip
    assert len(checks) == 2  # nor does one without batch hooks, between the steps of an epoch
    checks.clear()
    for _ in range(2):
        model.train_step(x[:4], y[:4], loss="softmax_cross_entropy", optimizer=opt)
    assert len(checks) == 2


def test_a_compiled_step_that_fails_where_the_uncompiled_step_runs_says_so() -> None:
    """A fault of the compiler (until session 8 the NumPy replay of any model with
    GlobalAvgPool2D or GELU failed this way) is warned about, once, and the steps run
    uncompiled, with the same results; a step the compiler refuses (an Embedding reading its
    indices back: tests above, under ``-W error``) falls back silently."""
    x, y = _data()
    models = []
    for compiled in (None, False):
        model = ailib.Sequential(zoo.mlp(6, (8,), 3), dtype="float64", seed=0)
        model.compile_steps = compiled
        opt = optimizers.SGD(0.1, momentum=0.5)
        model.fit(x, y, optimizer=opt, epochs=1, batch_size=8, verbose=False)
        models.append((model, opt))
    (fast, fast_opt), (slow, slow_opt) = models
    (step,) = [s for _, _, s in compiling._STEPS[fast]]
    assert not step.off

    def faulty(*args: Any) -> Any:
        raise TypeError("a fault of the compiled function")

    step.compiled = faulty
    with pytest.warns(RuntimeWarning, match=r"step failed \(TypeError: a fault of the compiled"):
        fast.fit(x, y, optimizer=fast_opt, epochs=2, batch_size=8, verbose=False)
    slow.fit(x, y, optimizer=slow_opt, epochs=2, batch_size=8, verbose=False)
    assert step.off
    for a, b in zip(fast.layers, slow.layers):
        for key in a.params:
            np.testing.assert_array_equal(host(a.params[key]), host(b.params[key]))


def test_a_layer_that_draws_added_after_compiling_turns_compiling_off() -> None:
    x, y = _data()
    model = ailib.Sequential([Dense(6, 8), ReLU(), Dense(8, 3)], seed=0)
    opt = optimizers.SGD(0.1)
    model.fit(x, y, optimizer=opt, epochs=1, batch_size=8, verbose=False)
    (step,) = [s for _, _, s in compiling._STEPS[model]]
    assert not step.off
    model.layers.insert(2, Dropout(0.5))
    model.fit(x, y, optimizer=opt, epochs=1, batch_size=8, verbose=False)
    assert step.off  # its masks would have been constants of the replay


def test_jax_inference_is_compiled_and_equals_the_uncompiled_pass() -> None:
    be = _jax()
    x, y = _data(50)
    layers = [Dense(6, 8), BatchNorm1D(8), ReLU(), Dropout(0.3), Dense(8, 3)]
    model = ailib.Sequential(layers, backend=be, seed=0)
    model.fit(x, y, epochs=2, batch_size=8, verbose=False)  # BatchNorm's running statistics
    fast = host(model.predict(x, batch_size=16))  # 16, 16, 16 and a last batch of 2
    entry = compiling._INFERENCE[model]
    assert not entry.off and entry.compiled._cache_size() == 2  # one trace per batch shape
    model.compile_steps = False
    slow = host(model.predict(x, batch_size=16))
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
    model.compile_steps = None
    compiled_eval, _ = model.evaluate(x, y), model.compile_steps
    model.compile_steps = False
    eager_eval = model.evaluate(x, y)
    assert compiled_eval["accuracy"] == eager_eval["accuracy"]
    assert abs(compiled_eval["loss"] - eager_eval["loss"]) < 1e-5
    # a parameter given a new array (another shape) is traced afresh, not read from a stale trace
    model.compile_steps = None
    layers[4].params["W"] = be.asarray(np.ones((3, 8), np.float32))
    layers[4].params["b"] = be.asarray(np.zeros(3, np.float32))
    fast = host(model.predict(x, batch_size=16))
    model.compile_steps = False
    np.testing.assert_allclose(fast, host(model.predict(x, batch_size=16)), rtol=1e-5, atol=1e-6)


def test_jax_inference_that_cannot_be_traced_runs_uncompiled() -> None:
    be = _jax()
    tokens = np.random.default_rng(0).integers(0, 10, (12, 3))
    model = ailib.Sequential([Embedding(10, 4), Flatten(), Dense(12, 2)], backend=be, seed=0)
    expected = host(model.forward(be.asarray(tokens, dtype=be.index_dtype)))
    got = host(model.predict(tokens))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert compiling._INFERENCE[model].off  # its index check reads the host: eager from then on
    np.testing.assert_allclose(host(model.predict(tokens)), expected, rtol=1e-6)


def test_jax_inference_that_fails_where_the_uncompiled_pass_runs_says_so() -> None:
    """A fault of the compiled forward pass (not a refusal such as the Embedding's above) is
    warned about, once; the predictions are the uncompiled pass's."""
    be = _jax()
    x, _ = _data()
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, seed=0)
    expected = host(model.predict(x))
    entry = compiling._INFERENCE[model]
    assert not entry.off

    def faulty(*args: Any) -> Any:
        raise TypeError("a fault of the compiled pass")

    entry.compiled = faulty
    with pytest.warns(RuntimeWarning, match=r"forward pass failed \(TypeError: a fault of the"):
        got = host(model.predict(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert entry.off
    np.testing.assert_allclose(
        host(model.predict(x)), expected, rtol=1e-5, atol=1e-6
    )  # silently now


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "categorical_cross_entropy", "mse"])
def test_jax_evaluation_is_one_compiled_call_and_equals_the_uncompiled_one(loss: str) -> None:
    """`evaluate` and `fit`'s validation score each batch in one compiled call (forward pass,
    the loss's value, the correct count): the same loss and accuracy as uncompiled, with or
    without a count formed by the loss, and for a loss that does not classify."""
    be = _jax()
    x, y = _data(50)
    if loss == "mse":
        y = np.eye(3)[y]  # one-hot targets
    head = [ailib.layers.Softmax()] if loss == "categorical_cross_entropy" else []
    results = []
    for compiled in (None, False):
        layers = [Dense(6, 8), BatchNorm1D(8), ReLU(), Dense(8, 3), *head]
        model = ailib.Sequential(layers, backend=be, dtype="float64", seed=0)
        model.compile_steps = compiled
        history = model.fit(x, y, loss=loss, epochs=2, batch_size=8, verbose=False,
                            validation_data=(x[:20], y[:20]))  # fmt: skip
        scores = [model.evaluate(x, y, batch_size=16), model.evaluate(x[:7], y[:7])]
        results.append((model, history, scores))
    (fast, fast_history, fast_scores), (_, slow_history, slow_scores) = results
    (entry,) = compiling._EVALUATION[fast].values()
    assert not entry.off and entry.compiled._cache_size() == 4  # 20, 16, 2 and 7 rows
    classifies = loss != "mse"  # (no accuracy for a loss that does not take labels)
    assert fast_history.keys() == slow_history.keys()
    assert ("val_accuracy" in fast_history) == classifies
    for key in ("val_loss", "val_accuracy")[: 1 + classifies]:
        np.testing.assert_allclose(fast_history[key], slow_history[key], rtol=1e-12)
    for got, want in zip(fast_scores, slow_scores):
        assert got.keys() == want.keys() == ({"loss", "accuracy"} if classifies else {"loss"})
        assert got.get("accuracy") == want.get("accuracy")
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-12)
    assert fast.loss.last_correct is None  # no tracer left behind in the loss


def test_jax_evaluation_that_fails_says_so_once_and_runs_uncompiled() -> None:
    be = _jax()
    x, y = _data()
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, seed=0)
    model.fit(x, y, epochs=1, batch_size=8, verbose=False)
    expected = model.evaluate(x, y)
    (entry,) = compiling._EVALUATION[model].values()

    def faulty(*args: Any) -> Any:
        raise TypeError("a fault of the compiled evaluation")

    entry.compiled = faulty
    with pytest.warns(RuntimeWarning, match=r"evaluation failed \(TypeError: a fault of the"):
        got = model.evaluate(x, y)
    assert entry.off
    assert got["accuracy"] == expected["accuracy"]
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert model.evaluate(x, y) == got  # silently now
    assert compiling.release(model) and model not in compiling._EVALUATION


def test_jax_evaluation_is_left_to_the_uncompiled_path_where_it_cannot_be_one_call() -> None:
    """An Embedding checks its indices on the host (the trace is refused, silently), a model
    with two outputs is scored output by output, and other backends have no such call."""
    be = _jax()
    tokens = np.random.default_rng(0).integers(0, 10, (12, 3))
    labels = np.arange(12) % 2
    model = ailib.Sequential([Embedding(10, 4), Flatten(), Dense(12, 2)], backend=be, seed=0)
    model.fit(tokens, labels, epochs=1, batch_size=4, verbose=False)
    first = model.evaluate(tokens, labels)
    assert all(entry.off for entry in compiling._EVALUATION[model].values())
    assert model.evaluate(tokens, labels) == first
    x, y = _data()
    inp = ailib.Input((6,))
    hidden = ReLU()(Dense(6, 8)(inp))
    two = ailib.Model(inp, [Dense(8, 3)(hidden), Dense(8, 3)(hidden)], backend=be, seed=0)
    two.fit(x, [y, y], loss=["softmax_cross_entropy"] * 2, epochs=1, batch_size=8, verbose=False)
    assert np.isfinite(two.evaluate(x, [y, y])["loss"])
    assert two not in compiling._EVALUATION
    numpy_model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend="numpy", seed=0)
    numpy_model.fit(x, y, epochs=1, batch_size=8, verbose=False)
    assert numpy_model.infer_and_score(x, y, numpy_model.loss) is None
