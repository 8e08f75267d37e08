"""The batch gather (`Backend.take_rows`, `Backend.take_batch`) and `ArrayBatches`: the same rows
on every backend, kept memory reused on NumPy, bad indices refused, mismatched arrays refused."""

from __future__ import annotations

import numpy as np
import pytest

from ailib.batches import ArrayBatches

from .helpers import host


def _data(be, rng, n=23):
    x = rng.standard_normal((n, 3, 2)).astype(np.float32)
    y = rng.integers(0, 5, n)
    return x, y, be.asarray(x), be.asarray(y, dtype=be.index_dtype)


def test_take_rows_gives_the_rows_asked_for(backend, rng):
    x, _, xd, _ = _data(backend, rng)
    index = rng.permutation(x.shape[0])[:7]
    idx = backend.asarray(index, dtype=backend.index_dtype)
    np.testing.assert_array_equal(host(backend.take_rows(xd, idx)), x[index])
    np.testing.assert_array_equal(host(backend.take_rows(xd, idx, in_range=True)), x[index])
    out = backend.xp.empty((7, 3, 2), dtype=xd.dtype, device=backend.device)
    got = backend.take_rows(xd, idx, out=out, in_range=True)
    np.testing.assert_array_equal(host(got), x[index])
    if backend.takes_rows_into:
        assert got is out


def test_numpy_take_rows_into_memory_checks_indices(rng):
    import ailib

    be = ailib.backends.get("numpy")
    a = np.arange(12.0).reshape(6, 2)
    out = np.empty((2, 2))
    with pytest.raises(IndexError, match="out of range for 6 rows"):
        be.take_rows(a, np.array([0, 6]), out=out)
    with pytest.raises(IndexError, match="out of range for 6 rows"):
        be.take_rows(a, np.array([-7, 1]), out=out)
    np.testing.assert_array_equal(be.take_rows(a, np.array([-1, 2]), out=out), a[[5, 2]])


@pytest.mark.parametrize("reuse", [False, True])
def test_array_batches_cover_a_permutation(backend, rng, reuse):
    x, y, xd, yd = _data(backend, rng)
    batches = ArrayBatches(backend, xd, yd, 5, shuffle=True, rng=backend.random(3))
    batches.reuse_memory = reuse
    seen_x, seen_y, buffers = [], [], set()
    for xb, yb in batches:
        seen_x.append(host(xb).copy())
        seen_y.append(host(yb).copy())
        buffers.add(id(xb))
    got_x, got_y = np.concatenate(seen_x), np.concatenate(seen_y)
    order = np.lexsort(got_x.reshape(len(got_x), -1).T)
    expected = np.lexsort(x.reshape(len(x), -1).T)
    np.testing.assert_array_equal(got_x[order], x[expected])
    np.testing.assert_array_equal(got_y[order], y[expected])
    if reuse and backend.takes_rows_into:
        assert len(buffers) <= 2  # one buffer per batch size (5, and the last batch's 3)


def test_array_batches_refuse_arrays_of_different_lengths(rng):
    import ailib

    be = ailib.backends.get("numpy")
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(ValueError, match=r"same number of rows, received \[10, 9\]"):
        ArrayBatches(be, x, np.zeros(9, np.int64), 4, shuffle=True, rng=be.random(0))
    with pytest.raises(ValueError, match=r"same number of rows, received \[10, 8, 10\]"):
        ArrayBatches(be, [x, x[:8]], np.zeros(10, np.int64), 4, shuffle=True, rng=be.random(0))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_all_finite_sees_nan_and_inf_and_is_not_fooled_by_overflow(backend, dtype, rng):
    import ailib

    x = rng.standard_normal((50, 7)).astype(dtype)
    assert ailib.backends.all_finite(backend, backend.asarray(x))
    big = np.full((50, 7), np.finfo(dtype).max / 2, dtype=dtype)  # Σ x² overflows: still finite
    assert ailib.backends.all_finite(backend, backend.asarray(big))
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[31, 4] = bad
        assert not ailib.backends.all_finite(backend, backend.asarray(y))
        assert not ailib.backends.all_finite(backend, backend.asarray(y.T.copy()).T)  # strided


def test_predict_refuses_nan_input_with_the_range():
    import ailib
    from ailib import zoo

    model = ailib.Sequential(zoo.mlp(6, (4,), 3), seed=0)
    x = np.zeros((20, 6), np.float32)
    x[7, 2] = np.nan
    with pytest.raises(ValueError, match="x holds NaN values"):
        model.predict(x)


def test_take_batch_gives_the_slice_of_the_order_from_every_array(backend, rng):
    x, y, xd, yd = _data(backend, rng)
    order = rng.permutation(x.shape[0])
    od = backend.asarray(order, dtype=backend.index_dtype)
    got_x, (got_x2, got_y) = backend.take_batch((xd, [xd, yd]), od, 5, 14)
    rows = order[5:14]
    np.testing.assert_array_equal(host(got_x), x[rows])
    np.testing.assert_array_equal(host(got_x2), x[rows])
    np.testing.assert_array_equal(host(got_y), y[rows])
