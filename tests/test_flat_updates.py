"""Optimizers on one flat buffer (`Backend.flat_updates`, what CuPy and PyTorch on CUDA use)
give the per-parameter results, keep per-parameter state views for checkpoints, and rebuild
when the parameters or their states change. Run here on NumPy arrays through the counting
backend with flat updates switched on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ailib
from ailib.layers import Dense
from ailib.optimizers import SGD, Adam, AdamW, FlatParams, RMSprop

from .helpers import assert_close

FLAT = ailib.backends.counting(ailib.backends.get("numpy"), flat_updates=True)
PLAIN = ailib.backends.get("numpy")

RULES = {
    "sgd": lambda: SGD(0.1),
    "momentum-nesterov-decay": lambda: SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "rmsprop-centered": lambda: RMSprop(0.01, momentum=0.5, centered=True),
    "adam-clip": lambda: Adam(0.01, clip_norm=0.5),
    "adamw-decay-all": lambda: AdamW(0.01, decay_vectors=True),
    "adam-amsgrad-clip": lambda: Adam(0.01, amsgrad=True, clip_norm=0.5),
    "adamw-amsgrad-decay-all": lambda: AdamW(0.01, amsgrad=True, decay_vectors=True),
}


def _layers(be: Any) -> list[Dense]:
    return [Dense(4, 3, backend=be, dtype="float64", seed=s) for s in (0, 1)]


def _host(be: Any, a: Any) -> np.ndarray:
    return np.asarray(be.to_host(a))


def _step(be: Any, layers: list[Dense], opt: Any, rng: np.random.Generator) -> None:
    for layer in layers:
        for name, value in layer.params.items():
            layer.grads[name] = be.asarray(rng.standard_normal(tuple(value.shape)))
    opt.step(layers)


@pytest.mark.parametrize("rule", list(RULES))
def test_flat_updates_equal_per_parameter_updates(rule: str) -> None:
    flat, plain = _layers(FLAT.backend), _layers(PLAIN)
    opt_flat, opt_plain = RULES[rule](), RULES[rule]()
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    for _ in range(4):
        _step(FLAT.backend, flat, opt_flat, rng_a)
        _step(PLAIN, plain, opt_plain, rng_b)
    assert isinstance(opt_flat._flat, FlatParams) and opt_plain._flat is None
    for a, b in zip(flat, plain):
        for name in a.params:
            assert_close(_host(FLAT.backend, a.params[name]), b.params[name], "float64")
    named_flat, named_plain = opt_flat.named_state(flat), opt_plain.named_state(plain)
    assert named_flat.keys() == named_plain.keys()
    for key, slots in named_plain.items():
        for slot, value in slots.items():
            got = named_flat[key][slot]
            if isinstance(value, int):
                assert got == value
            else:
                assert_close(_host(FLAT.backend, got), value, "float64")


def test_the_flat_buffer_is_rebuilt_when_a_parameter_is_replaced_or_state_loaded() -> None:
    layers, opt, rng = _layers(FLAT.backend), SGD(0.1, momentum=0.9), np.random.default_rng(0)
    _step(FLAT.backend, layers, opt, rng)
    first = opt._flat
    layers[0].params["W"] = FLAT.backend.asarray(np.zeros((3, 4)))  # e.g. weights loaded
    _step(FLAT.backend, layers, opt, rng)
    assert opt._flat is not first
    assert float(FLAT.xp.sum(FLAT.xp.abs(layers[0].params["W"]))) > 0  # the new W was updated
    second = opt._flat
    opt.load_named_state(layers, opt.named_state(layers))
    _step(FLAT.backend, layers, opt, rng)
    assert opt._flat is not second
    _step(FLAT.backend, layers[:1], opt, rng)  # another set of parameters: its own buffer
    assert opt._flat.keys == [(layers[0], "W"), (layers[0], "b")]


def test_a_step_count_kept_on_the_device_is_shared_not_split() -> None:
    """Compiled steps keep Adam's count as one 0-d array (ailib.compiling): the flat buffer
    shares it instead of concatenating it per parameter."""
    flat, plain = _layers(FLAT.backend), _layers(PLAIN)
    opt_flat, opt_plain = Adam(0.01), Adam(0.01)
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    _step(FLAT.backend, flat, opt_flat, rng_a)
    _step(PLAIN, plain, opt_plain, rng_b)
    count = FLAT.backend.asarray(np.asarray(1, dtype=np.int64))
    for state in opt_flat.state.values():
        state["t"] = count
    opt_flat.load_named_state(flat, opt_flat.named_state(flat))  # a new flat buffer is placed
    for _ in range(2):
        _step(FLAT.backend, flat, opt_flat, rng_a)
        _step(PLAIN, plain, opt_plain, rng_b)
    assert opt_flat._flat.state["t"].ndim == 0
    for a, b in zip(flat, plain):
        for name in a.params:
            assert_close(_host(FLAT.backend, a.params[name]), b.params[name], "float64")
