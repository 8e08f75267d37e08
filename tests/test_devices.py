"""Device identity: a backend's device is normalised when it is built, every spelling of one
device gives one (equal) backend, `owns` is true for every array the backend made, and devices
that do not exist are `BackendUnavailable` naming what does."""

from __future__ import annotations

import numpy as np
import pytest

import ailib
from ailib.backends import BackendUnavailable
from ailib.layers import BatchNorm1D, Dense, Dropout, ReLU

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
    "name", ["torch:cpu:0", "torch:cpu", "jax:cpu:0", "array_api_strict:device1", "numpy:cpu:0"]
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
