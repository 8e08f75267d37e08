"""Optimizers: update rules against NumPy references; in-place and immutable (JAX) paths agree."""

from __future__ import annotations

import decimal
import math
from typing import Any

import numpy as np
import pytest

import ailib
from ailib import schedules as S
from ailib.layers import Dense
from ailib.optimizers import SGD, Adam, AdamW, RMSprop

from .helpers import assert_close, host


def _reference(kind: str, w: np.ndarray, grads: list[np.ndarray], **kw: float) -> np.ndarray:
    """The textbook rules, written out in float64."""
    v = np.zeros_like(w)
    m = np.zeros_like(w)
    s = np.zeros_like(w)
    s_max = np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        if kind == "sgd":
            w = w - kw["lr"] * g
        elif kind == "momentum":
            v = kw["mu"] * v + g
            w = w - kw["lr"] * v
        elif kind == "nesterov":
            v = kw["mu"] * v + g
            w = w - kw["lr"] * (g + kw["mu"] * v)
        elif kind == "adam":  # in the paper's form
            m = 0.9 * m + 0.1 * g
            s = 0.999 * s + 0.001 * g * g
            w = w - kw["lr"] * (m / (1 - 0.9**t)) / (np.sqrt(s / (1 - 0.999**t)) + 1e-8)
        else:  # amsgrad, in PyTorch's form: the largest second moment so far, bias-corrected
            m = 0.9 * m + 0.1 * g
            s = 0.999 * s + 0.001 * g * g
            s_max = np.maximum(s_max, s)
            w = w - kw["lr"] * (m / (1 - 0.9**t)) / (np.sqrt(s_max) / np.sqrt(1 - 0.999**t) + 1e-8)
    return w


CASES = {
    "sgd": (lambda: SGD(lr=0.1), {"lr": 0.1}),
    "momentum": (lambda: SGD(lr=0.1, momentum=0.9), {"lr": 0.1, "mu": 0.9}),
    "nesterov": (lambda: SGD(lr=0.1, momentum=0.9, nesterov=True), {"lr": 0.1, "mu": 0.9}),
    "adam": (lambda: Adam(lr=0.01), {"lr": 0.01}),
    "amsgrad": (lambda: Adam(lr=0.01, amsgrad=True), {"lr": 0.01}),
}


@pytest.mark.parametrize("kind", CASES)
def test_update_rule_matches_reference(
    kind: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    make, kw = CASES[kind]
    layer = Dense(3, 2, bias=False, backend=backend, dtype="float64", seed=0)
    w0 = host(layer.params["W"]).copy()
    # large then small gradients: V falls, and amsgrad's max(V_max, V) keeps the large one
    grads = [rng.standard_normal((2, 3)) * scale for scale in (3.0, 0.1, 0.1, 0.1)]
    opt = make()
    for g in grads:
        layer.grads["W"] = backend.asarray(g)
        opt.step([layer])
    # Adam's bias correction is folded into the step size, with ε rescaled: the same rule exactly
    assert_close(layer.params["W"], _reference(kind, w0, grads, **kw), "float64")


def test_updates_are_in_place_where_the_backend_allows(backend: ailib.backends.Backend) -> None:
    layer = Dense(3, 2, backend=backend, seed=0)
    opt = SGD(lr=0.1, momentum=0.9)
    for _ in range(2):  # the first step may move the parameters into one flat buffer
        before = layer.params["W"]
        layer.forward(backend.asarray(np.ones((4, 3), dtype=np.float32)))
        layer.backward(backend.asarray(np.ones((4, 2), dtype=np.float32)))
        opt.step([layer])
    assert (layer.params["W"] is before) == backend.mutable
    assert layer.params["W"].dtype == backend.xp.float32


@pytest.mark.parametrize("amsgrad", [False, True])
def test_optimizer_state_stays_float32(backend: ailib.backends.Backend, amsgrad: bool) -> None:
    layer = Dense(3, 2, backend=backend, seed=0)
    opt = Adam(amsgrad=amsgrad)
    for _ in range(2):
        layer.forward(backend.asarray(np.ones((4, 3), dtype=np.float32)))
        layer.backward(backend.asarray(np.ones((4, 2), dtype=np.float32)))
        opt.step([layer])
    for state in opt.state.values():
        assert sorted(state) == sorted(["M", "V", "t"] + ["V_max"] * amsgrad)
        for key in ("M", "V", "V_max")[: 2 + amsgrad]:
            assert state[key].dtype == backend.xp.float32


def test_bad_hyperparameters_are_refused() -> None:
    with pytest.raises(ValueError, match="lr must be positive"):
        SGD(lr=0)
    with pytest.raises(ValueError, match="nesterov=True needs a momentum"):
        SGD(nesterov=True)
    with pytest.raises(ValueError, match="beta1 must lie in"):
        Adam(beta1=1.0)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        ailib.optimizers.get("lbfgs")


@pytest.mark.parametrize(
    "make, fault",
    [
        (lambda: SGD(lr=math.inf), "SGD: lr must be positive and finite, received inf"),
        (lambda: SGD(lr=math.nan), "SGD: lr must be positive and finite, received nan"),
        (lambda: SGD(0.1, weight_decay=math.inf), "weight_decay must be >= 0 and finite"),
        (lambda: Adam(eps=-1.0), "Adam: eps must be >= 0 and finite, received -1.0"),
        (lambda: Adam(eps=math.nan), "Adam: eps must be >= 0 and finite, received nan"),
        (lambda: RMSprop(eps=math.inf), "eps > 0, received .*eps=inf"),
        (lambda: SGD(0.1, groups=[{"params": [], "lr": math.inf}]), r"groups\[0\]: lr must be"),
        (lambda: S.cosine_schedule(0.1, 2.5), "epochs must be positive and an int, received 2.5"),
        (lambda: S.cosine_schedule(0.1, 5, -0.1), "final_lr must be >= 0 and finite"),
        (lambda: S.step_schedule(0.1, 0.5), "step_size must be positive and an int, received 0.5"),
        (lambda: S.warmup_schedule(math.inf, 3), "base_lr must be positive and finite"),
    ],
)
def test_non_finite_and_fractional_hyperparameters_are_refused(make: Any, fault: str) -> None:
    with pytest.raises(ValueError, match=fault):
        make()


def test_an_lr_that_is_not_a_number_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="SGD: lr must be a number, received '0.1'"):
        SGD("0.1")  # type: ignore[arg-type]
    assert SGD(np.float32(0.5)).lr == 0.5  # NumPy scalars are numbers


@pytest.mark.parametrize(
    "make, fault",
    [
        (lambda: SGD(0.1, None), "SGD: momentum must be a number, received None"),
        (lambda: RMSprop(alpha=None), "RMSprop: alpha must be a number, received None"),
        (lambda: Adam(beta1=None), "Adam: beta1 must be a number, received None"),
        (lambda: AdamW(eps="1e-8"), "AdamW: eps must be a number, received '1e-8'"),
        (lambda: SGD(0.1, clip_norm="1"), "SGD: clip_norm must be a number, received '1'"),
        (
            lambda: SGD(0.1, groups=[{"params": [], "weight_decay": "0"}]),
            r"SGD: groups\[0\]: weight_decay must be a number, received '0'",
        ),
        (lambda: S.step_schedule(0.1, 2, None), "step_schedule: gamma must be a number"),
        (lambda: S.cosine_schedule(0.1, 2, None), "cosine_schedule: final_lr must be a number"),
        (lambda: S.constant_schedule("0.1"), "constant_schedule: lr must be a number"),
    ],
)
def test_every_setting_that_is_not_a_number_is_refused_by_name(make: Any, fault: str) -> None:
    """Not the raw TypeError of a comparison such as ``0.0 <= None``."""
    with pytest.raises(TypeError, match=fault):
        make()


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("bad", ["yes", 1, 0, None, np.bool_(True)])
def test_amsgrad_that_is_not_a_bool_is_refused_by_name(cls: type, bad: Any) -> None:
    with pytest.raises(
        TypeError, match=rf"{cls.__name__}: amsgrad must be True or False, received {bad!r}"
    ):
        cls(amsgrad=bad)
    assert cls().amsgrad is False and cls(amsgrad=True).get_config()["amsgrad"] is True


@pytest.mark.parametrize(
    "make, fault",
    [
        (lambda: SGD(momentum=0.9, nesterov="no"), "SGD: nesterov must be True or False"),
        (lambda: RMSprop(centered="false"), "RMSprop: centered must be True or False"),
        (lambda: AdamW(decay_vectors="no"), "AdamW: decay_vectors must be True or False"),
    ],
)
def test_flags_that_are_not_bools_are_refused_by_name(make: Any, fault: str) -> None:
    """``bool("no")`` is True: a string passed as a flag once turned the setting on."""
    with pytest.raises(TypeError, match=fault):
        make()
    opt = AdamW()
    with pytest.raises(TypeError, match="decay_vectors must be True or False"):
        opt.decay_vectors = "yes"


@pytest.mark.parametrize(
    "schedule",
    [S.step_schedule(0.1, 2, 0.5), S.cosine_schedule(0.1, 4), S.warmup_schedule(0.1, 3)],
    ids=["step", "cosine", "warmup"],
)
def test_schedules_refuse_a_t_before_the_first(schedule: Any) -> None:
    """t counts from 1: t = 0 (PyTorch's epoch 0 read as t) is refused, where it gave base_lr/γ
    (step), a rate of the cosine's second half, or 0 (warmup)."""
    assert schedule(1) > 0
    for t in (0, -3):
        with pytest.raises(ValueError, match=f"t counts from 1 .*received t={t}"):
            schedule(t)


def test_cosine_schedule_starts_at_base_and_decays_to_final() -> None:
    lr = ailib.optimizers.cosine_schedule(0.1, epochs=4, final_lr=0.01)
    values = [lr(e) for e in range(1, 5)]
    assert values[0] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] > 0.01
    with pytest.raises(ValueError, match="epochs must be positive"):
        ailib.optimizers.cosine_schedule(0.1, epochs=0)


def test_fit_applies_the_schedule_each_epoch() -> None:
    x = np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    model = ailib.Sequential([Dense(3, 1)], backend="numpy", seed=0)
    opt = SGD(lr=1.0)
    history = model.fit(x, y, loss="mse", optimizer=opt, epochs=3, lr_schedule=lambda e: 0.1 / e)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert opt.lr == pytest.approx(0.1 / 3)


def _grads(layer: Dense, rng: np.random.Generator, backend: ailib.backends.Backend) -> None:
    for name, value in layer.params.items():
        layer.grads[name] = backend.asarray(rng.standard_normal(tuple(value.shape)))


def test_state_is_kept_per_parameter_not_per_position(backend: ailib.backends.Backend) -> None:
    """One optimizer stepping two layers in turn (or in another order) equals one optimizer
    per layer: its state follows the parameter, not the layer's index in the list."""
    rng = np.random.default_rng(0)
    a, b = (Dense(3, 2, backend=backend, dtype="float64", seed=s) for s in (0, 1))
    a2, b2 = (Dense(3, 2, backend=backend, dtype="float64", seed=s) for s in (0, 1))
    shared, own_a, own_b = Adam(lr=0.1), Adam(lr=0.1), Adam(lr=0.1)
    for step in range(4):
        _grads(a, rng, backend)
        _grads(b, rng, backend)
        a2.grads, b2.grads = dict(a.grads), dict(b.grads)
        shared.step([a] if step % 2 else [b, a])
        if step % 2 == 0:
            shared.step([b][:0])  # an empty list changes nothing
        own_a.step([a2])
        if step % 2 == 0:
            own_b.step([b2])
    for mine, theirs in ((a, a2), (b, b2)):
        for name in mine.params:
            assert_close(mine.params[name], theirs.params[name], "float64")


def test_named_state_round_trips_by_parameter_name() -> None:
    layers = [Dense(3, 2, backend="numpy", seed=0), Dense(2, 2, backend="numpy", seed=1)]
    opt = SGD(lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    for layer in layers:
        _grads(layer, rng, ailib.backends.get("numpy"))
    opt.step(layers)
    named = opt.named_state(layers)
    assert sorted(named) == ["0.W", "0.b", "1.W", "1.b"]
    fresh = SGD(lr=0.1, momentum=0.9)
    fresh.load_named_state(layers, named)
    assert fresh.state.keys() == opt.state.keys()
    with pytest.raises(ValueError, match=r"parameters the model does not have: \['2.W'\]"):
        fresh.load_named_state(layers, {"2.W": {}})


def test_parameter_groups_set_their_own_rate_and_decay() -> None:
    be = ailib.backends.get("numpy")
    a, b = (Dense(3, 2, backend=be, dtype="float64", seed=s) for s in (0, 1))
    w_a, w_b, b_b = (host(p).copy() for p in (a.params["W"], b.params["W"], b.params["b"]))
    opt = SGD(lr=0.1, weight_decay=0.5, groups=[{"params": [(b, "W")], "lr": 0.01}])
    rng = np.random.default_rng(0)
    _grads(a, rng, be)
    _grads(b, rng, be)
    g_a, g_b, g_bb = (host(g).copy() for g in (a.grads["W"], b.grads["W"], b.grads["b"]))
    opt.step([a, b])
    assert_close(a.params["W"], w_a - 0.1 * (g_a + 0.5 * w_a), "float64")
    assert_close(b.params["W"], w_b - 0.01 * (g_b + 0.5 * w_b), "float64")  # the group's lr
    assert_close(b.params["b"], b_b - 0.1 * (g_bb + 0.5 * b_b), "float64")
    with pytest.raises(TypeError, match=r"groups\[0\] must be a dict with a 'params' list"):
        SGD(groups=[[a]])
    with pytest.raises(ValueError, match=r"groups\[0\] has unknown keys \['momentum'\]"):
        SGD(groups=[{"params": [a], "momentum": 0.9}])
    with pytest.raises(TypeError, match="a Layer or a \\(layer, parameter name\\) pair"):
        SGD(groups=[{"params": [(a, "gamma")]}])


def test_adamw_leaves_vectors_undecayed_by_default() -> None:
    be = ailib.backends.get("numpy")
    layer = Dense(3, 2, backend=be, dtype="float64", seed=0)
    layer.params["b"] = be.asarray(np.ones(2))
    layer.grads = {"W": be.asarray(np.zeros((2, 3))), "b": be.asarray(np.zeros(2))}
    w = host(layer.params["W"]).copy()
    AdamW(lr=0.1, weight_decay=0.5).step([layer])  # zero gradients: only the decay acts
    assert_close(layer.params["W"], w * (1 - 0.1 * 0.5), "float64")
    np.testing.assert_array_equal(host(layer.params["b"]), np.ones(2))
    layer.grads = {"W": be.asarray(np.zeros((2, 3))), "b": be.asarray(np.zeros(2))}
    AdamW(lr=0.1, weight_decay=0.5, decay_vectors=True).step([layer])
    assert_close(layer.params["b"], np.full(2, 0.95), "float64")


def test_adamw_decay_vectors_turned_on_after_a_step_decays_them_from_the_next() -> None:
    """``decay_vectors`` changed on an AdamW that has stepped is used by its next step (each
    parameter's decay was looked up once and kept: the bias stayed undecayed)."""
    be = ailib.backends.get("numpy")
    layer = Dense(3, 2, backend=be, dtype="float64", seed=0)
    layer.params["b"] = be.asarray(np.ones(2))
    opt = AdamW(lr=0.1, weight_decay=0.5)
    for decay_vectors, expected in ((False, 1.0), (True, 0.95)):
        opt.decay_vectors = decay_vectors
        layer.grads = {"W": be.asarray(np.zeros((2, 3))), "b": be.asarray(np.zeros(2))}
        opt.step([layer])  # zero gradients: only the decay acts
        assert_close(layer.params["b"], np.full(2, expected), "float64")


def test_clip_norm_scales_to_the_global_norm_on_the_device(
    backend: ailib.backends.Backend,
) -> None:
    layer = Dense(3, 2, backend=backend, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    _grads(layer, rng, backend)
    grads = {k: host(v).copy() for k, v in layer.grads.items()}
    norm = np.sqrt(sum((g**2).sum() for g in grads.values()))
    before = {k: host(v).copy() for k, v in layer.params.items()}
    opt = SGD(lr=1.0, clip_norm=norm / 4)
    opt.step([layer])
    assert type(opt.grad_norm) is not float and opt.grad_norm.ndim == 0  # not read back
    assert float(host(opt.grad_norm)) == pytest.approx(norm, rel=1e-12)
    for name, g in grads.items():
        assert_close(layer.params[name], before[name] - g * (norm / 4) / (norm + 1e-6), "float64")
    _grads(layer, rng, backend)
    small = {k: host(v).copy() for k, v in layer.grads.items()}
    before = {k: host(v).copy() for k, v in layer.params.items()}
    SGD(lr=1.0, clip_norm=1e6).step([layer])  # under the limit: untouched
    for name, g in small.items():
        assert_close(layer.params[name], before[name] - g, "float64")


def test_new_optimizers_refuse_bad_settings() -> None:
    with pytest.raises(ValueError, match="RMSprop: need 0 <= alpha < 1"):
        RMSprop(alpha=1.0)
    with pytest.raises(ValueError, match="AdamW: beta2 must lie in"):
        AdamW(beta2=-0.1)
    with pytest.raises(ValueError, match="clip_norm must be positive or None"):
        Adam(clip_norm=0.0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        SGD(weight_decay=-1.0)
    assert isinstance(ailib.optimizers.get("adamw", lr=0.1), AdamW)
    assert isinstance(ailib.optimizers.get("RMSprop"), RMSprop)


def test_schedules() -> None:
    from ailib import schedules

    step = schedules.step_schedule(0.1, step_size=2, gamma=0.5)
    assert [step(t) for t in range(1, 7)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    warm = schedules.warmup_schedule(0.1, 4)
    assert [warm(t) for t in range(1, 7)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    cosine = schedules.cosine_schedule(0.1, 3)
    both = schedules.warmup_schedule(0.1, 2, then=cosine)
    assert [both(t) for t in range(1, 6)] == pytest.approx([0.05, 0.1, 0.1, 0.075, 0.025])
    assert cosine(10) == cosine(4) == pytest.approx(0.0)  # stays at the final rate
    assert schedules.constant_schedule(0.3)(7) == 0.3
    with pytest.raises(ValueError, match="step_schedule: gamma must be positive"):
        schedules.step_schedule(0.1, 2, gamma=0.0)
    with pytest.raises(ValueError, match="warmup_schedule: warmup must be positive"):
        schedules.warmup_schedule(0.1, 0)


ZEROED = {
    "sgd": lambda: SGD(lr=0.1),
    "momentum": lambda: SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
    "nesterov": lambda: SGD(lr=0.1, momentum=0.9, nesterov=True),
    "rmsprop": lambda: RMSprop(lr=0.01),
    "rmsprop-centered-momentum": lambda: RMSprop(lr=0.01, centered=True, momentum=0.5),
    "adam": lambda: Adam(lr=0.01),
    "adamw-beta1-0": lambda: AdamW(lr=0.01, beta1=0.0, weight_decay=0.1),
    "adam-amsgrad": lambda: Adam(lr=0.01, amsgrad=True),
    "adamw-amsgrad": lambda: AdamW(lr=0.01, weight_decay=0.1, amsgrad=True),
}


@pytest.mark.parametrize("kind", ZEROED)
def test_steps_from_zeroed_state_equal_steps_from_none(
    kind: str, backend: ailib.backends.Backend, rng: np.random.Generator
) -> None:
    """`init_state` makes what the rule's first update would make (zero moments, a step count
    of 0): the updates from there equal those of an optimizer that made its own state."""
    layers = [Dense(3, 2, backend=backend, dtype="float64", seed=s) for s in (0, 0)]
    grads = [(rng.standard_normal((2, 3)), rng.standard_normal(2)) for _ in range(3)]
    opts = [ZEROED[kind]() for _ in layers]
    assert opts[0].init_state([layers[0]])
    assert set(opts[0].state) == {(layers[0], "W"), (layers[0], "b")}
    for gw, gb in grads:
        for layer, opt in zip(layers, opts):
            layer.grads["W"], layer.grads["b"] = backend.asarray(gw), backend.asarray(gb)
            opt.step([layer])
    for name in ("W", "b"):
        np.testing.assert_array_equal(host(layers[0].params[name]), host(layers[1].params[name]))
        made, own = opts[0].state[(layers[0], name)], opts[1].state[(layers[1], name)]
        assert sorted(made) == sorted(own)
        for slot, value in own.items():
            if isinstance(value, int):
                assert made[slot] == value == 3
            else:
                np.testing.assert_array_equal(host(made[slot]), host(value))


def test_init_state_leaves_frozen_layers_kept_state_and_unknown_rules_alone() -> None:
    frozen, trained = Dense(3, 2, seed=0), Dense(2, 2, seed=1)
    frozen.trainable = False
    opt = Adam()
    kept = {"t": 5, "M": np.ones((2, 2), np.float32), "V": np.ones((2, 2), np.float32)}
    opt.state[(trained, "W")] = kept
    assert opt.init_state([frozen, trained])
    assert set(opt.state) == {(trained, "W"), (trained, "b")}
    assert opt.state[(trained, "W")] is kept
    assert opt.state[(trained, "b")]["t"] == 0
    assert opt.state[(trained, "b")]["M"].dtype == np.float32

    class Custom(SGD):  # a rule of its own, which makes its state in update
        def initial_state(self, param: Any) -> dict[str, Any] | None:
            return None

    custom = Custom(0.1)
    assert not custom.init_state([trained])
    assert custom.state == {}


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.999, 0.99999])
def test_adam_bias_corrections_in_a_compiled_step_are_right_to_the_last_bits(
    beta: float, backend: ailib.backends.Backend
) -> None:
    """1 − βᵗ from a float32 step count (as a compiled step has it) is within 2 float32 ulps of
    the float64 value, and on the host (a Python int) what float64 gives: 1.0 − β**t in
    float32 was 1.3·10⁻⁵ off at β = 0.999, t = 1."""
    from ailib.optimizers import _one_minus_power

    steps = [1, 2, 3, 10, 1000, 100_000]
    t = backend.asarray(np.array(steps, dtype=np.float32))
    got = host(_one_minus_power(backend.xp, beta, t))
    with decimal.localcontext() as ctx:
        ctx.prec = 60  # β as the float64 it is, raised exactly enough
        exact = np.array([float(1 - decimal.Decimal(beta) ** s) for s in steps])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, exact, rtol=2.5e-7, atol=0)
    for s, want in zip(steps, exact):
        assert _one_minus_power(math, beta, s) == pytest.approx(want, rel=1e-13, abs=0)
