"""Random numbers you can checkpoint and compare: the counter-based mask stream computes the same
bits on every backend (checked against a pure-Python reference), `Random.get_state` /
`set_state` capture host generator and stream, and a run resumed from a checkpoint equals the
uninterrupted run bit for bit on every backend, with Dropout, BatchNorm, Adam and a schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ailib
from ailib.backends import _counter
from ailib.layers import BatchNorm1D, Dense, Dropout, ReLU
from ailib.optimizers import Adam, cosine_schedule

from .helpers import assert_close, host


def _reference_bits(key: int, counter: int, n: int) -> list[int]:
    """The stream's definition in Python integers modulo 2**32 (unsigned, no arrays)."""
    k1, k2 = _counter.draw_words(key, counter)

    def h(x: int) -> int:
        x &= 0xFFFFFFFF
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    return [h(h(i + k1) ^ k2) for i in range(n)]


@pytest.mark.parametrize(("key", "counter"), [(0, 0), (7, 3), (2**31 - 1, 10**12)])
def test_stream_bits_match_the_pure_python_definition(
    backend: ailib.backends.Backend, key: int, counter: int
) -> None:
    n = 5000  # enough for i + k1 to wrap around 2**32 for some keys
    got = host(_counter.bits(backend.xp, backend.device, key, counter, n))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.view(np.uint32), _reference_bits(key, counter, n))


def test_masks_are_identical_on_every_backend(backend: ailib.backends.Backend) -> None:
    numpy = ailib.backends.get("numpy")
    mine, ref = backend.random(11), numpy.random(11)
    for shape, keep in [((7, 5), 0.8), ((3, 2, 4, 4), 0.5), ((1,), 0.3), ((), 0.9)]:
        np.testing.assert_array_equal(
            host(mine.bernoulli_mask(shape, keep, "float32")),
            ref.bernoulli_mask(shape, keep, "float32"),
        )


def test_mask_rate_and_independence_between_draws() -> None:
    rng = ailib.backends.get("numpy").random(0)
    a, b = rng.bernoulli_mask((400, 250), 0.3), rng.bernoulli_mask((400, 250), 0.3)
    assert abs(a.mean() - 0.3) < 0.005 and abs(b.mean() - 0.3) < 0.005
    assert abs((a * b).mean() - 0.09) < 0.005  # two draws are not the same mask
    assert abs((a[:, :-1] * a[:, 1:]).mean() - 0.09) < 0.005  # neighbours are independent
    assert rng.bernoulli_mask((3, 3), 1.0).min() == 1.0
    assert rng.bernoulli_mask((3, 3), 0.0).max() == 0.0


def test_state_round_trip_continues_the_same_draws_on_any_backend(
    backend: ailib.backends.Backend,
) -> None:
    rng = ailib.backends.get("numpy").random(5)
    rng.bernoulli_mask((4, 4), 0.5)
    rng.normal((3,), 0.0, 1.0)
    state = rng.get_state()
    assert set(state) == {"host": ..., "stream": ...}.keys()
    expected = (rng.bernoulli_mask((6, 3), 0.7), rng.uniform((4,), -1.0, 1.0), rng.permutation(9))
    other = backend.random(123)  # another seed: everything comes from the state
    other.set_state(state)
    got = (other.bernoulli_mask((6, 3), 0.7), other.uniform((4,), -1.0, 1.0), other.permutation(9))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(host(g), e)


def test_set_state_refuses_garbage_and_accepts_a_bare_host_state() -> None:
    rng = ailib.backends.get("numpy").random(1)
    with pytest.raises(ValueError, match=r"Random.set_state: expected \{'host'"):
        rng.set_state({"stream": {}})
    with pytest.raises(TypeError, match="expected a dict"):
        rng.set_state([1, 2])
    old = np.random.default_rng(4)  # checkpoints written before the stream held just this
    rng.set_state(old.bit_generator.state)
    np.testing.assert_array_equal(rng.normal((3,), 0.0, 1.0), old.normal(0.0, 1.0, size=3))


def test_dropout_training_with_one_seed_matches_numpy_on_every_backend(
    other_backend: ailib.backends.Backend,
) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 6)).astype(np.float32), rng.integers(0, 3, 32)

    def trained(be: Any) -> list[np.ndarray]:
        model = ailib.Sequential(
            [Dense(6, 16), ReLU(), Dropout(0.5), Dense(16, 3)], backend=be, seed=2
        )
        model.fit(x, y, epochs=2, batch_size=8, optimizer="sgd")
        return [host(p) for p in model.params.values()]

    for mine, ref in zip(trained(other_backend), trained("numpy")):
        assert_close(mine, ref, scale=10)


# -- resume, bit for bit ----------------------------------------------------------------------
class Interrupt(Exception):
    pass


RESUME_BACKENDS = ["numpy", "torch", "jax", "array_api_strict", "cupy"]


def _resume_model(backend: str, seed: int) -> ailib.Sequential:
    return ailib.Sequential(
        [Dense(10, 16), BatchNorm1D(16), ReLU(), Dropout(0.3), Dense(16, 3)],
        backend=backend,
        seed=seed,
    )


def _resume_fit(
    model: ailib.Sequential, path: Path | None, resume: bool = False, stop_at: int | None = None
) -> dict[str, list[float]]:
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((60, 10)).astype(np.float32), rng.integers(0, 3, 60)

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "step" and event["epoch"] == stop_at and event["step"] >= 2:
            raise Interrupt

    return model.fit(
        x,
        y,
        optimizer=Adam(lr=0.01),
        epochs=4,
        batch_size=16,
        checkpoint=path,
        resume=resume,
        lr_schedule=cosine_schedule(0.01, 4),
        progress=progress,
        log_every=2,
    )


@pytest.mark.parametrize("name", RESUME_BACKENDS)
def test_resume_equals_the_uninterrupted_run_bit_for_bit(tmp_path: Path, name: str) -> None:
    reason = ailib.backends.why_unavailable(name)
    if reason is not None:
        pytest.skip(f"backend {name} unavailable: {reason}")
    reference = _resume_model(name, seed=5)
    expected = _resume_fit(reference, None)

    path = tmp_path / "ckpt.npz"
    with pytest.raises(Interrupt):  # killed during epoch 3: the checkpoint holds epoch 2
        _resume_fit(_resume_model(name, seed=5), path, stop_at=3)
    fresh = _resume_model(name, seed=77)  # other weights and seeds: all come from the file
    history = _resume_fit(fresh, path, resume=True)

    assert history["loss"] == expected["loss"]
    for mine, theirs in zip(fresh.layers, reference.layers):
        for store in ("params", "buffers"):
            for key, value in getattr(theirs, store).items():
                np.testing.assert_array_equal(host(getattr(mine, store)[key]), host(value))
    assert fresh.rng.get_state() == reference.rng.get_state()
    assert fresh.layers[3].rng.get_state() == reference.layers[3].rng.get_state()
