"""NumPy's compiled steps (ailib.backends._replay via ailib.compiling): the replayed step equals
the uncompiled one to the bit, traces once per shape, and refuses what it cannot repeat."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import ailib
from ailib import compiling, optimizers, zoo
from ailib.backends import ReplayStep, TraceError
from ailib.backends._replay import Traced, trace  # the tracer itself, tested directly
from ailib.layers import Dense, Layer, ReLU

OPTIMIZERS = {
    "sgd": lambda: optimizers.SGD(0.1),
    "momentum": lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: optimizers.Adam(0.01, clip_norm=1.0),
    "rmsprop": lambda: optimizers.RMSprop(0.01, momentum=0.5, centered=True),
}


def _data(n: int = 40, features: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, features)), rng.integers(0, 3, n)


def _steps(model: ailib.Sequential) -> list[Any]:
    return [step for _, _, step in compiling._STEPS.get(model, [])]


def _replays(model: ailib.Sequential) -> ReplayStep:
    (step,) = _steps(model)
    assert not step.off
    assert isinstance(step.compiled, ReplayStep)
    return step.compiled


def _fit_pair(layers: Any, dtype: str = "float32", **fit: Any) -> tuple[Any, Any, Any, Any]:
    x, y = _data()
    out = []
    for compiled in (True, False):
        model = ailib.Sequential(layers(), backend="numpy", dtype=dtype, seed=0)
        model.compile_steps = compiled
        history = model.fit(x.astype(dtype), y, verbose=False, **fit)
        out += [model, history]
    return tuple(out)  # type: ignore[return-value]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_replayed_fit_equals_uncompiled_fit_to_the_bit(name: str, dtype: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the replay check must not fire
        fast, fast_history, slow, slow_history = _fit_pair(
            lambda: zoo.mlp(6, (8, 5), 3),
            dtype,
            optimizer=OPTIMIZERS[name](),
            epochs=3,
            batch_size=8,
        )
    replays = _replays(fast)
    assert len(replays.replays) == 1 and not replays.broken  # one shape: one trace, checked
    # Adam's bias corrections: from a step count passed in as an array, computed in the
    # parameters' dtype (as under jax.jit); in float32 that rounds differently from Python's
    # doubles. Everything else is the same NumPy calls on the same numbers: equal to the bit.
    same = np.testing.assert_array_equal
    if name == "adam" and dtype == "float32":
        same = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
    for key in ("loss", "accuracy"):
        same(fast_history[key], slow_history[key])
    for a, b in zip(fast.layers, slow.layers):
        for key in a.params:
            assert type(a.params[key]) is np.ndarray  # no traced array left behind
            same(a.params[key], b.params[key])
            same(a.grads[key], b.grads[key])


def test_the_replay_is_generated_numpy_calls_and_the_step_allocates_only_what_it_returns() -> None:
    fast, *_ = _fit_pair(lambda: zoo.mlp(6, (8,), 3), epochs=2, batch_size=8)
    source = _replays(fast).source()
    assert source.startswith("def replay(inputs):")
    assert "matmul" in source and "out=b" in source  # intermediates go into kept buffers
    assert "take_along_axis" in source
    assert compiling.release(fast) and not _steps(fast)  # the buffers go with the replay
    assert not compiling.release(fast)


def test_each_batch_shape_is_traced_once_and_checked_once(monkeypatch: Any) -> None:
    from ailib.backends import _replay

    x, y = _data(50)  # batches of 16, 16, 16 and 2
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend="numpy", seed=0)
    traced: list[int] = []
    real = _replay.trace

    def spy(fn: Any, values: Any, lr: Any, xb: Any, yb: Any) -> Any:
        traced.append(xb.shape[0])
        return real(fn, values, lr, xb, yb)

    monkeypatch.setattr(_replay, "trace", spy)
    model.fit(x, y, epochs=3, batch_size=16, verbose=False)
    assert sorted(traced) == [2, 16]  # the short last batch traces once more, then is reused
    replays = _replays(model)
    assert len(replays.replays) == 2 and all(e["checked"] for e in replays.replays.values())


class _ReadsBack(Layer):
    """The identity, but it reads a value back to Python (as a data-dependent layer would)."""

    def call(self, x: Any) -> Any:
        self.seen = float(self.xp.max(x))  # a host read: the step cannot be replayed

        def backprop(grad: Any, input_grad: bool = True) -> Any:
            return grad

        return x, backprop


class _CopiesIn(Layer):
    """The identity through a copy NumPy makes without telling the trace (a captured
    constant: the replay check must catch it)."""

    def call(self, x: Any) -> Any:
        y = self.xp.asarray(np.array(x))  # a fresh copy the trace never saw made

        def backprop(grad: Any, input_grad: bool = True) -> Any:
            return grad

        return y, backprop


def test_a_step_that_reads_back_runs_uncompiled_and_right() -> None:
    fast, fast_history, slow, slow_history = _fit_pair(
        lambda: [Dense(6, 8), _ReadsBack(), ReLU(), Dense(8, 3)], epochs=2, batch_size=8
    )
    (step,) = _steps(fast)
    assert step.off  # the trace failed: eager from then on
    assert fast_history["loss"] == slow_history["loss"]
    assert fast_history["accuracy"] == slow_history["accuracy"]


def test_a_captured_constant_is_caught_by_the_check_and_the_step_stays_right() -> None:
    with pytest.warns(RuntimeWarning, match="differs from the uncompiled step"):
        fast, fast_history, slow, slow_history = _fit_pair(
            lambda: [Dense(6, 8), _CopiesIn(), Dense(8, 3)], epochs=2, batch_size=8
        )
    (step,) = _steps(fast)
    assert step.compiled.broken
    assert fast_history["loss"] == slow_history["loss"]
    assert fast_history["accuracy"] == slow_history["accuracy"]
    for a, b in zip(fast.layers, slow.layers):
        for key in a.params:
            np.testing.assert_array_equal(a.params[key], b.params[key])


def test_a_failed_check_raised_as_an_error_leaves_one_step_done() -> None:
    """Under ``-W error`` the check's warning is an exception after the step ran: it reaches
    the caller, and the step is not run a second time."""
    x, y = _data()
    models = [ailib.Sequential([Dense(6, 8), _CopiesIn(), Dense(8, 3)], seed=0) for _ in "ab"]
    models[1].compile_steps = False
    opts = [ailib.optimizers.SGD(0.1) for _ in models]
    xb, yb = x[:8].astype(np.float32), y[:8]
    for model, opt in zip(models, opts):  # the first step traces (its state made zeroed)
        model.train_step(xb, yb, "softmax_cross_entropy", opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning, match="differs from the uncompiled step"):
            models[0].train_step(xb, yb, "softmax_cross_entropy", opts[0])
    models[1].train_step(xb, yb, "softmax_cross_entropy", opts[1])
    for a, b in zip(*(m.layers for m in models)):
        for key in a.params:
            np.testing.assert_array_equal(a.params[key], b.params[key])


def test_inputs_laid_out_in_fortran_order_replay_like_the_uncompiled_step() -> None:
    """The trace and the check copy inputs in their own layout: a momentum held in another
    order than its parameter (as a convolution's gradient can make it) takes the same path
    through `subtract_scaled` in the replay as outside it."""
    x, y = _data()
    out = []
    for compiled in (True, False):
        model = ailib.Sequential(zoo.mlp(6, (8,), 3), seed=0)
        model.compile_steps = compiled
        opt = ailib.optimizers.SGD(0.1, momentum=0.9)
        model.fit(x, y, optimizer=opt, batch_size=8, verbose=False)
        for slots in opt.state.values():
            if slots["V"].ndim == 2:
                slots["V"] = np.asfortranarray(slots["V"])
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            model.fit(x, y, optimizer=opt, epochs=2, batch_size=8, verbose=False)
        out.append(model)
    for a, b in zip(*(m.layers for m in out)):
        for key in a.params:
            np.testing.assert_array_equal(a.params[key], b.params[key])


def test_trace_refuses_writes_into_outside_arrays_and_unrecorded_arrays() -> None:
    outside = np.zeros(3)

    def writes(values: Any, lr: Any, x: Any, y: Any) -> Any:
        np.add(outside, x, out=outside)
        return x

    with pytest.raises(TraceError, match="writes into an array made outside"):
        trace(writes, [], np.asarray(0.1), np.ones(3), np.zeros(3))

    def reads(values: Any, lr: Any, x: Any, y: Any) -> Any:
        return x * 2.0 if bool(x[0] > 0) else x

    with pytest.raises(TraceError, match="reads a value back"):
        trace(reads, [], np.asarray(0.1), np.ones(3), np.zeros(3))


def test_gradients_are_valid_until_the_next_step_and_outputs_are_fresh() -> None:
    x, y = _data()
    x = x.astype(np.float32)
    model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend="numpy", seed=0)
    loss, opt = ailib.losses.get("softmax_cross_entropy"), optimizers.SGD(0.1)
    errors, outputs = [], []
    for k in range(6):
        rows = slice(8 * (k % 5), 8 * (k % 5) + 8)
        error, out = ailib.training.train_step(model, x[rows], y[rows], loss, opt)
        errors.append(error)
        outputs.append(out)
    eager = ailib.Sequential(zoo.mlp(6, (8,), 3), backend="numpy", seed=0)
    eager.compile_steps = False
    opt2 = optimizers.SGD(0.1)
    for k in range(6):
        rows = slice(8 * (k % 5), 8 * (k % 5) + 8)
        error, out = ailib.training.train_step(eager, x[rows], y[rows], loss, opt2)
        assert float(errors[k]) == float(error)  # each step's E is its own array
        np.testing.assert_array_equal(outputs[k], out)
    assert isinstance(_replays(model), ReplayStep)


def test_traced_arrays_compute_plainly_outside_a_trace() -> None:
    t = np.arange(4.0).view(Traced)
    assert float(np.sum(t * 2.0)) == 12.0
    assert bool(t[1] > 0)


# -- PyTorch on the CPU: the same replay, traced with a TorchFunctionMode -----------------------
def _torch() -> Any:
    reason = ailib.backends.why_unavailable("torch")
    if reason is not None:
        pytest.skip(f"backend torch unavailable: {reason}")
    return ailib.backends.get("torch")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_torch_replayed_fit_equals_uncompiled_fit(name: str) -> None:
    from ailib.backends._torch_replay import TorchReplayStep

    be = _torch()
    x, y = _data()
    runs = []
    for compiled in (True, False):
        model = ailib.Sequential(zoo.mlp(6, (8, 5), 3), backend=be, dtype="float64", seed=0)
        model.compile_steps = compiled
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # the replay check must not fire
            history = model.fit(x, y, optimizer=OPTIMIZERS[name](), epochs=3, batch_size=8)
        runs.append((model, history))
    (fast, fast_history), (slow, slow_history) = runs
    (step,) = _steps(fast)
    assert not step.off and isinstance(step.compiled, TorchReplayStep)
    assert not step.compiled.broken and "matmul" in step.compiled.source()
    np.testing.assert_allclose(fast_history["loss"], slow_history["loss"], rtol=1e-12)
    for a, b in zip(fast.layers, slow.layers):
        for key in a.params:
            np.testing.assert_allclose(
                a.params[key].numpy(), b.params[key].numpy(), rtol=1e-12, atol=1e-14
            )


def test_torch_replay_refuses_host_reads_and_leaves_the_model_as_it_was() -> None:
    be = _torch()
    fast_model = [Dense(6, 8), _ReadsBack(), ReLU(), Dense(8, 3)]
    model = ailib.Sequential(fast_model, backend=be, dtype="float64", seed=0)
    same = ailib.Sequential(
        [Dense(6, 8), _ReadsBack(), ReLU(), Dense(8, 3)], backend=be, dtype="float64", seed=0
    )
    same.compile_steps = False
    x, y = _data()
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=False)
    expected = same.fit(x, y, epochs=2, batch_size=8, verbose=False)
    (step,) = _steps(model)
    assert step.off  # refused at the trace: eager from then on, and nothing stepped twice
    assert history["loss"] == expected["loss"]


def test_the_replay_reuses_the_buffers_of_dead_arrays() -> None:
    """A buffer whose array no later call reads takes the next result of its shape: ReLU writes
    into its input's buffer (as ``np.maximum(z, 0, out=z)``), ReLU's backward into the dead
    buffer of a forward activation; the gradients and what is returned keep buffers of their
    own; and the step still equals the uncompiled one to the bit (test above)."""
    x, y = _data(32, 6)
    model = ailib.Sequential(zoo.mlp(6, (8, 8), 3), backend="numpy", seed=0)
    model.fit(x.astype("float32"), y, epochs=2, batch_size=16, verbose=False)
    replays = _replays(model)
    assert not replays.broken
    lines = replays.source().splitlines()
    maximum = [line for line in lines if "maximum" in line]
    products = [line for line in lines if "= matmul" in line and "out=" in line]
    assert len(maximum) == 2
    for line in maximum:  # in place: the buffer of the product just before it
        buffer = line.split("out=")[1].rstrip(")")
        assert any(p.endswith(f"out={buffer})") for p in products), (line, products)
    named = [line.split("out=")[1].rstrip(")") for line in lines if "out=b" in line]
    assert len(set(named)) < len(named)  # fewer buffers than buffered calls
    returned = lines[-1]
    grads = returned.split("], [")[1].split("]")[0].split(", ")
    for grad in grads:  # each gradient in a buffer nothing else writes into this step
        (made,) = [line for line in lines if line.strip().startswith(f"{grad} =")]
        if "out=" in made:
            buffer = made.split("out=")[1].rstrip(")")
            assert sum(f"out={buffer})" in line for line in lines) == 1


def _shared_and_merged(features: int) -> ailib.Model:
    """One Dense used at two places (shared weights), an Add of a residual connection, a
    Concatenate of one activation twice, a Reshape and Flatten of it, a Multiply."""
    from ailib.layers import Add, Concatenate, Flatten, Multiply, Reshape, Tanh

    x = ailib.Input((features,))
    shared = Dense(features, features)
    h = ReLU()(shared(x))
    h = Add()([shared(h), x])
    wide = Concatenate()([h, Tanh()(Dense(features, 4)(h)), h])
    flat = Flatten()(Reshape((2, 2 * features + 4))(Concatenate()([wide, wide])))
    return ailib.Model(x, Dense(4 * features + 8, 3)(Multiply()([flat, flat])), seed=0)


def _normalized_conv(features: int) -> ailib.Sequential:
    """Convolutions (one with padding), BatchNorm2D and BatchNorm1D, max pooling, a mean over
    the image (GlobalAvgPool2D, whose mean the replay writes into a kept buffer)."""
    from ailib.layers import BatchNorm1D, BatchNorm2D, Conv2D, GlobalAvgPool2D, MaxPool2D, Reshape

    return ailib.Sequential(
        [Reshape((2, 3, features // 6)), Conv2D(2, 4, 2, padding=1), BatchNorm2D(4), ReLU(),
         MaxPool2D(2), Conv2D(4, 5, 1), GlobalAvgPool2D(), BatchNorm1D(5), ReLU(), Dense(5, 3)],
        seed=0,
    )  # fmt: skip


def _smooth(features: int) -> ailib.Sequential:
    """GELU, whose erf clamps its argument (`ailib.backends.clip`: array-api-compat's NumPy
    clip wrote into an array made outside NumPy's dispatch, and such models never compiled)."""
    from ailib.layers import GELU

    return ailib.Sequential([Dense(features, 8), GELU(), Dense(8, 3)], seed=0)


@pytest.mark.parametrize("make", [_shared_and_merged, _normalized_conv, _smooth])
def test_replays_of_shared_merged_viewed_and_normalized_models_equal_uncompiled_steps(
    make: Any,
) -> None:
    """Models that could trip the buffers' reuse by liveness, with momentum, weight decay and
    gradient clipping (whose clipping really happens at this threshold): after 12 steps
    (checked against the uncompiled step only on the second), every parameter, running
    statistic and optimizer state equals the uncompiled fit's to the bit."""
    x, y = _data(48, 12)
    trained = []
    for compiled in (True, False):
        model = make(12)
        model.compile_steps = compiled
        optimizer = optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-2, clip_norm=0.05)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # the replay check must not fire
            model.fit(x, y, optimizer=optimizer, epochs=3, batch_size=12, verbose=False)
        trained.append((model, optimizer))
    (fast, fast_opt), (slow, slow_opt) = trained
    replays = _replays(fast)
    assert not replays.broken and len(replays.replays) == 1
    assert any("out=b" in line for line in replays.source().splitlines())  # buffers in use
    for a, b in zip(fast.layers, slow.layers):
        for key in (*a.params, *a.buffers):
            got = a.params.get(key, a.buffers.get(key))
            np.testing.assert_array_equal(got, b.params.get(key, b.buffers.get(key)), key)
    for a, b in zip(fast.layers, slow.layers):
        for key in a.params:
            velocity = fast_opt.state[(a, key)]["V"]
            np.testing.assert_array_equal(velocity, slow_opt.state[(b, key)]["V"], key)
    assert fast_opt.grad_norm is not None and float(fast_opt.grad_norm) > 0.05  # clipped


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_a_trace_is_freed_when_done_without_the_garbage_collector(name: str) -> None:
    """The trace holds every array of the traced step and copies of the parameters; it must go
    when the replay is made, by reference counting (a recursive closure over it made a cycle
    that kept it, about 3x the parameters' memory, until the garbage collector ran)."""
    import gc

    pytest.importorskip(name)
    from ailib.backends import _replay, _torch_replay

    x, y = _data(48, 12)
    model = ailib.Sequential(zoo.mlp(12, (8,), 3), backend=name, seed=0)
    gc.collect()
    gc.disable()
    try:
        model.fit(x, y, epochs=2, batch_size=12, verbose=False)  # traced, checked, replayed
        kinds = (_replay._Trace, _torch_replay._TorchTrace)
        alive = [o for o in gc.get_objects() if type(o) in kinds]  # (type: no __class__ lookup)
    finally:
        gc.enable()
    assert alive == []
