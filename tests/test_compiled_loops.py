"""`fit` on JAX takes its steps through `Backend.loop_compiler`: each compiled call gathers its
own batches and, where nothing may change the model between two steps, takes every step up to
the next read of the losses. Results, histories, callbacks' views and errors equal the
uncompiled `fit`'s."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ailib
from ailib import compiling, optimizers, zoo
from ailib.callbacks import Callback, ProgressEvents
from ailib.layers import BatchNorm1D, Dense, ReLU
from ailib.training import TrainingDiverged

from .helpers import host

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OPTIMIZERS = {
    "sgd": lambda: optimizers.SGD(0.1),
    "momentum": lambda: optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-3),
    "adam": lambda: optimizers.Adam(0.01, clip_norm=1.0),
}


def _jax(name: str = "jax") -> ailib.backends.Backend:
    reason = ailib.backends.why_unavailable(name)
    if reason is not None:
        pytest.skip(f"backend {name} unavailable: {reason}")
    return ailib.backends.get(name)


def _data(n: int = 40, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 6)), rng.integers(0, classes, n)


class _Record(Callback):
    """Reports only (``writes``): every hook it sees, with the logs' values on the host."""

    writes = True

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def on_batch_begin(self, step: int, logs: dict[str, Any]) -> None:
        self.seen.append(("begin", step, logs["size"]))

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        self.seen.append(
            (
                "end",
                step,
                logs["size"],
                logs["samples"],
                float(host(logs["batch_loss"])),
                logs.get("loss"),
            )  # fmt: skip
        )


class _Hook(Callback):
    """A batch hook that may change the model (it does not report only): one step per call."""

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        pass


def _fit(
    compiled: bool,
    dtype: str,
    opt: str,
    *,
    shuffle: bool = True,
    log_every: int = 3,
    epochs: int = 2,
    callbacks: tuple[Callback, ...] = (),
    n: int = 40,
    name: str = "jax",
) -> tuple[Any, Any, dict[str, Any]]:
    be = _jax(name)
    x, y = _data(n)
    model = ailib.Sequential(zoo.mlp(6, (8, 5), 3), backend=be, dtype=dtype, seed=0)
    model.compile_steps = compiled
    optimizer = OPTIMIZERS[opt]()
    history = model.fit(
        x, y, optimizer=optimizer, epochs=epochs, batch_size=6, shuffle=shuffle,
        log_every=log_every, callbacks=list(callbacks), verbose=False,
    )  # fmt: skip
    return model, optimizer, history


def _assert_same(dtype: str, fast: Any, slow: Any) -> None:
    scale = 1e-12 if dtype == "float64" else 1e-5
    for a, b in zip(fast.layers, slow.layers):
        for key in a.params:
            np.testing.assert_allclose(
                host(a.params[key]), host(b.params[key]), rtol=scale, atol=scale
            )
            np.testing.assert_allclose(
                host(a.grads[key]), host(b.grads[key]), rtol=scale, atol=scale
            )


@pytest.mark.parametrize(
    ("dtype", "opt", "shuffle", "name"),
    [
        ("float64", "adam", True, "jax"),
        ("float32", "momentum", True, "jax"),
        ("float64", "sgd", False, "jax"),
        ("float32", "adam", True, "jax:gpu"),
    ],
)
def test_steps_taken_in_one_call_equal_the_uncompiled_fit(
    dtype: str, opt: str, shuffle: bool, name: str
) -> None:
    """40 rows in batches of 6 (six of 6, one of 4) read every 3 steps: calls of 3, 3 and the
    short batch; parameters, the last step's gradients, the optimizer's counts and the
    history equal those of `fit` without compiling."""
    fast, fast_opt, fast_history = _fit(True, dtype, opt, shuffle=shuffle, name=name)
    slow, slow_opt, slow_history = _fit(False, dtype, opt, shuffle=shuffle, name=name)
    (step,) = [s for _, _, s in compiling._STEPS[fast]]
    assert step.looped is not None and not step.off  # the steps did run in compiled calls
    _assert_same(dtype, fast, slow)
    assert fast_opt.iterations == slow_opt.iterations == 14
    for (layer, name), state in fast_opt.state.items():
        for slot, value in state.items():
            other = slow_opt.state[(slow.layers[fast.layers.index(layer)], name)][slot]
            if isinstance(value, int):
                assert value == other == 14, slot  # Adam's step count, on the host
            else:
                np.testing.assert_allclose(host(value), host(other), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast_history["loss"], slow_history["loss"], rtol=1e-5)
    assert fast_history["accuracy"] == slow_history["accuracy"]


def test_one_call_takes_the_steps_up_to_the_next_read(monkeypatch: Any) -> None:
    counts: list[int] = []
    real = compiling.CompiledStep.run_steps

    def recording(self: Any, arrays: Any, order: Any, start: int, size: int, count: int,
                  most: int, loss: Any = None) -> Any:  # fmt: skip
        counts.append(count)
        return real(self, arrays, order, start, size, count, most, loss)

    monkeypatch.setattr(compiling.CompiledStep, "run_steps", recording)
    _fit(True, "float32", "sgd", epochs=2)
    # each epoch: steps 1-3, 4-6 and the short seventh (the first step compiles too: the
    # optimizer's state is made zeroed before it)
    assert counts == [3, 3, 1, 3, 3, 1]
    counts.clear()
    _fit(True, "float32", "sgd", epochs=2, log_every=50)
    assert counts == [6, 1, 6, 1]  # no read before the epoch's end: the six full batches at once
    counts.clear()
    _fit(True, "float32", "sgd", epochs=1, callbacks=(_Hook(),))
    assert counts == [1] * 7  # a hook that may change the model runs between every two steps


def test_reporting_callbacks_see_every_step_as_without_compiling() -> None:
    """A callback that only reports sees each step's hooks in order after the call that took
    it, with the step's size, samples so far, its own loss and the running loss at reads."""
    views = []
    for compiled in (True, False):
        record, events = _Record(), []
        _fit(compiled, "float64", "momentum", callbacks=(record, ProgressEvents(events.append)))
        views.append((record.seen, events))
    (fast, fast_events), (slow, slow_events) = views
    assert [v[:4] for v in fast] == [v[:4] for v in slow]  # hooks, steps, sizes, samples
    assert len(fast) == 2 * 2 * 7
    ends = [(f, s) for f, s in zip(fast, slow) if f[0] == "end"]
    np.testing.assert_allclose([f[4] for f, _ in ends], [s[4] for _, s in ends], rtol=1e-12)
    assert [f[5] is None for f, _ in ends] == [s[5] is None for _, s in ends]
    assert [f[5] for f, _ in ends if f[5] is not None] == pytest.approx(
        [s[5] for _, s in ends if s[5] is not None], rel=1e-12
    )
    steps = [[(e["event"], e.get("step")) for e in events] for events in (fast_events, slow_events)]
    assert steps[0] == steps[1]
    assert ("step", 3) in steps[0] and ("epoch_end", None) in steps[0]


def test_a_loss_that_diverges_inside_a_call_names_its_step() -> None:
    messages = []
    for compiled in (True, False):
        be = _jax()
        x, y = _data()
        model = ailib.Sequential(zoo.mlp(6, (8,), 3), backend=be, seed=0)
        model.compile_steps = compiled
        with pytest.raises(TrainingDiverged) as caught:
            model.fit(x * 1e30, y, optimizer=optimizers.SGD(1e30), epochs=3, batch_size=6,
                      log_every=50, verbose=False)  # fmt: skip
        messages.append(str(caught.value))
    assert "step" in messages[0]
    assert messages[0] == messages[1]


def test_a_compiled_call_that_fails_says_so_and_the_steps_run_uncompiled() -> None:
    fast, fast_opt, _ = _fit(True, "float64", "momentum", epochs=1)
    slow, slow_opt, _ = _fit(False, "float64", "momentum", epochs=1)
    (step,) = [s for _, _, s in compiling._STEPS[fast]]

    def faulty(*args: Any) -> Any:
        raise TypeError("a fault of the compiled loop")

    step.looped = faulty
    x, y = _data()
    with pytest.warns(RuntimeWarning, match=r"step failed \(TypeError: a fault of the compiled"):
        fast.fit(x, y, optimizer=fast_opt, epochs=1, batch_size=6, log_every=3, verbose=False)
    slow.fit(x, y, optimizer=slow_opt, epochs=1, batch_size=6, log_every=3, verbose=False)
    assert step.off
    _assert_same("float64", fast, slow)


def test_two_inputs_and_a_graph_model_train_as_without_compiling() -> None:
    be = _jax()
    rng = np.random.default_rng(4)
    xa, xb = rng.standard_normal((30, 6)), rng.standard_normal((30, 3))
    labels = rng.integers(0, 4, 30)
    results = []
    for compiled in (True, False):
        a_in, b_in = ailib.Input((6,), name="a"), ailib.Input((3,), name="b")
        h = ailib.layers.ReLU()(ailib.layers.Dense(8)(ailib.layers.Concatenate()([a_in, b_in])))
        model = ailib.Model([a_in, b_in], ailib.layers.Dense(4)(h), backend=be, dtype="float64",
                            seed=0)  # fmt: skip
        model.compile_steps = compiled
        history = model.fit([xa, xb], labels, optimizer="adam", epochs=2, batch_size=8,
                            log_every=2, verbose=False)  # fmt: skip
        results.append((model, history))
    (fast, fast_history), (slow, slow_history) = results
    assert fast_history["loss"] == pytest.approx(slow_history["loss"], rel=1e-12)
    assert fast_history["accuracy"] == slow_history["accuracy"]
    for key, value in slow.params.items():
        np.testing.assert_allclose(host(fast.params[key]), host(value), rtol=1e-12, atol=1e-12)


def test_a_model_with_running_statistics_carries_them_from_step_to_step() -> None:
    """BatchNorm's running mean and variance are buffers: a compiled call carries them from
    step to step as it carries the parameters."""
    be = _jax()
    x, y = _data(50)
    results = []
    for compiled in (True, False):
        # (no bias before BatchNorm: its gradient is 0 up to rounding, which Adam would scale
        # up to a step of lr·noise/eps that no two orders of summation agree on)
        layers = [Dense(6, 8, bias=False), BatchNorm1D(8), ReLU(), Dense(8, 3)]
        model = ailib.Sequential(layers, backend=be, dtype="float64", seed=0)
        model.compile_steps = compiled
        model.fit(x, y, optimizer="adam", epochs=2, batch_size=8, log_every=4, verbose=False)
        results.append(model)
    fast, slow = results
    (step,) = [s for _, _, s in compiling._STEPS[fast]]
    assert step.looped is not None and not step.off
    for a, b in zip(fast.layers, slow.layers):
        for kind in ("params", "buffers"):
            for key, value in getattr(b, kind).items():
                np.testing.assert_allclose(
                    host(getattr(a, kind)[key]), host(value), rtol=1e-12, atol=1e-12
                )


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_a_learning_rate_schedule_is_followed_step_by_step_or_epoch_by_epoch(
    unit: str, monkeypatch: Any
) -> None:
    """A schedule by epoch changes nothing between two steps: its epochs run several steps per
    call. One by step sets the rate before every step: one step per call, each at its rate."""
    counts: list[int] = []
    real = compiling.CompiledStep.run_steps

    def recording(self: Any, *args: Any) -> Any:
        counts.append(args[4])
        return real(self, *args)

    monkeypatch.setattr(compiling.CompiledStep, "run_steps", recording)
    schedule = ailib.schedules.step_schedule(0.1, 2, gamma=0.5)
    runs = []
    for compiled in (True, False):
        callback = ailib.callbacks.LearningRateScheduler(schedule, unit=unit)
        runs.append(_fit(compiled, "float64", "momentum", callbacks=(callback,)))
    (fast, fast_opt, fast_history), (slow, slow_opt, slow_history) = runs
    assert counts == ([3, 3, 1, 3, 3, 1] if unit == "epoch" else [1] * 14)
    assert fast_opt.lr == slow_opt.lr == schedule(2 if unit == "epoch" else 14)
    _assert_same("float64", fast, slow)
    np.testing.assert_allclose(fast_history["loss"], slow_history["loss"], rtol=1e-12)
