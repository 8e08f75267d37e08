"""Device identity: a backend's device is normalised when it is built, every spelling of one
device gives one (equal) backend, `owns` is true for every array the backend made, and devices
that do not exist are `BackendUnavailable` naming what does."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import ailib
from ailib.backends import BackendUnavailable
from ailib.layers import BatchNorm1D, Dense, Dropout, ReLU, Tanh

#: (backend, spellings of its default device)
SPELLINGS = [
    ("numpy", ["numpy", "numpy:cpu", "numpy:cpu:0"]),
    ("torch", ["torch", "torch:cpu", "torch:cpu:0", "pytorch:cpu"]),
    ("jax", ["jax", "jax:cpu", "jax:cpu:0"]),
    ("array_api_strict", ["array_api_strict", "strict:CPU_DEVICE"]),
]


def _need(name: str) -> None:
    reason = ailib.backends.why_unavailable(name)
    if reason is not None:
        pytest.skip(f"backend {name} unavailable: {reason}")


@pytest.mark.parametrize(("name", "spellings"), SPELLINGS, ids=[s[0] for s in SPELLINGS])
def test_every_spelling_of_a_device_is_one_backend(name: str, spellings: list[str]) -> None:
    _need(name)
    backends = [ailib.backends.get(s) for s in spellings]
    for be in backends:
        assert be == backends[0]
        assert be is backends[0]  # the cache shares it
        assert hash(be) == hash(backends[0])


def test_backends_on_different_devices_or_libraries_differ() -> None:
    _need("array_api_strict")
    strict, strict1 = (ailib.backends.get(n) for n in ("strict", "array_api_strict:device1"))
    assert strict != strict1
    assert strict1 == ailib.backends.get("array_api_strict", "device1")
    assert strict != ailib.backends.get("numpy")


@pytest.mark.parametrize(
    "name",
    [
        "torch:cpu:0",
        "torch:cpu",
        "jax:cpu:0",
        "jax:cpu:1",
        "array_api_strict:device1",
        "numpy:cpu:0",
    ],
)
def test_a_model_on_any_spelling_trains_and_owns_its_arrays(name: str) -> None:
    _need(name)
    be = ailib.backends.get(name)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 4)), rng.integers(0, 3, 20)
    model = ailib.Sequential(
        [Dense(4, 8), BatchNorm1D(8), ReLU(), Dropout(0.2), Dense(8, 3)], backend=name, seed=0
    )
    history = model.fit(x, y, epochs=2, batch_size=8, optimizer="adam")
    assert len(history["loss"]) == 2
    made = [
        be.asarray(x),
        be.random(0).normal((2, 2), 0.0, 1.0),
        be.random(0).bernoulli_mask((3, 3), 0.5),
        be.random(0).permutation(5),
        be.xp.zeros((2,), dtype=be.float_dtype, device=be.device),
        model.predict(x),
        *model.params.values(),
        *(b for layer in model.layers for b in layer.buffers.values()),
    ]
    for array in made:
        assert be.owns(array), (name, be.device_of(array))


def test_torch_cpu_spellings_train_to_the_same_weights() -> None:
    _need("torch")
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((16, 3)), rng.integers(0, 2, 16)
    weights = []
    for name in ("torch", "torch:cpu:0"):
        model = ailib.Sequential([Dense(3, 2)], backend=name, seed=3)
        model.fit(x, y, epochs=1, batch_size=4)
        weights.append(model.backend.to_host(model.params["0.W"]))
    np.testing.assert_array_equal(weights[0], weights[1])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("torch:gpu", r"torch has no device 'gpu' .*devices here: 'cpu'"),
        ("torch:cuda:x", r"torch has no device 'cuda:x'"),
        ("jax:cpu:7", r"jax has no device 'cpu:7' .*devices here: 'cpu:0'"),
        ("jax:cpu:x", r"jax has no device 'cpu:x' .*devices here: 'cpu:0'"),
        ("jax:warp", r"jax has no device 'warp' .*devices here"),
        ("array_api_strict:gpu", r"array_api_strict has no device 'gpu'; devices here: CPU_DEVICE"),
        ("numpy:cuda", r"numpy runs on the 'cpu' device only, not 'cuda'"),
    ],
)
def test_devices_that_do_not_exist_are_unavailable_and_say_what_exists(
    name: str, message: str
) -> None:
    _need(name.split(":")[0])
    with pytest.raises(BackendUnavailable, match=message):
        ailib.backends.get(name)
    assert ailib.backends.why_unavailable(name) is not None


def test_torch_cuda_without_a_gpu_is_unavailable_not_an_assertion() -> None:
    _need("torch")
    torch = ailib.backends.get("torch").library
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    for name in ("torch:cuda", "torch:cuda:1"):
        with pytest.raises(BackendUnavailable, match="no CUDA device was found"):
            ailib.backends.get(name)


def test_a_second_jax_device_is_one_backend_however_written() -> None:
    _need("jax:cpu:1")  # two CPU devices: tests/conftest.py sets XLA_FLAGS before jax loads
    be = ailib.backends.get("jax:cpu:1")
    jax = be.library
    assert be.device == jax.devices("cpu")[1] != jax.devices()[0]
    for other in (
        ailib.backends.get("jax", "cpu:1"),
        ailib.backends.get("jax", jax.devices("cpu")[1]),
        ailib.backends.get("JAX:cpu:1"),
    ):
        assert other is be
    assert be != ailib.backends.get("jax")


def test_a_backends_spec_names_it_with_its_device(
    any_device_backend: ailib.backends.Backend,
) -> None:
    backend = any_device_backend
    assert ailib.backends.get(backend.spec) is backend
    default = ailib.backends.get(backend.name)
    assert (backend.spec == backend.name) == (backend is default), backend.spec


def test_the_hint_for_an_array_of_another_device_puts_it_on_the_layers(
    any_device_backend: ailib.backends.Backend,
) -> None:
    """The error names the backend *with its device*: following it on a second device (JAX's
    cpu:1, array-api-strict's device1) must not move the array to the default device."""
    backend = any_device_backend
    layer = Tanh(backend=backend)
    device1 = ailib.backends.get("array_api_strict:device1")
    other = ailib.backends.get("numpy") if backend is device1 else device1
    x = np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(2, 3)
    with pytest.raises(TypeError, match="move it with ailib.backends.get") as caught:
        layer.forward(other.asarray(x))
    spec = re.search(r"ailib\.backends\.get\('([^']+)'\)", str(caught.value)).group(1)
    y = layer.forward(ailib.backends.get(spec).asarray(x))
    np.testing.assert_allclose(backend.to_host(y), np.tanh(x), rtol=1e-6)


def test_a_models_repr_and_summary_name_its_device(
    any_device_backend: ailib.backends.Backend,
) -> None:
    backend = any_device_backend
    model = ailib.Sequential([Dense(2, 3), ReLU()], backend=backend)
    for text in (repr(model), repr(ailib.Model(model.inputs, model.outputs, backend=backend))):
        spec = re.search(r"backend='([^']+)'", text).group(1)
        assert ailib.backends.get(spec) is backend, text
    assert model.summary().splitlines()[-1].endswith(f"backend {backend.spec}, float32")


def test_everything_a_model_makes_lives_on_its_device(
    any_device_backend: ailib.backends.Backend, tmp_path: Path
) -> None:
    """On a device other than the library's default (JAX's cpu:1, array-api-strict's device1)
    an array made without ``device=``, or a compiled call whose output follows the default
    device rather than its inputs', lands elsewhere: the compiled training step (no Dropout:
    it is compiled after the first step) and its optimizer state, compiled inference, the
    batch gathers, evaluation, saved and loaded models and resumed checkpoints."""
    backend = any_device_backend
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 4)).astype(np.float32), rng.integers(0, 3, 40)

    def make() -> ailib.Sequential:
        layers = [Dense(4, 8), BatchNorm1D(8), ReLU(), Dense(8, 3)]
        return ailib.Sequential(layers, backend=backend, seed=0)

    def placed(what: str, arrays: list) -> None:
        for array in arrays:
            if isinstance(array, np.generic):
                continue  # NumPy reduces to scalars, on the host as its arrays are
            assert backend.owns(array), (what, backend.device_of(array), backend.device)

    def state(model: ailib.Sequential) -> list:
        slots = model.optimizer.state.values()
        return [a for slot in slots for a in slot.values() if not isinstance(a, (int, float))]

    model = make()
    checkpoint = tmp_path / "run.npz"
    model.fit(x, y, epochs=3, batch_size=8, optimizer="adam", verbose=0, checkpoint=checkpoint)
    placed("parameters", list(model.params.values()))
    placed("buffers", [b for layer in model.layers for b in layer.buffers.values()])
    placed("gradients", [g for layer in model.layers for g in layer.grads.values()])
    placed("optimizer state", state(model))
    xb, yb = backend.asarray(x[:8]), backend.asarray(y[:8], dtype=backend.index_dtype)
    step = ailib.training.train_step(model, xb, yb, model.loss, model.optimizer)  # (E, Y)
    placed("train_step", list(step))
    placed("predict", [model.predict(x), model.predict(xb)])
    placed("infer", [model.eval().infer(xb)])
    order = backend.random(1).permutation(40)
    placed("take_rows", [backend.take_rows(backend.asarray(x), order[:5])])
    batch = backend.take_batch((backend.asarray(x), [backend.asarray(y)]), order, 8, 16)
    placed("take_batch", [batch[0], *batch[1]])
    placed("mask", [backend.random(2).bernoulli_mask((4, 4), 0.5)])
    loaded = ailib.load(model.save(tmp_path / "model.npz"), backend=backend)
    placed("loaded", [*loaded.params.values(), loaded.predict(x)])
    resumed = make()
    resumed.fit(
        x,
        y,
        epochs=4,
        batch_size=8,
        optimizer="adam",
        verbose=0,
        checkpoint=checkpoint,
        resume=True,
    )
    placed("resumed", [*resumed.params.values(), *state(resumed)])
